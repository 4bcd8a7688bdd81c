"""rlsec._inputs: the bounds every command's counts, seeds and budgets go through."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import rlsec
from rlsec import _inputs
from rlsec.attacks import ATTACKS
from rlsec.errors import ConfigError, InvalidBudget

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.just(np.int64(3)),
    st.just(np.float32(np.inf)),
)


@given(anything)
def test_count_accepts_only_integers_in_range(value: object) -> None:
    try:
        got = _inputs.count("episodes", value, limit=1000)
    except ConfigError:
        ok = (
            isinstance(value, (int, np.integer))
            and not isinstance(value, bool)
            and 1 <= int(value) <= 1000
        )
        assert not ok
    else:
        assert type(got) is int and 1 <= got <= 1000 and got == value


def test_count_says_the_limit_and_why() -> None:
    with pytest.raises(ConfigError, match=r"at most 1,000,000 \(each episode's totals"):
        _inputs.count("episodes", 10**9, limit=_inputs.MAX_EPISODES)
    with pytest.raises(ConfigError, match="must be an integer, got True"):
        _inputs.count("episodes", True, limit=10)


@given(anything)
def test_budget_is_finite_non_negative_and_bounded(value: object) -> None:
    try:
        got = _inputs.budget("eps", value)
    except InvalidBudget:
        ok = (
            isinstance(value, (int, float, np.floating, np.integer))
            and not isinstance(value, bool)
            and math.isfinite(float(value))
            and 0 <= float(value) <= _inputs.MAX_BUDGET
        )
        assert not ok
    else:
        assert math.isfinite(got) and 0 <= got <= _inputs.MAX_BUDGET


@pytest.mark.parametrize("value", [1e39, 1e308, 1e16])
def test_budgets_that_overflow_float32_arithmetic_are_refused(value: float) -> None:
    with pytest.raises(InvalidBudget, match="overflow float32"):
        _inputs.budget("eps", value)


def test_a_budget_times_a_huge_scale_is_refused_in_raw_units() -> None:
    with pytest.raises(InvalidBudget, match="feature 2 is a raw budget of 1e\\+19"):
        _inputs.raw_budgets("ε", [0.1, 1.0], [1.0, 2.0, 1e19])
    with pytest.raises(InvalidBudget, match="finite"):
        _inputs.raw_budgets("ε", [0.1], [np.nan])
    _inputs.raw_budgets("ε", [1.0], [1e15])
    _inputs.raw_budgets("ε", [1e30], None)  # no scale: nothing to multiply


@given(st.integers(-(2**40), 2**40), st.integers(-5, 2000))
def test_seed_ranges_stay_in_range(first: int, n: int) -> None:
    try:
        seeds = _inputs.seed_range(first, n)
    except ConfigError:
        assert not (first >= 0 and 1 <= n <= _inputs.MAX_SEEDS and first + n - 1 <= 2**31 - 1)
    else:
        assert seeds == list(range(first, first + n))
        assert all(0 <= s <= _inputs.MAX_SEED for s in seeds)


@pytest.mark.parametrize("value", [math.nan, -0.1, 1.5, math.inf, "0.5", None])
def test_fraction_refuses_nan_and_out_of_range(value: object) -> None:
    with pytest.raises(InvalidBudget):
        _inputs.fraction("delta", value)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["zoo:cartpole-ppo", "zoo:pendulum-sac"])
def test_the_largest_allowed_budget_runs_every_observation_attack_without_overflow(
    policy: str,
) -> None:
    """The limit is low enough: at MAX_BUDGET in raw units no attack overflows float32 (an
    l2 norm overflowed from ε = 1e20)."""
    skip = {"sa-rl-obs-v1", "strategy-obs-v1"} | (
        {"timed-obs-v1"} if "pendulum" in policy else set()
    )
    ids = [a for a, c in ATTACKS.items() if c.surface.value == "observation" and a not in skip]
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error", RuntimeWarning)
        results = rlsec.redteam(
            policy,
            attacks=ids,
            epsilons=[_inputs.MAX_BUDGET],
            eps_unit="raw",
            alphas=[],
            episodes=1,
            num_envs=1,
        )
    assert {r["epsilon"] for r in results["results"]} == {_inputs.MAX_BUDGET}
    assert len(results["results"]) >= 5
