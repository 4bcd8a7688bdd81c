"""The ε-ball of a threat model: projection into it and a run-time check that nothing left it.

Perturbations are measured per feature in units of ``scale`` (1 for raw units, the clean
standard deviation for ``std`` units): the linf ball is ``|δ_i| <= ε·scale_i`` and the l2
ball ``||δ / scale||_2 <= ε``. Features with scale 0 cannot be perturbed. After projecting
into the ball, the result is clipped to the observation space's bounds, widened to include
the clean observation so that clipping never moves a point out of the ball.
"""

from __future__ import annotations

import numpy as np
import torch

from rlsec.errors import BudgetViolation

__all__ = ["Ball"]


class Ball:
    """ε-ball around a batch of clean observations, intersected with the space's box."""

    def __init__(
        self,
        epsilon: float,
        norm: str,
        scale: np.ndarray,
        low: np.ndarray,
        high: np.ndarray,
    ) -> None:
        if norm not in ("linf", "l2"):
            raise ValueError(f"Ball supports linf and l2, got {norm!r}")
        self.epsilon = float(epsilon)
        self.norm = norm
        self.scale = np.asarray(scale, dtype=np.float64).reshape(-1)
        self.low = np.asarray(low, dtype=np.float64).reshape(-1)
        self.high = np.asarray(high, dtype=np.float64).reshape(-1)
        self._scale_t = torch.as_tensor(self.scale, dtype=torch.float32)

    # -- torch side, used inside optimisation loops -----------------------------------------
    def project_delta(self, u: torch.Tensor) -> torch.Tensor:
        """Project perturbations ``u`` in scaled units (``δ = u·scale``) into the ε-ball."""
        if self.norm == "linf":
            return u.clamp(-self.epsilon, self.epsilon)
        n = u.norm(dim=1, keepdim=True).clamp_min(1e-12)
        out: torch.Tensor = u * (self.epsilon / n).clamp(max=1.0)
        return out

    def to_obs(self, x0: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Observation ``x0 + u·scale`` (differentiable; no clipping to the space)."""
        return x0 + u * self._scale_t

    def random_start(self, shape: tuple[int, ...], rng: np.random.Generator) -> torch.Tensor:
        """A uniform random point of the ball, in scaled units."""
        if self.norm == "linf":
            u = rng.uniform(-self.epsilon, self.epsilon, size=shape)
        else:
            g = rng.standard_normal(size=shape)
            g /= np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
            r = rng.uniform(size=(shape[0], 1)) ** (1.0 / shape[1])
            u = g * r * self.epsilon
        return torch.as_tensor(u, dtype=torch.float32)

    def step(self, u: torch.Tensor, grad: torch.Tensor, size: float) -> torch.Tensor:
        """One steepest-ascent step of length ``size`` for the norm, then projection."""
        if self.norm == "linf":
            u = u + size * grad.sign()
        else:
            u = u + size * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return self.project_delta(u)

    # -- numpy side: the final projection and the check ------------------------------------
    def project(self, x0: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Project ``x`` into the ball around ``x0`` and into the space; float32 result."""
        b = x0.shape[0]
        x0f = x0.reshape(b, -1).astype(np.float64)
        d = x.reshape(b, -1).astype(np.float64) - x0f
        safe = np.where(self.scale > 0, self.scale, 1.0)
        u = np.where(self.scale > 0, d / safe, 0.0)
        if self.norm == "linf":
            u = np.clip(u, -self.epsilon, self.epsilon)
        else:
            n = np.linalg.norm(u, axis=1, keepdims=True)
            u = u * np.minimum(1.0, self.epsilon / np.maximum(n, 1e-300))
        out = x0f + u * self.scale
        out = np.clip(out, np.minimum(self.low, x0f), np.maximum(self.high, x0f))
        out32 = out.astype(np.float32)
        # Rounding to float32 can step half an ulp outside the ball: pull such features back
        # to the clean value's side so the check below holds exactly, not just approximately.
        over = np.abs(out32.astype(np.float64) - x0f) > np.abs(out - x0f)
        out32 = np.where(over, np.nextafter(out32, x0f.astype(np.float32)), out32)
        return out32.reshape(x0.shape)

    def check(self, x0: np.ndarray, x: np.ndarray) -> None:
        """Raise :class:`BudgetViolation` if any row left the ball or the (widened) space."""
        b = x0.shape[0]
        x0f = x0.reshape(b, -1).astype(np.float64)
        xf = x.reshape(b, -1).astype(np.float64)
        if not np.all(np.isfinite(xf) | ~np.isfinite(x0f)):
            raise BudgetViolation("perturbed observation is not finite")
        d = xf - x0f
        fixed = self.scale <= 0
        if np.any(np.abs(d[:, fixed]) > 0):
            raise BudgetViolation("a feature with zero scale was perturbed")
        safe = np.where(fixed, 1.0, self.scale)
        u = np.where(fixed, 0.0, d / safe)
        tol = 1e-6 * max(self.epsilon, 1e-12)
        if self.norm == "linf":
            size = np.abs(u).max(axis=1) if u.shape[1] else np.zeros(b)
        else:
            size = np.linalg.norm(u, axis=1)
        worst = float(size.max()) if size.size else 0.0
        if worst > self.epsilon + tol:
            raise BudgetViolation(
                f"perturbation of {self.norm} size {worst:.9g} exceeds the budget "
                f"ε={self.epsilon:.9g}"
            )
        lo = np.minimum(self.low, x0f)
        hi = np.maximum(self.high, x0f)
        if np.any(xf < lo) or np.any(xf > hi):
            raise BudgetViolation("perturbed observation left the observation space")
