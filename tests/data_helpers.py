"""Shared by the data-poisoning tests: a small random dataset, the attacks with their
parameters, and the hypothesis strategies over attacks, modes and fractions."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from hypothesis import strategies as st

from rlsec.attacks.data import DATA_ATTACKS, DataAttack, make_data_attack
from rlsec.attacks.transitions import TransitionDataset, Transitions

OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
ACT = gym.spaces.Discrete(3)


def make_dataset(n: int, seed: int = 0) -> TransitionDataset:
    rng = np.random.default_rng(seed)
    return TransitionDataset(
        obs=rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        actions=rng.integers(0, 3, n),
        rewards=rng.normal(size=n),
        next_obs=rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        dones=rng.random(n) < 0.1,
        observation_space=OBS,
        action_space=ACT,
        info={"env_id": "test"},
    )


def box_dataset() -> TransitionDataset:
    return TransitionDataset(
        np.zeros((3, 3), np.float32),
        np.array([[2.0], [0.0], [-2.0]], np.float32),
        np.zeros(3),
        np.zeros((3, 3), np.float32),
        np.zeros(3, bool),
        observation_space=OBS,
        action_space=gym.spaces.Box(-2.0, 2.0, (1,), np.float32),
    )


def make_attack(name: str, eps: float, fraction: float, mode: str) -> DataAttack:
    params: dict[str, Any] = {
        "flip-data-v1": {},
        "noise-data-v1": {"obs_epsilon": 0.1, "relabel": 0.5},
        "target-action-data-v1": {"target_action": 2, "relabel": 0.5},
    }[name]
    return make_data_attack(name, eps, fraction=fraction, mode=mode, **params)  # type: ignore[arg-type]


def rows_of(ds: Transitions, idx: Any) -> tuple[np.ndarray, ...]:
    return tuple(
        np.asarray(getattr(ds, k)[idx]) for k in ("obs", "actions", "rewards", "next_obs", "dones")
    )


attacks = st.sampled_from(sorted(DATA_ATTACKS))
modes = st.sampled_from(["direct", "replace"])
fractions = st.floats(0.0, 1.0)
