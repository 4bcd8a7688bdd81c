#!/usr/bin/env python
"""Wall time and peak memory of the default ``rlsec redteam``, each in its own process.

Baseline, measured in the same run: ``rlsec version`` (the interpreter plus rlsec's imports:
torch, gymnasium, ...). Goals: the default run finishes in under 3 minutes on 2 cores and its
peak RSS stays under 1.5 GB.

Usage: python benchmarks/redteam_default.py [--smoke]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def measure(args: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of ``rlsec ARGS`` in a fresh process."""
    code = (
        "import resource, sys, time, runpy\n"
        "sys.argv = ['rlsec'] + sys.argv[1:]\n"
        "t = time.perf_counter()\n"
        "try:\n"
        "    from rlsec.cli import main\n"
        "    main()\n"
        "except SystemExit as e:\n"
        "    if e.code not in (0, None): raise\n"
        "print('SECONDS', time.perf_counter() - t)\n"
        "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "RLSEC_HOME": home}
        proc = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=home,
            check=True,
        )
    seconds = float(proc.stdout.split("SECONDS")[1].split()[0])
    rss_mb = float(proc.stdout.split("MAXRSS_KB")[1].split()[0]) / 1024
    return seconds, rss_mb


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny run instead, for CI")
    args = parser.parse_args()
    run = ["redteam"] + (
        ["--episodes", "2", "--eps", "0.5", "--alpha", "0.5"] if args.smoke else []
    )
    t0 = time.perf_counter()
    base_s, base_mb = measure(["version"])
    run_s, run_mb = measure(run)
    print(f"baseline `rlsec version`: {base_s:.1f} s, peak RSS {base_mb:.0f} MB")
    print(f"`rlsec {' '.join(run)}`: {run_s:.1f} s, peak RSS {run_mb:.0f} MB")
    print(
        f"memory ratio run / baseline: {run_mb / base_mb:.2f}x "
        f"(goal: peak RSS < 1536 MB; measured {run_mb:.0f} MB)"
    )
    print(
        f"time: {run_s:.0f} s (goal < 180 s for the default run); "
        f"benchmark wall {time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
