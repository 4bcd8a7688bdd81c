"""A separate process that works on a registry (run by test_concurrency.py).

Usage: python registry_worker.py HOME URL SETUP_JSON WORKER OPS SEED MODE

``mode`` ``push``: push the policy OPS times, printing each ref once committed (the kill -9
test). ``mixed``: OPS seeded random operations; prints one JSON line of what succeeded.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from pathlib import Path


def main() -> None:
    home, url, setup_path, worker, ops, seed, mode = sys.argv[1:8]
    from rlsec.errors import ConfigError
    from rlsec.policies import zoo_path
    from rlsec.registry import Registry, signing

    setup = json.loads(Path(setup_path).read_text())
    me = setup["workers"][int(worker)]
    reg = Registry(home, url)
    key = signing.load_private_key(me["key"].encode())
    trainer, reviewer = me["trainer"], me["reviewer"]
    zoo = zoo_path("cartpole-ppo")
    if mode == "push":
        for _ in range(int(ops)):
            v = reg.push(trainer, zoo, name="crash", key=key)
            print(v.ref, flush=True)
        return
    rng = random.Random(int(seed))
    done: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    pushed: list[str] = []
    evidence = setup["evidence"].encode()
    for _ in range(int(ops)):
        op = rng.choices(
            ["push", "attach", "approve", "token", "list", "show", "load"],
            weights=[10, 10, 10, 10, 30, 20, 10],
        )[0]
        mine = [r for r in pushed]
        others = setup["seed_refs"]
        try:
            if op == "push":
                pushed.append(reg.push(trainer, zoo, name=f"p{rng.randrange(2)}", key=key).ref)
            elif op == "attach":
                reg.attach(trainer, rng.choice(mine or others), evidence, key=key)
            elif op == "approve":
                reg.approve(reviewer, rng.choice(others + mine), "staging")
            elif op == "token":
                reg.create_token(setup["admin"], f"trainer{worker}", label="load")
            elif op == "list":
                reg.versions(reviewer)
            elif op == "show":
                reg.show(reviewer, rng.choice(others + mine))
            else:
                reg.load_verified(reviewer, rng.choice(others + mine))
            done[op] += 1
        except ConfigError:  # a second approval of the same version by the same reviewer
            refused[op] += 1
    print(json.dumps({"done": done, "refused": refused, "pushed": pushed}), flush=True)


if __name__ == "__main__":
    main()
