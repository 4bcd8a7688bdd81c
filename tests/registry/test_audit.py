"""Corruption probes on the audit log, on SQLite and PostgreSQL: every single-row
modification, deletion, swap, reordering, insertion and truncation of the log's tables is
detected; proofs from the registry check with the independent RFC 9162 verifiers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from registry_helpers import Team
from rlsec.errors import AccessDenied, VerificationError
from rlsec.registry import audit, merkle
from rlsec.registry.db import AuditEntryRow, AuditHeadRow, AuditNodeRow, AuditStateRow

Probe = Callable[[Session], None]


@contextmanager
def tampered(team: Team) -> Iterator[Session]:
    """A transaction that is never committed: probe, verify, roll back."""
    with Session(team.reg.engine) as s:
        s.begin()
        try:
            yield s
        finally:
            s.rollback()


def detected(
    team: Team, probe: Probe, witness: audit.SignedHead | None = None, expect: str = ""
) -> str:
    """Apply ``probe`` in a transaction that is rolled back; the log must fail to verify,
    with a message matching ``expect`` (which check fired, and where)."""
    with tampered(team) as s:
        probe(s)
        s.flush()
        s.expire_all()
        with pytest.raises(VerificationError) as err:
            audit.verify_log(s, team.reg.log_public(), witness=witness)
        assert re.search(expect, str(err.value)), f"expected /{expect}/, got: {err.value}"
        return str(err.value)


@pytest.fixture
def log(team: Team) -> Team:
    reg = team.reg
    reg.push(
        team["trainer"],
        __import__("rlsec.policies", fromlist=["x"]).zoo_path("cartpole-ppo"),
        name="cartpole",
        key=team.key,
    )
    with pytest.raises(AccessDenied):
        reg.approve(team["viewer"], "cartpole@1", "staging")
    reg.approve(team["reviewer"], "cartpole@1", "staging")
    report = reg.audit_verify(team["auditor"])
    assert report.entries == report.heads > 10
    return team


def _size(team: Team) -> int:
    head = team.reg.audit_head(team["auditor"])
    assert head is not None
    return head.size


def test_every_single_column_change_of_every_entry_is_detected(log: Team) -> None:
    n = _size(log)
    for seq in range(n):
        for column, value in (
            ("at", "2020-01-01T00:00:00.000000Z"),
            ("actor", "mallory"),
            ("action", "version.delete"),
            ("target", "other@9"),
            ("outcome", "ok" if seq != 0 else "denied"),
        ):
            with tampered(log) as s:
                current = s.get(AuditEntryRow, seq)
                assert current is not None
                same = getattr(current, column) == value
            if same:
                value = value + "x"
            msg = detected(
                log,
                lambda s, c=column, v=value, q=seq: s.execute(
                    update(AuditEntryRow).where(AuditEntryRow.seq == q).values({c: v})
                ),
            )
            assert f"entry {seq}" in msg


def test_a_rewritten_leaf_with_matching_columns_is_detected(log: Team) -> None:
    """The strongest single-row forgery: rewrite an entry's leaf and columns consistently
    (canonical JSON, a different actor); only the Merkle root can tell."""
    n = _size(log)
    for seq in range(n):

        def forge(s: Session, q: int = seq) -> None:
            row = s.get(AuditEntryRow, q)
            assert row is not None
            body = json.loads(row.leaf)
            body["actor"] = "mallory"
            leaf = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
            s.execute(
                update(AuditEntryRow)
                .where(AuditEntryRow.seq == q)
                .values(leaf=leaf, actor="mallory")
            )

        assert "does not match" in detected(log, forge)

        def forge_and_rehash(s: Session, q: int = seq) -> None:  # nodes made consistent too
            forge(s, q)
            _rebuild_nodes(s)

        assert "tree head at size" in detected(log, forge_and_rehash)


def _rebuild_nodes(s: Session) -> None:
    """Recompute every stored Merkle node from the entries as they are now."""
    s.execute(delete(AuditNodeRow))
    store = merkle.MemoryNodes()
    for row in s.execute(select(AuditEntryRow).order_by(AuditEntryRow.seq)).scalars():
        store.add(merkle.completed_nodes(row.seq, merkle.leaf_hash(row.leaf), store))
    s.add_all(AuditNodeRow(level=lv, idx=ix, hash=store.node(lv, ix)) for lv, ix in store)


def test_deleting_swapping_or_reordering_entries_is_detected(log: Team) -> None:
    n = _size(log)
    for seq in range(n):
        detected(
            log,
            lambda s, q=seq: s.execute(delete(AuditEntryRow).where(AuditEntryRow.seq == q)),
            expect=f"audit entry {seq} is missing" if seq < n - 1 else "deleted from the end",
        )
    for seq in range(n - 1):

        def swap(s: Session, q: int = seq) -> None:
            a, b = s.get(AuditEntryRow, q), s.get(AuditEntryRow, q + 1)
            assert a is not None
            assert b is not None
            cols = ("at", "actor", "action", "target", "outcome", "leaf")
            va, vb = ({c: getattr(r, c) for c in cols} for r in (a, b))
            s.execute(update(AuditEntryRow).where(AuditEntryRow.seq == q).values(vb))
            s.execute(update(AuditEntryRow).where(AuditEntryRow.seq == q + 1).values(va))

        detected(log, swap, expect=f"audit entry {seq}: its columns do not match its hashed leaf")

        def renumber(s: Session, q: int = seq) -> None:  # swap the sequence numbers
            s.execute(update(AuditEntryRow).where(AuditEntryRow.seq == q).values(seq=-1))
            s.execute(update(AuditEntryRow).where(AuditEntryRow.seq == q + 1).values(seq=q))
            s.execute(update(AuditEntryRow).where(AuditEntryRow.seq == -1).values(seq=q + 1))

        detected(
            log, renumber, expect=f"audit entry {seq}: its columns do not match its hashed leaf"
        )


def test_an_inserted_entry_is_detected(log: Team) -> None:
    n = _size(log)

    def insert(s: Session) -> None:
        row = s.get(AuditEntryRow, n - 1)
        assert row is not None
        body = json.loads(row.leaf)
        body["seq"] = n
        leaf = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        s.add(
            AuditEntryRow(
                seq=n,
                at=row.at,
                actor=row.actor,
                action=row.action,
                target=row.target,
                outcome=row.outcome,
                leaf=leaf,
            )
        )

    assert "missing" in detected(log, insert) or "size" in detected(log, insert)


def test_truncation_is_detected_and_with_the_heads_against_a_saved_head(log: Team) -> None:
    n = _size(log)
    witness = log.reg.audit_head(log["auditor"])
    assert witness is not None
    for k in range(n):
        msg = detected(
            log, lambda s, k=k: s.execute(delete(AuditEntryRow).where(AuditEntryRow.seq >= k))
        )
        assert "deleted from the end" in msg

        def cut_all(s: Session, k: int = k) -> None:
            s.execute(delete(AuditEntryRow).where(AuditEntryRow.seq >= k))
            s.execute(delete(AuditHeadRow).where(AuditHeadRow.size > k))
            s.execute(update(AuditStateRow).values(size=k))
            _rebuild_nodes(s)  # the shorter log's own nodes, so only the witness can tell

        if k > 0:
            with tampered(log) as s:  # without a witness the shorter log is self-consistent
                cut_all(s)
                s.flush()
                assert audit.verify_log(s, log.reg.log_public()).entries == k
        assert "deleted from the end" in detected(log, cut_all, witness)


def test_every_head_and_node_change_is_detected(log: Team) -> None:
    n = _size(log)
    for size in range(1, n + 1):
        later = (
            f"tree head at size {size + 1} does not link"
            if size < n
            else f"tree head at size {size} is not signed by log key"
        )
        for values, expect in (
            ({"root": bytes(32)}, f"tree head at size {size} does not match the entries"),
            ({"signature": bytes(64)}, later),
            ({"at": "2020"}, later),
            ({"prev": b"\x01" * 32}, f"tree head at size {size} does not link to the head before"),
            ({"key_id": "0" * 64}, f"tree head at size {size} names key 0000000000000000"),
        ):
            detected(
                log,
                lambda s, v=values, z=size: s.execute(
                    update(AuditHeadRow).where(AuditHeadRow.size == z).values(v)
                ),
                expect=expect,
            )
        detected(
            log,
            lambda s, z=size: s.execute(delete(AuditHeadRow).where(AuditHeadRow.size == z)),
            expect=f"the signed tree head at size {size} is missing",
        )
    with tampered(log) as s:
        keys = [(r.level, r.idx) for r in s.execute(select(AuditNodeRow)).scalars()]
    assert len(keys) == 2 * n - bin(n).count("1")
    for lv, ix in keys:
        where = (AuditNodeRow.level == lv) & (AuditNodeRow.idx == ix)
        detected(
            log,
            lambda s, w=where: s.execute(update(AuditNodeRow).where(w).values(hash=bytes(32))),
            expect=re.escape(f"Merkle node ({lv}, {ix}) does not match the entries"),
        )
        detected(
            log,
            lambda s, w=where: s.execute(delete(AuditNodeRow).where(w)),
            expect=re.escape(f"Merkle node ({lv}, {ix}) is missing"),
        )
    detected(
        log,
        lambda s: s.add(AuditNodeRow(level=9, idx=0, hash=bytes(32))),
        expect=re.escape("Merkle node (9, 0) matches no entries"),
    )
    detected(
        log,
        lambda s: s.execute(update(AuditStateRow).values(size=n + 1)),
        expect=f"recorded size is {n + 1}, but it holds {n} entries",
    )


def test_a_saved_head_whose_root_differs_from_the_logs_is_detected(log: Team) -> None:
    """A witness signed by the log's key for the same size but another root (a log rewritten
    by whoever held the key, or a head from a forked copy) does not match."""
    n = _size(log)
    key = log.reg.log_key()
    for size in (1, n // 2, n):
        at = "2026-01-01T00:00:00.000000Z"
        root = bytes(range(32))
        forged = audit.SignedHead(
            size, root, at, key.public().key_id, key.sign(audit.head_message(size, root, at))
        )
        detected(
            log,
            lambda s: None,
            witness=forged,
            expect=f"the log's tree at size {size} does not match the saved head",
        )


def test_proofs_verify_independently_and_fail_on_tampering(log: Team) -> None:
    reg, tok = log.reg, log["auditor"]
    n = _size(log)
    for seq in range(n):
        p: dict[str, Any] = reg.audit_inclusion(tok, seq)
        leaf = merkle.leaf_hash(
            json.dumps(p["entry"], sort_keys=True, separators=(",", ":")).encode()
        )
        assert leaf.hex() == p["leaf_hash"]
        proof = [bytes.fromhex(h) for h in p["proof"]]
        root = bytes.fromhex(p["head"]["root"])
        merkle.verify_inclusion(leaf, seq, n, proof, root)
        with pytest.raises(VerificationError):
            merkle.verify_inclusion(merkle.leaf_hash(b"forged"), seq, n, proof, root)
    for old in range(1, n + 1):
        c = reg.audit_consistency(tok, old)
        merkle.verify_consistency(
            old,
            n,
            bytes.fromhex(c["old"]["root"]),
            bytes.fromhex(c["new"]["root"]),
            [bytes.fromhex(h) for h in c["proof"]],
        )
    with pytest.raises(AccessDenied):
        reg.audit_inclusion(log["viewer"], 0)
