"""Processes against one registry, on SQLite and PostgreSQL: a writer killed with SIGKILL
mid-push leaves the registry and its log verifying, each push whole or absent; 8 processes of
500 mixed operations each lose no update, duplicate no version number, and leave a log that
verifies with exactly one entry per change."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rlsec.policies import zoo_path
from rlsec.registry import Registry, signing

WORKER = Path(__file__).with_name("registry_worker.py")
ZOO = zoo_path("cartpole-ppo")
SPEC_SHA = __import__("hashlib").sha256((ZOO / "spec.json").read_bytes()).hexdigest()


def _setup(reg: Registry, workers: int, tmp: Path) -> Path:
    admin = reg.init("root")
    reg.create_principal(admin, "seed", "trainer")
    seed_token = reg.create_token(admin, "seed")
    seed_key = signing.generate_key()
    reg.register_key(seed_token, signing.public_pem(seed_key))
    seed_refs = [reg.push(seed_token, ZOO, name="p0", key=seed_key).ref for _ in range(2)]
    people = []
    for i in range(workers):
        reg.create_principal(admin, f"trainer{i}", "trainer")
        reg.create_principal(admin, f"reviewer{i}", "reviewer")
        trainer = reg.create_token(admin, f"trainer{i}")
        key = signing.generate_key()
        reg.register_key(trainer, signing.public_pem(key))
        people.append(
            {
                "trainer": trainer,
                "reviewer": reg.create_token(admin, f"reviewer{i}"),
                "key": signing.private_pem(key).decode(),
            }
        )
    evidence = json.dumps({"kind": "redteam", "policy": {"sha256": SPEC_SHA}})
    path = tmp / "setup.json"
    path.write_text(
        json.dumps(
            {"admin": admin, "workers": people, "seed_refs": seed_refs, "evidence": evidence}
        )
    )
    return path


def _worker(reg: Registry, setup: Path, i: int, ops: int, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(WORKER),
            str(reg.home),
            reg.url,
            str(setup),
            str(i),
            str(ops),
            str(1000 + i),
            mode,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def test_a_writer_killed_mid_push_leaves_everything_whole(tmp_path: Path, db_url: str) -> None:
    reg = Registry(tmp_path / "home", db_url)
    setup = _setup(reg, 1, tmp_path)
    admin = json.loads(setup.read_text())["admin"]
    confirmed = 0
    for trial, delay in enumerate((0.0, 0.013, 0.057, 0.21)):
        proc = _worker(reg, setup, 0, 1000, "push")
        assert proc.stdout is not None
        first = proc.stdout.readline()  # its first push committed: it is in the push loop
        assert first.strip(), proc.communicate()[1][-2000:]
        time.sleep(delay)  # pushes take ~20 ms each: these land at different points of one
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        confirmed += 1 + len(out.split())
        versions = reg.versions(admin, "crash")
        numbers = [v.number for v in versions]
        # every push the worker saw commit is there; at most one more committed unseen
        assert confirmed <= len(numbers) <= confirmed + 1 + trial
        assert numbers == list(range(1, len(numbers) + 1))
        for v in versions:
            reg.verify_version(admin, v.ref)
        report = reg.audit_verify(admin)
        pushes = [e for e in reg.audit_entries(admin) if e.action == "version.push"]
        assert len(pushes) == len(numbers) + 2  # the two seed versions
        assert report.entries == report.heads
        confirmed = len(numbers)
    assert confirmed > 0


@pytest.mark.slow
def test_eight_processes_of_mixed_operations(tmp_path: Path, db_url: str) -> None:
    workers, ops = 8, 250  # 2,000 operations: contention on every table, in a bounded time
    reg = Registry(tmp_path / "home", db_url)
    setup = _setup(reg, workers, tmp_path)
    admin = json.loads(setup.read_text())["admin"]
    before = reg.audit_head(admin)
    assert before is not None
    procs = [_worker(reg, setup, i, ops, "mixed") for i in range(workers)]
    checks = 0
    while any(p.poll() is None for p in procs):  # the log verifies while others append
        reg.audit_verify(admin)
        checks += 1
        time.sleep(0.2)
    assert checks > 0
    results: list[dict[str, Any]] = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    done = {
        k: sum(r["done"].get(k, 0) for r in results)
        for k in ("push", "attach", "approve", "token", "list", "show", "load")
    }
    assert sum(done.values()) + sum(sum(r["refused"].values()) for r in results) == workers * ops
    pushed = [ref for r in results for ref in r["pushed"]]
    assert len(pushed) == len(set(pushed)) == done["push"]  # no version handed out twice
    versions = reg.versions(admin)
    by_name: dict[str, list[int]] = {}
    for v in versions:
        by_name.setdefault(v.name, []).append(v.number)
    for numbers in by_name.values():
        assert numbers == list(range(1, len(numbers) + 1))
    assert len(versions) == done["push"] + 2
    report = reg.audit_verify(admin)
    entries = reg.audit_entries(admin)[before.size :]
    mutations = done["push"] + done["attach"] + done["approve"] + done["token"]
    assert len(entries) == mutations  # reads are not logged; no change lost its entry
    shown = sum(len(reg.show(admin, v.ref)["approvals"]) for v in versions)
    assert shown == done["approve"]  # no approval lost
    assert report.entries == before.size + mutations
