#!/usr/bin/env python
"""Train rlsec's reference zoo reproducibly and export it to the native format.

Each policy is trained with Stable-Baselines3 from a fixed seed, single-threaded, then
exported through rlsec's own safe SB3 importer (so the zoo also exercises it), evaluated on
100 clean episodes, and written to ``src/rlsec/policies/zoo/<name>/`` with its clean return,
its clean observation statistics (what ``--eps-unit std`` measures ε in) and its provenance.

With ``--adversaries``, it also trains the SA-RL learned adversaries of the CartPole policies
at the default ε grid (std units) and ships them in ``src/rlsec/attacks/pretrained/``, so the
default ``rlsec redteam`` does not have to train them.

Usage:
    python scripts/train_zoo.py [--only NAME ...] [--adversaries] [--adversaries-only]
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import stable_baselines3 as sb3
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy

from rlsec.defenses.training import RECIPES as TRAINING_RECIPES
from rlsec.defenses.training import export_model
from rlsec.policies import from_sb3, load_policy

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "src" / "rlsec" / "policies" / "zoo"
PRETRAINED = ROOT / "src" / "rlsec" / "attacks" / "pretrained"
EVAL_EPISODES = 100
EVAL_SEED = 20261125

#: zoo name -> the library's recipe (rlsec.defenses.training.RECIPES: the RL Baselines3 Zoo's
#: tuned settings, smaller networks where the task allows) plus zoo-only evaluation settings
ZOO_TASKS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "cartpole-ppo": ("ppo", "CartPole-v1", {}),
    "cartpole-dqn": ("dqn", "CartPole-v1", {}),
    "acrobot-ppo": ("ppo", "Acrobot-v1", {}),
    "pendulum-sac": ("sac", "Pendulum-v1", {}),
    # slippery: a 10-episode evaluation is too noisy to pick the best checkpoint from
    "frozenlake-ppo": ("ppo", "FrozenLake-v1", {"eval_episodes": 200}),
    "plant-ppo": ("ppo", "rlsec/SlipperyPlant-v0", {"eval_episodes": 200}),
}
RECIPES: dict[str, dict[str, Any]] = {
    name: {**TRAINING_RECIPES[(algo, env)], "env": env, "algo": algo.upper(), **extra}
    for name, (algo, env, extra) in ZOO_TASKS.items()
}


class KeepBest(BaseCallback):
    """Evaluate every ``every`` steps on a fixed-seed env; keep the best weights seen.

    Value-based learners such as DQN oscillate on CartPole; the usual remedy (the RL Zoo's
    EvalCallback) is to keep the best evaluated checkpoint rather than the last one.
    """

    def __init__(self, env_id: str, every: int, episodes: int = 10) -> None:
        super().__init__()
        self.env = gym.make(env_id)
        self.every, self.episodes = every, episodes
        self.best = -float("inf")
        self.best_state: dict[str, torch.Tensor] | None = None
        self.next_eval = every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_eval:
            self.next_eval += self.every
            mean, _ = evaluate_policy(
                self.model, self.env, n_eval_episodes=self.episodes, deterministic=True
            )
            if mean >= self.best:
                self.best = float(mean)
                self.best_state = copy.deepcopy(self.model.policy.state_dict())
        return True


def train(name: str, recipe: dict[str, Any], seed: int = 0) -> None:
    t0 = time.perf_counter()
    env_id = recipe["env"]
    algo = getattr(sb3, recipe["algo"])
    venv = sb3.common.env_util.make_vec_env(env_id, n_envs=recipe["n_envs"], seed=seed)
    model = algo("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **recipe["kwargs"])
    keep = KeepBest(
        env_id,
        every=recipe.get("eval_every", recipe["timesteps"] // 20),
        episodes=recipe.get("eval_episodes", 10),
    )
    keep.env.reset(seed=seed + 1)
    model.learn(total_timesteps=recipe["timesteps"], callback=keep)
    if keep.best_state is not None:
        model.policy.load_state_dict(keep.best_state)
    buf = io.BytesIO()
    model.save(buf)
    policy = from_sb3(buf.getvalue(), env_id=env_id, source=f"zoo:{name}")
    provenance = {
        "trainer": f"stable-baselines3 {sb3.__version__} {recipe['algo']}",
        "script": "scripts/train_zoo.py",
        "env_id": env_id,
        "gymnasium": gym.__version__,
        "torch": torch.__version__.split("+")[0],
        "python": platform.python_version(),
        "seed": seed,
        "timesteps": recipe["timesteps"],
        "n_envs": recipe["n_envs"],
        "hyperparameters": recipe["kwargs"],
        "checkpoint": f"best of evaluations every {keep.every} steps ({keep.episodes} "
        f"episodes each; best mean {keep.best:.2f})",
    }
    saved = export_model(
        policy,
        env_id,
        ZOO / name,
        algo=recipe["algo"].lower(),
        provenance=provenance,
        episodes=EVAL_EPISODES,
        seed=EVAL_SEED,
        overwrite=True,
    )
    clean = saved.info.clean_return or {}
    mean, ci = clean.get("mean", float("nan")), clean.get("ci95")
    print(
        f"{name}: clean return {mean:.2f} ± {((ci[1] - mean) if ci else 0):.2f} "
        f"({time.perf_counter() - t0:.0f}s)",
        flush=True,
    )


def train_adversaries(names: list[str]) -> None:
    from rlsec.attacks._ball import Ball
    from rlsec.attacks._learned import SARLConfig, adversary_key, load_or_train_adversary
    from rlsec.evaluate import DEFAULT_EPSILONS

    PRETRAINED.mkdir(parents=True, exist_ok=True)
    keep = set()
    for name in names:
        policy = load_policy(f"zoo:{name}")
        space = policy.observation_space
        scale = np.asarray(policy.info.observation_stats["std"])
        for eps in DEFAULT_EPSILONS:
            t0 = time.perf_counter()
            ball = Ball(eps, "linf", scale, space.low, space.high)
            config = SARLConfig()
            key = adversary_key(policy.info.sha256, policy.info.env_id, eps, "linf", scale, config)
            keep.add(key)
            _, origin = load_or_train_adversary(
                policy, policy.info.sha256, policy.info.env_id, ball, config, directory=PRETRAINED
            )
            print(f"{name} sa-rl ε={eps}: {origin} ({time.perf_counter() - t0:.0f}s)", flush=True)
    for old in PRETRAINED.iterdir():
        if old.is_dir() and old.name not in keep:
            print(f"stale adversary {old.name} (victim or grid changed): remove it by hand")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", choices=sorted(RECIPES), default=None)
    parser.add_argument("--adversaries", action="store_true")
    parser.add_argument("--adversaries-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.adversaries_only:
        for name in args.only or sorted(RECIPES):
            train(name, RECIPES[name])
    if args.adversaries or args.adversaries_only:
        train_adversaries(["cartpole-ppo", "cartpole-dqn"])
    summary = {
        n: json.loads((ZOO / n / "spec.json").read_text())["clean_return"]
        for n in sorted(RECIPES)
        if (ZOO / n / "spec.json").exists()
    }
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
