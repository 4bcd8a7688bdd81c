"""Certified bounds on a policy's outputs when its observations are perturbed.

Every function here takes a batch of clean observations ``x0`` and a budget ``eps`` and
reasons about *every* observation in the box ``x0 ± eps`` (linf; ``eps`` in raw observation
units, a scalar, one number per feature, or per state; pass ``k * std`` for ``k`` standard
deviations), intersected with the observation space's bounds widened to include ``x0``,
exactly the set an attack's :class:`~rlsec.attacks._ball.Ball` may reach. Two methods:

* ``"ibp"``: interval bound propagation (Gowal et al. 2018): intervals pushed layer by layer.
* ``"crown"`` (default): CROWN (Zhang et al. 2018; the backward mode of auto_LiRPA): each
  activation is enclosed between two lines and linear bounds are propagated backward from
  the quantity bounded to the input box. Intermediate layers are bounded the same way, and
  every CROWN bound is intersected with the IBP bound, so it is never looser than IBP.

Action questions are margin specifications: CROWN bounds ``out_a - out_b`` directly, which
is much tighter than subtracting two intervals. All results are sound over-approximations
for the network in exact arithmetic (bounds are computed in float64); the float32 forward
pass may differ from it by rounding, around 1e-6 relative.

Supported actors: MLPs of Linear, Affine, ReLU, LeakyReLU, Tanh, Sigmoid, ELU (alpha >= 0),
Hardtanh, ReLU6, SiLU, GELU and Identity (the layers of :mod:`rlsec.policies.network`), on
feature-vector (Box) observations. ReLU-like, Hardtanh, Tanh, Sigmoid and ELU with
alpha <= 1 get linear relaxations; SiLU and GELU get them where they are convex and interval
bounds elsewhere (they are not monotone; their interval bounds use their minimum), as does
ELU with alpha > 1 where it is not convex.

Example:
    >>> import gymnasium as gym, numpy as np, torch
    >>> from rlsec.policies import from_torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    >>> with torch.no_grad():  # logits: ~(x1 - x2, x2 - x1), so either action can win
    ...     _ = net[0].weight.zero_(); _ = net[0].bias.zero_(); _ = net[2].bias.zero_()
    ...     _ = net[0].weight[0].copy_(torch.tensor([1.0, -1.0]))
    ...     _ = net[2].weight.zero_(); _ = net[2].weight[0, 0].fill_(1.0)
    ...     _ = net[2].weight[1, 0].fill_(-1.0)
    >>> p = from_torch(net, gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2))
    >>> x0 = np.tile(np.float32([0.5, 0.0]), (5, 1))  # clean action 0
    >>> reachable_actions(p, x0, 0.0).sum(axis=1).tolist()  # no budget: only the clean action
    [1, 1, 1, 1, 1]
    >>> bool(reachable_actions(p, x0, 1.0).all())  # the whole space: both actions possible
    True
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlsec.core import DifferentiablePolicy
from rlsec.errors import ConfigError, InvalidBudget, SpaceMismatch
from rlsec.policies.base import output_width
from rlsec.policies.network import Affine, _Head, _Input
from rlsec.policies.spaces import describe_space

__all__ = [
    "Method",
    "action_bounds",
    "certified_radius",
    "certify",
    "output_bounds",
    "reachable_actions",
]

Method = Literal["crown", "ibp"]

_DT = torch.float64
_BISECT = 14  # bisection steps for the tangent points of tanh and sigmoid (tightness only)
_CHUNK_ELEMENTS = 2**23  # float64 elements per working tensor: bounds memory on big layers
_SUPPORTED = (
    "Linear, Affine, ReLU, LeakyReLU, Tanh, Sigmoid, ELU, Hardtanh, ReLU6, SiLU, GELU, "
    "Identity in nn.Sequential"
)

# -- the network, compiled to alternating affine maps and activations -----------------------


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


# -- activations: values, derivatives, intervals and linear relaxations ---------------------

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_TANH_C = math.sqrt(2.0 / math.pi)
# Where SiLU and GELU are convex: |x| below the roots of their second derivative
# (2 + x(1 - 2σ(x)) = 0 at ±2.39936 for SiLU; 2 - x² = 0 at ±√2 for GELU), kept inside.
_CONVEX_HALF_WIDTH = {"silu": 2.3993, "gelu": 1.4142}


def _f(act: _Act, x: torch.Tensor) -> torch.Tensor:
    kind = act.kind
    if kind == "leaky":
        return torch.where(x >= 0, x, act.p * x)
    if kind == "hardtanh":
        return x.clamp(act.p, act.q)
    if kind == "tanh":
        return torch.tanh(x)
    if kind == "sigmoid":
        return torch.sigmoid(x)
    if kind == "elu":
        return torch.where(x > 0, x, act.p * torch.expm1(x.clamp(max=0)))
    if kind == "silu":
        return x * torch.sigmoid(x)
    if kind == "gelu":
        return 0.5 * x * (1.0 + torch.erf(x / _SQRT2))
    if kind == "gelu_tanh":
        return 0.5 * x * (1.0 + torch.tanh(_GELU_TANH_C * (x + 0.044715 * x**3)))
    raise AssertionError(kind)  # pragma: no cover - _activation only makes the kinds above


def _df(act: _Act, x: torch.Tensor) -> torch.Tensor:
    """Derivative (a subgradient at kinks) of the smooth kinds that get tangent lines."""
    kind = act.kind
    if kind == "tanh":
        t = torch.tanh(x)
        return 1.0 - t * t
    if kind == "sigmoid":
        s = torch.sigmoid(x)
        return s * (1.0 - s)
    if kind == "elu":
        return torch.where(x > 0, torch.ones_like(x), act.p * torch.exp(x.clamp(max=0)))
    if kind == "silu":
        s = torch.sigmoid(x)
        return s * (1.0 + x * (1.0 - s))
    if kind == "gelu":
        return 0.5 * (1.0 + torch.erf(x / _SQRT2)) + x * _INV_SQRT_2PI * torch.exp(-0.5 * x * x)
    raise AssertionError(kind)  # pragma: no cover


@functools.cache
def _minimum(act: _Act) -> tuple[float, float, float]:
    """``(x*, f_min, w)`` of a non-monotone activation: it decreases before ``x*`` and
    increases after; ``x*`` is known to within ``w`` and ``f_min`` is a lower bound."""
    if act.kind == "leaky":  # negative slope: a V with its tip at 0
        return 0.0, 0.0, 0.0
    x = torch.linspace(-4.0, 0.0, 400_001, dtype=_DT)  # grid step 1e-5
    y = _f(act, x)
    i = int(y.argmin())
    return float(x[i]), float(y[i]) - 1e-9, 1e-4


def _monotone(act: _Act) -> bool:
    return act.kind in ("hardtanh", "tanh", "sigmoid", "elu") or (
        act.kind == "leaky" and act.p >= 0
    )


def _interval(act: _Act, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact range of the activation over ``[lo, hi]`` (elementwise)."""
    f_lo, f_hi = _f(act, lo), _f(act, hi)
    if _monotone(act):
        return f_lo, f_hi
    # Decreasing then increasing (quasi-convex): the maximum is at an end, the minimum at
    # x* when the interval holds it.
    x_min, f_min, w = _minimum(act)
    holds = (lo <= x_min + w) & (hi >= x_min - w)
    low = torch.where(holds, torch.full_like(lo, f_min), torch.minimum(f_lo, f_hi))
    return low, torch.maximum(f_lo, f_hi)


_Relaxation = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _relax(act: _Act, lo: torch.Tensor, hi: torch.Tensor) -> _Relaxation:
    """Lines ``aL·x + cL <= σ(x) <= aU·x + cU`` valid on ``[lo, hi]`` (elementwise)."""
    f_lo, f_hi = _f(act, lo), _f(act, hi)
    width = (hi - lo).clamp(min=1e-300)
    k = (f_hi - f_lo) / width  # the chord
    kc = f_lo - k * lo
    kind = act.kind
    if kind == "leaky":
        aL, cL, aU, cU = _relax_leaky(act.p, lo, hi, k, kc)
    elif kind == "hardtanh":
        aL, cL, aU, cU = _relax_hardtanh(act.p, act.q, lo, hi, k, kc)
    elif kind in ("tanh", "sigmoid"):
        aL, cL, aU, cU = _relax_s_shaped(act, lo, hi, f_lo, f_hi, k, kc)
    else:
        if kind == "elu":
            convex = (hi <= 0) | (lo >= 0) | torch.tensor(act.p <= 1.0)
        elif kind in _CONVEX_HALF_WIDTH:
            c = _CONVEX_HALF_WIDTH[kind]
            convex = (lo >= -c) & (hi <= c)
        else:  # gelu_tanh: interval bounds only
            convex = torch.zeros_like(lo, dtype=torch.bool)
        i_lo, i_hi = _interval(act, lo, hi)
        zero = torch.zeros_like(lo)
        aL, cL, aU, cU = zero, i_lo, zero, i_hi
        if bool(convex.any()):
            m = 0.5 * (lo + hi)  # convex: the chord above, the tangent at the midpoint below
            t = _df(act, m)
            aL = torch.where(convex, t, aL)
            cL = torch.where(convex, _f(act, m) - t * m, cL)
            aU = torch.where(convex, k, aU)
            cU = torch.where(convex, kc, cU)
    # Very narrow intervals: constant bounds are as good and avoid the chord's cancellation.
    narrow = (hi - lo) <= 1e-9 * (1.0 + lo.abs())
    if bool(narrow.any()):
        i_lo, i_hi = _interval(act, lo, hi)
        zero = torch.zeros_like(lo)
        aL, cL = torch.where(narrow, zero, aL), torch.where(narrow, i_lo, cL)
        aU, cU = torch.where(narrow, zero, aU), torch.where(narrow, i_hi, cU)
    return aL, cL, aU, cU


def _relax_leaky(
    slope: float, lo: torch.Tensor, hi: torch.Tensor, k: torch.Tensor, kc: torch.Tensor
) -> _Relaxation:
    """``x ≥ 0 ? x : slope·x``: convex for slope <= 1 (ReLU: slope 0), concave above.

    The chord bounds one side; the other is a line through 0 with slope 1 or ``slope``,
    whichever side of 0 the interval mostly covers (CROWN's adaptive choice)."""
    one = torch.ones_like(lo)
    through_zero = torch.where(
        lo >= 0, one, torch.where(hi <= 0, slope * one, torch.where(hi >= -lo, one, slope * one))
    )
    zero = torch.zeros_like(lo)
    if slope <= 1.0:
        return through_zero, zero, k, kc
    return k, kc, through_zero, zero


def _relax_hardtanh(
    m0: float, m1: float, lo: torch.Tensor, hi: torch.Tensor, k: torch.Tensor, kc: torch.Tensor
) -> _Relaxation:
    """``clamp(x, m0, m1)``. The chord is exact where the interval holds no kink or one
    kink on the convex (lower) side for the upper bound, and symmetrically."""
    one, zero = torch.ones_like(lo), torch.zeros_like(lo)
    both = (lo < m0) & (hi > m1)
    low_kink = (lo < m0) & (hi > m0) & ~both  # convex: chord above
    high_kink = (lo < m1) & (hi > m1) & ~both  # concave: chord below
    # lower: the chord, except y = x or y = m0 across the low kink, and the line through
    # (m0, m0) and (hi, m1) across both kinks
    aL = torch.where(low_kink, torch.where(hi - m0 >= m0 - lo, one, zero), k)
    cL = torch.where(low_kink, torch.where(hi - m0 >= m0 - lo, zero, m0 * one), kc)
    s = (m1 - m0) / (hi - m0).clamp(min=1e-300)
    aL = torch.where(both, s, aL)
    cL = torch.where(both, m0 - s * m0, cL)
    # upper: the mirror image
    aU = torch.where(high_kink, torch.where(m1 - lo >= hi - m1, one, zero), k)
    cU = torch.where(high_kink, torch.where(m1 - lo >= hi - m1, zero, m1 * one), kc)
    s = (m1 - m0) / (m1 - lo).clamp(min=1e-300)
    aU = torch.where(both, s, aU)
    cU = torch.where(both, m1 - s * m1, cU)
    return aL, cL, aU, cU


def _relax_s_shaped(
    act: _Act,
    lo: torch.Tensor,
    hi: torch.Tensor,
    f_lo: torch.Tensor,
    f_hi: torch.Tensor,
    k: torch.Tensor,
    kc: torch.Tensor,
) -> _Relaxation:
    """Tanh and sigmoid: convex below 0, concave above (CROWN's general-activation bounds).

    On one side of 0 the chord and the tangent at the midpoint bound the function. Across 0,
    the upper line is the tangent at ``d ∈ [0, hi]`` that passes through ``(lo, σ(lo))``, or
    the chord when that tangent point would lie beyond ``hi``; the lower line mirrors it.
    ``d`` is found by bisection that keeps the sound side: any tangent point at or beyond
    the exact one gives a valid (slightly looser) line.
    """
    m = 0.5 * (lo + hi)
    t = _df(act, m)
    tc = _f(act, m) - t * m
    convex = hi <= 0
    concave = lo >= 0
    aL, cL = torch.where(concave, k, t), torch.where(concave, kc, tc)
    aU, cU = torch.where(convex, k, t), torch.where(convex, kc, tc)
    mixed = ~(convex | concave)
    if not bool(mixed.any()):
        return aL, cL, aU, cU
    aL, cL, aU, cU = aL.clone(), cL.clone(), aU.clone(), cU.clone()
    lo_m, hi_m, flo_m, fhi_m = lo[mixed], hi[mixed], f_lo[mixed], f_hi[mixed]
    k_m, kc_m = k[mixed], kc[mixed]

    sig = act.kind == "sigmoid"

    def gap(d: torch.Tensor, x: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
        """Tangent at ``d`` evaluated at ``x``, minus ``σ(x)`` (one transcendental call)."""
        y = torch.sigmoid(d) if sig else torch.tanh(d)
        slope = y * (1.0 - y) if sig else 1.0 - y * y
        return y + slope * (x - d) - fx

    # upper: need gap(d, lo) >= 0 (the line is above σ(lo)); gap(0, lo) < 0 always
    chord = gap(hi_m, lo_m, flo_m) < 0
    d_lo, d_hi = torch.zeros_like(lo_m), hi_m.clone()
    for _ in range(_BISECT):
        mid = 0.5 * (d_lo + d_hi)
        ok = gap(mid, lo_m, flo_m) >= 0
        d_hi, d_lo = torch.where(ok, mid, d_hi), torch.where(ok, d_lo, mid)
    slope = _df(act, d_hi)
    aU[mixed] = torch.where(chord, k_m, slope)
    cU[mixed] = torch.where(chord, kc_m, _f(act, d_hi) - slope * d_hi)
    # lower: need gap(d, hi) <= 0 (the line is below σ(hi)); gap(0, hi) > 0 always
    chord = gap(lo_m, hi_m, fhi_m) >= 0
    d_lo, d_hi = lo_m.clone(), torch.zeros_like(lo_m)
    for _ in range(_BISECT):
        mid = 0.5 * (d_lo + d_hi)
        ok = gap(mid, hi_m, fhi_m) <= 0
        d_lo, d_hi = torch.where(ok, mid, d_lo), torch.where(ok, d_hi, mid)
    slope = _df(act, d_lo)
    aL[mixed] = torch.where(chord, k_m, slope)
    cL[mixed] = torch.where(chord, kc_m, _f(act, d_lo) - slope * d_lo)
    return aL, cL, aU, cU


# -- propagation ----------------------------------------------------------------------------


def _affine_interval(
    w: torch.Tensor, b: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    c = 0.5 * (lo + hi) @ w.T + b
    r = 0.5 * (hi - lo) @ w.abs().T
    return c - r, c + r


def _spec_interval(spec: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Lower bound of ``spec @ y`` for ``y`` in ``[lo, hi]``; spec ``(S, n)`` or ``(B, S, n)``."""
    pos, neg = spec.clamp(min=0), spec.clamp(max=0)
    if spec.dim() == 2:
        return lo @ pos.T + hi @ neg.T
    return (pos @ lo[:, :, None] + neg @ hi[:, :, None]).squeeze(-1)


def _backward(
    net: _Net,
    k: int,
    spec: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    relax: list[_Relaxation],
) -> torch.Tensor:
    """CROWN: lower bound of ``spec @ L_k(h_k)`` over the input box, ``(B, S)``.

    ``spec`` is shared ``(S, n)`` or per state ``(B, S, n)``. Going backward, each activation
    is replaced by its lower line where the coefficient is positive and its upper line where
    it is negative; what is left at the input is a linear function, minimised over the box.
    """
    a = spec @ net.weights[k]  # (S, n_k) or (B, S, n_k)
    const = spec @ net.biases[k]  # (S,) or (B, S)
    for i in range(k - 1, -1, -1):
        aL, cL, aU, cU = relax[i]
        pos, neg = a.clamp(min=0), a.clamp(max=0)
        w, b = net.weights[i], net.biases[i]
        if a.dim() == 2:
            # Shared coefficients: fold the per-state slopes into one GEMM per sign,
            # (B, n_i) @ (n_i, S * n_prev), instead of materialising (B, S, n_i).
            s, n_i = a.shape
            n_prev = int(w.shape[1])
            const = const + (cL + aL * b) @ pos.T + (cU + aU * b) @ neg.T
            mp = (pos[:, :, None] * w[None]).permute(1, 0, 2).reshape(n_i, s * n_prev)
            mn = (neg[:, :, None] * w[None]).permute(1, 0, 2).reshape(n_i, s * n_prev)
            a = (aL @ mp + aU @ mn).reshape(-1, s, n_prev)
        else:
            const = const + (
                (pos @ (cL + aL * b)[:, :, None]) + (neg @ (cU + aU * b)[:, :, None])
            ).squeeze(-1)
            a = (pos * aL[:, None, :] + neg * aU[:, None, :]) @ w
    center, radius = 0.5 * (lo + hi), 0.5 * (hi - lo)
    if a.dim() == 2:
        return const + center @ a.T - radius @ a.abs().T
    lin = (a @ center[:, :, None] - a.abs() @ radius[:, :, None]).squeeze(-1)
    return const + lin


def _lower_chunk(
    net: _Net, lo: torch.Tensor, hi: torch.Tensor, spec: torch.Tensor, method: Method
) -> torch.Tensor:
    """Lower bounds of ``spec @ out`` over the boxes ``[lo, hi]`` of one chunk of states."""
    crown = method == "crown"
    relax: list[_Relaxation] = []
    z_lo, z_hi = _affine_interval(net.weights[0], net.biases[0], lo, hi)  # exact
    m = len(net.acts)
    for k in range(1, m + 1):
        act = net.acts[k - 1]
        if crown:
            relax.append(_relax(act, z_lo, z_hi))
        h_lo, h_hi = _interval(act, z_lo, z_hi)
        z_lo, z_hi = _affine_interval(net.weights[k], net.biases[k], h_lo, h_hi)
        if crown and k < m:  # an intermediate layer: refine its IBP bounds by CROWN
            n = int(net.weights[k].shape[0])
            eye = torch.eye(n, dtype=_DT)
            low = _backward(net, k, torch.cat([eye, -eye]), lo, hi, relax)
            z_lo = torch.maximum(z_lo, low[:, :n])
            z_hi = torch.maximum(torch.minimum(z_hi, -low[:, n:]), z_lo)
    bound = _spec_interval(spec, z_lo, z_hi)
    if crown:
        bound = torch.maximum(bound, _backward(net, m, spec, lo, hi, relax))
    return bound


def _lower(
    net: _Net, lo: torch.Tensor, hi: torch.Tensor, spec: torch.Tensor, method: Method
) -> torch.Tensor:
    """:func:`_lower_chunk` over the whole batch, a chunk of states at a time."""
    b = int(lo.shape[0])
    step = net.chunk(int(spec.shape[-2]))
    parts = []
    for s in range(0, b, step):
        part = spec if spec.dim() == 2 else spec[s : s + step]
        parts.append(_lower_chunk(net, lo[s : s + step], hi[s : s + step], part, method))
    if not parts:
        return torch.zeros(0, int(spec.shape[-2]), dtype=_DT)
    return torch.cat(parts)


# -- the problem: a policy, a batch of states, their boxes ----------------------------------


class _Problem:
    """A compiled policy and a batch of clean observations, with their clean outputs."""

    def __init__(self, policy: DifferentiablePolicy, observations: np.ndarray, method: str):
        if method not in ("crown", "ibp"):
            raise ConfigError(f"method must be 'crown' or 'ibp', got {method!r}")
        self.method: Method = "crown" if method == "crown" else "ibp"
        self.net = _compile(policy)
        space = policy.observation_space
        assert isinstance(space, gym.spaces.Box)  # _compile checked it
        obs = np.asarray(observations)
        shape = tuple(space.shape)
        self.obs_shape = shape
        if obs.ndim != len(shape) + 1 or tuple(obs.shape[1:]) != shape:
            raise SpaceMismatch(
                f"expected a batch of observations of shape (B, {', '.join(map(str, shape))}) "
                f"for {describe_space(space)}, got shape {obs.shape}"
            )
        if not np.issubdtype(obs.dtype, np.number) or not np.isfinite(obs).all():
            raise SpaceMismatch("observations must be finite numbers")
        obs32 = np.ascontiguousarray(obs, dtype=np.float32)
        self.n = obs32.shape[0]
        self.x0 = torch.from_numpy(obs32.reshape(self.n, -1).astype(np.float64))
        d = self.net.in_dim
        if self.x0.shape[1] != d:
            raise SpaceMismatch(
                f"the actor reads {d} features, observations have {self.x0.shape[1]}"
            )
        self.low = torch.from_numpy(np.asarray(space.low, dtype=np.float64).reshape(-1))
        self.high = torch.from_numpy(np.asarray(space.high, dtype=np.float64).reshape(-1))
        self.action_space = policy.action_space
        want = output_width(policy.action_space, policy.output)
        if self.net.out_dim != want:
            raise SpaceMismatch(
                f"the actor outputs {self.net.out_dim} numbers, "
                f"{describe_space(policy.action_space)} with output {policy.output!r} needs {want}"
            )
        with torch.no_grad():
            out = policy.torch_module()(torch.from_numpy(obs32))
        self.clean = out.detach().to("cpu", torch.float32).reshape(self.n, -1).numpy()
        if not np.isfinite(self.clean).all():
            rows = np.flatnonzero(~np.isfinite(self.clean).all(axis=1))
            raise ConfigError(
                f"the policy's outputs are NaN or infinite on {rows.size} observations (first: "
                f"row {int(rows[0])}); no bound is certified for a network that overflows"
            )

    def radius(self, eps: Any) -> np.ndarray:
        """A budget as radii ``(d,)`` (scalar or per feature) or ``(B, d)`` (per state)."""
        arr = np.asarray(eps, dtype=np.float64)
        d, shape = self.net.in_dim, self.obs_shape
        if arr.ndim == 0 or arr.shape in ((d,), shape):
            return _per_feature(arr, d, "eps")
        if arr.shape in ((self.n, 1), (self.n, d), (self.n, *shape)):
            out = np.broadcast_to(arr.reshape(self.n, -1), (self.n, d))
            if not np.isfinite(out).all() or (out < 0).any():
                raise InvalidBudget("eps must be finite and >= 0")
            return out
        raise InvalidBudget(
            f"eps must be a scalar, one number per feature {shape}, one per state ({self.n}, 1)"
            f" or one per state and feature ({self.n}, {d}); got shape {arr.shape}"
        )

    def box(self, rows: np.ndarray, radius: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The boxes of ``rows`` for per-state radii ``(len(rows), d)`` or ``(d,)``."""
        x0 = self.x0[rows]
        r = torch.from_numpy(np.broadcast_to(radius, x0.shape).astype(np.float64))
        lo = torch.maximum(x0 - r, torch.minimum(self.low, x0))
        hi = torch.minimum(x0 + r, torch.maximum(self.high, x0))
        return lo, hi

    def lower(self, rows: np.ndarray, radius: np.ndarray, spec: torch.Tensor) -> torch.Tensor:
        lo, hi = self.box(rows, radius)
        return _lower(self.net, lo, hi, spec, self.method)

    def output_bounds(self, rows: np.ndarray, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = self.net.out_dim
        eye = torch.eye(n, dtype=_DT)
        low = self.lower(rows, radius, torch.cat([eye, -eye])).numpy()
        lower, upper = low[:, :n], -low[:, n:]
        # a bound that overflowed to NaN says nothing: widen it to the whole line
        lower = np.where(np.isnan(lower), -np.inf, lower)
        upper = np.where(np.isnan(upper), np.inf, upper)
        # on a degenerate box the two bounds meet, up to a rounding that may cross them
        return np.minimum(lower, upper), np.maximum(lower, upper)

    # -- discrete actions ---------------------------------------------------------------
    def n_actions(self, what: str) -> int:
        if not isinstance(self.action_space, gym.spaces.Discrete):
            raise SpaceMismatch(
                f"{what} needs a Discrete action space, got {describe_space(self.action_space)}"
            )
        return int(self.action_space.n)

    def clean_index(self) -> np.ndarray:
        idx: np.ndarray = self.clean.argmax(axis=1)
        return idx

    def certified_discrete(self, rows: np.ndarray, radius: np.ndarray) -> np.ndarray:
        """Whether the clean action provably stays the unique argmax in each row's box."""
        n = self.n_actions("certification")
        if n == 1:
            return np.ones(len(rows), dtype=bool)
        c = torch.from_numpy(self.clean_index()[rows])
        eye = torch.eye(n, dtype=_DT)
        others = torch.tensor([[b for b in range(n) if b != a] for a in range(n)])
        spec = eye[c][:, None, :] - eye[others[c]]  # rows e_c - e_b, b != c
        low = self.lower(rows, radius, spec)
        ok: np.ndarray = (torch.isfinite(low) & (low > 0)).all(dim=1).numpy()  # NaN: not > 0
        return ok

    # -- continuous actions -------------------------------------------------------------
    def box_actions(self, what: str) -> gym.spaces.Box:
        if not isinstance(self.action_space, gym.spaces.Box):
            raise SpaceMismatch(
                f"{what} needs a Box action space, got {describe_space(self.action_space)}"
            )
        return self.action_space

    def action_bounds(self, rows: np.ndarray, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        box = self.box_actions("action bounds")
        low, high = self.output_bounds(rows, radius)
        a_lo = np.asarray(box.low, dtype=np.float64).reshape(-1)
        a_hi = np.asarray(box.high, dtype=np.float64).reshape(-1)
        return np.clip(low, a_lo, a_hi), np.clip(high, a_lo, a_hi)

    def certified_continuous(
        self, rows: np.ndarray, radius: np.ndarray, delta: np.ndarray
    ) -> np.ndarray:
        box = self.box_actions("certification with delta")
        low, high = self.action_bounds(rows, radius)
        a_lo = np.asarray(box.low, dtype=np.float64).reshape(-1)
        a_hi = np.asarray(box.high, dtype=np.float64).reshape(-1)
        clean = np.clip(self.clean[rows].astype(np.float64), a_lo, a_hi)
        # NaN (and an infinite bound) compares False: not certified
        ok: np.ndarray = ((high - clean <= delta) & (clean - low <= delta)).all(axis=1)
        return ok


def _per_feature(value: Any, d: int, what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(d, float(arr))
    elif arr.size == d:
        arr = arr.reshape(-1)
    else:
        raise InvalidBudget(
            f"{what} must be a scalar or one number per feature ({d}), got shape {arr.shape}"
        )
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise InvalidBudget(f"{what} must be finite and >= 0, got {value!r}")
    return arr


def _all(problem: _Problem) -> np.ndarray:
    return np.arange(problem.n)


# -- public API -----------------------------------------------------------------------------


def output_bounds(
    policy: DifferentiablePolicy, observations: np.ndarray, eps: Any, *, method: Method = "crown"
) -> tuple[np.ndarray, np.ndarray]:
    """Certified lower and upper bounds on the actor's outputs over each state's box.

    The outputs are what ``policy.torch_module()`` returns: logits, Q-values, or continuous
    actions *before* clipping to the action space (see :func:`action_bounds` for clipped
    ones), flattened to ``(B, n_outputs)``.

    Args:
        observations: clean observations ``(B, *observation_shape)``.
        eps: linf radius in raw observation units: a scalar, one number per feature, or one
            per state ``(B, 1)`` or per state and feature ``(B, d)``.
        method: ``"crown"`` (tighter) or ``"ibp"`` (faster, looser).

    Returns:
        ``(lower, upper)``, float64 arrays of shape ``(B, n_outputs)``.

    Raises:
        SpaceMismatch: not a Box observation space, or observations of the wrong shape.
        ConfigError: the actor holds a layer that cannot be bounded (the message names it).
        InvalidBudget: ``eps`` negative, not finite or of the wrong shape.

    Example:
        >>> import gymnasium as gym, numpy as np, torch
        >>> from rlsec.policies import from_torch
        >>> lin = torch.nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        ...     _ = lin.bias.zero_()
        >>> p = from_torch(lin, gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2))
        >>> lo, hi = output_bounds(p, np.array([[0.5, 0.0]], dtype=np.float32), [0.1, 0.2])
        >>> lo.round(6).tolist(), hi.round(6).tolist()
        ([[0.2, 0.2]], [[0.8, 0.8]])
    """
    problem = _Problem(policy, observations, method)
    return problem.output_bounds(_all(problem), problem.radius(eps))


def action_bounds(
    policy: DifferentiablePolicy, observations: np.ndarray, eps: Any, *, method: Method = "crown"
) -> tuple[np.ndarray, np.ndarray]:
    """Certified per-dimension bounds on a continuous policy's action (clipped to the space).

    Args:
        observations: clean observations ``(B, *observation_shape)``.
        eps: linf radius in raw observation units: a scalar, one number per feature, or one
            per state ``(B, 1)`` or per state and feature ``(B, d)``.
        method: ``"crown"`` or ``"ibp"``.

    Returns:
        ``(lower, upper)``, float64 arrays of shape ``(B, action_dim)``: every action the
        policy takes on a state of the box lies between them.

    Raises:
        SpaceMismatch: the action space is not a Box (and the errors of :func:`output_bounds`).

    Example:
        >>> from rlsec.policies import load_policy
        >>> p = load_policy("zoo:pendulum-sac")
        >>> x0 = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)
        >>> lo, hi = action_bounds(p, x0, 0.01)
        >>> a = p.act(x0)
        >>> bool(lo[0, 0] <= a[0, 0] <= hi[0, 0] and -2 <= lo[0, 0] and hi[0, 0] <= 2)
        True
    """
    problem = _Problem(policy, observations, method)
    return problem.action_bounds(_all(problem), problem.radius(eps))


def reachable_actions(
    policy: DifferentiablePolicy, observations: np.ndarray, eps: Any, *, method: Method = "crown"
) -> np.ndarray:
    """Which discrete actions the policy may take somewhere in each state's box.

    Action ``a`` is ruled out only when some action ``b`` provably beats it everywhere in
    the box (a certified lower bound of ``out_b - out_a`` above 0, CROWN bounding the margin
    directly). The result over-approximates the set of argmax actions over the box (sound
    for an attacker's choices); the clean action is always in it. Column ``i`` is action
    ``action_space.start + i``. Q-value policies are treated like logits.

    Args:
        observations: clean observations ``(B, *observation_shape)``.
        eps: linf radius in raw observation units: a scalar, one number per feature, or one
            per state ``(B, 1)`` or per state and feature ``(B, d)``.
        method: ``"crown"`` or ``"ibp"``.

    Returns:
        Boolean array ``(B, n_actions)``.

    Raises:
        SpaceMismatch: the action space is not Discrete (and the errors of
            :func:`output_bounds`).

    Example:
        >>> import gymnasium as gym, numpy as np, torch
        >>> from rlsec.policies import from_torch
        >>> lin = torch.nn.Linear(1, 3)
        >>> with torch.no_grad():  # logits x, 0.1, -x: action 1 iff |x| < 0.1
        ...     _ = lin.weight.copy_(torch.tensor([[1.0], [0.0], [-1.0]]))
        ...     _ = lin.bias.copy_(torch.tensor([0.0, 0.1, 0.0]))
        >>> p = from_torch(lin, gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(3))
        >>> reachable_actions(p, np.array([[0.5], [0.05]], dtype=np.float32), 0.1).tolist()
        [[True, False, False], [True, True, False]]
    """
    problem = _Problem(policy, observations, method)
    n = problem.n_actions("reachable_actions")
    rows = _all(problem)
    clean = problem.clean_index()
    reach = np.zeros((problem.n, n), dtype=bool)
    reach[rows, clean] = True
    if n == 1:
        return reach
    eye = torch.eye(n, dtype=_DT)
    # rows grouped by the action under test a: e_b - e_a for every b != a
    spec = torch.stack([eye[b] - eye[a] for a in range(n) for b in range(n) if b != a])
    low = problem.lower(rows, problem.radius(eps), spec).reshape(problem.n, n, n - 1)
    beaten = torch.isfinite(low) & (low > 0)  # a NaN or infinite bound rules nothing out
    reach |= ~beaten.any(dim=2).numpy()
    return reach


def certify(
    policy: DifferentiablePolicy,
    observations: np.ndarray,
    eps: Any,
    *,
    method: Method = "crown",
    delta: Any = None,
) -> np.ndarray:
    """Whether each state's action provably does not change anywhere in its box.

    Discrete actions: the clean action stays the unique argmax (margins against every other
    action bounded above 0). Continuous actions (pass ``delta``): every dimension of the
    clipped action stays within ``delta`` (scalar or per dimension, action units) of the clean
    clipped action.

    Args:
        observations: clean observations ``(B, *observation_shape)``.
        eps: linf radius in raw observation units: a scalar, one number per feature, or one
            per state ``(B, 1)`` or per state and feature ``(B, d)``.
        method: ``"crown"`` or ``"ibp"``.
        delta: tolerance on continuous actions; required for them, refused for discrete ones.

    Returns:
        Boolean array ``(B,)``.

    Raises:
        ConfigError: ``delta`` missing for a Box action space or given for another.
        SpaceMismatch: neither a Discrete nor a Box action space (and the errors of
            :func:`output_bounds`).

    Example:
        >>> import gymnasium as gym, numpy as np, torch
        >>> from rlsec.policies import from_torch
        >>> lin = torch.nn.Linear(1, 2)
        >>> with torch.no_grad():  # logits x, 0: action 0 iff x > 0
        ...     _ = lin.weight.copy_(torch.tensor([[1.0], [0.0]]))
        ...     _ = lin.bias.zero_()
        >>> p = from_torch(lin, gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(2))
        >>> certify(p, np.array([[0.5], [0.05]], dtype=np.float32), 0.1).tolist()
        [True, False]
    """
    problem = _Problem(policy, observations, method)
    check = _checker(problem, delta)
    return check(_all(problem), problem.radius(eps))


def certified_radius(
    policy: DifferentiablePolicy,
    observations: np.ndarray,
    *,
    method: Method = "crown",
    eps_max: float = 1.0,
    tol: float = 1e-3,
    scale: Any = None,
    delta: Any = None,
) -> np.ndarray:
    """Per state, the largest certified linf radius, found by bisection (batched over states).

    The radius is in units of ``scale`` (a per-feature vector, e.g. the observation standard
    deviations; the box is ``x0 ± r·scale``; features with scale 0 are not perturbed), or in
    raw observation units when ``scale`` is None. For discrete actions it is the largest
    ``r`` at which :func:`certify` proves the action unchanged; for continuous actions (pass
    ``delta``) the largest at which every action dimension provably stays within ``delta``
    of the clean action. The answer is certified (a lower end of the bisection interval)
    and within ``tol`` of the largest radius the method can certify; states certified at
    ``eps_max`` get ``eps_max`` (read it as "at least"), and 0 means none was certified.

    Args:
        observations: clean observations ``(B, *observation_shape)``.
        method: ``"crown"`` or ``"ibp"``.
        eps_max: the largest radius tried (in units of ``scale``).
        tol: bisection precision (in units of ``scale``).
        scale: per-feature unit of the radius; None for raw units.
        delta: action tolerance for continuous actions, as in :func:`certify`.

    Returns:
        Float64 array ``(B,)``.

    Raises:
        InvalidBudget: ``eps_max``, ``tol`` or ``scale`` out of range (and the errors of
            :func:`certify`).

    Example:
        >>> import gymnasium as gym, numpy as np, torch
        >>> from rlsec.policies import from_torch
        >>> lin = torch.nn.Linear(2, 2)
        >>> with torch.no_grad():  # logits x1 + x2, 0: the margin shrinks by 2ε
        ...     _ = lin.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
        ...     _ = lin.bias.zero_()
        >>> p = from_torch(lin, gym.spaces.Box(-9, 9, (2,)), gym.spaces.Discrete(2))
        >>> x0 = np.array([[0.5, 0.5], [0.1, 0.0]], dtype=np.float32)
        >>> certified_radius(p, x0, eps_max=2.0, tol=1e-4).round(3).tolist()
        [0.5, 0.05]
    """
    problem = _Problem(policy, observations, method)
    d = problem.net.in_dim
    unit = np.ones(d) if scale is None else _per_feature(scale, d, "scale")
    if not (math.isfinite(eps_max) and eps_max > 0):
        raise InvalidBudget(f"eps_max must be finite and > 0, got {eps_max!r}")
    if not (math.isfinite(tol) and tol > 0):
        raise InvalidBudget(f"tol must be finite and > 0, got {tol!r}")
    with np.errstate(over="ignore"):
        widest = eps_max * unit
    if not np.isfinite(widest).all():
        raise InvalidBudget(f"eps_max * scale overflows: eps_max={eps_max!r}")
    check = _checker(problem, delta)
    rows = _all(problem)
    lo = np.zeros(problem.n)
    hi = np.full(problem.n, float(eps_max))
    done = check(rows, eps_max * unit)
    lo[done] = eps_max
    active = rows[~done]
    for _ in range(max(0, math.ceil(math.log2(eps_max / tol)))):
        if active.size == 0:
            break
        mid = 0.5 * (lo[active] + hi[active])
        ok = check(active, mid[:, None] * unit[None, :])
        lo[active[ok]] = mid[ok]
        hi[active[~ok]] = mid[~ok]
    return lo


def _checker(problem: _Problem, delta: Any) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The certification test for the problem's action space: ``(rows, radius) -> ok``."""
    if isinstance(problem.action_space, gym.spaces.Box):
        if delta is None:
            raise ConfigError(
                "continuous actions need delta: the tolerance within which the action must stay"
            )
        box = problem.box_actions("certification")
        tol = _per_feature(delta, int(np.prod(box.shape)), "delta")
        return lambda rows, radius: problem.certified_continuous(rows, radius, tol)
    if delta is not None:
        raise ConfigError(
            "delta applies to continuous actions only; got it for "
            f"{describe_space(problem.action_space)}"
        )
    problem.n_actions("certification")
    return problem.certified_discrete
