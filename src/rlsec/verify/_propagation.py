"""Bound propagation through a lowered network: IBP and CROWN.

* IBP (Gowal et al. 2018): :func:`_affine_interval` and the activations' intervals push a box
  layer by layer.
* CROWN (Zhang et al. 2018): :func:`_backward` propagates a linear specification backward
  through the activations' linear relaxations to the input box; intermediate layers are
  refined the same way, and every CROWN bound is intersected with the IBP one.

:func:`_lower` bounds ``spec @ out`` from below over a batch of boxes, a chunk of states at a
time so memory stays bounded. Used by :mod:`rlsec.verify.bounds`.
"""

from __future__ import annotations

from typing import Literal

import torch

from rlsec.verify._activations import _interval, _relax, _Relaxation
from rlsec.verify._network import _DT, _Net

Method = Literal["crown", "ibp"]


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
