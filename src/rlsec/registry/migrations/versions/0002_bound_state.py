"""Bind the rows that decide authorisations to the audit log; epochs and signed evidence.

* ``audit_seq`` on every bound table: the audit entry that last set the row (which records
  the SHA-256 of its columns);
* ``epoch`` on versions, evidence and approvals: a quarantine or release raises the version's
  epoch, and only approvals and evidence of the current epoch count;
* ``signer_key_id`` and ``bundle`` on evidence: the attaching principal's signature;
* one approval per reviewer, stage *and epoch* (a released version is approved afresh);
* ``admin_proposals``: admin actions waiting for the admin quorum;
* tokens found by the digest of their secret (a unique index), so that an unknown id and a
  wrong secret are the same miss.

Rows made before this revision have no binding; :meth:`rlsec.registry.Registry.upgrade`
binds them in one audited entry.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UNIQUE = "uq_approvals_once_per_epoch"
OLD_UNIQUE = "approvals_version_id_stage_reviewer_id_key"
BOUND = (
    "principals",
    "tokens",
    "signing_keys",
    "policies",
    "versions",
    "stage_changes",
    "evidence",
    "approvals",
    "settings",
)


def upgrade() -> None:
    for table in BOUND:
        op.add_column(table, sa.Column("audit_seq", sa.Integer, nullable=True))
    for table in ("versions", "evidence", "approvals"):
        op.add_column(table, sa.Column("epoch", sa.Integer, nullable=False, server_default="0"))
    op.add_column("evidence", sa.Column("signer_key_id", sa.String(64), nullable=True))
    op.add_column("evidence", sa.Column("bundle", sa.LargeBinary, nullable=True))
    op.create_index("ix_tokens_secret", "tokens", ["secret_sha256"], unique=True)
    op.create_table(
        "admin_proposals",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("proposed_by", sa.Integer, sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("approvers", sa.JSON, nullable=False),
        sa.Column("executed_at", sa.String(40), nullable=True),
        sa.Column("audit_seq", sa.Integer, nullable=True),
    )
    # 0001's approvals constraint has no name of its own: PostgreSQL named it after its
    # columns; on SQLite it is found by reflection under a naming convention (batch mode
    # copies the table)
    new = ["version_id", "stage", "reviewer_id", "epoch"]
    if op.get_bind().dialect.name == "sqlite":
        convention = {"uq": "uq_%(table_name)s_%(column_0_name)s"}
        with op.batch_alter_table("approvals", naming_convention=convention) as batch:
            batch.drop_constraint("uq_approvals_version_id", type_="unique")
            batch.create_unique_constraint(UNIQUE, new)
    else:
        op.drop_constraint(OLD_UNIQUE, "approvals", type_="unique")
        op.create_unique_constraint(UNIQUE, "approvals", new)


def downgrade() -> None:
    op.drop_table("admin_proposals")
    op.drop_index("ix_tokens_secret", "tokens")
    with op.batch_alter_table("approvals") as batch:
        batch.drop_constraint(UNIQUE, type_="unique")
        batch.create_unique_constraint(OLD_UNIQUE, ["version_id", "stage", "reviewer_id"])
    with op.batch_alter_table("evidence") as batch:
        batch.drop_column("bundle")
        batch.drop_column("signer_key_id")
    for table in ("versions", "evidence", "approvals"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("epoch")
    for table in BOUND:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("audit_seq")
