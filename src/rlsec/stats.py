"""Statistics shared by campaigns, robust training, the integrity monitors and certification:
confidence intervals, running moments and the ε50 strength summary."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from rlsec.errors import ConfigError

__all__ = [
    "CALIBRATION_EPISODES",
    "CALIBRATION_SEED",
    "STD_TOLERANCE",
    "RunningMoments",
    "env_seed",
    "eps50",
    "mean_ci",
    "proportion_ci",
    "std_disagreement",
    "summarize_returns",
]


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
    _check_level(level)
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


def proportion_ci(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided confidence interval of a binomial proportion.

    Example:
        >>> lo, hi = proportion_ci(0, 100)
        >>> lo, round(hi, 4)
        (0.0, 0.0362)
    """
    _check_level(level)
    for name, v in (("successes", successes), ("trials", trials)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise ConfigError(f"{name} must be an integer, got {type(v).__name__} {v!r}")
    if not (trials >= 1 and 0 <= successes <= trials):
        raise ConfigError(
            f"need 0 <= successes <= trials and trials >= 1, got {successes}/{trials}"
        )
    ci = stats.binomtest(int(successes), int(trials)).proportion_ci(level, method="exact")
    return float(ci.low), float(ci.high)


def eps50(budgets: Sequence[float], means: Sequence[float], threshold: float) -> float | None:
    """Smallest budget on the grid whose mean return is below ``threshold``, else ``None``.

    ``None`` says the policy held at every budget, so it is never the answer by default: a
    mean return that is NaN counts as broken (below any threshold), not as held, and a
    threshold or budget that is not a finite number is refused.

    Raises:
        ConfigError: a threshold or budget that is not finite (or a negative budget).

    Example:
        >>> eps50([0.1, 0.2, 0.5], [400.0, 200.0, 20.0], 250.0)
        0.2
        >>> eps50([0.1], [400.0], 250.0) is None
        True
        >>> eps50([0.1, 0.2], [400.0, float("nan")], 250.0)
        0.2
    """
    if not math.isfinite(float(threshold)):
        raise ConfigError(f"the eps50 threshold must be a finite number, got {threshold!r}")
    pairs = list(zip(budgets, means, strict=True))
    bad = [b for b, _ in pairs if not 0.0 <= float(b) < math.inf]
    if bad:
        raise ConfigError(f"budgets must be finite numbers >= 0, got {bad}")
    hits = [b for b, m in pairs if not float(m) >= threshold]
    return min(hits) if hits else None


def _check_level(level: float) -> None:
    if isinstance(level, bool) or not 0.0 < float(level) < 1.0:
        raise ConfigError(f"the confidence level must be in (0, 1), got {level!r}")


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
        if len(batch) == 0:  # reshape(0, -1) cannot infer the features of nothing
            return
        x = np.asarray(batch, dtype=np.float64).reshape(len(batch), -1)
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


def summarize_returns(returns: np.ndarray, lengths: np.ndarray) -> dict[str, Any]:
    """The per-result summary of ``results.json``: mean return with its 95% t-interval,
    episodes, mean length and the sample standard deviation of the returns.

    Example:
        >>> summarize_returns(np.array([1.0, 3.0]), np.array([10, 30]))["mean_length"]
        20.0
    """
    returns = np.asarray(returns, dtype=np.float64).reshape(-1)
    mean, ci = mean_ci(returns)
    return {
        "mean_return": mean,
        "ci95": ci,
        "episodes": int(returns.size),
        "mean_length": float(np.mean(lengths)) if np.size(lengths) else 0.0,
        "std_return": float(returns.std(ddof=1)) if returns.size > 1 else 0.0,
    }


def env_seed(seed: int) -> int:
    """A well-mixed environment reset seed for a run seed, so that rows of different seeds
    never coincide; every evaluation of rlsec uses it, so clean episodes match across tools."""
    return int(np.random.SeedSequence(seed).generate_state(1)[0] & 0x7FFFFFFF)


#: the clean episodes, and their seed, whose observations measure the std ``std`` units mean,
#: in red-team campaigns and in certificates alike (independent of a run's episodes and seed)
CALIBRATION_EPISODES = 20
CALIBRATION_SEED = 20261125

#: a policy's recorded clean observation std is used for ``std`` units only when, feature by
#: feature, it lies within this factor of the std measured on clean rollouts (both ~0, below
#: 1e-12, also agree); otherwise the measured one is used and the disagreement is a finding.
#: The zoo's recorded stds lie within a factor of 1.3 of their rollouts' (100 vs 20 episodes).
STD_TOLERANCE = 2.0
_STD_FLOOR = 1e-12


def std_disagreement(declared: np.ndarray, measured: np.ndarray) -> list[int]:
    """Features whose declared std is not within :data:`STD_TOLERANCE` of the measured one
    (a NaN on either side disagrees).

    Example:
        >>> std_disagreement(np.array([1.0, 1e-30, 0.0]), np.array([1.5, 0.3, 0.0]))
        [1]
    """
    hi, lo = np.maximum(declared, measured), np.minimum(declared, measured)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (hi <= _STD_FLOOR) | ((lo > 0) & (hi / np.where(lo > 0, lo, 1.0) <= STD_TOLERANCE))
    return [int(i) for i in np.flatnonzero(~ok)]
