"""Bind the rows that decide authorisations to the audit log; epochs and signed evidence.

* ``audit_seq`` on every bound table: the audit entry that last set the row (which records
  the SHA-256 of its columns);
* ``epoch`` on versions, evidence and approvals: a quarantine or release raises the version's
  epoch, and only approvals and evidence of the current epoch count;
* ``signer_key_id`` and ``bundle`` on evidence: the attaching principal's signature.

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


def downgrade() -> None:
    with op.batch_alter_table("evidence") as batch:
        batch.drop_column("bundle")
        batch.drop_column("signer_key_id")
    for table in ("versions", "evidence", "approvals"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("epoch")
    for table in BOUND:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("audit_seq")
