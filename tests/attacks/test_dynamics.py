from __future__ import annotations

import dataclasses
import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

from rlsec.attacks import ATTACKS
from rlsec.attacks.dynamics import (
    DYNAMICS_ATTACKS,
    DisturbanceDynamics,
    NoiseDynamics,
    ParameterShiftWrapper,
    ShiftDynamics,
    make_dynamics_attack,
)
from rlsec.attacks.physics import ENV_DYNAMICS, DisturbanceWrapper, env_dynamics
from rlsec.core import Surface, ThreatModel
from rlsec.errors import BudgetViolation, ConfigError, InvalidBudget, UnknownAttack
from rlsec.policies import TorchPolicy, from_torch

ENV_IDS = sorted(ENV_DYNAMICS)


def constant_adversary(env_id: str, value: float) -> TorchPolicy:
    """An adversary that always answers ``value`` (clipped to [-1, 1] when acting)."""
    space = gym.make(env_id).observation_space
    lin = torch.nn.Linear(int(np.prod(space.shape)), 1)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.fill_(value)
    return from_torch(lin, space, gym.spaces.Box(-1, 1, (1,)), output="action")


def state(env: gym.Env[Any, Any]) -> np.ndarray:
    return np.array(env.unwrapped.state, dtype=np.float64)


# -- shifts ------------------------------------------------------------------------------------
@st.composite
def shift_cases(draw: st.DrawFn) -> tuple[str, dict[str, str], float, int, int]:
    env_id = draw(st.sampled_from(ENV_IDS))
    names = [p.name for p in ENV_DYNAMICS[env_id].parameters]
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    ways = {n: draw(st.sampled_from(["up", "down", "uniform"])) for n in chosen}
    eps = draw(st.floats(0.0, 0.95))
    return env_id, ways, eps, draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1))


def shifted(env_id: str, ways: dict[str, str], eps: float, seed: int, reset_seed: int) -> Any:
    attack = make_dynamics_attack("shift-dynamics-v1", eps, parameters=ways)
    env = attack.as_wrapper(gym.make(env_id), seed=seed)
    _, info = env.reset(seed=reset_seed)
    return env, info["rlsec_dynamics"]


@settings(max_examples=60, deadline=None)
@given(shift_cases())
def test_shifts_stay_within_eps_recompute_derived_and_record_what_the_env_holds(
    case: tuple[str, dict[str, str], float, int, int],
) -> None:
    env_id, ways, eps, seed, reset_seed = case
    env, record = shifted(env_id, ways, eps, seed, reset_seed)
    core, clean = env.unwrapped, gym.make(env_id).unwrapped
    dyn = ENV_DYNAMICS[env_id]
    assert set(record["parameters"]) == set(ways)
    for p in dyn.parameters:
        nominal = float(getattr(clean, p.attribute))
        value = float(getattr(core, p.attribute))
        if p.name not in ways:
            assert value == nominal  # untouched
            continue
        r = record["parameters"][p.name]
        assert r["value"] == value  # the record is what the env holds
        assert r["nominal"] == nominal
        # nominal·(1 + r) rounds: allow a few ulps of the nominal value on top of ε
        assert abs(value - nominal) <= eps * abs(nominal) * (1 + 1e-12) + 4 * np.spacing(nominal)
        if ways[p.name] == "up":
            assert r["relative"] == eps
        elif ways[p.name] == "down":
            assert r["relative"] == -eps
    for attr, value in record["derived"].items():
        assert getattr(core, attr) == value
    if env_id == "CartPole-v1":
        assert core.total_mass == core.masspole + core.masscart
        assert core.polemass_length == core.masspole * core.length
    if env_id == "Acrobot-v1":
        for i in (1, 2):
            ratio = getattr(clean, f"LINK_COM_POS_{i}") / getattr(clean, f"LINK_LENGTH_{i}")
            assert math.isclose(
                getattr(core, f"LINK_COM_POS_{i}"), ratio * getattr(core, f"LINK_LENGTH_{i}")
            )
        assert type(core).LINK_LENGTH_1 == 1.0  # the class is never touched
    # deterministic per seed
    _, again = shifted(env_id, ways, eps, seed, reset_seed)
    assert again == record


def test_uniform_shifts_differ_per_episode_and_per_reset_seed() -> None:
    attack = make_dynamics_attack("shift-dynamics-v1", 0.3, parameters=["masspole"])
    env = attack.as_wrapper(gym.make("CartPole-v1"), seed=7)
    values = [
        env.reset(seed=s)[1]["rlsec_dynamics"]["parameters"]["masspole"]["value"] for s in (0, 1)
    ]
    values += [env.reset()[1]["rlsec_dynamics"]["parameters"]["masspole"]["value"]]
    assert len(set(values)) == 3
    assert attack.usage()["episodes"] == 3


def test_shifting_force_mag_is_the_env_with_force_mag_set_by_hand() -> None:
    attack = make_dynamics_attack(
        "shift-dynamics-v1", 0.2, parameters={"force_mag": "up", "masspole": "down"}
    )
    env = attack.as_wrapper(gym.make("CartPole-v1"), seed=0)
    ref = gym.make("CartPole-v1")
    ref.unwrapped.force_mag = 12.0
    ref.unwrapped.masspole = 0.08
    ref.unwrapped.total_mass = 1.08
    ref.unwrapped.polemass_length = 0.04
    env.reset(seed=3)
    ref.reset(seed=3)
    assert math.isclose(env.unwrapped.force_mag, 12.0)
    assert math.isclose(env.unwrapped.polemass_length, 0.04)
    for a in [1, 1, 0, 1, 0, 0, 0, 1]:
        o1, *_ = env.step(a)
        o2, *_ = ref.step(a)
        assert np.allclose(state(env), state(ref), rtol=1e-12, atol=1e-15)
        assert np.allclose(o1, o2)


def test_a_shift_that_leaves_its_budget_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    attack = make_dynamics_attack("shift-dynamics-v1", 0.1, parameters=["length"])
    assert isinstance(attack, ShiftDynamics)
    env = attack.as_wrapper(gym.make("CartPole-v1"), seed=0)
    monkeypatch.setattr(attack, "relative_shifts", lambda ways, rng: np.array([0.2]))
    with pytest.raises(BudgetViolation, match="length"):
        env.reset(seed=0)


# -- errors ------------------------------------------------------------------------------------
def test_an_unknown_parameter_is_refused_with_the_closest_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown dynamics parameter 'mass_pole'.*masspole"):
        make_dynamics_attack("shift-dynamics-v1", 0.1, parameters=["mass_pole"])


def test_an_env_without_the_parameter_names_the_env_the_parameter_and_what_it_has() -> None:
    attack = make_dynamics_attack("shift-dynamics-v1", 0.1, parameters=["masscart"])
    with pytest.raises(ConfigError) as err:
        attack.as_wrapper(gym.make("Pendulum-v1"))
    msg = str(err.value)
    assert "Pendulum-v1" in msg
    assert "'masscart'" in msg
    assert "gravity (g), mass (m), length (l)" in msg
    with pytest.raises(ConfigError, match="Pendulum-v1 has no dynamics parameter"):
        attack.check_env("Pendulum-v1")


def test_an_env_rlsec_knows_nothing_of_is_refused() -> None:
    for attack in (
        make_dynamics_attack("shift-dynamics-v1", 0.1),
        make_dynamics_attack("noise-dynamics-v1", 0.1),
    ):
        with pytest.raises(ConfigError, match="no dynamics of FrozenLake-v1; it knows CartPole"):
            attack.as_wrapper(gym.make("FrozenLake-v1"))


def test_attribute_names_and_other_registered_versions_are_accepted() -> None:
    attack = make_dynamics_attack("shift-dynamics-v1", 0.5, parameters={"g": "up"})
    env = attack.as_wrapper(gym.make("Pendulum-v1"), seed=0)
    env.reset(seed=0)
    assert env.unwrapped.g == 15.0
    assert env_dynamics("CartPole-v0") is ENV_DYNAMICS["CartPole-v1"]


def test_budgets_units_and_ids_are_checked() -> None:
    with pytest.raises(InvalidBudget, match="ε must be < 1"):
        make_dynamics_attack("shift-dynamics-v1", 1.0, direction="down")
    make_dynamics_attack("shift-dynamics-v1", 1.5, direction="up")  # only up: fine
    with pytest.raises(ConfigError, match="unit"):
        ShiftDynamics(ThreatModel(Surface.DYNAMICS, 0.1, unit="std"))
    with pytest.raises(ConfigError, match="direction"):
        make_dynamics_attack("shift-dynamics-v1", 0.1, direction="sideways")
    with pytest.raises(ConfigError, match="dynamics surface"):
        ShiftDynamics(ThreatModel(Surface.OBSERVATION, 0.1))
    with pytest.raises(UnknownAttack, match="did you mean shift-dynamics-v1"):
        make_dynamics_attack("shift-dynamic-v1", 0.1)


def test_dynamics_attacks_stay_out_of_the_inference_time_suite() -> None:
    assert set(DYNAMICS_ATTACKS) == {"shift-dynamics-v1", "noise-dynamics-v1", "rarl-dynamics-v1"}
    assert not set(DYNAMICS_ATTACKS) & set(ATTACKS)
    for cls in DYNAMICS_ATTACKS.values():
        assert cls.surface is Surface.DYNAMICS
        assert "AML.T0041" in cls.atlas


def test_wrapper_stacks_that_would_silently_override_are_refused() -> None:
    shift = make_dynamics_attack("shift-dynamics-v1", 0.1, parameters=["length"])
    inner = shift.as_wrapper(gym.make("CartPole-v1"))
    with pytest.raises(ConfigError, match="already changes"):
        shift.as_wrapper(inner)
    other = make_dynamics_attack("shift-dynamics-v1", 0.1, parameters=["gravity"])
    assert isinstance(other.as_wrapper(inner), ParameterShiftWrapper)  # disjoint: fine
    noise = make_dynamics_attack("noise-dynamics-v1", 0.1)
    with pytest.raises(ConfigError, match="disturbance wrapper"):
        noise.as_wrapper(noise.as_wrapper(gym.make("CartPole-v1")))
    rescaled = gym.wrappers.RescaleAction(gym.make("Pendulum-v1"), np.float32(-1), np.float32(1))
    with pytest.raises(ConfigError, match="RescaleAction"):
        noise.as_wrapper(rescaled)


# -- disturbances ------------------------------------------------------------------------------
def restored(env_id: str, core: Any, clean: Any) -> bool:
    if env_id == "CartPole-v1":
        return bool(core.force_mag == clean.force_mag)
    if env_id == "Pendulum-v1":
        return bool(core.max_torque == clean.max_torque)
    if env_id == "Acrobot-v1":
        return "AVAIL_TORQUE" not in vars(core)
    return True


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(ENV_IDS),
    st.floats(0.0, 2.0),
    st.one_of(st.floats(-5.0, 5.0), st.none()),
    st.integers(0, 2**31 - 1),
)
def test_disturbances_never_exceed_eps_times_the_actuation(
    env_id: str, eps: float, value: float | None, seed: int
) -> None:
    base = gym.make(env_id)
    if value is None:
        attack: Any = make_dynamics_attack("noise-dynamics-v1", eps)
        env = attack.as_wrapper(base, seed=seed)
    else:
        attack = make_dynamics_attack(
            "rarl-dynamics-v1", eps, adversary=constant_adversary(env_id, value)
        )
        env = attack.as_wrapper(base, seed=seed)
    dyn, clean = ENV_DYNAMICS[env_id], gym.make(env_id).unwrapped
    env.reset(seed=seed)
    env.action_space.seed(seed)
    for _ in range(8):
        _, _, term, trunc, info = env.step(env.action_space.sample())
        bound = eps * dyn.actuation(clean)
        assert info["rlsec_disturbance_bound"] == bound
        # the module's own slack: float32 actions round the torque they carry
        slack = 1e-6 * max(bound, dyn.actuation(clean))
        assert abs(info["rlsec_disturbance"]) <= (bound + slack) * (1 + 1e-9)
        if value is not None:
            want = float(np.clip(value, -1, 1)) * bound
            assert math.isclose(info["rlsec_disturbance"], want, rel_tol=1e-6, abs_tol=1e-6)
        assert restored(env_id, env.unwrapped, clean)
        if term or trunc:
            env.reset()
    assert attack.usage()["max_budget_fraction"] <= 1.0


@pytest.mark.parametrize("value", [0.5, -1.0])
def test_cartpole_disturbance_is_the_env_with_force_mag_set_by_hand(value: float) -> None:
    eps = 0.4
    attack = make_dynamics_attack(
        "rarl-dynamics-v1", eps, adversary=constant_adversary("CartPole-v1", value)
    )
    env = attack.as_wrapper(gym.make("CartPole-v1"))
    ref = gym.make("CartPole-v1")
    env.reset(seed=5)
    ref.reset(seed=5)
    d = value * eps * 10.0  # an extra horizontal force of d newtons on the cart
    for a in [1, 0, 0, 1, 1, 0, 1, 1]:
        ref.unwrapped.force_mag = 10.0 + d if a == 1 else 10.0 - d  # force = ±10 + d
        o1, r1, *_ = env.step(a)
        o2, r2, *_ = ref.step(a)
        assert np.array_equal(state(env), state(ref))
        assert np.array_equal(o1, o2)
        assert r1 == r2
    assert env.unwrapped.force_mag == 10.0


def test_cartpole_disturbance_lies_between_the_extreme_pushes() -> None:
    # An independent check of the bound: the cart's acceleration grows with the force, so a
    # disturbed step must land between the steps with forces s·F - ε·F and s·F + ε·F.
    eps, rng = 0.3, np.random.default_rng(0)
    attack = make_dynamics_attack("noise-dynamics-v1", eps)
    env = attack.as_wrapper(gym.make("CartPole-v1"), seed=1)
    env.reset(seed=1)
    for _ in range(20):
        a = int(rng.integers(2))
        s0 = state(env)
        ends = []
        for extra in (-eps * 10.0, eps * 10.0):
            ref = gym.make("CartPole-v1")
            ref.reset()
            ref.unwrapped.state = s0.copy()
            ref.unwrapped.force_mag = 10.0 + (extra if a == 1 else -extra)
            ref.step(a)
            ends.append(state(ref)[1])
        _, _, term, _, _ = env.step(a)
        assert min(ends) - 1e-12 <= state(env)[1] <= max(ends) + 1e-12
        if term:
            env.reset()


def test_pendulum_disturbance_adds_torque_and_charges_the_agent_only_its_own() -> None:
    eps, u = 0.25, np.array([1.8], dtype=np.float32)
    attack = make_dynamics_attack(
        "rarl-dynamics-v1", eps, adversary=constant_adversary("Pendulum-v1", 1.0)
    )
    env = attack.as_wrapper(gym.make("Pendulum-v1"))
    env.reset(seed=2)
    s0 = state(env)
    by_hand, clean = gym.make("Pendulum-v1"), gym.make("Pendulum-v1")
    for e in (by_hand, clean):
        e.reset(seed=2)
        e.unwrapped.state = s0.copy()
    by_hand.unwrapped.max_torque = 3.0
    _, r, *_ = env.step(u)
    by_hand.step(np.array([u[0] + 0.5], dtype=np.float32))  # 0.25 · max_torque more torque
    _, r_clean, *_ = clean.step(u)
    assert np.array_equal(state(env), state(by_hand))
    assert not np.array_equal(state(env), state(clean))
    assert math.isclose(r, r_clean, rel_tol=1e-7)  # the cost is on the agent's torque
    assert env.unwrapped.max_torque == 2.0


def test_acrobot_and_mountain_car_disturbances_enter_their_physics() -> None:
    attack = make_dynamics_attack(
        "rarl-dynamics-v1", 0.5, adversary=constant_adversary("Acrobot-v1", -1.0)
    )
    env = attack.as_wrapper(gym.make("Acrobot-v1"))
    ref = gym.make("Acrobot-v1")
    env.reset(seed=4)
    ref.reset(seed=4)
    ref.unwrapped.AVAIL_TORQUE = [-1.5, -0.5, 0.5]
    for a in [2, 0, 1, 2]:
        env.step(a)
        ref.step(a)
        assert np.array_equal(state(env), state(ref))

    attack = make_dynamics_attack(
        "rarl-dynamics-v1", 0.5, adversary=constant_adversary("MountainCar-v0", 1.0)
    )
    env = attack.as_wrapper(gym.make("MountainCar-v0"))
    env.reset(seed=0)
    for a in [0, 1, 2]:
        p, v = state(env)
        env.step(a)
        v1 = np.clip(v + 0.0005 + (a - 1) * 0.001 - math.cos(3 * p) * 0.0025, -0.07, 0.07)
        assert np.allclose(state(env), [p + v1, v1], rtol=0, atol=1e-15)


def test_a_disturbance_that_leaves_its_budget_is_stopped() -> None:
    attack = make_dynamics_attack("noise-dynamics-v1", 0.1)
    full_push = DisturbanceWrapper(
        gym.make("CartPole-v1"), 0.1, lambda obs, rng: np.ones(1), attack=attack
    )
    cartpole = ENV_DYNAMICS["CartPole-v1"]

    def twice(env: Any, core: Any, action: Any, d: float) -> Any:
        return cartpole._disturb(env, core, action, 2 * d)[0], 2 * d

    full_push.dynamics = dataclasses.replace(cartpole, _disturb=twice)
    full_push.reset(seed=0)
    with pytest.raises(BudgetViolation, match="disturbance"):
        full_push.step(0)


# -- the wrappers keep Gymnasium's contract ----------------------------------------------------
@pytest.mark.filterwarnings("ignore::UserWarning")  # check_env's advice on wrapped envs
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_wrappers_keep_the_step_signature(env_id: str) -> None:
    for attack_id in ("shift-dynamics-v1", "noise-dynamics-v1"):
        attack = make_dynamics_attack(attack_id, 0.3)
        env = attack.as_wrapper(gym.make(env_id), seed=0)
        with pytest.raises(gym.error.ResetNeeded):
            env.step(env.action_space.sample())
        check_env(env, skip_render_check=True, skip_close_check=True)
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
        assert isinstance(float(reward), float)
        assert isinstance(terminated, bool)
        assert isinstance(truncated, bool)
        assert isinstance(info, dict)


def test_wrappers_run_in_a_sync_vector_env() -> None:
    attack = make_dynamics_attack("shift-dynamics-v1", 0.3, parameters=["length"])
    venv = gym.make_vec(
        "CartPole-v1",
        num_envs=3,
        vectorization_mode="sync",
        wrappers=[lambda e: attack.as_wrapper(e, seed=0)],
    )
    _, info = venv.reset(seed=0)
    lengths = info["rlsec_dynamics"]["parameters"]["length"]["value"]
    assert len(set(lengths.tolist())) == 3  # each copy drew its own shift
    obs, reward, term, trunc, _ = venv.step(np.zeros(3, dtype=np.int64))
    assert obs.shape == (3, 4)
    assert reward.shape == term.shape == trunc.shape == (3,)
    venv.close()


def test_a_shift_wraps_every_training_env(tmp_path: Any) -> None:
    from rlsec.defenses.training import TrainConfig, train_policy

    attack = make_dynamics_attack(
        "shift-dynamics-v1", 0.2, parameters=["masspole"], phase="training"
    )
    cfg = TrainConfig("ppo", "CartPole-v1", steps=256, eval_episodes=1)
    train_policy(
        cfg, tmp_path / "run", wrap_env=lambda e: attack.as_wrapper(e, seed=0), monitor="off"
    )
    assert attack.usage()["episodes"] >= 8  # every one of the 8 training envs was shifted
    assert (tmp_path / "run" / "policy" / "spec.json").is_file()


# -- a given RARL adversary -------------------------------------------------------------------
def test_a_given_adversary_must_fit_the_env() -> None:
    attack = make_dynamics_attack("rarl-dynamics-v1", 0.2)
    assert isinstance(attack, DisturbanceDynamics)
    with pytest.raises(ConfigError, match="observes shape"):
        attack.as_wrapper(gym.make("CartPole-v1"), adversary=constant_adversary("Pendulum-v1", 1))
    wide = from_torch(
        torch.nn.Linear(4, 2),
        gym.make("CartPole-v1").observation_space,
        gym.spaces.Box(-1, 1, (2,)),
        output="action",
    )
    with pytest.raises(ConfigError, match=r"Box\(-1, 1, \(1,\)\)"):
        attack.as_wrapper(gym.make("CartPole-v1"), adversary=wide)


def test_noise_is_a_dynamics_attack() -> None:
    assert issubclass(NoiseDynamics, DYNAMICS_ATTACKS["noise-dynamics-v1"])
