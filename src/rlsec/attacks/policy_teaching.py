"""Rakhsha et al. 2020's policy-teaching linear program: the cheapest change of a finite
MDP's reward that makes a target policy ε-robustly optimal.

:func:`policy_teaching_lp` solves it exactly (HiGHS) and verifies the answer by value
iteration on the poisoned MDP (:class:`TeachingSolution`). It is the optimisation behind the
training-time reward attack :class:`~rlsec.attacks.reward.PolicyTeachingReward`, which adds
the solution's ``δ`` to every step the learner sees.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from rlsec.envs.finite import FiniteMDP
from rlsec.errors import AttackNotApplicable, ConfigError, RLSecError

__all__ = ["TeachingSolution", "policy_teaching_lp"]


# -- target policies ----------------------------------------------------------------------------
def _target_array(target: Any, n_actions: int | None, name: str = "target") -> np.ndarray:
    t = np.asarray(target)
    if t.ndim != 1 or not np.issubdtype(t.dtype, np.integer) or t.size == 0:
        raise ConfigError(
            f"{name} must be a 1-D integer array of actions per state (-1 = no target), "
            f"got dtype {t.dtype} shape {t.shape}"
        )
    hi = n_actions if n_actions is not None else np.iinfo(np.int64).max
    if np.any((t < -1) | (t >= hi)):
        raise ConfigError(f"{name} entries must be -1 or actions in [0, {hi}), got {t.tolist()}")
    return t.astype(np.int64)


# -- the linear program --------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TeachingSolution:
    """The poisoned reward found by :func:`policy_teaching_lp`, verified.

    Attributes:
        reward: the poisoned ``R̂[s, a]``.
        delta: ``R̂ - R``.
        cost: ``‖R̂ - R‖`` in ``cost_norm`` (``l1`` or ``linf``).
        cost_norm: the norm minimised.
        margin: the ε asked for: ``J(π†) >= J(π) + ε`` for every neighbour ``π``.
        score_margin: the smallest ``J(π†) - J(π)`` over the neighbours at ``R̂``.
        q_gap: the smallest ``Q*(s, π†(s)) - max_{a != π†(s)} Q*(s, a)`` over the constrained
            states, from value iteration on the poisoned MDP (positive: π† is optimal there).
        constrained: states whose action the constraints fix (the non-frozen states).
    """

    reward: np.ndarray
    delta: np.ndarray
    cost: float
    cost_norm: str
    margin: float
    score_margin: float
    q_gap: float
    constrained: np.ndarray


def policy_teaching_lp(
    mdp: FiniteMDP,
    target: np.ndarray,
    *,
    margin: float,
    cost: Literal["l1", "linf"] = "linf",
    bound: float | None = None,
    start: np.ndarray | None = None,
    frozen: np.ndarray | None = None,
) -> TeachingSolution:
    """The cheapest ``R̂`` under which the target policy is ε-robustly optimal.

    Rakhsha et al. 2020's reward-poisoning problem, discounted setting::

        minimise ‖R̂ - R‖   s.t.   J^{π†}(R̂) >= J^{π}(R̂) + ε   for every neighbour π = π†{s; a}

    where ``π†{s; a}`` is π† with action ``a != π†(s)`` in state ``s`` (the paper shows the
    neighbours suffice for all deterministic policies), and
    ``J^π(R̂) = (1 - gamma) E[Σ_t gamma^t R̂(s_t, a_t) | s_0 ~ start]`` is the normalised discounted
    score, linear in ``R̂`` because the transitions are fixed. Each neighbour's occupancy is a
    rank-one (Sherman-Morrison) update of π†'s. Solved as a linear program with HiGHS, then
    verified by value iteration on the poisoned MDP.

    Args:
        mdp: the environment's model.
        target: the deterministic target policy π†, one action per state.
        margin: ε > 0, in the units of J (reward per step).
        cost: ``l1`` (sum of changes) or ``linf`` (largest change).
        bound: if given, every ``|R̂(s, a) - R(s, a)| <= bound``.
        start: the start distribution of J; it must reach every non-frozen state under π†
            (default: uniform over the non-frozen states, which does).
        frozen: states whose rewards and actions are left alone (default: the ``terminal``
            label, where the agent never acts).

    Raises:
        AttackNotApplicable: no ``R̂`` within ``bound`` satisfies the constraints.
        ConfigError: bad inputs, or a start distribution that misses some state.

    Example:
        >>> mdp = FiniteMDP([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]],
        ...                 [[1.0, 0.0], [0.0, 0.0]], [1.0, 0.0], 0.9)
        >>> sol = policy_teaching_lp(mdp, np.array([1, 0]), margin=0.1, cost="l1")
        >>> round(sol.cost, 4), sol.q_gap > 0
        (1.2105, True)
    """
    n_s, n_a, gamma = mdp.n_states, mdp.n_actions, mdp.discount
    pi = _target_array(target, n_a)
    if pi.shape != (n_s,) or np.any(pi < 0):
        raise ConfigError(f"target must give an action in every one of the {n_s} states")
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin > 0):
        raise ConfigError(f"margin must be a finite number > 0, got {margin!r}")
    if cost not in ("l1", "linf"):
        raise ConfigError(f"cost must be 'l1' or 'linf', got {cost!r}")
    if bound is not None and not (math.isfinite(bound) and bound >= 0):
        raise ConfigError(f"bound must be a finite number >= 0, got {bound!r}")
    if gamma >= 1:
        raise ConfigError("policy_teaching_lp solves the discounted problem: discount < 1")
    fz = mdp.labels.get("terminal", np.zeros(n_s, dtype=bool)) if frozen is None else frozen
    fz = np.asarray(fz)
    if fz.shape != (n_s,) or fz.dtype != np.bool_:
        raise ConfigError(f"frozen must be a boolean mask of shape ({n_s},), got {fz.shape}")
    live = ~fz
    if not live.any():
        raise ConfigError("every state is frozen; there is nothing to teach")
    sigma = live / live.sum() if start is None else np.asarray(start, dtype=np.float64)
    if sigma.shape != (n_s,) or np.any(sigma < 0) or abs(float(sigma.sum()) - 1) > 1e-8:
        raise ConfigError(f"start must be a distribution over the {n_s} states")

    idx = np.arange(n_s)
    p_pi = mdp.transitions[idx, pi]  # (S, S)
    m = np.linalg.inv(np.eye(n_s) - gamma * p_pi)
    d = (1 - gamma) * (sigma @ m)  # π†'s normalised discounted state visitation
    missed = np.flatnonzero(live & (d <= 1e-12))
    if missed.size:
        raise ConfigError(
            f"states {missed[:10].tolist()} are never visited under the target from the start "
            "distribution, so the neighbour constraints cannot fix their actions; pass a start "
            "distribution that reaches them (the default, uniform, does)"
        )
    # Neighbour π†{s; a}: P changes by e_s u^T with u = P[s, a] - P[s, π†(s)].
    w = (mdp.transitions - p_pi[:, None, :]) @ m  # (S, A, S): u^T M for every (s, a)
    denom = 1 - gamma * w[idx, :, idx]  # (S, A)
    ps, pa = np.nonzero(live[:, None] & (np.arange(n_a)[None, :] != pi[:, None]))
    n, k = n_s * n_a, len(ps)
    # J(π†) - J(π') = Σ_x (d - d')(x) R̂(x, π†x), except at s: d(s) R̂(s, π†s) - d'(s) R̂(s, a).
    change = gamma * d[ps, None] * w[ps, pa] / denom[ps, pa, None]  # d' - d, one row per pair
    coef = -change
    coef[np.arange(k), ps] = d[ps]
    cols = np.broadcast_to(idx * n_a + pi, (k, n_s))
    neighbours = sparse.csr_matrix(
        (
            np.concatenate([coef.reshape(-1), -(d[ps] + change[np.arange(k), ps])]),
            (
                np.concatenate([np.repeat(np.arange(k), n_s), np.arange(k)]),
                np.concatenate([cols.reshape(-1), ps * n_a + pa]),
            ),
        ),
        shape=(k, n),
    )

    r0 = mdp.rewards.reshape(-1)
    n_aux = n if cost == "l1" else 1
    eye = sparse.identity(n, format="csr")
    aux = eye if cost == "l1" else sparse.csr_matrix(np.ones((n, 1)))
    a_ub = sparse.vstack(
        [
            sparse.hstack([-neighbours, sparse.csr_matrix((k, n_aux))]),
            sparse.hstack([eye, -aux]),
            sparse.hstack([-eye, -aux]),
        ],
        format="csr",
    )
    b_ub = np.concatenate([np.full(k, -float(margin)), r0, -r0])
    frozen_flat = np.repeat(fz, n_a)
    lo = np.where(frozen_flat, r0, -np.inf if bound is None else r0 - bound)
    hi = np.where(frozen_flat, r0, np.inf if bound is None else r0 + bound)
    bounds = [(_finite(x), _finite(y)) for x, y in zip(lo, hi, strict=True)]
    bounds += [(0.0, None)] * n_aux
    objective = np.concatenate([np.zeros(n), np.ones(n_aux)])
    res = linprog(objective, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    if res.status == 2:
        raise AttackNotApplicable(
            f"no reward within ±{bound} of R makes the target {margin}-robustly optimal"
        )
    if res.status != 0:
        raise RLSecError(f"the policy-teaching LP failed: {res.message}")

    delta = res.x[:n].reshape(n_s, n_a) - mdp.rewards
    delta[np.abs(delta) < 1e-10] = 0.0  # solver noise is not an attack
    if bound is not None:
        delta = np.clip(delta, -bound, bound)
    reward = mdp.rewards + delta
    score_margin = float((neighbours @ reward.reshape(-1)).min()) if k else math.inf
    _, q = dataclasses.replace(mdp, rewards=reward).value_iteration(tol=1e-11)
    masked = q.copy()
    masked[idx, pi] = -np.inf
    gaps = q[idx, pi] - masked.max(axis=1)
    q_gap = float(gaps[live].min()) if n_a > 1 else math.inf
    scale = 1.0 + float(np.abs(reward).max())
    if score_margin < margin - 1e-7 * scale or q_gap <= 0:
        raise RLSecError(
            f"the policy-teaching LP's solution does not verify: score margin {score_margin} "
            f"(asked {margin}), smallest Q* gap {q_gap} (needs > 0)"
        )
    total = float(np.abs(delta).sum() if cost == "l1" else np.abs(delta).max())
    return TeachingSolution(reward, delta, total, cost, float(margin), score_margin, q_gap, live)


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
