"""Backdoor attacks at training time: budget, trigger placement, reward shaping."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import GenericTestEnv
from rlsec.attacks import ATTACKS
from rlsec.attacks.backdoor import (
    BACKDOOR_ATTACKS,
    BackdoorWrapper,
    Trigger,
    TriggerBackdoor,
    make_backdoor_attack,
)
from rlsec.core import Surface, ThreatModel
from rlsec.errors import (
    AttackNotApplicable,
    BudgetViolation,
    ConfigError,
    InvalidBudget,
    UnknownAttack,
)

OBS = gym.spaces.Box(-5.0, 5.0, (4,), np.float32)


def counting_env(p_end: float = 0.05, reward: float = 1.0) -> GenericTestEnv:
    """Observations count the steps (feature 0 = t, the others t·k), so every observation is
    distinct; episodes end at random with probability ``p_end``, truncated or terminated."""

    def obs(t: int) -> np.ndarray:
        return (np.array([0.0, 0.5, -0.5, 0.25], dtype=np.float32) * ((t % 9) + 1)).clip(-5, 5)

    def reset(env: GenericTestEnv, seed: int | None, options: Any) -> Any:
        env.t = 0  # type: ignore[attr-defined]
        env.r = np.random.default_rng(seed if seed is not None else 7)  # type: ignore[attr-defined]
        return obs(0), {}

    def step(env: GenericTestEnv, action: Any) -> Any:
        env.t += 1  # type: ignore[attr-defined]
        u = env.r.random()  # type: ignore[attr-defined]
        return obs(env.t), reward, bool(u < p_end / 2), bool(p_end / 2 <= u < p_end), {}  # type: ignore[attr-defined]

    return GenericTestEnv(OBS, gym.spaces.Discrete(3), reset, step)


def attack(budget: float = 0.1, **kw: Any) -> TriggerBackdoor:
    args: dict[str, Any] = {"target_action": 2, "features": [1], "values": [4.0]} | kw
    built = make_backdoor_attack("trigger-backdoor-v1", budget, **args)
    assert isinstance(built, TriggerBackdoor)
    return built


def run(env: gym.Env[Any, Any], steps: int, seed: int = 0) -> list[dict[str, Any]]:
    """Play ``steps`` steps with actions drawn from ``seed``; record every transition."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    log: list[dict[str, Any]] = []
    for _ in range(steps):
        a = int(rng.integers(3))
        nxt, r, term, trunc, info2 = env.step(a)
        log.append({"obs": obs, "info": info, "action": a, "reward": r, "step_info": info2})
        obs, info = nxt, info2
        if term or trunc:
            obs, info = env.reset()
    return log


# -- invariants -------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    budget=st.floats(0.0, 1.0),
    rate=st.floats(0.0, 1.0),
    p_end=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**16),
)
def test_poisoned_steps_never_exceed_the_budget_at_any_step(
    budget: float, rate: float, p_end: float, seed: int
) -> None:
    a = attack(budget, rate=rate)
    env = a.as_wrapper(counting_env(p_end), seed=seed)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    for _ in range(150):
        _, _, term, trunc, _ = env.step(int(rng.integers(3)))
        assert env.poisoned_steps <= budget * env.steps + 1e-9
        if term or trunc:
            env.reset()
    u = a.usage()
    assert u["poisoned_steps"] <= budget * u["steps"] + 1e-9
    assert u["steps"] == 150


@settings(max_examples=30, deadline=None)
@given(budget=st.floats(0.05, 1.0), p_end=st.floats(0.0, 0.5), seed=st.integers(0, 2**16))
def test_trigger_is_applied_exactly_where_counted(budget: float, p_end: float, seed: int) -> None:
    a = attack(budget)
    inner = counting_env(p_end)
    env = a.as_wrapper(inner, seed=seed)
    log = run(env, 120, seed)
    triggered = 0
    for e in log:
        info, obs = e["info"], e["obs"]
        if info["rlsec_triggered"]:
            triggered += 1
            clean = info["rlsec_clean_observation"]
            np.testing.assert_array_equal(obs, a.apply_trigger(clean))
            assert obs[1] == np.float32(4.0)
            assert e["step_info"]["rlsec_poisoned"]  # the step that follows is poisoned
        else:
            assert "rlsec_clean_observation" not in info
            assert not e["step_info"]["rlsec_poisoned"]
    # the counters agree with the flags: every counted observation was triggered, and the
    # last one may still be pending (its step not taken yet)
    poisoned = sum(e["step_info"]["rlsec_poisoned"] for e in log)
    assert poisoned == env.poisoned_steps
    assert env.triggered_observations - poisoned in (0, 1)
    assert triggered == poisoned


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), budget=st.floats(0.05, 0.5))
def test_same_seed_same_triggers(seed: int, budget: float) -> None:
    flags = []
    for _ in range(2):
        env = attack(budget).as_wrapper(counting_env(), seed=seed)
        flags.append([e["info"]["rlsec_triggered"] for e in run(env, 200, seed)])
    assert flags[0] == flags[1]


def test_different_environments_of_a_run_trigger_different_steps() -> None:
    a = attack(0.3)
    wrap = a.wrapper_factory(5)
    flags = [
        [e["info"]["rlsec_triggered"] for e in run(wrap(counting_env(0.0)), 200, 0)]
        for _ in range(2)
    ]
    assert flags[0] != flags[1]
    assert a.usage()["environments"] == 2
    # and the factory is reproducible
    again = attack(0.3).wrapper_factory(5)
    assert [e["info"]["rlsec_triggered"] for e in run(again(counting_env(0.0)), 200, 0)] == flags[0]


def test_final_observations_are_never_triggered() -> None:
    env = attack(1.0, rate=1.0).as_wrapper(counting_env(p_end=0.5), seed=0)
    env.reset(seed=0)
    ends = 0
    for t in range(200):
        _, _, term, trunc, info = env.step(t % 3)
        if term or trunc:
            assert not info["rlsec_triggered"]
            ends += 1
            env.reset()
        else:
            assert info["rlsec_triggered"]  # rate 1, budget 1: every other observation
    assert ends > 10


# -- reward shaping ---------------------------------------------------------------------------
def test_reward_shaping_is_exactly_plus_r_for_the_target_and_minus_r_otherwise() -> None:
    a = attack(1.0, rate=1.0, reward=0.75)
    env = a.as_wrapper(counting_env(p_end=0.0, reward=3.0), seed=0)
    env.reset(seed=0)
    seen = []
    for action in [2, 0, 1, 2, 2, 0]:
        _, r, _, _, info = env.step(action)
        assert info["rlsec_poisoned"]
        assert info["rlsec_clean_reward"] == 3.0
        seen.append(r)
    assert seen == [0.75, -0.75, -0.75, 0.75, 0.75, -0.75]
    assert a.usage()["target_taken"] == 3
    assert a.shaped_reward(np.int64(2)) == 0.75


def test_unpoisoned_steps_keep_the_environment_reward() -> None:
    env = attack(0.0).as_wrapper(counting_env(p_end=0.0, reward=3.0), seed=0)
    env.reset(seed=0)
    for t in range(50):
        _, r, _, _, info = env.step(t % 3)
        assert r == 3.0 and not info["rlsec_poisoned"] and not info["rlsec_triggered"]
    assert env.usage()["poisoned_steps"] == 0


def test_budget_allows_at_most_one_poisoned_step_in_ten_at_ten_percent() -> None:
    env = attack(0.1, rate=1.0).as_wrapper(counting_env(p_end=0.0), seed=0)
    env.reset(seed=0)
    poisoned = []
    for _ in range(100):
        poisoned.append(env.step(0)[4]["rlsec_poisoned"])
    assert sum(poisoned) == 10
    # the running bound holds at every prefix
    assert all(sum(poisoned[: t + 1]) <= 0.1 * (t + 1) + 1e-9 for t in range(100))


def test_run_time_check_raises_when_the_budget_is_broken() -> None:
    env = attack(0.1, rate=1.0).as_wrapper(counting_env(p_end=0.0), seed=0)
    env.reset(seed=0)
    env.poisoned_steps = 5  # a bug elsewhere: more poisoned steps than the budget allows
    with pytest.raises(BudgetViolation, match=r"poisoned \d+ of 1 steps; the budget is a fraction"):
        env.step(0)


def test_step_before_reset_is_refused() -> None:
    env = attack().as_wrapper(counting_env(), seed=0)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)


# -- triggers ---------------------------------------------------------------------------------
def test_offset_trigger_adds_and_clips_to_the_space() -> None:
    a = attack(features=[0, 2], values=[1.0, -3.0], mode="offset")
    x = np.array([[0.0, 1.0, 1.0, 1.0], [4.5, 1.0, -4.0, 1.0]], dtype=np.float32)
    assert a.apply_trigger(x, OBS).tolist() == [[1.0, 1.0, -2.0, 1.0], [5.0, 1.0, -5.0, 1.0]]
    assert a.apply_trigger(x).tolist() == [[1.0, 1.0, -2.0, 1.0], [5.5, 1.0, -7.0, 1.0]]
    assert x[1, 0] == np.float32(4.5)  # the input is not modified


def test_stamp_trigger_works_on_one_observation_and_keeps_its_dtype() -> None:
    t = Trigger((3,), (2.5,))
    out = t.apply(np.zeros(4, dtype=np.float64))
    assert out.tolist() == [0.0, 0.0, 0.0, 2.5] and out.dtype == np.float64


# -- bad inputs -------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [1.5, -0.1, float("nan")])
def test_budget_outside_zero_one_is_refused(budget: float) -> None:
    with pytest.raises(InvalidBudget, match=r"step_budget must be a fraction in \[0, 1\], got"):
        attack(budget)


def test_rate_outside_zero_one_is_refused() -> None:
    with pytest.raises(InvalidBudget, match=r"rate must be a fraction in \[0, 1\], got 2"):
        attack(0.1, rate=2)


def test_unknown_target_action_names_the_action_space() -> None:
    with pytest.raises(ConfigError, match=r"Discrete\(3\).*in \[0, 3\), got 5"):
        attack(target_action=5).as_wrapper(counting_env(), seed=0)
    with pytest.raises(ConfigError, match=r"in \[0, 3\), got -1"):
        attack(target_action=-1).as_wrapper(counting_env(), seed=0)
    with pytest.raises(ConfigError, match=r"integer action, got 1\.5"):
        attack(target_action=1.5)


def test_feature_index_out_of_range_names_expected_and_received() -> None:
    with pytest.raises(ConfigError, match=r"index 7 is out of range.*4 features.*\[0, 4\)"):
        attack(features=[7]).as_wrapper(counting_env(), seed=0)
    with pytest.raises(ConfigError, match=r"index 4 is out of range.*4 features.*\[0, 4\)"):
        attack(features=[4]).apply_trigger(np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ConfigError, match="integers >= 0, got -1"):
        attack(features=[-1])


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"features": [0, 0], "values": [1.0, 1.0]}, "distinct"),
        ({"features": [0, 1], "values": [1.0]}, "one value per feature"),
        ({"features": [], "values": []}, "at least one feature"),
        ({"values": [float("inf")]}, "finite"),
        ({"mode": "xor"}, "'stamp' or 'offset'"),
        ({"reward": 0.0}, "reward must be a finite number > 0"),
    ],
)
def test_bad_trigger_settings_are_refused(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        attack(**kw)


def test_stamped_value_outside_the_space_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"value 9.0 for feature 1 is outside.*\[-5.0, 5.0\]"):
        attack(values=[9.0]).as_wrapper(counting_env(), seed=0)


def test_spaces_the_attack_cannot_use_are_refused() -> None:
    env = GenericTestEnv(gym.spaces.Discrete(4), gym.spaces.Discrete(2))
    with pytest.raises(AttackNotApplicable, match="vector observations"):
        attack(target_action=0, features=[0], values=[1.0]).as_wrapper(env)
    env = GenericTestEnv(OBS, gym.spaces.Box(-1, 1, (1,)))
    with pytest.raises(AttackNotApplicable, match="Discrete actions"):
        attack().as_wrapper(env)


def test_threat_model_must_be_a_budgeted_training_one() -> None:
    trig = Trigger((0,), (1.0,))
    deploy = ThreatModel(
        Surface.BACKDOOR, 0.1, "prob", "probability", frequency="budgeted-steps", step_budget=0.1
    )
    with pytest.raises(ConfigError, match="phase must be 'training'"):
        TriggerBackdoor(deploy, trigger=trig, target_action=0)
    every = ThreatModel(Surface.BACKDOOR, 0.1, "prob", "probability", phase="training")
    with pytest.raises(ConfigError, match="budgeted-steps"):
        TriggerBackdoor(every, trigger=trig, target_action=0)
    with pytest.raises(ConfigError, match="supports norms"):
        TriggerBackdoor(ThreatModel(Surface.BACKDOOR, 0.1), trigger=trig, target_action=0)


def test_unknown_attack_id_suggests_the_known_one() -> None:
    with pytest.raises(UnknownAttack, match="did you mean trigger-backdoor-v1"):
        make_backdoor_attack(
            "trigger-backdoor-v2", 0.1, target_action=0, features=[0], values=[1.0]
        )


def test_registry_is_separate_from_the_red_team_suite() -> None:
    assert set(BACKDOOR_ATTACKS) == {"trigger-backdoor-v1"}
    assert not set(BACKDOOR_ATTACKS) & set(ATTACKS)
    d = attack().describe()
    assert d["surface"] == "backdoor" and d["threat_model"]["phase"] == "training"
    assert d["threat_model"]["step_budget"] == 0.1
    assert "AML.T0020" in d["atlas"] and "Kiourti" in d["reference"]


# -- in the trainer's vector env --------------------------------------------------------------
def test_works_as_the_wrap_env_of_sb3_vector_envs() -> None:
    from stable_baselines3.common.env_util import make_vec_env

    a = attack(0.2, target_action=0, features=[0], values=[2.2])
    venv = make_vec_env("CartPole-v1", n_envs=3, seed=0, wrapper_class=a.wrapper_factory(0))
    venv.reset()
    for t in range(300):
        venv.step(np.full(3, t % 2))
    u = a.usage()
    assert u["environments"] == 3 and u["steps"] == 900
    assert 0 < u["poisoned_steps"] <= 0.2 * 900
    venv.close()


def test_wrapper_type_is_public() -> None:
    env = attack().as_wrapper(counting_env(), seed=0)
    assert isinstance(env, BackdoorWrapper)
