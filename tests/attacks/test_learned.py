from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rlsec._home import home
from rlsec.attacks import LearnedObservation, make_attack
from rlsec.attacks._ball import Ball
from rlsec.attacks._learned import AdversaryEnv, SARLConfig, adversary_key
from rlsec.errors import ConfigError
from rlsec.policies import load_policy


@pytest.fixture(scope="module")
def victim():  # type: ignore[no-untyped-def]
    return load_policy("zoo:cartpole-ppo")


def _start(attack: LearnedObservation, victim, **kw) -> None:  # type: ignore[no-untyped-def]
    attack.start(
        victim,
        num_envs=4,
        rng=np.random.default_rng(0),
        scale=np.asarray(victim.info.observation_stats["std"]),
        env_id="CartPole-v1",
        **kw,
    )


def test_adversary_env_pays_the_negative_of_the_victims_reward(victim) -> None:  # type: ignore[no-untyped-def]
    space = victim.observation_space
    ball = Ball(0.5, "linf", np.ones(4), space.low, space.high)
    env = AdversaryEnv("CartPole-v1", victim, ball)
    obs, _ = env.reset(seed=0)
    assert env.action_space.shape == (4,)
    assert obs.shape == (4,)
    _, reward, *_ = env.step(np.ones(4, dtype=np.float32))
    assert reward == -1.0  # CartPole pays +1 per step to the victim


def test_sa_rl_trains_caches_and_stays_in_budget(victim) -> None:  # type: ignore[no-untyped-def]
    fractions: list[float] = []
    attack = make_attack("sa-rl-obs-v1", 0.3, unit="std", timesteps=512)
    assert isinstance(attack, LearnedObservation)
    _start(attack, victim, progress=fractions.append)
    assert attack.origin == "trained"
    assert fractions
    assert fractions[-1] == 1.0
    cached = list((home() / "cache" / "sa-rl").iterdir())
    assert len(cached) == 1
    assert (cached[0] / "spec.json").is_file()

    again = make_attack("sa-rl-obs-v1", 0.3, unit="std", timesteps=512)
    assert isinstance(again, LearnedObservation)
    _start(again, victim)
    assert again.origin == "cache"
    x0 = np.random.default_rng(0).normal(0, 0.05, (4, 4)).astype(np.float32)
    x = again.perturb(x0)
    scale = np.asarray(victim.info.observation_stats["std"])
    assert np.all(np.abs(x - x0) <= 0.3 * scale * (1 + 1e-6) + 1e-7)
    assert np.array_equal(x, attack.perturb(x0))  # the cached adversary is the trained one


def test_a_damaged_cache_entry_is_retrained(victim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    attack = make_attack("sa-rl-obs-v1", 0.2, unit="std", timesteps=256)
    _start(attack, victim)  # type: ignore[arg-type]
    (entry,) = list((home() / "cache" / "sa-rl").iterdir())
    (entry / "weights.safetensors").write_bytes(b"tampered")
    again = make_attack("sa-rl-obs-v1", 0.2, unit="std", timesteps=256)
    _start(again, victim)  # type: ignore[arg-type]
    assert again.origin == "trained"


def test_cache_key_depends_on_everything_that_shapes_the_adversary() -> None:
    base = dict(
        victim_sha256="a" * 64,
        env_id="CartPole-v1",
        epsilon=0.1,
        norm="linf",
        scale=np.ones(4),
        config=SARLConfig(),
    )
    k = adversary_key(**base)  # type: ignore[arg-type]
    for change in (
        {"victim_sha256": "b" * 64},
        {"epsilon": 0.2},
        {"norm": "l2"},
        {"scale": np.full(4, 2.0)},
        {"config": SARLConfig(timesteps=5)},
        {"env_id": "Acrobot-v1"},
    ):
        assert adversary_key(**{**base, **change}) != k  # type: ignore[arg-type]


def test_zoo_adversaries_for_the_default_grid_are_shipped(victim) -> None:  # type: ignore[no-untyped-def]
    from rlsec.evaluate import DEFAULT_EPSILONS

    for eps in DEFAULT_EPSILONS:
        attack = make_attack("sa-rl-obs-v1", eps, unit="std")
        _start(attack, victim)  # type: ignore[arg-type]
        assert attack.origin == "shipped", eps


def test_sa_rl_needs_an_env_id(victim) -> None:  # type: ignore[no-untyped-def]
    attack = make_attack("sa-rl-obs-v1", 0.1, timesteps=8)
    with pytest.raises(ConfigError, match="env_id"):
        attack.start(victim, num_envs=1, rng=np.random.default_rng(0))  # type: ignore[attr-defined]


def test_a_given_adversary_is_used_as_is(victim) -> None:  # type: ignore[no-untyped-def]
    import gymnasium as gym
    import torch

    from rlsec.policies import from_torch

    lin = torch.nn.Linear(4, 4)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.fill_(5.0)  # always pushes every feature up, clipped to +1
    adversary = from_torch(
        lin, victim.observation_space, gym.spaces.Box(-1, 1, (4,)), output="action"
    )
    attack = make_attack("sa-rl-obs-v1", 0.5, adversary=adversary)
    attack.start(victim, num_envs=2, rng=np.random.default_rng(0))  # type: ignore[attr-defined]
    assert attack.origin == "given"  # type: ignore[attr-defined]
    assert not (home() / "cache" / "sa-rl").exists()
    x0 = np.zeros((2, 4), dtype=np.float32)
    # +ε in raw units on every feature, clipped to the space (the pole angle's bound is 0.419)
    expected = np.minimum(0.5, victim.observation_space.high)
    assert np.allclose(attack.perturb(x0), expected)  # type: ignore[attr-defined]
