#!/usr/bin/env python
"""Does robust training work? Vanilla vs defended policies under the red-team suite.

For each task, defense, budget ε and seed: train with `rlsec.defenses.train_policy`, then
attack the result with the strong observation attacks at the same budget ε (linf, raw
observation units, the unit the defenses trained in) and record the clean return and the
worst case over attacks. Reports the median over seeds (the protocol of SA-PPO, SA-DQN and
ATLA: the strongest-attack return of the median agent) and checks the goals: worst case >= 2x
vanilla's, clean return within 10% of vanilla's.

Runs are kept in --work and reused only when everything that changes a number is the same: a
run's directory is named by a digest of its full training configuration (the validated
`TrainConfig`, recipe hyperparameters included), the versions of rlsec, Stable-Baselines3,
Gymnasium, PyTorch and NumPy and a digest of rlsec's source files; a red-team report by that
digest plus the attacks, ε, unit, episodes and seeds. `key.json` beside each holds what was
hashed. Rows whose training or red team was reused from --work say so (`"reused"` in the JSON
lines, the "reused" column of the table).

Defense names are `TrainConfig.defense` values, plus one control:
`none-robust-select` is vanilla training with DQN's robust checkpoint selection (the defense
`adv` with `adv_prob=0`: no observation the learner sees is perturbed, while checkpoints are
scored, from the same steps on, by the lower of the clean and the MAD-attacked validation
return at ε, exactly as the `adv` row's are). It separates what training does from what
selection does.

Usage: python benchmarks/robust_training.py [--tasks cartpole-ppo,cartpole-dqn,pendulum-sac]
       [--defenses none,sa-reg,atla,adv] [--eps 0.02,0.05] [--seeds 3] [--first-seed 0]
       [--episodes 20] [--work DIR] [--smoke]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from rlsec.defenses import TrainConfig, train_policy
from rlsec.redteam import redteam

#: task -> (algo, env id, default ε in raw units, training steps)
TASKS: dict[str, tuple[str, str, float, int | None]] = {
    "cartpole-ppo": ("ppo", "CartPole-v1", 0.05, None),
    "cartpole-dqn": ("dqn", "CartPole-v1", 0.05, None),
    "pendulum-sac": ("sac", "Pendulum-v1", 0.1, None),
}
ATTACKS = ["uniform-obs-v1", "pgd-obs-v1", "mad-obs-v1", "critic-obs-v1", "sa-rl-obs-v1"]
#: ATLA's adversary needs more steps than SAC's short Pendulum run gives it (default: as many
#: as the agent's)
ADVERSARY_STEPS = {"pendulum-sac": 60_000}
#: benchmark defense names that are not `TrainConfig.defense` values: name -> (the defense
#: trained, settings)
CONTROLS: dict[str, tuple[str, dict[str, Any]]] = {
    "none-robust-select": ("adv", {"adv_prob": 0.0}),
}
#: per (task, defense): settings other than the defaults. DQN's adversarial training uses MAD
#: (on vanilla DQN the strongest attack of the suite) and keeps the checkpoint that validates
#: best under it (validation seeds disjoint from the evaluation's); critic and the learned
#: SA-RL adversary stay unseen in training. Its control selects the same way.
OPTIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("cartpole-dqn", "adv"): {"attack": "mad-obs-v1", "select": "robust"},
    ("cartpole-dqn", "none-robust-select"): {"attack": "mad-obs-v1", "select": "robust"},
}


def train_config(task: str, defense: str, eps: float, seed: int, smoke: bool) -> TrainConfig:
    """The training configuration of one row (validated: recipe settings filled in)."""
    algo, env_id, _, steps = TASKS[task]
    trained, control = CONTROLS.get(defense, (defense, {}))
    return TrainConfig(
        algo=algo,
        env_id=env_id,
        defense=trained,
        eps=0.0 if defense == "none" else eps,
        steps=2048 if smoke else steps,
        seed=seed,
        eval_episodes=5 if smoke else 50,
        **{**control, **OPTIONS.get((task, defense), {})},
        adversary_steps=(ADVERSARY_STEPS.get(task) if trained == "atla" and not smoke else None),
    ).validated()


def code_versions() -> dict[str, str]:
    """Versions of everything that computes a number here, and a digest of rlsec's source."""
    import gymnasium
    import numpy
    import stable_baselines3
    import torch

    import rlsec

    root = Path(rlsec.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            h.update(path.relative_to(root).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return {
        "rlsec": rlsec.__version__,
        "rlsec_source_sha256": h.hexdigest(),
        "stable_baselines3": stable_baselines3.__version__,
        "gymnasium": gymnasium.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }


def digest(material: dict[str, Any]) -> str:
    """A short, stable digest of JSON-able key material."""
    text = json.dumps(material, sort_keys=True, allow_nan=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_key(cfg: TrainConfig, versions: dict[str, str]) -> dict[str, Any]:
    return {"config": cfg.to_dict(), "versions": versions}


def redteam_key(train_digest: str, attacks: list[str], eps: float, episodes: int) -> dict[str, Any]:
    return {
        "training": train_digest,
        "attacks": list(attacks),
        "epsilons": [eps],
        "eps_unit": "raw",
        "alphas": [],
        "episodes": episodes,
        "seeds": [0],
    }


def _cached(directory: Path, done: Path, key: dict[str, Any]) -> bool:
    """Whether ``directory`` holds a finished run made from exactly ``key``; a directory
    without a finished run or with another key is removed."""
    key_path = directory / "key.json"
    if done.is_file() and key_path.is_file() and json.loads(key_path.read_text()) == key:
        return True
    if directory.exists():
        shutil.rmtree(directory)
    return False


def run_one(
    task: str,
    defense: str,
    seed: int,
    work: Path,
    episodes: int,
    smoke: bool,
    attacks: list[str] | None = None,
    eps: float | None = None,
    versions: dict[str, str] | None = None,
) -> dict[str, Any]:
    _, env_id, default_eps, _ = TASKS[task]
    eps = default_eps if eps is None else eps
    attacks = attacks or ATTACKS
    cfg = train_config(task, defense, eps, seed, smoke)
    versions = versions or code_versions()
    tkey = train_key(cfg, versions)
    tdigest = digest(tkey)
    out = work / task / f"{defense}-seed{seed}-{tdigest}"
    summary = out / "run" / "training.json"
    reused_training = _cached(out, summary, tkey)
    if not reused_training:
        out.mkdir(parents=True)
        train_policy(cfg, out / "run")
        (out / "key.json").write_text(json.dumps(tkey, indent=2, sort_keys=True) + "\n")
    trained = json.loads(summary.read_text())
    rkey = redteam_key(tdigest, attacks, eps, episodes)
    report = out / f"redteam-{digest(rkey)}"
    results_path = report / "report" / "results.json"
    reused_redteam = _cached(report, results_path, rkey)
    if not reused_redteam:
        report.mkdir(parents=True)
        redteam(
            str(out / "run" / "policy"),
            env_id=env_id,
            attacks=attacks,
            epsilons=[eps],
            eps_unit="raw",
            alphas=[],
            episodes=episodes,
            seeds=[0],
            out=report / "report",
        )
        (report / "key.json").write_text(json.dumps(rkey, indent=2, sort_keys=True) + "\n")
    results = json.loads(results_path.read_text())
    worst = min(r["mean_return"] for r in results["results"])
    per_attack = {r["attack"]: r["mean_return"] for r in results["results"]}
    return {
        "task": task,
        "defense": defense,
        "seed": seed,
        "eps": eps,
        "clean": results["clean"]["mean_return"],
        "worst": worst,
        "per_attack": per_attack,
        "train_seconds": trained["seconds"],
        "clean_return_check": trained.get("clean_return_check"),
        "run": str(out),
        "reused": {"training": reused_training, "redteam": reused_redteam},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--defenses", default="none,sa-reg,atla,adv")
    parser.add_argument(
        "--eps", default=None, help="budgets, raw units, comma-separated (default: per task)"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path("robust-training-runs"))
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--smoke", action="store_true", help="tiny budgets, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.episodes = 1, 3
    tasks = args.tasks.split(",")
    defenses = args.defenses.split(",")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        parser.error(f"unknown tasks {unknown}; expected some of {list(TASKS)}")
    budgets: list[float] | None = None
    if args.eps is not None:
        budgets = [float(e) for e in args.eps.split(",")]
    versions = code_versions()
    t0 = time.perf_counter()
    rows = []
    for task in tasks:
        for eps in budgets or [TASKS[task][2]]:
            for defense in defenses:
                for seed in range(args.first_seed, args.first_seed + args.seeds):
                    row = run_one(
                        task,
                        defense,
                        seed,
                        args.work,
                        args.episodes,
                        args.smoke,
                        args.attacks.split(","),
                        eps=eps,
                        versions=versions,
                    )
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print()
    print(table(rows))
    print(f"\n({time.perf_counter() - t0:.0f} s)")


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of medians over seeds, one line per (task, ε, defense); ratios are
    to the vanilla (``none``) row of the same task and ε."""
    lines = [
        "| task | defense | ε (raw) | seeds | median clean | median worst case | "
        "worst / vanilla | clean / vanilla | train s (median) | reused (training, red team) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["eps"], r["defense"]), []).append(r)
    for (task, eps, defense), sel in groups.items():
        base = groups.get((task, eps, "none"), [])
        v_clean = statistics.median(r["clean"] for r in base) if base else None
        v_worst = statistics.median(r["worst"] for r in base) if base else None
        clean = statistics.median(r["clean"] for r in sel)
        worst = statistics.median(r["worst"] for r in sel)
        secs = statistics.median(r["train_seconds"] for r in sel)
        n_train = sum(r["reused"]["training"] for r in sel)
        n_red = sum(r["reused"]["redteam"] for r in sel)
        lines.append(
            f"| {task} | {defense} | {eps} | {len(sel)} | {clean:.1f} | {worst:.1f} | "
            f"{_ratio(worst, v_worst)} | {_ratio(clean, v_clean)} | {secs:.0f} | "
            f"{n_train}/{len(sel)}, {n_red}/{len(sel)} |"
        )
    return "\n".join(lines)


def _ratio(x: float, base: float | None) -> str:
    """Ratio for positive returns; for negative (cost-like) returns, base / x, so that
    'higher is better' holds for both."""
    if base is None or base == 0 or (base < 0 and x == 0):
        return "—"
    return f"{(x / base) if base > 0 else (base / x):.2f}"


if __name__ == "__main__":
    main()
