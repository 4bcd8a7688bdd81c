#!/usr/bin/env python
"""Damage of dynamics attacks on the reference policies: mean return per budget.

For zoo:cartpole-ppo, zoo:cartpole-dqn and zoo:pendulum-sac, plays the policy in a changed
world (rlsec.evaluate.dynamics.dynamics_damage):

* shift-dynamics-v1: every physical parameter rlsec knows for the environment moved up and
  down by a relative ε (0.2 = 20% of its nominal value), one at a time, and all of them at
  once by a uniform draw in [-ε, ε] each per episode;
* noise-dynamics-v1: a uniformly random disturbance on every step, at most ε times the
  environment's own actuation (CartPole: an extra horizontal force of up to ε·force_mag on
  the cart; Pendulum: an extra torque of up to ε·max_torque);
* rarl-dynamics-v1: the learned disturbance adversary of RARL (Pinto et al. 2017) in the same
  bounds, trained with PPO against the fixed policy for --rarl-steps steps (cached under
  RLSEC_HOME/cache/rarl).

Prints markdown tables: the mean return over all episodes of all seeds, ± the half-width of
its 95% t-interval. Every attack plays the same episodes (same reset seeds) as the clean run.

Usage: python benchmarks/dynamics.py [--smoke] [--episodes 20] [--seeds 2]
       [--policies cartpole-ppo,cartpole-dqn,pendulum-sac] [--rarl-steps 50000] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rlsec.attacks.dynamics import DynamicsAttack, make_dynamics_attack
from rlsec.attacks.physics import ENV_DYNAMICS
from rlsec.evaluate.dynamics import dynamics_damage
from rlsec.policies import load_policy

SHIFT_EPSILONS = (0.2, 0.5, 0.8)
DISTURBANCE_EPSILONS = (0.2, 0.5, 1.0)
SMOKE_EPSILONS = (0.5,)


def grid(
    env_id: str,
    shift_eps: Sequence[float],
    disturbance_eps: Sequence[float],
    rarl_steps: int,
    smoke: bool,
) -> list[DynamicsAttack]:
    params = [p.name for p in ENV_DYNAMICS[env_id].parameters]
    if smoke:
        params = params[:1]
    attacks: list[DynamicsAttack] = []
    for name in params:
        for way in ("up", "down"):
            attacks += [
                make_dynamics_attack("shift-dynamics-v1", e, parameters={name: way})
                for e in shift_eps
            ]
    attacks += [make_dynamics_attack("shift-dynamics-v1", e) for e in shift_eps]
    attacks += [make_dynamics_attack("noise-dynamics-v1", e) for e in disturbance_eps]
    attacks += [
        make_dynamics_attack("rarl-dynamics-v1", e, timesteps=rarl_steps) for e in disturbance_eps
    ]
    return attacks


def cell(row: dict[str, Any]) -> str:
    ci = row["ci95"]
    half = f" ±{(ci[1] - ci[0]) / 2:.0f}" if ci else ""
    return f"{row['mean_return']:.0f}{half}"


def table(rows: list[dict[str, Any]], budgets: Sequence[float]) -> None:
    labels = list(dict.fromkeys(r["label"] for r in rows))
    print("| attack | " + " | ".join(f"ε={b:g}" for b in budgets) + " |")
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
    parser.add_argument("--policies", default="cartpole-ppo,cartpole-dqn,pendulum-sac")
    parser.add_argument("--rarl-steps", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also save all results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    episodes = args.episodes or (2 if args.smoke else 20)
    seeds = list(range(args.seeds or (1 if args.smoke else 2)))
    rarl_steps = args.rarl_steps or (2048 if args.smoke else 50_000)
    shift_eps = SMOKE_EPSILONS if args.smoke else SHIFT_EPSILONS
    disturbance_eps = SMOKE_EPSILONS if args.smoke else DISTURBANCE_EPSILONS
    everything = {}
    for name in args.policies.split(","):
        policy = load_policy(f"zoo:{name}")
        env_id = policy.info.env_id
        assert env_id is not None
        t0 = time.perf_counter()
        last = [""]

        def progress(label: str, fraction: float, last: list[str] = last) -> None:
            if label != last[0]:
                last[0] = label
                print(f"  {label}", file=sys.stderr, flush=True)

        r = dynamics_damage(
            policy,
            env_id,
            grid(env_id, shift_eps, disturbance_eps, rarl_steps, args.smoke),
            episodes=episodes,
            seeds=seeds,
            progress=progress,
        )
        everything[name] = r
        clean = r["clean"]
        rarl_seconds = [x["seconds"] for x in r["results"] if x["attack"] == "rarl-dynamics-v1"]
        print(
            f"\n### zoo:{name} on {env_id}: clean {cell(clean)} "
            f"({clean['episodes']} episodes, {len(seeds)} seed(s), "
            f"{time.perf_counter() - t0:.0f} s; RARL adversaries {rarl_steps} PPO steps, "
            f"{sum(rarl_seconds):.0f} s with their evaluations)\n"
        )
        print("Parameter shifts, ε a relative change of each parameter:\n")
        table([x for x in r["results"] if x["attack"] == "shift-dynamics-v1"], shift_eps)
        print("\nDisturbances on every step, ε a fraction of the environment's actuation:\n")
        table([x for x in r["results"] if x["attack"] != "shift-dynamics-v1"], disturbance_eps)
    print("\nCells: mean return ± half-width of its 95% t-interval.")
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1, allow_nan=False))


if __name__ == "__main__":
    main()
