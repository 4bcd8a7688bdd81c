"""Attacks on the data surface: the learner is trained on transitions the attacker crafted.

This module holds the attacks (what a crafted transition is); two training-time drivers apply
them:

* **Replay-buffer poisoning** of an off-policy learner (DQN, SAC): :meth:`DataAttack.callback`
  gives a Stable-Baselines3 callback (:class:`~rlsec.attacks.replay.ReplayPoisoner`) that
  writes crafted transitions into ``model.replay_buffer`` while the learner trains; pass it to
  :func:`rlsec.defenses.train_policy` in ``callbacks``.
* **Offline-dataset poisoning**: :func:`~rlsec.attacks.offline.poison_dataset` poisons a
  :class:`~rlsec.attacks.transitions.TransitionDataset` before an offline learner sees it;
  :func:`rlsec.evaluate.data.data_damage` measures the effect.

**Budget.** Every crafted transition is a copy of a genuine one (its *source*) whose reward
moved by at most ε (the threat model's ``epsilon``, raw reward units, ``linf``) and whose
observations moved by at most ``obs_epsilon`` per feature (raw observation units; only
:class:`NoiseData` moves them, 0 by default), never out of the observation space. The threat
model's ``step_budget`` is the fraction of crafted to genuine transitions: at every moment
``crafted == floor(step_budget · genuine)`` (up to float rounding; with ``n_envs > 1`` the
``direct`` mode writes whole buffer rows of ``n_envs`` transitions, so ``crafted`` is the
largest multiple of ``n_envs`` within it). Both bounds are checked at run time, raising
:class:`~rlsec.errors.BudgetViolation`, and every crafted transition is recorded
(:class:`~rlsec.attacks.transitions.PoisonRecord`: where it was written, which genuine
transition it copies, when).

**Modes.** ``direct``: crafted transitions are *added* (the buffer's own ``add``; extra rows of
a dataset, interleaved at random positions); genuine transitions are not modified.
``replace``: crafted transitions *overwrite* genuine ones in place (the source itself is
rewritten), the stealthier mode; what a monitor can see of each is told in
:mod:`rlsec.attacks.replay`.

**Strategies.**

* :class:`FlipData` (random baseline): rewards of random copies moved toward their opposite
  sign by at most ε (a sign flip when ε ≥ 2|r|), as random label flipping in supervised
  poisoning.
* :class:`NoiseData` (random baseline): copies with uniform noise in ``[-ε, ε]`` on the reward
  and in ``[-obs_epsilon, obs_epsilon]`` on each observation feature; with ``relabel``, a
  random other action too.
* :class:`TargetActionData` (targeted): copies of genuine states in which the attacker's target
  action earns ``r + ε`` and any other action ``r - ε`` (the data analogue of the targeted
  reward poisoning of Zhang et al. 2020 and of policy poisoning in batch RL, Ma et al. 2019);
  with ``relabel`` a fraction of the copies also take the target action in place of the
  genuine one, as BAFFLE's misleading experiences do (Gong et al. 2022).

Budgets count transitions, as COPA's certificates count poisoned trajectories (Wu et al.
2022); ε bounds each change, as the reward-poisoning budgets of Rangi et al. 2022 do.

MITRE ATLAS: AML.T0020 (Poison Training Data, now "Training Data Poisoning") and AML.T0031
(Erode ML Model Integrity); a poisoned dataset that is then shared is also AML.T0019 (Publish
Poisoned Datasets).

These are training-time attacks: they are not in :data:`rlsec.attacks.ATTACKS` (the
inference-time red-team suite). Build them with :func:`make_data_attack`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np

from rlsec.attacks.replay import ReplayPoisoner
from rlsec.attacks.transitions import Mode, Transitions, _check_actions, _check_spaces
from rlsec.core import Attack, Policy, Surface, ThreatModel
from rlsec.errors import BudgetViolation, ConfigError, UnknownAttack
from rlsec.policies.spaces import box_span, describe_space

__all__ = [
    "DATA_ATTACKS",
    "DataAttack",
    "FlipData",
    "NoiseData",
    "TargetActionData",
    "make_data_attack",
]

_POISON = "AML.T0020"  # Poison Training Data (ATLAS now calls it "Training Data Poisoning")
_ERODE = "AML.T0031"  # Erode ML Model Integrity
_REL = 1e-9  # relative slack of the run-time budget checks (floating point only)


class DataAttack(Attack):
    """Base of data attacks: subclasses implement :meth:`_craft` only.

    Args:
        threat_model: surface ``data``, norm ``linf``, unit ``raw``, phase ``training``,
            frequency ``budgeted-steps`` with ``step_budget`` the fraction of crafted to
            genuine transitions; ``epsilon`` bounds each reward change.
        mode: ``direct`` (add crafted transitions) or ``replace`` (overwrite genuine ones).
        obs_epsilon: bound on each observation feature's change, raw units (default 0).
    """

    surface: ClassVar[Surface] = Surface.DATA
    norms: ClassVar[tuple[str, ...]] = ("linf",)
    knowledge: ClassVar[Literal["white-box", "black-box"]] = "black-box"
    atlas: ClassVar[tuple[str, ...]] = (_POISON, _ERODE)

    def __init__(
        self, threat_model: ThreatModel, *, mode: Mode = "direct", obs_epsilon: float = 0.0
    ) -> None:
        super().__init__(threat_model)
        tm = threat_model
        if tm.phase != "training":
            raise ConfigError(
                f"{self.id} poisons what the victim learns from: the threat model's phase "
                f"must be 'training', got {tm.phase!r}"
            )
        if tm.unit != "raw":
            raise ConfigError(f"{self.id} budgets are in raw units; got unit {tm.unit!r}")
        if tm.frequency != "budgeted-steps" or tm.step_budget is None:
            raise ConfigError(
                f"{self.id} needs frequency='budgeted-steps' with step_budget, the fraction "
                f"of crafted to genuine transitions; got frequency {tm.frequency!r}"
            )
        if mode not in ("direct", "replace"):
            raise ConfigError(f"mode must be 'direct' or 'replace', got {mode!r}")
        oe = obs_epsilon
        if (
            isinstance(oe, bool)
            or not isinstance(oe, (int, float))
            or not (math.isfinite(oe) and oe >= 0)
        ):
            raise ConfigError(f"obs_epsilon must be a finite number >= 0, got {oe!r}")
        self.mode: Mode = mode
        self.obs_epsilon = float(oe)
        self._obs_space: gym.spaces.Box | None = None
        self._act_space: gym.Space[Any] | None = None
        self._to_storage: Callable[[np.ndarray], np.ndarray] = _identity
        self._rng: np.random.Generator | None = None

    @property
    def epsilon(self) -> float:
        """The largest change of a reward, raw reward units."""
        return self.threat_model.epsilon

    @property
    def fraction(self) -> float:
        """The largest fraction of crafted to genuine transitions."""
        sb = self.threat_model.step_budget
        assert sb is not None
        return float(sb)

    # -- lifecycle ---------------------------------------------------------------------------
    def check_applicable(self, policy: Policy) -> None:
        """Data attacks change what a learner learns from, so any policy whose spaces they
        support is accepted (Box observations; Discrete or Box actions)."""
        _check_spaces(policy.observation_space, policy.action_space, "the policy")

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
        """Bind to ``policy``'s spaces and ``rng`` so :meth:`craft` can run on its own; the
        callback and :func:`~rlsec.attacks.offline.poison_dataset` bind themselves. The other
        arguments are unused."""
        self.check_applicable(policy)
        self.bind(policy.observation_space, policy.action_space)
        self._rng = rng

    def bind(
        self,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        to_storage: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        """Bind to the spaces transitions are stored in; ``to_storage`` maps environment
        actions to stored ones (SB3 stores Box actions rescaled to ``[-1, 1]``). The replay
        callback, :func:`~rlsec.attacks.offline.poison_dataset` and the data-poisoning
        evaluation call it; :meth:`start` calls it with a policy's spaces.

        Raises:
            AttackNotApplicable: the spaces are not supported (Box observations; Discrete or
                Box actions).
        """
        _check_spaces(observation_space, action_space, "the learner")
        assert isinstance(observation_space, gym.spaces.Box)
        self._obs_space, self._act_space = observation_space, action_space
        self._to_storage = to_storage or _identity
        self._setup()

    def _setup(self) -> None:
        """Hook: check the bound spaces and prepare (called whenever the attack binds)."""

    @property
    def action_space(self) -> gym.Space[Any]:
        if self._act_space is None:
            raise ConfigError(f"{self.id}: call start(...) before craft()")
        return self._act_space

    @property
    def observation_space(self) -> gym.spaces.Box:
        if self._obs_space is None:
            raise ConfigError(f"{self.id}: call start(...) before craft()")
        return self._obs_space

    def callback(self, seed: int) -> ReplayPoisoner:
        """An SB3 callback that poisons the learner's replay buffer (see
        :class:`~rlsec.attacks.replay.ReplayPoisoner`); ``seed`` makes its choices
        reproducible."""
        return ReplayPoisoner(self, seed=seed)

    # -- the shell around the pure core ------------------------------------------------------
    def craft(self, sources: Transitions, rng: np.random.Generator | None = None) -> Transitions:
        """Crafted copies of genuine transitions, one per source, inside the budget.

        Raises:
            ConfigError: the attack is not bound, or ``sources`` do not fit its spaces.
            BudgetViolation: the method moved a reward by more than ε, an observation by more
                than ``obs_epsilon`` or out of the space, or changed what it may not (a bug).
        """
        obs_space, act_space = self.observation_space, self.action_space
        gen = rng if rng is not None else self._rng
        if gen is None:
            raise ConfigError(f"{self.id}: pass rng, or call start(...) first")
        n = len(sources)
        want = (n, *obs_space.shape)
        if sources.obs.shape != want:
            raise ConfigError(f"sources.obs must have shape {want}, got {sources.obs.shape}")
        _check_actions(sources.actions, act_space, n, "sources.actions")
        out = self._craft(sources, gen) if n else sources.take(np.arange(0))
        self._check(sources, out)
        return out

    def _craft(self, sources: Transitions, rng: np.random.Generator) -> Transitions:
        """Pure core: crafted copies of ``sources`` (the same number, in the same order)."""
        raise NotImplementedError

    def _may_relabel(self) -> bool:
        """Whether crafted copies may take another action than their source."""
        return False

    def eligible(self, sources: Transitions) -> np.ndarray:
        """Which genuine transitions the attack copies (default: any); sources are drawn
        uniformly among the eligible ones."""
        return np.ones(len(sources), dtype=bool)

    def _check(self, src: Transitions, out: Transitions) -> None:
        n = len(src)
        if len(out) != n:
            raise BudgetViolation(f"{self.id} crafted {len(out)} transitions from {n} sources")
        if not np.array_equal(out.dones, src.dones):
            raise BudgetViolation(
                f"{self.id} changed a done flag; a crafted copy keeps its source's"
            )
        if n == 0:
            return
        eps = self.epsilon
        dr = np.abs(out.rewards - src.rewards)
        worst = float(np.max(dr, initial=0.0))
        # "not <=": a NaN source reward makes the shift NaN, and NaN > ε is false
        if not np.all(np.isfinite(out.rewards)) or not worst <= eps * (1 + _REL) + 1e-12:
            raise BudgetViolation(
                f"{self.id} moved a reward by {worst!r}; the budget is |δr| <= ε = {eps}"
            )
        space = self.observation_space
        for name in ("obs", "next_obs"):
            x0 = getattr(src, name).astype(np.float64)
            x = getattr(out, name).astype(np.float64)
            moved = float(np.max(np.abs(x - x0), initial=0.0)) if x.size else 0.0
            slack = (
                4 * float(np.finfo(getattr(out, name).dtype).eps) * (1 + float(np.abs(x0).max()))
            )
            if not np.all(np.isfinite(x)) or not moved <= self.obs_epsilon * (1 + _REL) + slack:
                raise BudgetViolation(
                    f"{self.id} moved {name} by {moved!r}; the budget is obs_epsilon = "
                    f"{self.obs_epsilon} per feature"
                )
            low = np.minimum(space.low, x0)  # a source already outside stays where it was
            high = np.maximum(space.high, x0)
            if not np.all((x >= low) & (x <= high)):
                raise BudgetViolation(f"{self.id} moved {name} out of {describe_space(space)}")
        try:
            _check_actions(out.actions, self.action_space, n, "crafted actions")
        except ConfigError as exc:
            raise BudgetViolation(f"{self.id}: {exc}") from None
        if not self._may_relabel() and not np.array_equal(out.actions, src.actions):
            raise BudgetViolation(f"{self.id} changed an action; it may change rewards only")

    def params(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "fraction": self.fraction,
            "fraction_unit": "crafted / genuine transitions",
            "epsilon_unit": "raw reward units, per transition",
            "obs_epsilon": self.obs_epsilon,
            "obs_epsilon_unit": "raw observation units, per feature",
        }


def _identity(a: np.ndarray) -> np.ndarray:
    return a


def _fraction(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0.0 <= float(value) <= 1.0
    ):
        raise ConfigError(f"{name} must be a fraction in [0, 1], got {value!r}")
    return float(value)


class FlipData(DataAttack):
    """Random copies whose reward moved toward its opposite sign: ``r - clip(2r, -ε, ε)``
    (a sign flip when ε ≥ 2|r|). The untargeted baseline, as random label flips are in
    supervised poisoning."""

    id = "flip-data-v1"
    reference = "random reward-sign flips of copied transitions (label-flip baseline)"

    def _craft(self, sources: Transitions, rng: np.random.Generator) -> Transitions:
        eps = self.epsilon
        r = sources.rewards - np.clip(2.0 * sources.rewards, -eps, eps)
        return Transitions(
            sources.obs.copy(),
            sources.actions.copy(),
            r,
            sources.next_obs.copy(),
            sources.dones.copy(),
        )


class NoiseData(DataAttack):
    """Noisy copies: uniform noise in ``[-ε, ε]`` on the reward and, per feature, in
    ``[-obs_epsilon, obs_epsilon]`` on ``s`` and ``s'`` (kept inside the observation space).

    With ``relabel > 0``, that fraction of the copies also takes a uniformly random action
    (another one, for discrete actions): the random counterpart of
    :class:`TargetActionData`'s relabelling, with the same capability and no target.

    Args:
        relabel: fraction of copies given a random action, in [0, 1].
    """

    id = "noise-data-v1"
    reference = "uniform noise on copied transitions (random-corruption baseline)"

    def __init__(
        self,
        threat_model: ThreatModel,
        *,
        relabel: float = 0.0,
        mode: Mode = "direct",
        obs_epsilon: float = 0.0,
    ) -> None:
        super().__init__(threat_model, mode=mode, obs_epsilon=obs_epsilon)
        self.relabel = _fraction("relabel", relabel)

    def _may_relabel(self) -> bool:
        return self.relabel > 0

    def _random_actions(self, actions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            # another action, uniformly: shift by 1..n-1 modulo n
            k = int(space.n)
            shift = rng.integers(1, k, len(actions)) if k > 1 else np.zeros(len(actions), int)
            return np.asarray((actions - space.start + shift) % k + space.start, actions.dtype)
        assert isinstance(space, gym.spaces.Box)
        low = np.broadcast_to(space.low, actions.shape)
        high = np.broadcast_to(space.high, actions.shape)
        return rng.uniform(low, high).astype(actions.dtype)

    def _craft(self, sources: Transitions, rng: np.random.Generator) -> Transitions:
        n, eps, oe = len(sources), self.epsilon, self.obs_epsilon
        r = sources.rewards + rng.uniform(-eps, eps, n)
        space = self.observation_space
        actions = sources.actions.copy()
        if self.relabel > 0:
            pick = rng.random(n) < self.relabel
            actions[pick] = self._random_actions(sources.actions[pick], rng)

        def noisy(x: np.ndarray) -> np.ndarray:
            if oe == 0.0:
                return x.copy()
            y = x.astype(np.float64) + rng.uniform(-oe, oe, x.shape)
            y = np.clip(y, np.minimum(space.low, x), np.maximum(space.high, x))
            # casting back may round past the ball by an ulp: pull such features back to x
            out = y.astype(x.dtype)
            return np.where(np.abs(out.astype(np.float64) - x) > oe, x, out)

        return Transitions(
            noisy(sources.obs), actions, r, noisy(sources.next_obs), sources.dones.copy()
        )

    def params(self) -> dict[str, Any]:
        return {**super().params(), "relabel": self.relabel}


class TargetActionData(DataAttack):
    """Targeted copies: in a copied genuine state the target action earns ``r + ε`` and any
    other action ``r - ε``; with Box actions, ``r + ε·(1 - 2d)`` where ``d`` is the largest
    per-dimension distance from the target action in units of the action range (capped at 1).

    With ``relabel > 0``, that fraction of the copies whose action is not the target is
    relabelled: the copy takes the target action (and earns ``r + ε``) while keeping the
    genuine ``s'`` (BAFFLE's misleading experiences, Gong et al. 2022). Action labels are not
    bounded by ε; ``relabel`` is recorded.

    Args:
        target_action: an action of the action space, or a policy (``act``) giving the target
            action per observation, in environment units.
        relabel: fraction of non-target copies relabelled with the target action, in [0, 1].
    """

    id = "target-action-data-v1"
    reference = (
        "targeted reward poisoning of copied transitions (Zhang et al. 2020 ICML; Ma et al. "
        "2019 NeurIPS 'Policy Poisoning in Batch RL'); relabelling after Gong et al. 2022 "
        "'BAFFLE'"
    )

    def __init__(
        self,
        threat_model: ThreatModel,
        *,
        target_action: int | Sequence[float] | np.ndarray | Policy,
        relabel: float = 0.0,
        focus: bool = False,
        mode: Mode = "direct",
        obs_epsilon: float = 0.0,
    ) -> None:
        super().__init__(threat_model, mode=mode, obs_epsilon=obs_epsilon)
        self.relabel = _fraction("relabel", relabel)
        self.focus = bool(focus)
        self.target_action = target_action

    def _may_relabel(self) -> bool:
        return self.relabel > 0

    def eligible(self, sources: Transitions) -> np.ndarray:
        """With ``focus``, only transitions whose action is not the target: the budget goes
        where the learner has to be changed."""
        if not self.focus:
            return super().eligible(sources)
        target = self._to_storage(self.targets(sources.obs)).astype(sources.actions.dtype)
        return self._distance(sources.actions, target.reshape(sources.actions.shape)) > 0

    def _setup(self) -> None:
        t = self.target_action
        if isinstance(t, Policy):
            _check_spaces(t.observation_space, t.action_space, "the target policy")
            return
        space = self.action_space
        a = np.asarray(t)
        if isinstance(space, gym.spaces.Discrete):
            if (
                a.shape != ()
                or not np.issubdtype(a.dtype, np.integer)
                or not space.contains(int(a))
            ):
                raise ConfigError(
                    f"target_action must be an action of {describe_space(space)} "
                    f"(an integer in [{space.start}, {space.start + space.n - 1}]), got {t!r}"
                )
        elif a.shape != space.shape or not np.all(np.isfinite(a)):
            raise ConfigError(
                f"target_action must be an action of shape {space.shape} for "
                f"{describe_space(space)} in environment units, got {t!r}"
            )

    def targets(self, obs: np.ndarray) -> np.ndarray:
        """The target action for each observation, in environment units."""
        t = self.target_action
        out: np.ndarray = (
            np.asarray(t.act(obs))
            if isinstance(t, Policy)
            else np.repeat(np.asarray(t)[None], len(obs), axis=0)
        )
        return out

    def _distance(self, actions: np.ndarray, target: np.ndarray) -> np.ndarray:
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            return np.asarray(actions.reshape(-1) != target.reshape(-1), dtype=np.float64)
        assert isinstance(space, gym.spaces.Box)
        d = np.abs(actions - target).reshape(len(actions), -1) / box_span(space)
        return np.asarray(np.minimum(1.0, d.max(axis=1)), dtype=np.float64)

    def _craft(self, sources: Transitions, rng: np.random.Generator) -> Transitions:
        target = self._to_storage(self.targets(sources.obs)).astype(sources.actions.dtype)
        target = target.reshape(sources.actions.shape)
        dist = self._distance(sources.actions, target)
        relabel = (rng.random(len(sources)) < self.relabel) & (dist > 0)
        actions = sources.actions.copy()
        actions[relabel] = target[relabel]
        dist[relabel] = 0.0
        r = sources.rewards + self.epsilon * (1.0 - 2.0 * dist)
        return Transitions(
            sources.obs.copy(), actions, r, sources.next_obs.copy(), sources.dones.copy()
        )

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "target_action": _jsonable(self.target_action),
            "relabel": self.relabel,
            "focus": self.focus,
        }


def _jsonable(t: object) -> Any:
    """A target action as recorded in results: the action, or the target policy's source."""
    if t is None:
        return None
    if isinstance(t, Policy):
        return getattr(getattr(t, "info", None), "source", "<policy>")
    return np.asarray(t).tolist()


DATA_ATTACKS: dict[str, type[Attack]] = {
    cls.id: cls for cls in (FlipData, NoiseData, TargetActionData)
}


def make_data_attack(
    attack_id: str,
    epsilon: float,
    *,
    fraction: float,
    mode: Mode = "direct",
    **params: Any,
) -> DataAttack:
    """Build a data attack with an explicit threat model.

    Args:
        attack_id: ``flip-data-v1``, ``noise-data-v1`` or ``target-action-data-v1``.
        epsilon: the largest change of a crafted transition's reward, raw reward units.
        fraction: crafted transitions per genuine one, in [0, 1] (the ``step_budget``).
        mode: ``direct`` or ``replace``.
        params: the method's own parameters (``target_action``, ``relabel``, ``obs_epsilon``).

    Raises:
        UnknownAttack: with the known ids.
        InvalidBudget: ε or the fraction out of their domains.

    Example:
        >>> make_data_attack("flip-data-v1", 2.0, fraction=0.1).threat_model.step_budget
        0.1
        >>> make_data_attack("flip-data-v2", 2.0, fraction=0.1)
        Traceback (most recent call last):
        ...
        rlsec.errors.UnknownAttack: unknown data attack id 'flip-data-v2'; known: flip-data-v1, ...
    """
    cls = DATA_ATTACKS.get(attack_id)
    if cls is None:
        raise UnknownAttack(
            f"unknown data attack id {attack_id!r}; known: {', '.join(DATA_ATTACKS)}"
        )
    tm = ThreatModel(
        Surface.DATA,
        epsilon,
        "linf",
        "raw",
        knowledge=cls.knowledge,
        frequency="budgeted-steps",
        step_budget=fraction,
        phase="training",
    )
    attack = cls(tm, mode=mode, **params)  # type: ignore[call-arg]
    assert isinstance(attack, DataAttack)
    return attack
