"""Declarative MLP policies: a JSON description of the network, built from an allowlist.

A network spec says how observations enter (``input``), the layers of the actor (``policy``)
and what it outputs (``output``), and optionally a state-value head (``value``) and an
action-value head (``q``): Q(s, ·) for discrete actions, or, with ``q_takes_action``, Q(s, a)
on the features concatenated with the action (first mapped by ``q_action_affine`` when the
critic was trained on rescaled actions). Only the layer types in ``LAYERS`` exist; nothing in
a spec is ever evaluated as code. Weights live in safetensors under the keys of
:class:`PolicyNetwork`'s ``state_dict`` (``policy.0.weight``, ``value.2.bias``, ...).

Example:
    >>> spec = {"input": {"type": "float", "dim": 4},
    ...         "policy": [{"type": "linear", "in": 4, "out": 8}, {"type": "tanh"},
    ...                    {"type": "linear", "in": 8, "out": 2}],
    ...         "output": "logits"}
    >>> net = PolicyNetwork(spec)
    >>> sorted(net.state_dict())
    ['policy.0.bias', 'policy.0.weight', 'policy.2.bias', 'policy.2.weight']
"""

from __future__ import annotations

import copy
from typing import Any, Literal, cast

import torch
from torch import nn

from rlsec.errors import PolicyLoadError

__all__ = ["LAYERS", "OUTPUTS", "Affine", "PolicyNetwork", "input_dim", "sequential_to_layers"]

OUTPUTS = ("logits", "q_values", "action")

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}
LAYERS = ("linear", "affine", "hardtanh", "leaky_relu", *_ACTIVATIONS)


class Affine(nn.Module):
    """``y = x * scale + shift`` with constants from the spec (e.g. [-1, 1] → action bounds)."""

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, scale: list[float], shift: list[float]) -> None:
        super().__init__()
        if len(scale) != len(shift):
            raise PolicyLoadError(
                f"affine layer needs scale and shift of equal length, got {len(scale)} and "
                f"{len(shift)}"
            )
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32), persistent=False)
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class _Input(nn.Module):
    """Turns raw observations into the float features the MLP reads (SB3's preprocessing)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        if not isinstance(spec, dict):
            raise PolicyLoadError(f"network input must be an object, got {spec!r:.80}")
        self.kind = spec.get("type")
        if self.kind == "float":
            self.scale = float(spec.get("scale", 1.0))
        elif self.kind == "one_hot":
            self.sizes = [int(spec["n"])]
        elif self.kind == "multi_one_hot":
            self.sizes = [int(n) for n in spec["nvec"]]
        else:
            raise PolicyLoadError(
                f"network input type must be float, one_hot or multi_one_hot, got {self.kind!r}"
            )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.kind == "float":
            x = obs.to(torch.float32).flatten(1)
            return x * self.scale if self.scale != 1.0 else x
        idx = obs.to(torch.long).reshape(obs.shape[0], -1)
        parts = [
            nn.functional.one_hot(idx[:, i].clamp(0, n - 1), n).to(torch.float32)
            for i, n in enumerate(self.sizes)
        ]
        return torch.cat(parts, dim=1)


def input_dim(spec: dict[str, Any]) -> int:
    """Number of features the first layer receives for an ``input`` spec."""
    if not isinstance(spec, dict):
        raise PolicyLoadError(f"network input must be an object, got {spec!r:.80}")
    kind = spec.get("type")
    if kind == "float":
        return int(spec["dim"])
    if kind == "one_hot":
        return int(spec["n"])
    if kind == "multi_one_hot":
        return sum(int(n) for n in spec["nvec"])
    raise PolicyLoadError(f"unknown network input type {kind!r}")


def _build_layers(name: str, layers: Any, in_features: int) -> tuple[nn.Sequential, int]:
    if not isinstance(layers, list) or not layers:
        raise PolicyLoadError(f"network block {name!r} must be a non-empty list of layers")
    modules: list[nn.Module] = []
    width = in_features
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise PolicyLoadError(f"{name}[{i}] must be an object, got {layer!r}")
        kind = layer.get("type")
        if kind == "linear":
            n_in, n_out = int(layer["in"]), int(layer["out"])
            if n_in != width:
                raise PolicyLoadError(
                    f"{name}[{i}]: linear layer expects {n_in} inputs but receives {width}"
                )
            modules.append(nn.Linear(n_in, n_out))
            width = n_out
        elif kind == "affine":
            aff = Affine([float(v) for v in layer["scale"]], [float(v) for v in layer["shift"]])
            if aff.scale.numel() != width:
                raise PolicyLoadError(
                    f"{name}[{i}]: affine layer has {aff.scale.numel()} entries for width {width}"
                )
            modules.append(aff)
        elif kind == "hardtanh":
            modules.append(nn.Hardtanh(float(layer["min"]), float(layer["max"])))
        elif kind == "leaky_relu":
            modules.append(nn.LeakyReLU(float(layer.get("negative_slope", 0.01))))
        elif kind in _ACTIVATIONS:
            modules.append(_ACTIVATIONS[kind]())
        else:
            raise PolicyLoadError(f"{name}[{i}]: layer type must be one of {LAYERS}, got {kind!r}")
    return nn.Sequential(*modules), width


def _count_params(spec: dict[str, Any]) -> int:
    """Parameters of the spec's Linear layers, counted before anything is allocated."""
    total = 0
    for block in ("policy", "value", "q"):
        layers = spec.get(block)
        if not isinstance(layers, list):
            continue
        for layer in layers:
            if isinstance(layer, dict) and layer.get("type") == "linear":
                try:
                    n_in, n_out = int(layer["in"]), int(layer["out"])
                except (KeyError, TypeError, ValueError):
                    raise PolicyLoadError(f"malformed linear layer in {block}: {layer!r}") from None
                if n_in < 1 or n_out < 1:
                    raise PolicyLoadError(f"linear layer sizes must be >= 1, got {layer!r}")
                total += n_in * n_out + n_out
    return total


class _Head(nn.Module):
    """Input preprocessing followed by one block; optionally concatenates an action (Q(s, a))."""

    def __init__(
        self,
        inp: _Input,
        block: nn.Sequential,
        takes_action: bool,
        action_affine: Affine | None = None,
    ) -> None:
        super().__init__()
        self.inp = inp
        self.block = block
        self.takes_action = takes_action
        self.action_affine = action_affine

    def forward(self, obs: torch.Tensor, action: torch.Tensor | None = None) -> torch.Tensor:
        x = self.inp(obs)
        if self.takes_action:
            if action is None:
                raise TypeError("this Q head needs (observations, actions)")
            a = action.to(torch.float32).flatten(1)
            if self.action_affine is not None:
                a = self.action_affine(a)
            x = torch.cat([x, a], dim=1)
        return cast(torch.Tensor, self.block(x))


class PolicyNetwork(nn.Module):
    """The network a spec describes. ``actor()``, ``value()`` and ``q()`` are views on it."""

    def __init__(
        self,
        spec: dict[str, Any],
        *,
        action_dim: int | None = None,
        max_params: int = 2**28,
    ) -> None:
        super().__init__()
        if not isinstance(spec, dict):
            raise PolicyLoadError(f"network spec must be an object, got {type(spec).__name__}")
        wanted = _count_params(spec)
        if wanted > max_params:
            raise PolicyLoadError(
                f"network spec asks for {wanted} parameters; at most {max_params} allowed here"
            )
        self.spec = copy.deepcopy(spec)
        try:
            self._input = _Input(spec.get("input", {}))
            dim = input_dim(spec["input"])
            output = spec.get("output")
            if output not in OUTPUTS:
                raise PolicyLoadError(f"network output must be one of {OUTPUTS}, got {output!r}")
            self.output = cast(Literal["logits", "q_values", "action"], output)
            self.policy, self.out_dim = _build_layers("policy", spec.get("policy"), dim)
            self.value: nn.Sequential | None = None
            self.q: nn.Sequential | None = None
            if spec.get("value") is not None:
                self.value, w = _build_layers("value", spec["value"], dim)
                if w != 1:
                    raise PolicyLoadError(f"value head must output 1 number, outputs {w}")
            self.q_takes_action = bool(spec.get("q_takes_action", False))
            self.q_action_affine: Affine | None = None
            if spec.get("q_action_affine") is not None:
                qa = spec["q_action_affine"]
                self.q_action_affine = Affine(
                    [float(v) for v in qa["scale"]], [float(v) for v in qa["shift"]]
                )
            if spec.get("q") is not None:
                q_in = dim + (int(action_dim or 0) if self.q_takes_action else 0)
                self.q, _ = _build_layers("q", spec["q"], q_in)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, PolicyLoadError):
                raise
            raise PolicyLoadError(f"malformed network spec: {type(exc).__name__}: {exc}") from None

    def actor(self) -> nn.Module:
        return _Head(self._input, self.policy, takes_action=False)

    def value_head(self) -> nn.Module | None:
        if self.value is None:
            return None
        return _Squeeze(_Head(self._input, self.value, takes_action=False))

    def q_head(self) -> nn.Module | None:
        if self.q is None:
            return None
        head = _Head(
            self._input,
            self.q,
            takes_action=self.q_takes_action,
            action_affine=self.q_action_affine,
        )
        return _Squeeze(head) if self.q_takes_action else head


class _Squeeze(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.inner(*args)).squeeze(-1)


def sequential_to_layers(module: nn.Module) -> list[dict[str, Any]]:
    """Describe an ``nn.Sequential`` of supported layers as spec layers (for saving).

    Raises:
        PolicyLoadError: the module holds a layer with no spec equivalent.
    """
    mods = list(module) if isinstance(module, nn.Sequential) else [module]
    out: list[dict[str, Any]] = []
    for i, m in enumerate(mods):
        if isinstance(m, nn.Sequential):
            out.extend(sequential_to_layers(m))
        elif isinstance(m, nn.Linear):
            if m.bias is None:
                raise PolicyLoadError(f"layer {i}: Linear without bias is not supported")
            out.append({"type": "linear", "in": m.in_features, "out": m.out_features})
        elif isinstance(m, Affine):
            out.append({"type": "affine", "scale": m.scale.tolist(), "shift": m.shift.tolist()})
        elif isinstance(m, nn.Hardtanh) and not isinstance(m, nn.ReLU6):
            out.append({"type": "hardtanh", "min": m.min_val, "max": m.max_val})
        elif isinstance(m, nn.LeakyReLU):
            out.append({"type": "leaky_relu", "negative_slope": m.negative_slope})
        elif (type(m) is nn.ELU and m.alpha != 1.0) or (
            type(m) is nn.GELU and m.approximate != "none"
        ):
            # the spec records these activations without parameters: describing this one
            # would silently save a different function
            raise PolicyLoadError(f"layer {i}: {m} has parameters the spec cannot record")
        else:
            for name, cls in _ACTIVATIONS.items():
                if type(m) is cls:
                    out.append({"type": name})
                    break
            else:
                raise PolicyLoadError(
                    f"layer {i} ({type(m).__name__}) has no rlsec spec equivalent; supported: "
                    f"{LAYERS}"
                )
    return out
