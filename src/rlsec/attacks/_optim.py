"""The attack math: batched objectives and projected-gradient loops on plain tensors.

Nothing here knows about environments or episodes; every function takes a batch and returns
a batch. The public attack classes validate input, call these, project and check.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from rlsec.attacks._ball import Ball
from rlsec.core import DifferentiablePolicy
from rlsec.policies.spaces import box_span

__all__ = ["action_divergence", "optimise", "segments"]

Objective = Callable[[torch.Tensor], torch.Tensor]


def segments(policy: DifferentiablePolicy) -> list[int]:
    """Sizes of the categorical groups in the actor's output (one group for Discrete)."""
    space = policy.action_space
    if isinstance(space, gym.spaces.MultiDiscrete):
        return [int(n) for n in space.nvec.reshape(-1)]
    if isinstance(space, gym.spaces.Discrete):
        return [int(space.n)]
    return []


def action_divergence(
    policy: DifferentiablePolicy, clean_out: torch.Tensor, kind: str
) -> Objective:
    """Per-row objective that grows as the policy's output moves away from ``clean_out``.

    ``kind`` is ``ce`` (cross-entropy to the clean action: the objective of FGSM/PGD, Huang
    2017) or ``kl`` (KL divergence between the clean and the perturbed action distributions,
    MAD, Zhang 2020). For continuous actions both are the squared distance between mean
    actions in units of the action range. Softmax of Q-values stands in for a DQN's policy.
    """
    module = policy.torch_module()
    space = policy.action_space
    clean = clean_out.detach()
    if isinstance(space, gym.spaces.Box):
        span = torch.as_tensor(box_span(space), dtype=torch.float32)

        def cont(x: torch.Tensor) -> torch.Tensor:
            diff: torch.Tensor = (module(x) - clean).flatten(1) / span
            return (diff * diff).sum(dim=1)

        return cont
    if isinstance(space, gym.spaces.MultiBinary):
        target = (clean > 0).to(torch.float32)
        p_clean = torch.sigmoid(clean)

        def binary(x: torch.Tensor) -> torch.Tensor:
            out = module(x).flatten(1)
            if kind == "ce":
                return F.binary_cross_entropy_with_logits(
                    out, target.flatten(1), reduction="none"
                ).sum(1)
            q = torch.sigmoid(out).clamp(1e-7, 1 - 1e-7)
            p = p_clean.flatten(1).clamp(1e-7, 1 - 1e-7)
            return (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).sum(1)

        return binary
    sizes = segments(policy)
    if len(sizes) == 1 and kind == "ce":  # the common case, kept lean: it runs every PGD step
        label = clean.argmax(dim=-1)
        return lambda x: F.cross_entropy(module(x), label, reduction="none")
    clean_parts = torch.split(clean, sizes, dim=-1)
    labels = [c.argmax(dim=-1) for c in clean_parts]
    logp_clean = [F.log_softmax(c, dim=-1) for c in clean_parts]

    def categorical(x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(module(x), sizes, dim=-1)
        total = torch.zeros(x.shape[0])
        for part, label, lp in zip(parts, labels, logp_clean, strict=True):
            if kind == "ce":
                total = total + F.cross_entropy(part, label, reduction="none")
            else:
                total = total + F.kl_div(
                    F.log_softmax(part, dim=-1), lp, log_target=True, reduction="none"
                ).sum(-1)
        return total

    return categorical


def optimise(
    objective: Objective,
    x0: np.ndarray,
    ball: Ball,
    *,
    steps: int,
    step_size: float,
    rng: np.random.Generator,
    random_start: bool = True,
    sgld_noise: float = 0.0,
) -> np.ndarray:
    """Maximise ``objective`` over the ball around ``x0``; return the best point found.

    Projected steepest ascent (PGD, Madry 2018) in the ball's norm, from a random point of the
    ball or from ``x0``, with steps of ``step_size`` in the ball's scaled units. With
    ``sgld_noise > 0``, Gaussian noise of that scale, decaying as 1/(i+2), is added to the
    gradient before the step (the SGLD variant of Zhang 2020). The gradient is first scaled to
    unit max-norm per row, so the noise is relative to it: SA-PPO's reference code adds the
    noise to the raw gradient, which lets the noise drown rows whose gradient is small and
    leaves them wandering instead of converging. Each row keeps its own best iterate, so more
    steps never make the result worse.

    Args:
        x0: clean observations, float32, ``(B, ...)``.

    Returns:
        Perturbed observations ``x0 + δ`` (float32, shape of ``x0``), inside the ball; not yet
        clipped to the observation space (the caller's projection does that).
    """
    with torch.enable_grad():  # callers may be inside torch.no_grad()
        if ball.norm == "linf" and sgld_noise == 0.0:
            return _pgd_linf(objective, x0, ball, steps, step_size, rng, random_start)
        return _optimise(objective, x0, ball, steps, step_size, rng, random_start, sgld_noise)


def _best(
    objective: Objective,
    x0: np.ndarray,
    d: np.ndarray,
    deltas: list[np.ndarray],
    values: list[np.ndarray],
) -> np.ndarray:
    """Evaluate the last iterate ``x0 + d``, then return each row's best iterate (the first
    one on ties) as an observation batch."""
    b = x0.shape[0]
    with torch.no_grad():
        values.append(
            objective(torch.from_numpy((x0.reshape(b, -1) + d).reshape(x0.shape))).numpy()
        )
    deltas.append(d)
    pick = np.argmax(np.stack(values), axis=0)
    best = np.stack(deltas)[pick, np.arange(b)]
    out: np.ndarray = (x0.reshape(b, -1) + best).reshape(x0.shape)
    return out


# The two loops below are the hot path of every campaign. Torch does only what needs autograd
# (one forward and one backward pass per step); the update, projection and best-iterate
# bookkeeping are a handful of numpy calls, whose cost on a (64, 4) batch is a fraction of
# torch's per-operation dispatch.


def _pgd_linf(
    objective: Objective,
    x0: np.ndarray,
    ball: Ball,
    steps: int,
    step_size: float,
    rng: np.random.Generator,
    random_start: bool,
) -> np.ndarray:
    b = x0.shape[0]
    flat = x0.reshape(b, -1)
    radius = ball.radius32  # per-feature linf radius
    stride = (step_size * ball.scale).astype(np.float32)
    d = ball.random_start(flat.shape, rng) * ball.scale32 if random_start else np.zeros_like(flat)
    deltas, values = [], []
    ones = torch.ones(b)
    for _ in range(steps):
        xt = torch.from_numpy((flat + d).reshape(x0.shape)).requires_grad_(True)
        value = objective(xt)
        (gx,) = torch.autograd.grad(value, xt, grad_outputs=ones)
        deltas.append(d)
        values.append(value.detach().numpy())
        d = d + np.copysign(stride, gx.numpy().reshape(b, -1))
        np.minimum(d, radius, out=d)
        np.maximum(d, -radius, out=d)
    return _best(objective, x0, d, deltas, values)


def _optimise(
    objective: Objective,
    x0: np.ndarray,
    ball: Ball,
    steps: int,
    step_size: float,
    rng: np.random.Generator,
    random_start: bool,
    sgld_noise: float,
) -> np.ndarray:
    """The general loop (l2, SGLD), in the ball's scaled units ``u`` (``δ = u·scale``)."""
    b = x0.shape[0]
    flat = x0.reshape(b, -1)
    scale = ball.scale32
    u = ball.random_start(flat.shape, rng) if random_start else np.zeros_like(flat)
    deltas, values = [], []
    ones = torch.ones(b)
    for i in range(steps):
        d = u * scale
        xt = torch.from_numpy((flat + d).reshape(x0.shape)).requires_grad_(True)
        value = objective(xt)
        (gx,) = torch.autograd.grad(value, xt, grad_outputs=ones)
        deltas.append(d)
        values.append(value.detach().numpy())
        grad = gx.numpy().reshape(b, -1) * scale  # d objective / d u
        if sgld_noise > 0:
            grad = grad / np.maximum(np.abs(grad).max(axis=1, keepdims=True), 1e-12)
            noise = rng.standard_normal(grad.shape).astype(np.float32)
            grad = grad + np.float32(sgld_noise / (i + 2)) * noise
        u = ball.step(u, grad, step_size)
    d = u * scale
    return _best(objective, x0, d, deltas, values)
