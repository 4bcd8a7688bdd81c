#!/usr/bin/env python
"""Calibrate the training-integrity monitors' thresholds on clean runs and ship them.

For each recipe task, trains clean policies (seeds 1000, 1001, ...; the zoo and the benchmarks
use other seeds) with the monitor recording one score per window and check, then sets each
check's threshold so that a clean run alarms on at most ``--fpr`` of its windows with
probability ``--coverage``, the run being the exchangeable unit
(:func:`rlsec.defenses.monitors.calibrate`), and writes
``src/rlsec/defenses/calibration/<algo>-<env>.json``, which ``rlsec train`` uses by default.
A coverage of 0.9 needs at least 9 runs per task. ``benchmarks/integrity_monitors.py``
measures the rates reached on held-out seeds.

Each run's scores are kept in ``--work`` (``<algo>-<env>-seed<N>.json``, with the scoring
version they were computed under), so runs can be spread over processes (``--first-run``)
and an interrupted calibration resumes.

Usage: python scripts/calibrate_monitors.py [--tasks ppo:CartPole-v1:10,...] [--fpr 0.01]
       [--coverage 0.9] [--work DIR] [--first-run 0] [--no-write]
       (``algo:env:runs``; runs default to ``--runs``)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rlsec.defenses import TrainConfig, train_policy
from rlsec.defenses.monitors import SCORING, IntegrityMonitor, calibrate

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "rlsec" / "defenses" / "calibration"
TASKS = "ppo:CartPole-v1:10,dqn:CartPole-v1:10,sac:Pendulum-v1:10"
SEED = 1000


def run_scores(algo: str, env_id: str, seed: int, work: Path) -> dict[str, list[float]]:
    """One clean run's window scores per check (cached in ``work``)."""
    cache = work / f"{algo}-{env_id}-seed{seed}.json"
    if cache.is_file():
        body = json.loads(cache.read_text())
        if body.get("scoring") == SCORING:  # scores of another scoring are trained again
            cached: dict[str, list[float]] = body["scores"]
            return cached
    monitor = IntegrityMonitor(None)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train_policy(
            TrainConfig(algo=algo, env_id=env_id, seed=seed, eval_episodes=5, select="final"),
            Path(tmp) / "run",
            monitor=monitor,
        )
    scores = {name: list(xs) for name, xs in monitor.scores.items()}
    body = {"scoring": SCORING, "seconds": time.perf_counter() - t0, "scores": scores}
    tmp_path = cache.with_suffix(".tmp")
    tmp_path.write_text(json.dumps(body))
    tmp_path.replace(cache)  # whole or absent
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default=TASKS)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--first-run", type=int, default=0, help="train runs from this one on")
    parser.add_argument("--fpr", type=float, default=0.01)
    parser.add_argument("--coverage", type=float, default=0.9)
    parser.add_argument("--work", type=Path, default=ROOT / ".calibration-runs")
    parser.add_argument("--no-write", action="store_true", help="train only, write nothing")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    for task in args.tasks.split(","):
        algo, env_id, *rest = task.split(":")
        runs = int(rest[0]) if rest else args.runs
        t0 = time.perf_counter()
        for run in range(args.first_run, runs):
            scores = run_scores(algo, env_id, SEED + run, args.work)
            print(f"{task} run {run}: {sum(map(len, scores.values()))} scores", flush=True)
        if args.no_write:
            continue
        all_runs = [run_scores(algo, env_id, SEED + run, args.work) for run in range(runs)]
        seconds = sum(
            json.loads((args.work / f"{algo}-{env_id}-seed{SEED + r}.json").read_text())["seconds"]
            for r in range(runs)
        )
        source = (
            f"scripts/calibrate_monitors.py: {runs} clean runs of the {algo} recipe on "
            f"{env_id} (seeds {SEED}..{SEED + runs - 1}), {seconds:.0f} s of training"
        )
        thresholds = calibrate(all_runs, args.fpr, coverage=args.coverage, source=source)
        thresholds.save(OUT / f"{algo}-{env_id}.json")
        print(
            f"{task}: {thresholds.values} coverages {thresholds.coverages} "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
