"""The activations of a lowered network: values, derivatives, intervals, linear relaxations.

For each activation of :mod:`rlsec.verify._network`: its value :func:`_f` and derivative
:func:`_df`, its interval image :func:`_interval` (IBP; non-monotone SiLU and GELU through
their minimum), and :func:`_relax`, two lines enclosing it on an interval (CROWN): exact for
ReLU-like and Hardtanh pieces, tangents found by bisection for Tanh, Sigmoid and ELU, and
for SiLU and GELU where they are convex (interval bounds elsewhere).
"""

from __future__ import annotations

import functools
import math

import torch

from rlsec.verify._network import _DT, _Act

_BISECT = 14  # bisection steps for the tangent points of tanh and sigmoid (tightness only)

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
