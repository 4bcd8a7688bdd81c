"""The process that runs Storm: started by :mod:`rlsec.verify._worker`, never imported for
its side effects (everything runs under ``if __name__ == "__main__"``).

It reads requests on stdin and answers on stdout, one frame each (:func:`write_frame`): an
8-byte length, a JSON header, then the raw bytes of the arrays the header lists (dtype and
shape from a short whitelist; no pickle anywhere). Storm's own output to stdout is sent to
stderr so it cannot corrupt the answers. Each request runs in a thread with a 256 MiB stack
(a deep-but-allowed expression must not overflow it), under an address-space limit of the
worker's size plus the request's memory budget and a CPU-time limit of its time budget (a
backstop in case the parent is gone: the parent enforces the wall-clock budget by killing
this process).

Operations: ``parse`` (a property), ``check`` (a sparse chain or MDP from CSR arrays) and
``prism`` (a PRISM program's text). Errors come back as ``{"ok": false, "error": kind,
"message": ...}`` with kind ``model`` (Storm refused the input), ``limit`` (a bound of the
budget, e.g. a step bound, is exceeded) or ``memory`` (after which the worker exits).

This module imports only the standard library and numpy at the top (the parent imports its
framing functions); stormpy is imported in :func:`main`.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import os
import re
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__: list[str] = []

MAX_HEADER = 1 << 26
DTYPES = ("<f8", "<i8", "<i4", "|b1")
STACK = 256 * 2**20
_PRECISION = "1/1000000000000"

Reader = Callable[[int], bytes]
Writer = Callable[[bytes], None]


# -- frames ---------------------------------------------------------------------------------


def write_frame(write: Writer, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """One frame: the header (with the arrays' names, dtypes and shapes) and the arrays."""
    parts = []
    listed = []
    for name, a in arrays.items():
        arr = np.ascontiguousarray(a)
        if arr.dtype.str not in DTYPES:
            raise TypeError(f"array {name!r} has dtype {arr.dtype.str}, not one of {DTYPES}")
        listed.append([name, arr.dtype.str, list(arr.shape)])
        parts.append(arr)
    body = json.dumps({**header, "arrays": listed}, allow_nan=False).encode()
    write(struct.pack("<Q", len(body)) + body)
    for arr in parts:
        view = memoryview(arr.reshape(-1).view(np.uint8).data)
        for i in range(0, len(view), 1 << 24):
            write(view[i : i + (1 << 24)].tobytes())


def read_frame(read: Reader, max_bytes: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The header and arrays of one frame; refuses a header or arrays above ``max_bytes``,
    a dtype outside the whitelist or a malformed header (``ValueError``)."""
    (size,) = struct.unpack("<Q", read(8))
    if size > min(MAX_HEADER, max_bytes):
        raise ValueError(f"frame header of {size} bytes")
    header = json.loads(read(size).decode())
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list):
        raise ValueError("frame header is not an object with a list of arrays")
    arrays: dict[str, np.ndarray] = {}
    budget = max_bytes - size
    for item in header.pop("arrays"):
        if not (isinstance(item, list) and len(item) == 3 and item[1] in DTYPES):
            raise ValueError(f"bad array entry {item!r:.200}")
        name, dtype, shape = item
        if not (
            isinstance(name, str)
            and isinstance(shape, list)
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise ValueError(f"bad array entry {item!r:.200}")
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        if nbytes > budget:
            raise ValueError(f"array {name!r} of {nbytes} bytes exceeds the frame's limit")
        budget -= nbytes
        arrays[name] = np.frombuffer(read(nbytes), dtype=dtype).reshape(shape)
    return header, arrays


# -- step bounds, read from Storm's printing of a parsed property ----------------------------

_QUOTED = re.compile(r'"[^"]*"')
# Storm prints F<=k as "U<=k", F[a,b] as "U[a, b]", C<=k, I=k, reward bounds as
# 'Urew{"r"}<=k' or 'U^{rew{"r"}<=k , ...}'; expression comparisons get spaces ("x <= 5").
_BOUND = re.compile(
    r"(?<![\w.])(?:U|C|I|Urew\{\"\"\}|Crew\{\"\"\}|Usteps|Utime|rew\{\"\"\})(?=[<>=\[])"
)
_OPS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _number(node: ast.AST) -> float:
    """A constant arithmetic expression (as Storm prints bounds: ``(2 * 1000)``, ``5/2``,
    ``-(5)``); anything else (a name, a call) is refused."""
    if isinstance(node, ast.Expression):
        return _number(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)  # bool is refused by Storm's printing, never reaches here
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        try:
            return float(_OPS[type(node.op)](_number(node.left), _number(node.right)))
        except (ZeroDivisionError, OverflowError):
            return math.inf
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return float(_OPS[type(node.op)](_number(node.operand)))
    raise ValueError("not a constant number")


def _read_bound(text: str, i: int) -> tuple[list[str], int]:
    """The bound expressions that start at ``text[i]`` (after the operator's name)."""
    if text[i] == "[":
        end = text.index("]", i)
        return [part.strip() for part in text[i + 1 : end].split(",")], end + 1
    j = i
    while j < len(text) and text[j] in "<>=":
        j += 1
    k = j
    while k < len(text) and text[k] in "-+":
        k += 1
    if k < len(text) and text[k] == "(":
        depth = 0
        while k < len(text):
            depth += {"(": 1, ")": -1}.get(text[k], 0)
            k += 1
            if depth == 0:
                break
    else:
        while k < len(text) and not (text[k].isspace() or text[k] in "],}"):
            k += 1
    return [text[j:k]], k


def step_bounds(canonical: str) -> list[tuple[str, float]]:
    """Every step or reward bound of a property as Storm prints it, with its value
    (``ValueError`` for a bound that is not a constant number)."""
    text = _QUOTED.sub('""', canonical)
    out = []
    for m in _BOUND.finditer(text):
        exprs, _ = _read_bound(text, m.end())
        for expr in exprs:
            try:
                value = _number(ast.parse(expr, mode="eval"))
            except (SyntaxError, ValueError, RecursionError):
                raise ValueError(f"the bound {expr!r} is not a constant number") from None
            out.append((expr, value))
    return out


# -- the Storm side -------------------------------------------------------------------------


class Refused(Exception):
    """An input Storm or a limit refuses: ``kind`` is ``model`` or ``limit``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _clean(exc: BaseException) -> str:
    msg = str(exc).split("Note that the used API")[0]
    return msg.replace("WrongFormatException: ", "").strip()


def _limit(what: str, value: object, limits: dict[str, int], field: str) -> Refused:
    return Refused(
        "limit",
        f"{what} is {value}; the limit is {limits[field]} (Budget.{field}, "
        f"RLSEC_VERIFY_{field.upper()})",
    )


def _parse(stormpy: Any, prop: str, limits: dict[str, int], program: Any = None) -> Any:
    try:
        if program is None:
            props = stormpy.parse_properties(prop)
        else:
            props = stormpy.parse_properties(prop, program)
    except RuntimeError as exc:
        raise Refused("model", f"cannot parse property {prop!r}: {_clean(exc)}") from None
    if len(props) != 1:
        raise Refused("model", f"expected exactly one property, got {len(props)} in {prop!r}")
    canonical = str(props[0].get_raw_formula())
    try:
        bounds = step_bounds(canonical)
    except ValueError as exc:
        raise Refused("model", f"property {prop!r}: {exc}") from None
    for expr, value in bounds:
        if not abs(value) <= limits["max_steps"]:  # NaN is refused too
            shown = expr if expr.lstrip("-").isdigit() else f"{expr} = {value:g}"
            raise _limit(f"a step bound of {prop!r}", shown, limits, "max_steps")
    return props[0]


def _values(res: Any, n: int) -> np.ndarray:
    if res.is_quantitative():
        return np.asarray(res.get_value_vector(), dtype=np.float64)
    values = np.zeros(n, dtype=bool)
    values[[int(i) for i in res.get_truth_values_vector()]] = True
    return values


def _environment(stormpy: Any, *, chain: bool, relative: bool, precise: bool) -> Any:
    import stormpy.environments as envs

    if not precise or chain:
        env = envs.Environment()
        kind = envs.EquationSolverType.EIGEN if precise else envs.EquationSolverType.TOPOLOGICAL
        env.solver().set_linear_equation_solver_type(kind)
        return env
    env = envs.sound()
    for part in (env.solver().native(), env.solver().min_max()):
        part.precision = stormpy.Rational(_PRECISION)
        part.relative_termination_criterion = relative
    return env


def _sparse_model(stormpy: Any, req: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    from stormpy import datastructures as ds
    from stormpy import models as md

    indptr, indices, data = arrays["indptr"], arrays["indices"], arrays["data"]
    n = int(req["states"])
    n_rows = len(indptr) - 1
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(indptr))
    chain = req["kind"] == "dtmc"
    if chain:
        b = ds.SparseMatrixBuilder[float](rows=n_rows, columns=n, entries=len(data))
        b.add_next_values(rows.tolist(), indices.tolist(), data.tolist(), [])
    else:
        groups = arrays["groups"]
        b = ds.SparseMatrixBuilder[float](
            rows=n_rows,
            columns=n,
            entries=len(data),
            has_custom_row_grouping=True,
            row_groups=len(groups) - 1,
        )
        b.add_next_values(rows.tolist(), indices.tolist(), data.tolist(), groups[:-1].tolist())
    lab = md.StateLabeling(n)
    for name in req["labels"]:
        lab.add_label(name)
        lab.set_states(name, ds.BitVector(n, np.flatnonzero(arrays["label:" + name]).tolist()))
    comps = md.SparseModelComponents(transition_matrix=b.build(), state_labeling=lab)
    key = "optional_state_reward_vector" if chain else "optional_state_action_reward_vector"
    models = {"steps": md.SparseRewardModel(**{key: [1.0] * (n if chain else n_rows)})}
    if "rewards" in arrays:
        models["reward"] = md.SparseRewardModel(**{key: arrays["rewards"].tolist()})
    comps.reward_models = models
    return md.SparseDtmc(comps) if chain else md.SparseMdp(comps)


def _check(
    stormpy: Any, req: dict[str, Any], arrays: dict[str, np.ndarray]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    prop = _parse(stormpy, req["prop"], req["limits"])
    t0 = time.perf_counter()
    model = _sparse_model(stormpy, req, arrays)
    t1 = time.perf_counter()
    chain = req["kind"] == "dtmc"
    try:
        res = stormpy.model_checking(
            model,
            prop,
            only_initial_states=False,
            extract_scheduler=bool(req["scheduler"]) and not chain,
            environment=_environment(
                stormpy, chain=chain, relative=bool(req["relative"]), precise=bool(req["precise"])
            ),
        )
    except RuntimeError as exc:
        raise Refused("model", f"Storm cannot check {req['prop']!r} on this model: {exc}") from None
    t2 = time.perf_counter()
    n = int(req["states"])
    out = {"values": _values(res, n)}
    if req["scheduler"] and not chain and res.has_scheduler():
        sched = res.get_scheduler()
        out["scheduler"] = np.array(
            [sched.get_choice(s).get_deterministic_choice() for s in range(n)], dtype=np.int64
        )
    header = {
        "quantitative": bool(res.is_quantitative()),
        "transitions": int(model.nr_transitions),
        "seconds": {"build": t1 - t0, "check": t2 - t1},
    }
    return header, out


def _state_bound(program: Any) -> int:
    """The product of the ranges of every variable: an upper bound on reachable states."""
    total = 1
    variables = [(v, True) for v in program.global_boolean_variables]
    variables += [(v, False) for v in program.global_integer_variables]
    for module in program.modules:
        variables += [(v, True) for v in module.boolean_variables]
        variables += [(v, False) for v in module.integer_variables]
    for v, boolean in variables:
        if boolean:
            total *= 2
            continue
        try:
            lo = v.lower_bound_expression.evaluate_as_int()
            hi = v.upper_bound_expression.evaluate_as_int()
        except RuntimeError as exc:
            raise Refused(
                "model", f"the range of variable {v.name} is not constant: {exc}"
            ) from None
        total *= max(0, hi - lo + 1)
    return total


def _prism(
    stormpy: Any, req: dict[str, Any], arrays: dict[str, np.ndarray]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    name, limits, prop = req["name"], req["limits"], req["prop"]
    fd, path = tempfile.mkstemp(suffix=".pm")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(req["text"])
        try:
            program = stormpy.parse_prism_program(path)
        except RuntimeError as exc:
            msg = _clean(exc).replace(path, name)
            raise Refused("model", f"cannot parse PRISM file {name}: {msg}") from None
    finally:
        os.unlink(path)
    parsed = _parse(stormpy, prop, limits, program)
    labels = {"init", "deadlock", *(label.name for label in program.labels)}
    for m in re.finditer(r'(?<![{\w])"([^"]*)"', prop):
        if m.group(1) not in labels:
            raise Refused(
                "model",
                f"unknown label {m.group(1)!r} at column {m.start() + 1} of {prop!r}; "
                f"{name} defines {sorted(labels)}",
            )
    bound = _state_bound(program)
    if bound > limits["max_states"]:
        raise _limit(
            f"the product of the ranges of the variables of {name} (an upper bound on its states)",
            bound,
            limits,
            "max_states",
        )
    t0 = time.perf_counter()
    opts = stormpy.BuilderOptions([parsed.get_raw_formula()])
    opts.set_exploration_checks(True)  # e.g. probabilities that do not sum to 1
    try:
        model = stormpy.build_model(program, options=opts)
    except RuntimeError as exc:
        raise Refused("model", f"Storm cannot build {name}: {_clean(exc)}") from None
    t1 = time.perf_counter()
    if int(model.nr_transitions) > limits["max_transitions"]:
        raise _limit(
            f"the number of transitions of {name}", model.nr_transitions, limits, "max_transitions"
        )
    kind = str(model.model_type).split(".")[-1]
    try:
        env = _environment(
            stormpy, chain=kind == "DTMC", relative=prop.lstrip().startswith("R"), precise=True
        )
        res = stormpy.model_checking(model, parsed, environment=env)
    except RuntimeError as exc:
        raise Refused("model", f"Storm cannot check {prop!r} on {name}: {exc}") from None
    t2 = time.perf_counter()
    init = [int(s) for s in model.initial_states]
    values = _values(res, int(model.nr_states))
    if res.is_quantitative():  # PRISM initial states are equally likely
        result: float | bool = float(np.mean(values[init]))
    else:
        result = bool(values[init].all())
    header = {
        "result": result if isinstance(result, bool) or math.isfinite(result) else str(result),
        "states": int(model.nr_states),
        "transitions": int(model.nr_transitions),
        "type": kind,
        "seconds": {"build": t1 - t0, "check": t2 - t1},
    }
    return header, {}


def _handle(
    stormpy: Any, req: dict[str, Any], arrays: dict[str, np.ndarray]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    op = req.get("op")
    if op == "parse":
        prop = _parse(stormpy, req["prop"], req["limits"])
        return {"canonical": str(prop.get_raw_formula())}, {}
    if op == "check":
        return _check(stormpy, req, arrays)
    if op == "prism":
        return _prism(stormpy, req, arrays)
    raise Refused("model", f"unknown operation {op!r}")


def _serve(
    stormpy: Any, req: dict[str, Any], arrays: dict[str, np.ndarray], answer: list[Any]
) -> None:
    """Answer one request into ``answer``; every failure becomes an error frame."""
    try:
        answer.append(_handle(stormpy, req, arrays))
    except Refused as exc:
        answer.append(({"ok": False, "error": exc.kind, "message": str(exc)}, {}))
    except MemoryError:
        answer.append(({"ok": False, "error": "memory", "message": "out of memory"}, {}))
    except Exception as exc:  # a failed check is an error, reported to the parent
        answer.append(
            ({"ok": False, "error": "crash", "message": f"{type(exc).__name__}: {exc}"}, {})
        )


def _limits(memory_mb: int, seconds: float) -> Callable[[], None]:
    """Limit this process's address space and CPU time for one request; returns the undo."""
    try:
        import resource
    except ImportError:  # not on this platform: the parent's wall clock still holds
        return lambda: None
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    as_soft, as_hard = resource.getrlimit(resource.RLIMIT_AS)
    cpu_soft, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    cap = vm + STACK + memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap if as_hard < 0 else min(cap, as_hard), as_hard))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = math.ceil(usage.ru_utime + usage.ru_stime + seconds) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu if cpu_hard < 0 else min(cpu, cpu_hard), cpu_hard))

    def undo() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (as_soft, as_hard))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_soft, cpu_hard))

    return undo


def main() -> None:
    out_fd = os.dup(1)
    os.dup2(2, 1)  # whatever Storm prints goes to stderr, never into the answers
    in_fd = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)

    def read(n: int) -> bytes:
        chunks, left = [], n
        while left:
            chunk = os.read(in_fd, min(left, 1 << 24))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(out_fd, view) :]

    try:
        import stormpy
        import stormpy.developer

        stormpy.developer.set_log_level(stormpy.developer.LogLevel.FATAL)
    except Exception as exc:
        write_frame(
            write, {"ok": False, "error": "import", "message": f"{type(exc).__name__}: {exc}"}, {}
        )
        return
    write_frame(write, {"ok": True, "stormpy": getattr(stormpy, "__version__", "?")}, {})
    threading.stack_size(STACK)
    while True:
        try:
            req, arrays = read_frame(read, 1 << 40)
        except EOFError:
            return
        answer: list[Any] = []
        undo = _limits(int(req.get("memory_mb", 4096)), float(req.get("seconds", 600.0)))
        try:
            worker = threading.Thread(target=_serve, args=(stormpy, req, arrays, answer))
            worker.start()  # its stack counts against the address-space limit
            worker.join()
        except RuntimeError:  # cannot start a thread: the budget is smaller than the stack
            answer.append(({"ok": False, "error": "memory", "message": "out of memory"}, {}))
        finally:
            undo()
        header, out = (
            answer[0] if answer else ({"ok": False, "error": "crash", "message": "no answer"}, {})
        )
        header.setdefault("ok", True)
        del arrays, req
        write_frame(write, header, out)
        if header.get("error") == "memory":
            return  # Storm's state after bad_alloc is not trusted: the parent starts afresh


if __name__ == "__main__":
    sys.path[:] = [p for p in json.loads(sys.argv[1]) if p]
    main()
