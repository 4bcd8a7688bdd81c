#!/usr/bin/env python
"""How well do the training-integrity monitors catch attacks on the training loop?

With the thresholds `rlsec train` ships (calibrated on clean runs by
scripts/calibrate_monitors.py, other seeds), trains:
  * clean runs: any finding of a calibrated check is a false positive;
  * attacked runs, the attack starting at ``--onset`` of training: reward sign flips, bounded
    reward noise, teleported observations (falsified transitions), a one-off tampering of the
    actor's weights, and (DQN) transitions written straight into the replay buffer or
    genuine rows of it overwritten in place.
Reports per attack: true-positive rate (runs with a finding of the check that guards the
attacked surface at or after the onset), detection latency in environment steps (median
over detected runs), and on clean runs (held-out seeds) the false-positive rate per run and,
per check, how many runs kept their window false-alarm rate within the calibrated one (the
calibration states it for a fraction `coverage` of runs) and the pooled rate per window with
its exact 95% interval.

Usage: python benchmarks/integrity_monitors.py [--tasks ppo,dqn] [--seeds 3] [--clean-seeds N]
       [--first-clean-seed 2000] [--only NAME] [--no-clean] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from rlsec.attacks.reward import make_reward_attack
from rlsec.defenses import TrainConfig, train_policy
from rlsec.defenses.monitors import CHECKS, IntegrityMonitor
from rlsec.defenses.training import shipped_thresholds
from rlsec.stats import proportion_ci

ENV = "CartPole-v1"


class Clock:
    """Environment steps taken so far by all training envs (shared by the wrappers)."""

    def __init__(self) -> None:
        self.t = 0


class GatedReward(gym.Wrapper[Any, Any, Any, Any]):
    """A reward attack that only takes effect from ``onset`` on (before, the clean reward
    is restored from the delta the attack reports in ``info``)."""

    def __init__(self, env: gym.Env[Any, Any], clock: Clock, onset: int) -> None:
        super().__init__(env)
        self.clock, self.onset = clock, onset

    def step(self, action: Any) -> Any:
        obs, r, term, trunc, info = self.env.step(action)
        self.clock.t += 1
        if self.clock.t < self.onset:
            r = float(r) - float(info.get("rlsec_reward_delta", 0.0))
        return obs, r, term, trunc, info


class Teleport(gym.Wrapper[Any, Any, Any, Any]):
    """Falsified transitions: from ``onset`` on, with probability ``p`` the reported next
    observation is a random in-range state instead of the true one."""

    def __init__(self, env: gym.Env[Any, Any], clock: Clock, onset: int, p: float) -> None:
        super().__init__(env)
        self.clock, self.onset, self.p = clock, onset, p
        self.rng = np.random.default_rng(7)

    def step(self, action: Any) -> Any:
        obs, r, term, trunc, info = self.env.step(action)
        self.clock.t += 1
        if self.clock.t >= self.onset and self.rng.random() < self.p:
            obs = self.rng.uniform([-2.4, -2, -0.2, -2], [2.4, 2, 0.2, 2]).astype(np.float32)
        return obs, r, term, trunc, info


class TamperWeights(BaseCallback):
    """One-off tampering of the actor's weights (Gaussian noise of ``scale`` x each tensor's
    std) at ``onset``."""

    def __init__(self, onset: int, scale: float) -> None:
        super().__init__()
        self.onset, self.scale, self.done = onset, scale, False

    def _on_step(self) -> bool:
        if not self.done and self.num_timesteps >= self.onset:
            self.done = True
            gen = torch.Generator().manual_seed(3)
            with torch.no_grad():
                for name, p in self.model.policy.named_parameters():
                    if "value" in name or "vf" in name or "target" in name:
                        continue
                    p.add_(torch.randn(p.shape, generator=gen) * self.scale * p.std())
        return True


class InjectBuffer(BaseCallback):
    """Data poisoning: from ``onset`` on, every ``every`` steps write ``count`` crafted
    transitions straight into the replay buffer."""

    def __init__(self, onset: int, every: int, count: int) -> None:
        super().__init__()
        self.onset, self.every, self.count = onset, every, count

    def _on_step(self) -> bool:
        t = self.num_timesteps
        if t >= self.onset and (t - self.onset) % self.every == 0:
            buf = self.model.replay_buffer
            obs = np.zeros((1, 4), np.float32)
            for _ in range(self.count):
                buf.add(obs, obs, np.array([0]), np.array([1.0]), np.array([False]), [{}])
        return True


class ReplaceBuffer(BaseCallback):
    """Data poisoning in place: from ``onset`` on, every ``every`` steps overwrite ``count``
    random genuine rows of the replay buffer with a flipped reward (the buffer's write
    position does not move)."""

    def __init__(self, onset: int, every: int, count: int) -> None:
        super().__init__()
        self.onset, self.every, self.count = onset, every, count
        self.rng = np.random.default_rng(7)

    def _on_step(self) -> bool:
        t = self.num_timesteps
        if t >= self.onset and (t - self.onset) % self.every == 0:
            buf = self.model.replay_buffer
            filled = buf.buffer_size if buf.full else buf.pos
            rows = self.rng.choice(filled, size=self.count, replace=False)
            buf.rewards[rows] = -buf.rewards[rows]
        return True


#: attack -> (checks that guard its surface, how to set it up)
Setup = Callable[
    [Clock, int], tuple[Callable[[gym.Env[Any, Any]], gym.Env[Any, Any]] | None, list[BaseCallback]]
]


def _reward(attack_id: str, eps: float, budget: float) -> Setup:
    def setup(clock: Clock, onset: int) -> Any:
        attack = make_reward_attack(attack_id, eps, step_budget=budget)

        def wrap(env: gym.Env[Any, Any]) -> gym.Env[Any, Any]:
            return GatedReward(attack.as_wrapper(env, seed=11), clock, onset)

        return wrap, []

    return setup


ATTACKS: dict[str, tuple[tuple[str, ...], Setup, tuple[str, ...]]] = {
    "reward flips (5% of steps)": (
        ("reward-outlier",),
        _reward("flip-reward-v1", 2.0, 0.05),  # ε=2: flipping r=1 moves it by 2
        ("ppo", "dqn"),
    ),
    "reward noise (|δ|<=0.5, 20% of steps)": (
        ("reward-outlier",),
        _reward("noise-reward-v1", 0.5, 0.2),
        ("ppo", "dqn"),
    ),
    "teleported observations (2% of steps)": (
        ("transition-jump", "transition-validation"),
        lambda clock, onset: (lambda env: Teleport(env, clock, onset, 0.02), []),
        ("ppo", "dqn"),
    ),
    "weight tampering (noise 0.5 std, once)": (
        (
            "weight-integrity",
            "update-kl",
            "update-clip-fraction",
            "update-grad-norm",
            "drift-step",
            "drift-reference",
        ),
        lambda clock, onset: (None, [TamperWeights(onset, 0.5)]),
        ("ppo", "dqn"),
    ),
    "replay-buffer injection (4 rows / 256 steps)": (
        ("buffer-accounting",),
        lambda clock, onset: (None, [InjectBuffer(onset, 256, 4)]),
        ("dqn",),
    ),
    "replay-buffer rows replaced in place (4 rows / 256 steps)": (
        ("buffer-integrity",),
        lambda clock, onset: (None, [ReplaceBuffer(onset, 256, 4)]),
        ("dqn",),
    ),
}


def run(
    algo: str,
    seed: int,
    steps: int | None,
    setup: Setup | None,
    onset_frac: float,
    hp: dict[str, Any],
) -> tuple[IntegrityMonitor, int, int]:
    cfg = TrainConfig(
        algo=algo,
        env_id=ENV,
        seed=seed,
        steps=steps,
        eval_episodes=2,
        hyperparameters=hp,
        select="final",  # the monitors watch training; the exported policy is not scored
    ).validated()
    assert cfg.steps is not None
    onset = int(onset_frac * cfg.steps)
    clock = Clock()
    wrap, callbacks = setup(clock, onset) if setup is not None else (None, [])
    monitor = IntegrityMonitor(shipped_thresholds(algo, ENV), halt=None)
    with tempfile.TemporaryDirectory() as tmp:
        train_policy(cfg, Path(tmp) / "run", wrap_env=wrap, callbacks=callbacks, monitor=monitor)
    windows = max(1, cfg.steps // monitor.window)
    return monitor, onset, windows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default="ppo,dqn")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--clean-seeds", type=int, default=None, help="clean runs (default: --seeds)"
    )
    parser.add_argument(
        "--first-clean-seed", type=int, default=2000, help="seed of the first clean run"
    )
    parser.add_argument("--onset", type=float, default=0.3)
    parser.add_argument("--only", default="", help="run only attacks whose name contains this")
    parser.add_argument("--no-clean", action="store_true", help="skip the clean runs")
    parser.add_argument("--smoke", action="store_true", help="tiny budgets, for CI")
    args = parser.parse_args()
    steps: int | None = None
    hp: dict[str, Any] = {}
    if args.smoke:
        args.seeds, args.clean_seeds, steps = 1, 1, 2048
        hp = {"learning_starts": 256} if "dqn" in args.tasks else {}
    t0 = time.perf_counter()
    rows = []
    fpr_rows: list[tuple[str, ...]] = []
    calibrated = [c for c in CHECKS]
    for algo in args.tasks.split(","):
        if shipped_thresholds(algo, ENV) is None:
            print(f"no shipped thresholds for {algo} on {ENV}: run scripts/calibrate_monitors.py")
            continue
        thresholds = shipped_thresholds(algo, ENV)
        assert thresholds is not None
        fp_runs, clean_runs = 0, 0
        alarms = dict.fromkeys(thresholds.values, 0)
        windows = dict.fromkeys(thresholds.values, 0)
        within = dict.fromkeys(thresholds.values, 0)  # runs whose window rate <= fpr
        n_clean = args.seeds if args.clean_seeds is None else args.clean_seeds
        for s in range(0 if args.no_clean else n_clean):
            m, _, _ = run(algo, args.first_clean_seed + s, steps, None, args.onset, hp)
            false = [f for f in m.findings if f.detector in calibrated]
            fp_runs += bool(false)
            clean_runs += 1
            for check in alarms:
                k, n = sum(f.detector == check for f in false), len(m.scores[check])
                alarms[check] += k
                windows[check] += n
                within[check] += k <= thresholds.fpr * n
            print(
                json.dumps(
                    {
                        "algo": algo,
                        "clean_seed": s,
                        "findings": len(m.findings),
                        "first_alarm": m.first_alarm,
                        "alarms": {c: sum(f.detector == c for f in false) for c in alarms},
                        "windows": {c: len(m.scores[c]) for c in alarms},
                    }
                ),
                flush=True,
            )
        if clean_runs:
            total_alarms, total_windows = sum(alarms.values()), sum(windows.values())
            rows.append(
                (
                    algo,
                    "clean training",
                    "all calibrated",
                    f"{fp_runs}/{clean_runs} runs with a false alarm",
                    f"{total_alarms}/{total_windows} windows",
                    "-",
                )
            )
            for check in sorted(alarms):
                if windows[check]:
                    lo, hi = proportion_ci(alarms[check], windows[check])
                    fpr_rows.append(
                        (
                            algo,
                            check,
                            f"{thresholds.fpr:g} per window in "
                            f"{thresholds.coverages.get(check, 0.0):.3g} of runs",
                            f"{within[check]}/{clean_runs}",
                            f"{alarms[check]}/{windows[check]}",
                            f"{alarms[check] / windows[check]:.4f} [{lo:.4f}, {hi:.4f}]",
                        )
                    )
        for name, (checks, setup, algos) in ATTACKS.items():
            if algo not in algos or args.only not in name:
                continue
            hits, latencies = 0, []
            for s in range(args.seeds):
                m, onset, _ = run(algo, 3000 + s, steps, setup, args.onset, hp)
                # every alarm of a guarding check at or after the onset (a check that raised
                # a false alarm before the onset still counts when it fires again after it)
                after = [
                    int(f.evidence["timesteps"])
                    for f in m.findings
                    if f.detector in checks and int(f.evidence.get("timesteps", -1)) >= onset
                ]
                if after:
                    hits += 1
                    latencies.append(min(after) - onset)
                print(
                    json.dumps(
                        {
                            "algo": algo,
                            "attack": name,
                            "seed": s,
                            "onset": onset,
                            "first_alarm": m.first_alarm,
                        }
                    ),
                    flush=True,
                )
            lat = f"{statistics.median(latencies):.0f}" if latencies else "-"
            rows.append((algo, name, ", ".join(checks), f"{hits}/{args.seeds}", "", lat))
    print()
    print(
        "| learner | run | guarding checks | detected (TPR) / false alarms | "
        "false alarms per window | median latency (steps) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    if fpr_rows:
        print("\nFalse alarms on held-out clean runs, per check:\n")
        print(
            "| learner | check | calibrated | runs within the rate | windows alarmed "
            "| rate [95% CI] |"
        )
        print("|---|---|---|---|---|---|")
        for r in fpr_rows:
            print("| " + " | ".join(r) + " |")
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
