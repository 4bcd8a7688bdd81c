#!/usr/bin/env python
"""How fast is model checking of a policy-induced chain?

Builds a large slippery grid (``--side`` x ``--side`` states, 1,000,000 by default: hazards at
random, a goal in the far corner; moving off a cell slides sideways with probability 0.2) as
a sparse :class:`rlsec.verify.Model` whose observations are feature vectors (row, column,
scaled to [0, 1]), and a small MLP policy on them (random weights, seeded, with the output
bias favouring "down" and "right" the way a policy trained to reach the corner would: the
query cost does not depend on the weights; the check's does, through how fast value iteration
converges). Then measures, in the same run:

* the batched query: the policy evaluated on every state in batches of 65,536, and the
  policy-induced chain built from it;
* the per-state query, as tools that call the policy state by state do, on ``--sample``
  states, extrapolated to all states (querying a million states one at a time would take
  minutes); the ratio is per state;
* the hand-off to Storm (once per query, each counted) and the checks of
  ``P=? [F<=2000 "goal"]`` (bounded reachability: exact, a fixed number of sparse products)
  and ``P=? [F "unsafe"]`` solved directly (the default: sparse LU; sound value iteration
  converges too slowly on this grid's slippery walls).

Goal: the build (query + chain + Storm model) and the check of the 1,000,000-state chain in
under 30 s, and the batched query at least 10x faster per state than the per-state one.

Usage: python benchmarks/verify.py [--side 1000] [--sample 20000] [--smoke]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import scipy.sparse as sp
import torch

from rlsec.policies import from_torch
from rlsec.verify import Model, action_probabilities, check


def grid_model(side: int, *, slip: float = 0.2, hazards: float = 0.05, seed: int = 0) -> Model:
    """A ``side`` x ``side`` slippery grid with random hazard cells, built sparsely."""
    rng = np.random.default_rng(seed)
    n = side * side
    idx = np.arange(n)
    r, c = idx // side, idx % side
    moves = np.array([[0, -1], [1, 0], [0, 1], [-1, 0]])  # left, down, right, up
    unsafe = rng.random(n) < hazards
    unsafe[0] = unsafe[n - 1] = False
    goal = np.zeros(n, dtype=bool)
    goal[n - 1] = True
    stop = unsafe | goal
    rows, cols, vals = [], [], []
    for a in range(4):
        for d, p in ((a, 1.0 - slip), ((a - 1) % 4, slip / 2), ((a + 1) % 4, slip / 2)):
            rr = np.clip(r + moves[d, 0], 0, side - 1)
            cc = np.clip(c + moves[d, 1], 0, side - 1)
            target = np.where(stop, idx, rr * side + cc)
            rows.append(idx * 4 + a)
            cols.append(target)
            vals.append(np.full(n, p))
    t = sp.csr_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(4 * n, n)
    )
    initial = np.zeros(n)
    initial[0] = 1.0
    obs = np.stack([r / (side - 1), c / (side - 1)], axis=1).astype(np.float32)
    return Model(
        t,
        4,
        initial,
        {"goal": goal, "unsafe": unsafe},
        observations=obs,
        observation_space=gym.spaces.Box(0.0, 1.0, (2,), np.float32),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--side", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=20000)
    parser.add_argument("--smoke", action="store_true", help="a small grid, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.side, args.sample = 60, 500
    torch.manual_seed(0)
    torch.set_num_threads(2)
    net = torch.nn.Sequential(
        torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
        torch.nn.Linear(64, 4),
    )  # fmt: skip
    with torch.no_grad():
        net[-1].bias.copy_(torch.tensor([0.0, 2.0, 2.0, 0.0]))  # heads for the far corner
    policy = from_torch(net, gym.spaces.Box(0.0, 1.0, (2,), np.float32), gym.spaces.Discrete(4))
    t0 = time.perf_counter()
    model = grid_model(args.side)
    t_gen = time.perf_counter() - t0
    n = model.n_states

    t0 = time.perf_counter()
    probs = action_probabilities(policy, model)
    t_query = time.perf_counter() - t0
    t0 = time.perf_counter()
    chain = model.chain(probs)
    t_chain = time.perf_counter() - t0

    sample = min(args.sample, n)
    obs = model.observations
    assert obs is not None
    t0 = time.perf_counter()
    for i in range(sample):  # one state at a time
        policy.act(obs[i : i + 1])
    t_per_state = (time.perf_counter() - t0) / sample
    batched_per_state = t_query / n

    res = check(chain, 'P=? [F<=2000 "goal"]')  # exact: 2000 matrix-vector products
    res2 = check(chain, 'P=? [F "unsafe"]')  # a direct sparse solve
    build = t_query + t_chain + res.seconds["build"]
    print(f"grid {args.side}x{args.side}: {n:,} states, {chain.matrix.nnz:,} transitions")
    print(f"(generating the model: {t_gen:.1f} s, not counted)\n")
    print("| step | seconds |")
    print("|---|---|")
    print(f"| query the policy on every state (batched) | {t_query:.2f} |")
    print(f"| policy-induced chain (sparse product) | {t_chain:.2f} |")
    print(f"| hand-off to Storm (sparse model) | {res.seconds['build']:.2f} |")
    print(f'| check P=? [F<=2000 "goal"] -> {res.result:.4g} | {res.seconds["check"]:.2f} |')
    print(f"| hand-off to Storm again, for the second query | {res2.seconds['build']:.2f} |")
    print(
        f'| check P=? [F "unsafe"], direct solve -> {res2.result:.4g} | '
        f"{res2.seconds['check']:.2f} |"
    )
    # every second of both queries counts, each hand-off to Storm included
    total = build + res.seconds["check"] + res2.seconds["build"] + res2.seconds["check"]
    print(f"\nbuild + check: **{total:.1f} s** (goal < 30 s)")
    print(
        f"per-state query: {1e6 * t_per_state:.1f} us/state over {sample:,} states "
        f"(all states: ~{t_per_state * n:.0f} s); batched: {1e6 * batched_per_state:.2f} "
        f"us/state: **{t_per_state / batched_per_state:.0f}x** faster (goal >= 10x)"
    )


if __name__ == "__main__":
    main()
