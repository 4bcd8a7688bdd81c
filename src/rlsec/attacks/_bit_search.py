"""Bit flips of stored float32 weights: random draws, applying flips, and the progressive bit
search (Rakin et al. 2019, adapted to float32) behind the targeted bit-flip attack.

A flip is ``(tensor, flat index, bit)``, bits numbered from 0 (the mantissa's least
significant bit) to 31 (the sign). The search is pure: it reads a policy, the chosen weights
and a probe batch and returns the flips; :class:`~rlsec.attacks.parameters.BitFlipParameters`
validates the budget and checks the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlsec.attacks._optim import Objective
from rlsec.attacks._weights import ACTOR, BITS, Progress, Weights, WorkingCopy, float_bits
from rlsec.policies.base import TorchPolicy
from rlsec.policies.spaces import box_span

__all__ = ["apply_flips", "bit_search", "random_flips"]

Flip = tuple[str, int, int]


def _saturate(d: torch.Tensor) -> torch.Tensor:
    """``d / (1 + d)`` per row, 1 where ``d`` is not finite: bounded, so no single row (or
    an overflowing one) dominates the mean, and a row grows until its action has changed."""
    finite = torch.isfinite(d)
    safe = torch.where(finite, d, torch.zeros_like(d)).clamp_min(0.0)
    return torch.where(finite, safe / (1.0 + safe), torch.ones_like(d))


def random_flips(weights: Weights, k: int, rng: np.random.Generator) -> list[Flip]:
    names = list(weights)
    sizes = np.array([weights[n].numel() for n in names], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    positions = np.sort(rng.choice(int(starts[-1]) * BITS, size=k, replace=False))
    out = []
    for pos in positions.tolist():
        element, bit = divmod(int(pos), BITS)
        t = int(np.searchsorted(starts, element, side="right")) - 1
        out.append((names[t], element - int(starts[t]), bit))
    return out


def apply_flips(weights: Weights, flips: Sequence[Flip]) -> Weights:
    out = {n: float_bits(t).copy() for n, t in weights.items()}
    for name, index, bit in flips:
        out[name][index] ^= np.uint32(1 << bit)
    return {
        n: torch.from_numpy(out[n].view(np.float32).reshape(tuple(weights[n].shape)))
        for n in weights
    }


def _flip_values(value: float) -> torch.Tensor:
    """The 32 float32 values one bit flip away from ``value`` (bit ``b`` at index ``b``)."""
    u = np.full(BITS, np.float32(value)).view(np.uint32)
    u ^= np.left_shift(np.uint32(1), np.arange(BITS, dtype=np.uint32))
    return torch.from_numpy(u.view(np.float32).copy())


def bit_search(
    policy: TorchPolicy,
    weights: Weights,
    probe: torch.Tensor,
    k: int,
    candidates: int,
    progress: Progress | None,
) -> list[Flip]:
    """Progressive bit search: ``k`` rounds, each keeping the single best flip found among
    the bits of the top-gradient actor weights. Scores are exact: for all 32 flips of a weight
    at once, the actor is re-run from the changed layer on, from the recorded layer inputs."""
    work = WorkingCopy(policy)
    work.set(weights)
    names = [n for n in weights if n.startswith(ACTOR)]
    block = work.net.policy
    with torch.no_grad():
        clean = work.forward(probe)
    variants = work.divergence(clean.repeat(BITS, *([1] * (clean.dim() - 1))), "ce")
    span = (
        torch.as_tensor(box_span(policy.action_space), dtype=torch.float32)
        if isinstance(policy.action_space, gym.spaces.Box)
        else None
    )
    inputs: dict[int, torch.Tensor] = {}
    record = False

    def remember(i: int) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            if record:
                inputs[i] = args[0].detach()

        return hook

    hooks = [
        m.register_forward_pre_hook(remember(i))
        for i, m in enumerate(block)
        if isinstance(m, nn.Linear)
    ]
    flipped: set[Flip] = set()
    out: list[Flip] = []
    try:
        for round_ in range(k):
            ranking = _rank(work, names, probe, clean, span)
            record = True
            with torch.no_grad():
                work.forward(probe)  # record every Linear layer's input on the whole probe
            record = False
            best: tuple[float, str, int, int] | None = None
            tried = 0
            for name, index in ranking:
                taken = [bit for bit in range(BITS) if (name, index, bit) in flipped]
                if len(taken) == BITS:
                    continue
                scores = _score_flips(block, inputs, name, index, variants)
                scores[taken] = -math.inf
                scores = torch.nan_to_num(scores, nan=-math.inf)
                bit = int(torch.argmax(scores))
                if best is None or float(scores[bit]) > best[0]:
                    best = (float(scores[bit]), name, index, bit)
                tried += 1
                if tried == candidates:
                    break
            assert best is not None  # k <= the actor's bits, checked before
            _, name, index, bit = best
            flipped.add((name, index, bit))
            out.append((name, index, bit))
            flat = work.params[name].data.view(-1)
            flat[index] = _flip_values(float(flat[index]))[bit]
            if progress is not None:
                progress((round_ + 1) / k)
    finally:
        for h in hooks:
            h.remove()
    return out


def _rank(
    work: WorkingCopy,
    names: list[str],
    probe: torch.Tensor,
    clean: torch.Tensor,
    span: torch.Tensor | None,
) -> list[tuple[str, int]]:
    """Actor weights by decreasing magnitude of the loss gradient (ties in tensor order)."""
    params = [work.params[n] for n in names]
    grads: Sequence[torch.Tensor | None] = [None] * len(params)
    with torch.no_grad():
        finite = torch.isfinite(work.forward(probe)).reshape(probe.shape[0], -1).all(dim=1)
    if finite.any():
        # Only rows whose output is finite: one NaN row would poison every gradient.
        rows = probe[finite]
        objective = work.divergence(clean[finite], "ce")
        with torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            try:
                score = _saturate(objective(work.forward(rows))[0]).sum()
                grads = torch.autograd.grad(score, params, allow_unused=True)
                if not any(g is not None and bool((g != 0).any()) for g in grads):
                    outputs = work.forward(rows).flatten(1)
                    if span is not None:
                        outputs = outputs / span
                    grads = torch.autograd.grad(outputs.abs().sum(), params, allow_unused=True)
            finally:
                for p in params:
                    p.requires_grad_(False)
    mags = torch.cat(
        [
            torch.zeros(p.numel())
            if g is None
            else torch.nan_to_num(g.detach().abs().reshape(-1), nan=0.0)
            for g, p in zip(grads, params, strict=True)
        ]
    )
    order = torch.argsort(mags, descending=True, stable=True).tolist()
    starts = np.cumsum([0] + [p.numel() for p in params])
    ranked = []
    for flat in order:
        t = int(np.searchsorted(starts, flat, side="right")) - 1
        ranked.append((names[t], flat - int(starts[t])))
    return ranked


def _score_flips(
    block: nn.Sequential,
    inputs: dict[int, torch.Tensor],
    name: str,
    index: int,
    variants: Objective,
) -> torch.Tensor:
    """The probe loss after each of the 32 single-bit flips of one actor weight."""
    _, layer, kind = name.split(".")
    i = int(layer)
    lin = block[i]
    assert isinstance(lin, nn.Linear)
    with torch.no_grad():
        x = inputs[i]
        b = x.shape[0]
        base = lin(x)
        if kind == "weight":
            j, col = divmod(index, lin.in_features)
            rows = lin.weight[j].unsqueeze(0).repeat(BITS, 1)
            rows[:, col] = _flip_values(float(lin.weight[j, col]))
            new = x @ rows.T + lin.bias[j]  # (B, 32)
        else:
            j = index
            new = (x @ lin.weight[j]).unsqueeze(1) + _flip_values(float(lin.bias[j])).unsqueeze(0)
        h = base.unsqueeze(0).repeat(BITS, 1, 1)
        h[:, :, j] = new.T
        h = h.reshape(BITS * b, -1)
        for m in list(block)[i + 1 :]:
            h = m(h)
        d = variants(h)[0].reshape(BITS, b)
        return _saturate(d).mean(dim=1)
