from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import rlsec.envs
from rlsec.envs import env_spec
from rlsec.envs.finite import FiniteMDP, greedy
from rlsec.envs.plant import (
    ACTION_NAMES,
    CELL_PIXELS,
    FEATURE_NAMES,
    MAPS,
    OBS_MODES,
    SlipperyPlantEnv,
    generate_plant,
)
from rlsec.errors import ConfigError

PLANT = "rlsec/SlipperyPlant-v0"
MOVES = [(0, -1), (1, 0), (0, 1), (-1, 0)]  # left, down, right, up


def make(**kwargs: object) -> SlipperyPlantEnv:
    env = gym.make(PLANT, **kwargs).unwrapped
    assert isinstance(env, SlipperyPlantEnv)
    return env


def reach_probability(mdp: FiniteMDP, policy: np.ndarray) -> np.ndarray:
    """Exact Pr(eventually reach ``goal``) from every state under a deterministic policy."""
    p = mdp.transitions[np.arange(mdp.n_states), policy]
    goal, terminal = mdp.labels["goal"], mdp.labels["terminal"]
    can = goal.copy()  # states from which the goal has positive probability
    while True:
        grown = can | ((p[:, can].sum(axis=1) > 0) & ~terminal)
        if np.array_equal(grown, can):
            break
        can = grown
    x = goal.astype(float)
    idx = np.flatnonzero(can & ~goal)
    a = np.eye(len(idx)) - p[np.ix_(idx, idx)]
    x[idx] = np.linalg.solve(a, p[np.ix_(idx, np.flatnonzero(goal))].sum(axis=1))
    return x


def neighbour(desc: tuple[str, ...], r: int, c: int, a: int) -> tuple[int, int]:
    """Where moving in direction ``a`` from (r, c) leads, written from the map alone."""
    r2, c2 = r + MOVES[a][0], c + MOVES[a][1]
    if 0 <= r2 < len(desc) and 0 <= c2 < len(desc[0]) and desc[r2][c2] != "#":
        return r2, c2
    return r, c


# -- registration ----------------------------------------------------------------------------
def test_registered_on_import_idempotently() -> None:
    for env_id in ("rlsec/SlipperyPlant-v0", "rlsec/SlipperyPlant32x32-v0"):
        assert env_spec(env_id).id == env_id
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Gymnasium warns when an id is registered twice
        rlsec.envs._register()
    assert gym.make(f"rlsec.envs:{PLANT}").unwrapped.grid_shape == (8, 8)
    assert make(size=32).desc == gym.make("rlsec/SlipperyPlant32x32-v0").unwrapped.desc


@pytest.mark.parametrize(
    "kwargs",
    [
        {"obs_mode": "features"},
        {"obs_mode": "onehot"},
        {"obs_mode": "index"},
        {"size": 12, "map_seed": 3, "slip": 0.5},
        {"render_mode": "rgb_array"},
    ],
)
def test_passes_gymnasium_env_checker(kwargs: dict) -> None:
    env = gym.make(PLANT, **{"render_mode": "ansi", **kwargs})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


# -- the model against the environment --------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs", [{}, {"map_name": "4x4", "slip": 0.6, "step_cost": 0.1, "hazard_penalty": 5.0}]
)
def test_sampled_transitions_match_the_model(kwargs: dict) -> None:
    env = make(obs_mode="index", **kwargs)
    mdp = env.finite_mdp(discount=0.9)
    env.reset(seed=7)
    for s in range(mdp.n_states):
        n = 2000 if mdp.labels["slippery"][s] else 10
        for a in range(mdp.n_actions):
            nxt, rew, term = np.empty(n, dtype=np.int64), np.empty(n), np.empty(n, dtype=bool)
            for i in range(n):
                env.reset(options={"state": s})
                nxt[i], rew[i], term[i], trunc, _ = env.step(a)
                assert not trunc
            counts = np.bincount(nxt, minlength=mdp.n_states)
            p = mdp.transitions[s, a]
            assert set(np.flatnonzero(counts)) <= set(np.flatnonzero(p > 0)), (s, a)
            # 5 standard deviations of a frequency out of n draws
            assert np.all(np.abs(counts / n - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12), (s, a)
            np.testing.assert_array_equal(term, mdp.labels["terminal"][nxt])
            # the reward is a function of the successor, so its mean matches R[s, a] as the
            # frequencies match P[s, a]
            per_next = {int(t): float(rew[nxt == t][0]) for t in np.unique(nxt)}
            for t, r in per_next.items():
                assert np.all(rew[nxt == t] == r)
            assert math.isclose(sum(p[t] * r for t, r in per_next.items()), mdp.rewards[s, a])


def test_terminal_states_are_absorbing_in_env_and_model() -> None:
    env = make(obs_mode="index")
    mdp = env.finite_mdp()
    terminal = np.flatnonzero(mdp.labels["terminal"])
    assert set(terminal) == set(np.flatnonzero(mdp.labels["goal"] | mdp.labels["unsafe"]))
    for t in terminal:
        assert np.all(mdp.transitions[t, :, t] == 1.0) and np.all(mdp.rewards[t] == 0.0)
        env.reset(seed=0, options={"state": int(t)})
        for a in range(4):
            assert env.step(a)[:3] == (t, 0.0, True)


def test_dry_moves_and_labels_follow_the_map() -> None:
    env = make()
    mdp = env.finite_mdp()
    desc, cells = env.desc, env.state_cells()
    assert desc == MAPS["8x8"] and env.grid_shape == (8, 8)
    assert env.n_states == mdp.n_states == 64 - "".join(desc).count("#")
    tiles = np.array([desc[r][c] for r, c in cells])
    assert [tuple(x) for x in cells] == sorted(tuple(x) for x in cells)  # row-major
    for label, want in {
        "init": tiles == "S",
        "goal": tiles == "G",
        "furnace": tiles == "F",
        "spill": tiles == "C",
        "unsafe": np.isin(tiles, ["F", "C"]),
        "slippery": tiles == "~",
        "terminal": np.isin(tiles, ["G", "F", "C"]),
    }.items():
        np.testing.assert_array_equal(mdp.labels[label], want, err_msg=label)
    assert mdp.initial[tiles == "S"].sum() == 1.0
    assert mdp.action_names == ACTION_NAMES
    assert mdp.state_names is not None and mdp.state_names[0] == "S(0,0)"
    where = {(int(r), int(c)): s for s, (r, c) in enumerate(cells)}
    for s, (r, c) in enumerate(cells):
        if tiles[s] in ".S":
            for a in range(4):
                assert mdp.transitions[s, a, where[neighbour(desc, r, c, a)]] == 1.0


def test_slip_zero_is_deterministic_and_slip_one_always_slides() -> None:
    env = make(slip=0.0)
    mdp = env.finite_mdp()
    desc, cells = env.desc, env.state_cells()
    where = {(int(r), int(c)): s for s, (r, c) in enumerate(cells)}
    live = np.flatnonzero(~mdp.labels["terminal"])
    for s in live:
        for a in range(4):
            assert mdp.transitions[s, a, where[neighbour(desc, *cells[s], a)]] == 1.0
    mdp = make(slip=1.0).finite_mdp()
    for s in np.flatnonzero(mdp.labels["slippery"]):
        for a in range(4):
            sides = np.zeros(mdp.n_states)
            for turn in (-1, 1):
                sides[where[neighbour(desc, *cells[s], (a + turn) % 4)]] += 0.5
            np.testing.assert_array_equal(mdp.transitions[s, a], sides)


# -- observations -----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", OBS_MODES)
def test_state_observations_are_what_the_env_emits(mode: str) -> None:
    env = make(obs_mode=mode, slip=0.4)
    table = env.state_observations()
    space = env.observation_space
    n = env.n_states
    if mode == "index":
        assert table.shape == (n,) and table.dtype == np.int64
    else:
        assert table.shape == (n, *space.shape) and table.dtype == space.dtype
        assert len(np.unique(table, axis=0)) == n  # every state looks different
    for s in range(n):
        obs, info = env.reset(options={"state": s})
        assert info["state"] == s and space.contains(obs)
        np.testing.assert_array_equal(obs, table[s])
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=1)
    for _ in range(300):
        obs, _, term, trunc, info = env.step(int(rng.integers(4)))
        np.testing.assert_array_equal(obs, table[info["state"]])
        if term or trunc:
            obs, info = env.reset()
            np.testing.assert_array_equal(obs, table[info["state"]])
    table[0] = table[1]  # a copy: the env's table is untouched
    assert not np.array_equal(env.state_observations()[0], table[0])


def test_features_describe_the_cell() -> None:
    env = make()
    x, cells, desc = env.state_observations(), env.state_cells(), env.desc
    assert x.shape == (env.n_states, len(FEATURE_NAMES))
    np.testing.assert_allclose(x[:, :2], cells / 7)
    goal = np.argwhere(np.array([list(r) for r in desc]) == "G")[0]
    np.testing.assert_allclose(x[:, 2:4], (goal - cells) / 7, atol=1e-6)
    for s, (r, c) in enumerate(cells):
        assert x[s, 4] == (desc[r][c] == "~")
        for a in range(4):
            r2, c2 = neighbour(desc, r, c, a)
            blocked = (r2, c2) == (r, c)
            assert x[s, 9 + a] == blocked
            assert x[s, 5 + a] == (not blocked and desc[r2][c2] in "FC")


# -- episodes ---------------------------------------------------------------------------------
def test_same_seed_same_episode() -> None:
    def episode(seed: int) -> list[tuple]:
        env = gym.make(PLANT, obs_mode="index", slip=0.5)
        rng = np.random.default_rng(3)
        obs, _ = env.reset(seed=seed)
        out = []
        for _ in range(200):
            obs, r, term, trunc, info = env.step(int(rng.integers(4)))
            out.append((obs, r, term, trunc, info["slipped"]))
            if term or trunc:
                obs, _ = env.reset()
        return out

    assert episode(11) == episode(11)
    assert episode(11) != episode(12)


def test_rewards_termination_and_truncation() -> None:
    env = gym.make(PLANT, obs_mode="index", max_steps=3, step_cost=0.5)
    env.reset(seed=0)
    for i in range(3):  # up, against the edge of the map
        obs, r, term, trunc, _ = env.step(3)
        assert (obs, r, term, trunc) == (0, -0.5, False, i == 2)
    env = gym.make(PLANT, obs_mode="index", hazard_penalty=2.0)
    u = env.unwrapped
    cells = {tuple(c): s for s, c in enumerate(u.state_cells().tolist())}
    env.reset(seed=0, options={"state": cells[(6, 2)]})
    assert env.step(0)[1:4] == (-2.0, True, False)  # left, into the furnace at (6, 1)
    env.reset(seed=0, options={"state": cells[(6, 7)]})
    assert env.step(1)[1:4] == (1.0, True, False)  # down, to the valve


def test_render_ansi_draws_the_robot() -> None:
    env = gym.make(PLANT, render_mode="ansi")
    env.reset(seed=0)
    env.step(1)
    text = env.render()
    assert isinstance(text, str)
    lines = text.splitlines()
    assert lines[0] == "step 1 (down)" and lines[2].startswith("@") and len(lines) == 9


def test_render_rgb_array_draws_the_floor() -> None:
    env = gym.make(PLANT, render_mode="rgb_array")
    env.reset(seed=0)
    img = env.render()
    assert isinstance(img, np.ndarray)
    assert img.shape == (8 * CELL_PIXELS, 8 * CELL_PIXELS, 3) and img.dtype == np.uint8
    robot = img[:CELL_PIXELS, :CELL_PIXELS]
    assert robot.min() == 30  # the robot on the dock


# -- sanity of the task -----------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{}, {"size": 16, "map_seed": 5}])
def test_optimal_policy_reaches_the_goal(kwargs: dict) -> None:
    env = make(**kwargs)
    mdp = env.finite_mdp(discount=0.99)
    _, q = mdp.value_iteration()
    start = mdp.initial @ reach_probability(mdp, greedy(q))
    assert start > 0.95


def test_generated_layouts_are_deterministic_and_passable() -> None:
    a = generate_plant(16, seed=4)
    assert a == generate_plant(16, seed=4) != generate_plant(16, seed=5)
    assert a[0][0] == "S" and a[-1][-1] == "G" and all(len(row) == 16 for row in a)
    assert set("".join(a)) <= set("SG.~#FC") and "F" in "".join(a) and "~" in "".join(a)
    env = make(size=32)
    assert env.grid_shape == (32, 32) and env.n_states > 700
    mdp = env.finite_mdp()
    assert mdp.reachable()[mdp.labels["goal"]].all()


# -- bad configuration ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"map_name": "warehouse"}, "unknown map_name 'warehouse'; expected one of ['4x4', '8x8']"),
        ({"slip": 1.5}, "slip must be a probability in [0, 1], got 1.5"),
        ({"slip": -0.1}, "slip must be a probability in [0, 1], got -0.1"),
        ({"slip": float("nan")}, "slip must be a probability in [0, 1], got nan"),
        ({"slip": "0.2"}, "slip must be a probability in [0, 1], got '0.2'"),
        ({"obs_mode": "pixels"}, "obs_mode must be one of ['features', 'onehot', 'index']"),
        ({"map_name": "4x4", "size": 8}, "give at most one of map_name, desc and size"),
        ({"size": 3}, "size must be an integer >= 4, got 3"),
        ({"size": 0}, "size must be an integer >= 4, got 0"),
        ({"desc": ["S.X", "..G"]}, "unknown tiles ['X']"),
        ({"desc": ["S..", ".G"]}, "equal length"),
        ({"desc": ["S..", "..."]}, "at least one 'G'"),
        ({"step_cost": -1.0}, "step_cost must be a finite number >= 0, got -1.0"),
        ({"max_steps": 0}, "max_steps must be a positive integer, got 0"),
        ({"render_mode": "human"}, "render_mode must be None or one of ['ansi', 'rgb_array']"),
    ],
)
def test_bad_kwargs_say_what_was_expected(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        SlipperyPlantEnv(**kwargs)
    assert message in str(info.value)


def test_bad_kwargs_fail_through_gym_make() -> None:
    with pytest.raises(ConfigError, match=r"slip must be a probability in \[0, 1\], got 2"):
        gym.make(PLANT, slip=2)


def test_bad_reset_state() -> None:
    env = make()
    with pytest.raises(ConfigError, match=r"must be in \[0, 54\), got 54"):
        env.reset(options={"state": 54})


def test_zoo_policy_fits_the_env_and_mostly_reaches_the_goal() -> None:
    """zoo:plant-ppo is trained on this env: a change of the env's spaces, layout or features
    that would make it stale fails here (retrain with scripts/train_zoo.py --only plant-ppo)."""
    from rlsec.envs import check_policy_env
    from rlsec.policies import load_policy

    policy = load_policy("zoo:plant-ppo")
    check_policy_env(policy, PLANT)
    env = make()
    mdp = env.finite_mdp()
    actions = np.asarray(policy.act(env.state_observations()), dtype=np.int64)
    reach = float(mdp.initial @ reach_probability(mdp, actions))
    assert 0.85 < reach < 0.99  # good, not optimal: it sometimes slides into the spill
