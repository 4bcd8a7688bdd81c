"""Building environments from ids, and checking them against a policy.

Importing this module (``import rlsec`` does) registers rlsec's own environments with
Gymnasium, once: :data:`ENV_IDS`. Without importing rlsec first, ``gym.make`` finds them as
``"rlsec.envs:rlsec/SlipperyPlant-v0"``.
"""

from __future__ import annotations

import difflib
from typing import Any

import gymnasium as gym

from rlsec.core import Policy
from rlsec.errors import UnknownEnv
from rlsec.policies.spaces import check_same_space

__all__ = ["ENV_IDS", "check_policy_env", "env_spaces", "env_spec", "make_vec"]

#: rlsec's own environments: id -> (entry point, keyword arguments).
ENV_IDS: dict[str, tuple[str, dict[str, Any]]] = {
    "rlsec/SlipperyPlant-v0": ("rlsec.envs.plant:SlipperyPlantEnv", {}),
    "rlsec/SlipperyPlant32x32-v0": ("rlsec.envs.plant:SlipperyPlantEnv", {"size": 32}),
}


def _register() -> None:
    """Register :data:`ENV_IDS` with Gymnasium unless already there (idempotent)."""
    for env_id, (entry_point, kwargs) in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=entry_point, kwargs=dict(kwargs))


_register()


def env_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """Gymnasium's spec for ``env_id``.

    Raises:
        UnknownEnv: with the closest registered ids.
    """
    if not isinstance(env_id, str) or not env_id:
        raise UnknownEnv(f"expected a Gymnasium environment id, got {env_id!r}")
    try:
        return gym.spec(env_id)
    except gym.error.Error:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownEnv(f"unknown environment id {env_id!r}{hint}") from None


def env_spaces(env_id: str) -> tuple[gym.Space[Any], gym.Space[Any]]:
    """The (observation, action) spaces of one ``env_id`` environment."""
    env_spec(env_id)
    env = gym.make(env_id)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def check_policy_env(policy: Policy, env_id: str) -> None:
    """Raise :class:`~rlsec.errors.SpaceMismatch` unless the policy fits the environment."""
    obs, act = env_spaces(env_id)
    check_same_space(
        f"observation space of {env_id} vs the policy", obs, policy.observation_space, bounds=True
    )
    check_same_space(
        f"action space of {env_id} vs the policy", act, policy.action_space, bounds=True
    )


def make_vec(env_id: str, num_envs: int) -> gym.vector.VectorEnv[Any, Any, Any]:
    """``num_envs`` copies of ``env_id`` as one Gymnasium vector env.

    Uses the environment's own vectorised implementation where it has one (CartPole steps all
    copies in one numpy call), else a synchronous vector of copies.
    """
    env_spec(env_id)
    return gym.make_vec(env_id, num_envs=num_envs)
