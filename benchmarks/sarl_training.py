#!/usr/bin/env python
"""How the SA-RL learned adversary's strength grows with its PPO training budget.

Trains the adversary against a zoo policy at one ε (std units, linf) and, after every
``--chunk`` PPO steps, measures the victim's mean return under it over 20 episodes.

Usage: python benchmarks/sarl_training.py [--policy cartpole-ppo] [--eps 0.5]
       [--steps 300000] [--chunk 100000] [--warm-start-eps 1.0]

With ``--warm-start-eps``, the adversary first trains ``--chunk`` steps at that larger budget,
then continues at ``--eps`` (a curriculum).
"""

from __future__ import annotations

import argparse
import io
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from rlsec.attacks import LearnedObservation, make_attack
from rlsec.attacks._ball import Ball
from rlsec.attacks._learned import AdversaryEnv, SARLConfig, adversary_learner
from rlsec.evaluate import rollout
from rlsec.policies import from_sb3, load_policy


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policy", default="cartpole-ppo")
    parser.add_argument("--eps", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=300_000)
    parser.add_argument("--chunk", type=int, default=100_000)
    parser.add_argument("--warm-start-eps", type=float, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    victim = load_policy(f"zoo:{args.policy}")
    env_id = victim.info.env_id
    scale = np.asarray(victim.info.observation_stats["std"])
    space = victim.observation_space
    cfg = SARLConfig()

    def venv(eps: float) -> DummyVecEnv:
        ball = Ball(eps, "linf", scale, space.low, space.high)
        return DummyVecEnv([lambda: AdversaryEnv(env_id, victim, ball)] * cfg.n_envs)

    def evaluate(model: Any) -> float:
        buf = io.BytesIO()
        model.save(buf)
        attack = make_attack(
            "sa-rl-obs-v1", args.eps, unit="std", adversary=from_sb3(buf.getvalue())
        )
        assert isinstance(attack, LearnedObservation)
        attack.start(victim, num_envs=20, rng=np.random.default_rng(0), scale=scale)
        stats = rollout(victim, gym.make_vec(env_id, num_envs=20), 20, seed=123, attack=attack)
        return float(stats.returns.mean())

    t0 = time.perf_counter()
    first = args.warm_start_eps if args.warm_start_eps is not None else args.eps
    model = adversary_learner(venv(first), cfg)
    done = 0
    if args.warm_start_eps is not None:
        model.learn(args.chunk)
        done += args.chunk
        print(f"warm start at ε={first}: {done} steps", flush=True)
        model.set_env(venv(args.eps))
    clean = float(rollout(victim, gym.make_vec(env_id, num_envs=20), 20, seed=123).returns.mean())
    print(f"zoo:{args.policy} clean return {clean:.1f}; SA-RL at ε={args.eps} (std, linf)")
    trained = 0
    while trained < args.steps:
        model.learn(args.chunk, reset_num_timesteps=False)
        trained += args.chunk
        print(
            f"{trained:>8} steps: attacked return {evaluate(model):7.1f} "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
