#!/usr/bin/env python
"""Attacked env-steps per second of PGD-10 (linf) on zoo:cartpole-ppo with 64 envs.

Compares, in the same run:
  (a) the same attack done per step on a single env in a plain Python loop (goal: the batched
      campaign is at least 20x faster per env-step). Both do equal work per step: PGD's
      clean pass, its 10 gradient passes and the evaluation of its last iterate; the executed
      action is read off the best iterate's output (a `policy.act` pass only where the attack
      reports no action; the count of such passes is printed for both);
  (b) the bare cost of the same number of batched forward+backward passes with no env (goal:
      the campaign takes at most 1.5x that time).

Each measurement is repeated (interleaved) and the fastest repetition is kept, as timeit
does: on a shared machine the minimum is the least disturbed estimate of the cost.

Usage: python benchmarks/attack_throughput.py [--episodes 64] [--single-steps 2000]
       [--repeats 3] [--smoke]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

from rlsec.attacks import make_attack
from rlsec.evaluate import rollout
from rlsec.policies import load_policy

EPS = 0.1  # std units; the policy survives all 500 steps, so all 64 rows stay active
STEPS = 10


def campaign(policy, episodes: int, num_envs: int) -> tuple[float, int, int]:
    """Seconds, attacked env-steps and batched PGD iterations of the batched campaign."""
    venv = gym.make_vec("CartPole-v1", num_envs=num_envs)
    attack = make_attack("pgd-obs-v1", EPS, unit="std", steps=STEPS)
    scale = np.asarray(policy.info.observation_stats["std"])
    attack.start(policy, num_envs=num_envs, rng=np.random.default_rng(0), scale=scale)
    batches = 0

    def count(_steps: int, _done: int) -> None:
        nonlocal batches
        batches += 1

    t0 = time.perf_counter()
    stats = rollout(policy, venv, episodes, seed=0, attack=attack, on_step=count)
    seconds = time.perf_counter() - t0
    venv.close()
    return seconds, int(stats.lengths.sum()), batches * STEPS


def single_env_loop(policy, steps: int) -> float:
    """Seconds for ``steps`` attacked steps, one env, one observation at a time."""
    env = gym.make("CartPole-v1")
    attack = make_attack("pgd-obs-v1", EPS, unit="std", steps=STEPS)
    scale = np.asarray(policy.info.observation_stats["std"])
    attack.start(policy, num_envs=1, rng=np.random.default_rng(0), scale=scale)
    obs, _ = env.reset(seed=0)
    t0 = time.perf_counter()
    for _ in range(steps):
        x = attack.perturb(obs[None])
        # as the campaign's rollout does: the action PGD reports for the point it returns (its
        # best iterate), a forward pass only when it reports none
        reported = attack.adversarial_actions
        action = int((policy.act(x) if reported is None else reported)[0])
        obs, _, term, trunc, _ = env.step(action)
        if term or trunc:
            obs, _ = env.reset()
            attack.reset(np.zeros(1, dtype=np.int64))
    return time.perf_counter() - t0


class CountActs:
    """Counts the rows of ``policy.act`` passes made while installed (outside the attack's own
    gradient passes, which call the network directly)."""

    def __init__(self, policy) -> None:
        self.policy, self.rows = policy, 0
        self._act = policy.act

    def __enter__(self) -> CountActs:
        def act(x):
            self.rows += len(x)
            return self._act(x)

        self.policy.act = act
        return self

    def __exit__(self, *exc: object) -> None:
        del self.policy.act


def bare_passes(policy, passes: int, batch: int) -> float:
    """Seconds for ``passes`` forward+backward passes of the actor on a (batch, 4) input."""
    module = policy.torch_module()
    x = torch.randn(batch, 4)
    label = torch.zeros(batch, dtype=torch.long)
    t0 = time.perf_counter()
    for _ in range(passes):
        u = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(module(u), label)
        (_g,) = torch.autograd.grad(loss, u)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--single-steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.episodes, args.num_envs, args.single_steps, args.repeats = 8, 8, 100, 1
    torch.set_num_threads(1)
    policy = load_policy("zoo:cartpole-ppo")
    bare_passes(policy, 50, args.num_envs)  # warm-up
    runs, singles, bares = [], [], []
    with CountActs(policy) as c_campaign:
        counted_steps = campaign(policy, args.episodes, args.num_envs)[1]
    with CountActs(policy) as c_single:
        single_env_loop(policy, args.single_steps)
    for _ in range(args.repeats):
        runs.append(campaign(policy, args.episodes, args.num_envs))
        singles.append(single_env_loop(policy, args.single_steps))
        bares.append(bare_passes(policy, runs[-1][2], args.num_envs))
    t_campaign, env_steps, passes = min(runs)
    t_single, t_bare = min(singles), min(bares)
    sps_campaign = env_steps / t_campaign
    sps_single = args.single_steps / t_single
    print(
        f"campaign: {env_steps} attacked env-steps in {t_campaign:.2f} s "
        f"= {sps_campaign:,.0f} steps/s ({args.num_envs} envs, PGD-{STEPS} linf, ε={EPS} std)"
    )
    print(
        f"single-env loop: {args.single_steps} steps in {t_single:.2f} s "
        f"= {sps_single:,.0f} steps/s"
    )
    print(f"bare batched forward+backward: {passes} passes in {t_bare:.2f} s")
    print(
        "policy.act rows per attacked step, outside the attack (a counted, untimed run of "
        f"each): campaign {c_campaign.rows / counted_steps:.3f}, "
        f"single-env loop {c_single.rows / args.single_steps:.3f}"
    )
    print(f"(fastest of {args.repeats} interleaved repetitions each)")
    if args.smoke:
        print("smoke sizes (8 envs, 8 episodes): the ratios below are not comparable to the goals")
    print(f"ratio (a) campaign / single-env speed: {sps_campaign / sps_single:.1f}x (goal >= 20x)")
    print(f"ratio (b) campaign time / bare passes time: {t_campaign / t_bare:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()
