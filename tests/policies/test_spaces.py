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
