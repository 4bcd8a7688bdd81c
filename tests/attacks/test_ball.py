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
_CLEAN_NOT_FINITE = r"^the clean observation is not finite: there is no ε-ball around it$"
_LEFT_SPACE = r"^perturbed observation left the observation space$"
norms = st.sampled_from(["linf", "l2"])


def _wide(dim: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(dim, -1e6, np.float32), np.full(dim, 1e6, np.float32)


def test_a_nan_in_the_clean_observation_does_not_let_a_large_move_through() -> None:
    """Regression: with a NaN in the clean row, the row's size was NaN, ``NaN > ε`` is false,
    and a 100-unit move at ε = 0.1 passed the check."""
    for norm in ("linf", "l2"):
        ball = Ball(0.1, norm, np.ones(2), *_wide(2))
        x0 = np.array([[np.nan, 0.0]], np.float32)
        with pytest.raises(BudgetViolation, match=_CLEAN_NOT_FINITE):
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
        with pytest.raises(
            BudgetViolation, match=r"^perturbed observation left the observation space$"
        ):
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
    with pytest.raises(BudgetViolation, match=r"^a feature with zero scale was perturbed$"):
        ball.check(x0, np.array([[1e-30, 0.0]], np.float32))
    ball.check(x0, np.array([[0.0, 0.5]], np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_perturbed_observation_is_refused(bad: float) -> None:
    ball = Ball(0.5, "linf", np.ones(2), np.full(2, -np.inf), np.full(2, np.inf))
    with pytest.raises(BudgetViolation, match=r"^perturbed observation is not finite$"):
        ball.check(np.zeros((1, 2), np.float32), np.array([[bad, 0.0]], np.float32))


def test_a_perturbed_batch_of_another_shape_is_refused() -> None:
    ball = Ball(0.5, "linf", np.ones(2), *_wide(2))
    with pytest.raises(
        BudgetViolation,
        match=r"^perturbed batch of shape \(1, 4\) does not match the clean batch \(2, 2\) of 2 "
        "features$",
    ):
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
        (True, "^epsilon must be a number, got bool$"),
        ("0.1", "^epsilon must be a number, got str$"),
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


# -- the helpers inside optimisation loops: the final projection and check do not depend on
# -- them, but a broken helper weakens every attack that uses it ------------------------------


@settings(max_examples=80, deadline=None)
@given(
    data=st.data(), dim=st.integers(1, 5), rows=st.integers(1, 6), norm=norms,
    eps=st.floats(1e-3, 5.0),
)  # fmt: skip
def test_project_delta_is_the_projection_onto_the_ball_in_scaled_units(
    data: st.DataObject, dim: int, rows: int, norm: str, eps: float
) -> None:
    """Rows inside stay where they are; rows outside land on the boundary (l2: shrunk along
    their own direction; linf: clipped per feature); each row on its own."""
    ball = Ball(eps, norm, np.ones(dim), *_wide(dim))
    flat = data.draw(st.lists(st.floats(-10, 10), min_size=rows * dim, max_size=rows * dim))
    u = np.asarray(flat, np.float32).reshape(rows, dim)
    p = ball.project_delta(u)
    if norm == "linf":
        assert np.array_equal(p, np.clip(u, -eps, eps))
        return
    n = np.linalg.norm(u.astype(np.float64), axis=1)
    pn = np.linalg.norm(p.astype(np.float64), axis=1)
    inside = n <= eps
    assert np.array_equal(p[inside], u[inside])
    np.testing.assert_allclose(pn[~inside], eps, rtol=1e-5)
    out = ~inside & (n > 0)
    np.testing.assert_allclose(p[out] * n[out, None], u[out] * pn[out, None], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("dim", [1, 3])
def test_random_starts_are_uniform_in_the_ball(norm: str, dim: int) -> None:
    """linf: every feature uniform on [-ε, ε]; l2: the direction uniform and the radius
    distributed as ε·U^(1/d) (what a uniform point of the d-ball has), row by row."""
    from scipy import stats

    eps, n = 0.7, 4000
    ball = Ball(eps, norm, np.ones(dim), *_wide(dim))
    start = ball.random_start((n, dim), np.random.default_rng(0))
    assert start.dtype == np.float32 and start.shape == (n, dim)
    u = start.astype(np.float64)
    if norm == "linf":
        for j in range(dim):
            assert stats.kstest(u[:, j], stats.uniform(-eps, 2 * eps).cdf).pvalue > 1e-3
        return
    r = np.linalg.norm(u, axis=1)
    assert np.all(r <= eps * (1 + 1e-6))
    assert stats.kstest((r / eps) ** dim, stats.uniform().cdf).pvalue > 1e-3
    if dim > 1:
        assert np.abs(np.mean(u / r[:, None], axis=0)).max() < 0.05  # no preferred direction


def test_a_linf_step_moves_each_feature_by_the_step_along_the_gradient_sign() -> None:
    ball = Ball(1.0, "linf", np.ones(3), *_wide(3))
    u = np.array([[0.0, 0.0, 0.95], [0.5, -0.5, 0.0]], np.float32)
    grad = np.array([[1.0, 0.0, 3.0], [-2.0, -1.0, 0.0]], np.float32)
    out = ball.step(u, grad, 0.1)
    expected = np.array([[0.1, 0.0, 1.0], [0.4, -0.6, 0.0]], np.float32)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out.dtype == np.float32


def test_an_l2_step_has_the_step_length_in_every_row_and_stays_in_the_ball() -> None:
    ball = Ball(1.0, "l2", np.ones(2), *_wide(2))
    u = np.zeros((3, 2), np.float32)
    grad = np.array([[3.0, 4.0], [0.0, 1e-3], [-100.0, 0.0]], np.float32)
    out = ball.step(u, grad, 0.25)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 0.25, rtol=1e-6)
    np.testing.assert_allclose(out[0], [0.15, 0.2], rtol=1e-6)
    far = ball.step(np.array([[0.9, 0.0]], np.float32), np.array([[1.0, 0.0]], np.float32), 0.5)
    np.testing.assert_allclose(far, [[1.0, 0.0]], rtol=1e-6)


def test_box32_is_only_the_linf_balls_box() -> None:
    with pytest.raises(ValueError, match=r"^box32 is the linf ball's box$"):
        Ball(0.1, "l2", np.ones(2), *_wide(2)).box32(np.zeros((1, 2), np.float32))


def test_inputs_of_any_float_type_and_shape_are_read_as_flat_float64() -> None:
    """A float32 scale would make ε·scale a float32 product (NumPy keeps the array's type),
    and an image-shaped scale or bound must be flattened like the observations are."""
    scale32 = np.array([[0.1, 0.3], [0.7, 0.0]], np.float32)
    low, high = np.full((2, 2), -1, np.float32), np.full((2, 2), 1, np.float32)
    ball = Ball(0.3, "l2", scale32, low, high)
    for a in (ball.scale, ball.low, ball.high, ball.radius):
        assert a.dtype == np.float64 and a.shape == (4,)
    assert np.array_equal(ball.radius, 0.3 * scale32.astype(np.float64).reshape(-1))
    x0 = np.zeros((3, 2, 2), np.float32)
    x = ball.project(x0, np.full((3, 2, 2), 5.0, np.float32))
    assert x.shape == (3, 2, 2) and x.dtype == np.float32
    ball.check(x0, x)


def test_a_bound_with_one_side_of_the_wrong_size_is_refused_and_a_point_interval_is_not() -> None:
    with pytest.raises(ConfigError, match="one entry per feature"):
        Ball(0.1, "linf", np.ones(2), np.zeros(2), np.zeros(3))
    with pytest.raises(ConfigError, match="one entry per feature"):
        Ball(0.1, "linf", np.ones(2), np.zeros(3), np.zeros(2))
    ball = Ball(0.1, "linf", np.ones(2), np.array([0.0, -1.0]), np.array([0.0, 1.0]))
    ball.check(np.zeros((1, 2), np.float32), np.array([[0.0, 0.05]], np.float32))


def test_the_budget_is_inclusive_up_to_its_stated_slack() -> None:
    """The check accepts a size of exactly ε·(1 + 1e-6) + 1e-12 and nothing beyond it."""
    eps = 0.5
    limit = eps * (1 + 1e-6) + 1e-12
    ball = Ball(eps, "linf", np.ones(1), *_wide(1))
    x0 = np.zeros((1, 1), np.float32)
    ball.check(x0, np.array([[limit]]))
    with pytest.raises(BudgetViolation, match="exceeds the budget"):
        ball.check(x0, np.array([[np.nextafter(limit, 1.0)]]))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_an_empty_batch_and_an_empty_observation_pass(norm: str) -> None:
    ball = Ball(0.1, norm, np.ones(2), *_wide(2))
    ball.check(np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32))
    empty = Ball(0.1, norm, np.ones(0), np.zeros(0), np.zeros(0))
    empty.check(np.zeros((3, 0), np.float32), np.zeros((3, 0), np.float32))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_size_that_overflows_is_refused_without_a_warning(norm: str) -> None:
    """1 / 5e-324 overflows to inf, and in l2 so does the square of 1e300: both are sizes
    beyond any budget, refused quietly (no RuntimeWarning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for scale in (5e-324, 1e-300):
            ball = Ball(0.1, norm, np.array([scale]), *_wide(1))
            with pytest.raises(BudgetViolation, match="exceeds the budget"):
                ball.check(np.zeros((1, 1), np.float32), np.ones((1, 1), np.float32))


@settings(max_examples=100, deadline=None)
@given(
    data=st.data(), dim=st.integers(1, 4), rows=st.integers(1, 4), norm=norms,
    eps=st.floats(1e-4, 3.0), offset=st.floats(-1e4, 1e4, width=32),
)  # fmt: skip
def test_a_projection_is_inside_exactly_and_leaves_inside_points_alone(
    data: st.DataObject, dim: int, rows: int, norm: str, eps: float, offset: float
) -> None:
    """What the check accepts bit for bit: the projection of any point, even far from a clean
    point whose float32 spacing is larger than the radius (rounding would step out of the
    ball without the inward correction). A point already inside (here: scaled by a factor
    below 1 from a projected one) is left where it is, in every row separately."""
    scale = np.array(data.draw(st.lists(st.floats(1e-3, 3), min_size=dim, max_size=dim)))
    ball = Ball(eps, norm, scale, np.full(dim, -np.inf), np.full(dim, np.inf))
    n = rows * dim
    x0 = offset + np.array(data.draw(st.lists(st.floats(-1, 1), min_size=n, max_size=n)))
    x0 = x0.reshape(rows, dim).astype(np.float32)
    far = np.array(data.draw(st.lists(st.floats(-50, 50), min_size=n, max_size=n)))
    x = ball.project(x0, x0 + far.reshape(rows, dim))
    ball.check(x0, x)
    inner = (x0 + 0.5 * (x.astype(np.float64) - x0)).astype(np.float32)
    inner[0] = x0[0]  # one row exactly at its clean point
    assert np.array_equal(ball.project(x0, inner), inner)


def test_an_l2_projection_lands_on_the_sphere_along_its_own_direction() -> None:
    ball = Ball(1.0, "l2", np.array([1.0, 2.0]), *_wide(2))
    x0 = np.zeros((2, 2), np.float32)
    x = ball.project(x0, np.array([[3.0, 8.0], [0.2, 0.2]], np.float32))
    u = x[0] / np.array([1.0, 2.0])
    np.testing.assert_allclose(np.linalg.norm(u), 1.0, rtol=1e-6)
    np.testing.assert_allclose(u / np.linalg.norm(u), np.array([3, 4]) / 5, rtol=1e-6)
    assert np.array_equal(x[1], np.array([0.2, 0.2], np.float32))  # inside: unchanged


def test_box_edge_stays_inside_when_x0_plus_radius_rounds_outward() -> None:
    """The mirror of the regression in test_observation.py: -6 + 1.9999999999999996 rounds
    to -4.0 in float64, outside the ball as project() measures it; the box steps inward."""
    x0 = np.array([[0, 0, 0, -6.0]], np.float32)
    scale = np.array([0, 0, 0, 1.9999999999999996])
    ball = Ball(1.0, "linf", scale, np.full(4, -1, np.float32), np.full(4, 1, np.float32))
    lo, hi = ball.box32(x0)
    assert hi[0, 3] < -4.0
    assert np.array_equal(ball.project(x0, lo), lo)
    assert np.array_equal(ball.project(x0, hi), hi)
    ball.check(x0, hi)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_float32_point_inside_is_projected_to_itself_bit_for_bit(norm: str) -> None:
    """Regression (found by Hypothesis under the mutation run): with x0 = 1, the point
    5.8e-33 of the box came back as 0, since 1 + (5.8e-33 - 1) rounds to 0; the linf loop's
    promise that its iterates need no projection did not hold."""
    scale = np.array([1.0, 0.0])
    ball = Ball(1.0, norm, scale, np.array([-1.0, -1.0]), np.array([1.0, 1.0]))
    x0 = np.array([[1.0, 0.0]], np.float32)
    x = np.array([[5.7939768e-33, 0.0]], np.float32)
    assert np.array_equal(ball.project(x0, x), x)
    ball.check(x0, x)
    moved_fixed = np.array([[5.7939768e-33, 1e-30]], np.float32)
    assert ball.project(x0, moved_fixed)[0, 1] == 0.0  # a fixed feature is still pinned


# A float32 point whose distance to its clean value rounds in float64: 1 - 0.75·2^-53 rounds
# to 1 - 2^-53, so recomputing x0 + (x - x0) gives 2^-53, not x. A point the ball keeps must
# come back bit for bit however its row is tested (per feature in linf, per row in l2).
_TINY = np.float32(0.75 * 2.0**-53)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_point_exactly_on_the_space_bound_is_kept_bit_for_bit(sign: float) -> None:
    bound = np.array([sign * _TINY], np.float64)
    low, high = (bound, np.array([2.0])) if sign > 0 else (np.array([-2.0]), bound)
    ball = Ball(1.0, "linf", np.ones(1), low, high)
    x0 = np.array([[sign]], np.float32)
    x = np.array([[sign * _TINY]], np.float32)
    assert np.array_equal(ball.project(x0, x), x)
    ball.check(x0, x)


def test_a_linf_point_inside_is_kept_even_when_its_l2_size_exceeds_the_budget() -> None:
    ball = Ball(1.0, "linf", np.ones(2), *_wide(2))
    x0 = np.array([[1.0, 0.0]], np.float32)
    x = np.array([[_TINY, 1.0]], np.float32)  # l2 size about sqrt(2)
    assert np.array_equal(ball.project(x0, x), x)
    ball.check(x0, x)


def test_l2_rows_are_kept_or_projected_each_on_its_own() -> None:
    ball = Ball(1.0, "l2", np.ones(1), *_wide(1))
    x0 = np.ones((3, 1), np.float32)
    x = np.array([[_TINY], [_TINY], [5.0]], np.float32)  # two inside (together: sqrt 2), one out
    out = ball.project(x0, x)
    assert np.array_equal(out[:2], x[:2])
    assert out[2, 0] == np.float32(2.0)
    ball.check(x0, out)


def test_an_l2_point_inside_the_ball_but_outside_the_space_only_loses_what_is_outside() -> None:
    ball = Ball(1.0, "l2", np.ones(2), np.array([-1.0, -1.0]), np.array([0.25, 1.0]))
    x0 = np.zeros((1, 2), np.float32)
    out = ball.project(x0, np.array([[0.5, 0.1]], np.float32))
    assert np.array_equal(out, np.array([[0.25, 0.1]], np.float32))


@pytest.mark.parametrize("size", [1.0, 0.5])
@pytest.mark.parametrize("eps", [0.1, 0.5])
def test_an_l2_point_outside_a_small_ball_is_projected_onto_its_sphere(
    eps: float, size: float
) -> None:
    """Onto the sphere, not inside it: a point of size below 1 is scaled by ε/size too."""
    ball = Ball(eps, "l2", np.ones(2), *_wide(2))
    x0 = np.zeros((1, 2), np.float32)
    out = ball.project(x0, np.array([[0.6 * size, 0.8 * size]], np.float32))
    np.testing.assert_allclose(out, [[0.6 * eps, 0.8 * eps]], rtol=1e-6)


def test_a_linf_projection_lands_exactly_on_the_boundary_it_can_represent() -> None:
    ball = Ball(1.0, "linf", np.ones(2), *_wide(2))
    x0 = np.array([[1.0, -1.0]], np.float32)
    out = ball.project(x0, np.array([[3.0, -3.0]], np.float32))
    assert np.array_equal(out, np.array([[2.0, -2.0]], np.float32))


@pytest.mark.parametrize("high", [1.3, 1.1])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_space_bound_float32_cannot_represent_bounds_the_box_and_the_projection(
    norm: str, high: float
) -> None:
    """A float64 Box's 0.7 lies between two float32 values; the nearer one, 0.69999999, is
    outside. The box's bound and a projection onto it step inward, so the check accepts
    them. (Before, the projection returned the point outside and the check refused it.)
    The same holds above: float32's nearest 1.1 is 1.10000002, outside a high of 1.1."""
    ball = Ball(1.0, norm, np.ones(1), np.array([0.7]), np.array([high]))
    x0 = np.array([[0.9]], np.float32)
    for far in (0.0, 2.0):
        out = ball.project(x0, np.array([[far]], np.float32))
        assert 0.7 <= float(out[0, 0]) <= high
        ball.check(x0, out)
    if norm == "linf":
        lo, hi = ball.box32(x0)
        assert float(lo[0, 0]) >= 0.7 and float(hi[0, 0]) <= high
        ball.check(x0, lo)
        ball.check(x0, hi)
        assert np.array_equal(ball.project(x0, lo), lo)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_projection_onto_a_bound_float32_represents_lands_on_it_exactly(norm: str) -> None:
    """Only a point outside the bound steps inward: a point on it stays. A fixed feature (scale
    0) whose clean value sits on the bound must not move off it by an ulp (the check refuses
    any move of a fixed feature), and a movable one clipped to the bound lands on it."""
    ball = Ball(1.0, norm, np.array([0.0, 1.0, 1.0]), np.array([0.0, -1.0, -5.0]), np.full(3, 5.0))
    x0 = np.array([[0.0, 0.0, 0.0]], np.float32)
    out = ball.project(x0, np.array([[-1.0, -3.0, 0.0]], np.float32))
    assert out[0, 0] == 0.0 and out[0, 1] == np.float32(-1.0)
    ball.check(x0, out)


def test_an_l2_size_whose_square_overflows_is_refused_without_a_warning() -> None:
    """``u·u`` overflows to inf for a finite size above 1.3e154: the check refuses it as over
    the budget (inf), with no warning that ``-W error`` would turn into a different error."""
    ball = Ball(1.0, "l2", np.ones(2), np.full(2, -np.inf), np.full(2, np.inf))
    x0 = np.zeros((1, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BudgetViolation, match="exceeds the budget"):
            ball.check(x0, np.array([[1e200, 0.0]]))
