"""Adapt a plain ``torch.nn.Module`` into a :class:`~rlsec.policies.base.TorchPolicy`."""

from __future__ import annotations

from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlsec.errors import PolicyLoadError
from rlsec.policies.base import TorchPolicy
from rlsec.policies.network import PolicyNetwork, sequential_to_layers

__all__ = ["from_torch"]


def _as_network(
    module: nn.Module,
    observation_space: gym.Space[Any],
    output: Literal["logits", "q_values", "action"],
) -> PolicyNetwork | None:
    """A declarative copy of ``module`` when it is an MLP rlsec can describe, else ``None``."""
    if not isinstance(observation_space, gym.spaces.Box):
        return None
    try:
        layers = sequential_to_layers(module)
    except PolicyLoadError:
        return None
    spec = {
        "input": {"type": "float", "dim": int(np.prod(observation_space.shape))},
        "policy": layers,
        "output": output,
    }
    try:
        net = PolicyNetwork(spec)
    except PolicyLoadError:
        return None
    src = [m for m in module.modules() if isinstance(m, nn.Linear)]
    dst = [m for m in net.policy.modules() if isinstance(m, nn.Linear)]
    if len(src) != len(dst):  # a Linear used twice: modules() lists it once; keep the module
        return None
    with torch.no_grad():
        for s, t in zip(src, dst, strict=True):
            t.weight.copy_(s.weight)
            t.bias.copy_(s.bias)
    return net


def from_torch(
    module: nn.Module,
    observation_space: gym.Space[Any],
    action_space: gym.Space[Any],
    *,
    output: Literal["logits", "q_values", "action"] = "logits",
    value: nn.Module | None = None,
    q: nn.Module | None = None,
) -> TorchPolicy:
    """Wrap a torch module as an rlsec policy.

    ``module`` receives a batch of observations (float32 for Box spaces, int64 indices
    otherwise) and returns logits, Q-values or continuous actions, as ``output`` says. When it
    is an ``nn.Sequential`` of Linear layers and supported activations, with no ``value`` or
    ``q`` head, the policy can also be saved in the native format.

    Example:
        >>> import gymnasium as gym, torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(),
        ...                           torch.nn.Linear(16, 2))
        >>> p = from_torch(net, gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2))
        >>> p.network is not None, p.output
        (True, 'logits')
    """
    if not isinstance(module, nn.Module):
        raise PolicyLoadError(f"expected a torch.nn.Module, got {type(module).__name__}")
    net = _as_network(module, observation_space, output) if value is None and q is None else None
    if net is not None:
        return TorchPolicy(observation_space, action_space, net.actor(), output, network=net)
    return TorchPolicy(observation_space, action_space, module, output, value=value, q=q)
