"""The ε-ball of a threat model: projection into it and a run-time check that nothing left it.

Perturbations are measured per feature in units of ``scale`` (1 for raw units, the clean
standard deviation for ``std`` units): the linf ball is ``|δ_i| <= ε·scale_i`` and the l2
ball ``||δ / scale||_2 <= ε``. Features with scale 0 cannot be perturbed. After projecting
into the ball, the result is clipped to the observation space's bounds, widened to include
the clean observation so that clipping never moves a point out of the ball.

Every check here accepts only what it can show to be inside, never what it fails to show
outside: ``x > limit`` is false for NaN, so each test is written ``not (x <= limit)`` or
guarded by an explicit finiteness test. The ball refuses what it cannot represent when it is
built (a budget or radius beyond float32, where observations live; a scale or bound that is
NaN, negative or inverted), and :meth:`Ball.check` refuses a clean observation that is not
finite (there is no ball around NaN or an infinite reading) as well as a perturbed one.
Perturbations are measured as ``|δ_i| / scale_i``, never as ``|δ_i| · (1 / scale_i)``: the
reciprocal of a subnormal scale overflows to infinity and ``0 · inf`` is NaN, which a
comparison would let through.
"""

from __future__ import annotations

import numpy as np

from rlsec.errors import BudgetViolation, ConfigError, InvalidBudget

__all__ = ["Ball"]

_F32_MAX = float(np.finfo(np.float32).max)


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
            raise ConfigError(f"Ball supports linf and l2, got {norm!r}")
        if isinstance(epsilon, (bool, np.bool_)) or not isinstance(
            epsilon, (int, float, np.integer, np.floating)
        ):
            raise InvalidBudget(f"epsilon must be a number, got {type(epsilon).__name__}")
        eps = float(epsilon)
        if not (0.0 <= eps <= _F32_MAX):
            raise InvalidBudget(
                f"epsilon must be a finite number in [0, {_F32_MAX:.4g}] (perturbations are "
                f"float32), got {epsilon!r}"
            )
        self.epsilon = eps
        self.norm = norm
        self.scale = np.asarray(scale, dtype=np.float64).reshape(-1)
        self.low = np.asarray(low, dtype=np.float64).reshape(-1)
        self.high = np.asarray(high, dtype=np.float64).reshape(-1)
        dim = self.scale.size
        if self.low.shape != (dim,) or self.high.shape != (dim,):
            raise ConfigError(
                f"the space's bounds must have one entry per feature ({dim}), got "
                f"{self.low.size} and {self.high.size}"
            )
        if not np.all((self.scale >= 0) & (self.scale < np.inf)):
            raise ConfigError(
                f"scale must be finite and >= 0 per feature, got {self.scale.tolist()}"
            )
        if not np.all(self.low <= self.high):  # NaN bounds fail this too
            raise ConfigError(
                f"the space's bounds must satisfy low <= high (no NaN), got low "
                f"{self.low.tolist()} and high {self.high.tolist()}"
            )
        self.scale32 = self.scale.astype(np.float32)
        movable = self.scale > 0
        self._movable = movable.astype(np.float64)
        self._movable_mask = movable
        self._has_fixed = not bool(movable.all())
        self.radius = self.epsilon * self.scale  # per-feature linf radius, 0 where fixed
        if not np.all(self.radius <= _F32_MAX):
            raise InvalidBudget(
                f"ε·scale must stay within float32 (at most {_F32_MAX:.4g}) per feature: "
                f"ε={self.epsilon:.9g} with scale up to {float(self.scale.max()):.9g} gives "
                f"{float(self.radius.max()):.9g}"
            )

    def scaled(self, d: np.ndarray) -> np.ndarray:
        """``|δ| / scale`` per feature of the rows ``d`` (float64), 0 where the scale is 0.

        Divided, not multiplied by a reciprocal: ``1 / scale`` overflows for a subnormal
        scale, and ``0 · inf`` would be NaN. A quotient that overflows is ``inf``, which every
        check refuses."""
        out = np.zeros(d.shape, dtype=np.float64)
        with np.errstate(over="ignore"):
            np.divide(np.abs(d), self.scale, out=out, where=self._movable_mask)
        return out

    # -- used inside optimisation loops (numpy: per-op cost is far below torch's on the
    # -- small batches of RL observations) ------------------------------------------------
    def project_delta(self, u: np.ndarray) -> np.ndarray:
        """Project perturbations ``u`` in scaled units (``δ = u·scale``) into the ε-ball."""
        if self.norm == "linf":
            clipped: np.ndarray = np.clip(u, -self.epsilon, self.epsilon)
            return clipped
        n = np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
        shrunk: np.ndarray = u * np.minimum(1.0, self.epsilon / n).astype(u.dtype)
        return shrunk

    def random_start(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """A uniform random point of the ball, in scaled units (float32)."""
        if self.norm == "linf":
            u = rng.uniform(-self.epsilon, self.epsilon, size=shape)
        else:
            g = rng.standard_normal(size=shape)
            g /= np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
            r = rng.uniform(size=(shape[0], 1)) ** (1.0 / shape[1])
            u = g * r * self.epsilon
        start: np.ndarray = u.astype(np.float32)
        return start

    def step(self, u: np.ndarray, grad: np.ndarray, size: float) -> np.ndarray:
        """One steepest-ascent step of length ``size`` for the norm, then projection."""
        if self.norm == "linf":
            out: np.ndarray = np.clip(
                u + np.float32(size) * np.sign(grad), -self.epsilon, self.epsilon
            )
            return out.astype(u.dtype, copy=False)
        n = np.maximum(np.linalg.norm(grad, axis=1, keepdims=True), 1e-12)
        return self.project_delta(u + (np.float32(size) * grad / n).astype(u.dtype))

    def box32(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The linf ball around each row of ``flat`` intersected with the (widened) space, as
        float32 bounds rounded inward: :meth:`project` leaves every float32 point between
        them unchanged, bit for bit, so an optimiser that stays inside needs no projection."""
        if self.norm != "linf":
            raise ValueError("box32 is the linf ball's box")
        x0f = flat.astype(np.float64)
        lo = np.maximum(x0f - self.radius, np.minimum(self.low, x0f))
        hi = np.minimum(x0f + self.radius, np.maximum(self.high, x0f))
        lo32, hi32 = lo.astype(np.float32), hi.astype(np.float32)
        # float32 rounding may land outside [lo, hi]: step such bounds one ulp inward. The
        # clean point is float32 and inside, so the box never becomes empty.
        lo32 = np.where(lo32 < lo, np.nextafter(lo32, np.float32(np.inf)), lo32)
        hi32 = np.where(hi32 > hi, np.nextafter(hi32, np.float32(-np.inf)), hi32)
        # x0 - radius itself rounds in float64: keep the distance that project() measures
        # (|x - x0| in float64) within the radius too.
        lo32 = np.where(x0f - lo32 > self.radius, np.nextafter(lo32, np.float32(np.inf)), lo32)
        hi32 = np.where(hi32 - x0f > self.radius, np.nextafter(hi32, np.float32(-np.inf)), hi32)
        return lo32, hi32

    # -- numpy side: the final projection and the check ------------------------------------
    def project(self, x0: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Project ``x`` into the ball around ``x0`` and into the space; float32 result.

        A float32 point already inside, as :meth:`check` measures it, comes back bit for bit
        (per feature in linf, per row in l2): ``x0 + (x - x0)`` rounds away from ``x`` when
        ``x`` is tiny next to ``x0``."""
        b, dim = x0.shape[0], self.scale.size
        x0f = x0.reshape(b, dim).astype(np.float64)
        x32 = np.asarray(x).reshape(b, dim).astype(np.float32)
        lo, hi = np.minimum(self.low, x0f), np.maximum(self.high, x0f)
        d32 = x32 - x0f
        keep = (x32 >= lo) & (x32 <= hi)
        if self.norm == "linf":
            keep &= np.abs(d32) <= self.radius
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                n32 = np.linalg.norm(self.scaled(d32), axis=1, keepdims=True)
            keep &= (n32 <= self.epsilon) & ((d32 == 0) | self._movable_mask)
            keep = np.broadcast_to(keep.all(axis=1, keepdims=True), keep.shape)
        d = np.asarray(x).reshape(b, dim) - x0f
        if self.norm == "linf":
            np.clip(d, -self.radius, self.radius, out=d)
        else:
            with np.errstate(over="ignore"):
                n = np.linalg.norm(self.scaled(d), axis=1, keepdims=True)
            d *= np.minimum(1.0, self.epsilon / np.maximum(n, 1e-300))
            d *= self._movable
        out = x0f + d
        np.clip(out, lo, hi, out=out)
        out32 = out.astype(np.float32)
        # Rounding to float32 can step half an ulp outside the ball: pull such features back
        # to the clean value's side so the check below holds exactly, not just approximately.
        over = np.abs(out32 - x0f) > np.abs(d)
        if over.any():
            out32 = np.where(over, np.nextafter(out32, x0f.astype(np.float32)), out32)
        # ... and outside a space bound that float32 cannot represent (a float64 Box): step
        # such features one ulp inward, toward the clean value (inside, and float32).
        out32 = np.where(out32 < lo, np.nextafter(out32, np.float32(np.inf)), out32)
        out32 = np.where(out32 > hi, np.nextafter(out32, np.float32(-np.inf)), out32)
        return np.where(keep, x32, out32).reshape(x0.shape)

    def check(self, x0: np.ndarray, x: np.ndarray) -> None:
        """Raise :class:`BudgetViolation` unless every row of ``x`` is finite, inside the
        ball around its clean row of ``x0`` and inside the (widened) space.

        Fails closed: a clean row that is not finite, a shape that does not match, NaN or
        infinity anywhere, all refuse; nothing is accepted because a comparison came out
        false."""
        b, dim = x0.shape[0], self.scale.size
        if np.shape(x) != np.shape(x0) or np.size(x0) != b * dim:
            raise BudgetViolation(
                f"perturbed batch of shape {np.shape(x)} does not match the clean batch "
                f"{np.shape(x0)} of {dim} features"
            )
        x0f = np.asarray(x0, dtype=np.float64).reshape(b, dim)
        xf = np.asarray(x, dtype=np.float64).reshape(b, dim)
        if not np.isfinite(x0f).all():
            raise BudgetViolation(
                "the clean observation is not finite: there is no ε-ball around it"
            )
        if not np.isfinite(xf).all():
            raise BudgetViolation("perturbed observation is not finite")
        d = xf - x0f
        if self._has_fixed and not np.all(d[:, ~self._movable_mask] == 0):
            raise BudgetViolation("a feature with zero scale was perturbed")
        u = self.scaled(d)
        if self.norm == "linf":
            size = u.max(axis=1) if u.shape[1] else np.zeros(b)
        else:
            with np.errstate(over="ignore"):
                size = np.sqrt(np.einsum("ij,ij->i", u, u))
        worst = float(size.max()) if size.size else 0.0
        if not (worst <= self.epsilon * (1 + 1e-6) + 1e-12):
            raise BudgetViolation(
                f"perturbation of {self.norm} size {worst:.9g} exceeds the budget "
                f"ε={self.epsilon:.9g}"
            )
        inside = (xf >= np.minimum(self.low, x0f)) & (xf <= np.maximum(self.high, x0f))
        if not inside.all():
            raise BudgetViolation("perturbed observation left the observation space")
