#!/usr/bin/env python
"""What binding the registry's state to its audit log costs, and whether token ids leak
through timing. Each figure comes with a baseline measured in the same run.

* reads: an authenticated read (``whoami``, which loads and checks a token row and a
  principal row) with the state checks on and warm (every entry already proved), on and
  cold (a new process-level checker: an inclusion proof per entry), against the same call
  with the checks off;
* token timing: refusing a token whose id exists but whose secret is wrong, against one
  whose id does not exist, interleaved in random order so drift hits both alike; reports
  the medians and P(wrong secret is slower) (0.5 means timing says nothing). The refusal
  itself writes an audit entry, which dominates and varies; ``--auth-only`` times the
  authentication step alone inside one read transaction.
* replay: ``audit verify`` with the state replay against the log verification alone.

Usage: python benchmarks/registry_state.py [--trials 20000] [--reads 2000] [--smoke]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import tempfile
import time
from pathlib import Path

from rlsec.registry import Registry, audit
from rlsec.registry._base import Denied
from rlsec.registry.state import Checker, verify_rows


def bench_reads(reg: Registry, token: str, n: int) -> dict[str, float]:
    def per_call() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            reg.whoami(token)
        return (time.perf_counter() - t0) / n * 1e6

    reg.whoami(token)
    warm = per_call()
    cold_times = []
    for _ in range(min(n, 200)):
        reg._checker = Checker(reg.log_public())  # nothing proved yet
        t0 = time.perf_counter()
        reg.whoami(token)
        cold_times.append((time.perf_counter() - t0) * 1e6)
    real = Checker.check
    Checker.check = lambda self, s, row: None  # type: ignore[method-assign,assignment]
    try:
        off = per_call()
    finally:
        Checker.check = real  # type: ignore[method-assign]
    return {"warm_us": warm, "cold_us": statistics.median(cold_times), "off_us": off}


def bench_token_timing(reg: Registry, valid: str, trials: int) -> dict[str, float]:
    tid = valid.split("_")[1]
    wrong = f"rlsec_{tid}_" + "C" * 43
    unknown = "rlsec_fedcba9876543210_" + "C" * 43
    rng = random.Random(0)
    times: dict[str, list[float]] = {"wrong": [], "unknown": []}
    with reg._read() as s:
        for _ in range(trials):
            order = [("wrong", wrong), ("unknown", unknown)]
            rng.shuffle(order)
            for label, tok in order:
                t0 = time.perf_counter_ns()
                with contextlib.suppress(Denied):
                    reg._authenticate(s, tok)
                times[label].append((time.perf_counter_ns() - t0) / 1e3)
    slower = sum(w > u for w, u in zip(times["wrong"], times["unknown"], strict=True))
    return {
        "wrong_us": statistics.median(times["wrong"]),
        "unknown_us": statistics.median(times["unknown"]),
        "p_wrong_slower": slower / trials,
    }


def bench_replay(reg: Registry, token: str) -> dict[str, float]:
    public = reg.log_public()
    with reg._read() as s:
        t0 = time.perf_counter()
        report = audit.verify_log(s, public)
        log_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = verify_rows(s, report.state)
        replay_s = time.perf_counter() - t0
    return {"entries": report.entries, "rows": rows, "log_s": log_s, "replay_s": replay_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20_000)
    parser.add_argument("--reads", type=int, default=2_000)
    parser.add_argument("--tokens", type=int, default=2_000, help="bound rows for the replay")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.trials, args.reads, args.tokens = 200, 50, 50
    with tempfile.TemporaryDirectory() as tmp:
        reg = Registry(Path(tmp) / "home")
        admin = reg.init("admin")
        reg.create_principal(admin, "bench", "viewer")
        token = reg.create_token(admin, "bench")
        for i in range(args.tokens):
            reg.create_token(admin, "bench", label=f"t{i}")
        r = bench_reads(reg, token, args.reads)
        print(
            f"authenticated read (whoami): checks warm {r['warm_us']:.0f} µs, cold "
            f"{r['cold_us']:.0f} µs (an inclusion proof per entry), off {r['off_us']:.0f} µs: "
            f"warm/off = {r['warm_us'] / r['off_us']:.2f}x, cold/off = "
            f"{r['cold_us'] / r['off_us']:.2f}x"
        )
        t = bench_token_timing(reg, token, args.trials)
        print(
            f"token refusal over {args.trials} interleaved trials: wrong secret "
            f"{t['wrong_us']:.1f} µs, unknown id {t['unknown_us']:.1f} µs (medians), "
            f"P(wrong secret slower) = {t['p_wrong_slower']:.3f}"
        )
        p = bench_replay(reg, admin)
        print(
            f"audit verify of {p['entries']} entries: log {p['log_s'] * 1e3:.0f} ms, state "
            f"replay of {p['rows']} rows {p['replay_s'] * 1e3:.0f} ms "
            f"({p['replay_s'] / p['log_s']:.2f}x the log's time)"
        )


if __name__ == "__main__":
    main()
