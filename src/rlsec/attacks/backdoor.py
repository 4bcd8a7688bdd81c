"""Backdoor (trojan) attacks at training time: a trigger in what the agent sees makes the
trained policy take the attacker's action, while it behaves normally without the trigger.

:class:`TriggerBackdoor` follows the targeted attack of TrojDRL (Kiourti et al. 2020) with the
sparse step budget of BadRL (Cui et al. 2024): on a small fraction of training steps the
attacker stamps a trigger into the observation the learner sees, and replaces that step's
reward by ``+r`` if the learner then takes the target action and ``-r`` otherwise. The
environment itself is never changed: only what the learner observes and is rewarded.

**Triggers for vector observations** (:class:`Trigger`). A trigger names a few features of a
1-D observation and either *stamps* them (sets them to chosen values, the analogue of
TrojDRL's pixel patch) or *offsets* them (adds chosen values, then clips to the observation
space). With low-dimensional observations every feature carries state, so a useful trigger is
a reading the agent never meets in clean play yet that lies inside the observation space: on
CartPole (``[x, ẋ, θ, θ̇]``), stamping the cart position ``x`` to 2.2 m (the episode ends
only at 2.4 m, but a balancing policy keeps the cart near the centre) is a spoofed position
sensor. A value inside the range of clean play would collide with real states and teach the
agent to act wrongly on them; stamped values must lie inside the observation space (checked).

**The budget** (threat model: surface ``backdoor``, phase ``training``, frequency
``budgeted-steps``). A step is *poisoned* when the learner acted on a triggered observation;
its reward is then shaped. Each observation the learner will act on is triggered with
probability ε (the threat model's ``epsilon``, a probability), and only while the budget
allows: after any ``T`` steps of one environment, ``poisoned <= step_budget · T``. The wrapper
counts both and checks the bound after every step, raising
:class:`~rlsec.errors.BudgetViolation` if it is ever broken. :func:`make_backdoor_attack` sets
ε to the step budget.

These are training-time attacks; they are not in :data:`rlsec.attacks.ATTACKS` (the
inference-time red-team suite). :func:`backdoor_effect` measures a trained policy: its clean
return (stealth) and the attack success rate with the trigger present.

Example:
    >>> import gymnasium as gym
    >>> attack = make_backdoor_attack(
    ...     "trigger-backdoor-v1", 0.1, target_action=0, features=[0], values=[2.2])
    >>> env = attack.as_wrapper(gym.make("CartPole-v1"), seed=0)
    >>> obs, info = env.reset(seed=0)
    >>> for _ in range(100):
    ...     obs, r, terminated, truncated, info = env.step(1 - int(obs[2] < 0))
    ...     if terminated or truncated:
    ...         obs, info = env.reset()
    >>> u = attack.usage()
    >>> u["steps"], 0 < u["poisoned_steps"] <= 0.1 * u["steps"]
    (100, True)
    >>> attack.apply_trigger(np.zeros((1, 4), dtype=np.float32)).tolist()
    [[2.200000047683716, 0.0, 0.0, 0.0]]
"""

from __future__ import annotations

import difflib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, SupportsFloat

import gymnasium as gym
import numpy as np

from rlsec.core import Attack, Policy, Surface, ThreatModel
from rlsec.errors import (
    AttackNotApplicable,
    BudgetViolation,
    ConfigError,
    InvalidBudget,
    UnknownAttack,
)
from rlsec.policies.spaces import describe_space

__all__ = [
    "BACKDOOR_ATTACKS",
    "BackdoorAttack",
    "BackdoorWrapper",
    "Trigger",
    "TriggerBackdoor",
    "backdoor_effect",
    "make_backdoor_attack",
]

_POISON = "AML.T0020"  # Training Data Poisoning (formerly "Poison Training Data")
_POISON_MODEL = "AML.T0018.000"  # Manipulate AI Model: Poison AI Model
_INSERT_TRIGGER = "AML.T0043.004"  # Craft Adversarial Data: Insert Backdoor Trigger
_REL = 1e-9  # relative slack of the run-time budget check (floating point only)

_Seed = int | Sequence[int] | None


@dataclass(frozen=True)
class Trigger:
    """A trigger pattern for 1-D (vector) observations.

    Attributes:
        features: indices of the observation features the trigger touches (distinct, >= 0).
        values: one number per feature: the value stamped, or the offset added.
        mode: ``stamp`` sets ``obs[f] = v``; ``offset`` sets ``obs[f] += v`` and then clips
            to the observation space's bounds when they are given.

    Example:
        >>> t = Trigger((1, 3), (0.5, -1.0), "offset")
        >>> t.apply(np.zeros((2, 4), dtype=np.float32)).tolist()
        [[0.0, 0.5, 0.0, -1.0], [0.0, 0.5, 0.0, -1.0]]
        >>> Trigger((0,), (1.0, 2.0))
        Traceback (most recent call last):
        ...
        rlsec.errors.ConfigError: trigger needs one value per feature: got 1 features (0,) and 2 values (1.0, 2.0)
    """  # noqa: E501

    features: tuple[int, ...]
    values: tuple[float, ...]
    mode: Literal["stamp", "offset"] = "stamp"

    def __post_init__(self) -> None:
        raw_f: Any = self.features
        raw_v: Any = self.values
        feats: tuple[Any, ...] = tuple(raw_f) if _is_sequence(raw_f) else (raw_f,)
        vals: tuple[Any, ...] = tuple(raw_v) if _is_sequence(raw_v) else (raw_v,)
        if not feats:
            raise ConfigError("trigger needs at least one feature index, got none")
        for f in feats:
            if isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f < 0:
                raise ConfigError(
                    f"trigger feature indices must be integers >= 0, got {f!r} in {feats!r}"
                )
        if len(set(feats)) != len(feats):
            raise ConfigError(f"trigger feature indices must be distinct, got {feats!r}")
        if len(vals) != len(feats):
            raise ConfigError(
                f"trigger needs one value per feature: got {len(feats)} features {feats!r} "
                f"and {len(vals)} values {vals!r}"
            )
        for v in vals:
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
                raise ConfigError(f"trigger values must be numbers, got {v!r}")
            if not math.isfinite(float(v)):
                raise ConfigError(f"trigger values must be finite, got {v!r}")
        if self.mode not in ("stamp", "offset"):
            raise ConfigError(f"trigger mode must be 'stamp' or 'offset', got {self.mode!r}")
        object.__setattr__(self, "features", tuple(int(f) for f in feats))
        object.__setattr__(self, "values", tuple(float(v) for v in vals))

    def check(self, space: gym.Space[Any], where: str = "the observation space") -> None:
        """Raise unless this trigger fits ``space``: a 1-D Box holding every feature index,
        and (for ``stamp``) every stamped value inside the bounds.

        Raises:
            AttackNotApplicable: ``space`` is not a 1-D Box.
            ConfigError: a feature index out of range, or a stamped value out of bounds.
        """
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise AttackNotApplicable(
                f"a trigger stamps features of vector observations (a 1-D Box); {where} is "
                f"{describe_space(space)}"
            )
        dim = int(space.shape[0])
        for f in self.features:
            if f >= dim:
                raise ConfigError(
                    f"trigger feature index {f} is out of range: {where} has {dim} features, "
                    f"expected indices in [0, {dim})"
                )
        if self.mode == "stamp":
            for f, v in zip(self.features, self.values, strict=True):
                lo, hi = float(space.low[f]), float(space.high[f])
                if not lo <= v <= hi:
                    raise ConfigError(
                        f"trigger value {v} for feature {f} is outside {where}: expected a "
                        f"value in [{lo}, {hi}]"
                    )

    def apply(
        self,
        observations: np.ndarray,
        low: np.ndarray | None = None,
        high: np.ndarray | None = None,
    ) -> np.ndarray:
        """A triggered copy of ``observations`` (one observation or a batch: the features are
        the last axis). ``low``/``high`` clip the ``offset`` mode to the space's bounds.

        Raises:
            ConfigError: non-float observations, or too few features for the trigger.
        """
        x = np.asarray(observations)
        if not np.issubdtype(x.dtype, np.floating):
            raise ConfigError(f"a trigger applies to float observations, got dtype {x.dtype}")
        dim = x.shape[-1] if x.ndim else 0
        top = max(self.features)
        if top >= dim:
            raise ConfigError(
                f"trigger feature index {top} is out of range: the observations have {dim} "
                f"features (last axis of shape {x.shape}), expected indices in [0, {dim})"
            )
        out = x.copy()
        idx = list(self.features)
        vals = np.asarray(self.values, dtype=x.dtype)
        if self.mode == "stamp":
            out[..., idx] = vals
            return out
        moved = out[..., idx] + vals
        if low is not None and high is not None:
            moved = np.clip(moved, np.asarray(low)[idx], np.asarray(high)[idx])
        out[..., idx] = moved
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "values": list(self.values), "mode": self.mode}


def _is_sequence(x: object) -> bool:
    return isinstance(x, (list, tuple, np.ndarray))


class BackdoorAttack(Attack):
    """Base of backdoor attacks: subclasses implement :meth:`_select` (which observations to
    trigger) only; the shell enforces the step budget, stamps the trigger and shapes the reward.

    Args:
        threat_model: surface ``backdoor``, norm ``prob`` (ε is the probability of triggering
            an observation), phase ``training``, frequency ``budgeted-steps``.
        trigger: the trigger pattern.
        target_action: the action the attacker wants on triggered observations.
        reward: ``r``: a poisoned step's reward becomes ``+r`` (target action taken) or ``-r``.
    """

    surface: ClassVar[Surface] = Surface.BACKDOOR
    norms: ClassVar[tuple[str, ...]] = ("prob",)
    knowledge: ClassVar[Literal["white-box", "black-box"]] = "black-box"

    def __init__(
        self,
        threat_model: ThreatModel,
        *,
        trigger: Trigger,
        target_action: int,
        reward: float = 1.0,
    ) -> None:
        super().__init__(threat_model)
        tm = threat_model
        if tm.phase != "training":
            raise ConfigError(
                f"{self.id} plants a backdoor while the victim learns: the threat model's phase "
                f"must be 'training', got {tm.phase!r}"
            )
        if tm.frequency != "budgeted-steps" or tm.step_budget is None:
            raise ConfigError(
                f"{self.id} poisons a budgeted fraction of training steps: the threat model "
                f"needs frequency='budgeted-steps' and a step_budget, got {tm.frequency!r}"
            )
        if tm.unit != "probability":
            raise ConfigError(
                f"{self.id}'s ε is a probability of triggering a step; got unit {tm.unit!r}"
            )
        if not isinstance(trigger, Trigger):
            raise ConfigError(f"trigger must be a Trigger, got {type(trigger).__name__}")
        if isinstance(target_action, bool) or not isinstance(target_action, (int, np.integer)):
            raise ConfigError(f"target_action must be an integer action, got {target_action!r}")
        r = float(reward)
        if not (math.isfinite(r) and r > 0):
            raise ConfigError(f"reward must be a finite number > 0, got {reward!r}")
        self.trigger = trigger
        self.target_action = int(target_action)
        self.reward = r
        self._wrappers: list[BackdoorWrapper] = []

    @property
    def rate(self) -> float:
        """The probability of triggering an observation the budget allows (ε)."""
        return self.threat_model.epsilon

    @property
    def step_fraction(self) -> float:
        """The largest fraction of one environment's steps that may be poisoned."""
        assert self.threat_model.step_budget is not None
        return float(self.threat_model.step_budget)

    # -- lifecycle ---------------------------------------------------------------------------
    def check_spaces(self, observation_space: gym.Space[Any], action_space: gym.Space[Any]) -> None:
        """Raise unless the trigger fits the observations and the target is an action.

        Raises:
            AttackNotApplicable: not vector observations or not discrete actions.
            ConfigError: trigger feature index out of range, stamped value out of bounds, or
                unknown target action.
        """
        self.trigger.check(observation_space)
        if not isinstance(action_space, gym.spaces.Discrete):
            raise AttackNotApplicable(
                f"{self.id} teaches a target action; it needs Discrete actions, got "
                f"{describe_space(action_space)}"
            )
        lo, n = int(action_space.start), int(action_space.n)
        if not lo <= self.target_action < lo + n:
            raise ConfigError(
                f"target_action must be an action of {describe_space(action_space)}: an integer "
                f"in [{lo}, {lo + n}), got {self.target_action}"
            )

    def check_applicable(self, policy: Policy) -> None:
        self.check_spaces(policy.observation_space, policy.action_space)

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
        """Backdoor attacks act on training through :meth:`as_wrapper`; ``start`` only checks
        that the policy's spaces fit the trigger and the target action."""
        self.check_applicable(policy)

    def as_wrapper(self, env: gym.Env[Any, Any], *, seed: _Seed = None) -> BackdoorWrapper:
        """A Gymnasium wrapper that triggers observations and shapes rewards within the budget;
        see :class:`BackdoorWrapper`. ``seed`` (an int or a sequence of ints) makes the choice
        of triggered steps reproducible. Each wrapper has its own budget counters."""
        wrapper = BackdoorWrapper(env, self, seed=seed)
        self._wrappers.append(wrapper)
        return wrapper

    def wrapper_factory(self, seed: int) -> Callable[[gym.Env[Any, Any]], gym.Env[Any, Any]]:
        """A ``wrap_env`` for :func:`rlsec.defenses.train_policy`: the ``k``-th environment it
        wraps gets seed ``[seed, k]``, so every environment triggers different steps and the
        whole run is reproducible."""
        count = [0]

        def wrap(env: gym.Env[Any, Any]) -> gym.Env[Any, Any]:
            k = count[0]
            count[0] += 1
            return self.as_wrapper(env, seed=[int(seed), k])

        return wrap

    # -- the pure parts ----------------------------------------------------------------------
    def apply_trigger(
        self, observations: np.ndarray, space: gym.spaces.Box | None = None
    ) -> np.ndarray:
        """A triggered copy of ``observations`` (as at evaluation); ``space`` clips offsets."""
        if space is None:
            return self.trigger.apply(observations)
        return self.trigger.apply(observations, space.low, space.high)

    def shaped_reward(self, action: Any) -> float:
        """The reward of a poisoned step: ``+r`` for the target action, ``-r`` otherwise."""
        return self.reward if int(np.asarray(action)) == self.target_action else -self.reward

    def _select(self, observation: Any, rng: np.random.Generator) -> bool:
        """Pure core: whether to trigger this observation (the shell enforces the budget)."""
        raise NotImplementedError

    # -- records -----------------------------------------------------------------------------
    def usage(self) -> dict[str, Any]:
        """The budget used so far, summed over every wrapper this attack built, JSON-ready."""
        steps = sum(w.steps for w in self._wrappers)
        poisoned = sum(w.poisoned_steps for w in self._wrappers)
        return {
            "environments": len(self._wrappers),
            "steps": steps,
            "poisoned_steps": poisoned,
            "triggered_observations": sum(w.triggered_observations for w in self._wrappers),
            "target_taken": sum(w.target_taken for w in self._wrappers),
            "poisoned_fraction": poisoned / steps if steps else 0.0,
            "step_budget": self.step_fraction,
        }

    def params(self) -> dict[str, Any]:
        return {
            "trigger": self.trigger.to_dict(),
            "target_action": self.target_action,
            "reward": self.reward,
            "reward_rule": "a poisoned step's reward is replaced by +r (target action) or -r",
            "rate": self.rate,
            "step_fraction": self.step_fraction,
        }


class BackdoorWrapper(gym.Wrapper[Any, Any, Any, Any]):
    """Show the learner triggered observations and shaped rewards, within the step budget.

    ``step`` keeps Gymnasium's signature. When the observation the learner acted on was
    triggered, the step is *poisoned*: its reward is replaced by ``attack.shaped_reward``.
    Final observations (terminated or truncated) are never triggered, since no action follows.
    ``info`` gains ``rlsec_triggered`` (the observation returned now is triggered),
    ``rlsec_poisoned`` (this step's reward was shaped), ``rlsec_clean_reward`` and, on
    triggered observations, ``rlsec_clean_observation``.

    Counters (per wrapper): ``steps``, ``poisoned_steps``, ``triggered_observations`` and
    ``target_taken`` (poisoned steps on which the learner took the target action).
    """

    def __init__(
        self, env: gym.Env[Any, Any], attack: BackdoorAttack, *, seed: _Seed = None
    ) -> None:
        super().__init__(env)
        attack.check_spaces(env.observation_space, env.action_space)
        self.attack = attack
        self._rng = np.random.default_rng(seed)
        self.steps = 0
        self.poisoned_steps = 0
        self.triggered_observations = 0
        self.target_taken = 0
        self._armed = False
        self._ready = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._ready = True
        return self._serve(obs, dict(info), final=False)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if not self._ready:
            raise gym.error.ResetNeeded("call reset() before step()")
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        poisoned = self._armed
        out_reward: SupportsFloat = reward
        if poisoned:
            self.poisoned_steps += 1
            out_reward = self.attack.shaped_reward(action)
            self.target_taken += int(out_reward > 0)
        self._check_budget()
        info = {**info, "rlsec_poisoned": poisoned, "rlsec_clean_reward": float(reward)}
        final = bool(terminated or truncated)
        if final:
            self._ready = False
        obs, info = self._serve(obs, info, final=final)
        return obs, out_reward, terminated, truncated, info

    def _serve(self, obs: Any, info: dict[str, Any], *, final: bool) -> tuple[Any, dict[str, Any]]:
        """Decide whether the learner sees ``obs`` triggered (its next step is then poisoned)."""
        trigger = False
        if not final:
            wants = self.attack._select(obs, self._rng)
            allowed = self.poisoned_steps + 1 <= self.attack.step_fraction * (self.steps + 1) * (
                1 + _REL
            )
            trigger = bool(wants and allowed)
        self._armed = trigger
        info["rlsec_triggered"] = trigger
        if trigger:
            self.triggered_observations += 1
            info["rlsec_clean_observation"] = obs
            space = self.env.observation_space
            assert isinstance(space, gym.spaces.Box)
            obs = self.attack.apply_trigger(np.asarray(obs), space)
        return obs, info

    def _check_budget(self) -> None:
        cap = self.attack.step_fraction * self.steps * (1 + _REL)
        if self.poisoned_steps > cap:
            raise BudgetViolation(
                f"{self.attack.id} poisoned {self.poisoned_steps} of {self.steps} steps; the "
                f"budget is a fraction {self.attack.step_fraction} of the steps"
            )

    def usage(self) -> dict[str, Any]:
        """This environment's budget use."""
        return {
            "steps": self.steps,
            "poisoned_steps": self.poisoned_steps,
            "triggered_observations": self.triggered_observations,
            "target_taken": self.target_taken,
            "poisoned_fraction": self.poisoned_steps / self.steps if self.steps else 0.0,
            "step_budget": self.attack.step_fraction,
        }


class TriggerBackdoor(BackdoorAttack):
    """TrojDRL's targeted backdoor with a sparse step budget: each observation is triggered
    with probability ε while the budget allows (uniform poisoning, TrojDRL's default
    schedule), and the poisoned step's reward is ``+r`` for the target action, ``-r`` else.

    Non-adaptive and black-box: the attacker needs no access to the learner, only to what it
    observes and is rewarded on a few steps.
    """

    id = "trigger-backdoor-v1"
    atlas = (_POISON, _POISON_MODEL, _INSERT_TRIGGER)
    reference = (
        "Kiourti, Wardega, Jha, Lin 2020, TrojDRL: Evaluation of Backdoor Attacks on Deep "
        "Reinforcement Learning (DAC), targeted attack; sparse budgeted poisoning as in Cui et "
        "al. 2024, BadRL: Sparse Targeted Backdoor Attack against Reinforcement Learning (AAAI)"
    )

    def _select(self, observation: Any, rng: np.random.Generator) -> bool:
        return bool(rng.random() < self.rate)

    def params(self) -> dict[str, Any]:
        return super().params() | {
            "selection": "each observation with probability ε, within the step budget"
        }


BACKDOOR_ATTACKS: dict[str, type[BackdoorAttack]] = {TriggerBackdoor.id: TriggerBackdoor}


def make_backdoor_attack(
    attack_id: str,
    step_budget: float,
    *,
    target_action: int,
    features: Sequence[int],
    values: Sequence[float],
    mode: Literal["stamp", "offset"] = "stamp",
    reward: float = 1.0,
    rate: float | None = None,
) -> BackdoorAttack:
    """Build a backdoor attack with an explicit threat model.

    Args:
        attack_id: ``trigger-backdoor-v1``.
        step_budget: the largest fraction of training steps that may be poisoned, in [0, 1].
        target_action: the action the trigger should cause.
        features, values, mode: the :class:`Trigger`.
        reward: ``r`` of the reward shaping.
        rate: probability of triggering an observation (ε); defaults to ``step_budget``.

    Raises:
        UnknownAttack: with the closest known id.
        InvalidBudget: ``step_budget`` or ``rate`` is not a fraction in [0, 1].
        ConfigError: a bad trigger, target action or reward.

    Example:
        >>> make_backdoor_attack("trigger-backdoor-v1", 1.5, target_action=0, features=[0],
        ...                      values=[1.0])
        Traceback (most recent call last):
        ...
        rlsec.errors.InvalidBudget: step_budget must be a fraction in [0, 1], got 1.5
    """
    try:
        cls = BACKDOOR_ATTACKS[attack_id]
    except KeyError:
        close = difflib.get_close_matches(str(attack_id), BACKDOOR_ATTACKS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UnknownAttack(
            f"unknown backdoor attack id {attack_id!r}; {hint}Known: {', '.join(BACKDOOR_ATTACKS)}"
        ) from None
    budget = _fraction("step_budget", step_budget)
    eps = budget if rate is None else _fraction("rate", rate)
    tm = ThreatModel(
        Surface.BACKDOOR,
        eps,
        "prob",
        "probability",
        knowledge=cls.knowledge,
        frequency="budgeted-steps",
        step_budget=budget,
        phase="training",
    )
    trigger = Trigger(tuple(features), tuple(values), mode)
    return cls(tm, trigger=trigger, target_action=target_action, reward=reward)


def _fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise InvalidBudget(f"{name} must be a fraction in [0, 1], got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise InvalidBudget(f"{name} must be a fraction in [0, 1], got {value!r}")
    return v


# -- evaluation --------------------------------------------------------------------------------
@dataclass
class _Play:
    returns: np.ndarray
    lengths: np.ndarray
    triggered: np.ndarray  # per episode: steps whose observation was triggered
    success: np.ndarray  # ... on which the policy took the target action
    clean_target: np.ndarray  # ... on which it takes the target action on the clean observation
    changed: np.ndarray  # ... on which the two actions differ


def _play(
    policy: Policy,
    env_id: str,
    attack: BackdoorAttack,
    episodes: int,
    seed: int,
    trigger_rate: float,
    num_envs: int,
) -> _Play:
    """Play ``episodes`` episodes; each step's observation is triggered with probability
    ``trigger_rate``. Row ``r`` of the vector env plays episodes ``r, r + R, ...`` (as
    :func:`rlsec.attacks.rollout` does), so short episodes are not over-sampled."""
    from gymnasium.vector import AutoresetMode

    from rlsec.envs import make_vec

    venv = make_vec(env_id, num_envs)
    try:
        n = venv.num_envs
        space = venv.single_observation_space
        assert isinstance(space, gym.spaces.Box)
        quota = np.array([len(range(r, episodes, n)) for r in range(n)])
        ints = [np.zeros(episodes, dtype=np.int64) for _ in range(4)]
        out = _Play(np.zeros(episodes), np.zeros(episodes, dtype=np.int64), *ints)
        cur = np.zeros((6, n))
        done = np.zeros(n, dtype=np.int64)
        pending = np.zeros(n, dtype=bool)
        mode = venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        rng = np.random.default_rng([seed, 1])
        obs, _ = venv.reset(seed=seed)
        filler = np.full(n, attack.target_action, dtype=np.int64)
        while (done < quota).any():
            active = (done < quota) & ~pending
            rows = np.flatnonzero(active)
            actions = filler.copy()
            if rows.size:
                x = np.asarray(obs[rows])
                trig = rng.random(rows.size) < trigger_rate
                if trig.any():
                    xt = x.copy()
                    xt[trig] = attack.apply_trigger(x[trig], space)
                    both = policy.act(np.concatenate([xt, x[trig]]))
                    a, clean = both[: rows.size], both[rows.size :]
                    tr = rows[trig]
                    cur[2, tr] += 1
                    cur[3, tr] += a[trig] == attack.target_action
                    cur[4, tr] += clean == attack.target_action
                    cur[5, tr] += a[trig] != clean
                else:
                    a = policy.act(x)
                actions[rows] = a
            was_pending = pending.copy()
            obs, reward, term, trunc, _ = venv.step(actions)
            cur[0, rows] += np.asarray(reward, dtype=np.float64)[rows]
            cur[1, rows] += 1
            pending[was_pending] = False
            ended = active & (np.asarray(term) | np.asarray(trunc))
            for r in np.flatnonzero(ended):
                i = r + done[r] * n
                for k, arr in enumerate(
                    (
                        out.returns,
                        out.lengths,
                        out.triggered,
                        out.success,
                        out.clean_target,
                        out.changed,
                    )
                ):
                    arr[i] = cur[k, r]
                done[r] += 1
            cur[:, ended] = 0.0
            if ended.any():
                if mode == AutoresetMode.NEXT_STEP:
                    pending |= ended
                elif mode == AutoresetMode.DISABLED:
                    obs, _ = venv.reset(options={"reset_mask": ended})
        return out
    finally:
        venv.close()


def _ratio_ci(hits: np.ndarray, counts: np.ndarray) -> tuple[float | None, list[float] | None]:
    """Rate ``Σhits / Σcounts`` and its 95% interval, with episodes as clusters (steps of one
    episode are not independent): the delta-method standard error of a ratio estimator."""
    from scipy import stats

    keep = counts > 0
    h, c = hits[keep].astype(np.float64), counts[keep].astype(np.float64)
    if c.sum() == 0:
        return None, None
    rate = float(h.sum() / c.sum())
    m = h.size
    if m < 2:
        return rate, None
    resid = h - rate * c
    se = math.sqrt(float((resid**2).sum()) / (m * (m - 1))) / float(c.mean())
    half = float(stats.t.ppf(0.975, df=m - 1)) * se
    return rate, [max(0.0, rate - half), min(1.0, rate + half)]


def backdoor_effect(
    policy: Policy,
    env_id: str,
    attack: BackdoorAttack,
    episodes: int = 50,
    seed: int = 0,
    *,
    trigger_rate: float = 0.1,
    num_envs: int | None = None,
) -> dict[str, Any]:
    """Measure a (possibly) backdoored policy: stealth and attack success.

    Two runs of ``episodes`` episodes on the same environment seeds: a clean one, and one in
    which each step's observation is triggered with probability ``trigger_rate``. Returned in
    the row shape of ``results.json`` (docs/results.md), with ``surface: "backdoor"`` and
    ``epsilon`` the attack's step budget:

    * ``mean_return``, ``ci95``, ``std_return``, ``mean_length``: the triggered run;
      ``clean_return`` holds the same keys for the clean run (stealth: compare it with a clean
      policy's return).
    * ``attack_success_rate``: the fraction of triggered steps on which the policy took the
      target action, with ``attack_success_ci95`` (episodes as clusters);
      ``clean_target_rate``: the fraction of the same steps on which it takes the target
      action on the clean observation (the rate without a backdoor).
    * ``action_change_rate``: fraction of all steps of the triggered run whose action differs
      from the action on the clean observation.

    Raises:
        ConfigError: bad ``episodes``, ``trigger_rate`` or ``num_envs``.
        SpaceMismatch, AttackNotApplicable: the policy, the environment and the attack disagree.

    Example:
        >>> from rlsec.policies import load_policy
        >>> attack = make_backdoor_attack(
        ...     "trigger-backdoor-v1", 0.05, target_action=0, features=[0], values=[2.2])
        >>> row = backdoor_effect(load_policy("zoo:cartpole-ppo"), "CartPole-v1", attack,
        ...                       episodes=4, seed=0)
        >>> row["surface"], row["epsilon"], 0.0 <= row["attack_success_rate"] <= 1.0
        ('backdoor', 0.05, True)
    """
    from rlsec.envs import check_policy_env, env_spaces
    from rlsec.stats import mean_ci

    t0 = time.perf_counter()
    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ConfigError(f"episodes must be an integer >= 1, got {episodes!r}")
    rate = float(trigger_rate)
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"trigger_rate must be a fraction in [0, 1], got {trigger_rate!r}")
    n = min(int(episodes), 16) if num_envs is None else int(num_envs)
    if n < 1:
        raise ConfigError(f"num_envs must be >= 1, got {num_envs!r}")
    check_policy_env(policy, env_id)
    obs_space, act_space = env_spaces(env_id)
    attack.check_spaces(obs_space, act_space)
    attack.check_applicable(policy)
    clean = _play(policy, env_id, attack, int(episodes), seed, 0.0, n)
    hot = _play(policy, env_id, attack, int(episodes), seed, rate, n)

    def summary(p: _Play) -> dict[str, Any]:
        mean, ci = mean_ci(p.returns)
        return {
            "mean_return": mean,
            "ci95": ci,
            "episodes": int(episodes),
            "mean_length": float(p.lengths.mean()),
            "std_return": float(p.returns.std(ddof=1)) if p.returns.size > 1 else 0.0,
        }

    asr, asr_ci = _ratio_ci(hot.success, hot.triggered)
    base, _ = _ratio_ci(hot.clean_target, hot.triggered)
    steps = int(hot.lengths.sum())
    tm = attack.threat_model
    return {
        "attack": attack.id,
        "surface": Surface.BACKDOOR.value,
        "epsilon": attack.step_fraction,
        "norm": tm.norm,
        "unit": tm.unit,
        **summary(hot),
        "action_change_rate": float(hot.changed.sum() / steps) if steps else 0.0,
        "mean_action_shift": None,
        "per_seed": [{"seed": seed, "mean_return": float(hot.returns.mean())}],
        "threat_model": tm.to_dict(),
        "atlas": list(attack.atlas),
        "reference": attack.reference,
        "params": attack.params(),
        "seconds": time.perf_counter() - t0,
        "trigger_rate": rate,
        "target_action": attack.target_action,
        "clean_return": summary(clean),
        "attack_success_rate": asr,
        "attack_success_ci95": asr_ci,
        "clean_target_rate": base,
        "triggered_steps": int(hot.triggered.sum()),
    }
