#!/usr/bin/env python
"""What do the training-integrity monitors cost? Training time with and without them.

Trains Stable-Baselines3 learners on CartPole-v1 for --steps environment steps, three ways,
interleaved over --repeats rounds so that the machine's drift hits every way alike:

* ``off``: no callback (the baseline, measured in the same run);
* ``monitor``: `rlsec.defenses.monitors.IntegrityMonitor` scoring every check (thresholds
  only decide which scores become findings, so they change nothing of the work; for DQN this
  includes the replay-buffer seals: a keyed BLAKE2b digest per stored row, checked for every
  row a gradient step samples);
* ``no-seals`` (DQN only): the same monitor with the seals left out (its buffer binding
  replaced by the accounting alone), which isolates what the seals cost.

Reported per learner: the median wall time of each way and its ratio to ``off``. The learners
are small (64-unit MLPs), so the learner's own work per step is cheap and the ratios are an
upper end of what the monitors add to larger models.

Usage: python benchmarks/monitor_overhead.py [--algos dqn,ppo] [--steps 20000] [--repeats 3]
       [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3 import DQN, PPO

from rlsec.defenses.monitors import IntegrityMonitor

ENV = "CartPole-v1"


def learner(algo: str, seed: int) -> Any:
    env = gym.make(ENV)
    kw: dict[str, Any] = {"seed": seed, "device": "cpu", "policy_kwargs": {"net_arch": [64, 64]}}
    if algo == "dqn":
        return DQN("MlpPolicy", env, learning_starts=1000, train_freq=4, **kw)
    return PPO("MlpPolicy", env, n_steps=512, batch_size=64, n_epochs=4, **kw)


def timed(algo: str, way: str, steps: int, seed: int) -> float:
    model = learner(algo, seed)
    callback = None
    if way != "off":
        callback = IntegrityMonitor(None, halt=None)
        if way == "no-seals":
            # keep the accounting, skip sealing: the buffer is never bound for seals
            callback._bind = lambda buf: None
    t0 = time.perf_counter()
    model.learn(steps, callback=callback)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--algos", default="dqn,ppo")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny run: checks the plumbing")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.repeats = 1500, 1
    torch.set_num_threads(1)
    print(f"{ENV}, {args.steps} steps, {args.repeats} interleaved rounds\n")
    print("| learner | way | median seconds | ratio to off |")
    print("|---|---|---|---|")
    for algo in args.algos.split(","):
        ways = ["off", "monitor"] + (["no-seals"] if algo == "dqn" else [])
        times: dict[str, list[float]] = {w: [] for w in ways}
        for r in range(args.repeats):
            for way in ways:
                times[way].append(timed(algo, way, args.steps, seed=r))
        base = statistics.median(times["off"])
        for way in ways:
            med = statistics.median(times[way])
            print(f"| {algo} | {way} | {med:.2f} | {med / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
