from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sstats

from rlsec.evaluate import RunningMoments, eps50, mean_ci


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
