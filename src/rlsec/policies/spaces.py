"""Gymnasium spaces to and from plain JSON (no pickle), and checks that two spaces agree.

Example:
    >>> import gymnasium as gym, numpy as np
    >>> box = gym.spaces.Box(low=np.array([-1.0, -np.inf]), high=np.array([1.0, np.inf]))
    >>> space_to_json(box)["high"]
    [1.0, 'inf']
    >>> space_from_json(space_to_json(box)) == box
    True
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from rlsec.errors import PolicyLoadError, SpaceMismatch
from rlsec.policies._untrusted import (
    MAX_CATEGORIES,
    MAX_FEATURES,
    integer,
    numbers,
    shape,
    show,
    string,
)

__all__ = ["box_span", "check_same_space", "describe_space", "space_from_json", "space_to_json"]

_DTYPES = {
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
}


def _num(x: float) -> float | str:
    # JSON has no infinity: write it as a string, read it back with float().
    return x if np.isfinite(x) else ("inf" if x > 0 else "-inf")


def space_to_json(space: gym.Space[Any]) -> dict[str, Any]:
    """Describe a supported space as JSON-ready data."""
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": [_num(float(v)) for v in space.low.reshape(-1)],
            "high": [_num(float(v)) for v in space.high.reshape(-1)],
        }
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        if np.any(space.start != 0):
            raise SpaceMismatch(f"MultiDiscrete with non-zero start is not supported: {space}")
        return {"type": "multi_discrete", "nvec": [int(v) for v in space.nvec.reshape(-1)]}
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "multi_binary", "n": int(np.prod(space.shape))}
    raise SpaceMismatch(
        f"expected a Box, Discrete, MultiDiscrete or MultiBinary space, got {space!r}"
    )


def _cast_bounds(values: np.ndarray, dtype: np.dtype[Any], where: str) -> np.ndarray:
    """Bounds in float64 cast to ``dtype``, refusing NaN and finite values the dtype cannot
    hold (``1e300`` as float32 would silently become infinite). For integer dtypes, infinite
    bounds become the dtype's limits, as Gymnasium does."""
    if np.isnan(values).any():
        raise PolicyLoadError(f"{where}: expected numbers or infinities, got NaN")
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        info = np.iinfo(dtype) if dtype != np.bool_ else np.iinfo(np.uint8)
        hi = 1 if dtype == np.bool_ else info.max
        finite = values[np.isfinite(values)]
        if (
            np.any(finite != np.round(finite))
            or np.any(finite < info.min)
            or np.any(finite > float(hi))
        ):
            raise PolicyLoadError(
                f"{where}: expected whole numbers within {dtype}'s range [{info.min}, {hi}], "
                f"got {show(values.tolist())}"
            )
        # in the integer domain: float(2**63 - 1) is 2**63, which int64 cannot hold
        out = np.empty(values.shape, dtype)
        top, bottom = values >= float(hi), values <= float(info.min)
        mid = ~(top | bottom)
        out[mid] = values[mid].astype(dtype)
        out[top], out[bottom] = hi, info.min
        return out
    with np.errstate(over="ignore"):
        cast = values.astype(dtype)
    if np.any(np.isinf(cast) & np.isfinite(values)):
        raise PolicyLoadError(f"{where}: a finite bound overflows {dtype}: {show(values.tolist())}")
    return cast


def _box(
    dims: tuple[int, ...], dtype_name: str, low: np.ndarray, high: np.ndarray, where: str
) -> gym.spaces.Box:
    """A Box from already-parsed bounds (float64, flattened), after every check."""
    if dtype_name not in _DTYPES:
        raise PolicyLoadError(
            f"{where}: Box dtype must be one of {sorted(_DTYPES)}, got {dtype_name!r}"
        )
    dtype = np.dtype(dtype_name)
    size = math.prod(dims)
    if low.size != size or high.size != size:
        raise PolicyLoadError(
            f"{where}: a Box of shape {list(dims)} needs {size} bounds, got {low.size} low and "
            f"{high.size} high"
        )
    lo, hi = _cast_bounds(low, dtype, f"{where}.low"), _cast_bounds(high, dtype, f"{where}.high")
    if np.any(lo > hi):
        bad = int(np.argmax(lo > hi))
        raise PolicyLoadError(
            f"{where}: expected low <= high, got low {lo.reshape(-1)[bad]} > high "
            f"{hi.reshape(-1)[bad]} at index {bad}"
        )
    return gym.spaces.Box(low=lo.reshape(dims), high=hi.reshape(dims), shape=dims, dtype=dtype)


def _discrete(n: Any, start: Any, where: str) -> gym.spaces.Discrete:
    n = integer(n, f"{where}.n", lo=1, hi=MAX_CATEGORIES)
    start = integer(start, f"{where}.start", lo=-(2**53), hi=2**53)
    return gym.spaces.Discrete(n, start=start)


def _multi_discrete(nvec: list[int], dims: tuple[int, ...], where: str) -> gym.spaces.MultiDiscrete:
    if not nvec or sum(nvec) > MAX_CATEGORIES:
        raise PolicyLoadError(
            f"{where}: expected a non-empty nvec of at most {MAX_CATEGORIES} categories in all, "
            f"got {show(nvec)}"
        )
    return gym.spaces.MultiDiscrete(np.array(nvec, dtype=np.int64).reshape(dims))


def space_from_json(d: Any, where: str = "space") -> gym.Space[Any]:
    """Rebuild a space written by :func:`space_to_json`; raise ``PolicyLoadError`` naming the
    field when anything is missing, of the wrong type or out of range (NaN bounds, a Box of
    more than 2**20 elements, a Discrete ``n`` below 1 or above 2**20, a boolean shape...).
    Nothing of the declared size is allocated before its size is checked."""
    if not isinstance(d, dict):
        raise PolicyLoadError(f"{where}: a space must be a JSON object, got {type(d).__name__}")
    kind = d.get("type")
    if kind == "box":
        dims = shape(d.get("shape"), f"{where}.shape")
        size = math.prod(dims)
        low = numbers(d.get("low"), f"{where}.low", size=size, finite=False)
        high = numbers(d.get("high"), f"{where}.high", size=size, finite=False)
        return _box(dims, string(d.get("dtype"), f"{where}.dtype"), low, high, where)
    if kind == "discrete":
        return _discrete(d.get("n"), d.get("start"), where)
    if kind == "multi_discrete":
        raw = d.get("nvec")
        if not isinstance(raw, list) or len(raw) > MAX_FEATURES:
            raise PolicyLoadError(f"{where}.nvec: expected a list of integers, got {show(raw)}")
        nvec = [
            integer(v, f"{where}.nvec[{i}]", lo=1, hi=MAX_CATEGORIES) for i, v in enumerate(raw)
        ]
        return _multi_discrete(nvec, (len(nvec),), where)
    if kind == "multi_binary":
        return gym.spaces.MultiBinary(integer(d.get("n"), f"{where}.n", lo=1, hi=MAX_FEATURES))
    raise PolicyLoadError(
        f"{where}: space type must be box, discrete, multi_discrete or multi_binary, got {kind!r}"
    )


def describe_space(space: gym.Space[Any]) -> str:
    """A short human description, used in error messages."""
    if isinstance(space, gym.spaces.Box):
        return f"Box(shape={tuple(space.shape)}, dtype={space.dtype})"
    if isinstance(space, gym.spaces.Discrete):
        start = int(space.start)
        return f"Discrete({int(space.n)}, start={start})" if start else f"Discrete({int(space.n)})"
    if isinstance(space, gym.spaces.MultiDiscrete):
        return f"MultiDiscrete({space.nvec.tolist()})"
    if isinstance(space, gym.spaces.MultiBinary):
        return f"MultiBinary({space.n})"
    return repr(space)


def check_same_space(
    what: str, expected: gym.Space[Any], received: gym.Space[Any], *, bounds: bool = False
) -> None:
    """Raise :class:`SpaceMismatch` unless the two spaces have the same type and shape.

    With ``bounds=True``, Box bounds must agree too (to float32 precision); the message then
    names the bounds.
    """
    same = type(expected) is type(received)
    other: Any = received  # same type as ``expected`` whenever it is read below
    if same and isinstance(expected, gym.spaces.Box):
        same = expected.shape == other.shape
        if same and bounds:
            same = bool(
                np.allclose(expected.low, other.low, rtol=1e-6, equal_nan=True)
                and np.allclose(expected.high, other.high, rtol=1e-6, equal_nan=True)
            )
    elif same and isinstance(expected, gym.spaces.Discrete):
        same = int(expected.n) == int(other.n) and int(expected.start) == int(other.start)
    elif same and isinstance(expected, gym.spaces.MultiDiscrete):
        same = expected.nvec.tolist() == other.nvec.tolist()
    elif same and isinstance(expected, gym.spaces.MultiBinary):
        same = expected.shape == other.shape
    if not same:
        want, got = describe_space(expected), describe_space(received)
        if want == got and isinstance(expected, gym.spaces.Box):  # only the bounds differ
            want += f" with bounds [{expected.low.tolist()}, {expected.high.tolist()}]"
            got += f" with bounds [{other.low.tolist()}, {other.high.tolist()}]"
        raise SpaceMismatch(f"{what}: expected {want}, got {got}")


def box_span(space: gym.spaces.Box) -> np.ndarray:
    """Per-dimension width ``high - low`` of a Box, flattened; 1 where unbounded or empty.

    Example:
        >>> low, high = np.array([-2, 0], np.float32), np.array([2, np.inf], np.float32)
        >>> box_span(gym.spaces.Box(low, high, dtype=np.float32)).tolist()
        [4.0, 1.0]
    """
    span = (space.high - space.low).astype(np.float64).reshape(-1)
    return np.where(np.isfinite(span) & (span > 0), span, 1.0)
