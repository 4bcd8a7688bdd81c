"""RARL's disturbance adversary: its MDP, its training and cache, and live-view alternation."""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from rlsec._home import home
from rlsec.attacks.dynamics import DisturbanceDynamics, make_dynamics_attack
from rlsec.attacks.rarl import (
    DisturbanceAdversaryEnv,
    RARLConfig,
    _adversary_key,
    disturbance_learner,
)
from rlsec.errors import ConfigError
from rlsec.policies import TorchPolicy, load_policy

TINY = RARLConfig(timesteps=128, n_envs=2, n_steps=64, batch_size=64, n_epochs=1)


@pytest.fixture(scope="module")
def victim() -> TorchPolicy:
    return load_policy("zoo:cartpole-ppo")


def test_the_adversary_env_pays_the_negative_of_the_victims_reward(victim: TorchPolicy) -> None:
    env = DisturbanceAdversaryEnv("CartPole-v1", victim, 0.2)
    obs, _ = env.reset(seed=0)
    assert env.action_space.shape == (1,)
    assert obs.shape == (4,)
    _, reward, *_, info = env.step(np.ones(1, dtype=np.float32))
    assert reward == -1.0
    assert info["rlsec_disturbance"] == pytest.approx(2.0)  # 0.2 · force_mag


def test_rarl_trains_caches_and_stays_in_budget(victim: TorchPolicy) -> None:
    fractions: list[float] = []
    attack = make_dynamics_attack("rarl-dynamics-v1", 0.3, config=TINY)
    assert isinstance(attack, DisturbanceDynamics)
    untrained = attack.as_wrapper(gym.make("CartPole-v1"))
    untrained.reset(seed=0)
    with pytest.raises(ConfigError, match="no adversary"):
        untrained.step(0)
    attack.start(
        victim,
        num_envs=1,
        rng=np.random.default_rng(0),
        env_id="CartPole-v1",
        progress=fractions.append,
    )
    assert attack.origin == "trained"
    assert fractions[-1] == 1.0
    (entry,) = list((home() / "cache" / "rarl").iterdir())
    assert (entry / "spec.json").is_file()

    again = make_dynamics_attack("rarl-dynamics-v1", 0.3, config=TINY)
    assert isinstance(again, DisturbanceDynamics)
    adversary = again.train_adversary(victim, "CartPole-v1")
    assert again.origin == "cache"
    x = np.random.default_rng(0).normal(0, 0.05, (5, 4)).astype(np.float32)
    assert attack.adversary is not None
    assert np.array_equal(adversary.act(x), attack.adversary.act(x))

    env = again.as_wrapper(gym.make("CartPole-v1"), seed=0)
    env.reset(seed=0)
    for _ in range(20):
        *_, info = env.step(int(victim.act(np.asarray(env.unwrapped.state, np.float32)[None])[0]))
        assert abs(info["rlsec_disturbance"]) <= 0.3 * 10.0


def test_a_live_victim_without_a_digest_is_never_cached(victim: TorchPolicy) -> None:
    live = TorchPolicy(
        victim.observation_space, victim.action_space, victim.torch_module(), victim.output
    )
    live.info = dataclasses.replace(live.info, sha256="")
    attack = make_dynamics_attack("rarl-dynamics-v1", 0.2, config=TINY)
    assert isinstance(attack, DisturbanceDynamics)
    attack.train_adversary(live, "CartPole-v1")
    assert attack.origin == "trained"
    assert not (home() / "cache" / "rarl").exists() or not any(
        (home() / "cache" / "rarl").iterdir()
    )


def test_rarl_alternation_composes_from_live_views() -> None:
    # RARL's loop: the adversary learns against the current agent, the agent against the
    # current adversary; both see each other's latest networks through live views.
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from rlsec.defenses._sb3 import live_policy

    eps = 0.5
    agent = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, n_epochs=1, seed=0)
    adv_env = DummyVecEnv([lambda: DisturbanceAdversaryEnv("CartPole-v1", live_policy(agent), eps)])
    adversary = disturbance_learner(adv_env, dataclasses.replace(TINY, n_steps=64))
    attack = make_dynamics_attack("rarl-dynamics-v1", eps)
    assert isinstance(attack, DisturbanceDynamics)
    view = live_policy(adversary)
    agent.set_env(
        DummyVecEnv([lambda: attack.as_wrapper(gym.make("CartPole-v1"), seed=0, adversary=view)])
    )
    for _ in range(2):
        adversary.learn(64, reset_num_timesteps=False)
        agent.learn(64, reset_num_timesteps=False)
    assert attack.usage()["steps"] >= 128
    assert attack.usage()["max_budget_fraction"] <= 1.0


def test_the_cache_key_depends_on_everything_that_shapes_the_adversary() -> None:
    base: dict[str, Any] = {
        "victim_sha256": "a" * 64,
        "env_id": "CartPole-v1",
        "epsilon": 0.1,
        "config": RARLConfig(),
    }
    k = _adversary_key(**base)
    for change in (
        {"victim_sha256": "b" * 64},
        {"epsilon": 0.2},
        {"env_id": "Pendulum-v1"},
        {"config": RARLConfig(timesteps=5)},
        {"config": RARLConfig(train_seed=1)},
    ):
        assert _adversary_key(**{**base, **change}) != k
