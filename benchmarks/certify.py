#!/usr/bin/env python
"""Certification throughput of CROWN on zoo:cartpole-ppo, IBP as the baseline, and radii.

States come from clean rollouts of the policy on CartPole-v1. Budgets are linf, in units of
the per-feature standard deviations recorded in the policy's spec (observation_stats.std).

Measures, in the same run:
  (a) states/s of ``certify`` (is the action provably unchanged in the ε-box?) with CROWN and
      with IBP, and the ratio (goal: CROWN certifies 10,000 states in under 2 s);
  (b) the share of states each method certifies at ε, next to the share PGD-10 fails to flip
      (certified states must be a subset of those: a soundness check on real states);
  (c) the mean width of the logit bounds at ε for both methods (tightness);
  (d) the distribution of certified radii (bisection, in std units) for both methods.

Each timing is repeated (interleaved) and the fastest repetition is kept, as timeit does.

Usage: python benchmarks/certify.py [--states 10000] [--eps 0.1] [--radius-states 2000]
       [--repeats 3] [--threads 1] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch

from rlsec.attacks import make_attack
from rlsec.policies import load_policy
from rlsec.verify.bounds import certified_radius, certify, output_bounds

POLICY = "zoo:cartpole-ppo"
ENV = "CartPole-v1"


def clean_states(policy, n: int, num_envs: int, seed: int) -> np.ndarray:
    """``n`` observations visited by the policy, from ``num_envs`` parallel episodes."""
    venv = gym.make_vec(ENV, num_envs=num_envs)
    obs, _ = venv.reset(seed=seed)
    seen = []
    while sum(len(o) for o in seen) < n:
        seen.append(obs)
        obs, *_ = venv.step(policy.act(obs))
    venv.close()
    return np.concatenate(seen)[:n].astype(np.float32)


def timed(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def pgd_unflipped(policy, states: np.ndarray, eps: float, std: np.ndarray) -> np.ndarray:
    """Whether PGD-10 (linf, ε std units) leaves each state's action unchanged."""
    attack = make_attack("pgd-obs-v1", eps, unit="std", steps=10)
    attack.start(policy, num_envs=len(states), rng=np.random.default_rng(0), scale=std)
    out: np.ndarray = policy.act(attack.perturb(states)) == policy.act(states)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--states", type=int, default=10_000)
    parser.add_argument("--eps", type=float, default=0.1, help="linf budget in std units")
    parser.add_argument("--radius-states", type=int, default=2_000)
    parser.add_argument("--eps-max", type=float, default=1.0, help="radius search cap (std)")
    parser.add_argument("--tol", type=float, default=0.01, help="radius precision (std)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.states, args.radius_states, args.repeats = 500, 100, 1
    torch.set_num_threads(args.threads)
    policy = load_policy(POLICY)
    std = np.asarray(policy.info.observation_stats["std"])
    states = clean_states(policy, args.states, num_envs=16, seed=args.seed)
    eps = args.eps * std
    print(json.dumps({"config": vars(args), "policy": POLICY, "eps_unit": "std"}))
    certify(policy, states[:64], eps)  # warm-up

    times: dict[str, float] = {"crown": float("inf"), "ibp": float("inf")}
    certified: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):  # interleaved
        for method in ("crown", "ibp"):
            t, ok = timed(lambda m=method: certify(policy, states, eps, method=m), 1)
            times[method] = min(times[method], t)
            certified[method] = ok
    unflipped = pgd_unflipped(policy, states, args.eps, std)
    sound = all(not (ok & ~unflipped).any() for ok in certified.values())

    n = len(states)
    print(f"\n### Certification at ε = {args.eps} std, {n} clean states of {ENV}\n")
    print("| method | time (s) | states/s | certified | PGD-10 leaves unchanged |")
    print("|---|---:|---:|---:|---:|")
    for method in ("crown", "ibp"):
        print(
            f"| {method.upper()} | {times[method]:.3f} | {n / times[method]:,.0f} | "
            f"{certified[method].mean():.1%} | {unflipped.mean():.1%} |"
        )
    print(
        f"\nCROWN / IBP time: {times['crown'] / times['ibp']:.1f}x; "
        f"CROWN certifies {certified['crown'].sum() - certified['ibp'].sum()} more states. "
        f"Certified ⊆ PGD-unchanged: {'yes' if sound else 'NO (a soundness bug)'}"
    )
    widths = {}
    for method in ("crown", "ibp"):
        lo, hi = output_bounds(policy, states, eps, method=method)
        widths[method] = float((hi - lo).mean())
    print(
        f"Mean width of the logit bounds: CROWN {widths['crown']:.4f}, IBP {widths['ibp']:.4f} "
        f"(CROWN/IBP {widths['crown'] / widths['ibp']:.2f})"
    )
    if n == 10_000:
        verdict = "met" if times["crown"] < 2.0 else "NOT met"
        print(f"Goal (CROWN, 10,000 states < 2 s, {args.threads} thread): {verdict}")
    elif args.smoke:
        print("smoke sizes: timings are not comparable to the goal")

    sub = states[: args.radius_states]
    print(
        f"\n### Certified radius (std units, bisection to {args.tol}, cap {args.eps_max}), "
        f"{len(sub)} states\n"
    )
    print("| method | time (s) | mean | p10 | p50 | p90 | share 0 (< tol) | share at cap |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for method in ("crown", "ibp"):
        t, radius = timed(
            lambda m=method: certified_radius(
                policy, sub, method=m, eps_max=args.eps_max, tol=args.tol, scale=std
            ),
            1,
        )
        p10, p50, p90 = np.percentile(radius, [10, 50, 90])
        print(
            f"| {method.upper()} | {t:.3f} | {radius.mean():.3f} | {p10:.3f} | {p50:.3f} | "
            f"{p90:.3f} | {(radius == 0).mean():.1%} | {(radius >= args.eps_max).mean():.1%} |"
        )


if __name__ == "__main__":
    main()
