"""Attacks on the reward surface at training time: the learner is trained on ``r + δ``.

The budget, in raw reward units: ``|δ| <= ε`` on every step (threat-model norm ``linf``), and
with ``frequency="budgeted-steps"`` at most a ``step_budget`` fraction of the steps so far are
poisoned: after any ``T`` steps, ``poisoned <= step_budget · T``. A step is *poisoned* when
its ``δ`` is not zero. The public :meth:`RewardAttack.poison` asks the method's pure core
(:meth:`RewardAttack._delta`) for ``δ`` only on steps the budget allows, then counts the step
and checks both bounds at run time, raising :class:`~rlsec.errors.BudgetViolation` if either
is broken. :meth:`RewardAttack.as_wrapper` makes any of them a Gymnasium wrapper.

* :class:`FlipReward`: the reward's sign flipped on random steps.
* :class:`NoiseReward`: uniform noise in ``[-ε, ε]`` on random steps.
* :class:`TargetActionReward`: ``+ε`` when the agent takes the attacker's target action,
  ``-ε`` otherwise, for any learner.
* :class:`AdaptiveTargetReward`: Zhang et al. 2020's Fast Adaptive Attack on a tabular
  Q-learner whose Q-table it reads.
* :class:`PolicyTeachingReward`: Rakhsha et al. 2020's cheapest change of ``R`` that makes a
  target policy ε-robustly optimal, solved as a linear program
  (:func:`~rlsec.attacks.policy_teaching.policy_teaching_lp`).

These are training-time attacks; they are not in :data:`rlsec.attacks.ATTACKS` (the
inference-time red-team suite). Build them with :func:`make_reward_attack`.

Example:
    >>> import gymnasium as gym
    >>> attack = make_reward_attack("flip-reward-v1", 2.0, step_budget=0.5)
    >>> env = attack.as_wrapper(gym.make("FrozenLake-v1", is_slippery=False), seed=0)
    >>> obs, _ = env.reset(seed=0)
    >>> for a in [2, 2, 1, 1, 1, 2]:  # right, right, down, down, down, right: the goal
    ...     obs, r, terminated, truncated, info = env.step(a)
    >>> terminated, r in (1.0, -1.0), info["rlsec_clean_reward"]
    (True, True, 1.0)
    >>> u = attack.usage()
    >>> u["steps"], u["poisoned_steps"] <= 0.5 * u["steps"]
    (6, True)
"""

from __future__ import annotations

import difflib
import math
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, Literal, SupportsFloat

import gymnasium as gym
import numpy as np

from rlsec.attacks.policy_teaching import _target_array, policy_teaching_lp
from rlsec.core import Attack, Policy, Surface, ThreatModel
from rlsec.envs.finite import FiniteMDP
from rlsec.errors import BudgetViolation, ConfigError, SpaceMismatch, UnknownAttack

__all__ = [
    "REWARD_ATTACKS",
    "AdaptiveTargetReward",
    "FlipReward",
    "NoiseReward",
    "PolicyTeachingReward",
    "RewardAttack",
    "RewardPoisoningWrapper",
    "TargetActionReward",
    "make_reward_attack",
]

_POISON = "AML.T0020"  # Training Data Poisoning (formerly "Poison Training Data")
_ERODE = "AML.T0031"  # Erode AI Model Integrity
_POISON_MODEL = "AML.T0018.000"  # Manipulate AI Model: Poison AI Model
_REL = 1e-9  # relative slack of the run-time budget checks (floating point only)


class RewardAttack(Attack):
    """Base of reward attacks: subclasses implement :meth:`_delta` only.

    One instance runs one training campaign on one environment at a time; :meth:`start`
    or :meth:`as_wrapper` begins it and resets the counters.
    """

    surface: ClassVar[Surface] = Surface.REWARD
    norms: ClassVar[tuple[str, ...]] = ("linf",)
    knowledge: ClassVar[Literal["white-box", "black-box"]] = "black-box"

    def __init__(self, threat_model: ThreatModel) -> None:
        super().__init__(threat_model)
        if threat_model.phase != "training":
            raise ConfigError(
                f"{self.id} poisons rewards while the victim learns: the threat model's phase "
                f"must be 'training', got {threat_model.phase!r}"
            )
        if threat_model.unit != "raw":
            raise ConfigError(
                f"{self.id} budgets are in raw reward units; got unit {threat_model.unit!r}"
            )
        self._rng: np.random.Generator | None = None
        self.steps = 0
        self.poisoned_steps = 0
        self.total_abs_delta = 0.0
        self.max_abs_delta = 0.0
        #: δ of the last step :meth:`poison` saw.
        self.last_delta = 0.0

    @property
    def epsilon(self) -> float:
        """The largest ``|δ|`` allowed on a step, in reward units."""
        return self.threat_model.epsilon

    @property
    def step_fraction(self) -> float:
        """The largest fraction of steps that may be poisoned (1 for ``every-step``)."""
        sb = self.threat_model.step_budget
        return 1.0 if sb is None else float(sb)

    # -- lifecycle ---------------------------------------------------------------------------
    def check_applicable(self, policy: Policy) -> None:
        """Reward attacks change what the learner is trained on, not how a policy acts, so
        any policy is accepted; attacks with a tabular target check the spaces here."""
        self._check_spaces(policy.observation_space, policy.action_space, "the policy")

    def start(
        self,
        policy: Policy,
        *,
        num_envs: int,
        rng: np.random.Generator,
        scale: np.ndarray | None = None,
        horizon: int | None = None,
        env_id: str | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        """Begin a campaign against ``policy``'s training; reward attacks run on one
        environment (``num_envs=1``) and ignore ``scale``, ``horizon``, ``env_id`` and
        ``progress``."""
        if num_envs != 1:
            raise ConfigError(f"{self.id} poisons one environment's rewards, got {num_envs}")
        self.check_applicable(policy)
        self._begin(rng)

    def _begin(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self.steps = self.poisoned_steps = 0
        self.total_abs_delta = self.max_abs_delta = self.last_delta = 0.0
        self._setup()

    def _setup(self) -> None:
        """Hook: prepare per-campaign state (called when a campaign begins)."""

    def _check_spaces(self, obs: gym.Space[Any], act: gym.Space[Any], where: str) -> None:
        """Hook: raise :class:`~rlsec.errors.SpaceMismatch` if the spaces do not fit."""

    def as_wrapper(self, env: gym.Env[Any, Any], *, seed: int | None = None) -> gym.Env[Any, Any]:
        """A Gymnasium wrapper whose ``step`` returns the poisoned reward; see
        :class:`RewardPoisoningWrapper`. ``seed`` makes the attack's choices reproducible."""
        return RewardPoisoningWrapper(env, self, seed=seed)

    # -- the shell around the pure core ------------------------------------------------------
    def poison(
        self,
        observation: Any,
        action: Any,
        reward: SupportsFloat,
        next_observation: Any,
        terminated: bool,
    ) -> float:
        """The reward the learner sees for one transition ``(s, a, r, s')``.

        Raises:
            BudgetViolation: the method broke ``|δ| <= ε`` or the step fraction (a bug).
        """
        if self._rng is None:
            raise ConfigError(f"{self.id}: call start(...) or as_wrapper(...) before poison()")
        r = float(reward)
        if not math.isfinite(r):
            raise ConfigError(f"the environment returned a non-finite reward {reward!r}")
        self.steps += 1
        delta = 0.0
        if self.poisoned_steps + 1 <= self.step_fraction * self.steps * (1 + _REL):
            proposed = self._delta(observation, action, r, next_observation, bool(terminated))
            if proposed is not None:
                delta = float(proposed)
        self._record(delta)
        return r + delta

    def _record(self, delta: float) -> None:
        eps = self.epsilon
        if not math.isfinite(delta) or abs(delta) > eps * (1 + _REL) + 1e-12:
            raise BudgetViolation(
                f"{self.id} proposed δ = {delta!r} on step {self.steps}; the budget is "
                f"|δ| <= ε = {eps}"
            )
        self.last_delta = delta
        if delta != 0.0:
            self.poisoned_steps += 1
            self.total_abs_delta += abs(delta)
            self.max_abs_delta = max(self.max_abs_delta, abs(delta))
        if self.poisoned_steps > self.step_fraction * self.steps * (1 + _REL):
            raise BudgetViolation(
                f"{self.id} poisoned {self.poisoned_steps} of {self.steps} steps; the budget "
                f"is a fraction {self.step_fraction} of the steps"
            )

    def _delta(
        self, observation: Any, action: Any, reward: float, next_observation: Any, terminated: bool
    ) -> float | None:
        """Pure core: ``δ`` for this transition, or None to leave it clean."""
        raise NotImplementedError

    @property
    def rng(self) -> np.random.Generator:
        if self._rng is None:
            raise ConfigError(f"{self.id}: call start(...) or as_wrapper(...) first")
        return self._rng

    # -- records -----------------------------------------------------------------------------
    def usage(self) -> dict[str, Any]:
        """The budget used so far in this campaign, JSON-ready."""
        return {
            "steps": self.steps,
            "poisoned_steps": self.poisoned_steps,
            "poisoned_fraction": self.poisoned_steps / self.steps if self.steps else 0.0,
            "total_abs_delta": self.total_abs_delta,
            "max_abs_delta": self.max_abs_delta,
            "epsilon": self.epsilon,
            "step_budget": self.step_fraction,
        }

    def params(self) -> dict[str, Any]:
        return {"epsilon_unit": "raw reward units per step", "step_fraction": self.step_fraction}


class RewardPoisoningWrapper(gym.Wrapper[Any, Any, Any, Any]):
    """Train on ``attack.poison(s, a, r, s', terminated)`` instead of ``r``.

    ``step`` keeps Gymnasium's signature; ``info`` gains ``rlsec_clean_reward``,
    ``rlsec_reward_delta`` and ``rlsec_reward_poisoned``. :meth:`usage` reports the budget
    used; the attack checks it on every step.

    Several environments wrapped by one attack before the first step share one campaign and
    one budget (an in-process vector env, as ``rlsec poison`` builds); wrapping once the
    campaign has started is an error. A subprocess vector env would get copies of the attack
    whose counters this process never sees.
    """

    def __init__(
        self, env: gym.Env[Any, Any], attack: RewardAttack, *, seed: int | None = None
    ) -> None:
        super().__init__(env)
        attack._check_spaces(env.observation_space, env.action_space, "the environment")
        if attack.steps > 0:
            raise ConfigError(
                f"{attack.id} is running a campaign ({attack.steps} steps so far); wrap every "
                "environment before the first step, or build a new attack for a new campaign"
            )
        self.attack = attack
        self._obs: Any = None
        attack._begin(np.random.default_rng(seed))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._obs = obs
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._obs is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        obs, reward, terminated, truncated, info = self.env.step(action)
        poisoned = self.attack.poison(self._obs, action, reward, obs, bool(terminated))
        self._obs = obs
        delta = self.attack.last_delta
        info = {
            **info,
            "rlsec_clean_reward": float(reward),
            "rlsec_reward_delta": delta,
            "rlsec_reward_poisoned": delta != 0.0,
        }
        return obs, poisoned, terminated, truncated, info

    def usage(self) -> dict[str, Any]:
        """See :meth:`RewardAttack.usage`."""
        return self.attack.usage()


# -- untargeted baselines ----------------------------------------------------------------------
class FlipReward(RewardAttack):
    """The learner sees ``-r`` instead of ``r`` on random steps.

    Each step is chosen with probability ``step_budget`` (always for ``every-step``) while the
    step budget allows. ε caps the change ``|δ| = 2|r|``: a flip that would cost more is
    skipped, so a poisoned reward is always exactly ``-r``; for uncapped flips pick
    ``ε >= 2·max|r|``. Zero rewards have nothing to flip and are never counted as poisoned.
    """

    id = "flip-reward-v1"
    atlas = (_POISON, _ERODE)
    skipped_over_cap = 0  # flips skipped because |2r| > ε, this campaign
    reference = (
        "random reward sign flips, a corruption baseline "
        "(cf. Wang, Liu, Li 2020, Reinforcement Learning with Perturbed Rewards)"
    )

    def _setup(self) -> None:
        self.skipped_over_cap = 0

    def _delta(
        self, observation: Any, action: Any, reward: float, next_observation: Any, terminated: bool
    ) -> float | None:
        if self.rng.random() >= self.step_fraction or reward == 0.0:
            return None
        if 2.0 * abs(reward) > self.epsilon:
            self.skipped_over_cap += 1
            return None
        return -2.0 * reward

    def params(self) -> dict[str, Any]:
        return super().params() | {
            "selection": "each step with probability step_fraction, within the step budget",
            "cap": "flips with |2r| > ε are skipped",
        }

    def usage(self) -> dict[str, Any]:
        return super().usage() | {"skipped_over_cap": self.skipped_over_cap}


class NoiseReward(RewardAttack):
    """Uniform noise ``δ ~ U[-ε, ε]`` on steps chosen with probability ``step_budget``."""

    id = "noise-reward-v1"
    atlas = (_POISON, _ERODE)
    reference = "bounded random reward noise baseline"

    def _delta(
        self, observation: Any, action: Any, reward: float, next_observation: Any, terminated: bool
    ) -> float | None:
        if self.rng.random() >= self.step_fraction:
            return None
        return float(self.rng.uniform(-self.epsilon, self.epsilon))

    def params(self) -> dict[str, Any]:
        return super().params() | {
            "distribution": "uniform in [-ε, ε]",
            "selection": "each step with probability step_fraction, within the step budget",
        }


# -- targeted ----------------------------------------------------------------------------------
def _target_success(target: np.ndarray, policy: Policy) -> dict[str, Any]:
    """How often a (poisoned) policy takes the target action in the target states."""
    states = np.flatnonzero(target >= 0)
    if states.size == 0:
        return {"target_states": 0, "target_action_rate": None}
    actions = np.asarray(policy.act(states)).reshape(-1)
    return {
        "target_states": int(states.size),
        "target_action_rate": float(np.mean(actions == target[states])),
    }


def _check_tabular(
    attack: Attack, obs: gym.Space[Any], act: gym.Space[Any], n_s: int, n_a: int, where: str
) -> None:
    if not (
        isinstance(obs, gym.spaces.Discrete)
        and isinstance(act, gym.spaces.Discrete)
        and int(obs.n) == n_s
        and int(act.n) == n_a
    ):
        raise SpaceMismatch(
            f"{attack.id} targets {n_s} states and {n_a} actions; {where} has "
            f"observations {obs} and actions {act}"
        )


class TargetActionReward(RewardAttack):
    """Push any learner toward a target policy: ``+ε`` when it takes the target action in a
    target state, ``-ε`` when it takes another one, on every step the step budget allows.

    Non-adaptive: ``δ`` depends only on ``(s, a)``. It needs no knowledge of the learner.

    Args:
        target: an integer array of the target action per state (``-1``: no target there)
            for Discrete observations, or a callable ``observation -> action | None``.
    """

    id = "target-action-reward-v1"
    atlas = (_POISON, _POISON_MODEL)
    reference = (
        "non-adaptive targeted reward poisoning (cf. the non-adaptive attacks of Zhang, Ma, "
        "Singla, Zhu 2020, Adaptive Reward-Poisoning Attacks against RL)"
    )

    def __init__(
        self, threat_model: ThreatModel, *, target: np.ndarray | Callable[[Any], int | None]
    ) -> None:
        super().__init__(threat_model)
        self._table = None if callable(target) else _target_array(target, None)
        self._target_fn = target if callable(target) else None

    def _check_spaces(self, obs: gym.Space[Any], act: gym.Space[Any], where: str) -> None:
        if self._table is None:
            return
        if not (isinstance(obs, gym.spaces.Discrete) and isinstance(act, gym.spaces.Discrete)):
            raise SpaceMismatch(f"a target array needs Discrete spaces; {where} has {obs}, {act}")
        _target_array(self._table, int(act.n))
        _check_tabular(self, obs, act, len(self._table), int(act.n), where)

    def _target(self, observation: Any) -> int | None:
        if self._table is not None:
            t = int(self._table[int(observation)])
            return None if t < 0 else t
        assert self._target_fn is not None
        return self._target_fn(observation)

    def _delta(
        self, observation: Any, action: Any, reward: float, next_observation: Any, terminated: bool
    ) -> float | None:
        want = self._target(observation)
        if want is None:
            return None
        return self.epsilon if int(np.asarray(action)) == int(want) else -self.epsilon

    def params(self) -> dict[str, Any]:
        target: Any = "callable" if self._table is None else self._table.tolist()
        return super().params() | {"target": target}

    def success(self, policy: Policy, **_: Any) -> dict[str, Any] | None:
        """For a target array: the rate at which ``policy`` takes the target actions."""
        return None if self._table is None else _target_success(self._table, policy)


class AdaptiveTargetReward(RewardAttack):
    """The Fast Adaptive Attack (FAA) of Zhang et al. 2020 on a tabular Q-learner.

    The attacker knows the MDP and reads the learner's live Q-table (white-box). It teaches
    the target states one at a time, farthest from the start first: while some target state
    ``g`` is not yet taught (its greedy action is not the target), the attacker *navigates*
    the agent toward ``g`` by rewarding, in the other states, the action of the policy that
    reaches ``g`` fastest (target states keep their target action on the way). In a target
    state it always *teaches* the target action. "Rewarding an action" means reading ``Q_t``
    and the update the learner is about to make: a step is poisoned only if, after the clean
    update, the desired action would not lead every other by ``margin`` (when the agent took
    it) or the action taken would not trail the desired one by ``margin`` (when it took
    another). A poisoned step gets ``δ = ±ε`` (``push="full"``, the default: under a step
    budget the scarce resource is steps, so a spent step pushes as hard as allowed and its
    lead lasts longer), or the smallest ``δ`` within ``±ε`` that restores the margin
    (``push="minimal"``).

    Our implementation follows the paper's construction (adaptive δ from the learner's Q,
    target states taught in order, navigation between them) for the constant-step-size
    Q-learner of :func:`rlsec.envs.finite.q_learning`. The step budget is ours; the paper
    bounds only ``|δ|``. As its thresholds predict, a budget too small for the Q* gaps at the
    target states only delays the learner: the attack holds while it keeps the learner from
    the goal, and fails once the learner finds it.

    Args:
        mdp: the environment's model (for navigation); its states are the observations.
        target: target action per state, ``-1`` where the attacker does not care. Entries at
            states labelled ``terminal`` are ignored (the agent never acts there).
        q_table: the learner's Q-table, read (never written) at every step.
        learning_rate: the learner's α; discount: its gamma.
        margin: η, the Q-value lead the attacker aims for (reward units).
        navigation_discount: discount of the reach-the-target problem solved to navigate.
        push: ``full`` (``δ = ±ε`` on a poisoned step) or ``minimal`` (just enough).
    """

    id = "faa-reward-v1"
    atlas = (_POISON, _POISON_MODEL)
    knowledge = "white-box"
    reference = (
        "Zhang, Ma, Singla, Zhu 2020, Adaptive Reward-Poisoning Attacks against "
        "Reinforcement Learning (ICML), Fast Adaptive Attack"
    )

    def __init__(
        self,
        threat_model: ThreatModel,
        *,
        mdp: FiniteMDP,
        target: np.ndarray,
        q_table: np.ndarray,
        learning_rate: float,
        discount: float,
        margin: float = 0.05,
        navigation_discount: float = 0.9,
        push: Literal["full", "minimal"] = "full",
    ) -> None:
        super().__init__(threat_model)
        if push not in ("full", "minimal"):
            raise ConfigError(f"push must be 'full' or 'minimal', got {push!r}")
        self.push = push
        n_s, n_a = mdp.n_states, mdp.n_actions
        t = _target_array(target, n_a)
        if t.shape != (n_s,):
            raise ConfigError(f"target must have shape ({n_s},), got {t.shape}")
        if not isinstance(q_table, np.ndarray) or q_table.shape != (n_s, n_a):
            raise ConfigError(
                f"q_table must be the learner's ({n_s}, {n_a}) numpy array, got "
                f"{getattr(q_table, 'shape', type(q_table).__name__)}"
            )
        if not 0 < learning_rate <= 1 or not 0 <= discount < 1:
            raise ConfigError(
                f"need learning_rate in (0, 1] and discount in [0, 1), got {learning_rate}, "
                f"{discount}"
            )
        if not margin >= 0 or not 0 < navigation_discount < 1:
            raise ConfigError(
                f"need margin >= 0 and navigation_discount in (0, 1), got {margin}, "
                f"{navigation_discount}"
            )
        self.mdp = mdp
        self.q_table = q_table
        self.learning_rate = float(learning_rate)
        self.discount = float(discount)
        self.margin = float(margin)
        self.navigation_discount = float(navigation_discount)
        terminal = mdp.labels.get("terminal", np.zeros(n_s, dtype=bool))
        self.target = np.where(terminal, -1, t)
        self._is_target = self.target >= 0
        dist = _distances(mdp)
        reachable = np.flatnonzero(self._is_target & np.isfinite(dist))
        # Farthest first: nearer targets bootstrap from the values of farther ones.
        self.order = reachable[np.argsort(-dist[reachable], kind="stable")]
        self._navigation: dict[int, np.ndarray] = {}

    def _check_spaces(self, obs: gym.Space[Any], act: gym.Space[Any], where: str) -> None:
        _check_tabular(self, obs, act, self.mdp.n_states, self.mdp.n_actions, where)

    def taught(self) -> np.ndarray:
        """Mask over :attr:`order`: whose greedy action is already the target."""
        q = self.q_table[self.order]
        want = self.target[self.order]
        lead = q[np.arange(len(want)), want]
        others = q.copy()
        others[np.arange(len(want)), want] = -np.inf
        return np.asarray(lead > others.max(axis=1)) if q.shape[1] > 1 else np.ones(len(want), bool)

    def _desired(self, s: int) -> int | None:
        if self._is_target[s]:
            return int(self.target[s])
        pending = np.flatnonzero(~self.taught())
        if pending.size == 0:
            return None
        nav = self._navigate(int(self.order[pending[0]]))[s]
        return None if nav < 0 else int(nav)

    def _navigate(self, goal: int) -> np.ndarray:
        """The action per state that reaches ``goal`` fastest (``-1``: cannot reach it)."""
        cached = self._navigation.get(goal)
        if cached is not None:
            return cached
        mdp = self.mdp
        allowed = np.ones((mdp.n_states, mdp.n_actions), dtype=bool)
        allowed[self._is_target] = False
        allowed[np.flatnonzero(self._is_target), self.target[self._is_target]] = True
        stuck = mdp.labels.get("terminal", np.zeros(mdp.n_states, dtype=bool)).copy()
        stuck[goal] = False
        v = np.zeros(mdp.n_states)
        for _ in range(100_000):
            q = np.where(allowed, self.navigation_discount * (mdp.transitions @ v), -np.inf)
            v_next = q.max(axis=1)
            v_next[goal], v_next[stuck] = 1.0, 0.0
            if np.max(np.abs(v_next - v)) < 1e-12:
                break
            v = v_next
        nav = np.where(v > 0, np.argmax(q, axis=1), -1)
        nav[goal] = -1
        self._navigation[goal] = nav
        return nav

    def _delta(
        self, observation: Any, action: Any, reward: float, next_observation: Any, terminated: bool
    ) -> float | None:
        s, a, s2 = int(observation), int(np.asarray(action)), int(next_observation)
        want = self._desired(s)
        if want is None or self.mdp.n_actions < 2:
            return None
        q, alpha = self.q_table, self.learning_rate
        bootstrap = 0.0 if terminated else self.discount * float(q[s2].max())
        clean = (1 - alpha) * q[s, a] + alpha * (reward + bootstrap)
        if a == want:
            need = float(np.delete(q[s], want).max()) + self.margin
            if clean >= need:
                return None
        else:
            need = float(q[s, want]) - self.margin
            if clean <= need:
                return None
        if self.push == "full":
            return self.epsilon if a == want else -self.epsilon
        return float(np.clip((need - clean) / alpha, -self.epsilon, self.epsilon))

    def params(self) -> dict[str, Any]:
        return super().params() | {
            "target": self.target.tolist(),
            "order": self.order.tolist(),
            "margin": self.margin,
            "push": self.push,
            "victim": {
                "algorithm": "tabular Q-learning",
                "learning_rate": self.learning_rate,
                "discount": self.discount,
            },
            "navigation_discount": self.navigation_discount,
        }

    def success(self, policy: Policy, **_: Any) -> dict[str, Any]:
        """The rate at which ``policy`` takes the target actions in the target states."""
        return _target_success(self.target, policy)


def _distances(mdp: FiniteMDP) -> np.ndarray:
    """Fewest steps from the initial states to each state (inf where unreachable)."""
    succ = mdp.transitions.sum(axis=1) > 0
    dist = np.full(mdp.n_states, np.inf)
    start = np.flatnonzero(mdp.initial > 0)
    dist[start] = 0
    queue = deque(start.tolist())
    while queue:
        s = queue.popleft()
        for t in np.flatnonzero(succ[s] & ~np.isfinite(dist)):
            dist[t] = dist[s] + 1
            queue.append(int(t))
    return dist


class PolicyTeachingReward(RewardAttack):
    """Rakhsha et al. 2020's offline reward poisoning, applied online.

    Solves :func:`~rlsec.attacks.policy_teaching.policy_teaching_lp` once, with ``bound = ε``
    (the threat model's per-step cap), then adds ``δ(s, a) = R̂(s, a) - R(s, a)`` to every
    step, so the learner's expected reward is ``R̂``. Every step may be touched: the threat
    model's frequency must be ``every-step``. Needs the MDP (knowledge of the environment,
    not of the learner).

    Args:
        mdp: the MDP, or a toy-text environment id to read it from (``FrozenLake-v1``).
        target, margin, cost, start, frozen: as in
            :func:`~rlsec.attacks.policy_teaching.policy_teaching_lp`.
    """

    id = "policy-teaching-reward-v1"
    atlas = (_POISON, _POISON_MODEL)
    reference = (
        "Rakhsha, Radanovic, Devidze, Zhu, Singla 2020, Policy Teaching via Environment "
        "Poisoning: Training-time Adversarial Attacks against Reinforcement Learning (ICML)"
    )

    def __init__(
        self,
        threat_model: ThreatModel,
        *,
        mdp: FiniteMDP | str,
        target: np.ndarray,
        margin: float = 0.01,
        cost: Literal["l1", "linf"] = "linf",
        start: np.ndarray | None = None,
        frozen: np.ndarray | None = None,
    ) -> None:
        super().__init__(threat_model)
        if isinstance(mdp, str):  # an environment id: its toy-text transition table
            mdp = FiniteMDP.from_toy_text(mdp)
        if threat_model.frequency != "every-step":
            raise ConfigError(
                f"{self.id} changes the expected reward of every (s, a) it touches; use "
                "frequency='every-step' (no step_budget)"
            )
        self.mdp = mdp
        self.solution = policy_teaching_lp(
            mdp,
            target,
            margin=margin,
            cost=cost,
            bound=threat_model.epsilon,
            start=start,
            frozen=frozen,
        )
        self.target = np.asarray(target, dtype=np.int64)

    def _check_spaces(self, obs: gym.Space[Any], act: gym.Space[Any], where: str) -> None:
        _check_tabular(self, obs, act, self.mdp.n_states, self.mdp.n_actions, where)

    def _delta(
        self, observation: Any, action: Any, reward: float, next_observation: Any, terminated: bool
    ) -> float | None:
        d = float(self.solution.delta[int(observation), int(np.asarray(action))])
        return d if d != 0.0 else None

    def params(self) -> dict[str, Any]:
        sol = self.solution
        return super().params() | {
            "target": self.target.tolist(),
            "margin": sol.margin,
            "margin_unit": "normalised discounted score (1 - gamma)·E[Σ gamma^t r_t]",
            "cost_norm": sol.cost_norm,
            "cost": sol.cost,
            "score_margin": sol.score_margin,
            "q_gap": sol.q_gap,
            "discount": self.mdp.discount,
        }

    def success(self, policy: Policy, **_: Any) -> dict[str, Any]:
        """The rate at which ``policy`` takes the target actions in the constrained states."""
        return _target_success(np.where(self.solution.constrained, self.target, -1), policy)


REWARD_ATTACKS: dict[str, type[Attack]] = {
    cls.id: cls
    for cls in (
        FlipReward,
        NoiseReward,
        TargetActionReward,
        AdaptiveTargetReward,
        PolicyTeachingReward,
    )
}


def make_reward_attack(
    attack_id: str,
    epsilon: float,
    *,
    step_budget: float | None = None,
    **params: Any,
) -> RewardAttack:
    """Build a reward attack with a training-time threat model.

    Args:
        attack_id: one of :data:`REWARD_ATTACKS`, e.g. ``flip-reward-v1``.
        epsilon: the largest ``|δ|`` on a step, in raw reward units.
        step_budget: the largest fraction of steps poisoned (None: every step may be).
        params: the method's own parameters (``target``, ``mdp``, ``q_table``...).

    Example:
        >>> make_reward_attack("noise-reward-v1", 0.5, step_budget=0.1).threat_model.phase
        'training'
        >>> make_reward_attack("flip-reward-v2", 1.0)
        Traceback (most recent call last):
        ...
        rlsec.errors.UnknownAttack: unknown reward attack id 'flip-reward-v2'; did you mean flip-reward-v1? Known: ...
    """  # noqa: E501
    cls = REWARD_ATTACKS.get(attack_id)
    if cls is None:
        close = difflib.get_close_matches(attack_id, REWARD_ATTACKS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UnknownAttack(
            f"unknown reward attack id {attack_id!r}; {hint}Known: {', '.join(REWARD_ATTACKS)}"
        )
    tm = ThreatModel(
        Surface.REWARD,
        epsilon,
        "linf",
        "raw",
        knowledge=cls.knowledge,
        frequency="every-step" if step_budget is None else "budgeted-steps",
        step_budget=step_budget,
        phase="training",
    )
    attack = cls(tm, **params)
    assert isinstance(attack, RewardAttack)
    return attack
