from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest

from rlsec.envs.finite import FiniteMDP, greedy, q_learning
from rlsec.errors import ConfigError, ModelTooLarge, UnknownEnv

DETERMINISTIC = [
    ("FrozenLake-v1", {"is_slippery": False}),
    ("FrozenLake8x8-v1", {"is_slippery": False}),
    ("CliffWalking-v1", {}),
    ("Taxi-v4", {}),
]
STOCHASTIC = [
    ("FrozenLake-v1", {"is_slippery": True}),
    ("CliffWalkingSlippery-v1", {}),
    ("Taxi-v4", {"is_rainy": True}),
]


def random_mdp(rng: np.random.Generator, n_s: int, n_a: int, gamma: float) -> FiniteMDP:
    p = rng.dirichlet(np.full(n_s, 0.5), size=(n_s, n_a))
    return FiniteMDP(p, rng.normal(size=(n_s, n_a)), rng.dirichlet(np.ones(n_s)), gamma)


def step_from(env: gym.Env, s: int, a: int) -> tuple[int, float, bool]:
    env.reset(seed=0)
    env.unwrapped.s = s
    obs, r, term, _, _ = env.step(a)
    return int(obs), float(r), bool(term)


@pytest.mark.parametrize(("env_id", "kwargs"), DETERMINISTIC)
def test_deterministic_tables_match_stepping_the_real_env(env_id: str, kwargs: dict) -> None:
    mdp = FiniteMDP.from_toy_text(env_id, discount=0.9, **kwargs)
    terminal = mdp.labels["terminal"]
    env = gym.make(env_id, **kwargs)
    for s in np.flatnonzero(mdp.reachable() & ~terminal):
        for a in range(mdp.n_actions):
            obs, r, term = step_from(env, int(s), a)
            assert mdp.transitions[s, a, obs] == 1.0, (s, a, obs)
            assert mdp.rewards[s, a] == r, (s, a)
            assert term == bool(terminal[obs]), (s, a, obs)
    # Absorbing terminal states: stay put, earn nothing.
    for t in np.flatnonzero(terminal):
        assert np.all(mdp.transitions[t, :, t] == 1.0)
        assert np.all(mdp.rewards[t] == 0.0)


@pytest.mark.parametrize(("env_id", "kwargs"), STOCHASTIC)
def test_stochastic_tables_match_sampled_transitions(env_id: str, kwargs: dict) -> None:
    mdp = FiniteMDP.from_toy_text(env_id, discount=0.9, **kwargs)
    env = gym.make(env_id, **kwargs)
    env.reset(seed=123)
    live = np.flatnonzero(mdp.reachable() & ~mdp.labels["terminal"])
    n = 1000
    for s in np.random.default_rng(0).choice(live, size=4, replace=False):
        for a in range(mdp.n_actions):
            counts = np.zeros(mdp.n_states)
            rewards = 0.0
            for _ in range(n):
                env.unwrapped.s = int(s)
                obs, r, *_ = env.step(a)
                counts[int(obs)] += 1
                rewards += float(r)
            p = mdp.transitions[s, a]
            assert set(np.flatnonzero(counts)) <= set(np.flatnonzero(p > 0)), (s, a)
            # 5 standard deviations of a frequency out of 1000 draws
            assert np.all(np.abs(counts / n - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-9), (s, a)
            outcomes = env.unwrapped.P[int(s)][a]
            sd = np.sqrt(sum(q * (r - mdp.rewards[s, a]) ** 2 for q, _, r, _ in outcomes))
            assert abs(rewards / n - mdp.rewards[s, a]) <= 5 * sd / np.sqrt(n) + 1e-9, (s, a)


def test_toy_text_labels_and_names() -> None:
    lake = FiniteMDP.from_toy_text("FrozenLake-v1", is_slippery=False)
    assert np.flatnonzero(lake.labels["hole"]).tolist() == [5, 7, 11, 12]
    assert np.flatnonzero(lake.labels["goal"]).tolist() == [15]
    assert np.array_equal(lake.labels["unsafe"], lake.labels["hole"])
    assert np.flatnonzero(lake.labels["terminal"]).tolist() == [5, 7, 11, 12, 15]
    assert np.flatnonzero(lake.labels["init"]).tolist() == [0]
    assert lake.state_names is not None and lake.state_names[5] == "H(1,1)"
    assert lake.action_names == ("left", "down", "right", "up")
    cliff = FiniteMDP.from_toy_text("CliffWalking-v1")
    assert np.flatnonzero(cliff.labels["cliff"]).tolist() == list(range(37, 47))
    assert np.flatnonzero(cliff.labels["goal"]).tolist() == [47]
    # Falling off the cliff costs 100 and restarts; it is not terminal.
    assert cliff.rewards[36, 1] == -100.0 and cliff.transitions[36, 1, 36] == 1.0
    taxi = FiniteMDP.from_toy_text("Taxi-v4")
    assert taxi.labels["goal"].sum() == 4 and taxi.labels["init"].sum() == 300


@pytest.mark.parametrize(("env_id", "kwargs"), DETERMINISTIC + STOCHASTIC)
def test_value_iteration_matches_evaluating_its_greedy_policy(env_id: str, kwargs: dict) -> None:
    mdp = FiniteMDP.from_toy_text(env_id, discount=0.95, **kwargs)
    v, q = mdp.value_iteration(tol=1e-10)
    assert np.allclose(mdp.evaluate(greedy(q)), v, atol=1e-8)
    assert np.allclose(mdp.backup(v).max(axis=1), v, atol=1e-8)  # Bellman optimality
    assert np.allclose(mdp.q_values(greedy(q)), q, atol=1e-8)


def test_value_iteration_is_the_best_deterministic_policy_by_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        mdp = random_mdp(rng, 3, 3, float(rng.uniform(0.1, 0.95)))
        v, _ = mdp.value_iteration(tol=1e-12)
        values = [mdp.evaluate(np.array(pi)) for pi in itertools.product(range(3), repeat=3)]
        assert np.allclose(np.max(values, axis=0), v, atol=1e-9)


def test_occupancy_reachability_and_stochastic_policies() -> None:
    rng = np.random.default_rng(1)
    mdp = random_mdp(rng, 4, 2, 0.8)
    pi = rng.dirichlet(np.ones(2), size=4)
    mu = mdp.occupancy(pi)
    assert mu.sum() == pytest.approx(1 / (1 - 0.8))
    assert (mu * mdp.rewards).sum() == pytest.approx(mdp.expected_return(pi))
    lake = FiniteMDP.from_toy_text("FrozenLake-v1", is_slippery=False)
    always_left = np.zeros(16, dtype=np.int64)
    assert np.flatnonzero(lake.reachable(always_left)).tolist() == [0]
    assert lake.reachable().all()


def test_arrays_are_read_only_copies() -> None:
    p = np.array([[[1.0]]])
    mdp = FiniteMDP(p, [[0.0]], [1.0], 0.5)
    p[0, 0, 0] = 2.0
    assert mdp.transitions[0, 0, 0] == 1.0
    with pytest.raises(ValueError, match="read-only"):
        mdp.rewards[0, 0] = 1.0
    with pytest.raises(TypeError):
        mdp.labels["goal"] = np.array([True])  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"transitions": [[[0.5, 0.4]], [[0.0, 1.0]]]}, r"transitions\[0, 0\] sums to 0.9"),
        ({"transitions": [[[1.5, -0.5]], [[0.0, 1.0]]]}, r"transitions\[0, 0, 1\] = -0.5"),
        ({"transitions": [[[1.0, 0.0, 0.0]]]}, r"shape \(1, 1, 3\)"),
        ({"rewards": [[0.0, 0.0]]}, r"rewards has shape \(1, 2\); expected .* \(2, 1\)"),
        ({"rewards": [[np.nan], [0.0]]}, "rewards must be finite"),
        ({"initial": [0.5, 0.6]}, "initial must be a probability distribution"),
        ({"initial": [1.0]}, r"initial has shape \(1,\); expected .* \(2,\)"),
        ({"discount": 1.5}, r"discount must be in \[0, 1\], got 1.5"),
        ({"discount": True}, "discount must be a number"),
        ({"labels": {"bad name": [True, False]}}, "identifiers"),
        ({"labels": {"goal": [1, 0]}}, "boolean mask of shape"),
        ({"state_names": ("a",)}, "state_names must be 2 strings"),
    ],
)
def test_bad_models_are_rejected_with_what_was_expected(kwargs: dict, message: str) -> None:
    base: dict = {
        "transitions": [[[1.0, 0.0]], [[0.0, 1.0]]],
        "rewards": [[0.0], [1.0]],
        "initial": [1.0, 0.0],
        "discount": 0.9,
    }
    with pytest.raises(ConfigError, match=message):
        FiniteMDP(**(base | kwargs))


def test_bad_policies_and_discounts_are_rejected() -> None:
    mdp = FiniteMDP([[[1.0], [1.0]]], [[0.0, 1.0]], [1.0], 0.9)
    with pytest.raises(ConfigError, match=r"action indices in \[0, 2\)"):
        mdp.evaluate(np.array([2]))
    with pytest.raises(ConfigError, match=r"\(1,\) integer actions or \(1, 2\) float"):
        mdp.evaluate(np.array([0.5]))
    with pytest.raises(ConfigError, match="rows must be >= 0 and sum to 1"):
        mdp.evaluate(np.array([[0.5, 0.6]]))
    undiscounted = FiniteMDP([[[1.0]]], [[0.0]], [1.0], 1.0)
    with pytest.raises(ConfigError, match="discount < 1"):
        undiscounted.value_iteration()


def test_toy_text_import_errors_name_the_problem() -> None:
    with pytest.raises(UnknownEnv, match="did you mean Taxi-v4"):
        FiniteMDP.from_toy_text("Taxi-v3")
    with pytest.raises(ConfigError, match="no transition table"):
        FiniteMDP.from_toy_text("CartPole-v1")
    with pytest.raises(ConfigError, match="fickle_passenger"):
        FiniteMDP.from_toy_text("Taxi-v4", fickle_passenger=True)


def test_q_learning_learns_the_shortest_path_and_is_deterministic() -> None:
    def train(seed: int) -> np.ndarray:
        env = gym.make("FrozenLake-v1", is_slippery=False)
        return q_learning(env, steps=6000, learning_rate=0.5, explore=0.3, seed=seed)

    q = train(0)
    mdp = FiniteMDP.from_toy_text("FrozenLake-v1", is_slippery=False, discount=0.9)
    assert mdp.expected_return(greedy(q)) == pytest.approx(0.9**5)
    assert np.array_equal(q, train(0))
    with pytest.raises(ConfigError, match="Discrete observations and actions"):
        q_learning(gym.make("CartPole-v1"), steps=1)
    with pytest.raises(ConfigError, match=r"q must have shape \(16, 4\)"):
        q_learning(gym.make("FrozenLake-v1"), steps=1, q=np.zeros((2, 2)))


def _table_env(table: dict, n_s: int = 2, n_a: int = 1, initial: object = (1.0, 0.0)) -> str:
    """A registered environment whose unwrapped ``P`` is ``table``."""

    class _TableEnv(gym.Env):
        observation_space = gym.spaces.Discrete(n_s)
        action_space = gym.spaces.Discrete(n_a)

        def __init__(self) -> None:
            self.P = table
            self.initial_state_distrib = None if initial is None else np.asarray(initial)

    env_id = f"rlsec-test/Table{abs(hash(repr(table))) % 10**9}-{n_s}-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=_TableEnv, disable_env_checker=True)
    return env_id


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ([(1.0, -1, 0.0, False)], r"leads to state -1, expected an index in \[0, 2\)"),
        ([(1.0, 2, 0.0, False)], "leads to state 2"),
        ([(float("nan"), 1, 0.0, False)], "probability nan, expected one in"),
        ([(1.8, 1, 0.0, False)], "probability 1.8"),
        ([(0.9, 1, 0.0, False), (0.9, 0, 0.0, False)], r"sums to 1\.8"),
        ([(1.0, 1, float("inf"), False)], "reward inf, expected a finite"),
        ([(1.0, 1, 0.0, "yes")], "terminated='yes', expected a boolean"),
        ([(1.0, 1)], "is not a list of"),
        ([("1.0", 1, 0.0, False)], "expected a number"),
    ],
)
def test_a_malformed_table_entry_is_refused_not_wrapped_or_defaulted(
    entries: list, match: str
) -> None:
    env_id = _table_env({0: {0: entries}, 1: {0: [(1.0, 1, 0.0, False)]}})
    with pytest.raises(ConfigError, match=match):
        FiniteMDP.from_toy_text(env_id)


def test_a_missing_row_or_initial_distribution_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"P\[1\]\[0\] is not a list"):
        FiniteMDP.from_toy_text(_table_env({0: {0: [(1.0, 0, 0.0, False)]}}))
    ok = {0: {0: [(1.0, 1, 0.0, False)]}, 1: {0: [(1.0, 1, 0.0, False)]}}
    with pytest.raises(ConfigError, match="has no initial_state_distrib"):
        FiniteMDP.from_toy_text(_table_env(ok, initial=None))


def test_a_table_too_large_for_a_dense_model_is_refused_before_allocating() -> None:
    n = 5000  # 5000 * 4 * 5000 = 1e8 probabilities, 800 MB dense
    env_id = _table_env({}, n_s=n, n_a=4)
    with pytest.raises(ModelTooLarge, match=r"holds 100000000 transition probabilities"):
        FiniteMDP.from_toy_text(env_id)
