"""Test doubles: a linear MockPolicy with known gradients, a GenericTestEnv, and a small chain
MDP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlsec.envs.finite import FiniteMDP
from rlsec.policies import TorchPolicy, from_torch


def linear_policy(w: np.ndarray, *, bound: float = 10.0, q: bool = False) -> TorchPolicy:
    """Two actions with logits ``[w·s, 0]``: action 0 iff ``w·s > 0``.

    Under a linf perturbation of radius ε the smallest reachable ``w·s`` is
    ``w·s - ε·||w||_1``, so the action can flip iff ``ε > w·s / ||w||_1`` (the margin).
    """
    w = np.asarray(w, dtype=np.float32)
    lin = torch.nn.Linear(w.size, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0] = torch.from_numpy(w)
        lin.bias.zero_()
    obs = gym.spaces.Box(-bound, bound, (w.size,), np.float32)
    return from_torch(lin, obs, gym.spaces.Discrete(2), output="q_values" if q else "logits")


class GenericTestEnv(gym.Env[np.ndarray, Any]):
    """An env whose reset and step are injected (after Gymnasium's tests/testing_env.py)."""

    def __init__(
        self,
        observation_space: gym.Space[Any] | None = None,
        action_space: gym.Space[Any] | None = None,
        reset_func: Callable[..., tuple[Any, dict[str, Any]]] | None = None,
        step_func: Callable[..., tuple[Any, float, bool, bool, dict[str, Any]]] | None = None,
    ) -> None:
        self.observation_space = observation_space or gym.spaces.Box(-1, 1, (2,), np.float32)
        self.action_space = action_space or gym.spaces.Discrete(2)
        self._reset = reset_func
        self._step = step_func

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        if self._reset is not None:
            return self._reset(self, seed=seed, options=options)
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> Any:
        if self._step is not None:
            return self._step(self, action)
        return self.observation_space.sample(), 0.0, False, False, {}


def chain_mdp(n: int = 4) -> FiniteMDP:
    """A chain: action 1 moves right (reward 1 at the end, which is terminal), 0 stays."""
    p = np.zeros((n, 2, n))
    r = np.zeros((n, 2))
    for s in range(n):
        p[s, 0, s] = 1.0
        p[s, 1, min(s + 1, n - 1)] = 1.0
    r[n - 2, 1] = 1.0
    p[n - 1] = 0.0
    p[n - 1, :, n - 1] = 1.0
    terminal = np.arange(n) == n - 1
    init = np.eye(n)[0]
    return FiniteMDP(p, r, init, 0.9, {"init": init > 0, "terminal": terminal})


def with_rewards(mdp: FiniteMDP, reward: np.ndarray) -> FiniteMDP:
    """``mdp`` with its rewards replaced by ``reward``."""
    return FiniteMDP(mdp.transitions, reward, mdp.initial, mdp.discount, mdp.labels)
