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

from rlsec.evaluate import mean_ci, rollout
from rlsec.policies import from_sb3, load_policy, save_policy

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "src" / "rlsec" / "policies" / "zoo"
PRETRAINED = ROOT / "src" / "rlsec" / "attacks" / "pretrained"
EVAL_EPISODES = 100
EVAL_SEED = 20261125

RECIPES: dict[str, dict[str, Any]] = {
    # Hyperparameters follow the RL Baselines3 Zoo's tuned settings, with smaller networks
    # where the task allows, so that the zoo stays small.
    "cartpole-ppo": {
        "env": "CartPole-v1",
        "algo": "PPO",
        "timesteps": 100_000,
        "n_envs": 8,
        "kwargs": {
            "n_steps": 32,
            "batch_size": 256,
            "gae_lambda": 0.8,
            "gamma": 0.98,
            "n_epochs": 20,
            "ent_coef": 0.0,
            "learning_rate": 1e-3,
            "clip_range": 0.2,
            "policy_kwargs": {"net_arch": [64, 64]},
        },
    },
    "cartpole-dqn": {
        "env": "CartPole-v1",
        "algo": "DQN",
        "timesteps": 100_000,
        "n_envs": 1,
        "kwargs": {
            "learning_rate": 2.3e-3,
            "batch_size": 64,
            "buffer_size": 100_000,
            "learning_starts": 1000,
            "gamma": 0.99,
            "target_update_interval": 10,
            "train_freq": 256,
            "gradient_steps": 128,
            "exploration_fraction": 0.16,
            "exploration_final_eps": 0.04,
            "policy_kwargs": {"net_arch": [256, 256]},
        },
    },
    "acrobot-ppo": {
        "env": "Acrobot-v1",
        "algo": "PPO",
        "timesteps": 200_000,
        "n_envs": 16,
        "kwargs": {
            "n_steps": 256,
            "gae_lambda": 0.94,
            "gamma": 0.99,
            "n_epochs": 4,
            "ent_coef": 0.0,
            "policy_kwargs": {"net_arch": [64, 64]},
        },
    },
    "pendulum-sac": {
        "env": "Pendulum-v1",
        "algo": "SAC",
        "timesteps": 20_000,
        "n_envs": 1,
        "kwargs": {"learning_rate": 1e-3, "policy_kwargs": {"net_arch": [64, 64]}},
    },
    "frozenlake-ppo": {
        "env": "FrozenLake-v1",
        "algo": "PPO",
        "timesteps": 100_000,
        "n_envs": 8,
        "eval_episodes": 200,  # slippery: a 10-episode evaluation is too noisy to pick from
        "kwargs": {
            "n_steps": 256,
            "batch_size": 256,
            "gamma": 0.99,
            "n_epochs": 10,
            "ent_coef": 0.01,
            "learning_rate": 1e-3,
            "policy_kwargs": {"net_arch": [64, 64]},
        },
    },
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
    eval_env = gym.make_vec(env_id, num_envs=min(EVAL_EPISODES, 50))
    stats = rollout(policy, eval_env, EVAL_EPISODES, seed=EVAL_SEED, track_observations=True)
    eval_env.close()
    mean, ci = mean_ci(stats.returns)
    clean = {
        "mean": mean,
        "ci95": ci,
        "episodes": EVAL_EPISODES,
        "seed": EVAL_SEED,
        "mean_length": float(stats.lengths.mean()),
    }
    obs_stats = None
    if stats.obs_moments is not None:
        m = stats.obs_moments
        obs_stats = {
            "mean": m.mean.tolist(),
            "std": m.std.tolist(),
            "observations": m.n,
            "episodes": EVAL_EPISODES,
            "seed": EVAL_SEED,
        }
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
    save_policy(
        policy,
        ZOO / name,
        env_id=env_id,
        algo=recipe["algo"].lower(),
        provenance=provenance,
        clean_return=clean,
        observation_stats=obs_stats,
        overwrite=True,
    )
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
