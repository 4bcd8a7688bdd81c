"""What data attacks read and write: transitions, offline datasets and their file format, and
the record of the transitions an attack crafted.

* :class:`Transitions`: a batch ``(s, a, r, s', done)`` as parallel arrays.
* :class:`TransitionDataset`: an offline dataset, the transitions with their spaces and
  provenance; saved as one ``.npz`` archive without pickle (:meth:`TransitionDataset.save`,
  :meth:`TransitionDataset.load`).
* :class:`PoisonRecord`: every crafted transition, where it was written and which genuine one
  it copies; it checks the crafted-to-genuine budget.

The data attacks (:mod:`rlsec.attacks.data`) craft :class:`Transitions`; the training-time
drivers that apply them, replay-buffer poisoning (:mod:`rlsec.attacks.replay`) and
offline-dataset poisoning (:mod:`rlsec.attacks.offline`), fill a :class:`PoisonRecord`.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from rlsec.errors import AttackNotApplicable, BudgetViolation, ConfigError, UnsafeArtifact
from rlsec.policies.spaces import describe_space, space_from_json, space_to_json

__all__ = ["PoisonRecord", "TransitionDataset", "Transitions"]

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
