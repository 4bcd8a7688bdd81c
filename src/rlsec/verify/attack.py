"""The policy under a bounded observation attacker, as an MDP for Storm.

An attacker who perturbs what the policy observes, within a budget, chooses in each state
which action the policy takes, among the actions it can induce. That turns the policy-induced
chain into an MDP whose nondeterminism is the attacker's; Storm's ``Pmax``/``Pmin`` then give
the verified worst case under attack, and its optimal scheduler is the attacker's strategy.

The attacker's choices in state ``s``:

* index observations (``Discrete``): the observation of any state ``j`` within ``radius`` of
  ``s`` (Manhattan distance between grid cells when the model has a grid, else ``|s - j|``).
  Each choice is the policy's action distribution on that observation (deterministic
  policies: its action; stochastic ones keep their probabilities). The attacker's optimum is
  attained exactly by substituting those observations (:class:`Strategy` ``.observe``).
* feature-vector observations (``Box``): every action certified *reachable* in the linf ball
  of radius ``radius`` (raw units, times ``scale`` per feature) around the state's
  observation, by CROWN or IBP (:func:`rlsec.verify.bounds.reachable_actions`). This is a
  sound over-approximation: any real perturbation yields one of these actions, so the
  verified value bounds every attack from above (``Pmax``); an attacker may not be able to
  realise every choice, so the bound may not be attained.

Example:
    >>> from rlsec.verify.model import Model
    >>> from rlsec.verify.storm import check
    >>> m = Model.from_env("FrozenLake-v1", is_slippery=False)
    >>> table = np.array([1, 2, 1, 0, 1, 0, 1, 0, 2, 1, 1, 0, 0, 2, 2, 0])  # optimal, safe
    >>> check(m.chain(np.eye(4)[table]), 'P=? [F "hole"]').result
    0.0
    >>> attacked = attacked_model(m, table, 1)  # show the observation of a neighbouring cell
    >>> result, strategy = worst_case(attacked, 'Pmax=? [F "hole"]')
    >>> result.result, int(strategy.observe[0])  # at the start, show (0, 1): it goes right
    (1.0, 1)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import scipy.sparse as sp

from rlsec.core import Policy
from rlsec.errors import ConfigError, InvalidBudget, ModelError
from rlsec.verify.budget import Budget
from rlsec.verify.model import Model
from rlsec.verify.policy import action_probabilities
from rlsec.verify.storm import CheckResult, GroupedModel, check

__all__ = [
    "AttackedModel",
    "Strategy",
    "attacked_model",
    "json_number",
    "state_distances",
    "worst_case",
]


@dataclass(frozen=True, eq=False)
class AttackedModel:
    """The attacked policy's MDP and what each of its choices means.

    Attributes:
        mdp: the MDP (one row per attacker choice).
        observe: per choice, the state whose observation the attacker shows (index
            observations), else ``-1``.
        action: per choice, the action the policy takes (``-1`` for a stochastic policy's
            distribution).
        kind: ``"index"`` or ``"features"``.
        radius: the budget.
        method: how choices were found (``"substitution"``, ``"crown"`` or ``"ibp"``).
    """

    mdp: GroupedModel
    observe: np.ndarray
    action: np.ndarray
    kind: str
    radius: float
    method: str

    def choices(self, state: int) -> range:
        g = self.mdp.groups
        return range(int(g[state]), int(g[state + 1]))


def state_distances(model: Model) -> np.ndarray:
    n = model.n_states
    if model.cells is not None:
        c = model.cells.astype(np.int64)
        d: np.ndarray = np.abs(c[:, None, :] - c[None, :, :]).sum(axis=2)
        off = (c < 0).any(axis=1)
        d[off, :] = np.where(np.eye(n, dtype=bool)[off], 0, np.iinfo(np.int64).max)
        d[:, off] = np.where(np.eye(n, dtype=bool)[:, off], 0, np.iinfo(np.int64).max)
        return d
    idx = np.arange(n)
    out: np.ndarray = np.abs(idx[:, None] - idx[None, :])
    return out


def attacked_model(
    model: Model,
    policy: Policy | np.ndarray,
    radius: float,
    *,
    stochastic: bool = False,
    method: str = "crown",
    scale: np.ndarray | None = None,
) -> AttackedModel:
    """The MDP of ``policy`` in ``model`` under an observation attacker with budget ``radius``.

    Args:
        model: the finite model (with its observation function).
        policy: a policy, or a table over states (then observations are state indices).
        radius: index observations: the largest distance of a substituted state;
            feature vectors: the linf budget in raw units (times ``scale``).
        stochastic: keep a logits policy's action probabilities (index observations only).
        method: ``"crown"`` or ``"ibp"`` for feature vectors.
        scale: per-feature multiplier of ``radius`` (e.g. the clean observation std).

    Raises:
        InvalidBudget: a negative or non-finite radius.
        ModelError: the model has no observation function, or the observation kind is not
            supported (e.g. a stochastic policy on feature vectors).
    """
    if not np.isfinite(radius) or radius < 0:
        raise InvalidBudget(f"attack radius must be finite and >= 0, got {radius!r}")
    n_s, n_a = model.n_states, model.n_actions
    space = model.observation_space
    tabular = isinstance(policy, np.ndarray)
    if tabular or isinstance(space, gym.spaces.Discrete):
        probs = action_probabilities(policy, model, stochastic=stochastic)
        dist = state_distances(model)
        near = dist <= radius
        rows_s, rows_pi, rows_j = [], [], []
        for s in range(n_s):
            cand = np.flatnonzero(near[s])
            # nearest first, so each distinct distribution is shown by its closest state
            cand = cand[np.argsort(dist[s, cand], kind="stable")]
            _, first = np.unique(np.round(probs[cand], 12), axis=0, return_index=True)
            for j in cand[np.sort(first)]:
                rows_s.append(s)
                rows_pi.append(probs[j])
                rows_j.append(int(j))
        pis = np.asarray(rows_pi)
        states = np.asarray(rows_s)
        observe = np.asarray(rows_j)
        det = pis.max(axis=1) >= 1.0 - 1e-12
        action = np.where(det, pis.argmax(axis=1), -1)
        kind, how = "index", "substitution"
    elif isinstance(space, gym.spaces.Box):
        if stochastic:
            raise ModelError("a stochastic policy under feature-vector attacks is not supported")
        if method not in ("crown", "ibp"):
            raise ConfigError(f"method must be 'crown' or 'ibp', got {method!r}")
        from rlsec.verify.bounds import reachable_actions

        assert model.observations is not None
        eps: Any = radius if scale is None else radius * np.asarray(scale, dtype=np.float64)
        reach = reachable_actions(
            policy,  # type: ignore[arg-type]
            model.observations.astype(np.float32),
            eps,
            method=method,  # type: ignore[arg-type]
        )
        states, action = np.nonzero(reach)
        pis = np.eye(n_a)[action]
        observe = np.full(len(states), -1)
        kind, how = "features", method
    else:
        raise ModelError(f"cannot attack observations of type {space}")
    n_c = len(states)
    groups = np.searchsorted(states, np.arange(n_s + 1)).astype(np.int64)
    rows = np.repeat(np.arange(n_c), n_a)
    cols = (states[:, None] * n_a + np.arange(n_a)[None, :]).reshape(-1)
    mix = sp.csr_array((pis.reshape(-1), (rows, cols)), shape=(n_c, n_s * n_a))
    mix.eliminate_zeros()
    matrix = sp.csr_array(mix @ model.transitions)
    matrix.sort_indices()
    rewards = (pis * model.rewards[states]).sum(axis=1) if model.rewards is not None else None
    mdp = GroupedModel(matrix, groups, model.initial, model.labels, rewards)
    return AttackedModel(mdp, observe, action.astype(np.int64), kind, float(radius), how)


@dataclass
class Strategy:
    """The attacker's optimal strategy: per state, the observation to show (index
    observations) and the action it induces.

    Saved as JSON (``save``/``load``); ``observe[s] == -1`` means the attacker must find a
    perturbation that makes the policy take ``action[s]`` (feature vectors). ``action``
    holds action indices from 0 (the ``k``-th action of the space, ``start + k``). A bound
    that is not finite (an expected reward that is infinite) is written as the string
    ``"inf"``, so the file stays strict JSON.
    """

    env_id: str | None
    policy_sha256: str | None
    radius: float
    kind: str
    property: str
    bound: float
    observe: np.ndarray
    action: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "rlsec-attack-strategy",
            "observation": self.kind,
            "env_id": self.env_id,
            "policy_sha256": self.policy_sha256,
            "radius": self.radius,
            "property": self.property,
            "bound": json_number(self.bound),
            "observe": self.observe.tolist(),
            "action": self.action.tolist(),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        from rlsec._files import write_atomic  # whole, never through a link

        write_atomic(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Strategy:
        from rlsec._files import read_regular

        try:
            d = json.loads(read_regular(path, max_bytes=256 * 2**20, what="strategy file"))
            if d.get("kind") != "rlsec-attack-strategy":
                raise ValueError(f"kind is {d.get('kind')!r}")
            return cls(
                d["env_id"],
                d["policy_sha256"],
                float(d["radius"]),
                str(d["observation"]),
                str(d["property"]),
                float(d["bound"]),
                np.asarray(d["observe"], dtype=np.int64),
                np.asarray(d["action"], dtype=np.int64),
            )
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise ConfigError(f"{path} is not an attack strategy file: {exc}") from None


def json_number(x: float) -> float | str:
    """``x`` if finite, else ``"inf"``, ``"-inf"`` or ``"nan"`` (``float()`` reads them back)."""
    x = float(x)
    return x if math.isfinite(x) else str(x)


def worst_case(
    attacked: AttackedModel,
    prop: str,
    *,
    env_id: str | None = None,
    policy_sha256: str | None = None,
    budget: Budget | None = None,
) -> tuple[CheckResult, Strategy]:
    """Check an optimising property (``Pmax=? [F "unsafe"]``, ``Pmin=? [F "goal"]``, ...) on
    the attacked MDP; return the result and the attacker's optimal strategy (``budget``: as
    for :func:`~rlsec.verify.storm.check`)."""
    res = check(attacked.mdp, prop, scheduler=True, budget=budget)
    if res.scheduler is None:
        raise ModelError(
            f"Storm returned no strategy for {prop!r}: use an unbounded optimising property "
            'such as Pmax=? [F "unsafe"] or Pmin=? [F "goal"]'
        )
    rows = attacked.mdp.groups[:-1] + res.scheduler
    strategy = Strategy(
        env_id,
        policy_sha256,
        attacked.radius,
        attacked.kind,
        prop,
        float(res.result),
        attacked.observe[rows],
        attacked.action[rows],
    )
    return res, strategy
