"""Gymnasium wrappers that put an attack between an agent and any environment.

The wrappers know an attack only by what they call on it (the two protocols below), so
``observation.py`` and ``action.py`` build them without this module knowing either.
"""

from __future__ import annotations

from typing import Any, Protocol, SupportsFloat

import gymnasium as gym
import numpy as np

from rlsec.core import Policy

__all__ = [
    "ActionAttackWrapper",
    "ObservationAttackWrapper",
    "PerturbsActions",
    "PerturbsObservations",
]


class _Started(Protocol):
    def start(self, policy: Policy, **kwargs: Any) -> None: ...

    def reset(self, env_ids: np.ndarray) -> None: ...


class PerturbsObservations(_Started, Protocol):
    """What :class:`ObservationAttackWrapper` calls: an observation attack."""

    def perturb(self, observations: np.ndarray, env_ids: np.ndarray) -> np.ndarray: ...


class PerturbsActions(_Started, Protocol):
    """What :class:`ActionAttackWrapper` calls: an action attack."""

    last_mask: np.ndarray

    def perturb_action(
        self, observations: np.ndarray, actions: np.ndarray, env_ids: np.ndarray
    ) -> np.ndarray: ...


_ONE = np.zeros(1, dtype=np.int64)


def _start_kwargs(env: gym.Env[Any, Any], start: dict[str, Any]) -> dict[str, Any]:
    spec = env.spec
    kw: dict[str, Any] = {
        "num_envs": 1,
        "rng": np.random.default_rng(start.pop("seed", None)),
        "horizon": spec.max_episode_steps if spec is not None else None,
        "env_id": spec.id if spec is not None else None,
    }
    kw.update(start)
    return kw


class ObservationAttackWrapper(gym.ObservationWrapper[Any, Any, Any]):
    """Show the agent ``attack.perturb(obs)`` instead of ``obs``; the env is untouched.

    Example:
        >>> import gymnasium as gym
        >>> from rlsec.attacks import make_attack
        >>> from rlsec.policies import load_policy
        >>> env = gym.make("CartPole-v1")
        >>> policy = load_policy("zoo:cartpole-ppo")
        >>> wrapped = make_attack("uniform-obs-v1", 0.1).as_wrapper(env, policy, seed=0)
        >>> obs, _ = wrapped.reset(seed=0)
        >>> clean, _ = env.reset(seed=0)
        >>> bool(abs(obs - clean).max() <= 0.1 + 1e-6)
        True
    """

    def __init__(
        self, env: gym.Env[Any, Any], attack: PerturbsObservations, policy: Policy, **start: Any
    ) -> None:
        super().__init__(env)
        self.attack = attack
        attack.start(policy, **_start_kwargs(env, dict(start)))

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.attack.reset(_ONE)
        return self.observation(obs), info

    def observation(self, observation: Any) -> Any:
        return self.attack.perturb(np.asarray(observation)[None], _ONE)[0]


class ActionAttackWrapper(gym.Wrapper[Any, Any, Any, Any]):
    """Let the adversary replace or blend the agent's action before the env executes it."""

    def __init__(
        self, env: gym.Env[Any, Any], attack: PerturbsActions, policy: Policy, **start: Any
    ) -> None:
        super().__init__(env)
        self.attack = attack
        self._obs: Any = None
        attack.start(policy, **_start_kwargs(env, dict(start)))

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._obs = obs
        self.attack.reset(_ONE)
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._obs is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        executed = self.attack.perturb_action(
            np.asarray(self._obs)[None], np.asarray(action)[None], _ONE
        )[0]
        obs, reward, term, trunc, info = self.env.step(executed)
        self._obs = obs
        info = {
            **info,
            "rlsec_executed_action": executed,
            "rlsec_action_replaced": bool(self.attack.last_mask[0]),
        }
        return obs, reward, term, trunc, info
