"""The registry's tables (SQLAlchemy 2) and its engine: SQLite by default, PostgreSQL by URL.

The schema is created and upgraded only by the Alembic migrations in
``rlsec/registry/migrations`` (:func:`upgrade`), never by ``create_all``, so a database made
by one release is upgraded in place by the next. Rows that record history are never updated:
versions, evidence, approvals, audit entries, tree heads and Merkle nodes are insert-only;
what changes (a version's stage, a token's or key's revocation) is a column whose every
change has its audit entry in the same transaction.

Every row that decides an authorisation (the :class:`Bound` tables) carries ``audit_seq``,
the sequence number of the audit entry that last set it; that entry records the SHA-256 of
the row's columns (:mod:`rlsec.registry.state`), so a row edited in the database no longer
matches its entry.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from rlsec.errors import ConfigError

__all__ = [
    "ApprovalRow",
    "AuditEntryRow",
    "AuditHeadRow",
    "AuditNodeRow",
    "AuditStateRow",
    "Base",
    "Bound",
    "EvidenceRow",
    "KeyRow",
    "PolicyRow",
    "PrincipalRow",
    "ProposalRow",
    "SettingRow",
    "StageChangeRow",
    "TokenRow",
    "VersionRow",
    "database_url",
    "make_engine",
    "upgrade",
]


class Base(DeclarativeBase):
    pass


class Bound:
    """A row bound to the audit log: ``audit_seq`` is the entry that last set it (its
    columns' digest is in that entry)."""

    audit_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)


class PrincipalRow(Bound, Base):
    """A person or a service; ``roles`` is a sorted, comma-separated list."""

    __tablename__ = "principals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    roles: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[str] = mapped_column(String(40))
    disabled_at: Mapped[str | None] = mapped_column(String(40), nullable=True)


class TokenRow(Bound, Base):
    """An API token: only the SHA-256 of its secret is stored."""

    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id"))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[str] = mapped_column(String(40))
    expires_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    revoked_at: Mapped[str | None] = mapped_column(String(40), nullable=True)


class KeyRow(Bound, Base):
    """A trusted signing key of a principal, by id (SHA-256 of its public PEM)."""

    __tablename__ = "signing_keys"
    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id"))
    public_pem: Mapped[str] = mapped_column(Text)
    registered_at: Mapped[str] = mapped_column(String(40))
    revoked_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    revoked_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class PolicyRow(Bound, Base):
    __tablename__ = "policies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[str] = mapped_column(String(40))


class VersionRow(Bound, Base):
    """An immutable version: its signed bundle, file digests and provenance never change;
    only ``stage`` moves (and each move is a :class:`StageChangeRow` and an audit entry)."""

    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("policy_id", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id"))
    number: Mapped[int] = mapped_column(Integer)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    bundle: Mapped[bytes] = mapped_column(LargeBinary)
    files: Mapped[dict[str, Any]] = mapped_column(JSON)
    env_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    signer_key_id: Mapped[str] = mapped_column(ForeignKey("signing_keys.key_id"))
    pushed_by: Mapped[int] = mapped_column(ForeignKey("principals.id"))
    pushed_at: Mapped[str] = mapped_column(String(40))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("versions.id"), nullable=True)
    stage: Mapped[str] = mapped_column(String(16))
    #: raised by every quarantine and release: approvals and evidence of an earlier epoch
    #: no longer count
    epoch: Mapped[int] = mapped_column(Integer, server_default="0")


class StageChangeRow(Bound, Base):
    """Every stage move of a version, in order (rollback reads production's history)."""

    __tablename__ = "stage_changes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"))
    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id"))
    from_stage: Mapped[str] = mapped_column(String(16))
    to_stage: Mapped[str] = mapped_column(String(16))
    by: Mapped[int] = mapped_column(ForeignKey("principals.id"))
    at: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text)


class EvidenceRow(Bound, Base):
    """A red-team or verification result attached to a version (the JSON, byte for byte),
    with the attaching principal's signature over it (``bundle``, by ``signer_key_id``)."""

    __tablename__ = "evidence"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"))
    kind: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    attached_by: Mapped[int] = mapped_column(ForeignKey("principals.id"))
    attached_at: Mapped[str] = mapped_column(String(40))
    epoch: Mapped[int] = mapped_column(Integer, server_default="0")
    signer_key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    bundle: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class ApprovalRow(Bound, Base):
    __tablename__ = "approvals"
    __table_args__ = (
        UniqueConstraint(
            "version_id", "stage", "reviewer_id", "epoch", name="uq_approvals_once_per_epoch"
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"))
    stage: Mapped[str] = mapped_column(String(16))
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("principals.id"))
    at: Mapped[str] = mapped_column(String(40))
    comment: Mapped[str] = mapped_column(Text)
    epoch: Mapped[int] = mapped_column(Integer, server_default="0")


class SettingRow(Bound, Base):
    """Registry-wide settings set by an admin (the gate policy), each change audited."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


class ProposalRow(Bound, Base):
    """An admin action waiting for the admin quorum: what (``action``, ``payload``), who
    proposed it, who approved it (principal ids, the proposer first), and when it was done."""

    __tablename__ = "admin_proposals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    action: Mapped[str] = mapped_column(String(32))
    payload: Mapped[Any] = mapped_column(JSON)
    proposed_by: Mapped[int] = mapped_column(ForeignKey("principals.id"))
    at: Mapped[str] = mapped_column(String(40))
    approvers: Mapped[Any] = mapped_column(JSON)
    executed_at: Mapped[str | None] = mapped_column(String(40), nullable=True)


class AuditStateRow(Base):
    """One row: the log's size. Every writer locks it first, so entries get gapless,
    ordered sequence numbers under concurrency (row lock on PostgreSQL, the database write
    lock on SQLite)."""

    __tablename__ = "audit_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(Integer)


class AuditEntryRow(Base):
    """One audit entry; ``leaf`` is the canonical JSON the Merkle leaf hash is taken over."""

    __tablename__ = "audit_entries"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256))
    outcome: Mapped[str] = mapped_column(String(16))
    leaf: Mapped[bytes] = mapped_column(LargeBinary)


class AuditNodeRow(Base):
    """The hash of a complete perfect subtree of the log's Merkle tree (level 0: leaves)."""

    __tablename__ = "audit_nodes"
    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class AuditHeadRow(Base):
    """A signed tree head: the log's size and root, the link to the previous head, signed by
    the log's key."""

    __tablename__ = "audit_heads"
    size: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary)
    at: Mapped[str] = mapped_column(String(40))
    prev: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[bytes] = mapped_column(LargeBinary)


Index("ix_versions_policy_stage", VersionRow.policy_id, VersionRow.stage)
Index("ix_tokens_secret", TokenRow.secret_sha256, unique=True)
Index("ix_stage_changes_policy", StageChangeRow.policy_id, StageChangeRow.id)


def database_url(home: Path) -> str:
    """``RLSEC_DB`` if set, else the SQLite file ``home/registry.db``."""
    url = os.environ.get("RLSEC_DB")
    if url:
        return url
    return f"sqlite:///{home / 'registry.db'}"


def make_engine(url: str, *, reads: bool = False) -> Engine:
    """An engine for SQLite (WAL, foreign keys, a 30 s busy timeout, and ``BEGIN IMMEDIATE``
    so that writers queue instead of failing to upgrade a read lock; with ``reads``, plain
    deferred transactions, which WAL lets run beside a writer) or PostgreSQL
    (``postgresql+psycopg://``; a bare ``postgresql://`` is taken to mean psycopg 3).

    Raises:
        ConfigError: any other database.
    """
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("sqlite:"):
        engine = create_engine(url, connect_args={"timeout": 30, "isolation_level": None})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi: Any, _record: Any) -> None:
            cur = dbapi.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # durable commits
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN" if reads else "BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql+psycopg://"):
        return create_engine(url, pool_pre_ping=True)
    raise ConfigError(
        f"RLSEC_DB must be a sqlite:/// or postgresql:// URL, got {url.split(':', 1)[0]}:..."
    )


#: the PostgreSQL advisory lock that serialises migrations (any fixed 64-bit number)
_MIGRATION_LOCK = 0x726C736563  # "rlsec"


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent). Processes migrating at the
    same time take turns: SQLite's ``BEGIN IMMEDIATE`` and, on PostgreSQL, an advisory lock
    held for the transaction (without it, two first runs both create the tables and one
    fails)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
