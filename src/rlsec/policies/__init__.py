"""Loading and adapting policies.

* ``load_policy("zoo:cartpole-ppo")``: a reference policy shipped with rlsec.
* ``load_policy("path/to/dir")``: a native policy directory (``spec.json`` +
  ``weights.safetensors``).
* ``load_policy("model.zip", env_id="CartPole-v1")``: a Stable-Baselines3 archive, imported
  without unpickling anything.
* :func:`from_torch`: any ``torch.nn.Module``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import gymnasium as gym

from rlsec.errors import PolicyLoadError
from rlsec.policies.base import PolicyInfo, TorchPolicy
from rlsec.policies.native import load_native, save_policy
from rlsec.policies.sb3 import from_sb3
from rlsec.policies.torch_adapter import from_torch

__all__ = [
    "PolicyInfo",
    "TorchPolicy",
    "from_sb3",
    "from_torch",
    "load_native",
    "load_policy",
    "save_policy",
    "zoo_names",
    "zoo_path",
]


def zoo_names() -> list[str]:
    """Names of the reference policies shipped with rlsec."""
    root = resources.files("rlsec.policies") / "zoo"
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "spec.json").is_file())


def zoo_path(name: str) -> Path:
    """Directory of a shipped reference policy.

    Raises:
        PolicyLoadError: no such zoo policy.
    """
    names = zoo_names()
    if name not in names:
        raise PolicyLoadError(f"unknown zoo policy {name!r}; expected one of {names}")
    return Path(str(resources.files("rlsec.policies") / "zoo" / name))


def load_policy(
    source: str | os.PathLike[str],
    *,
    env_id: str | None = None,
    env_spaces: tuple[gym.Space[Any], gym.Space[Any]] | None = None,
) -> TorchPolicy:
    """Load a policy from ``zoo:NAME``, a native directory or an SB3 ``.zip``.

    Example:
        >>> p = load_policy("zoo:cartpole-ppo")
        >>> p.info.env_id, int(p.action_space.n)
        ('CartPole-v1', 2)
    """
    s = os.fspath(source)
    if s.startswith("zoo:"):
        return load_native(zoo_path(s[4:]), source=s)
    path = Path(s)
    if path.is_dir():
        return load_native(path)
    if path.is_file():
        policy = from_sb3(path, env_id=env_id, env_spaces=env_spaces)
        return policy
    raise PolicyLoadError(
        f"expected zoo:NAME, a policy directory or an SB3 .zip file, got {s!r} (not found)"
    )
