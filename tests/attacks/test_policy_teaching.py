"""The policy-teaching LP: its optimum against an independent brute-force formulation, its
verification, and its refusals of bad inputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from helpers import chain_mdp, with_rewards
from rlsec.attacks.policy_teaching import policy_teaching_lp
from rlsec.envs.finite import FiniteMDP, greedy
from rlsec.errors import AttackNotApplicable, ConfigError


# -- the LP against an independent formulation --------------------------------------------------
def brute_force_teaching(
    mdp: FiniteMDP, target: np.ndarray, margin: float, cost: str, bound: float | None
) -> float:
    """The original problem: J(π†) >= J(π) + ε for *every* deterministic π != π†, each
    score computed by its own linear solve; no neighbours, no Sherman-Morrison."""
    n_s, n_a, g = mdp.n_states, mdp.n_actions, mdp.discount
    sigma = np.full(n_s, 1 / n_s)

    def occupancy(pi: np.ndarray) -> np.ndarray:
        p_pi = mdp.transitions[np.arange(n_s), pi]
        d = (1 - g) * np.linalg.solve(np.eye(n_s) - g * p_pi.T, sigma)
        mu = np.zeros((n_s, n_a))
        mu[np.arange(n_s), pi] = d
        return mu.reshape(-1)

    mu_t = occupancy(target)
    rows = [
        occupancy(np.array(pi)) - mu_t
        for pi in itertools.product(range(n_a), repeat=n_s)
        if not np.array_equal(pi, target)
    ]
    n = n_s * n_a
    r = mdp.rewards.reshape(-1)
    n_aux = n if cost == "l1" else 1
    aux = np.eye(n) if cost == "l1" else np.ones((n, 1))
    a_ub = np.block(
        [
            [np.array(rows), np.zeros((len(rows), n_aux))],
            [np.eye(n), -aux],
            [-np.eye(n), -aux],
        ]
    )
    b_ub = np.concatenate([np.full(len(rows), -margin), r, -r])
    lo = [None] * n if bound is None else list(r - bound)
    hi = [None] * n if bound is None else list(r + bound)
    res = linprog(
        np.r_[np.zeros(n), np.ones(n_aux)],
        A_ub=a_ub,
        b_ub=b_ub,
        bounds=list(zip(lo, hi, strict=True)) + [(0, None)] * n_aux,
        method="highs",
    )
    return np.inf if res.status == 2 else float(res.fun)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**20),
    n_s=st.integers(2, 3),
    n_a=st.integers(2, 3),
    cost=st.sampled_from(["l1", "linf"]),
    margin=st.floats(0.01, 0.5),
    bounded=st.booleans(),
)
def test_policy_teaching_lp_matches_brute_force_over_all_policies(
    seed: int, n_s: int, n_a: int, cost: str, margin: float, bounded: bool
) -> None:
    rng = np.random.default_rng(seed)
    mdp = FiniteMDP(
        rng.dirichlet(np.full(n_s, 0.5), size=(n_s, n_a)),
        rng.normal(size=(n_s, n_a)),
        rng.dirichlet(np.ones(n_s)),
        float(rng.uniform(0.3, 0.95)),
    )
    target = rng.integers(0, n_a, size=n_s)
    bound = 1.0 if bounded else None
    expected = brute_force_teaching(mdp, target, margin, cost, bound)
    if not np.isfinite(expected):
        with pytest.raises(AttackNotApplicable, match="no reward within"):
            policy_teaching_lp(mdp, target, margin=margin, cost=cost, bound=bound)  # type: ignore[arg-type]
        return
    sol = policy_teaching_lp(mdp, target, margin=margin, cost=cost, bound=bound)  # type: ignore[arg-type]
    assert sol.cost == pytest.approx(expected, rel=1e-6, abs=1e-7)
    # The solution makes the target ε-robustly optimal against every policy, and optimal
    # under value iteration.
    poisoned = with_rewards(mdp, sol.reward)
    sigma = np.full(n_s, 1 / n_s)
    score = {
        pi: (1 - mdp.discount) * sigma @ poisoned.evaluate(np.array(pi))
        for pi in itertools.product(range(n_a), repeat=n_s)
    }
    best_other = max(v for pi, v in score.items() if pi != tuple(target))
    assert score[tuple(target)] >= best_other + margin - 1e-7
    assert np.array_equal(greedy(poisoned.value_iteration()[1]), target)
    assert sol.q_gap >= margin - 1e-7
    if bound is not None:
        assert np.abs(sol.delta).max() <= bound


def test_policy_teaching_lp_rejects_bad_inputs() -> None:
    mdp = chain_mdp()
    with pytest.raises(ConfigError, match="action in every one of the 4 states"):
        policy_teaching_lp(mdp, np.array([0, 0, -1, 0]), margin=0.1)
    with pytest.raises(ConfigError, match="1-D integer array"):
        policy_teaching_lp(mdp, np.array([0.0, 1.0, 0.0, 0.0]), margin=0.1)
    with pytest.raises(ConfigError, match="margin must be a finite number > 0"):
        policy_teaching_lp(mdp, np.array([0, 0, 0, 0]), margin=0.0)
    with pytest.raises(ConfigError, match="cost must be 'l1' or 'linf'"):
        policy_teaching_lp(mdp, np.array([0, 0, 0, 0]), margin=0.1, cost="l2")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"states \[1, 2\] are never visited"):
        policy_teaching_lp(mdp, np.array([0, 0, 0, 0]), margin=0.1, start=mdp.initial)
    with pytest.raises(AttackNotApplicable, match="no reward within"):
        policy_teaching_lp(mdp, np.array([0, 0, 0, 0]), margin=0.1, bound=1e-3)
