"""What the parameter attacks share about stored weights: the actor's tensor names, float32
bit patterns, and a private working copy of a policy's network to move and differentiate.

Nothing here tampers with anything or checks a budget; :mod:`rlsec.attacks.parameters` does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import cast

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlsec.attacks._optim import Objective, action_divergence
from rlsec.policies.base import PolicyInfo, TorchPolicy
from rlsec.policies.network import PolicyNetwork

__all__ = ["ACTOR", "BITS", "Progress", "Weights", "WorkingCopy", "float_bits"]

ACTOR = "policy."  # the actor's tensors in a PolicyNetwork's state dict
BITS = 32  # bits of a stored float32 weight

#: Tensors by name, as in a network's state dict.
Weights = dict[str, torch.Tensor]
#: Called with the fraction of an optimisation done.
Progress = Callable[[float], None]


def float_bits(t: torch.Tensor) -> np.ndarray:
    """The float32 bit patterns of a tensor, flattened (a copy)."""
    return (
        t.detach().cpu().contiguous().numpy().astype(np.float32, copy=True).view(np.uint32).ravel()
    )


class WorkingCopy:
    """A private copy of a policy's network: set weights, run the actor, take gradients."""

    def __init__(self, policy: TorchPolicy) -> None:
        assert policy.network is not None
        self.policy = policy
        self.net: PolicyNetwork = copy.deepcopy(policy.network)
        self.params = dict(self.net.named_parameters())
        self.head = self.net.actor()
        width = int(self.net.out_dim)
        # The actor's outputs seen as "observations" of a policy whose module is the identity:
        # action_divergence on it measures the divergence of given outputs.
        self.outputs = TorchPolicy(
            gym.spaces.Box(-np.inf, np.inf, (width,), np.float32),
            policy.action_space,
            nn.Identity(),
            policy.output,
            info=PolicyInfo(source="<actor outputs>", sha256="", format="torch"),
        )

    def set(self, values: Mapping[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, v in values.items():
                self.params[name].copy_(v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.head(x))

    def divergence(self, clean: torch.Tensor, kind: str) -> Objective:
        return action_divergence(self.outputs, clean, kind)
