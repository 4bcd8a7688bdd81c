#!/usr/bin/env python
"""Calibrate the training-integrity monitors' thresholds on clean runs and ship them.

For each recipe task, trains clean policies (seeds 1000, 1001, ...; the zoo and the benchmarks
use other seeds) with the monitor recording one score per window and check, then sets each
check's threshold at the conformal ``1 - fpr`` quantile of the clean windows
(:func:`rlsec.defenses.monitors.calibrate`) and writes
``src/rlsec/defenses/calibration/<algo>-<env>.json``, which ``rlsec train`` uses by default.
``benchmarks/integrity_monitors.py`` measures the rate reached on held-out seeds.

Usage: python scripts/calibrate_monitors.py [--tasks ppo:CartPole-v1:10,...] [--fpr 0.01]
       (``algo:env:runs``; runs default to ``--runs``)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rlsec.defenses import TrainConfig, train_policy
from rlsec.defenses.monitors import CHECKS, IntegrityMonitor, calibrate

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "rlsec" / "defenses" / "calibration"
TASKS = "ppo:CartPole-v1:10,dqn:CartPole-v1:4,sac:Pendulum-v1:10"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default=TASKS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fpr", type=float, default=0.01)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for task in args.tasks.split(","):
        algo, env_id, *rest = task.split(":")
        runs = int(rest[0]) if rest else args.runs
        scores: dict[str, list[float]] = {name: [] for name in CHECKS}
        t0 = time.perf_counter()
        for run in range(runs):
            monitor = IntegrityMonitor(None)
            with tempfile.TemporaryDirectory() as tmp:
                train_policy(
                    TrainConfig(algo=algo, env_id=env_id, seed=1000 + run, eval_episodes=5),
                    Path(tmp) / "run",
                    monitor=monitor,
                )
            for name, xs in monitor.scores.items():
                scores[name].extend(xs)
            print(f"{task} run {run}: {sum(map(len, monitor.scores.values()))} scores", flush=True)
        source = (
            f"scripts/calibrate_monitors.py: {runs} clean runs of the {algo} recipe on "
            f"{env_id} (seeds 1000..{999 + runs}), {time.perf_counter() - t0:.0f} s"
        )
        thresholds = calibrate(scores, args.fpr, source=source)
        thresholds.save(OUT / f"{algo}-{env_id}.json")
        print(f"{task}: {thresholds.values} bounds {thresholds.bounds}", flush=True)


if __name__ == "__main__":
    main()
