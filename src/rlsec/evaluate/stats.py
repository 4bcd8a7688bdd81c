"""Statistics of campaign results: confidence intervals and the ε50 strength summary."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

__all__ = ["RunningMoments", "eps50", "mean_ci"]


def mean_ci(
    values: Sequence[float] | np.ndarray, level: float = 0.95
) -> tuple[float, list[float] | None]:
    """Mean and Student-t confidence interval of the mean.

    Returns ``(mean, [lo, hi])``; the interval is ``None`` with fewer than two values, and
    collapses to the mean when all values are equal.

    Example:
        >>> m, ci = mean_ci([1.0, 2.0, 3.0])
        >>> m, [round(v, 4) for v in ci]
        (2.0, [-0.4841, 4.4841])
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_ci needs at least one value")
    m = float(x.mean())
    if x.size < 2:
        return m, None
    sd = float(x.std(ddof=1))
    if sd == 0.0:
        return m, [m, m]
    half = float(stats.t.ppf(0.5 + level / 2, df=x.size - 1)) * sd / math.sqrt(x.size)
    return m, [m - half, m + half]


def eps50(budgets: Sequence[float], means: Sequence[float], threshold: float) -> float | None:
    """Smallest budget on the grid whose mean return is below ``threshold``, else ``None``.

    Example:
        >>> eps50([0.1, 0.2, 0.5], [400.0, 200.0, 20.0], 250.0)
        0.2
        >>> eps50([0.1], [400.0], 250.0) is None
        True
    """
    hits = [b for b, m in zip(budgets, means, strict=True) if m < threshold]
    return min(hits) if hits else None


class RunningMoments:
    """Per-feature mean and standard deviation over batches, in O(features) memory.

    Chan et al.'s parallel update of Welford's algorithm.

    Example:
        >>> rm = RunningMoments(2)
        >>> rm.update(np.array([[0.0, 1.0], [2.0, 1.0]]))
        >>> rm.update(np.array([[4.0, 1.0]]))
        >>> rm.mean.tolist(), [round(v, 6) for v in rm.std.tolist()]
        ([2.0, 1.0], [1.632993, 0.0])
    """

    def __init__(self, dim: int) -> None:
        self.n = 0
        self.mean = np.zeros(dim)
        self._m2 = np.zeros(dim)

    def update(self, batch: np.ndarray) -> None:
        x = np.asarray(batch, dtype=np.float64).reshape(len(batch), -1)
        if x.shape[0] == 0:
            return
        mean_b = x.mean(axis=0)
        self._combine(x.shape[0], mean_b, ((x - mean_b) ** 2).sum(axis=0))

    def merge(self, other: RunningMoments) -> None:
        """Fold in everything ``other`` has seen."""
        if other.n:
            self._combine(other.n, other.mean, other._m2)

    def _combine(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        delta = mean_b - self.mean
        total = self.n + n_b
        self.mean = self.mean + delta * n_b / total
        self._m2 = self._m2 + m2_b + delta**2 * self.n * n_b / total
        self.n = total

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation of everything seen."""
        return np.sqrt(self._m2 / self.n) if self.n else np.zeros_like(self.mean)
