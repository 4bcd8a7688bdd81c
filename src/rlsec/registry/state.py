"""The registry's state bound to its audit log.

The audit log proves its own history; this module makes the tables that *decide* what
happens (principals and their roles, tokens, keys, policies, versions and their stages,
stage history, evidence, approvals, settings such as the gate policy and the admin quorum,
admin proposals) answer to it.

* **Writing.** Every audit entry lists, under ``state``, the rows its change set and the
  SHA-256 of each row's columns (:func:`digest`). The row then records that entry's
  sequence number in ``audit_seq``. Both commit in the same transaction.
* **Reading.** Every row of a bound table that a registry session loads through the ORM is
  checked as it loads (:class:`Checker`, a SQLAlchemy ``load`` event): the entry at its
  ``audit_seq`` must be in the log under a signed tree head (an inclusion proof, checked once
  per entry and process) and must state this row's digest. A row edited in the database, or
  inserted without an entry, fails closed with :class:`TamperedState` before anything acts
  on it.
* **Replaying.** :func:`verify_rows` (run by ``rlsec audit verify``) takes, from a full pass
  over the log, the last digest every entry stated for each row, and checks every row of
  every bound table against it: the row must exist, point at that last entry and have that
  digest. This also finds what a read cannot: a row put back to an *earlier* logged state
  together with its pointer (a revoked token made valid again with ``audit_seq`` reset to
  its creation), or a row deleted.

What this does not stop: someone who holds the log's private key can write a consistent
history; and between two runs of ``audit verify``, a row rolled back to an earlier logged
state with its pointer passes the read check. Keep the key off the database host, verify on
a schedule, and keep tree heads elsewhere (``audit head``) to verify against.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from rlsec.errors import VerificationError
from rlsec.registry import audit, merkle
from rlsec.registry.db import (
    AuditEntryRow,
    AuditHeadRow,
    Bound,
)
from rlsec.registry.rows import TABLES, digest, digest_of, key, primary_key, state_of

_INFO = "rlsec.state"

__all__ = [
    "TABLES",
    "Checker",
    "TamperedState",
    "digest",
    "key",
    "state_of",
    "verify_rows",
]


class TamperedState(VerificationError):
    """A bound row does not match the audit entry that last set it (edited, inserted or
    rolled back outside the registry)."""


def _parse_state(raw: bytes, seq: int) -> Mapping[str, str]:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise VerificationError(f"audit entry {seq}: its leaf is not JSON") from None
    st = body.get("state", {}) if isinstance(body, dict) else None
    if not isinstance(st, dict):
        raise VerificationError(f"audit entry {seq}: its state is not an object")
    return st


class Checker:
    """Checks every bound row a session loads against its audit entry.

    Attach to a session with :meth:`watch`; entries whose inclusion under a signed head has
    been proved are remembered (they never change), so a warm check is one digest.
    """

    def __init__(self, public: Any) -> None:
        self.public = public
        self._proved: dict[int, Mapping[str, str]] = {}

    def watch(self, session: Session) -> Session:
        session.info[_INFO] = self
        return session

    def check(self, session: Session, row: Bound) -> None:
        name = key(row)
        seq = row.audit_seq
        if seq is None:
            raise TamperedState(
                f"{name} is not bound to the audit log (no entry set it): it was written "
                f"outside the registry; nothing that reads it is done"
            )
        stated = self._proved.get(seq)
        if stated is None:
            stated = self._prove(session, seq)
        want = stated.get(name)
        if want is None:
            raise TamperedState(
                f"{name} points at audit entry {seq}, which did not set it: the row was "
                f"written outside the registry"
            )
        if want != digest(row):
            raise TamperedState(
                f"{name} does not match audit entry {seq}, which last set it: the row was "
                f"changed outside the registry"
            )

    def _prove(self, session: Session, seq: int) -> Mapping[str, str]:
        conn = session.connection()
        leaf = conn.execute(
            select(AuditEntryRow.leaf).where(AuditEntryRow.seq == seq)
        ).scalar_one_or_none()
        if leaf is None:
            raise TamperedState(f"audit entry {seq}, which a row points at, is missing")
        head_row = conn.execute(
            select(
                AuditHeadRow.size,
                AuditHeadRow.root,
                AuditHeadRow.at,
                AuditHeadRow.key_id,
                AuditHeadRow.signature,
                AuditHeadRow.prev,
            )
            .order_by(AuditHeadRow.size.desc())
            .limit(1)
        ).one_or_none()
        if head_row is None or not seq < head_row[0]:
            raise TamperedState(f"audit entry {seq} is not under a signed tree head")
        size, root, at, kid, sig, prev = head_row
        head = audit.SignedHead(size, bytes(root), at, kid, bytes(sig), bytes(prev))
        head.verify(self.public)
        proof = merkle.inclusion_proof(seq, size, audit._SessionNodes(session))
        try:
            merkle.verify_inclusion(merkle.leaf_hash(bytes(leaf)), seq, size, proof, head.root)
        except VerificationError:
            raise TamperedState(
                f"audit entry {seq} is not the one the signed tree head at size {size} holds: "
                f"the log was changed outside the registry"
            ) from None
        stated = _parse_state(bytes(leaf), seq)
        self._proved[seq] = stated
        return stated


@event.listens_for(Bound, "load", propagate=True)
def _on_load(row: Bound, context: Any) -> None:
    checker = context.session.info.get(_INFO) if context.session is not None else None
    if checker is not None:
        checker.check(context.session, row)


@event.listens_for(Bound, "refresh", propagate=True)
def _on_refresh(row: Bound, context: Any, _attrs: Any) -> None:
    _on_load(row, context)


def verify_rows(session: Session, last: Mapping[str, tuple[int, str]]) -> int:
    """Check every row of every bound table against ``last`` (row key -> the sequence
    number and digest of the last entry that stated it, from a full pass over the log).
    Returns the number of rows checked.

    Raises:
        TamperedState: names the first row that was edited, inserted, rolled back or
            deleted outside the registry.
    """
    seen: set[str] = set()
    count = 0
    conn = session.connection()  # plain rows: the replay, not the load check, judges them
    for prefix, table in TABLES.items():
        pk = primary_key(table)
        for row in conn.execute(select(table.__table__)).mappings():  # type: ignore[attr-defined]
            name = f"{prefix}:{row[pk]}"
            seen.add(name)
            count += 1
            want = last.get(name)
            if want is None:
                raise TamperedState(f"{name} was never set by any audit entry")
            seq, wanted = want
            if row["audit_seq"] != seq:
                raise TamperedState(
                    f"{name} points at audit entry {row['audit_seq']}, but entry {seq} set it "
                    f"last: the row was put back to an earlier state"
                )
            if digest_of(table, dict(row)) != wanted:
                raise TamperedState(f"{name} does not match audit entry {seq}, which set it last")
    gone = sorted(set(last) - seen)
    if gone:
        raise TamperedState(f"{gone[0]} was set by the log but is missing from the database")
    return count
