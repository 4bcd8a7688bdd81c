"""The ε-ball's run-time check fails closed: it accepts only what it shows to be inside.

Each test is named after what it stops; the weakenings each one catches are listed in
docs/mutation.md.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlsec.attacks._ball import Ball
from rlsec.errors import BudgetViolation, ConfigError, InvalidBudget

F32_MAX = float(np.finfo(np.float32).max)
norms = st.sampled_from(["linf", "l2"])


def _wide(dim: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(dim, -1e6, np.float32), np.full(dim, 1e6, np.float32)


def test_a_nan_in_the_clean_observation_does_not_let_a_large_move_through() -> None:
    """Regression: with a NaN in the clean row, the row's size was NaN, ``NaN > ε`` is false,
    and a 100-unit move at ε = 0.1 passed the check."""
    for norm in ("linf", "l2"):
        ball = Ball(0.1, norm, np.ones(2), *_wide(2))
        x0 = np.array([[np.nan, 0.0]], np.float32)
        with pytest.raises(BudgetViolation, match="clean observation is not finite"):
            ball.check(x0, np.array([[np.nan, 100.0]], np.float32))


@settings(max_examples=80, deadline=None)
@given(
    data=st.data(),
    dim=st.integers(1, 6),
    norm=norms,
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
)
def test_any_clean_observation_with_a_non_finite_entry_makes_the_check_refuse(
    data: st.DataObject, dim: int, norm: str, bad: float
) -> None:
    """The invariant: whatever the perturbed row is (even the clean row itself, bit for bit),
    a clean row holding NaN or an infinity is refused. The attacks refuse such a batch up
    front (tests/attacks/test_observation.py); the check refuses it again."""
    rows = data.draw(st.integers(1, 4))
    elems = st.floats(-10, 10, width=32)
    x0 = np.array(data.draw(st.lists(elems, min_size=rows * dim, max_size=rows * dim)))
    x0 = x0.reshape(rows, dim).astype(np.float32)
    x0[data.draw(st.integers(0, rows - 1)), data.draw(st.integers(0, dim - 1))] = bad
    scale = np.array(data.draw(st.lists(st.floats(0, 3), min_size=dim, max_size=dim)))
    eps = data.draw(st.floats(0, 5))
    ball = Ball(eps, norm, scale, *_wide(dim))
    for x in (x0.copy(), np.nan_to_num(x0), np.zeros_like(x0)):
        with pytest.raises(BudgetViolation, match="not finite"):
            ball.check(x0, x)


@settings(max_examples=100, deadline=None)
@given(
    data=st.data(),
    dim=st.integers(1, 6),
    norm=norms,
    eps=st.floats(1e-3, 5.0),
    over=st.floats(1e-5, 4.0),
)
def test_a_move_beyond_the_budget_is_refused_and_one_at_the_budget_passes(
    data: st.DataObject, dim: int, norm: str, eps: float, over: float
) -> None:
    """Catches any loosening of the budget by more than the check's 1e-6 relative slack (the
    review's ``ε·5`` weakening left every test green): a perturbation of size ε·(1 + over)
    is refused, whatever the direction and the per-feature scale; the perturbation of size
    exactly ε that the projection makes of it passes."""
    scale = np.array(data.draw(st.lists(st.floats(0.01, 3), min_size=dim, max_size=dim)))
    direction = np.array(data.draw(st.lists(st.floats(-1, 1), min_size=dim, max_size=dim)))
    if not np.any(np.abs(direction) > 1e-3):
        direction[0] = 1.0
    size = np.abs(direction).max() if norm == "linf" else np.linalg.norm(direction)
    u = direction / size  # unit size in the norm, in scaled units
    ball = Ball(eps, norm, scale, *_wide(dim))
    x0 = np.zeros((1, dim), np.float32)
    beyond = (u * scale * eps * (1 + over))[None].astype(np.float64)
    with pytest.raises(BudgetViolation, match="exceeds the budget"):
        ball.check(x0, beyond)
    ball.check(x0, ball.project(x0, beyond))


def test_a_move_outside_the_space_is_refused_even_inside_the_ball() -> None:
    """The review removed the space check and every test stayed green."""
    ball = Ball(10.0, "linf", np.ones(2), np.array([-1.0, -1.0]), np.array([1.0, 1.0]))
    x0 = np.zeros((1, 2), np.float32)
    for x in ([[1.5, 0.0]], [[0.0, -1.25]], [[np.nextafter(np.float32(1), 2), 0]]):
        with pytest.raises(BudgetViolation, match="left the observation space"):
            ball.check(x0, np.asarray(x, np.float32))
    ball.check(x0, np.array([[1.0, -1.0]], np.float32))  # on the boundary: inside


def test_the_space_is_widened_to_the_clean_point_and_no_further() -> None:
    """A clean point outside the space may stay where it is (clipping must not move it out of
    the ball), but a perturbation may not go beyond it."""
    ball = Ball(1.0, "linf", np.ones(1), np.array([-1.0]), np.array([1.0]))
    x0 = np.array([[1.5]], np.float32)
    ball.check(x0, x0.copy())
    ball.check(x0, np.array([[0.75]], np.float32))
    with pytest.raises(BudgetViolation, match="left the observation space"):
        ball.check(x0, np.array([[1.75]], np.float32))
    assert ball.project(x0, np.array([[2.4]], np.float32)).tolist() == [[1.5]]


def test_a_perturbed_zero_scale_feature_is_refused_however_small() -> None:
    ball = Ball(1.0, "l2", np.array([0.0, 1.0]), *_wide(2))
    x0 = np.zeros((1, 2), np.float32)
    with pytest.raises(BudgetViolation, match="zero scale"):
        ball.check(x0, np.array([[1e-30, 0.0]], np.float32))
    ball.check(x0, np.array([[0.0, 0.5]], np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_perturbed_observation_is_refused(bad: float) -> None:
    ball = Ball(0.5, "linf", np.ones(2), np.full(2, -np.inf), np.full(2, np.inf))
    with pytest.raises(BudgetViolation, match="perturbed observation is not finite"):
        ball.check(np.zeros((1, 2), np.float32), np.array([[bad, 0.0]], np.float32))


def test_a_perturbed_batch_of_another_shape_is_refused() -> None:
    ball = Ball(0.5, "linf", np.ones(2), *_wide(2))
    with pytest.raises(BudgetViolation, match="does not match"):
        ball.check(np.zeros((2, 2), np.float32), np.zeros((1, 4), np.float32))


def test_a_subnormal_scale_does_not_turn_the_budget_check_into_nan() -> None:
    """Regression: ``1 / 5e-324`` overflowed to inf (the CI warning at _ball.py:41), an
    unperturbed feature then measured ``0 · inf = NaN``, the row's size was NaN and a
    100-unit move on another feature passed. Sizes are quotients now: exact, no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for norm in ("linf", "l2"):
            ball = Ball(0.1, norm, np.array([5e-324, 1.0]), *_wide(2))
            x0 = np.zeros((1, 2), np.float32)
            with pytest.raises(BudgetViolation, match="exceeds the budget"):
                ball.check(x0, np.array([[0.0, 100.0]], np.float32))
            ball.check(x0, np.array([[0.0, 0.1]], np.float32))
            x = ball.project(x0, np.array([[1.0, 100.0]], np.float32))
            ball.check(x0, x)
            assert x[0, 0] == 0.0  # the subnormal radius rounds to no move in float32


@settings(max_examples=60, deadline=None)
@given(
    scale=st.lists(st.floats(0, 1e-300), min_size=1, max_size=4),
    eps=st.floats(0, 10),
    norm=norms,
)
def test_tiny_scales_never_warn_and_their_projections_pass_the_check(
    scale: list[float], eps: float, norm: str
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dim = len(scale)
        ball = Ball(eps, norm, np.array(scale), *_wide(dim))
        x0 = np.ones((2, dim), np.float32)
        x = ball.project(x0, x0 + 3.0)
        ball.check(x0, x)


@pytest.mark.parametrize(
    ("eps", "why"),
    [
        (np.nan, "finite number"),
        (np.inf, "finite number"),
        (-0.1, "finite number"),
        (1e39, "finite number"),
        (True, "must be a number"),
        ("0.1", "must be a number"),
    ],
)
def test_a_budget_the_ball_cannot_represent_is_refused(eps: object, why: str) -> None:
    with pytest.raises(InvalidBudget, match=why):
        Ball(eps, "linf", np.ones(2), *_wide(2))  # type: ignore[arg-type]


def test_a_radius_beyond_float32_is_refused_not_overflowed() -> None:
    """``--eps 1e308`` overflowed the ball's uniform start; ε·scale beyond float32 turns
    every perturbed float32 observation into inf. Both are refused when the ball is built."""
    with pytest.raises(InvalidBudget, match="within float32"):
        Ball(1e30, "linf", np.array([1.0, 1e10]), *_wide(2))
    Ball(F32_MAX, "linf", np.ones(2), *_wide(2))  # the largest representable budget


@pytest.mark.parametrize(
    ("scale", "low", "high", "why"),
    [
        ([np.nan, 1.0], [-1, -1], [1, 1], "scale must be finite"),
        ([np.inf, 1.0], [-1, -1], [1, 1], "scale must be finite"),
        ([-1.0, 1.0], [-1, -1], [1, 1], "scale must be finite"),
        ([1.0, 1.0], [np.nan, -1], [1, 1], "low <= high"),
        ([1.0, 1.0], [-1, -1], [1, np.nan], "low <= high"),
        ([1.0, 1.0], [2, -1], [1, 1], "low <= high"),
        ([1.0, 1.0], [-1], [1], "one entry per feature"),
    ],
)
def test_a_scale_or_space_the_check_cannot_compare_with_is_refused(
    scale: list[float], low: list[float], high: list[float], why: str
) -> None:
    with pytest.raises(ConfigError, match=why):
        Ball(0.1, "linf", np.array(scale), np.array(low), np.array(high))


def test_an_unknown_norm_is_refused() -> None:
    with pytest.raises(ConfigError, match="linf and l2"):
        Ball(0.1, "l0", np.ones(2), *_wide(2))
