"""Attacks on the data surface: the learner is trained on transitions the attacker crafted.

Two settings share the same attacks:

* **Replay-buffer poisoning** of an off-policy learner (DQN, SAC): :meth:`DataAttack.callback`
  gives a Stable-Baselines3 callback (:class:`ReplayPoisoner`) that writes crafted transitions
  into ``model.replay_buffer`` while the learner trains; pass it to
  :func:`rlsec.defenses.train_policy` in ``callbacks``.
* **Offline-dataset poisoning**: :func:`poison_dataset` poisons a :class:`TransitionDataset`
  (collected with :func:`collect_dataset`, saved as ``.npz`` without pickle) before an offline
  learner (:func:`fitted_q`) sees it; :func:`data_damage` measures the effect.

**Budget.** Every crafted transition is a copy of a genuine one (its *source*) whose reward
moved by at most ε (the threat model's ``epsilon``, raw reward units, ``linf``) and whose
observations moved by at most ``obs_epsilon`` per feature (raw observation units; only
:class:`NoiseData` moves them, 0 by default), never out of the observation space. The threat
model's ``step_budget`` is the fraction of crafted to genuine transitions: at every moment
``crafted == floor(step_budget · genuine)`` (up to float rounding; with ``n_envs > 1`` the
``direct`` mode writes whole buffer rows of ``n_envs`` transitions, so ``crafted`` is the
largest multiple of ``n_envs`` within it). Both bounds are checked at run time, raising
:class:`~rlsec.errors.BudgetViolation`, and every crafted transition is recorded
(:class:`PoisonRecord`: where it was written, which genuine transition it copies, when).

**Modes.**

* ``direct``: crafted transitions are *added* (the buffer's own ``add``; extra rows of a
  dataset, interleaved at random positions). Genuine transitions are not modified; a full
  replay buffer evicts its oldest rows sooner, as its first-in-first-out order dictates. The
  integrity monitor's ``buffer-accounting`` check
  (:class:`~rlsec.defenses.monitors.IntegrityMonitor`) sees the write position move by more
  than one row in one environment step, and stops training. It looks at each environment step
  only, so a write made when a rollout ends is found at the next step, after the update that
  used it; the top-up after the last step of training is never looked at.
* ``replace``: crafted transitions *overwrite* genuine ones in place (the source itself is
  rewritten). The buffer's size and write position do not change, so buffer accounting cannot
  see it; the monitor's reward and transition checks cannot either, since they read what the
  environment returned, not what the buffer holds. This mode is the stealthier one: only a
  check of the buffer's contents against the environment's stream (a digest per row written
  when the learner stores it) would find it.

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

Example:
    >>> import gymnasium as gym
    >>> attack = make_data_attack("target-action-data-v1", 1.0, fraction=0.5, target_action=0)
    >>> ds = TransitionDataset(
    ...     obs=np.zeros((4, 2), np.float32), actions=np.array([0, 1, 0, 1]),
    ...     rewards=np.ones(4), next_obs=np.zeros((4, 2), np.float32),
    ...     dones=np.zeros(4, bool), observation_space=gym.spaces.Box(-1, 1, (2,)),
    ...     action_space=gym.spaces.Discrete(2))
    >>> poisoned, record = poison_dataset(ds, attack, np.random.default_rng(0))
    >>> len(poisoned), record.crafted, record.genuine
    (6, 2, 4)
    >>> sorted(poisoned.rewards[record.rows].tolist()) in ([0.0, 0.0], [0.0, 2.0], [2.0, 2.0])
    True
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import math
import os
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from rlsec.core import Attack, Policy, Surface, ThreatModel
from rlsec.errors import (
    AttackNotApplicable,
    BudgetViolation,
    ConfigError,
    UnknownAttack,
    UnsafeArtifact,
)
from rlsec.policies.spaces import box_span, describe_space, space_from_json, space_to_json

if TYPE_CHECKING:
    from rlsec.policies import TorchPolicy

__all__ = [
    "DATA_ATTACKS",
    "DataAttack",
    "FlipData",
    "NoiseData",
    "PoisonRecord",
    "ReplayPoisoner",
    "TargetActionData",
    "TransitionDataset",
    "Transitions",
    "collect_dataset",
    "data_damage",
    "fitted_q",
    "make_data_attack",
    "poison_dataset",
]

_POISON = "AML.T0020"  # Poison Training Data (ATLAS now calls it "Training Data Poisoning")
_ERODE = "AML.T0031"  # Erode ML Model Integrity
_REL = 1e-9  # relative slack of the run-time budget checks (floating point only)
_FORMAT = "rlsec.transitions"
_VERSION = 1
_ARRAYS = ("obs", "actions", "rewards", "next_obs", "dones")
Mode = Literal["direct", "replace"]


def _allowed(fraction: float, genuine: int) -> int:
    """The most crafted transitions ``fraction`` allows next to ``genuine`` ones."""
    return math.floor(fraction * genuine + 1e-9)


# -- transitions and datasets ------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Transitions:
    """A batch of transitions ``(s, a, r, s', done)`` as parallel arrays, one row each.

    Attributes:
        obs: ``(N, *obs_shape)`` observations ``s``.
        actions: ``(N,)`` integers (discrete actions) or ``(N, *action_shape)`` floats.
        rewards: ``(N,)`` float64 rewards.
        next_obs: ``(N, *obs_shape)`` next observations ``s'``.
        dones: ``(N,)`` bool: the episode *terminated* with this transition (no bootstrap from
            ``s'``); a time-limit truncation is not a done.
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    dones: np.ndarray

    def __post_init__(self) -> None:
        for name in _ARRAYS:
            value = getattr(self, name)
            if not isinstance(value, np.ndarray):
                raise ConfigError(f"{name} must be a numpy array, got {type(value).__name__}")
        n = len(self.obs)
        for name in _ARRAYS[1:]:
            if len(getattr(self, name)) != n:
                raise ConfigError(
                    f"every array needs one row per transition: obs has {n}, "
                    f"{name} has {len(getattr(self, name))}"
                )
        if self.obs.shape != self.next_obs.shape:
            raise ConfigError(
                f"obs and next_obs must have the same shape, got {self.obs.shape} and "
                f"{self.next_obs.shape}"
            )
        if self.rewards.ndim != 1 or not np.issubdtype(self.rewards.dtype, np.floating):
            raise ConfigError(
                f"rewards must be a 1-D float array, got shape {self.rewards.shape} "
                f"dtype {self.rewards.dtype}"
            )
        if not np.all(np.isfinite(self.rewards)):
            raise ConfigError("rewards must be finite")
        if self.dones.ndim != 1 or self.dones.dtype != np.bool_:
            raise ConfigError(
                f"dones must be a 1-D bool array, got shape {self.dones.shape} "
                f"dtype {self.dones.dtype}"
            )

    def __len__(self) -> int:
        return len(self.obs)

    def take(self, index: np.ndarray) -> Transitions:
        """The rows ``index``, as new arrays."""
        return Transitions(*(np.array(getattr(self, k)[index]) for k in _ARRAYS))


@dataclass(frozen=True, eq=False)
class TransitionDataset(Transitions):
    """An offline dataset: transitions with the spaces they live in and where they came from.

    The arrays are those of :class:`Transitions`; observations come from a ``Box`` space and
    actions from a ``Discrete`` (stored as int64, shape ``(N,)``) or ``Box`` space (stored in
    its dtype, shape ``(N, *shape)``). ``info`` is JSON-ready provenance (``env_id``, seed,
    behaviour policy, ...).

    On disk (:meth:`save`, :meth:`load`) a dataset is one ``.npz`` archive with exactly the
    members ``obs``, ``actions``, ``rewards``, ``next_obs``, ``dones`` (plain numeric arrays)
    and ``meta``, a JSON string: ``{"format": "rlsec.transitions", "version": 1,
    "observation_space": ..., "action_space": ..., "info": {...}}`` (spaces as
    :func:`rlsec.policies.spaces.space_to_json` writes them). Nothing is pickled, and
    :meth:`load` refuses archives that would need unpickling.
    """

    observation_space: gym.Space[Any]
    action_space: gym.Space[Any]
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_spaces(self.observation_space, self.action_space, "the dataset")
        obs_space = self.observation_space
        assert isinstance(obs_space, gym.spaces.Box)
        want = (len(self), *obs_space.shape)
        for name in ("obs", "next_obs"):
            x = getattr(self, name)
            if x.shape != want or not np.issubdtype(x.dtype, np.floating):
                raise ConfigError(
                    f"{name} must be float with shape {want} for "
                    f"{describe_space(obs_space)}, got {x.dtype} {x.shape}"
                )
            if not np.all(np.isfinite(x)):
                raise ConfigError(f"{name} must be finite")
        _check_actions(self.actions, self.action_space, len(self), "actions")
        json.dumps(dict(self.info), allow_nan=False)  # must be JSON-ready

    def transitions(self) -> Transitions:
        """The arrays alone."""
        return Transitions(*(getattr(self, k) for k in _ARRAYS))

    def with_transitions(self, t: Transitions, **info: Any) -> TransitionDataset:
        """A dataset of the same spaces holding ``t``, with ``info`` added to the provenance."""
        return TransitionDataset(
            obs=t.obs,
            actions=t.actions,
            rewards=t.rewards,
            next_obs=t.next_obs,
            dones=t.dones,
            observation_space=self.observation_space,
            action_space=self.action_space,
            info={**self.info, **info},
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the dataset to ``path`` (a ``.npz`` archive, written whole then renamed).

        Example:
            >>> import tempfile
            >>> ds = TransitionDataset(
            ...     np.zeros((2, 1), np.float32), np.array([0, 1]), np.ones(2),
            ...     np.zeros((2, 1), np.float32), np.array([False, True]),
            ...     observation_space=gym.spaces.Box(-1, 1, (1,)),
            ...     action_space=gym.spaces.Discrete(2))
            >>> with tempfile.TemporaryDirectory() as d:
            ...     back = TransitionDataset.load(ds.save(Path(d) / "data.npz"))
            >>> back.dones.tolist(), back.action_space
            ([False, True], Discrete(2))
        """
        target = Path(path)
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "observation_space": space_to_json(self.observation_space),
            "action_space": space_to_json(self.action_space),
            "info": dict(self.info),
        }
        from rlsec._files import open_atomic

        with open_atomic(target) as f:
            np.savez(
                f,
                obs=self.obs,
                actions=self.actions,
                rewards=self.rewards,
                next_obs=self.next_obs,
                dones=self.dones,
                meta=np.array(json.dumps(meta, sort_keys=True, allow_nan=False)),
            )
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, max_bytes: int = 2**31) -> TransitionDataset:
        """Read a dataset written by :meth:`save`, without unpickling anything.

        The file is read once; its members are checked (names, uncompressed sizes up to
        ``max_bytes`` in all) and then loaded from the same bytes with
        ``np.load(..., allow_pickle=False)``.

        Raises:
            UnsafeArtifact: the file is a pickle, holds object arrays (which need unpickling),
                or is larger than ``max_bytes``; nothing in it was run.
            ConfigError: the file is not a dataset of this format (members, shapes, meta).
        """
        p = Path(path)
        size = p.stat().st_size
        if size > max_bytes:
            raise UnsafeArtifact(f"{p} is {size} bytes; the limit is max_bytes={max_bytes}")
        raw = p.read_bytes()
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as z:
                members = {i.filename: i.file_size for i in z.infolist()}
        except zipfile.BadZipFile:
            if raw[:1] == b"\x80":  # pickle protocol >= 2
                raise UnsafeArtifact(f"{p} is a pickle, not an .npz dataset; not loaded") from None
            raise ConfigError(f"{p} is not an .npz archive") from None
        want = {f"{k}.npy" for k in (*_ARRAYS, "meta")}
        if set(members) != want:
            raise ConfigError(f"{p}: expected the members {sorted(want)}, got {sorted(members)}")
        total = sum(members.values())
        if total > max_bytes:
            raise UnsafeArtifact(
                f"{p} unpacks to {total} bytes; the limit is max_bytes={max_bytes}"
            )
        arrays: dict[str, np.ndarray] = {}
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            for k in (*_ARRAYS, "meta"):
                try:
                    arrays[k] = np.asarray(npz[k])
                except ValueError as exc:
                    if "pickle" in str(exc):
                        raise UnsafeArtifact(
                            f"{p}: member {k!r} holds pickled objects; not loaded"
                        ) from None
                    raise ConfigError(f"{p}: member {k!r} is not a numpy array: {exc}") from None
        meta_arr = arrays.pop("meta")
        if meta_arr.shape != () or meta_arr.dtype.kind != "U":
            raise ConfigError(f"{p}: meta must be a JSON string, got {meta_arr.dtype}")
        try:
            meta = json.loads(str(meta_arr))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: meta is not JSON: {exc}") from None
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise ConfigError(f"{p}: expected format {_FORMAT!r}, got {meta!r:.100}")
        if meta.get("version") != _VERSION:
            raise ConfigError(f"{p}: expected version {_VERSION}, got {meta.get('version')!r}")
        try:
            obs_space = space_from_json(meta.get("observation_space"))
            act_space = space_from_json(meta.get("action_space"))
        except ValueError as exc:
            raise ConfigError(f"{p}: {exc}") from None
        info = meta.get("info", {})
        if not isinstance(info, dict):
            raise ConfigError(f"{p}: info must be a JSON object, got {type(info).__name__}")
        return cls(
            obs=arrays["obs"],
            actions=arrays["actions"],
            rewards=arrays["rewards"],
            next_obs=arrays["next_obs"],
            dones=arrays["dones"],
            observation_space=obs_space,
            action_space=act_space,
            info=info,
        )


def _check_spaces(obs: gym.Space[Any], act: gym.Space[Any], where: str) -> None:
    if not isinstance(obs, gym.spaces.Box):
        raise AttackNotApplicable(
            f"data attacks need continuous (Box) observations; {where} observes "
            f"{describe_space(obs)}"
        )
    if not isinstance(act, (gym.spaces.Discrete, gym.spaces.Box)):
        raise AttackNotApplicable(
            f"data attacks need Discrete or Box actions; {where} acts in {describe_space(act)}"
        )


def _check_actions(actions: np.ndarray, space: gym.Space[Any], n: int, what: str) -> None:
    if isinstance(space, gym.spaces.Discrete):
        lo, hi = int(space.start), int(space.start) + int(space.n) - 1
        if actions.shape != (n,) or not np.issubdtype(actions.dtype, np.integer):
            raise ConfigError(
                f"{what} must be integers of shape ({n},) for {describe_space(space)}, got "
                f"{actions.dtype} {actions.shape}"
            )
        if n and (actions.min() < lo or actions.max() > hi):
            raise ConfigError(
                f"{what} must lie in [{lo}, {hi}], got [{actions.min()}, {actions.max()}]"
            )
        return
    assert isinstance(space, gym.spaces.Box)
    want = (n, *space.shape)
    if actions.shape != want or not np.issubdtype(actions.dtype, np.floating):
        raise ConfigError(
            f"{what} must be floats of shape {want} for {describe_space(space)}, got "
            f"{actions.dtype} {actions.shape}"
        )
    if (
        not np.all(np.isfinite(actions))
        or np.any(actions < space.low)
        or np.any(actions > space.high)
    ):
        raise ConfigError(f"{what} must be finite and inside {describe_space(space)}")


# -- the attacks -------------------------------------------------------------------------------
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
        callback and :func:`poison_dataset` bind themselves. The other arguments are unused."""
        self.check_applicable(policy)
        self._bind(policy.observation_space, policy.action_space)
        self._rng = rng

    def _bind(
        self,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        to_storage: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        """Bind to the spaces transitions are stored in; ``to_storage`` maps environment
        actions to stored ones (SB3 stores Box actions rescaled to ``[-1, 1]``)."""
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
        :class:`ReplayPoisoner`); ``seed`` makes its choices reproducible."""
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


# -- what was done -----------------------------------------------------------------------------
@dataclass
class PoisonRecord:
    """Every crafted transition: where it went, what it copied, when.

    Crafted transition ``i`` was written at ``(rows[i], envs[i])`` (a replay buffer's row and
    environment column; in a dataset, ``rows[i]`` is its index in the poisoned dataset and
    ``envs[i]`` is 0) as a copy of the genuine transition at ``(source_rows[i],
    source_envs[i])`` (in a dataset, an index of the clean one). In ``replace`` mode position
    and source are the same. ``steps[i]`` is the learner's step count when it was written
    (empty for datasets). A full buffer later overwrites rows in its own order; positions are
    where the transitions were written.
    """

    attack: str
    mode: Mode
    fraction: float
    genuine: int = 0
    crafted: int = 0
    rows: list[int] = field(default_factory=list)
    envs: list[int] = field(default_factory=list)
    source_rows: list[int] = field(default_factory=list)
    source_envs: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    max_reward_shift: float = 0.0
    max_obs_shift: float = 0.0
    relabelled: int = 0

    def check(self) -> None:
        """Raise :class:`~rlsec.errors.BudgetViolation` unless ``crafted`` is within the
        fraction of ``genuine`` and every crafted transition is recorded."""
        if self.crafted > _allowed(self.fraction, self.genuine):
            raise BudgetViolation(
                f"{self.attack} crafted {self.crafted} transitions next to {self.genuine} "
                f"genuine ones; the budget is a fraction {self.fraction} "
                f"(at most {_allowed(self.fraction, self.genuine)})"
            )
        if not len(self.rows) == len(self.source_rows) == self.crafted:
            raise BudgetViolation(
                f"{self.attack} crafted {self.crafted} transitions but recorded {len(self.rows)}"
            )

    def _add(
        self,
        src: Transitions,
        out: Transitions,
        at: list[tuple[int, int]],
        sources: list[tuple[int, int]],
        step: int | None,
    ) -> None:
        self.crafted += len(out)
        for (r, e), (sr, se) in zip(at, sources, strict=True):
            self.rows.append(r)
            self.envs.append(e)
            self.source_rows.append(sr)
            self.source_envs.append(se)
            if step is not None:
                self.steps.append(step)
        if len(out):
            self.max_reward_shift = max(
                self.max_reward_shift, float(np.abs(out.rewards - src.rewards).max())
            )
            moved = max(
                float(np.abs(out.obs.astype(np.float64) - src.obs).max(initial=0.0)),
                float(np.abs(out.next_obs.astype(np.float64) - src.next_obs).max(initial=0.0)),
            )
            self.max_obs_shift = max(self.max_obs_shift, moved)
            changed = (out.actions != src.actions).reshape(len(out), -1).any(axis=1)
            self.relabelled += int(changed.sum())

    def summary(self) -> dict[str, Any]:
        """Counts and bounds used, without the per-transition lists (JSON-ready)."""
        return {
            "attack": self.attack,
            "mode": self.mode,
            "fraction": self.fraction,
            "genuine": self.genuine,
            "crafted": self.crafted,
            "fraction_used": self.crafted / self.genuine if self.genuine else 0.0,
            "max_reward_shift": self.max_reward_shift,
            "max_obs_shift": self.max_obs_shift,
            "relabelled": self.relabelled,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready."""
        return {
            **self.summary(),
            "rows": self.rows,
            "envs": self.envs,
            "source_rows": self.source_rows,
            "source_envs": self.source_envs,
            "steps": self.steps,
        }


# -- replay-buffer poisoning -------------------------------------------------------------------
class ReplayPoisoner(BaseCallback):
    """An SB3 callback that writes ``attack``'s crafted transitions into an off-policy
    learner's replay buffer (DQN, SAC, TD3, DDPG with a plain ``ReplayBuffer``).

    After every environment step and before every update, it counts the genuine transitions
    the learner stored since it last looked (from the buffer's write position) and crafts
    copies of random genuine entries until ``crafted == floor(fraction · genuine)``:
    ``direct`` mode adds them with the buffer's ``add``, ``replace`` mode overwrites the
    copied entry in place. :attr:`record` holds every one. Reusing the callback over several
    ``learn`` calls continues the same campaign.

    Raises (from ``learn``):
        AttackNotApplicable: the learner has no plain replay buffer (PPO, dict observations,
            ``optimize_memory_usage``).
        BudgetViolation: the attack left its budget (a bug; never silent).
    """

    def __init__(self, attack: DataAttack, *, seed: int) -> None:
        super().__init__()
        self.attack = attack
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.record = PoisonRecord(attack.id, attack.mode, attack.fraction)
        self._crafted: np.ndarray | None = None  # (buffer_size, n_envs): crafted entries
        self._last_pos = 0
        self._buf: Any = None

    def _buffer(self) -> Any:
        from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer

        model = self.model
        buf: Any = getattr(model, "replay_buffer", None)
        name = type(model).__name__
        if buf is None:
            raise AttackNotApplicable(
                f"{self.attack.id} poisons a replay buffer; {name} keeps none (on-policy "
                "learners such as PPO learn from fresh rollouts: poison rewards instead)"
            )
        if not isinstance(buf, ReplayBuffer) or isinstance(buf, DictReplayBuffer):
            raise AttackNotApplicable(
                f"{self.attack.id} writes into a plain ReplayBuffer; {name} uses "
                f"{type(buf).__name__}"
            )
        if buf.optimize_memory_usage:
            raise AttackNotApplicable(
                f"{self.attack.id} needs next observations stored apart "
                "(optimize_memory_usage=False)"
            )
        if buf.buffer_size < 2:
            raise AttackNotApplicable(f"the replay buffer holds {buf.buffer_size} row; need 2+")
        return buf

    def _on_training_start(self) -> None:
        buf = self._buffer()
        obs_space = self.model.observation_space
        act_space = self.model.action_space
        to_storage: Callable[[np.ndarray], np.ndarray] | None = None
        storage_space = act_space
        if isinstance(act_space, gym.spaces.Box):
            # SB3's off-policy learners store Box actions rescaled to [-1, 1]
            storage_space = gym.spaces.Box(-1.0, 1.0, act_space.shape, np.float32)
            policy = self.model.policy

            def to_storage(a: np.ndarray) -> np.ndarray:
                return np.clip(np.asarray(policy.scale_action(a), np.float32), -1.0, 1.0)

        self.attack._bind(obs_space, storage_space, to_storage)
        if self._crafted is None or self._crafted.shape != (buf.buffer_size, buf.n_envs):
            self._crafted = np.zeros((buf.buffer_size, buf.n_envs), dtype=bool)
        self._last_pos = int(buf.pos)
        self._buf = buf

    def _on_step(self) -> bool:
        self._sync()
        return True

    def _on_rollout_end(self) -> None:
        self._sync()

    def _sync(self) -> None:
        buf = self._buf
        mask = self._crafted
        assert mask is not None
        size, n_envs = int(buf.buffer_size), int(buf.n_envs)
        pos = int(buf.pos)
        rows = (pos - self._last_pos) % size
        if rows:
            mask[(self._last_pos + np.arange(rows)) % size] = False  # the learner wrote them
            self.record.genuine += rows * n_envs
        self._last_pos = pos
        per_write = n_envs if self.attack.mode == "direct" else 1
        while _allowed(self.attack.fraction, self.record.genuine) - self.record.crafted >= (
            per_write
        ):
            if not self._write(buf, per_write):
                break
        self.record.check()

    def _genuine_entries(self, buf: Any, k: int) -> list[tuple[int, int]] | None:
        """``k`` distinct random genuine (row, env) entries that the attack finds eligible,
        or ``None`` if there are fewer."""
        mask = self._crafted
        assert mask is not None
        filled = int(buf.buffer_size) if buf.full else int(buf.pos)
        n_envs = int(buf.n_envs)
        picked: list[tuple[int, int]] = []
        for _ in range(64 * k):  # rejection sampling; a full scan below if it is unlucky
            r, e = int(self.rng.integers(filled)), int(self.rng.integers(n_envs))
            if mask[r, e] or (r, e) in picked:
                continue
            if self.attack.eligible(self._read(buf, [(r, e)])[0])[0]:
                picked.append((r, e))
                if len(picked) == k:
                    return picked
        free = [(int(r), int(e)) for r, e in np.argwhere(~mask[:filled])]
        if free:
            ok = self.attack.eligible(self._read(buf, free)[0])
            free = [entry for entry, good in zip(free, ok, strict=True) if good]
        if len(free) < k:
            return None
        chosen = self.rng.choice(len(free), size=k, replace=False)
        return [free[int(i)] for i in chosen]

    def _read(self, buf: Any, entries: list[tuple[int, int]]) -> tuple[Transitions, np.ndarray]:
        r = np.array([e[0] for e in entries])
        c = np.array([e[1] for e in entries])
        actions = np.asarray(buf.actions[r, c])
        if isinstance(self.attack.action_space, gym.spaces.Discrete):
            actions = actions.reshape(len(entries)).astype(np.int64)
        else:
            actions = actions.reshape(len(entries), *(self.attack.action_space.shape or ()))
        t = Transitions(
            np.array(buf.observations[r, c]),
            actions,
            np.asarray(buf.rewards[r, c], dtype=np.float64),
            np.array(buf.next_observations[r, c]),
            np.asarray(buf.dones[r, c]).astype(bool),
        )
        return t, np.asarray(buf.timeouts[r, c]).astype(bool)

    def _write(self, buf: Any, k: int) -> bool:
        entries = self._genuine_entries(buf, k)
        if entries is None:
            return False
        mask = self._crafted
        assert mask is not None
        src, timeouts = self._read(buf, entries)
        out = self.attack.craft(src, self.rng)
        actions = out.actions.reshape(k, -1)
        if self.attack.mode == "direct":
            row = int(buf.pos)
            buf.add(
                out.obs,
                out.next_obs,
                actions,
                out.rewards.astype(np.float32),
                out.dones.astype(np.float32),
                [{"TimeLimit.truncated": bool(t)} for t in timeouts],
            )
            at = [(row, e) for e in range(k)]
            self._last_pos = int(buf.pos)
        else:
            at = entries
            for i, (r, e) in enumerate(at):
                buf.observations[r, e] = out.obs[i]
                buf.next_observations[r, e] = out.next_obs[i]
                buf.actions[r, e] = actions[i]
                buf.rewards[r, e] = out.rewards[i]
                buf.dones[r, e] = out.dones[i]
        for r, e in at:
            mask[r, e] = True
        self.record._add(src, out, at, entries, int(self.num_timesteps))
        return True


# -- offline datasets --------------------------------------------------------------------------
def collect_dataset(
    policy: Policy | None,
    env_id: str,
    steps: int,
    *,
    seed: int,
    explore: float = 0.0,
) -> TransitionDataset:
    """Play ``steps`` environment steps with ``policy`` and keep every transition.

    Args:
        policy: the behaviour policy; ``None`` plays uniformly random actions.
        steps: transitions to collect (episodes restart as they end).
        seed: seeds the environment's first reset, the action space and the exploration.
        explore: probability, per step, of a uniformly random action instead of the policy's
            (offline learners need to see actions the policy would not take).

    Example:
        >>> ds = collect_dataset(None, "CartPole-v1", 50, seed=0)
        >>> len(ds), ds.obs.shape, ds.info["env_id"]
        (50, (50, 4), 'CartPole-v1')
    """
    from rlsec.envs import check_policy_env, env_spec, make

    env_spec(env_id)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
    if not 0.0 <= float(explore) <= 1.0:
        raise ConfigError(f"explore must be a fraction in [0, 1], got {explore!r}")
    if policy is not None:
        check_policy_env(policy, env_id)
    rng = np.random.default_rng(seed)
    env = make(env_id)
    try:
        _check_spaces(env.observation_space, env.action_space, env_id)
        env.action_space.seed(int(rng.integers(2**31)))
        cols: dict[str, list[Any]] = {k: [] for k in _ARRAYS}
        obs, _ = env.reset(seed=seed)
        for _ in range(int(steps)):
            if policy is None or rng.random() < explore:
                action = env.action_space.sample()
            else:
                action = np.asarray(policy.act(np.asarray(obs)[None]))[0]
            nxt, reward, terminated, truncated, _ = env.step(action)
            for k, v in zip(
                _ARRAYS, (obs, action, float(reward), nxt, bool(terminated)), strict=True
            ):
                cols[k].append(v)
            obs = env.reset()[0] if terminated or truncated else nxt
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    assert isinstance(obs_space, gym.spaces.Box)
    actions = np.asarray(cols["actions"])
    if isinstance(act_space, gym.spaces.Discrete):
        actions = actions.astype(np.int64).reshape(-1)
    else:
        actions = actions.astype(act_space.dtype)
    source = getattr(getattr(policy, "info", None), "source", None) if policy else "random"
    return TransitionDataset(
        np.asarray(cols["obs"], dtype=obs_space.dtype),
        actions,
        np.asarray(cols["rewards"], dtype=np.float64),
        np.asarray(cols["next_obs"], dtype=obs_space.dtype),
        np.asarray(cols["dones"], dtype=bool),
        observation_space=obs_space,
        action_space=act_space,
        info={
            "env_id": env_id,
            "seed": seed,
            "steps": int(steps),
            "explore": float(explore),
            "policy": source if isinstance(source, str) else "<policy>",
        },
    )


def poison_dataset(
    dataset: TransitionDataset, attack: DataAttack, rng: np.random.Generator
) -> tuple[TransitionDataset, PoisonRecord]:
    """Poison an offline dataset; the input is not modified.

    ``k = floor(fraction · len(dataset))`` distinct genuine transitions are drawn as sources.
    ``direct`` mode inserts their crafted copies at random positions among the genuine ones
    (which keep their order); ``replace`` mode overwrites the sources in place.

    Returns:
        The poisoned dataset (its ``info`` names the attack) and the record.

    Raises:
        AttackNotApplicable: the dataset's spaces are not supported.
        ConfigError: the attack's parameters do not fit the dataset (a target action outside
            its action space, ...).
    """
    if not isinstance(dataset, TransitionDataset):
        raise ConfigError(f"expected a TransitionDataset, got {type(dataset).__name__}")
    if not isinstance(attack, DataAttack):
        raise ConfigError(f"expected a data attack, got {type(attack).__name__}")
    attack._bind(dataset.observation_space, dataset.action_space)
    n = len(dataset)
    k = _allowed(attack.fraction, n)
    record = PoisonRecord(attack.id, attack.mode, attack.fraction, genuine=n)
    clean = dataset.transitions()
    pool = np.flatnonzero(attack.eligible(clean))
    if len(pool) < k:
        raise AttackNotApplicable(
            f"{attack.id} needs {k} eligible transitions for a fraction {attack.fraction} of "
            f"{n}; the dataset has {len(pool)}"
        )
    src_idx = np.sort(rng.choice(pool, size=k, replace=False)) if k else np.zeros(0, np.int64)
    src = clean.take(src_idx)
    out = attack.craft(src, rng)
    if attack.mode == "replace":
        arrays = {name: np.array(getattr(clean, name)) for name in _ARRAYS}
        for name in _ARRAYS:
            arrays[name][src_idx] = getattr(out, name)
        at = src_idx
    else:
        at = np.sort(rng.choice(n + k, size=k, replace=False)) if k else src_idx
        is_crafted = np.zeros(n + k, dtype=bool)
        is_crafted[at] = True
        arrays = {}
        for name in _ARRAYS:
            g = getattr(clean, name)
            full = np.empty((n + k, *g.shape[1:]), dtype=g.dtype)
            full[~is_crafted] = g
            full[at] = getattr(out, name)
            arrays[name] = full
    record._add(src, out, [(int(i), 0) for i in at], [(int(i), 0) for i in src_idx], step=None)
    record.check()
    poisoned = dataset.with_transitions(
        Transitions(*(arrays[name] for name in _ARRAYS)), poisoned_by=attack.describe()
    )
    return poisoned, record


def fitted_q(
    dataset: TransitionDataset,
    *,
    steps: int = 5000,
    gamma: float = 0.99,
    learning_rate: float = 1e-3,
    batch_size: int = 256,
    hidden: Sequence[int] = (64, 64),
    target_every: int = 100,
    conservative: float = 1.0,
    loss: Literal["huber", "mse"] = "huber",
    seed: int = 0,
) -> TorchPolicy:
    """A greedy policy learned offline from ``dataset`` alone (discrete actions).

    Neural fitted Q-iteration (Riedmiller 2005) run as offline double DQN: minibatch
    Huber-loss regression of ``Q(s, a)`` on ``r + gamma (1 - done) Q⁻(s', argmax_a' Q(s', a'))``
    with a target network ``Q⁻`` copied every ``target_every`` steps (Mnih et al. 2015;
    van Hasselt et al. 2016), plus ``conservative`` times the CQL(H) penalty
    ``logsumexp_a Q(s, a) - Q(s, a_data)`` (Kumar et al. 2020), which keeps the values of
    actions the data does not show from running away: without it (``conservative=0``) the
    values diverged on a CartPole dataset at gamma 0.95 and 0.99. It learns from rewards, so
    reward poisoning reaches it (behaviour cloning would ignore rewards); the penalty also
    pulls it toward the dataset's actions, as behaviour cloning does.

    rlsec carries these few lines rather than a dependency: the offline-RL library d3rlpy
    (2.8.1) requires gymnasium 1.0.0 and ``imitation`` (1.0.1) requires stable-baselines3
    2.2.1 and gymnasium 0.29, both older than rlsec's (installing either would downgrade them).

    Example:
        >>> ds = collect_dataset(None, "CartPole-v1", 64, seed=0)
        >>> fitted_q(ds, steps=5, batch_size=8).act(ds.obs[:3]).shape
        (3,)
    """
    from rlsec.policies import from_torch

    space = dataset.action_space
    if not isinstance(space, gym.spaces.Discrete):
        raise AttackNotApplicable(
            f"fitted_q learns discrete actions; the dataset acts in {describe_space(space)}"
        )
    for name, v in (("steps", steps), ("batch_size", batch_size), ("target_every", target_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
    if not 0.0 <= gamma < 1.0:
        raise ConfigError(f"gamma must be in [0, 1), got {gamma!r}")
    if not (math.isfinite(conservative) and conservative >= 0):
        raise ConfigError(f"conservative must be a finite number >= 0, got {conservative!r}")
    if loss not in ("huber", "mse"):
        raise ConfigError(f"loss must be 'huber' or 'mse', got {loss!r}")
    if len(dataset) == 0:
        raise ConfigError("the dataset is empty")
    dim, n_actions = int(np.prod(dataset.obs.shape[1:])), int(space.n)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        sizes = [dim, *(int(h) for h in hidden)]
        layers: list[torch.nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        q = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], n_actions))
    q_target = copy.deepcopy(q)
    obs = torch.as_tensor(dataset.obs.reshape(len(dataset), -1), dtype=torch.float32)
    nxt = torch.as_tensor(dataset.next_obs.reshape(len(dataset), -1), dtype=torch.float32)
    act = torch.as_tensor(dataset.actions - int(space.start), dtype=torch.int64)
    rew = torch.as_tensor(dataset.rewards, dtype=torch.float32)
    live = torch.as_tensor(~dataset.dones, dtype=torch.float32)
    optimizer = torch.optim.Adam(q.parameters(), lr=learning_rate)
    rng = np.random.default_rng(seed)
    for step in range(steps):
        i = torch.from_numpy(rng.integers(0, len(dataset), batch_size))
        with torch.no_grad():
            best = q(nxt[i]).argmax(dim=1, keepdim=True)
            y = rew[i] + gamma * live[i] * q_target(nxt[i]).gather(1, best).squeeze(1)
        q_all = q(obs[i])
        pred = q_all.gather(1, act[i, None]).squeeze(1)
        fit = (
            torch.nn.functional.smooth_l1_loss if loss == "huber" else torch.nn.functional.mse_loss
        )
        objective = fit(pred, y)
        if conservative > 0:
            objective = objective + conservative * (torch.logsumexp(q_all, dim=1) - pred).mean()
        optimizer.zero_grad()
        torch.autograd.backward(objective)
        optimizer.step()
        if (step + 1) % target_every == 0:
            q_target.load_state_dict(q.state_dict())
    return from_torch(q, dataset.observation_space, space, output="q_values")


# -- measuring the effect ----------------------------------------------------------------------
class _Watch:
    """A policy that counts, over an evaluation, the steps on which its actions hit the target
    and differ from a reference policy's on the same observations."""

    def __init__(
        self,
        policy: Policy,
        target: Callable[[np.ndarray], np.ndarray] | None,
        reference: Policy | None,
    ) -> None:
        self.policy, self.target, self.reference = policy, target, reference
        self.steps = self.hits = self.changed = 0
        space = policy.action_space
        self._span = box_span(space) if isinstance(space, gym.spaces.Box) else None

    @property
    def observation_space(self) -> gym.Space[Any]:
        return self.policy.observation_space

    @property
    def action_space(self) -> gym.Space[Any]:
        return self.policy.action_space

    def _same(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a2 = a.reshape(len(a), -1).astype(np.float64)
        b2 = b.reshape(len(b), -1).astype(np.float64)
        if self._span is None:
            return np.asarray((a2 == b2).all(axis=1))
        from rlsec.attacks.rollout import CHANGE_TOLERANCE

        return np.asarray((np.abs(a2 - b2) / self._span).max(axis=1) <= CHANGE_TOLERANCE)

    def act(self, observations: np.ndarray) -> np.ndarray:
        a = np.asarray(self.policy.act(observations))
        self.steps += len(a)
        if self.target is not None:
            self.hits += int(self._same(a, self.target(observations)).sum())
        if self.reference is not None:
            ref = np.asarray(self.reference.act(observations))
            self.changed += int((~self._same(a, ref)).sum())
        return a


def data_damage(
    clean: Policy,
    poisoned: Policy,
    env_id: str,
    attack: DataAttack,
    *,
    record: PoisonRecord | None = None,
    episodes: int = 50,
    seed: int = 0,
    num_envs: int | None = None,
    target_action: int | Sequence[float] | np.ndarray | Policy | None = None,
) -> dict[str, Any]:
    """Compare a policy learned from poisoned data with one learned from clean data.

    Both play ``episodes`` episodes on the same environment seeds. Returned in the row shape
    of ``results.json`` (docs/results.md) with ``surface: "data"``; ``epsilon`` is the reward
    bound ε and ``fraction`` the crafted-to-genuine budget:

    * ``mean_return``, ``ci95``, ``std_return``, ``mean_length``: the poisoned policy;
      ``clean_return`` holds the same keys for the clean one.
    * ``action_change_rate``: fraction of the poisoned policy's steps on which its action
      differs from the clean policy's on the same observation (continuous actions: by more
      than 5% of the range in some dimension).
    * ``target_action_rate`` (targeted attacks, or when ``target_action`` is given, else
      ``None``): fraction of the poisoned policy's steps on which it takes the target action
      (``target_action``, by default the attack's); ``clean_target_rate``: the same for the
      clean policy (the rate without poisoning).
    * ``budget``: the record's counts (:meth:`PoisonRecord.summary`) when given.

    Raises:
        ConfigError: bad ``episodes`` or ``num_envs``.
        SpaceMismatch: a policy does not fit the environment.

    Example:
        >>> ds = collect_dataset(None, "CartPole-v1", 64, seed=0)
        >>> attack = make_data_attack("target-action-data-v1", 1.0, fraction=0.5,
        ...                           target_action=0)
        >>> bad, rec = poison_dataset(ds, attack, np.random.default_rng(0))
        >>> row = data_damage(fitted_q(ds, steps=5), fitted_q(bad, steps=5), "CartPole-v1",
        ...                   attack, record=rec, episodes=2)
        >>> row["surface"], row["fraction"], 0.0 <= row["target_action_rate"] <= 1.0
        ('data', 0.5, True)
    """
    from rlsec.attacks.rollout import rollout
    from rlsec.envs import check_policy_env, make_vec
    from rlsec.stats import mean_ci

    t0 = time.perf_counter()
    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ConfigError(f"episodes must be an integer >= 1, got {episodes!r}")
    n = min(int(episodes), 16) if num_envs is None else num_envs
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    check_policy_env(clean, env_id)
    check_policy_env(poisoned, env_id)
    target: Callable[[np.ndarray], np.ndarray] | None = None
    if target_action is None and isinstance(attack, TargetActionData):
        target_action = attack.target_action
    if target_action is not None:
        probe = TargetActionData(attack.threat_model, target_action=target_action)
        probe._bind(clean.observation_space, clean.action_space)
        target = probe.targets

    def play(policy: Policy, reference: Policy | None) -> tuple[Any, _Watch]:
        watch = _Watch(policy, target, reference)
        venv = make_vec(env_id, n)
        try:
            stats = rollout(watch, venv, int(episodes), seed=seed)
        finally:
            venv.close()
        return stats, watch

    clean_stats, clean_watch = play(clean, None)
    bad_stats, bad_watch = play(poisoned, clean)

    def summary(returns: np.ndarray, lengths: np.ndarray) -> dict[str, Any]:
        mean, ci = mean_ci(returns)
        return {
            "mean_return": mean,
            "ci95": ci,
            "episodes": int(episodes),
            "mean_length": float(lengths.mean()),
            "std_return": float(returns.std(ddof=1)) if returns.size > 1 else 0.0,
        }

    def rate(w: _Watch) -> float | None:
        return w.hits / w.steps if target is not None and w.steps else None

    tm = attack.threat_model
    return {
        "attack": attack.id,
        "surface": Surface.DATA.value,
        "epsilon": tm.epsilon,
        "norm": tm.norm,
        "unit": tm.unit,
        **summary(bad_stats.returns, bad_stats.lengths),
        "action_change_rate": bad_watch.changed / bad_watch.steps if bad_watch.steps else 0.0,
        "mean_action_shift": None,
        "per_seed": [{"seed": seed, "mean_return": float(bad_stats.returns.mean())}],
        "threat_model": tm.to_dict(),
        "atlas": list(attack.atlas),
        "reference": attack.reference,
        "params": attack.params(),
        "seconds": time.perf_counter() - t0,
        "fraction": attack.fraction,
        "mode": attack.mode,
        "clean_return": summary(clean_stats.returns, clean_stats.lengths),
        "target_action": _jsonable(target_action),
        "target_action_rate": rate(bad_watch),
        "clean_target_rate": rate(clean_watch),
        "budget": record.summary() if record is not None else None,
    }
