"""The registry's first schema: principals, tokens, keys, policies, versions, stages,
evidence, approvals and the Merkle audit log.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

T = sa.String(40)  # ISO 8601 UTC timestamps


def upgrade() -> None:
    op.create_table(
        "principals",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("roles", sa.String(256), nullable=False),
        sa.Column("created_at", T, nullable=False),
        sa.Column("disabled_at", T, nullable=True),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("principal_id", sa.Integer, sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("created_at", T, nullable=False),
        sa.Column("expires_at", T, nullable=True),
        sa.Column("revoked_at", T, nullable=True),
    )
    op.create_table(
        "signing_keys",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("principal_id", sa.Integer, sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("public_pem", sa.Text, nullable=False),
        sa.Column("registered_at", T, nullable=False),
        sa.Column("revoked_at", T, nullable=True),
        sa.Column("revoked_reason", sa.Text, nullable=True),
    )
    op.create_table(
        "policies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("created_at", T, nullable=False),
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("policy_id", sa.Integer, sa.ForeignKey("policies.id"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("bundle", sa.LargeBinary, nullable=False),
        sa.Column("files", sa.JSON, nullable=False),
        sa.Column("env_id", sa.String(128), nullable=True),
        sa.Column(
            "signer_key_id", sa.String(64), sa.ForeignKey("signing_keys.key_id"), nullable=False
        ),
        sa.Column("pushed_by", sa.Integer, sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("pushed_at", T, nullable=False),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=True),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.UniqueConstraint("policy_id", "number"),
    )
    op.create_index("ix_versions_policy_stage", "versions", ["policy_id", "stage"])
    op.create_table(
        "stage_changes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("policy_id", sa.Integer, sa.ForeignKey("policies.id"), nullable=False),
        sa.Column("from_stage", sa.String(16), nullable=False),
        sa.Column("to_stage", sa.String(16), nullable=False),
        sa.Column("by", sa.Integer, sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("at", T, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_stage_changes_policy", "stage_changes", ["policy_id", "id"])
    op.create_table(
        "evidence",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("attached_by", sa.Integer, sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("attached_at", T, nullable=False),
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("reviewer_id", sa.Integer, sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("at", T, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.UniqueConstraint("version_id", "stage", "reviewer_id"),
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.JSON, nullable=False),
    )
    op.create_table(
        "audit_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
    )
    op.bulk_insert(
        sa.table("audit_state", sa.column("id", sa.Integer), sa.column("size", sa.Integer)),
        [{"id": 1, "size": 0}],
    )
    op.create_table(
        "audit_entries",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("at", T, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("leaf", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "audit_nodes",
        sa.Column("level", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "audit_heads",
        sa.Column("size", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("root", sa.LargeBinary, nullable=False),
        sa.Column("at", T, nullable=False),
        sa.Column("prev", sa.LargeBinary, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "audit_heads",
        "audit_nodes",
        "audit_entries",
        "audit_state",
        "settings",
        "approvals",
        "evidence",
        "stage_changes",
        "versions",
        "policies",
        "signing_keys",
        "tokens",
        "principals",
    ):
        op.drop_table(table)
