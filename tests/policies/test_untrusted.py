"""``rlsec.policies._untrusted``: the bounded JSON reader and the pickle read as data."""

from __future__ import annotations

import contextlib
import json
import pickle
import sys
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlsec.errors import PolicyLoadError, UnsafeArtifact
from rlsec.policies._untrusted import (
    OPAQUE,
    SB3_DATA_LIMITS,
    SPEC_LIMITS,
    Global,
    Limits,
    parse_json,
    read_plain_pickle,
    shape,
)

# -- parse_json ----------------------------------------------------------------------------------


def test_deeply_nested_json_is_refused_before_decoding_not_a_recursion_error() -> None:
    for raw in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
        with pytest.raises(UnsafeArtifact, match=r"nests \d+ levels deep; at most 32 allowed"):
            parse_json(raw, "spec.json", SPEC_LIMITS)
    # brackets inside strings are text, not nesting
    assert parse_json(b'{"a": "' + b"[" * 1000 + b'"}', "x", SPEC_LIMITS) == {"a": "[" * 1000}


def test_5000_digit_integer_is_refused_not_a_value_error() -> None:
    with pytest.raises(UnsafeArtifact, match="integer of 5000 digits; at most 40 allowed"):
        parse_json(b'{"n": ' + b"9" * 5000 + b"}", "spec.json", SPEC_LIMITS)
    assert parse_json(b"[-" + b"9" * 40 + b"]", "x", SPEC_LIMITS) == [-int("9" * 40)]


def test_long_float_literal_and_overflowing_float_are_refused() -> None:
    with pytest.raises(UnsafeArtifact, match="written with 5002 characters"):
        parse_json(b"[1." + b"0" * 5000 + b"]", "x", SPEC_LIMITS)
    with pytest.raises(PolicyLoadError, match="expected finite numbers, got '1e999'"):
        parse_json(b"[1e999]", "x", SPEC_LIMITS)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_literals_are_refused_in_spec_json_and_read_in_sb3_data(literal: bytes) -> None:
    with pytest.raises(PolicyLoadError, match="non-standard literal"):
        parse_json(b'{"mean": ' + literal + b"}", "spec.json", SPEC_LIMITS)
    got = parse_json(b'{"x": ' + literal + b"}", "data", SB3_DATA_LIMITS)
    assert str(got["x"]) in ("nan", "inf", "-inf")


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(PolicyLoadError, match="key 'std' appears twice"):
        parse_json(b'{"std": [1.0], "std": [1e-30]}', "spec.json", SPEC_LIMITS)


def test_size_strings_and_value_counts_are_bounded() -> None:
    small = Limits(max_bytes=1000, max_string=10, max_elements=50)
    with pytest.raises(UnsafeArtifact, match="is 1001 bytes; at most 1000"):
        parse_json(b" " * 1001, "x", small)
    with pytest.raises(UnsafeArtifact, match="string of 11 bytes; at most 10"):
        parse_json(b'["' + b"a" * 11 + b'"]', "x", small)
    assert parse_json(b'["' + b"a" * 10 + b'"]', "x", small) == ["a" * 10]
    with pytest.raises(UnsafeArtifact, match="about 61 values; at most 50"):
        parse_json(b"[" + b",".join([b"0"] * 60) + b"]", "x", small)
    # escaped quotes do not end a string early
    assert parse_json(rb'["a\"b"]', "x", small) == ['a"b']
    with pytest.raises(UnsafeArtifact, match="about 51 strings; at most 50"):
        parse_json(b"[" + b",".join([b'""'] * 51) + b"]", "x", small)
    # strings full of escapes are matched without backtracking state (possessive pattern)
    big = Limits(max_bytes=2**23, max_string=2**23, max_elements=2**22)
    assert parse_json(b'["' + b'\\"' * 2**20 + b'"]', "x", big) == ['"' * 2**20]


@pytest.mark.parametrize(
    "raw", [b"\xff\xfe{}", b"{not json", b'{"a": 1', b"", b'"\x01"', b"\xef\xbb\xbf{}"]
)
def test_malformed_json_is_a_policy_load_error(raw: bytes) -> None:
    with pytest.raises(PolicyLoadError, match="is not valid JSON"):
        parse_json(raw, "spec.json", SPEC_LIMITS)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=5), kids, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=_JSON, noise=st.binary(max_size=40), cut=st.integers(0, 400))
def test_any_bytes_either_decode_or_raise_a_policy_load_error(
    value: Any, noise: bytes, cut: int
) -> None:
    text = json.dumps(value).encode()
    for raw in (text, text[:cut], text[:cut] + noise, noise):
        with contextlib.suppress(PolicyLoadError):  # anything else fails the test
            parse_json(raw, "x", Limits(max_bytes=4096, max_depth=8, max_elements=200))


def test_shape_is_checked_in_python_integers_before_anything_is_allocated() -> None:
    with pytest.raises(PolicyLoadError, match="declares 1000000000000 elements"):
        shape([1_000_000, 1_000_000], "s")
    with pytest.raises(PolicyLoadError, match=r"s\[0\]: expected an integer, got True"):
        shape([True, 4], "s")
    with pytest.raises(PolicyLoadError, match=r"s\[1\]: expected an integer >= 1, got -3"):
        shape([4, -3], "s")
    assert shape([4, 3], "s") == (4, 3)


# -- read_plain_pickle ---------------------------------------------------------------------------

_PLAIN = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**62), 2**62)
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.tuples(kids)
        | st.tuples(kids, kids, kids, kids)
        | st.dictionaries(st.text(max_size=5), kids, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(value=_PLAIN, protocol=st.integers(3, pickle.HIGHEST_PROTOCOL))
def test_plain_pickles_are_read_exactly_without_unpickling(value: Any, protocol: int) -> None:
    assert read_plain_pickle(pickle.dumps(value, protocol=protocol)) == value


def test_class_references_are_read_as_globals_never_imported() -> None:
    blob = pickle.dumps({"activation_fn": torch.nn.ReLU, "net_arch": [64, 64]})
    assert read_plain_pickle(blob) == {
        "activation_fn": Global("torch.nn.modules.activation", "ReLU"),
        "net_arch": [64, 64],
    }
    # protocol 0 spells globals with GLOBAL, not STACK_GLOBAL
    assert read_plain_pickle(pickle.dumps(torch.nn.Tanh, protocol=0)) == Global(
        "torch.nn.modules.activation", "Tanh"
    )
    # the module is named, never imported
    assert read_plain_pickle(b"cos\nsystem\n.") == Global("os", "system")
    assert read_plain_pickle(b"crlsec_never_imported\nx\n.") == Global("rlsec_never_imported", "x")
    assert "rlsec_never_imported" not in sys.modules


class _Touch:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("ran",))


@pytest.mark.parametrize(
    "blob",
    [
        pickle.dumps(_Touch()),
        pickle.dumps(range(3)),
        pickle.dumps({"a": {1, 2}}, protocol=2),  # sets before protocol 4 are REDUCE calls
        b"",
        b"\x80\x05",
        b"garbage",
        pickle.dumps([1, 2])[:-1],  # no STOP
        b"\x80\x05\x94.",  # MEMOIZE with an empty stack
        b"(.",  # a mark as the value
        b"\x80\x05\x8a\x09" + b"\x00" * 8 + b"\x01.",  # LONG1 of 2**64: too large
    ],
)
def test_pickles_that_would_run_something_or_are_malformed_are_opaque(
    blob: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    assert read_plain_pickle(blob) is OPAQUE
    assert capsys.readouterr().out == ""
