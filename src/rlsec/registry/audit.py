"""The registry's append-only, tamper-evident audit log: an RFC 6962 Merkle tree over every
mutation and every denial, with signed tree heads.

Each entry is written by :func:`append` *inside the transaction of the change it records*
(the caller's session), so a change without its entry, or an entry without its change, never
commits. An append locks the one-row ``audit_state`` table, so sequence numbers are gapless
and ordered under concurrent writers; stores the entry's canonical JSON (the Merkle leaf),
the perfect-subtree hashes the leaf completes, and a tree head (size, root, time) signed with
the log's Ed25519 key.

:func:`verify_log` recomputes everything from the rows in one streaming pass: each entry's
columns against its leaf, sequence numbers, every stored subtree hash, every tree head's
root and signature, and that the newest head covers exactly the entries present. A modified,
deleted, reordered or inserted row raises :class:`~rlsec.errors.VerificationError` naming the
first bad entry. A truncation that also removes the newest heads is caught against a head
saved outside the database (``witness``): keep heads elsewhere (a SIEM, a ticket, a file
another party controls) and verify against them.

Example:
    >>> from rlsec.registry.audit import GENESIS, LogKey, head_message
    >>> key = LogKey.generate()
    >>> sig = key.sign(head_message(1, bytes(32), "2026-01-01T00:00:00Z"))
    >>> key.public().verify_head(1, bytes(32), "2026-01-01T00:00:00Z", GENESIS, sig)  # verifies
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from rlsec.errors import ConfigError, VerificationError
from rlsec.registry import merkle
from rlsec.registry.db import AuditEntryRow, AuditHeadRow, AuditNodeRow, AuditStateRow, Bound
from rlsec.registry.rows import state_of

__all__ = [
    "GENESIS",
    "Entry",
    "LogKey",
    "LogPublicKey",
    "LogReport",
    "SignedHead",
    "append",
    "bounded",
    "chain",
    "consistency",
    "entries",
    "head_message",
    "inclusion",
    "latest_head",
    "now",
    "ocsf_event",
    "timestamp",
    "verify_log",
]

#: leaf format 2 adds ``state``: the rows the entry's change set, by key, with their digests
#: (:mod:`rlsec.registry.state`); format 1 leaves (no state) still verify
_LEAF_VERSION = 2
_LEAF_VERSIONS = (1, 2)


def timestamp(when: datetime) -> str:
    """A UTC time as the log writes it: ISO 8601, microseconds, ``Z`` (so that two of them
    compare as text in time order)."""
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def now() -> str:
    """The current UTC time as the log writes it."""
    return timestamp(datetime.now(UTC))


GENESIS = bytes(32)


def head_message(size: int, root: bytes, at: str, prev: bytes = GENESIS) -> bytes:
    """The bytes a tree head's signature covers. ``prev`` chains the heads: the SHA-256 of
    the previous head's message and signature (:func:`chain`), zeros for the first."""
    return b"rlsec-audit-tree-head:v1\n%d\n%s\n%s\n%s\n" % (
        size,
        root.hex().encode(),
        at.encode(),
        prev.hex().encode(),
    )


def chain(size: int, root: bytes, at: str, prev: bytes, signature: bytes) -> bytes:
    """The link the next head's ``prev`` must carry: SHA-256 of this head's message and
    signature. Verifying the newest head's signature and every link verifies every head."""
    return hashlib.sha256(head_message(size, root, at, prev) + signature).digest()


class LogPublicKey:
    """The log key's public half: verifies tree heads."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise ConfigError(f"expected a 32-byte Ed25519 public key, got {len(raw)} bytes")
        self.raw = raw
        self._key = Ed25519PublicKey.from_public_bytes(raw)
        self.key_id = hashlib.sha256(raw).hexdigest()

    @classmethod
    def from_pem(cls, pem: bytes) -> LogPublicKey:
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"expected a PEM Ed25519 public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"expected an Ed25519 public key, got {type(key).__name__}")
        return cls(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    def pem(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify_head(self, size: int, root: bytes, at: str, prev: bytes, signature: bytes) -> None:
        """Raises :class:`VerificationError` unless ``signature`` signs this head."""
        try:
            self._key.verify(signature, head_message(size, root, at, prev))
        except InvalidSignature:
            raise VerificationError(
                f"the tree head at size {size} is not signed by log key {self.key_id[:16]}..."
            ) from None


class LogKey:
    """The log's Ed25519 signing key (tree heads)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> LogKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: bytes) -> LogKey:
        try:
            key = serialization.load_pem_private_key(pem, None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"expected a PEM Ed25519 private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"expected an Ed25519 private key, got {type(key).__name__}")
        return cls(key)

    def pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public(self) -> LogPublicKey:
        return LogPublicKey(
            self._key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


@dataclass(frozen=True)
class Entry:
    """One audit entry, as recorded."""

    seq: int
    at: str
    actor: str
    action: str
    target: str
    outcome: str
    before: Any
    after: Any
    detail: Mapping[str, Any]
    state: Mapping[str, str] = field(default_factory=dict)
    v: int = _LEAF_VERSION

    def leaf(self) -> bytes:
        """Canonical JSON: the bytes the Merkle leaf hash is taken over."""
        body: dict[str, Any] = {
            "v": self.v,
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "before": self.before,
            "after": self.after,
            "detail": dict(self.detail),
        }
        if self.v >= 2:
            body["state"] = dict(self.state)
        return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def from_row(cls, row: AuditEntryRow) -> Entry:
        """Parse a row's leaf and check its indexed columns agree with it.

        Raises:
            VerificationError: the leaf is malformed or disagrees with the row's columns.
        """
        try:
            body = json.loads(row.leaf)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise VerificationError(f"audit entry {row.seq}: its leaf is not JSON") from None
        if not isinstance(body, dict) or body.get("v") not in _LEAF_VERSIONS:
            raise VerificationError(f"audit entry {row.seq}: unknown leaf format")
        try:
            entry = cls(
                v=body["v"],
                state=body["state"] if body["v"] >= 2 else {},
                seq=body["seq"],
                at=body["at"],
                actor=body["actor"],
                action=body["action"],
                target=body["target"],
                outcome=body["outcome"],
                before=body["before"],
                after=body["after"],
                detail=body["detail"],
            )
        except KeyError as exc:
            raise VerificationError(f"audit entry {row.seq}: its leaf lacks {exc}") from None
        columns = (row.seq, row.at, row.actor, row.action, row.target, row.outcome)
        if columns != (entry.seq, entry.at, entry.actor, entry.action, entry.target, entry.outcome):
            raise VerificationError(
                f"audit entry {row.seq}: its columns do not match its hashed leaf "
                f"(leaf says entry {entry.seq}, {entry.action} on {entry.target} by {entry.actor})"
            )
        if entry.leaf() != bytes(row.leaf):
            raise VerificationError(f"audit entry {row.seq}: its leaf is not in canonical form")
        return entry


@dataclass(frozen=True)
class SignedHead:
    """A tree head: the log's size and Merkle root at a time, chained to the previous head
    and signed by the log's key."""

    size: int
    root: bytes
    at: str
    key_id: str
    signature: bytes
    prev: bytes = GENESIS

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "root": self.root.hex(),
            "at": self.at,
            "prev": self.prev.hex(),
            "key_id": self.key_id,
            "signature": self.signature.hex(),
        }

    def verify(self, public: LogPublicKey) -> None:
        """Raises :class:`VerificationError` unless the log key signed this head."""
        if self.key_id != public.key_id:
            raise VerificationError(
                f"tree head at size {self.size} names key {self.key_id[:16]}..., "
                f"not the log key {public.key_id[:16]}..."
            )
        public.verify_head(self.size, self.root, self.at, self.prev, self.signature)

    @classmethod
    def from_dict(cls, d: Any) -> SignedHead:
        try:
            return cls(
                size=int(d["size"]),
                root=bytes.fromhex(d["root"]),
                at=str(d["at"]),
                key_id=str(d["key_id"]),
                signature=bytes.fromhex(d["signature"]),
                prev=bytes.fromhex(d["prev"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"expected a tree head with size, root, at, prev, key_id and signature: {exc}"
            ) from None


class _SessionNodes:
    """The Merkle node store in the database, with nodes not yet written laid over it."""

    def __init__(self, session: Session, pending: Mapping[tuple[int, int], bytes] | None = None):
        self.session = session
        self.pending = dict(pending or {})

    def nodes(self, keys: Sequence[tuple[int, int]]) -> list[bytes]:
        want: dict[int, list[int]] = {}
        for lv, ix in keys:
            if (lv, ix) not in self.pending:
                want.setdefault(lv, []).append(ix)
        got: dict[tuple[int, int], bytes] = {}
        # one query, an OR of (level = l AND idx IN ...) terms, each served by the (level,
        # idx) key (a row-value IN over both columns is not index-backed on SQLite: measured
        # 280 ms per proof at 1e6 entries)
        terms = [
            and_(AuditNodeRow.level == lv, AuditNodeRow.idx.in_(idxs)) for lv, idxs in want.items()
        ]
        for start in range(0, len(terms), 50):
            rows = self.session.execute(
                select(AuditNodeRow.level, AuditNodeRow.idx, AuditNodeRow.hash).where(
                    or_(*terms[start : start + 50])
                )
            )
            got.update({(lv, ix): bytes(h) for lv, ix, h in rows})
        out = []
        for k in keys:
            h = self.pending.get(k, got.get(k))
            if h is None:
                raise LookupError(f"Merkle node {k} is missing from the audit log")
            out.append(h)
        return out


def append(
    session: Session,
    key: LogKey,
    *,
    actor: str,
    action: str,
    target: str,
    outcome: str = "ok",
    before: Any = None,
    after: Any = None,
    detail: Mapping[str, Any] | None = None,
    rows: Iterable[Bound] = (),
) -> Entry:
    """Append an entry in the caller's transaction (commits with it, or not at all).

    ``rows``: the bound rows the change set; the entry records their digests and each row
    records the entry (:mod:`rlsec.registry.state`)."""
    rows = list(rows)
    if rows:
        session.flush()  # primary keys and final column values
    state = session.execute(
        select(AuditStateRow).where(AuditStateRow.id == 1).with_for_update()
    ).scalar_one()
    seq = int(state.size)
    entry = Entry(
        seq,
        now(),
        bounded(actor, 128),
        action,
        bounded(target, 256),
        outcome,
        before,
        after,
        dict(detail or {}),
        state_of(rows),
    )
    for r in rows:
        r.audit_seq = seq
    leaf = entry.leaf()
    reader = _SessionNodes(session)
    new = merkle.completed_nodes(seq, merkle.leaf_hash(leaf), reader)
    session.add(
        AuditEntryRow(
            seq=seq,
            at=entry.at,
            actor=entry.actor,
            action=action,
            target=entry.target,
            outcome=outcome,
            leaf=leaf,
        )
    )
    session.add_all(AuditNodeRow(level=lv, idx=ix, hash=h) for lv, ix, h in new)
    root = merkle.root_at(seq + 1, _SessionNodes(session, {(lv, ix): h for lv, ix, h in new}))
    at = entry.at
    prev = GENESIS
    if seq > 0:
        last = session.get(AuditHeadRow, seq)
        if last is None:
            raise VerificationError(f"the signed tree head at size {seq} is missing")
        prev = chain(last.size, bytes(last.root), last.at, bytes(last.prev), bytes(last.signature))
    session.add(
        AuditHeadRow(
            size=seq + 1,
            root=root,
            at=at,
            prev=prev,
            key_id=key.public().key_id,
            signature=key.sign(head_message(seq + 1, root, at, prev)),
        )
    )
    state.size = seq + 1
    session.flush()
    return entry


def _head(row: AuditHeadRow) -> SignedHead:
    return SignedHead(
        row.size, bytes(row.root), row.at, row.key_id, bytes(row.signature), bytes(row.prev)
    )


def latest_head(session: Session) -> SignedHead | None:
    row = session.execute(
        select(AuditHeadRow).order_by(AuditHeadRow.size.desc()).limit(1)
    ).scalar_one_or_none()
    return None if row is None else _head(row)


def _head_at(session: Session, size: int) -> SignedHead:
    row = session.get(AuditHeadRow, size)
    if row is None:
        raise ConfigError(f"no signed tree head at size {size}")
    return _head(row)


def entries(session: Session, start: int = 0) -> Iterator[Entry]:
    """Every entry from ``start`` on, in order (parsed and checked against its columns)."""
    rows = session.execute(
        select(AuditEntryRow).where(AuditEntryRow.seq >= start).order_by(AuditEntryRow.seq)
    ).scalars()
    for row in rows:
        yield Entry.from_row(row)


def inclusion(
    session: Session, seq: int, size: int | None = None, *, public: LogPublicKey | None = None
) -> dict[str, Any]:
    """The inclusion proof of entry ``seq`` in the tree of the signed head at ``size``
    (default: the newest), with the entry and the head, checked (with ``public``, the head's
    signature too) before it is returned."""
    head = latest_head(session) if size is None else _head_at(session, size)
    if head is None:
        raise ConfigError("the audit log is empty")
    if public is not None:
        head.verify(public)
    if not 0 <= seq < head.size:
        raise ConfigError(f"entry must be in [0, {head.size}), got {seq}")
    row = session.get(AuditEntryRow, seq)
    if row is None:
        raise VerificationError(f"audit entry {seq} is missing")
    entry = Entry.from_row(row)
    proof = merkle.inclusion_proof(seq, head.size, _SessionNodes(session))
    merkle.verify_inclusion(merkle.leaf_hash(entry.leaf()), seq, head.size, proof, head.root)
    return {
        "entry": json.loads(entry.leaf()),
        "leaf_hash": merkle.leaf_hash(entry.leaf()).hex(),
        "index": seq,
        "tree_size": head.size,
        "proof": [h.hex() for h in proof],
        "head": head.to_dict(),
    }


def consistency(
    session: Session,
    old_size: int,
    new_size: int | None = None,
    *,
    public: LogPublicKey | None = None,
) -> dict[str, Any]:
    """The consistency proof between the signed heads at ``old_size`` and ``new_size``
    (checked, with ``public`` the heads' signatures too, before it is returned)."""
    new = latest_head(session) if new_size is None else _head_at(session, new_size)
    if new is None:
        raise ConfigError("the audit log is empty")
    old = _head_at(session, old_size)
    if public is not None:
        old.verify(public)
        new.verify(public)
    if old.size > new.size:
        raise ConfigError(f"old size {old.size} is larger than new size {new.size}")
    proof = merkle.consistency_proof(old.size, new.size, _SessionNodes(session))
    merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
    return {"old": old.to_dict(), "new": new.to_dict(), "proof": [h.hex() for h in proof]}


@dataclass(frozen=True)
class LogReport:
    """What :func:`verify_log` checked."""

    entries: int
    heads: int
    nodes: int
    head: SignedHead | None
    #: row key -> (sequence number, digest) of the last entry that set the row
    state: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    #: bound rows checked against ``state`` (0 when only the log was verified)
    rows: int = 0


def verify_log(
    session: Session,
    public: LogPublicKey,
    *,
    witness: SignedHead | None = None,
    batch: int = 20_000,
) -> LogReport:
    """Recompute and check the whole log in one streaming pass; raises on the first problem.

    Checks, for every entry in order: its sequence number, its columns against its hashed
    leaf, and the signed head at its size (the root recomputed from the entries, the link to
    the previous head); then the newest head's signature (which, through the links, covers
    every head), the recorded size, every stored Merkle node, and the saved ``witness``.

    Args:
        public: the log's public key.
        witness: a head saved earlier outside the database: the log must still contain it
            (same root at its size) and may only have grown since.

    Raises:
        VerificationError: names the first bad entry, node or head.
    """
    acc = merkle.RootAccumulator()
    leaves: list[bytes] = []
    conn = session.connection()  # plain rows: no ORM objects for millions of entries
    head_rows = conn.execute(
        select(
            AuditHeadRow.size,
            AuditHeadRow.root,
            AuditHeadRow.at,
            AuditHeadRow.key_id,
            AuditHeadRow.signature,
            AuditHeadRow.prev,
        )
        .order_by(AuditHeadRow.size)
        .execution_options(yield_per=batch)
    )
    heads = iter(head_rows)
    entry_rows = conn.execute(
        select(
            AuditEntryRow.seq,
            AuditEntryRow.at,
            AuditEntryRow.actor,
            AuditEntryRow.action,
            AuditEntryRow.target,
            AuditEntryRow.outcome,
            AuditEntryRow.leaf,
        )
        .order_by(AuditEntryRow.seq)
        .execution_options(yield_per=batch)
    )
    link = GENESIS
    last: tuple[Any, ...] | None = None
    latest: dict[str, tuple[int, str]] = {}
    expected = 0
    kid = public.key_id
    for seq, at, actor, action, target, outcome, leaf in entry_rows:
        if seq != expected:
            raise VerificationError(
                f"audit entry {expected} is missing (the next entry is {seq})"
                if seq > expected
                else f"audit entry {seq} appears out of order"
            )
        leaf = bytes(leaf)
        body = _check_columns(seq, (seq, at, actor, action, target, outcome), leaf)
        said = body.get("state", {})
        if not isinstance(said, dict):
            raise VerificationError(f"audit entry {seq}: its state is not an object")
        for k, d in said.items():
            latest[k] = (seq, d)
        h = merkle.leaf_hash(leaf)
        acc.append(h)
        leaves.append(h)
        expected += 1
        row = next(heads, None)
        if row is None or row[0] != expected:
            raise VerificationError(f"the signed tree head at size {expected} is missing")
        size, root, hat, hkid, sig, prev = row
        root, sig, prev = bytes(root), bytes(sig), bytes(prev)
        if prev != link:
            raise VerificationError(
                f"tree head at size {expected} does not link to the head before it: "
                f"a head at or before {expected} was modified"
            )
        if root != acc.root():
            raise VerificationError(
                f"tree head at size {expected} does not match the entries: "
                f"an entry before {expected} was modified, removed, reordered or inserted"
            )
        if hkid != kid:
            raise VerificationError(
                f"tree head at size {expected} names key {hkid[:16]}..., "
                f"not the log key {kid[:16]}..."
            )
        link = chain(size, root, hat, prev, sig)
        last = (size, root, hat, hkid, sig, prev)
    extra = next(heads, None)
    if extra is not None:
        raise VerificationError(
            f"tree head at size {extra[0]} is signed but the log has only {expected} "
            f"entries: entries were deleted from the end"
        )
    head = None if last is None else SignedHead(*last)
    if head is not None:
        head.verify(public)
    state = session.get(AuditStateRow, 1)
    if state is None or state.size != expected:
        raise VerificationError(
            f"the log's recorded size is {None if state is None else state.size}, "
            f"but it holds {expected} entries"
        )
    n_nodes = _verify_nodes(session, leaves, batch)
    if witness is not None:
        _check_witness(session, witness, public, expected)
    return LogReport(entries=expected, heads=expected, nodes=n_nodes, head=head, state=latest)


_COLUMNS = ("seq", "at", "actor", "action", "target", "outcome")


def _check_columns(seq: int, columns: tuple[Any, ...], leaf: bytes) -> dict[str, Any]:
    """An entry's indexed columns must say what its hashed leaf says; returns the leaf."""
    try:
        body = json.loads(leaf)
        said = tuple(body[k] for k in _COLUMNS)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise VerificationError(f"audit entry {seq}: its leaf is not a valid entry") from None
    if columns != said or body.get("v") not in _LEAF_VERSIONS:
        raise VerificationError(
            f"audit entry {seq}: its columns do not match its hashed leaf "
            f"(leaf says entry {said[0]}, {said[3]} on {said[4]} by {said[2]})"
        )
    return dict(body)


def bounded(text: str, limit: int) -> str:
    """``text`` as the log may hold it: NUL and other control characters escaped, at most
    ``limit`` characters (a longer one is cut and says how long it was), so a hostile
    reference can neither break the database driver nor flood the log."""
    whole = str(text)
    clean = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in whole[:limit])
    if len(whole) <= limit and len(clean) <= limit:
        return clean
    tail = f"...({len(whole)} chars)"
    return clean[: limit - len(tail)] + tail


def _verify_nodes(session: Session, leaves: list[bytes], batch: int) -> int:
    """Every stored subtree hash must be the one the entries give, and none may be missing
    (proofs are built from them)."""
    level = leaves
    lv = 0
    count = 0
    rows = iter(
        session.connection().execute(
            select(AuditNodeRow.level, AuditNodeRow.idx, AuditNodeRow.hash)
            .order_by(AuditNodeRow.level, AuditNodeRow.idx)
            .execution_options(yield_per=batch)
        )
    )
    row = next(rows, None)
    while level:
        for ix, h in enumerate(level):
            if row is None or (row.level, row.idx) != (lv, ix):
                raise VerificationError(f"Merkle node ({lv}, {ix}) is missing from the audit log")
            if bytes(row.hash) != h:
                raise VerificationError(f"Merkle node ({lv}, {ix}) does not match the entries")
            count += 1
            row = next(rows, None)
        sha256 = hashlib.sha256
        level = [  # merkle.node_hash, without its argument checks: these are our own hashes
            sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        lv += 1
    if row is not None:
        raise VerificationError(f"Merkle node ({row.level}, {row.idx}) matches no entries")
    return count


def _check_witness(session: Session, witness: SignedHead, public: LogPublicKey, size: int) -> None:
    witness.verify(public)
    if witness.size > size:
        raise VerificationError(
            f"the saved head has {witness.size} entries but the log now has {size}: "
            f"entries were deleted from the end"
        )
    stored = session.get(AuditHeadRow, witness.size)
    if stored is None or bytes(stored.root) != witness.root:
        raise VerificationError(
            f"the log's tree at size {witness.size} does not match the saved head"
        )


#: OCSF schema version of the exported events (API Activity, class 6003)
OCSF_VERSION = "1.6.0"
_CREATE = ("push", "create", "register", "attach", "approve", "init")
_DELETE = ("delete",)


def ocsf_event(entry: Entry) -> dict[str, Any]:
    """An entry as an OCSF API Activity event (class 6003), with its Merkle leaf hash as
    ``metadata.uid`` so a SIEM record can be proved against the log."""
    from rlsec._version import __version__

    operation = entry.action.removeprefix("denied:")
    verb = operation.rsplit(".", 1)[-1]
    if entry.action.startswith("denied:") and verb in ("read", "audit", "authenticate"):
        activity, name = 2, "Read"
    elif verb in _CREATE:
        activity, name = 1, "Create"
    elif verb in _DELETE:
        activity, name = 4, "Delete"
    else:
        activity, name = 3, "Update"
    ok = entry.outcome == "ok"
    when = datetime.fromisoformat(entry.at.replace("Z", "+00:00"))
    return {
        "category_uid": 6,
        "category_name": "Application Activity",
        "class_uid": 6003,
        "class_name": "API Activity",
        "activity_id": activity,
        "activity_name": name,
        "type_uid": 600300 + activity,
        "severity_id": 1 if ok else 3,
        "severity": "Informational" if ok else "Medium",
        "time": int(when.timestamp() * 1000),
        "status_id": 1 if ok else 2,
        "status": "Success" if ok else "Failure",
        "status_detail": None
        if ok
        else entry.detail.get("reason") or "; ".join(entry.detail.get("missing", [])) or None,
        "message": f"{entry.actor} {entry.action} {entry.target}: {entry.outcome}",
        "actor": {"user": {"name": entry.actor}},
        "api": {"operation": entry.action, "service": {"name": "rlsec registry"}},
        "src_endpoint": {"name": "rlsec registry client"},
        "resources": [
            {
                "name": entry.target,
                "type": entry.target.split(":", 1)[0] if ":" in entry.target else "policy version",
            }
        ],
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "rlsec", "vendor_name": "rlsec", "version": __version__},
            "log_name": "rlsec registry audit log",
            "uid": merkle.leaf_hash(entry.leaf()).hex(),
            "sequence": entry.seq,
            "original_time": entry.at,
        },
        "unmapped": {
            "before": entry.before,
            "after": entry.after,
            "detail": dict(entry.detail),
            "outcome": entry.outcome,
        },
    }
