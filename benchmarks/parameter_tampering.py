#!/usr/bin/env python
"""Damage of parameter tampering on the reference CartPole policies: mean return per budget.

For zoo:cartpole-ppo and zoo:cartpole-dqn, tampers with the actor's stored weights and plays
the tampered policy (rlsec.evaluate.parameters.parameter_damage):

* noise-params-v1 and pgd-params-v1: every tensor moved within a linf ball of ε standard
  deviations of its own entries (uniformly at random, or by projected gradient ascent on the
  action divergence over 256 probe states of the clean policy);
* bitflip-params-v1: exactly k bits of the float32 weights flipped, uniformly at random or by
  the targeted progressive bit search.

Prints markdown tables: the mean return over all episodes of all seeds, then in brackets the
fraction of held-out probe states whose action changed and, where it happened, the fraction
of tampered steps whose output was not finite (NaN/inf, decoded by the explicit fallback
rule). Each seed tampers afresh (random attacks draw new noise or bits; the targeted ones are
deterministic given the probe, so their seeds differ in the episodes only).

Usage: python benchmarks/parameter_tampering.py [--smoke] [--episodes 10] [--seeds 3]
       [--policies cartpole-ppo,cartpole-dqn] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rlsec.attacks.parameters import ParameterAttack, make_parameter_attack
from rlsec.evaluate.parameters import parameter_damage
from rlsec.policies import load_policy

EPSILONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
BITS = (1, 2, 4, 8, 16)
SMOKE_EPSILONS = (0.02, 0.5)
SMOKE_BITS = (1, 4)


def grid(epsilons: Sequence[float], bits: Sequence[int], pgd_steps: int) -> list[ParameterAttack]:
    attacks = [make_parameter_attack("noise-params-v1", e) for e in epsilons]
    attacks += [make_parameter_attack("pgd-params-v1", e, steps=pgd_steps) for e in epsilons]
    for mode in ("random", "targeted"):
        attacks += [make_parameter_attack("bitflip-params-v1", k, mode=mode) for k in bits]
    return attacks


def cell(row: dict[str, Any]) -> str:
    nonfinite = row["nonfinite_outputs"]
    extra = (
        "" if nonfinite == 0 else f", NaN/inf {'<1%' if nonfinite < 0.01 else f'{nonfinite:.0%}'}"
    )
    return f"{row['mean_return']:.0f} ({row['probe_action_change_rate']:.0%}{extra})"


def table(rows: list[dict[str, Any]], budgets: Sequence[float], head: str) -> None:
    labels = list(dict.fromkeys(r["label"] for r in rows))
    print("| attack | " + " | ".join(f"{head}={b:g}" for b in budgets) + " |")
    print("|---" * (len(budgets) + 1) + "|")
    for label in labels:
        by_budget = {r["epsilon"]: r for r in rows if r["label"] == label}
        cells = " | ".join(cell(by_budget[b]) if b in by_budget else "" for b in budgets)
        print(f"| {label} | {cells} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="a quick run of a small grid")
    parser.add_argument("--episodes", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--policies", default="cartpole-ppo,cartpole-dqn")
    parser.add_argument("--json", type=Path, default=None, help="also save all results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    episodes = args.episodes or (2 if args.smoke else 10)
    seeds = list(range(args.seeds or (1 if args.smoke else 3)))
    epsilons, bits = (SMOKE_EPSILONS, SMOKE_BITS) if args.smoke else (EPSILONS, BITS)
    probe_size = 64 if args.smoke else 256
    everything = {}
    for name in args.policies.split(","):
        policy = load_policy(f"zoo:{name}")
        t0 = time.perf_counter()
        r = parameter_damage(
            policy,
            attacks=grid(epsilons, bits, pgd_steps=5 if args.smoke else 20),
            episodes=episodes,
            seeds=seeds,
            probe_size=probe_size,
        )
        everything[name] = r
        clean = r["clean"]
        ci = clean["ci95"]
        ci_text = f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else ""
        print(
            f"\n### zoo:{name}: clean {clean['mean_return']:.1f}{ci_text} "
            f"({clean['episodes']} episodes, {len(seeds)} seed(s), "
            f"{time.perf_counter() - t0:.0f} s)\n"
        )
        ball = [x for x in r["results"] if x["norm"] == "linf"]
        flips = [x for x in r["results"] if x["norm"] == "l0"]
        print("Per-tensor linf ball, ε in standard deviations of each tensor's entries:\n")
        table(ball, epsilons, "ε")
        print("\nBit flips in the stored float32 weights, exactly k bits:\n")
        table(flips, [float(k) for k in bits], "k")
    print(
        "\nCells: mean return (held-out probe states whose action changed[, tampered steps "
        "whose output was NaN/inf])."
    )
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1, allow_nan=False))


if __name__ == "__main__":
    main()
