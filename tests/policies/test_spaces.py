from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlsec.errors import PolicyLoadError, SpaceMismatch
from rlsec.policies.spaces import check_same_space, space_from_json, space_to_json


def test_bounds_are_compared_when_asked_and_named_in_the_message() -> None:
    a = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    b = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
    check_same_space("x", a, b)  # shape only
    with pytest.raises(SpaceMismatch, match=r"bounds \[\[-1.0, -1.0\]"):
        check_same_space("x", a, b, bounds=True)


def test_discrete_start_matters() -> None:
    with pytest.raises(SpaceMismatch, match="start=1"):
        check_same_space("x", gym.spaces.Discrete(3), gym.spaces.Discrete(3, start=1))


@given(
    low=st.lists(st.floats(-1e6, 0, allow_nan=False), min_size=1, max_size=5),
    inf_mask=st.lists(st.booleans(), min_size=5, max_size=5),
)
def test_box_round_trips_through_json_with_infinities(
    low: list[float], inf_mask: list[bool]
) -> None:
    lo = np.array(
        [-np.inf if m else v for v, m in zip(low, inf_mask, strict=False)], dtype=np.float32
    )
    space = gym.spaces.Box(lo, np.full(len(lo), np.inf, np.float32), dtype=np.float32)
    assert space_from_json(space_to_json(space)) == space


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"type": "box", "shape": [2], "dtype": "float32", "low": [0], "high": [1, 1]},
        {"type": "box", "shape": [1], "dtype": "object", "low": [0], "high": [1]},
        {"type": "discrete", "n": 0},
        {"type": "discrete", "n": "3"},
        {"type": "graph"},
    ],
)
def test_malformed_spaces_are_load_errors(bad: object) -> None:
    with pytest.raises(PolicyLoadError):
        space_from_json(bad)


@pytest.mark.parametrize(
    "space",
    [
        gym.spaces.Box(-np.inf, np.inf, (3,), np.int64),
        gym.spaces.Box(np.iinfo(np.int64).min, np.iinfo(np.int64).max, (2,), np.int64),
        gym.spaces.Box(0, 255, (2, 2, 1), np.uint8),
        gym.spaces.Box(np.iinfo(np.uint64).min, np.iinfo(np.uint64).max, (1,), np.uint64),
        gym.spaces.Box(-1.0, 1.0, (2,), np.float16),
    ],
)
def test_integer_and_narrow_boxes_round_trip_exactly(space: gym.spaces.Box) -> None:
    """float(2**63 - 1) is 2**63: the bounds are set in the integer domain, never wrapped."""
    back = space_from_json(space_to_json(space))
    assert back == space
    assert back.low.tolist() == space.low.tolist() and back.high.tolist() == space.high.tolist()


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (
            {"type": "box", "shape": [1], "dtype": "int8", "low": [0.5], "high": [1]},
            "whole numbers",
        ),
        ({"type": "box", "shape": [1], "dtype": "int8", "low": [-300], "high": [1]}, "range"),
        (
            {"type": "box", "shape": [1], "dtype": "float32", "low": ["nan"], "high": [1]},
            "got 'nan'",
        ),
        ({"type": "multi_discrete", "nvec": [2, 0]}, "nvec[1]: expected an integer in [1,"),
        ({"type": "multi_binary", "n": 2**21}, "n: expected an integer in [1, 1048576]"),
    ],
)
def test_out_of_range_space_fields_are_named(bad: dict[str, object], expected: str) -> None:
    with pytest.raises(PolicyLoadError) as exc_info:
        space_from_json(bad)
    assert expected in str(exc_info.value)
