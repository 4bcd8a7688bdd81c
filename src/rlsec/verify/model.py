"""Finite models for verification: a sparse MDP with state labels and an observation function.

A :class:`Model` is what the model checker sees: ``transitions`` is a sparse matrix with one
row per (state, action) pair (row ``s * n_actions + a``) and one column per successor state;
``labels`` name sets of states (``init``, ``goal``, ``unsafe``, ...); ``observations[s]`` is
what a policy observes in state ``s`` (an index, a one-hot or a feature vector), so a policy
can be queried for every state at once.

Models come from Gymnasium's toy-text tables (:meth:`Model.from_env` on ``FrozenLake-v1``,
``CliffWalking-v1``, ``Taxi-v4``), from any environment whose unwrapped class offers
``finite_mdp()`` and ``state_observations()`` (rlsec's own finite environments), from a
:class:`~rlsec.envs.finite.FiniteMDP` (:meth:`Model.from_finite`), or are built directly from
sparse arrays (large generated grids).

:meth:`Model.chain` turns a policy's action probabilities into the policy-induced Markov chain
(:class:`Chain`), a sparse ``(n_states, n_states)`` matrix.

Example:
    >>> m = Model.from_env("FrozenLake-v1", is_slippery=False)
    >>> m.n_states, m.n_actions, m.observations[:3].tolist()
    (16, 4, [0, 1, 2])
    >>> pi = np.zeros((16, 4)); pi[:, 2] = 1.0  # always "right"
    >>> c = m.chain(pi)
    >>> c.matrix.shape, float(c.matrix[0].sum())
    ((16, 16), 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import gymnasium as gym
import numpy as np
import scipy.sparse as sp

from rlsec.envs import make
from rlsec.envs.finite import FiniteMDP
from rlsec.errors import ModelError

__all__ = ["TOLERANCE", "Chain", "Model"]

_ATOL = 1e-9
#: A row of probabilities sums to 1 within this (absolute) tolerance; entries lie in [0, 1].
TOLERANCE = 1e-6


def _csr(x: Any, shape: tuple[int, int], what: str) -> sp.csr_array:
    """``x`` as a canonical CSR array of probability rows: every entry finite and in [0, 1]
    and every row summing to 1 within :data:`TOLERANCE`; else :class:`ModelError` naming
    the first bad row."""
    m = sp.csr_array(x, dtype=np.float64)
    if m.shape != shape:
        raise ModelError(f"{what} has shape {m.shape}, expected {shape}")
    m.sum_duplicates()
    m.eliminate_zeros()
    m.sort_indices()
    if m.nnz:
        bad_entry = np.flatnonzero(~((m.data >= 0.0) & (m.data <= 1.0 + TOLERANCE)))
        if bad_entry.size:
            row = int(np.searchsorted(m.indptr, bad_entry[0], side="right") - 1)
            raise ModelError(
                f"{what} row {row} holds the probability {float(m.data[bad_entry[0]])!r}; "
                f"probabilities must be finite and in [0, 1] ({bad_entry.size} such entries)"
            )
    sums = np.asarray(m.sum(axis=1)).ravel()
    bad = np.flatnonzero(~(np.abs(sums - 1.0) <= TOLERANCE))
    if bad.size:
        raise ModelError(
            f"{what} row {int(bad[0])} sums to {float(sums[bad[0]])!r}, expected 1 within "
            f"{TOLERANCE:g} ({bad.size} such rows)"
        )
    return m


def _distribution(x: Any, n: int, what: str = "initial") -> np.ndarray:
    """``x`` as a probability distribution over ``n`` states (finite, >= 0, sum 1)."""
    mu = np.asarray(x, dtype=np.float64)
    if (
        mu.shape != (n,)
        or not np.all(np.isfinite(mu))
        or np.any(mu < 0)
        or not abs(float(mu.sum()) - 1.0) <= TOLERANCE
    ):
        total = float(mu.sum()) if mu.size else 0.0
        raise ModelError(
            f"{what} must be a distribution over {n} states (finite, >= 0, summing to 1 "
            f"within {TOLERANCE:g}), got shape {mu.shape} summing to {total!r}"
        )
    return mu


def _labels(labels: Mapping[str, Any], n: int) -> Mapping[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, mask in dict(labels).items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ModelError(f"label names must be identifiers, got {name!r}")
        m = np.asarray(mask)
        if m.shape != (n,) or m.dtype != np.bool_:
            raise ModelError(
                f"label {name!r} must be a boolean mask of shape ({n},), got dtype {m.dtype} "
                f"shape {m.shape}"
            )
        m = m.copy()
        m.flags.writeable = False
        out[name] = m
    return MappingProxyType(out)


@dataclass(frozen=True, eq=False)
class Model:
    """A finite MDP in sparse form, with labels and what a policy observes in each state.

    Attributes:
        transitions: ``(n_states * n_actions, n_states)`` sparse probabilities, row
            ``s * n_actions + a``; every action is enabled in every state.
        n_actions: number of actions.
        initial: initial distribution over states.
        labels: name -> boolean mask over states. ``init`` is the initial distribution's
            support (set automatically when absent).
        rewards: optional expected reward of each (state, action), ``(n_states, n_actions)``.
        observations: optional ``(n_states, ...)``, the observation the environment emits in
            each state (what the policy is queried on).
        observation_space: the space ``observations`` belong to.
        state_names, action_names: optional names for rendering.
        cells: optional ``(n_states, 2)`` grid cell (row, column) of each state, ``-1`` for
            states off the grid; ``grid`` is the grid's shape.
        env_id: the environment the model describes, if any.
    """

    transitions: sp.csr_array
    n_actions: int
    initial: np.ndarray
    labels: Mapping[str, np.ndarray] = field(default_factory=dict)
    rewards: np.ndarray | None = None
    observations: np.ndarray | None = None
    observation_space: gym.Space[Any] | None = None
    state_names: tuple[str, ...] | None = None
    action_names: tuple[str, ...] | None = None
    cells: np.ndarray | None = None
    grid: tuple[int, int] | None = None
    env_id: str | None = None

    def __post_init__(self) -> None:
        n_a = int(self.n_actions)
        if n_a < 1:
            raise ModelError(f"n_actions must be >= 1, got {self.n_actions}")
        t = sp.csr_array(self.transitions)
        n_s = int(t.shape[1])
        if t.shape[0] != n_s * n_a or n_s == 0:
            raise ModelError(
                f"transitions has shape {t.shape}; expected (n_states * n_actions, n_states) "
                f"with n_actions = {n_a}"
            )
        object.__setattr__(self, "transitions", _csr(t, (n_s * n_a, n_s), "transitions"))
        object.__setattr__(self, "n_actions", n_a)
        mu = _distribution(self.initial, n_s)
        object.__setattr__(self, "initial", mu)
        labels = dict(self.labels)
        labels.setdefault("init", mu > 0)
        object.__setattr__(self, "labels", _labels(labels, n_s))
        if self.rewards is not None:
            r = np.asarray(self.rewards, dtype=np.float64)
            if r.shape != (n_s, n_a) or not np.all(np.isfinite(r)):
                raise ModelError(f"rewards must be finite with shape ({n_s}, {n_a}), got {r.shape}")
            object.__setattr__(self, "rewards", r)
        if self.observations is not None:
            obs = np.asarray(self.observations)
            if obs.shape[:1] != (n_s,):
                raise ModelError(
                    f"observations must have one row per state ({n_s}), got shape {obs.shape}"
                )
            object.__setattr__(self, "observations", obs)
        if self.cells is not None:
            cells = np.asarray(self.cells, dtype=np.int64)
            if cells.shape != (n_s, 2) or self.grid is None:
                raise ModelError(f"cells must have shape ({n_s}, 2) and come with grid")
            object.__setattr__(self, "cells", cells)

    # -- shape ----------------------------------------------------------------------------
    @property
    def n_states(self) -> int:
        return int(self.transitions.shape[1])

    def __repr__(self) -> str:
        return (
            f"Model(n_states={self.n_states}, n_actions={self.n_actions}, "
            f"transitions={self.transitions.nnz}, labels={sorted(self.labels)}, "
            f"env_id={self.env_id!r})"
        )

    def label(self, name: str) -> np.ndarray:
        """The states carrying a label; raises :class:`ModelError` naming the known ones."""
        try:
            return self.labels[name]
        except KeyError:
            known = sorted(self.labels)
            raise ModelError(f"unknown label {name!r}; the model has {known}") from None

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_finite(
        cls,
        mdp: FiniteMDP,
        *,
        observations: np.ndarray | None = None,
        observation_space: gym.Space[Any] | None = None,
        cells: np.ndarray | None = None,
        grid: tuple[int, int] | None = None,
        env_id: str | None = None,
    ) -> Model:
        """The sparse model of a dense :class:`~rlsec.envs.finite.FiniteMDP`.

        Without ``observations`` a policy observes the state index.
        """
        n_s, n_a = mdp.n_states, mdp.n_actions
        if observations is None:
            observations = np.arange(n_s, dtype=np.int64)
            observation_space = observation_space or gym.spaces.Discrete(n_s)
        return cls(
            sp.csr_array(mdp.transitions.reshape(n_s * n_a, n_s)),
            n_a,
            mdp.initial,
            dict(mdp.labels),
            mdp.rewards,
            observations,
            observation_space,
            mdp.state_names,
            mdp.action_names,
            cells,
            grid,
            env_id,
        )

    @classmethod
    def from_env(cls, env_id: str, *, discount: float = 0.99, **make_kwargs: Any) -> Model:
        """The exact model of a finite Gymnasium environment.

        Works for toy-text environments with a transition table (FrozenLake, CliffWalking,
        Taxi; the policy observes the state index) and for environments whose unwrapped class
        offers ``finite_mdp(discount)`` and ``state_observations()`` (and optionally
        ``grid_shape`` and ``state_cells()`` for pictures).

        Raises:
            UnknownEnv: the id is not registered.
            ModelError: the environment is not finite in either of these ways.
        """
        env = make(env_id, **make_kwargs)
        try:
            u: Any = env.unwrapped
            if hasattr(u, "finite_mdp") and hasattr(u, "state_observations"):
                mdp = u.finite_mdp(discount=discount)
                cells = np.asarray(u.state_cells()) if hasattr(u, "state_cells") else None
                grid = tuple(u.grid_shape) if hasattr(u, "grid_shape") else None
                return cls.from_finite(
                    mdp,
                    observations=np.asarray(u.state_observations()),
                    observation_space=env.observation_space,
                    cells=cells,
                    grid=grid,
                    env_id=env_id,
                )
            if not isinstance(getattr(u, "P", None), dict):
                raise ModelError(
                    f"{env_id} is not a finite environment rlsec can read: it has neither a "
                    "toy-text transition table (env.unwrapped.P) nor finite_mdp() and "
                    "state_observations()"
                )
            mdp = FiniteMDP.from_toy_text(env_id, discount=discount, **make_kwargs)
            cells, grid = _toy_text_cells(u, mdp.n_states)
            return cls.from_finite(
                mdp,
                observation_space=env.observation_space,
                cells=cells,
                grid=grid,
                env_id=env_id,
            )
        finally:
            env.close()

    # -- the policy-induced chain ---------------------------------------------------------
    def chain(self, action_probs: np.ndarray) -> Chain:
        """The Markov chain of following ``π(a | s) = action_probs[s, a]``.

        Raises:
            ModelError: the array is not an ``(n_states, n_actions)`` row-stochastic matrix.
        """
        pi = np.asarray(action_probs, dtype=np.float64)
        n_s, n_a = self.n_states, self.n_actions
        if pi.shape != (n_s, n_a):
            raise ModelError(f"action probabilities have shape {pi.shape}, expected ({n_s}, {n_a})")
        if not (
            np.all(np.isfinite(pi))
            and np.all(pi >= -_ATOL)
            and np.all(np.abs(pi.sum(axis=1) - 1.0) <= TOLERANCE)
        ):
            raise ModelError(
                "action probabilities must be finite, >= 0 and sum to 1 in every state "
                f"(within {TOLERANCE:g})"
            )
        pi = np.maximum(pi, 0.0)  # rounding below 0, within _ATOL
        rows = np.repeat(np.arange(n_s), n_a)
        mix = sp.csr_array((pi.ravel(), (rows, np.arange(n_s * n_a))), shape=(n_s, n_s * n_a))
        matrix = sp.csr_array(mix @ self.transitions)
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        matrix.sort_indices()
        rewards = (pi * self.rewards).sum(axis=1) if self.rewards is not None else None
        return Chain(matrix, self.initial, self.labels, rewards, self)


@dataclass(frozen=True, eq=False)
class Chain:
    """A discrete-time Markov chain: ``matrix[s, s']`` sparse, labels and state rewards.

    Validated like a :class:`Model`: every row a probability distribution (entries finite
    and in [0, 1], summing to 1 within :data:`TOLERANCE`), ``initial`` a distribution,
    labels boolean masks, rewards finite.
    """

    matrix: sp.csr_array
    initial: np.ndarray
    labels: Mapping[str, np.ndarray]
    rewards: np.ndarray | None
    model: Model | None = None

    def __post_init__(self) -> None:
        m = sp.csr_array(self.matrix)
        n = int(m.shape[0])
        if m.shape != (n, n) or n == 0:
            raise ModelError(f"a chain's matrix must be square and non-empty, got shape {m.shape}")
        object.__setattr__(self, "matrix", _csr(m, (n, n), "the chain's matrix"))
        object.__setattr__(self, "initial", _distribution(self.initial, n))
        labels = dict(self.labels)
        labels.setdefault("init", self.initial > 0)
        object.__setattr__(self, "labels", _labels(labels, n))
        if self.rewards is not None:
            r = np.asarray(self.rewards, dtype=np.float64)
            if r.shape != (n,) or not np.all(np.isfinite(r)):
                raise ModelError(f"rewards must be {n} finite numbers, got shape {r.shape}")
            object.__setattr__(self, "rewards", r)

    @property
    def n_states(self) -> int:
        return int(self.matrix.shape[0])


def _toy_text_cells(u: Any, n_s: int) -> tuple[np.ndarray | None, tuple[int, int] | None]:
    kind = type(u).__name__
    if kind == "FrozenLakeEnv":
        rows, cols = np.asarray(u.desc).shape
    elif kind == "CliffWalkingEnv":
        rows, cols = u.shape
    else:
        return None, None
    idx = np.arange(n_s)
    return np.stack([idx // cols, idx % cols], axis=1), (int(rows), int(cols))
