"""Storm in a worker process: one per rlsec process, started on the first query and kept.

Why a process: Storm is native code that none of stormpy's calls let Python interrupt, and
some inputs crash it (a deeply nested expression overflows its parser's stack; ``0/0`` in a
PRISM file raises SIGFPE). In a worker, a query that runs past its time budget is ended by
killing the worker, one that runs out of memory hits the worker's address-space limit, and
a crash ends only the worker; each is a :class:`~rlsec.errors.CheckAborted`, and the next
query starts a fresh worker. Keeping the worker between queries keeps small queries fast
(about 1 ms of overhead, against about 0.2 s to start one).

The parent never imports stormpy: :func:`require_storm` only looks it up, so every other
part of rlsec works without the ``storm`` extra.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from rlsec.errors import CheckAborted, MissingDependency, ModelError, ModelTooLarge
from rlsec.verify._storm_worker import read_frame, write_frame
from rlsec.verify.budget import Budget

__all__: list[str] = []

STORM_HINT = (
    "the Storm model checker (stormpy) is not installed; rlsec's verify, shield and model "
    "checking need it: pip install 'rlsec[storm]' (stormpy and Storm are GPL-3.0 licensed; "
    "see the README's Licences)"
)
_SCRIPT = Path(__file__).with_name("_storm_worker.py")
_START_SECONDS = 120.0
_LOCK = threading.Lock()


class _Timeout(Exception):
    pass


def require_storm() -> None:
    """Raise :class:`~rlsec.errors.MissingDependency` (with the install command) unless
    stormpy can be found; it is not imported here."""
    try:
        found = importlib.util.find_spec("stormpy") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingDependency(STORM_HINT)


class _Worker:
    def __init__(self) -> None:
        self.owner = os.getpid()
        self.stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, "1")
        # one malloc arena: a thread's own arena reserves 64 MiB of address space, which would
        # count against the memory budget before Storm allocates anything
        env.setdefault("MALLOC_ARENA_MAX", "1")
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and script
            [sys.executable, "-I", str(_SCRIPT), json.dumps(sys.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            close_fds=True,
            start_new_session=True,  # the terminal's Ctrl-C reaches the parent, which kills it
        )
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.to = self.proc.stdin.fileno()
        self.frm = self.proc.stdout.fileno()
        try:
            hello, _ = read_frame(self.reader(time.monotonic() + _START_SECONDS), 1 << 20)
        except (_Timeout, EOFError, OSError, ValueError) as exc:
            self.kill()
            words = self.last_words()
            self.stderr.close()
            raise CheckAborted(
                f"the Storm worker process did not start ({type(exc).__name__}, exit code "
                f"{self.proc.returncode}): {words or 'no output'}"
            ) from None
        if not hello.get("ok"):
            self.kill()
            self.stderr.close()
            if hello.get("error") == "import":
                raise MissingDependency(
                    f"{STORM_HINT} (importing it failed: {hello.get('message')})"
                )
            raise CheckAborted(f"the Storm worker did not start: {hello.get('message')}")

    def reader(self, deadline: float) -> Any:
        def read(n: int) -> bytes:
            chunks, left = [], n
            while left:
                wait = deadline - time.monotonic()
                if wait <= 0 or not select.select([self.frm], [], [], wait)[0]:
                    raise _Timeout
                chunk = os.read(self.frm, min(left, 1 << 24))
                if not chunk:
                    raise EOFError
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)

        return read

    def writer(self, deadline: float) -> Any:
        def write(data: bytes) -> None:
            view = memoryview(data)
            while view:
                wait = deadline - time.monotonic()
                if wait <= 0 or not select.select([], [self.to], [], wait)[1]:
                    raise _Timeout
                view = view[os.write(self.to, view[: 1 << 20]) :]

        return write

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None and not f.closed:
                f.close()

    def last_words(self) -> str:
        self.stderr.seek(0, os.SEEK_END)
        size = self.stderr.tell()
        self.stderr.seek(max(0, size - 600))
        text = self.stderr.read().decode("utf-8", "replace").strip()
        return " ".join(text.split())[-400:]

    def close(self) -> None:
        """Ask the worker to exit (end of its input), kill it if it does not."""
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=2)
        self.kill()
        self.stderr.close()


_current: list[_Worker] = []


def _worker() -> _Worker:
    if _current and (_current[0].owner != os.getpid() or _current[0].proc.poll() is not None):
        stale = _current.pop()
        if stale.owner == os.getpid():  # it died: reap it; a forked child leaves its parent's
            stale.close()
    if not _current:
        _current.append(_Worker())
    return _current[0]


def _stop() -> None:
    if _current and _current[0].owner == os.getpid():
        _current.pop().close()


atexit.register(_stop)


def request(
    header: dict[str, Any],
    arrays: dict[str, np.ndarray],
    budget: Budget,
    *,
    what: str,
    max_reply: int,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Send one request to the worker under ``budget`` and return its answer.

    Raises:
        MissingDependency: stormpy is not installed.
        ModelError, ModelTooLarge: Storm or a limit refused the input.
        CheckAborted: the query ran past its time or memory budget, or Storm crashed.
    """
    require_storm()
    header = {**header, "memory_mb": budget.memory_mb, "seconds": budget.seconds}
    with _LOCK:
        worker = _worker()
        deadline = time.monotonic() + budget.seconds
        try:
            write_frame(worker.writer(deadline), header, arrays)
            reply, out = read_frame(worker.reader(deadline), max_reply)
        except _Timeout:
            _discard(worker)
            raise CheckAborted(
                f"{what} ran past its time budget of {budget.seconds:g} s (Budget.seconds, "
                "RLSEC_VERIFY_SECONDS) and was stopped; no result was produced",
                "time",
            ) from None
        except (EOFError, OSError, ValueError) as exc:
            worker.kill()
            error = _crashed(worker, what, budget, exc)
            _discard(worker)
            raise error from None
        except BaseException:  # interrupted mid-query: the worker's state is unknown
            _discard(worker)
            raise
        if not reply.get("ok") and reply.get("error") not in ("model", "limit"):
            _discard(worker)  # not trusted after running out of memory or failing
    if reply.get("ok"):
        return reply, out
    kind, message = reply.get("error"), str(reply.get("message"))
    if kind == "model":
        raise ModelError(message)
    if kind == "limit":
        raise ModelTooLarge(message)
    if kind == "memory":
        raise CheckAborted(_memory(what, budget), "memory")
    raise CheckAborted(f"Storm failed while {what}: {message}; no result was produced")


def _discard(worker: _Worker) -> None:
    if worker in _current:
        _current.remove(worker)
    worker.kill()
    worker.stderr.close()


def _memory(what: str, budget: Budget) -> str:
    return (
        f"{what} ran out of its memory budget of {budget.memory_mb} MiB (Budget.memory_mb, "
        "RLSEC_VERIFY_MEMORY_MB) and was stopped; no result was produced"
    )


def _crashed(worker: _Worker, what: str, budget: Budget, exc: BaseException) -> CheckAborted:
    rc = worker.proc.returncode
    if rc is not None and rc < 0:
        try:
            sig = signal.Signals(-rc).name
        except ValueError:
            sig = f"signal {-rc}"
        if -rc == getattr(signal, "SIGXCPU", None):
            return CheckAborted(
                f"{what} ran past its CPU-time budget of {budget.seconds:g} s (Budget.seconds, "
                "RLSEC_VERIFY_SECONDS) and was stopped; no result was produced",
                "time",
            )
        how = f"was killed by {sig}"
    else:
        how = f"exited with code {rc}" if rc is not None else f"stopped answering ({exc})"
    words = worker.last_words()
    if any(sign in words for sign in ("cannot allocate", "bad_alloc", "MemoryError")):
        return CheckAborted(_memory(what, budget) + f" ({how}: {words[-200:]})", "memory")
    return CheckAborted(
        f"Storm crashed while {what} (the worker process {how}); no result was produced"
        + (f". Its last output: {words}" if words else ""),
        "crash",
    )
