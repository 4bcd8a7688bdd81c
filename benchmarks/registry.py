#!/usr/bin/env python
"""Registry speed: durable audit appends, verifying and proving a 1,000,000-entry log, and
push/pull of a 10 MB policy. Each figure comes with a baseline measured in the same run.

* appends: audited registry mutations per second (each its own durable transaction: lock,
  entry, Merkle nodes, signed chained head), against plain durable inserts of a row of the
  same size into the same database;
* verify: ``verify_log`` over a log of --entries entries (built in bulk with the library's own
  leaf, node, head and chain functions, exactly as appends write them), against streaming the
  same rows without checking them; goal < 30 s at 1e6 on 2 cores;
* proofs: inclusion and consistency proofs at that size, median over random positions,
  each checked; goal: logarithmic, < 5 ms at 1e6; baseline: the same checked proofs without
  the registry's authentication, at that size and at a fifth of it;
* push/pull: a native policy of --policy-mb MB pushed (validated, hashed, signed, stored) and
  loaded verified, against copying and hashing the same files.

Usage: python benchmarks/registry.py [--entries 1000000] [--appends 300] [--policy-mb 10]
       [--pg URL] [--smoke]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Integer, LargeBinary, MetaData, Table, insert, select, text
from sqlalchemy.orm import Session

from rlsec.registry import Registry, audit, merkle, signing
from rlsec.registry.db import AuditEntryRow, AuditHeadRow, AuditNodeRow, AuditStateRow


def bench_appends(reg: Registry, token: str, n: int) -> dict[str, float]:
    meta = MetaData()
    plain = Table(
        "bench_plain", meta, Column("id", Integer, primary_key=True), Column("body", LargeBinary)
    )
    meta.create_all(reg.engine)
    body = os.urandom(400)  # about an audit leaf's size
    t0 = time.perf_counter()
    for _ in range(n):
        with reg.engine.begin() as conn:
            conn.execute(insert(plain).values(body=body))
    plain_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(n):  # a real audited mutation: a token for a principal
        reg.create_token(token, "bench", label=f"t{i}")
    audited_s = time.perf_counter() - t0
    meta.drop_all(reg.engine)
    return {
        "audited_per_s": n / audited_s,
        "plain_per_s": n / plain_s,
        "ratio": audited_s / plain_s,
    }


def build_log(reg: Registry, entries: int, batch: int = 20_000) -> float:
    """Append ``entries`` entries in bulk, as audit.append would write them one by one."""
    key = reg.log_key()
    kid = key.public().key_id
    t0 = time.perf_counter()
    with Session(reg.engine) as s, s.begin():
        state = s.get(AuditStateRow, 1)
        assert state is not None
        start = state.size
        last = s.get(AuditHeadRow, start) if start else None
        link = (
            audit.GENESIS
            if last is None
            else audit.chain(
                last.size, bytes(last.root), last.at, bytes(last.prev), bytes(last.signature)
            )
        )
        nodes = merkle.MemoryNodes()
        existing = s.execute(select(AuditNodeRow.level, AuditNodeRow.idx, AuditNodeRow.hash))
        nodes.add((lv, ix, bytes(h)) for lv, ix, h in existing)
        acc = merkle.RootAccumulator()
        for (leaf,) in s.execute(select(AuditEntryRow.leaf).order_by(AuditEntryRow.seq)):
            acc.append(merkle.leaf_hash(bytes(leaf)))
    at = audit.now()
    for lo in range(start, start + entries, batch):
        e_rows: list[dict[str, Any]] = []
        n_rows: list[dict[str, Any]] = []
        h_rows: list[dict[str, Any]] = []
        for seq in range(lo, min(lo + batch, start + entries)):
            entry = audit.Entry(
                seq, at, "bench", "bench.append", f"bench:{seq}", "ok", None, {"n": seq}, {}
            )
            leaf = entry.leaf()
            lh = merkle.leaf_hash(leaf)
            new = merkle.completed_nodes(seq, lh, nodes)
            nodes.add(new)
            n_rows += [{"level": lv, "idx": ix, "hash": h} for lv, ix, h in new]
            e_rows.append(
                {
                    "seq": seq,
                    "at": at,
                    "actor": "bench",
                    "action": "bench.append",
                    "target": f"bench:{seq}",
                    "outcome": "ok",
                    "leaf": leaf,
                }
            )
            acc.append(lh)
            root = acc.root()
            sig = key.sign(audit.head_message(seq + 1, root, at, link))
            h_rows.append(
                {
                    "size": seq + 1,
                    "root": root,
                    "at": at,
                    "prev": link,
                    "key_id": kid,
                    "signature": sig,
                }
            )
            link = audit.chain(seq + 1, root, at, link, sig)
        with Session(reg.engine) as s, s.begin():
            s.execute(insert(AuditEntryRow), e_rows)
            s.execute(insert(AuditNodeRow), n_rows)
            s.execute(insert(AuditHeadRow), h_rows)
            s.execute(
                text("UPDATE audit_state SET size = :n WHERE id = 1"), {"n": h_rows[-1]["size"]}
            )
    return time.perf_counter() - t0


def bench_verify(reg: Registry) -> dict[str, float]:
    public = reg.log_public()
    with Session(reg.read_engine) as s:
        t0 = time.perf_counter()
        for table in (AuditEntryRow, AuditHeadRow, AuditNodeRow):  # the rows, unchecked
            for _ in s.execute(
                select(*table.__table__.columns).execution_options(yield_per=20_000)
            ):
                pass
        stream_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = audit.verify_log(s, public)
        verify_s = time.perf_counter() - t0
    return {
        "entries": report.entries,
        "verify_s": verify_s,
        "stream_s": stream_s,
        "ratio": verify_s / stream_s,
    }


def bench_proofs(reg: Registry, token: str, size: int, n: int = 200) -> dict[str, float]:
    """Median times of checked proofs at ``size`` entries: through the registry (token,
    access check, head signature, path) and, as the baseline, the same checked proofs
    without the registry's authentication (``audit.inclusion`` / ``audit.consistency`` on a
    session: head signature and path), at ``size`` and at a fifth of it (logarithmic cost:
    the fifth should cost about as much)."""
    rng = random.Random(0)
    public = reg.log_public()
    small = max(1, size // 5)
    inc, con, bare_inc, bare_con, small_inc, small_con = [], [], [], [], [], []
    with Session(reg.read_engine) as s:
        for _ in range(n):
            i = rng.randrange(size)
            t0 = time.perf_counter()
            reg.audit_inclusion(token, i)  # generated, its head's signature and path checked
            inc.append(time.perf_counter() - t0)
            old = rng.randrange(1, size + 1)
            t0 = time.perf_counter()
            reg.audit_consistency(token, old)
            con.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            audit.inclusion(s, i, public=public)
            bare_inc.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            audit.consistency(s, old, public=public)
            bare_con.append(time.perf_counter() - t0)
            j, old_small = rng.randrange(small), rng.randrange(1, small + 1)
            t0 = time.perf_counter()
            audit.inclusion(s, j, small, public=public)
            small_inc.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            audit.consistency(s, old_small, small, public=public)
            small_con.append(time.perf_counter() - t0)
    return {
        "inclusion_ms": 1e3 * statistics.median(inc),
        "consistency_ms": 1e3 * statistics.median(con),
        "bare_inclusion_ms": 1e3 * statistics.median(bare_inc),
        "bare_consistency_ms": 1e3 * statistics.median(bare_con),
        "small_size": small,
        "small_inclusion_ms": 1e3 * statistics.median(small_inc),
        "small_consistency_ms": 1e3 * statistics.median(small_con),
    }


def big_policy(directory: Path, mb: float) -> Path:
    import gymnasium as gym
    import numpy as np
    import torch

    from rlsec.policies import from_torch, save_policy

    width = max(8, int((mb * 2**20 / 4) ** 0.5))
    net = torch.nn.Sequential(
        torch.nn.Linear(4, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, 2),
    )
    obs = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    policy = from_torch(net, obs, gym.spaces.Discrete(2))
    return save_policy(policy, directory / "big", env_id="CartPole-v1", algo="ppo")


def bench_push_pull(
    reg: Registry, token: str, key: Any, mb: float, tmp: Path, rounds: int
) -> dict[str, float]:
    src = big_policy(tmp, mb)
    size = sum(f.stat().st_size for f in src.iterdir()) / 2**20
    copy_s, push_s, load_s, pull_s = [], [], [], []
    for r in range(rounds):
        t0 = time.perf_counter()
        dst = tmp / f"copy{r}"
        shutil.copytree(src, dst)
        for f in dst.iterdir():
            hashlib.sha256(f.read_bytes()).hexdigest()
        copy_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        v = reg.push(token, src, name="big", key=key)
        push_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        reg.load_verified(token, v.ref)
        load_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        reg.pull(token, v.ref, tmp / f"pulled{r}")
        pull_s.append(time.perf_counter() - t0)
    base = statistics.median(copy_s)
    return {
        "mb": size,
        "push_s": statistics.median(push_s),
        "load_s": statistics.median(load_s),
        "pull_s": statistics.median(pull_s),
        "copy_and_hash_s": base,
        "push_ratio": statistics.median(push_s) / base,
        "pull_ratio": statistics.median(pull_s) / base,
    }


def run(url: str | None, name: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        reg = Registry(tmp / "home", url or f"sqlite:///{tmp / 'registry.db'}")
        admin = reg.init("admin")
        reg.create_principal(admin, "bench", "trainer,reviewer,auditor")
        tok = reg.create_token(admin, "bench")
        key = signing.generate_key()
        reg.register_key(tok, signing.public_pem(key))
        a = bench_appends(reg, admin, args.appends)
        print(
            f"[{name}] audited appends: {a['audited_per_s']:.0f}/s durable; plain durable "
            f"inserts {a['plain_per_s']:.0f}/s; audited / plain time {a['ratio']:.2f}x",
            flush=True,
        )
        p = bench_push_pull(reg, tok, key, args.policy_mb, tmp, args.rounds)
        print(
            f"[{name}] {p['mb']:.1f} MB policy: push {p['push_s']:.3f} s "
            f"({p['push_ratio']:.2f}x copy+hash {p['copy_and_hash_s']:.3f} s), verified load "
            f"{p['load_s']:.3f} s, pull {p['pull_s']:.3f} s ({p['pull_ratio']:.2f}x)",
            flush=True,
        )
        if not args.verify_on_all and name != "sqlite":
            return
        built = build_log(reg, args.entries)
        print(f"[{name}] built a log of {args.entries} more entries in {built:.0f} s", flush=True)
        v = bench_verify(reg)
        print(
            f"[{name}] verify {v['entries']} entries: {v['verify_s']:.1f} s (goal < 30 s at "
            f"1e6); streaming the rows unchecked {v['stream_s']:.1f} s; ratio {v['ratio']:.1f}x",
            flush=True,
        )
        pr = bench_proofs(reg, tok, v["entries"], 50 if args.smoke else 200)
        print(
            f"[{name}] proofs at {v['entries']} entries: inclusion {pr['inclusion_ms']:.2f} ms, "
            f"consistency {pr['consistency_ms']:.2f} ms (median, checked; goal < 5 ms)",
            flush=True,
        )
        print(
            f"[{name}] the same proofs without the registry's authentication (head signature "
            f"and path checked): at {v['entries']} entries inclusion "
            f"{pr['bare_inclusion_ms']:.2f} ms, consistency {pr['bare_consistency_ms']:.2f} ms; "
            f"at {pr['small_size']} entries inclusion {pr['small_inclusion_ms']:.2f} ms, "
            f"consistency {pr['small_consistency_ms']:.2f} ms (median)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--appends", type=int, default=300)
    parser.add_argument("--policy-mb", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--pg",
        default=os.environ.get("RLSEC_TEST_PG"),
        help="a PostgreSQL URL of a role that may create databases",
    )
    parser.add_argument(
        "--verify-on-all",
        action="store_true",
        help="also build and verify the big log on PostgreSQL",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.entries, args.appends, args.policy_mb, args.rounds = 2000, 20, 1.0, 1
    run(None, "sqlite", args)
    if args.pg:
        import uuid

        import psycopg

        name = f"rlsec_bench_{uuid.uuid4().hex[:8]}"
        admin_url = args.pg.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin_url, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        try:
            run(admin_url.rpartition("/")[0] + f"/{name}", "postgresql", args)
        finally:
            with psycopg.connect(admin_url, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
