"""RARL's disturbance adversary, trained at training time against a fixed victim.

With the victim fixed, choosing a disturbance on every step is itself an MDP
(:class:`DisturbanceAdversaryEnv`, Pinto et al. 2017): the adversary observes the true
state, applies a disturbance of at most ε times the environment's actuation (through
:class:`~rlsec.attacks.physics.DisturbanceWrapper`), and is paid the negative of the
victim's reward. :func:`load_or_train_adversary` trains it with PPO (:class:`RARLConfig`,
:func:`disturbance_learner`) or loads it from ``RLSEC_HOME/cache/rarl/<key>``, keyed by the
victim's digest, the environment, ε and the training settings. The attack that plays the
trained adversary is :class:`~rlsec.attacks.dynamics.DisturbanceDynamics`
(``rarl-dynamics-v1``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from rlsec.attacks.physics import DisturbanceWrapper
from rlsec.core import Policy
from rlsec.errors import ConfigError, PolicyLoadError

if TYPE_CHECKING:
    from rlsec.policies import TorchPolicy

__all__ = [
    "DisturbanceAdversaryEnv",
    "RARLConfig",
    "disturbance_learner",
    "load_or_train_adversary",
]


@dataclass(frozen=True)
class RARLConfig:
    """Training budget and PPO settings of the RARL adversary (part of its cache key)."""

    timesteps: int = 100_000
    n_envs: int = 8
    n_steps: int = 256
    batch_size: int = 256
    n_epochs: int = 10
    learning_rate: float = 3e-4
    gamma: float = 0.99
    net_arch: tuple[int, ...] = (64, 64)
    train_seed: int = 0


# -- the adversary's MDP and its learner -------------------------------------------------------
class DisturbanceAdversaryEnv(gym.Env[np.ndarray, np.ndarray]):
    """RARL's adversary MDP: observe the true state, choose a disturbance, collect the
    victim's -reward.

    The action ``a ∈ [-1, 1]`` becomes the disturbance ``a · ε · actuation`` of
    :class:`DisturbanceWrapper`, applied while the victim's action on the same observation is
    executed. ``victim`` may be a live view of a learner that is still training (RARL's
    alternation): the adversary then plays against its current networks.

    Example:
        >>> from rlsec.policies import load_policy
        >>> env = DisturbanceAdversaryEnv("CartPole-v1", load_policy("zoo:cartpole-ppo"), 0.2)
        >>> _ = env.reset(seed=0)
        >>> obs, reward, *_ = env.step(np.ones(1, dtype=np.float32))
        >>> reward  # CartPole pays the victim +1 per step
        -1.0
    """

    def __init__(self, env_id: str, victim: Policy, epsilon: float) -> None:
        super().__init__()
        self._a = np.zeros(1)
        from rlsec.envs import make

        self.env = DisturbanceWrapper(make(env_id), epsilon, self._planned)
        self.victim = victim
        space = self.env.observation_space
        if not isinstance(space, gym.spaces.Box):
            raise ConfigError(f"the adversary observes Box observations; {env_id} has {space}")
        self.observation_space = gym.spaces.Box(
            low=space.low.astype(np.float32), high=space.high.astype(np.float32), dtype=np.float32
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self._obs: np.ndarray | None = None

    def _planned(self, obs: Any, rng: np.random.Generator) -> np.ndarray:
        return self._a

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._obs = np.asarray(obs, dtype=np.float32)
        return self._obs, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._obs is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        self._a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        victim_action = self.victim.act(self._obs[None])[0]
        obs, reward, term, trunc, info = self.env.step(victim_action)
        self._obs = np.asarray(obs, dtype=np.float32)
        return self._obs, -float(reward), bool(term), bool(trunc), info

    def close(self) -> None:
        self.env.close()


def disturbance_learner(venv: Any, config: RARLConfig) -> Any:
    """The Stable-Baselines3 PPO learner of the adversary, on a vector env of
    :class:`DisturbanceAdversaryEnv` (the same learner as SA-RL's)."""
    from rlsec.attacks._learned import adversary_learner

    return adversary_learner(venv, config)


_VERSION = "rarl-dynamics-v1"


def _adversary_key(victim_sha256: str, env_id: str, epsilon: float, config: RARLConfig) -> str:
    """SHA-256 of everything that determines the trained adversary."""
    body = {
        "version": _VERSION,
        "victim": victim_sha256,
        "env_id": env_id,
        "epsilon": repr(float(epsilon)),
        "config": asdict(config),
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _train(
    victim: Policy,
    env_id: str,
    epsilon: float,
    config: RARLConfig,
    *,
    progress: Callable[[float], None] | None = None,
) -> TorchPolicy:
    """Train the RARL adversary with PPO against the fixed victim; return it as a policy."""
    from rlsec.attacks._learned import train_ppo_adversary

    return train_ppo_adversary(
        lambda: DisturbanceAdversaryEnv(env_id, victim, epsilon),
        config,
        env_id=env_id,
        source="rarl disturbance adversary",
        progress=progress,
    )


# -- training and the cache ---------------------------------------------------------------------
def load_or_train_adversary(
    victim: Policy,
    env_id: str,
    epsilon: float,
    config: RARLConfig,
    *,
    cache: bool = True,
    progress: Callable[[float], None] | None = None,
) -> tuple[TorchPolicy, str]:
    """The adversary for this victim, environment and budget, and where it came from:
    ``cache`` (loaded), or ``trained`` now with PPO (and cached).

    The cache is used only when ``cache`` is true and the victim has a digest
    (``victim.info.sha256``); a live view of a learner has none, and its adversary is always
    trained afresh. A damaged cache entry is retrained and replaced; an unwritable cache
    costs time on the next run, not correctness.
    """
    from rlsec._home import cache_dir
    from rlsec.policies import load_native, save_policy

    eps = epsilon
    sha = getattr(getattr(victim, "info", None), "sha256", "") or ""
    key = _adversary_key(sha, env_id, eps, config)
    target = cache_dir("rarl") / key if cache and sha else None
    if target is not None and (target / "spec.json").is_file():
        try:
            adversary = load_native(target)
        except PolicyLoadError:
            pass  # a damaged cache entry is retrained and replaced below
        else:
            return adversary, "cache"
    adversary = _train(victim, env_id, eps, config, progress=progress)
    if target is not None:
        # an unwritable cache costs time on the next run, not correctness
        with contextlib.suppress(OSError):
            save_policy(
                adversary,
                target,
                env_id=env_id,
                algo="ppo",
                overwrite=True,
                provenance={
                    "kind": "rarl disturbance adversary",
                    "key": key,
                    "victim": sha,
                    "epsilon": eps,
                    "config": asdict(config),
                },
            )
    return adversary, "trained"
