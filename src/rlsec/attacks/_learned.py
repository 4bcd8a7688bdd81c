"""Training the learned optimal adversary of SA-RL (Zhang et al. 2021).

With the victim fixed, choosing a perturbation in the ε-ball at every step is itself an MDP:
its state is the true observation, its action the perturbation, its reward the negative of
the victim's reward. The optimal policy of that MDP is the strongest observation adversary
(the paper's Theorem 1), and PPO finds a good one. This module wraps the environment as the
adversary's MDP, trains it with Stable-Baselines3's PPO, exports the result to rlsec's native
format (through the safe SB3 importer) and caches it under ``RLSEC_HOME/cache/sa-rl`` keyed
by everything that determines it. Adversaries for the reference zoo at its default budgets
ship with rlsec (``rlsec/attacks/pretrained``), trained by ``scripts/train_zoo.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rlsec._home import cache_dir
from rlsec.attacks._ball import Ball
from rlsec.core import Policy
from rlsec.errors import PolicyLoadError
from rlsec.policies import TorchPolicy, from_sb3, load_native, save_policy

__all__ = [
    "AdversaryEnv",
    "SARLConfig",
    "adversary_key",
    "adversary_learner",
    "load_or_train_adversary",
    "train_adversary",
    "train_ppo_adversary",
]

VERSION = "sa-rl-v1"


@dataclass(frozen=True)
class SARLConfig:
    """Training budget and PPO settings of the adversary (part of the cache key)."""

    timesteps: int = 100_000
    n_envs: int = 8
    n_steps: int = 256
    batch_size: int = 256
    n_epochs: int = 10
    learning_rate: float = 3e-4
    gamma: float = 0.99
    net_arch: tuple[int, ...] = (64, 64)
    train_seed: int = 0


class AdversaryEnv(gym.Env[np.ndarray, np.ndarray]):
    """The adversary's MDP: observe the true state, choose δ, collect the victim's -reward.

    The action ``a ∈ [-1, 1]^d`` maps to ``δ = ε·a·scale``, projected into the ball and the
    observation space; the victim acts on ``s + δ``.
    """

    def __init__(self, env_id: str, victim: Policy, ball: Ball) -> None:
        from rlsec.envs import make

        super().__init__()
        self.env = make(env_id)
        self.victim = victim
        self.ball = ball
        space = victim.observation_space
        assert isinstance(space, gym.spaces.Box)
        self.observation_space = gym.spaces.Box(
            low=space.low.astype(np.float32),
            high=space.high.astype(np.float32),
            dtype=np.float32,
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=space.shape, dtype=np.float32)
        self._obs: np.ndarray | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._obs = np.asarray(obs, dtype=np.float32)
        return self._obs, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        assert self._obs is not None
        x0 = self._obs[None]
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(1, -1), -1.0, 1.0)
        x = self.ball.project(x0, x0 + (a * self.ball.epsilon * self.ball.scale).reshape(x0.shape))
        victim_action = self.victim.act(x)[0]
        obs, reward, term, trunc, info = self.env.step(victim_action)
        self._obs = np.asarray(obs, dtype=np.float32)
        return self._obs, -float(reward), bool(term), bool(trunc), info

    def close(self) -> None:
        self.env.close()


def adversary_key(
    victim_sha256: str,
    env_id: str,
    epsilon: float,
    norm: str,
    scale: np.ndarray,
    config: SARLConfig,
) -> str:
    """SHA-256 of everything that determines the trained adversary."""
    body = {
        "version": VERSION,
        "victim": victim_sha256,
        "env_id": env_id,
        "epsilon": repr(float(epsilon)),
        "norm": norm,
        "scale": [repr(float(s)) for s in np.asarray(scale, dtype=np.float64).reshape(-1)],
        "config": asdict(config),
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _shipped(key: str) -> Path | None:
    root = resources.files("rlsec.attacks") / "pretrained" / key
    if root.is_dir() and (root / "spec.json").is_file():
        return Path(str(root))
    return None


def load_or_train_adversary(
    victim: TorchPolicy | Policy,
    victim_sha256: str,
    env_id: str,
    ball: Ball,
    config: SARLConfig,
    *,
    progress: Callable[[float], None] | None = None,
    cache: bool = True,
    directory: Path | None = None,
) -> tuple[TorchPolicy, str]:
    """The adversary for this victim and budget: shipped, cached, or trained now.

    Returns:
        The adversary policy and where it came from (``shipped``, ``cache`` or ``trained``).
    """
    key = adversary_key(victim_sha256, env_id, ball.epsilon, ball.norm, ball.scale, config)
    shipped = _shipped(key)
    if shipped is not None:
        return load_native(shipped, source=f"pretrained:{key[:12]}"), "shipped"
    target = (directory or cache_dir("sa-rl")) / key
    if cache and (target / "spec.json").is_file():
        try:
            return load_native(target), "cache"
        except PolicyLoadError:
            pass  # a damaged cache entry is retrained and replaced below
    adversary = train_adversary(victim, env_id, ball, config, progress=progress)
    if cache:
        # an unwritable cache costs time on the next run, not correctness
        with contextlib.suppress(OSError):
            save_policy(
                adversary,
                target,
                env_id=env_id,
                algo="ppo",
                overwrite=True,
                provenance={
                    "kind": "sa-rl adversary",
                    "key": key,
                    "victim": victim_sha256,
                    "epsilon": ball.epsilon,
                    "norm": ball.norm,
                    "config": asdict(config),
                },
            )
    return adversary, "trained"


def adversary_learner(venv: Any, config: Any) -> Any:
    """The Stable-Baselines3 PPO learner of an adversary on its vector env. ``config`` has
    the fields of :class:`SARLConfig` (the RARL adversary's config shares them)."""
    from stable_baselines3 import PPO

    return PPO(
        "MlpPolicy",
        venv,
        n_steps=config.n_steps,
        batch_size=config.batch_size,
        n_epochs=config.n_epochs,
        learning_rate=config.learning_rate,
        gamma=config.gamma,
        policy_kwargs={"net_arch": list(config.net_arch)},
        seed=config.train_seed,
        device="cpu",
        verbose=0,
    )


def train_ppo_adversary(
    make_env: Callable[[], gym.Env[Any, Any]],
    config: Any,
    *,
    env_id: str,
    source: str,
    progress: Callable[[float], None] | None = None,
) -> TorchPolicy:
    """Train an adversary with PPO on ``config.n_envs`` copies of its MDP (``make_env``) and
    return it as an rlsec policy, exported through the safe SB3 importer."""
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv

    class _Progress(BaseCallback):
        def _on_step(self) -> bool:
            if progress is not None:
                progress(min(1.0, self.num_timesteps / config.timesteps))
            return True

    venv = DummyVecEnv([make_env for _ in range(config.n_envs)])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # tiny MLPs: one thread is fastest and reproducible
        model = adversary_learner(venv, config)
        model.learn(total_timesteps=config.timesteps, callback=_Progress())
        buf = io.BytesIO()
        model.save(buf)
    finally:
        torch.set_num_threads(threads)
        venv.close()
    return from_sb3(buf.getvalue(), env_id=env_id, source=source)


def train_adversary(
    victim: Policy,
    env_id: str,
    ball: Ball,
    config: SARLConfig,
    *,
    progress: Callable[[float], None] | None = None,
) -> TorchPolicy:
    """Train the SA-RL adversary with PPO and return it as an rlsec policy."""
    return train_ppo_adversary(
        lambda: AdversaryEnv(env_id, victim, ball),
        config,
        env_id=env_id,
        source="sa-rl adversary",
        progress=progress,
    )
