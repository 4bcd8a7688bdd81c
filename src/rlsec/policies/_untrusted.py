"""One reader for untrusted policy metadata: ``spec.json``, SB3's ``data`` JSON and the two
small pickles of SB3's ``data`` whose meaning can be read without running them.

:func:`parse_json` bounds the input before the decoder allocates anything: its byte size, the
nesting depth and the number of values (a scan over the bytes with strings removed), then,
while decoding, the length of every string, the digits of every integer and the characters of
every float; it refuses duplicate keys, non-finite numbers (``1e999``) and, unless the limits
allow them, ``NaN``/``Infinity`` literals. A limit breached is an :class:`UnsafeArtifact`, any
other malformed input a :class:`PolicyLoadError`; nothing else escapes.

The field readers (:func:`integer`, :func:`number`, :func:`boolean`, :func:`shape`, ...) turn
one decoded value into what the loader needs, or raise a ``PolicyLoadError`` that names the
field, what was expected and what was received. Booleans are never integers here, and
integers never floats.

:func:`read_plain_pickle` reads a pickle *without unpickling it*: it walks the opcodes
(``pickletools.genops``, which only decodes them) and rebuilds plain data (None, booleans,
numbers, strings, bytes, lists, tuples, sets, dicts) with references to globals as
:class:`Global` values. Any opcode that would call, construct or look up something (REDUCE,
BUILD, NEWOBJ, INST, OBJ, extension codes, persistent ids, buffers) makes the pickle
:data:`OPAQUE`: what it would produce cannot be known without running it.
"""

from __future__ import annotations

import json
import math
import pickletools
import re
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from rlsec.errors import PolicyLoadError, UnsafeArtifact

__all__ = [
    "MAX_CATEGORIES",
    "MAX_FEATURES",
    "OPAQUE",
    "SB3_DATA_LIMITS",
    "SPEC_LIMITS",
    "Global",
    "Limits",
    "boolean",
    "integer",
    "number",
    "numbers",
    "parse_json",
    "read_plain_pickle",
    "shape",
    "show",
    "string",
]

#: most elements a space may declare (and features a network input may read): 2**20
MAX_FEATURES: Final = 2**20
#: largest Discrete ``n`` and MultiDiscrete entry: one-hot features are allocated per category
MAX_CATEGORIES: Final = 2**20
_MAX_NDIM: Final = 8


@dataclass(frozen=True)
class Limits:
    """Bounds on one untrusted JSON document."""

    max_bytes: int
    max_depth: int = 32
    max_string: int = 2**20
    max_int_digits: int = 40
    max_float_chars: int = 64
    max_elements: int = 2**21
    #: accept ``NaN``, ``Infinity`` and ``-Infinity`` literals (Python's ``json.dumps`` writes
    #: them; ``spec.json`` is written with ``allow_nan=False`` and never holds them)
    allow_constants: bool = False


SPEC_LIMITS: Final = Limits(max_bytes=16 * 2**20)
# SB3's data holds base64 cloudpickle blobs (the last observations, the episode buffer) as
# strings: longer strings, the same depth and counts.
SB3_DATA_LIMITS: Final = Limits(
    max_bytes=64 * 2**20, max_string=32 * 2**20, max_elements=2**20, allow_constants=True
)

# possessive ("unrolled") string pattern: the regex engine keeps no backtracking state per
# character or per escape, so a 64 MiB string is matched in constant memory
_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
_OPEN = np.zeros(256, np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1
_CHUNK = 1 << 20


def show(value: Any, width: int = 80) -> str:
    """``repr(value)`` cut to ``width`` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _scan(raw: bytes, what: str, limits: Limits) -> None:
    """Depth, value count and string lengths of ``raw``, before it is decoded. The number of
    strings is bounded first (from the quotes, in C); then each string is measured and blanked
    in a copy, so that brackets inside strings are text; then the blanked copy is scanned in
    chunks for nesting and values."""
    quotes = raw.count(b'"')
    if quotes > 2 * limits.max_elements:
        raise UnsafeArtifact(
            f"{what} holds about {quotes // 2} strings; at most {limits.max_elements} allowed"
        )
    bare = bytearray(raw)
    longest = 0
    for m in _STRING.finditer(raw):
        start, end = m.span()
        if end - start - 2 > longest:
            longest = end - start - 2
            if longest > limits.max_string:
                raise UnsafeArtifact(
                    f"{what} holds a string of {longest} bytes; at most {limits.max_string} allowed"
                )
        bare[start + 1 : end - 1] = bytes(end - start - 2)
    codes = np.frombuffer(bare, np.uint8)
    level, peak, values = 0, 0, 1
    for first in range(0, codes.size, _CHUNK):
        chunk = codes[first : first + _CHUNK]
        steps = _OPEN[chunk]
        depth = np.cumsum(steps, dtype=np.int64) + level
        if depth.size:
            peak = max(peak, int(depth.max()))
            level = int(depth[-1])
        values += int(np.count_nonzero(chunk == ord(","))) + int(np.count_nonzero(steps > 0))
    if peak > limits.max_depth:
        raise UnsafeArtifact(f"{what} nests {peak} levels deep; at most {limits.max_depth} allowed")
    if values > limits.max_elements:
        raise UnsafeArtifact(
            f"{what} holds about {values} values; at most {limits.max_elements} allowed"
        )


def parse_json(raw: bytes, what: str, limits: Limits) -> Any:
    """Decode one untrusted JSON document within ``limits``.

    Raises:
        UnsafeArtifact: a limit is exceeded (size, depth, values, string, digits).
        PolicyLoadError: not UTF-8 JSON, a duplicate key, a non-finite number.

    Example:
        >>> parse_json(b'{"n": 3, "low": [-1.5, "inf"]}', "spec.json", SPEC_LIMITS)
        {'n': 3, 'low': [-1.5, 'inf']}
        >>> parse_json(b"[" * 100 + b"]" * 100, "spec.json", SPEC_LIMITS)
        Traceback (most recent call last):
        ...
        rlsec.errors.UnsafeArtifact: spec.json nests 100 levels deep; at most 32 allowed
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise PolicyLoadError(f"{what}: expected bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if len(raw) > limits.max_bytes:
        raise UnsafeArtifact(f"{what} is {len(raw)} bytes; at most {limits.max_bytes} allowed")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyLoadError(f"{what} is not valid JSON: not UTF-8 ({exc})") from None
    _scan(raw, what, limits)

    def parse_int(token: str) -> int:
        digits = len(token) - token.startswith("-")
        if digits > limits.max_int_digits:
            raise UnsafeArtifact(
                f"{what} holds an integer of {digits} digits; at most "
                f"{limits.max_int_digits} allowed"
            )
        return int(token)

    def parse_float(token: str) -> float:
        if len(token) > limits.max_float_chars:
            raise UnsafeArtifact(
                f"{what} holds a number written with {len(token)} characters; at most "
                f"{limits.max_float_chars} allowed"
            )
        value = float(token)
        if not math.isfinite(value):
            raise PolicyLoadError(
                f"{what}: expected finite numbers, got {token[:40]!r}, which overflows a float"
            )
        return value

    def parse_constant(token: str) -> float:
        if not limits.allow_constants:
            raise PolicyLoadError(
                f"{what}: expected JSON numbers, got the non-standard literal {token!r}"
            )
        return float(token)

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise PolicyLoadError(f"{what}: key {show(key)} appears twice in one object")
            out[key] = value
        return out

    try:
        return json.loads(
            text,
            parse_int=parse_int,
            parse_float=parse_float,
            parse_constant=parse_constant,
            object_pairs_hook=pairs,
        )
    except json.JSONDecodeError as exc:
        raise PolicyLoadError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:  # cannot happen below max_depth; refused all the same
        raise UnsafeArtifact(f"{what} nests too deeply to decode") from None


# -- field readers ----------------------------------------------------------------------------


def integer(value: Any, where: str, *, lo: int | None = None, hi: int | None = None) -> int:
    """An integer in ``[lo, hi]``; booleans, floats and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyLoadError(f"{where}: expected an integer, got {show(value)}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = (
            f"in [{lo}, {hi}]"
            if lo is not None and hi is not None
            else (f">= {lo}" if lo is not None else f"<= {hi}")
        )
        raise PolicyLoadError(f"{where}: expected an integer {span}, got {show(value)}")
    return value


def number(
    value: Any,
    where: str,
    *,
    finite: bool = True,
    lo: float | None = None,
    hi: float | None = None,
) -> float:
    """A real number (an int or a float, never a boolean), finite unless told otherwise, in
    ``[lo, hi]``. ``"inf"`` and ``"-inf"`` strings are read as infinities when ``finite`` is
    false (how ``spec.json`` writes unbounded Box bounds)."""
    if isinstance(value, str) and not finite and value in ("inf", "-inf"):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PolicyLoadError(f"{where}: expected a number, got {show(value)}")
    x = float(value)
    if math.isnan(x) or (finite and math.isinf(x)):
        raise PolicyLoadError(
            f"{where}: expected a {'finite ' if finite else ''}number, got {show(value)}"
        )
    if (lo is not None and not x >= lo) or (hi is not None and not x <= hi):
        raise PolicyLoadError(
            f"{where}: expected a number in [{lo}, {hi}], got {show(value)}".replace(
                "[None, ", "(-inf, "
            ).replace(", None]", ", inf)")
        )
    return x


def numbers(
    value: Any, where: str, *, size: int | None = None, finite: bool = True, lo: float | None = None
) -> np.ndarray:
    """A list of numbers (see :func:`number`) as a float64 array, of ``size`` entries when
    given."""
    if not isinstance(value, list):
        raise PolicyLoadError(f"{where}: expected a list of numbers, got {show(value)}")
    if size is not None and len(value) != size:
        raise PolicyLoadError(f"{where}: expected {size} numbers, got {len(value)}")
    return np.array(
        [number(v, f"{where}[{i}]", finite=finite, lo=lo) for i, v in enumerate(value)],
        dtype=np.float64,
    )


def boolean(value: Any, where: str) -> bool:
    """``true`` or ``false``; 0, 1 and strings are refused."""
    if not isinstance(value, bool):
        raise PolicyLoadError(f"{where}: expected true or false, got {show(value)}")
    return value


def string(value: Any, where: str, *, max_len: int = 4096) -> str:
    """A string of at most ``max_len`` characters."""
    if not isinstance(value, str):
        raise PolicyLoadError(f"{where}: expected a string, got {show(value)}")
    if len(value) > max_len:
        raise PolicyLoadError(
            f"{where}: expected a string of at most {max_len} characters, got {len(value)}"
        )
    return value


def shape(value: Any, where: str, *, max_elements: int = MAX_FEATURES) -> tuple[int, ...]:
    """A shape: a list of at most 8 integers >= 1 whose product is at most ``max_elements``,
    checked in Python integers before anything of that size exists."""
    if not isinstance(value, list) or len(value) > _MAX_NDIM:
        raise PolicyLoadError(
            f"{where}: expected a list of at most {_MAX_NDIM} integers, got {show(value)}"
        )
    dims = tuple(integer(v, f"{where}[{i}]", lo=1) for i, v in enumerate(value))
    total = math.prod(dims)
    if total > max_elements:
        raise PolicyLoadError(
            f"{where}: shape {list(dims)} declares {total} elements; at most {max_elements} allowed"
        )
    return dims


# -- pickles read as data, never run --------------------------------------------------------


@dataclass(frozen=True)
class Global:
    """A reference to ``module.name`` inside a pickle (a class or function), not resolved."""

    module: str
    name: str

    @property
    def path(self) -> str:
        return f"{self.module}.{self.name}"


class _Opaque:
    def __repr__(self) -> str:
        return "OPAQUE"


#: what :func:`read_plain_pickle` returns when the pickle would run something to build its value
OPAQUE: Final = _Opaque()

_MARK = object()
_MAX_PICKLE_BYTES = 2**20
_STRINGS = {
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
    "UNICODE",
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE8",
    "BINBYTES",
    "SHORT_BINBYTES",
    "BINBYTES8",
}
_NUMBERS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "FLOAT", "BINFLOAT"}


def _pop_mark(stack: list[Any]) -> list[Any]:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1 :]
            del stack[i:]
            return items
    raise ValueError("no mark")


def _run_plain(blob: bytes) -> Any:
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    for op, arg, _pos in pickletools.genops(blob):
        name = op.name
        if name in ("PROTO", "FRAME"):
            continue
        if name == "STOP":
            if len(stack) != 1 or stack[0] is _MARK:
                raise ValueError("unbalanced stack")
            return stack[0]
        if name in _STRINGS:
            stack.append(arg)
        elif name in _NUMBERS:
            if isinstance(arg, int) and abs(arg) >= 2**63:
                raise ValueError("integer too large")
            stack.append(arg)
        elif name == "NONE":
            stack.append(None)
        elif name in ("NEWTRUE", "NEWFALSE"):
            stack.append(name == "NEWTRUE")
        elif name == "MARK":
            stack.append(_MARK)
        elif name == "POP":
            stack.pop()
        elif name == "POP_MARK":
            _pop_mark(stack)
        elif name == "DUP":
            stack.append(stack[-1])
        elif name == "EMPTY_DICT":
            stack.append({})
        elif name == "DICT":
            items = _pop_mark(stack)
            stack.append(dict(zip(items[::2], items[1::2], strict=True)))
        elif name == "SETITEM":
            value, key = stack.pop(), stack.pop()
            if value is _MARK or key is _MARK:
                raise ValueError("mark used as a value")
            stack[-1][key] = value
        elif name == "SETITEMS":
            items = _pop_mark(stack)
            stack[-1].update(zip(items[::2], items[1::2], strict=True))
        elif name == "EMPTY_LIST":
            stack.append([])
        elif name == "LIST":
            stack.append(_pop_mark(stack))
        elif name == "APPEND":
            value = stack.pop()
            if value is _MARK:
                raise ValueError("mark used as a value")
            stack[-1].append(value)
        elif name == "APPENDS":
            items = _pop_mark(stack)
            stack[-1].extend(items)
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name == "TUPLE":
            stack.append(tuple(_pop_mark(stack)))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = stack[-n:]
            del stack[-n:]
            if len(items) != n or any(x is _MARK for x in items):
                raise ValueError("short tuple")
            stack.append(tuple(items))
        elif name == "EMPTY_SET":
            stack.append(set())
        elif name == "ADDITEMS":
            items = _pop_mark(stack)
            stack[-1].update(items)
        elif name == "FROZENSET":
            stack.append(frozenset(_pop_mark(stack)))
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(str(arg))] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[int(str(arg))])
        elif name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            stack.append(Global(module, attr))
        elif name == "STACK_GLOBAL":
            attr, module = stack.pop(), stack.pop()
            if not isinstance(module, str) or not isinstance(attr, str):
                raise ValueError("STACK_GLOBAL needs two strings")
            stack.append(Global(module, attr))
        else:  # REDUCE, BUILD, NEWOBJ, INST, OBJ, EXT*, PERSID, buffers: would run something
            raise LookupError(name)
    raise ValueError("no STOP opcode")


def read_plain_pickle(blob: bytes) -> Any:
    """The value a pickle of plain data would produce, without unpickling it; :data:`OPAQUE`
    when producing it would call, construct or look up anything, or the bytes are not a
    well-formed pickle.

    Example:
        >>> import pickle
        >>> read_plain_pickle(pickle.dumps({"net_arch": [64, 64], "ortho": True}))
        {'net_arch': [64, 64], 'ortho': True}
        >>> read_plain_pickle(pickle.dumps(max))
        Global(module='builtins', name='max')
        >>> read_plain_pickle(pickle.dumps(range(3)))  # REDUCE: would call range(0, 3, 1)
        OPAQUE
    """
    if len(blob) > _MAX_PICKLE_BYTES:
        return OPAQUE
    try:
        return _run_plain(blob)
    except Exception:  # any surprise means "cannot be known without running it": fail closed
        return OPAQUE
