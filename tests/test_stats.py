from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sstats

from rlsec.errors import ConfigError
from rlsec.evaluate import RunningMoments, eps50, mean_ci
from rlsec.stats import proportion_ci


@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=50))
def test_ci_matches_scipy_and_contains_the_mean(values: list[float]) -> None:
    m, ci = mean_ci(values)
    assert ci is not None
    assert ci[0] <= m <= ci[1]
    x = np.asarray(values)
    if x.std(ddof=1) > 0:
        lo, hi = sstats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sstats.sem(x))
        assert np.isclose(ci[0], lo)
        assert np.isclose(ci[1], hi)


def test_ci_edge_cases() -> None:
    assert mean_ci([3.0]) == (3.0, None)
    assert mean_ci([2.0, 2.0]) == (2.0, [2.0, 2.0])
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([])


def test_eps50_is_the_smallest_budget_under_threshold() -> None:
    assert eps50([0.1, 0.2, 0.5], [300.0, 100.0, 400.0], 250.0) == 0.2
    assert eps50([0.5, 0.1], [100.0, 100.0], 250.0) == 0.1
    assert eps50([0.1, 0.2], [300.0, 250.0], 250.0) is None  # strictly below


@settings(max_examples=50)
@given(st.lists(st.integers(1, 20), min_size=1, max_size=6), st.integers(0, 10_000))
def test_running_moments_equal_numpy_over_any_batching(sizes: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    batches = [rng.normal(3.0, 2.0, size=(n, 3)) for n in sizes]
    rm = RunningMoments(3)
    half = RunningMoments(3)
    for i, b in enumerate(batches):
        (rm if i % 2 == 0 else half).update(b)
    rm.merge(half)
    allx = np.concatenate(batches)
    assert rm.n == len(allx)
    assert np.allclose(rm.mean, allx.mean(0))
    assert np.allclose(rm.std, allx.std(0))


def test_a_nan_mean_return_counts_as_broken_not_as_held() -> None:
    """``NaN < threshold`` is false: a budget whose episodes returned NaN read as "held", and
    eps50 could report None (never broken) for a policy no budget left intact."""
    nan = float("nan")
    assert eps50([0.1, 0.2], [300.0, nan], 250.0) == 0.2
    assert eps50([0.1], [nan], 250.0) == 0.1
    assert eps50([0.1, 0.2], [300.0, float("-inf")], 250.0) == 0.2


@pytest.mark.parametrize(
    ("budgets", "threshold", "why"),
    [
        ([0.1], float("nan"), "threshold must be a finite number"),
        ([0.1], float("inf"), "threshold must be a finite number"),
        ([float("nan")], 250.0, "budgets must be finite"),
        ([-0.1], 250.0, "budgets must be finite"),
    ],
)
def test_an_eps50_threshold_or_budget_that_cannot_be_compared_is_refused(
    budgets: list[float], threshold: float, why: str
) -> None:
    with pytest.raises(ConfigError, match=why):
        eps50(budgets, [100.0] * len(budgets), threshold)


@pytest.mark.parametrize("level", [float("nan"), 0.0, 1.0, 1.5, True])
def test_a_confidence_level_outside_zero_one_is_refused_not_propagated(level: float) -> None:
    """scipy's own range test lets a NaN level through, and the certified lower bound of
    randomized smoothing (proportion_ci) came out NaN."""
    with pytest.raises(ConfigError, match="confidence level"):
        proportion_ci(5, 10, level)
    with pytest.raises(ConfigError, match="confidence level"):
        mean_ci([1.0, 2.0], level)


@pytest.mark.parametrize(("successes", "trials"), [(2.5, 10), (3, 10.0), (True, 2), (11, 10)])
def test_counts_that_are_not_whole_numbers_in_range_are_refused(
    successes: object, trials: object
) -> None:
    with pytest.raises(ConfigError):
        proportion_ci(successes, trials)  # type: ignore[arg-type]


def test_an_empty_batch_leaves_the_moments_unchanged() -> None:
    rm = RunningMoments(2)
    rm.update(np.zeros((0, 2)))
    rm.update(np.array([[1.0, 2.0]]))
    rm.update(np.zeros((0, 2)))
    assert rm.n == 1 and rm.mean.tolist() == [1.0, 2.0]
