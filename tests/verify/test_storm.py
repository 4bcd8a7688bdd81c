"""Model checking with Storm: exact against numpy, consistent with rollouts, clear errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from rlsec.attacks.rollout import rollout
from rlsec.envs import make_vec
from rlsec.errors import ModelError, SpaceMismatch
from rlsec.policies import load_policy
from rlsec.stats import proportion_ci
from rlsec.verify import (
    GroupedModel,
    Model,
    action_probabilities,
    check,
    counterexample,
    induced_chain,
    most_probable_path,
    render_grid,
)

# -- an independent computation in numpy (dense linear algebra) -----------------------------


def _reach(p: np.ndarray, target: np.ndarray) -> np.ndarray:
    """P(F target) per state: 0 where target is unreachable, else a linear solve."""
    n = len(p)
    can = target.copy()
    while True:  # backward reachability
        grow = can | ((p[:, can].sum(axis=1) > 0) & ~can)
        if (grow == can).all():
            break
        can = grow
    x = np.zeros(n)
    x[target] = 1.0
    free = can & ~target
    a = np.eye(free.sum()) - p[np.ix_(free, free)]
    b = p[np.ix_(free, target)].sum(axis=1)
    x[free] = np.linalg.solve(a, b)
    return x


def _bounded(p: np.ndarray, target: np.ndarray, k: int) -> np.ndarray:
    x = target.astype(float)
    for _ in range(k):
        x = np.where(target, 1.0, p @ x)
    return x


def _steps(p: np.ndarray, target: np.ndarray) -> np.ndarray:
    free = ~target
    x = np.zeros(len(p))
    x[free] = np.linalg.solve(np.eye(free.sum()) - p[np.ix_(free, free)], np.ones(free.sum()))
    return x


def _random_policy(rng: np.random.Generator, n_s: int, n_a: int) -> np.ndarray:
    pi = rng.dirichlet(np.ones(n_a), size=n_s)
    pi[rng.random(n_s) < 0.3] = np.eye(n_a)[rng.integers(0, n_a)]  # some deterministic states
    return pi


@pytest.mark.parametrize(
    ("env_id", "kwargs", "bad"),
    [
        ("FrozenLake-v1", {}, "hole"),
        ("FrozenLake-v1", {"map_name": "8x8"}, "hole"),
        ("CliffWalking-v1", {"is_slippery": True}, "terminal"),
    ],
)
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_storm_equals_a_numpy_linear_solve_to_1e9(
    env_id: str, kwargs: dict[str, Any], bad: str, seed: int
) -> None:
    m = Model.from_env(env_id, **kwargs)
    pi = _random_policy(np.random.default_rng(seed), m.n_states, m.n_actions)
    chain = m.chain(pi)
    p = chain.matrix.toarray()
    init = np.asarray(m.initial)
    goal = m.labels["goal"]
    want = _reach(p, goal)
    got = check(chain, 'P=? [F "goal"]')
    assert np.max(np.abs(got.values - want)) < 1e-9
    assert abs(float(got.result) - init @ want) < 1e-9
    fast = check(chain, 'P=? [F "goal"]', precise=False)  # the topological solver: close
    assert np.max(np.abs(fast.values - want)) < 1e-5
    got = check(chain, 'P=? [F<=17 "goal"]')
    assert np.max(np.abs(got.values - _bounded(p, goal, 17))) < 1e-9
    safe = check(chain, f'P=? [G !"{bad}"]')
    assert np.max(np.abs(safe.values - (1 - _reach(p, m.labels[bad])))) < 1e-9
    # expected steps until absorption, where absorption is certain
    term = m.labels["terminal"]
    sure = _reach(p, term)
    if np.all(sure[init > 0] > 1 - 1e-12):
        steps = check(chain, 'R{"steps"}=? [F "terminal"]')
        ok = sure > 1 - 1e-12
        assert np.max(np.abs(steps.values[ok] - _steps(p, term)[ok])) < 1e-9 * max(
            1.0, float(np.max(_steps(p, term)[ok]))
        )


def test_a_zoo_policy_matches_its_rollouts_within_the_confidence_interval() -> None:
    policy = load_policy("zoo:frozenlake-ppo")
    m = Model.from_env("FrozenLake-v1")
    # the environment stops episodes after 100 steps: the matching property is bounded
    verified = check(induced_chain(m, policy), 'P=? [F<=100 "goal"]').result
    stats = rollout(policy, make_vec("FrozenLake-v1", 64), 4000, seed=3)
    wins = int(np.sum(stats.returns > 0))
    lo, hi = proportion_ci(wins, 4000, level=0.999)
    assert lo <= verified <= hi
    # and the unbounded property differs from it: the time limit matters
    assert check(induced_chain(m, policy), 'P=? [F "goal"]').result > verified


def test_mdp_optimum_equals_value_iteration_and_the_scheduler_attains_it() -> None:
    m = Model.from_env("FrozenLake-v1")
    res = check(m, 'Pmax=? [F "goal"]', scheduler=True)
    # value iteration for max reachability in numpy
    p = m.transitions.toarray().reshape(m.n_states, m.n_actions, m.n_states)
    goal = m.labels["goal"]
    x = goal.astype(float)
    for _ in range(20000):
        x = np.where(goal, 1.0, (p @ x).max(axis=1))
    assert np.max(np.abs(res.values - x)) < 1e-8
    assert res.scheduler is not None
    chained = check(m.chain(np.eye(m.n_actions)[res.scheduler]), 'P=? [F "goal"]')
    assert np.max(np.abs(chained.values - res.values)) < 1e-9
    low = check(m, 'Pmin=? [F "goal"]')
    assert np.all(low.values <= res.values + 1e-12)


def test_grouped_models_with_uneven_choices() -> None:
    # state 0 has two choices (to 1 or to 2), state 1 one, state 2 one
    matrix = sp.csr_array(np.array([[0, 1, 0], [0, 0.5, 0.5], [0, 1, 0], [0, 0, 1.0]]))
    labels = {"init": np.array([True, False, False]), "bad": np.array([False, False, True])}
    g = GroupedModel(matrix, np.array([0, 2, 3, 4]), np.array([1.0, 0, 0]), labels)
    assert check(g, 'Pmax=? [F "bad"]').result == pytest.approx(0.5)
    assert check(g, 'Pmin=? [F "bad"]').result == pytest.approx(0.0)
    sched = check(g, 'Pmax=? [F "bad"]', scheduler=True).scheduler
    assert sched is not None and sched[0] == 1


def test_bounded_properties_give_truth_values() -> None:
    m = Model.from_env("FrozenLake-v1", is_slippery=False)
    pi = np.zeros((16, 4))
    pi[:, 1] = 1.0  # always down: (3, 0) is a hole
    chain = m.chain(pi)
    res = check(chain, 'P>=0.5 [F "hole"]')
    # columns 0, 1 and 3 lead down into a hole (or are one); column 2 ends on (3, 2)
    assert np.flatnonzero(res.values).tolist() == [0, 1, 3, 4, 5, 7, 8, 11, 12]
    assert res.result is True and res.values.dtype == bool
    assert check(chain, 'P<0.5 [F "hole"]').result is False


def test_counterexample_is_the_most_probable_path_and_names_likely_states() -> None:
    m = Model.from_env("FrozenLake-v1")
    policy = load_policy("zoo:frozenlake-ppo")
    chain = induced_chain(m, policy)
    res = check(chain, 'P=? [F "hole"]')
    path, prob = most_probable_path(chain, "hole")
    assert m.labels["init"][path[0]] and m.labels["hole"][path[-1]]
    # every transition on it exists, and no other path to a hole is more likely: compare with
    # brute force over paths up to its length + 2 by dynamic programming on max-product
    p = chain.matrix.toarray()
    best = np.where(m.labels["init"], 1.0, 0.0)
    top = 0.0
    for _ in range(len(path) + 2):
        new = (best[:, None] * p).max(axis=0)  # most likely way into each state, one more step
        top = max(top, float(new[m.labels["hole"]].max()))
        best = np.where(m.labels["hole"], 0.0, new)  # paths end at the first hole
    assert prob == pytest.approx(top, rel=1e-9)
    ce = counterexample(chain, "hole", res.values, threshold=0.5)
    assert all(res.values[s] >= 0.5 for s in ce["likely_states"])
    assert set(np.flatnonzero(m.labels["hole"])) <= set(ce["likely_states"])
    picture = render_grid(m, values=res.values, path=path)
    assert len(picture.splitlines()) == 4 and picture.count("X") == 4 and "*" in picture


def test_batched_query_equals_per_state_query() -> None:
    policy = load_policy("zoo:frozenlake-ppo")
    m = Model.from_env("FrozenLake-v1")
    a = action_probabilities(policy, m)
    b = action_probabilities(policy, m, batch_size=1)
    assert np.array_equal(a, b)
    s = action_probabilities(policy, m, stochastic=True)
    assert np.allclose(s.sum(axis=1), 1.0) and np.array_equal(s.argmax(axis=1), a.argmax(axis=1))


@pytest.mark.parametrize(
    ("prop", "match"),
    [
        ('P=? [F "goal"', r"1:14"),
        ('P=? [F "gaol"]', r"unknown label 'gaol' at column 8"),
        ("", "expected a PCTL property"),
        ('P=? [F "goal"]; P=? [F "hole"]', "exactly one property"),
    ],
)
def test_bad_properties_say_where(prop: str, match: str) -> None:
    m = Model.from_env("FrozenLake-v1")
    chain = m.chain(np.full((16, 4), 0.25))
    with pytest.raises(ModelError, match=match):
        check(chain, prop)


def test_bad_models_and_policies_are_refused() -> None:
    m = Model.from_env("FrozenLake-v1")
    with pytest.raises(SpaceMismatch, match="observation space"):
        action_probabilities(load_policy("zoo:cartpole-ppo"), m)
    with pytest.raises(ModelError, match=r"shape \(16,\)"):
        action_probabilities(np.zeros(3, dtype=np.int64), m)
    with pytest.raises(ModelError, match="sum to 1"):
        m.chain(np.zeros((16, 4)))
    with pytest.raises(ModelError, match=r"row 0 sums to 0\.5"):
        Model(sp.csr_array(np.array([[0.5, 0.0], [0.0, 1.0]])), 1, np.array([1.0, 0.0]))
    with pytest.raises(ModelError, match="not a finite environment"):
        Model.from_env("CartPole-v1")
    with pytest.raises(ModelError, match="stochastic=True needs"):
        action_probabilities(load_policy("zoo:cartpole-dqn"), m, stochastic=True)


def test_result_at_several_initial_states_is_weighted_by_the_initial_distribution() -> None:
    matrix = sp.csr_array(np.eye(3))
    labels = {"goal": np.array([True, False, False])}
    m = Model(matrix, 1, np.array([0.25, 0.75, 0.0]), labels)
    res = check(m.chain(np.ones((3, 1))), 'P=? [F "goal"]')
    assert math.isclose(float(res.result), 0.25)
