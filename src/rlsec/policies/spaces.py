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

from typing import Any

import gymnasium as gym
import numpy as np

from rlsec.errors import PolicyLoadError, SpaceMismatch

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


def _as_int(d: dict[str, Any], key: str) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise PolicyLoadError(f"space field {key!r} must be an integer, got {v!r}")
    return v


def space_from_json(d: Any) -> gym.Space[Any]:
    """Rebuild a space written by :func:`space_to_json`; raise ``PolicyLoadError`` if invalid."""
    if not isinstance(d, dict):
        raise PolicyLoadError(f"a space must be a JSON object, got {type(d).__name__}")
    kind = d.get("type")
    try:
        if kind == "box":
            shape = tuple(int(s) for s in d["shape"])
            dtype = str(d["dtype"])
            if dtype not in _DTYPES:
                raise PolicyLoadError(f"Box dtype must be one of {sorted(_DTYPES)}, got {dtype}")
            size = int(np.prod(shape))
            low = np.array([float(v) for v in d["low"]], dtype=np.float64)
            high = np.array([float(v) for v in d["high"]], dtype=np.float64)
            if low.size != size or high.size != size:
                raise PolicyLoadError(
                    f"Box of shape {shape} needs {size} bounds, got {low.size} low and "
                    f"{high.size} high"
                )
            return gym.spaces.Box(
                low=low.reshape(shape).astype(dtype),
                high=high.reshape(shape).astype(dtype),
                shape=shape,
                dtype=np.dtype(dtype),
            )
        if kind == "discrete":
            n = _as_int(d, "n")
            if n < 1:
                raise PolicyLoadError(f"Discrete n must be >= 1, got {n}")
            return gym.spaces.Discrete(n, start=int(d.get("start", 0)))
        if kind == "multi_discrete":
            nvec = [int(v) for v in d["nvec"]]
            if not nvec or min(nvec) < 1:
                raise PolicyLoadError(f"MultiDiscrete nvec must be positive, got {nvec}")
            return gym.spaces.MultiDiscrete(nvec)
        if kind == "multi_binary":
            return gym.spaces.MultiBinary(_as_int(d, "n"))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, PolicyLoadError):
            raise
        raise PolicyLoadError(f"malformed {kind} space {d!r}: {exc}") from None
    raise PolicyLoadError(
        f"space type must be box, discrete, multi_discrete or multi_binary, got {kind!r}"
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
