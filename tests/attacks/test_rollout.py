from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import GenericTestEnv, linear_policy
from rlsec.attacks import make_attack
from rlsec.attacks.observation import ObservationAttack
from rlsec.errors import ConfigError
from rlsec.evaluate import rollout


def counting_env(length: int) -> GenericTestEnv:
    """Observation (1, t); reward 1 when the action is 0; the episode lasts ``length`` steps."""

    def reset(env: GenericTestEnv, **_: Any) -> tuple[np.ndarray, dict[str, Any]]:
        env.t = 0
        return np.array([1.0, 0.0], np.float32), {}

    def step(env: GenericTestEnv, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        env.t += 1
        return (
            np.array([1.0, float(env.t)], np.float32),
            float(int(action) == 0),
            env.t >= length,
            False,
            {},
        )

    return GenericTestEnv(
        gym.spaces.Box(-100, 100, (2,), np.float32), gym.spaces.Discrete(2), reset, step
    )


def vec(n: int, length: int, mode: AutoresetMode = AutoresetMode.NEXT_STEP) -> SyncVectorEnv:
    return SyncVectorEnv([lambda: counting_env(length) for _ in range(n)], autoreset_mode=mode)


@settings(max_examples=25, deadline=None)
@given(
    episodes=st.integers(1, 23),
    rows=st.integers(1, 8),
    length=st.integers(1, 6),
    mode=st.sampled_from(
        [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED]
    ),
)
def test_exactly_the_requested_episodes_with_exact_returns(
    episodes: int, rows: int, length: int, mode: AutoresetMode
) -> None:
    policy = linear_policy(np.array([1.0, 0.0]))  # w·s = 1 > 0: always action 0
    stats = rollout(policy, vec(rows, length, mode), episodes, seed=0)
    assert stats.returns.shape == (episodes,)
    assert np.all(stats.returns == length)
    assert np.all(stats.lengths == length)
    assert stats.action_change_rate == 0.0


def test_attacked_rollout_counts_changed_actions_and_lost_reward() -> None:
    policy = linear_policy(np.array([1.0, 0.0]), q=True)
    attack = make_attack("pr-adv-act-v1", 1.0)  # always the worst action: 1, reward 0
    venv = vec(3, 4)
    attack.start(policy, num_envs=3, rng=np.random.default_rng(0))  # type: ignore[attr-defined]
    stats = rollout(policy, venv, 5, seed=0, attack=attack)
    assert np.all(stats.returns == 0)
    assert stats.action_change_rate == 1.0


def test_observation_attack_is_reset_at_every_episode_start_of_its_row() -> None:
    class Spy(ObservationAttack):
        id = "spy-obs-v0"
        atlas = ()
        knowledge = "black-box"

        def _setup(self, policy: Any) -> None:
            self.resets: list[int] = []
            self.steps_since_reset = np.zeros(self.num_envs, int)
            self.max_run = 0

        def reset(self, env_ids: np.ndarray) -> None:
            if hasattr(self, "resets"):
                self.resets.extend(int(i) for i in env_ids)
                self.steps_since_reset[env_ids] = 0

        def _perturb(self, x0: np.ndarray, env_ids: np.ndarray) -> np.ndarray:
            self.steps_since_reset[env_ids] += 1
            # the observation's step counter must match what the attack saw since its reset
            assert np.all(x0[:, 1] == self.steps_since_reset[env_ids] - 1)
            return x0

    from rlsec.core import Surface, ThreatModel

    spy = Spy(ThreatModel(Surface.OBSERVATION, 0.1))
    policy = linear_policy(np.array([1.0, 0.0]))
    spy.start(policy, num_envs=2, rng=np.random.default_rng(0))
    stats = rollout(policy, vec(2, 3), 5, seed=0, attack=spy)
    assert stats.returns.tolist() == [3.0] * 5


def test_random_policy_baseline_is_seeded() -> None:
    a = rollout(None, vec(4, 5), 8, seed=0, rng=np.random.default_rng(7))
    b = rollout(None, vec(4, 5), 8, seed=0, rng=np.random.default_rng(7))
    assert np.array_equal(a.returns, b.returns)
    assert 0 < a.returns.mean() < 5
    with pytest.raises(ConfigError, match="rng"):
        rollout(None, vec(1, 1), 1, seed=0)


def test_observation_moments_cover_every_step() -> None:
    policy = linear_policy(np.array([1.0, 0.0]))
    stats = rollout(policy, vec(2, 3), 4, seed=0, track_observations=True)
    assert stats.obs_moments is not None
    assert stats.obs_moments.n == 12  # 4 episodes × 3 steps, no reset frames
    assert np.allclose(stats.obs_moments.mean, [1.0, 1.0])
