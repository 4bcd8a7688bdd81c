"""Alembic environment: runs on the connection rlsec.registry.db.upgrade passes in."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only rlsec.registry.db.upgrade runs migrations
    raise RuntimeError("rlsec's migrations run through rlsec.registry.db.upgrade(engine)")
context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
