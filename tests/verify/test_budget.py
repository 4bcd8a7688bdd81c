"""Storm's inputs and queries are bounded: nesting, length, step bounds, model size, time,
memory and distributions, each refused with a documented error before Storm can crash or
run away. The inputs that used to kill the process (rc 139) are probed in a subprocess, so a
regression fails the test instead of killing the test runner."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from rlsec.envs.finite import FiniteMDP
from rlsec.errors import CheckAborted, ConfigError, ModelError, ModelTooLarge
from rlsec.verify import Budget, GroupedModel, Model, check, parse_property
from rlsec.verify._storm_worker import read_frame, step_bounds, write_frame
from rlsec.verify.budget import check_text
from rlsec.verify.model import Chain
from rlsec.verify.run import verify

PRISM = """dtmc
module m
  x : [0..1] init 0;
  [] x=0 -> 0.5:(x'=1) + 0.5:(x'=0);
  [] x=1 -> true;
endmodule
label "goal" = x=1;
"""
UPDATE = "0.5:(x'=1) + 0.5:(x'=0)"


def _chain() -> Chain:
    return Model.from_env("FrozenLake-v1", is_slippery=False).chain(np.full((16, 4), 0.25))


def _run(code: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter (a native crash there cannot take pytest down)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _prism(tmp_path: Path, text: str, name: str = "m.pm") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- the inputs that crashed the process ----------------------------------------------------


def test_a_property_nested_3000_deep_is_refused_without_crashing_the_process() -> None:
    proc = _run(
        """
        import numpy as np
        from rlsec.errors import ModelTooLarge
        from rlsec.verify import Model, check
        chain = Model.from_env("FrozenLake-v1").chain(np.full((16, 4), 0.25))
        for prop in ['P=? [F ' + '(' * 3000 + '"goal"' + ')' * 3000 + ']',
                     'P=? [F ' + '!' * 10000 + '"goal"]',
                     'P=? [F ' + 'P>0.5 [X ' * 3000 + '"goal"' + ']' * 3000 + ']']:
            try:
                check(chain, prop)
            except ModelTooLarge as exc:
                print("refused:", exc)
        """
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.count("refused:") == 3, proc.stdout
    assert "the limit is 12 (Budget.max_property_nesting" in proc.stdout


def test_a_nested_property_with_an_error_is_refused_before_the_parser_backtracks() -> None:
    # Storm's property parser doubles its time per level on such input: 20 deep took 4 s
    t0 = time.perf_counter()
    with pytest.raises(ModelTooLarge, match="nests 21 deep"):
        check(_chain(), "P=? [F " + "(" * 20 + "<=" + ")" * 20 + "]")
    assert time.perf_counter() - t0 < 2
    with pytest.raises(ModelError, match="cannot parse"):  # at the limit: parsed, refused
        check(_chain(), "P=? [F " + "(" * 11 + "<=" + ")" * 11 + "]")
    assert check(_chain(), "P=? [F " + "(" * 11 + '"goal"' + ")" * 11 + "]").states == 16


def test_a_prism_expression_nested_3000_deep_is_refused_without_crashing(tmp_path: Path) -> None:
    deep = _prism(tmp_path, PRISM.replace("x=0 ->", "(" * 3000 + "x=0" + ")" * 3000 + " ->"))
    prefix = _prism(tmp_path, PRISM.replace("x=0 ->", "!" * 3000 + "(x=1) ->"), "not.pm")
    chain = _prism(tmp_path, PRISM.replace("x=0 ->", "+".join(["x"] * 100_000) + ">=0 ->"), "c.pm")
    proc = _run(
        f"""
        from rlsec.errors import ModelTooLarge
        from rlsec.verify.run import verify
        for path in [{str(deep)!r}, {str(prefix)!r}, {str(chain)!r}]:
            try:
                verify(prop='P=? [F "goal"]', prism=path)
            except ModelTooLarge as exc:
                print("refused:", exc)
        """
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.count("refused:") == 3, proc.stdout
    assert "nests 3000 deep (brackets or prefix operators) at line 4" in proc.stdout
    assert "Budget.max_statement_chars" in proc.stdout


def test_a_crash_inside_storm_ends_the_worker_not_the_process(tmp_path: Path) -> None:
    # 0/0 in a PRISM file kills Storm with SIGFPE while it parses
    fpe = _prism(tmp_path, PRISM.replace(UPDATE, "0/0:(x'=1) + 1:(x'=0)"))
    proc = _run(
        f"""
        import numpy as np
        from rlsec.errors import CheckAborted
        from rlsec.verify import Model, check
        from rlsec.verify.run import verify
        try:
            verify(prop='P=? [F "goal"]', prism={str(fpe)!r})
        except CheckAborted as exc:
            print("aborted:", exc.reason, exc)
        chain = Model.from_env("FrozenLake-v1", is_slippery=False).chain(np.full((16, 4), 0.25))
        print("next:", round(check(chain, 'P=? [F "goal"]').result, 6))
        """
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "aborted: crash Storm crashed while checking" in proc.stdout
    assert "SIGFPE" in proc.stdout and "no result was produced" in proc.stdout
    assert "next: 0.01394" in proc.stdout  # a fresh worker answers the next query


# -- unbounded work -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prop",
    [
        'P=? [F<=1000000000000 "goal"]',
        'P=? [F<=2*500000000000 "goal"]',
        'P=? [F<=1e12 "goal"]',
        'P=? [F[5,1000000000000] "goal"]',
        'P=? [F>=1000000000000 "goal"]',
        'P=? ["init" U<=1000000000000 "goal"]',
        'R{"steps"}=? [C<=1000000000000]',
        'R{"steps"}=? [I=1000000000000]',
        'P=? [F{"steps"}<=1000000000000 "goal"]',
        'P=? [F<=1000001 "goal"]',
    ],
)
def test_a_step_bound_above_the_limit_is_refused_before_checking(prop: str) -> None:
    t0 = time.perf_counter()
    with pytest.raises(ModelTooLarge, match=r"a step bound .* the limit is 1000000 \(Budget"):
        check(_chain(), prop)
    assert time.perf_counter() - t0 < 30  # refused, not run for days


def test_step_bounds_at_the_limit_and_named_constants() -> None:
    assert check(_chain(), 'P=? [F<=1000 "goal"]', budget=Budget(max_steps=1000)).states == 16
    with pytest.raises(ModelTooLarge, match="1001; the limit is 1000"):
        check(_chain(), 'P=? [F<=1001 "goal"]', budget=Budget(max_steps=1000))
    assert step_bounds('P=? [true U<=(2 * 1000) "a"]') == [("(2 * 1000)", 2000.0)]
    assert step_bounds('P=? [true U[3, 100] "U<=9"]') == [("3", 3.0), ("100", 100.0)]
    assert step_bounds('P=? [true U^{rew{"r"}<=5 , rew{"s"}<=3 }"a"]') == [
        ("5", 5.0),
        ("3", 3.0),
    ]
    assert step_bounds("P=? [F (x <= 99999999)]") == []  # a comparison, not a bound
    with pytest.raises(ValueError, match="not a constant number"):
        step_bounds('P=? [true U<=K "a"]')


def test_a_prism_model_of_1e10_states_is_refused_before_it_is_built(tmp_path: Path) -> None:
    big = _prism(
        tmp_path,
        PRISM.replace("x : [0..1] init 0;", "x : [0..N] init 0;")
        .replace("dtmc", "dtmc\nconst int N = 9999999999;")
        .replace("[] x=1 -> true;", "[] x>=1 -> true;"),
    )
    t0 = time.perf_counter()
    with pytest.raises(ModelTooLarge, match=r"upper bound on its states\) is 10000000000; the"):
        verify(prop='P=? [F "goal"]', prism=big)
    assert time.perf_counter() - t0 < 30


def test_sparse_models_above_the_size_limits_are_refused_before_the_hand_off() -> None:
    chain = _chain()
    with pytest.raises(ModelTooLarge, match=r"number of states is 16; the limit is 15"):
        check(chain, 'P=? [F "goal"]', budget=Budget(max_states=15))
    with pytest.raises(ModelTooLarge, match=r"transitions is \d+; the limit is 20 \(Budget"):
        check(chain, 'P=? [F "goal"]', budget=Budget(max_transitions=20))
    model = Model.from_env("FrozenLake-v1")  # 64 choices: an MDP's rows count as well
    with pytest.raises(ModelTooLarge, match="transitions"):
        check(model, 'Pmax=? [F "goal"]', budget=Budget(max_transitions=60))


def test_a_query_past_its_time_budget_is_stopped_and_the_next_one_runs(tmp_path: Path) -> None:
    slow = _prism(
        tmp_path,
        PRISM.replace("x : [0..1]", "x : [0..3000000]")
        .replace(UPDATE, "0.5:(x'=x+1) + 0.5:(x'=x)")
        .replace("x=0 ->", "x<3000000 ->")
        .replace("[] x=1 -> true;", "[] x=3000000 -> true;")
        .replace('"goal" = x=1', '"goal" = x=3000000'),
    )
    t0 = time.perf_counter()
    with pytest.raises(CheckAborted, match=r"ran past its time budget of 1 s") as info:
        verify(prop='P=? [F "goal"]', prism=slow, budget=Budget(seconds=1))
    assert info.value.reason == "time" and time.perf_counter() - t0 < 20
    assert check(_chain(), 'P=? [F "goal"]').states == 16


def test_a_query_past_its_memory_budget_is_stopped(tmp_path: Path) -> None:
    big = _prism(
        tmp_path,
        PRISM.replace("x : [0..1]", "x : [0..5000000]")
        .replace(UPDATE, "0.5:(x'=x+1) + 0.5:(x'=x)")
        .replace("x=0 ->", "x<5000000 ->")
        .replace("[] x=1 -> true;", "[] x=5000000 -> true;")
        .replace('"goal" = x=1', '"goal" = x=5000000'),  # Storm stops exploring at the goal
    )
    with pytest.raises(CheckAborted, match=r"ran out of its memory budget of 64 MiB") as info:
        verify(prop='P=? [F "goal"]', prism=big, budget=Budget(memory_mb=64))
    assert info.value.reason == "memory"
    assert check(_chain(), 'P=? [F "goal"]').states == 16


# -- distributions --------------------------------------------------------------------------


def test_prism_probabilities_summing_to_1_8_are_refused(tmp_path: Path) -> None:
    bad = _prism(tmp_path, PRISM.replace(UPDATE, "0.9:(x'=1) + 0.9:(x'=0)"))
    with pytest.raises(ModelError, match=r"do not sum to one .*actually sum to 1\.8"):
        verify(prop='P=? [F "goal"]', prism=bad)
    negative = _prism(tmp_path, PRISM.replace(UPDATE, "-0.5:(x'=1) + 1.5:(x'=0)"), "n.pm")
    with pytest.raises(ModelError, match="negative probabilities"):
        verify(prop='P=? [F "goal"]', prism=negative)


def test_sparse_probabilities_summing_to_1_8_are_refused() -> None:
    two = sp.csr_array(np.array([[0.9, 0.9], [0.0, 1.0]]))
    labels = {"goal": np.array([False, True])}
    with pytest.raises(ModelError, match=r"row 0 sums to 1\.8, expected 1 within 1e-06"):
        Model(two, 1, np.array([1.0, 0.0]), labels)
    with pytest.raises(ModelError, match=r"row 0 sums to 1\.8"):
        Chain(two, np.array([1.0, 0.0]), labels, None)
    with pytest.raises(ModelError, match=r"row 0 sums to 1\.8"):
        GroupedModel(two, np.array([0, 1, 2]), np.array([1.0, 0.0]), labels)
    with pytest.raises(ConfigError, match=r"sums to 1\.8"):
        FiniteMDP([[[0.9, 0.9]], [[0.0, 1.0]]], [[0.0], [0.0]], [1.0, 0.0], 0.9)


@pytest.mark.parametrize(
    ("row", "initial", "match"),
    [
        ([np.nan, 1.0], [1.0, 0.0], "probability nan"),
        ([1.5, -0.5], [1.0, 0.0], "probability 1.5"),
        ([-0.5, 1.5], [1.0, 0.0], "probability -0.5"),
        ([np.inf, 0.0], [1.0, 0.0], "probability inf"),
        ([0.5, 0.5], [np.nan, 1.0], "initial must be a distribution"),
        ([0.5, 0.5], [1.8, -0.8], "initial must be a distribution"),
        ([0.5, 0.5], [0.9, 0.9], "initial must be a distribution"),
    ],
)
def test_nan_negative_and_out_of_range_probabilities_are_refused(
    row: list[float], initial: list[float], match: str
) -> None:
    m = sp.csr_array(np.array([row, [0.0, 1.0]]))
    with pytest.raises(ModelError, match=match):
        Model(m, 1, np.array(initial))
    with pytest.raises(ModelError, match=match):
        Chain(m, np.array(initial), {}, None)
    with pytest.raises(ModelError, match=match):
        GroupedModel(m, np.array([0, 1, 2]), np.array(initial), {})


def test_nan_action_probabilities_are_refused_not_passed_to_storm() -> None:
    m = Model.from_env("FrozenLake-v1")
    pi = np.full((16, 4), 0.25)
    pi[3] = [np.nan, 0.5, 0.25, 0.25]
    with pytest.raises(ModelError, match="finite, >= 0 and sum to 1"):
        m.chain(pi)


def test_grouped_models_need_one_choice_per_state_and_finite_rewards() -> None:
    m = sp.csr_array(np.eye(2))
    with pytest.raises(ModelError, match="groups must be 3 increasing row offsets"):
        GroupedModel(m, np.array([0, 2, 2]), np.array([1.0, 0.0]), {})
    with pytest.raises(ModelError, match="rewards must be 2 finite numbers"):
        GroupedModel(m, np.array([0, 1, 2]), np.array([1.0, 0.0]), {}, np.array([0.0, np.nan]))


# -- text and files -------------------------------------------------------------------------


def test_long_properties_and_prism_files_are_refused(tmp_path: Path) -> None:
    long = 'P=? [F "goal"' + " " * 10_000 + "]"
    with pytest.raises(ModelTooLarge, match=r"length of the property is 10014; the limit"):
        check(_chain(), long)
    with pytest.raises(ModelTooLarge, match="length of the property"):
        parse_property(long)
    huge = _prism(tmp_path, PRISM + "// " + "x" * 2000 + "\n")
    with pytest.raises(ModelTooLarge, match=r"more than 1024; the limit is 1024"):
        verify(prop='P=? [F "goal"]', prism=huge, budget=Budget(max_prism_bytes=1024))
    # comments do not count towards nesting
    commented = _prism(tmp_path, PRISM + "// " + "(" * 500 + "\n", "c.pm")
    assert verify(prop='P=? [F "goal"]', prism=commented)["states"] == 2


def test_a_prism_path_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "model.pm"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        verify(prop='P=? [F "goal"]', prism=fifo)
    with pytest.raises(ConfigError, match="cannot be read"):
        verify(prop='P=? [F "goal"]', prism=tmp_path / "missing.pm")


def test_check_text_counts_brackets_and_prefix_runs_but_not_arrows() -> None:
    b = Budget(max_nesting=5, max_property_nesting=5)
    check_text("[] x=0 -> (x'=x-1) & (y'=-1);", "PRISM", b, prism=True)
    check_text("!!!!!x", "the property", b)
    with pytest.raises(ModelTooLarge, match="nests 6 deep"):
        check_text("! ! ! - - (x)", "the property", b)
    with pytest.raises(ModelTooLarge, match="nests 6 deep"):
        check_text("((((((x))))))", "the property", b)


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("RLSEC_VERIFY_SECONDS", "nan"),
        ("RLSEC_VERIFY_SECONDS", "inf"),
        ("RLSEC_VERIFY_SECONDS", "-1"),
        ("RLSEC_VERIFY_SECONDS", "ten"),
        ("RLSEC_VERIFY_MAX_STATES", "1e3"),
        ("RLSEC_VERIFY_MAX_STATES", "0"),
        ("RLSEC_VERIFY_MEMORY_MB", ""),
    ],
)
def test_budget_from_the_environment_refuses_nan_and_non_numbers(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{var} must be"):
        Budget.from_env({var: value})


def test_budget_from_the_environment_overrides_the_defaults() -> None:
    b = Budget.from_env({"RLSEC_VERIFY_SECONDS": "3600", "RLSEC_VERIFY_MAX_STEPS": "50"})
    assert (b.seconds, b.max_steps, b.max_states) == (3600.0, 50, Budget().max_states)
    with pytest.raises(ConfigError, match="integer >= 1"):
        Budget(max_steps=True)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="finite number > 0"):
        Budget(seconds=float("nan"))


# -- the worker's frames --------------------------------------------------------------------


def test_worker_frames_carry_only_whitelisted_arrays_and_refuse_oversize() -> None:
    buf = bytearray()
    a = np.arange(5, dtype=np.int64)
    write_frame(buf.extend, {"op": "x"}, {"a": a, "b": np.array([True, False])})
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        out = bytes(buf[pos : pos + n])
        pos += n
        return out

    header, arrays = read_frame(read, 1 << 20)
    assert header == {"op": "x"} and np.array_equal(arrays["a"], a)
    with pytest.raises(TypeError, match="dtype"):
        write_frame(buf.extend, {}, {"o": np.array([object()])})
    pos = 0
    with pytest.raises(ValueError, match="exceeds the frame's limit"):
        read_frame(read, 100)  # a 61-byte header, then 40 bytes of array "a"
    pos = 0
    with pytest.raises(ValueError, match="frame header of 61 bytes"):
        read_frame(read, 60)


# -- fuzz -----------------------------------------------------------------------------------

_PIECES = ["P=?", "Pmax=?", "R{\"steps\"}=?", "[", "]", "(", ")", "F", "G", "X", "U", "<=",
           ">=", "!", "&", "|", "\"goal\"", "\"hole\"", "true", "5", "1000000000000", "C", "I=",
           "0.5", " ", "-", "*", "/", "0"]  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=40), st.integers(0, 14))
def test_fuzzed_properties_give_a_result_or_a_documented_error(
    pieces: list[str], depth: int
) -> None:
    prop = "P=? [F " + "(" * depth + "".join(pieces) + ")" * depth + "]"
    try:
        res = check(_chain(), prop, budget=Budget(seconds=20))
    except (ModelError, ModelTooLarge):
        return
    except CheckAborted as exc:  # a crash or a hang inside the limits is a hole in them
        raise AssertionError(f"Storm did not finish on {prop!r}: {exc}") from None
    assert res.states == 16
