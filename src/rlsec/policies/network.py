"""Declarative MLP policies: a JSON description of the network, built from an allowlist.

A network spec says how observations enter (``input``), the layers of the actor (``policy``)
and what it outputs (``output``), and optionally a state-value head (``value``) and an
action-value head (``q``): Q(s, ·) for discrete actions, or, with ``q_takes_action``, Q(s, a)
on the features concatenated with the action (first mapped by ``q_action_affine`` when the
critic was trained on rescaled actions). Only the layer types in ``LAYERS`` exist; nothing in
a spec is ever evaluated as code. Weights live in safetensors under the keys of
:class:`PolicyNetwork`'s ``state_dict`` (``policy.0.weight``, ``value.2.bias``, ...).

A spec is untrusted input: :func:`check_network_spec` checks every field before anything is
allocated (unknown fields are refused, sizes are integers in range, ``nvec`` entries and
widths >= 1, a hardtanh's ``min < max``, every constant finite) and bounds the network:
at most :data:`MAX_PARAMS` parameters, :data:`MAX_TENSOR_ELEMENTS` per weight,
:data:`MAX_WIDTH` per layer and :data:`MAX_LAYERS` per block. The optional fields have a
meaning of their own: ``input.scale`` 1, ``leaky_relu.negative_slope`` 0.01 (torch's),
``q_takes_action`` false, no ``value``/``q`` head.

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
from rlsec.policies._untrusted import (
    MAX_CATEGORIES,
    MAX_FEATURES,
    boolean,
    integer,
    number,
    numbers,
    show,
)

__all__ = [
    "LAYERS",
    "MAX_LAYERS",
    "MAX_PARAMS",
    "MAX_TENSOR_ELEMENTS",
    "MAX_WIDTH",
    "OUTPUTS",
    "Affine",
    "PolicyNetwork",
    "check_network_spec",
    "input_dim",
    "sequential_to_layers",
]

OUTPUTS = ("logits", "q_values", "action")
#: most parameters a network may have (2**26 float32 numbers: 256 MiB)
MAX_PARAMS = 2**26
#: most elements of one weight matrix
MAX_TENSOR_ELEMENTS = 2**25
#: widest layer
MAX_WIDTH = 2**20
#: most layers in one block
MAX_LAYERS = 256

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


_LAYER_FIELDS: dict[str, set[str]] = {
    "linear": {"in", "out"},
    "affine": {"scale", "shift"},
    "hardtanh": {"min", "max"},
    "leaky_relu": {"negative_slope"},
}
_INPUT_FIELDS: dict[str, set[str]] = {
    "float": {"dim", "scale"},
    "one_hot": {"n"},
    "multi_one_hot": {"nvec"},
}
_NETWORK_FIELDS = {"input", "policy", "value", "q", "output", "q_takes_action", "q_action_affine"}


def _fields(d: Any, allowed: set[str], where: str) -> dict[str, Any]:
    """``d`` as an object holding only ``allowed`` keys: an unknown key (``"bias": false``)
    would describe a network other than the one built, so it is refused, not ignored."""
    if not isinstance(d, dict):
        raise PolicyLoadError(f"{where}: expected an object, got {show(d)}")
    extra = sorted(set(d) - allowed)
    if extra:
        raise PolicyLoadError(f"{where}: unexpected fields {extra}; allowed: {sorted(allowed)}")
    return d


def _check_input(spec: Any) -> dict[str, Any]:
    """The ``input`` spec, checked: sizes are integers in range, ``nvec`` entries >= 1."""
    if not isinstance(spec, dict):
        raise PolicyLoadError(f"network input must be an object, got {show(spec)}")
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in _INPUT_FIELDS:
        raise PolicyLoadError(
            f"network input type must be float, one_hot or multi_one_hot, got {show(kind)}"
        )
    _fields(spec, {"type"} | _INPUT_FIELDS[kind], "network input")
    if kind == "float":
        integer(spec.get("dim"), "network input.dim", lo=1, hi=MAX_FEATURES)
        if "scale" in spec:
            number(spec["scale"], "network input.scale")
    elif kind == "one_hot":
        integer(spec.get("n"), "network input.n", lo=1, hi=MAX_CATEGORIES)
    else:
        nvec = spec.get("nvec")
        if not isinstance(nvec, list) or not 1 <= len(nvec) <= MAX_FEATURES:
            raise PolicyLoadError(
                f"network input.nvec: expected a non-empty list of integers, got {show(nvec)}"
            )
        sizes = [
            integer(n, f"network input.nvec[{i}]", lo=1, hi=MAX_CATEGORIES)
            for i, n in enumerate(nvec)
        ]
        if sum(sizes) > MAX_FEATURES:
            raise PolicyLoadError(
                f"network input.nvec asks for {sum(sizes)} one-hot features; at most "
                f"{MAX_FEATURES} allowed"
            )
    return spec


class _Input(nn.Module):
    """Turns raw observations into the float features the MLP reads (SB3's preprocessing)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        spec = _check_input(spec)
        self.kind = spec["type"]
        if self.kind == "float":
            self.scale = float(spec.get("scale", 1.0))
        elif self.kind == "one_hot":
            self.sizes = [int(spec["n"])]
        else:
            self.sizes = [int(n) for n in spec["nvec"]]

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
    spec = _check_input(spec)
    kind = spec["type"]
    if kind == "float":
        return int(spec["dim"])
    if kind == "one_hot":
        return int(spec["n"])
    return sum(int(n) for n in spec["nvec"])


def _check_block(name: str, layers: Any, in_features: int) -> tuple[int, int]:
    """Check one block without allocating anything; return (output width, parameters)."""
    if not isinstance(layers, list) or not layers:
        raise PolicyLoadError(f"network block {name!r} must be a non-empty list of layers")
    if len(layers) > MAX_LAYERS:
        raise PolicyLoadError(
            f"network block {name!r} has {len(layers)} layers; at most {MAX_LAYERS} allowed"
        )
    width, params = in_features, 0
    for i, layer in enumerate(layers):
        where = f"{name}[{i}]"
        kind = layer.get("type") if isinstance(layer, dict) else None
        if not isinstance(kind, str) or kind not in LAYERS:
            got = show(kind) if isinstance(layer, dict) else show(layer)
            raise PolicyLoadError(f"{where}: layer type must be one of {LAYERS}, got {got}")
        _fields(layer, {"type"} | _LAYER_FIELDS.get(kind, set()), where)
        if kind == "linear":
            n_in = integer(layer.get("in"), f"{where}.in", lo=1, hi=MAX_WIDTH)
            n_out = integer(layer.get("out"), f"{where}.out", lo=1, hi=MAX_WIDTH)
            if n_in != width:
                raise PolicyLoadError(
                    f"{where}: linear layer expects {n_in} inputs but receives {width}"
                )
            if n_in * n_out > MAX_TENSOR_ELEMENTS:
                raise PolicyLoadError(
                    f"{where}: a {n_out} x {n_in} weight has {n_in * n_out} elements; at most "
                    f"{MAX_TENSOR_ELEMENTS} allowed per tensor"
                )
            params += n_in * n_out + n_out
            width = n_out
        elif kind == "affine":
            scale = numbers(layer.get("scale"), f"{where}.scale", size=width)
            numbers(layer.get("shift"), f"{where}.shift", size=scale.size)
        elif kind == "hardtanh":
            lo = number(layer.get("min"), f"{where}.min")
            hi = number(layer.get("max"), f"{where}.max")
            if not lo < hi:
                raise PolicyLoadError(f"{where}: hardtanh needs min < max, got min {lo}, max {hi}")
        elif kind == "leaky_relu" and "negative_slope" in layer:
            number(layer["negative_slope"], f"{where}.negative_slope")
    return width, params


def _build_layers(name: str, layers: Any, in_features: int) -> tuple[nn.Sequential, int]:
    _, _ = _check_block(name, layers, in_features)
    modules: list[nn.Module] = []
    width = in_features
    for layer in layers:
        kind = layer["type"]
        if kind == "linear":
            modules.append(nn.Linear(int(layer["in"]), int(layer["out"])))
            width = int(layer["out"])
        elif kind == "affine":
            modules.append(
                Affine([float(v) for v in layer["scale"]], [float(v) for v in layer["shift"]])
            )
        elif kind == "hardtanh":
            modules.append(nn.Hardtanh(float(layer["min"]), float(layer["max"])))
        elif kind == "leaky_relu":
            modules.append(nn.LeakyReLU(float(layer.get("negative_slope", 0.01))))
        else:
            modules.append(_ACTIVATIONS[kind]())
    return nn.Sequential(*modules), width


def check_network_spec(
    spec: Any, *, action_dim: int | None = None, max_params: int = MAX_PARAMS
) -> int:
    """Check a network spec completely without allocating anything; return its parameter
    count.

    Raises:
        PolicyLoadError: a field is missing, unknown, of the wrong type or out of range, the
            widths do not chain, or the network would exceed ``max_params`` parameters (and
            never more than :data:`MAX_PARAMS`) or :data:`MAX_TENSOR_ELEMENTS` in one weight.
    """
    spec = _fields(spec, _NETWORK_FIELDS, "network spec")
    dim = input_dim(spec.get("input"))
    output = spec.get("output")
    if output not in OUTPUTS:
        raise PolicyLoadError(f"network output must be one of {OUTPUTS}, got {show(output)}")
    _, total = _check_block("policy", spec.get("policy"), dim)
    if spec.get("value") is not None:
        width, params = _check_block("value", spec["value"], dim)
        if width != 1:
            raise PolicyLoadError(f"value head must output 1 number, outputs {width}")
        total += params
    takes_action = boolean(spec.get("q_takes_action", False), "network q_takes_action")
    affine = spec.get("q_action_affine")
    if affine is not None:
        affine = _fields(affine, {"scale", "shift"}, "network q_action_affine")
        if not takes_action:
            raise PolicyLoadError("network q_action_affine is only meaningful with q_takes_action")
        size = int(action_dim) if action_dim is not None else None
        scale = numbers(affine.get("scale"), "network q_action_affine.scale", size=size)
        numbers(affine.get("shift"), "network q_action_affine.shift", size=scale.size)
    if spec.get("q") is not None:
        q_in = dim + (int(action_dim or 0) if takes_action else 0)
        total += _check_block("q", spec["q"], q_in)[1]
    limit = min(int(max_params), MAX_PARAMS)
    if total > limit:
        raise PolicyLoadError(
            f"network spec asks for {total} parameters; at most {limit} allowed here"
        )
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
        max_params: int = MAX_PARAMS,
    ) -> None:
        super().__init__()
        # every field, size and the parameter count are checked before anything is allocated
        check_network_spec(spec, action_dim=action_dim, max_params=max_params)
        self.spec = copy.deepcopy(spec)
        try:
            self._input = _Input(spec["input"])
            dim = input_dim(spec["input"])
            self.output = cast(Literal["logits", "q_values", "action"], spec["output"])
            self.policy, self.out_dim = _build_layers("policy", spec["policy"], dim)
            self.value: nn.Sequential | None = None
            self.q: nn.Sequential | None = None
            if spec.get("value") is not None:
                self.value, _ = _build_layers("value", spec["value"], dim)
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
        except (KeyError, TypeError, ValueError) as exc:  # a check above missed something
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
