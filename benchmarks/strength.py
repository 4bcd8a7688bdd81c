#!/usr/bin/env python
"""Attack strength on the reference CartPole policies: ε50 per attack and mean returns.

Runs every attack on zoo:cartpole-ppo and zoo:cartpole-dqn over the default ε grid (std units)
and prints markdown tables (the README's evidence). The question it answers: do the strong
attacks (learned adversary, critic, MAD) reach ε50 at a smaller budget than uniform noise, and
at least one at a budget no larger than PGD's?

Usage: python benchmarks/strength.py [--episodes 20] [--seeds 1] [--policies cartpole-ppo,...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rlsec import redteam
from rlsec.evaluate import DEFAULT_EPSILONS

STRONG = ("sa-rl-obs-v1", "critic-obs-v1", "mad-obs-v1")


def fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:g}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--policies", default="cartpole-ppo,cartpole-dqn")
    parser.add_argument("--json", type=Path, default=None, help="also save all results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    everything = {}
    for name in args.policies.split(","):
        r = redteam(f"zoo:{name}", episodes=args.episodes, seeds=list(range(args.seeds)))
        everything[name] = r
        ids = list(
            dict.fromkeys(x["attack"] for x in r["results"] if x["surface"] == "observation")
        )
        print(
            f"\n### zoo:{name}: clean {r['clean']['mean_return']:.1f}, "
            f"ε50 threshold {r['eps50_threshold']:.1f} ({r['clean']['episodes']} episodes)\n"
        )
        print("| attack | " + " | ".join(f"ε={e:g}" for e in DEFAULT_EPSILONS) + " | ε50 |")
        print("|---" * (len(DEFAULT_EPSILONS) + 2) + "|")
        for a in ids:
            rows = {x["epsilon"]: x["mean_return"] for x in r["results"] if x["attack"] == a}
            cells = " | ".join(f"{rows[e]:.0f}" if e in rows else "" for e in DEFAULT_EPSILONS)
            print(f"| {a} | {cells} | {fmt(r['eps50'][a])} |")
        e50 = r["eps50"]
        noise, pgd = e50.get("uniform-obs-v1"), e50.get("pgd-obs-v1")
        inf = float("inf")
        beats_noise = [a for a in STRONG if (e50.get(a) or inf) < (noise or inf)]
        le_pgd = [a for a in STRONG if e50.get(a) is not None and e50[a] <= (pgd or inf)]
        print(f"\nstrong attacks with ε50 below uniform noise's ({fmt(noise)}): {beats_noise}")
        print(f"strong attacks with ε50 at or below PGD's ({fmt(pgd)}): {le_pgd}")
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
