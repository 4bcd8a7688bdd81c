#!/usr/bin/env python
"""Training-data poisoning: targeted vs random crafted transitions, online and offline.

**Online (replay buffer).** DQN learns CartPole-v1 with the RL Zoo recipe
(`rlsec.defenses.train_policy`, --steps environment steps) while a `ReplayPoisoner` writes
crafted copies of genuine transitions into its replay buffer, a fraction --fractions of the
genuine ones, in `replace` mode (overwriting genuine entries in place: the integrity
monitor's buffer accounting cannot see it, its buffer seals can). The monitor runs with the
shipped thresholds without stopping training, so the attack's damage is measured, and its
findings are counted. Two extra runs under the default monitor, in `direct` and `replace`
mode, show it stopping each attack.

**Offline (dataset).** --dataset-steps transitions are collected from zoo:cartpole-dqn with 30%
uniformly random actions; `fitted_q` (offline double DQN with a conservative penalty) learns
from the clean or the poisoned dataset (`direct` mode: crafted copies added).

Attacks, each with the same per-transition budget ε = 2 (raw reward units: a CartPole reward
of 1 can be flipped to -1) and the same fraction of crafted to genuine transitions:

* flip: random copies with the reward sign flipped (`flip-data-v1`);
* noise: random copies, reward + U[-2, 2], observations + U[-0.05, 0.05] per feature
  (`noise-data-v1`);
* noise+relabel: noise copies that also take the other action (the random counterpart of
  target+relabel: the same capability, no target);
* target: copies where the target action (0, push left) earns r + ε and the other r - ε
  (`target-action-data-v1`, rewards only);
* target+relabel: copies of transitions whose action was not the target, relabelled with the
  target action and r + ε, keeping the genuine next state (`relabel=1, focus=True`).

Reported per setting: mean return of the learned policy over --episodes evaluation episodes
(mean over seeds, and per seed), the fraction of evaluation steps on which it pushes left (the
target action; a balancing policy needs about half), the fraction of steps on which its action
differs from the clean learner's (same seed), and the budget used.

The question: does the targeted attack move the learner toward the target action (and lower
its return) where random corruption with the same budget and capability does not? Evaluation
of the final DQN snapshot is noisy (clean seeds range from failing to 500): compare against the
clean row's spread, not its mean.

Usage: python benchmarks/data_poisoning.py [--smoke] [--seeds 2] [--steps 50000]
       [--fractions 0.1,0.3] [--episodes 50] [--work DIR] [--json FILE] [--first-seed 0]
       [--skip-online] [--skip-offline] [--attacks flip,noise,noise+relabel,target,target+relabel]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlsec.attacks.data import DataAttack, make_data_attack
from rlsec.attacks.offline import collect_dataset, poison_dataset
from rlsec.defenses import TrainConfig, train_policy
from rlsec.defenses.monitors import IntegrityMonitor
from rlsec.defenses.training import shipped_thresholds
from rlsec.errors import IntegrityViolation
from rlsec.evaluate.data import data_damage, fitted_q
from rlsec.policies import load_policy

ENV = "CartPole-v1"
EPS = 2.0
TARGET = 0
ATTACKS: dict[str, tuple[str, dict[str, Any]]] = {
    "flip": ("flip-data-v1", {}),
    "noise": ("noise-data-v1", {"obs_epsilon": 0.05}),
    "noise+relabel": ("noise-data-v1", {"obs_epsilon": 0.05, "relabel": 1.0}),
    "target": ("target-action-data-v1", {"target_action": TARGET}),
    "target+relabel": (
        "target-action-data-v1",
        {"target_action": TARGET, "relabel": 1.0, "focus": True},
    ),
}


def build(name: str, fraction: float, mode: str) -> DataAttack:
    attack_id, params = ATTACKS[name]
    return make_data_attack(attack_id, EPS, fraction=fraction, mode=mode, **params)  # type: ignore[arg-type]


def train(
    out: Path, seed: int, steps: int, smoke: bool, callbacks: list[Any], *, halt: bool = False
) -> dict[str, Any]:
    """Train DQN; the monitor stops training on a high finding only with ``halt``."""
    if not callbacks and (out / "training.json").is_file():  # a clean run kept in --work
        summary = json.loads((out / "training.json").read_text())
        return {"policy": load_policy(out / "policy"), "monitor": summary["monitor"]}
    if out.exists():  # an attacked run is redone: its record lives in memory only
        shutil.rmtree(out)
    result = train_policy(
        TrainConfig(
            algo="dqn",
            env_id=ENV,
            steps=steps,
            seed=seed,
            eval_episodes=5 if smoke else 20,
            select="final",  # the poisoned learner's last policy, as the figures were measured
        ),
        out,
        callbacks=callbacks,
        monitor="default"
        if halt
        else IntegrityMonitor(
            shipped_thresholds("dqn", ENV), halt=None, findings_path=out / "findings.jsonl"
        ),
    )
    summary = json.loads(result.summary.read_text())
    return {"policy": load_policy(result.policy_dir), "monitor": summary["monitor"]}


def online(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        t0 = time.perf_counter()
        clean = train(work / f"clean-{seed}", seed, args.steps, args.smoke, [])
        print(f"online seed {seed}: clean trained ({time.perf_counter() - t0:.0f} s)", flush=True)
        dummy = build("flip", 0.0, "replace")
        base = data_damage(
            clean["policy"],
            clean["policy"],
            ENV,
            dummy,
            episodes=args.episodes,
            seed=1000,
            target_action=TARGET,
        )
        rows.append(_row("online", "clean", 0.0, seed, base, None, clean["monitor"]))
        for fraction in args.fractions:
            for name in args.attacks:
                attack = build(name, fraction, "replace")
                cb = attack.callback(seed=seed)
                t0 = time.perf_counter()
                run = train(work / f"{name}-{fraction}-{seed}", seed, args.steps, args.smoke, [cb])
                row = data_damage(
                    clean["policy"],
                    run["policy"],
                    ENV,
                    attack,
                    record=cb.record,
                    episodes=args.episodes,
                    seed=1000,
                    target_action=TARGET,
                )
                rows.append(_row("online", name, fraction, seed, row, cb.record, run["monitor"]))
                print(
                    f"online seed {seed} {name} {fraction}: return {row['mean_return']:.1f} "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    return rows


def is_caught(args: argparse.Namespace, work: Path, mode: str) -> dict[str, Any]:
    attack = build("target+relabel", args.fractions[0], mode)
    cb = attack.callback(seed=0)
    try:
        train(work / mode, 0, args.steps, args.smoke, [cb], halt=True)
    except IntegrityViolation as exc:
        return {"stopped": True, "message": str(exc), "crafted": cb.record.crafted}
    return {"stopped": False, "crafted": cb.record.crafted}


def offline(args: argparse.Namespace) -> list[dict[str, Any]]:
    expert = load_policy("zoo:cartpole-dqn")
    data = collect_dataset(expert, ENV, args.dataset_steps, seed=0, explore=0.3)
    fit = {"steps": 300 if args.smoke else 5000}
    rows: list[dict[str, Any]] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        clean = fitted_q(data, seed=seed, **fit)
        dummy = build("flip", 0.0, "direct")
        base = data_damage(
            clean, clean, ENV, dummy, episodes=args.episodes, seed=1000, target_action=TARGET
        )
        rows.append(_row("offline", "clean", 0.0, seed, base, None, None))
        for fraction in args.fractions:
            for name in args.attacks:
                attack = build(name, fraction, "direct")
                bad, record = poison_dataset(data, attack, np.random.default_rng([seed, 7]))
                policy = fitted_q(bad, seed=seed, **fit)
                row = data_damage(
                    clean,
                    policy,
                    ENV,
                    attack,
                    record=record,
                    episodes=args.episodes,
                    seed=1000,
                    target_action=TARGET,
                )
                rows.append(_row("offline", name, fraction, seed, row, record, None))
        print(f"offline seed {seed} done", flush=True)
    return rows


def _row(
    setting: str,
    name: str,
    fraction: float,
    seed: int,
    row: dict[str, Any],
    record: Any,
    monitor: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "setting": setting,
        "attack": name,
        "fraction": fraction,
        "seed": seed,
        "mean_return": row["mean_return"],
        "target_rate": row["target_action_rate"],
        "action_change_rate": row["action_change_rate"] if name != "clean" else 0.0,
        "budget": record.summary() if record is not None else None,
        "monitor_findings": None if monitor is None else monitor["findings"],
        "row": row,
    }


def table(rows: list[dict[str, Any]], setting: str) -> None:
    sel = [r for r in rows if r["setting"] == setting]
    keys = list(dict.fromkeys((r["attack"], r["fraction"]) for r in sel))
    online_ = setting == "online"
    head = "| attack | fraction | return (mean over seeds) | per seed | pushes left "
    head += "| changed vs clean "
    head += "| crafted / genuine | monitor findings |" if online_ else "| crafted / genuine |"
    print(head)
    print("|---" * (8 if online_ else 7) + "|")
    for name, fraction in keys:
        rs = [r for r in sel if r["attack"] == name and r["fraction"] == fraction]
        rets = [r["mean_return"] for r in rs]
        left = [r["target_rate"] for r in rs if r["target_rate"] is not None]
        chg = [r["action_change_rate"] for r in rs]
        b = [r["budget"] for r in rs if r["budget"]]
        used = f"{sum(x['crafted'] for x in b)} / {sum(x['genuine'] for x in b)}" if b else "-"
        cells = [
            name,
            f"{fraction:g}",
            f"{statistics.mean(rets):.1f}",
            " ".join(f"{x:.0f}" for x in rets),
            f"{statistics.mean(left):.2f}" if left else "-",
            f"{statistics.mean(chg):.2f}",
            used,
        ]
        if online_:
            cells.append(" ".join(str(r["monitor_findings"]) for r in rs))
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny runs: check the plumbing")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50_000, help="DQN environment steps")
    parser.add_argument("--fractions", default="0.1,0.3")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--dataset-steps", type=int, default=20_000)
    parser.add_argument("--work", type=Path, default=None, help="keep training runs here")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--skip-online", action="store_true")
    parser.add_argument("--skip-offline", action="store_true")
    parser.add_argument("--attacks", default=",".join(ATTACKS), help="a subset of the attacks")
    args = parser.parse_args()
    args.fractions = [float(f) for f in args.fractions.split(",")]
    args.attacks = args.attacks.split(",")
    unknown = sorted(set(args.attacks) - set(ATTACKS))
    if unknown:
        parser.error(f"unknown attacks {unknown}; expected some of {list(ATTACKS)}")
    if args.smoke:
        args.seeds, args.steps, args.episodes = 1, 2_000, 3
        args.dataset_steps, args.fractions = 2_000, args.fractions[:1]
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="rlsec-data-poisoning-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        rows = [] if args.skip_offline else offline(args)
        caught: dict[str, Any] = {}
        if not args.skip_online:
            rows += online(args, work)
            if "target+relabel" in args.attacks:
                caught = {mode: is_caught(args, work, mode) for mode in ("direct", "replace")}
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nε = {EPS} (raw reward units), target action {TARGET}; mode: offline 'direct', "
        "online 'replace'\n"
    )
    if not args.skip_offline:
        print("### Offline: fitted_q on a 30%-exploration dataset of zoo:cartpole-dqn\n")
        table(rows, "offline")
    if not args.skip_online:
        print(f"\n### Online: DQN recipe, {args.steps} steps, replay-buffer poisoning\n")
        table(rows, "online")
        for mode, verdict in caught.items():
            print(f"\n`{mode}` mode under the default monitor: {verdict}")
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    if args.json is not None:
        slim = [{k: v for k, v in r.items() if k != "row"} | {"row": r["row"]} for r in rows]
        args.json.write_text(json.dumps({"rows": slim, "caught": caught}, indent=2, default=str))


if __name__ == "__main__":
    main()
