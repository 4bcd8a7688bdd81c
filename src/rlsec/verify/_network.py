"""A policy network lowered for bound propagation: alternating affine maps and activations.

:func:`_compile` reads a :class:`~rlsec.core.DifferentiablePolicy`'s actor (an MLP in
``nn.Sequential``, optionally behind the float input and head of
:mod:`rlsec.policies.network`) into a :class:`_Net` in float64, merging consecutive affine
maps (Linear, Affine, the input scale) and refusing any layer it cannot bound, NaN or infinite
parameters, and actors that read an action. Used by :mod:`rlsec.verify.bounds`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlsec.core import DifferentiablePolicy
from rlsec.errors import ConfigError, SpaceMismatch
from rlsec.policies.network import Affine, _Head, _Input
from rlsec.policies.spaces import describe_space

_DT = torch.float64
_CHUNK_ELEMENTS = 2**23  # float64 elements per working tensor: bounds memory on big layers
_SUPPORTED = (
    "Linear, Affine, ReLU, LeakyReLU, Tanh, Sigmoid, ELU, Hardtanh, ReLU6, SiLU, GELU, "
    "Identity in nn.Sequential"
)


@dataclass(frozen=True)
class _Act:
    """An activation: ``kind`` with up to two parameters (slope, alpha, min and max)."""

    kind: str
    p: float = 0.0
    q: float = 0.0


@dataclass(frozen=True)
class _Net:
    """``out = L_m(σ_m(... σ_1(L_0(x))))``: ``len(weights) == len(acts) + 1``, float64."""

    weights: tuple[torch.Tensor, ...]
    biases: tuple[torch.Tensor, ...]
    acts: tuple[_Act, ...]

    @property
    def in_dim(self) -> int:
        return int(self.weights[0].shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.weights[-1].shape[0])

    def chunk(self, rows: int) -> int:
        """States per chunk, so that no working tensor exceeds ``_CHUNK_ELEMENTS``."""
        widest = max(max(w.shape) for w in self.weights)
        per_state = 2 * widest * max(widest, rows)
        return max(1, _CHUNK_ELEMENTS // per_state)


def _leaves(module: nn.Module, where: str) -> list[tuple[str, nn.Module]]:
    if type(module) is nn.Sequential:
        out: list[tuple[str, nn.Module]] = []
        # not named_children(): it yields a module reused twice (nn.Sequential(lin, act,
        # lin2, act)) only once, and the network applies it twice
        for name, child in module._modules.items():
            if child is None:
                raise ConfigError(f"{where}.{name} is None")
            out.extend(_leaves(child, f"{where}.{name}"))
        return out
    return [(where, module)]


def _activation(where: str, m: nn.Module) -> _Act | None:
    """The activation a module computes, ``None`` for Identity; refuses anything else.

    Types are matched exactly: a subclass may override ``forward``, so it is not trusted.
    """
    t = type(m)
    if t is nn.Identity:
        return None
    if t is nn.ReLU:
        return _Act("leaky", 0.0)
    if t is nn.LeakyReLU and isinstance(m, nn.LeakyReLU):
        slope = float(m.negative_slope)
        if not math.isfinite(slope):
            raise ConfigError(f"{where}: LeakyReLU needs a finite negative_slope, got {slope}")
        return _Act("leaky", slope)
    if t is nn.ReLU6:
        return _Act("hardtanh", 0.0, 6.0)
    if t is nn.Hardtanh and isinstance(m, nn.Hardtanh):
        lo, hi = float(m.min_val), float(m.max_val)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ConfigError(
                f"{where}: Hardtanh needs finite min_val < max_val, got {lo} and {hi}"
            )
        return _Act("hardtanh", lo, hi)
    if t is nn.Tanh:
        return _Act("tanh")
    if t is nn.Sigmoid:
        return _Act("sigmoid")
    if t is nn.SiLU:
        return _Act("silu")
    if t is nn.GELU and isinstance(m, nn.GELU):
        return _Act("gelu" if m.approximate == "none" else "gelu_tanh")
    if t is nn.ELU and isinstance(m, nn.ELU):
        alpha = float(m.alpha)
        if not alpha >= 0 or not math.isfinite(alpha):
            raise ConfigError(
                f"{where}: ELU needs a finite alpha >= 0 (below 0 it is not monotone); "
                f"got alpha={alpha}"
            )
        return _Act("elu", alpha)
    raise ConfigError(
        f"cannot bound layer {where} ({t.__module__}.{t.__qualname__}); supported: {_SUPPORTED}"
    )


def _compile(policy: DifferentiablePolicy) -> _Net:
    """Read the actor module into a :class:`_Net`, merging consecutive affine maps."""
    space = policy.observation_space
    if not isinstance(space, gym.spaces.Box):
        raise SpaceMismatch(
            "certification perturbs feature vectors: it needs a Box observation space, got "
            f"{describe_space(space)} (perturbing a one-hot index has no meaning)"
        )
    actor = policy.torch_module()
    scale = 1.0
    body: nn.Module = actor
    if type(actor) is _Head:
        if actor.takes_action:
            raise ConfigError("cannot bound an actor that also reads an action (a Q(s, a) head)")
        inp = actor.inp
        if type(inp) is not _Input or inp.kind != "float":
            raise SpaceMismatch(
                "certification perturbs feature vectors: the network's input is "
                f"{getattr(inp, 'kind', type(inp).__name__)!r}, a float (Box) input is required"
            )
        scale = float(inp.scale)
        body = actor.block
    d = int(np.prod(space.shape))
    w = torch.eye(d, dtype=_DT) * scale
    b = torch.zeros(d, dtype=_DT)
    weights: list[torch.Tensor] = []
    biases: list[torch.Tensor] = []
    acts: list[_Act] = []
    if not math.isfinite(scale):
        raise ConfigError(f"the actor's input scale must be finite, got {scale}")
    for where, m in _leaves(body, "actor"):
        width = int(w.shape[0])
        for name, param in m.named_parameters(recurse=False):
            _finite(param.detach(), f"{where}.{name}")
        for name, buf in m.named_buffers(recurse=False):
            if buf is not None and buf.is_floating_point():
                _finite(buf.detach(), f"{where}.{name}")
        if type(m) is nn.Linear:
            if m.in_features != width:
                raise ConfigError(f"{where}: Linear expects {m.in_features} inputs, gets {width}")
            lw = m.weight.detach().to("cpu", _DT)
            lb = torch.zeros(m.out_features, dtype=_DT)
            if m.bias is not None:
                lb = m.bias.detach().to("cpu", _DT)
            w, b = lw @ w, lw @ b + lb
        elif type(m) is Affine:
            if m.scale.numel() not in (1, width) or m.shift.numel() not in (1, width):
                raise ConfigError(f"{where}: Affine of {m.scale.numel()} entries on width {width}")
            s = m.scale.detach().to("cpu", _DT).reshape(-1).expand(width)
            t = m.shift.detach().to("cpu", _DT).reshape(-1).expand(width)
            w, b = s[:, None] * w, s * b + t
        else:
            act = _activation(where, m)
            if act is None:
                continue
            _finite(w, f"the affine map before {where}")
            _finite(b, f"the affine map before {where}")
            weights.append(w)
            biases.append(b)
            acts.append(act)
            w, b = torch.eye(width, dtype=_DT), torch.zeros(width, dtype=_DT)
    _finite(w, "the actor's last affine map")
    _finite(b, "the actor's last affine map")
    weights.append(w)
    biases.append(b)
    return _Net(tuple(weights), tuple(biases), tuple(acts))


def _finite(t: torch.Tensor, where: str) -> None:
    """Refuse NaN or infinite parameters (also after merging affine maps, which can
    overflow): a bound computed from them would compare NaN, and NaN comparisons are False
    either way, so the refusal is explicit instead."""
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ConfigError(
            f"{where} holds {bad} NaN or infinite values; bounds need finite parameters"
        )
