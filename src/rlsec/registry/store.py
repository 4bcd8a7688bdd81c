"""The governed policy registry: every operation authenticated, authorised and audited.

A :class:`Registry` is a database (SQLite under ``RLSEC_HOME`` by default, PostgreSQL by
``RLSEC_DB``), a content-addressed artifact directory and the audit log's signing key. Every
mutation runs in one transaction that first takes the audit log's lock, makes its change and
appends its audit entry, so the two commit together or not at all; every refusal is appended
in a transaction of its own before :class:`~rlsec.errors.AccessDenied` is raised. Every row
that decides an authorisation is bound to the entry that last set it
(:mod:`rlsec.registry.state`) and checked as it is read.

References to versions: ``name@3`` (a number), ``name@production`` (a stage), or ``name``
(the newest version).

The operations are grouped by concern: :mod:`~rlsec.registry.principals` (set-up,
principals, tokens, keys, gates), :mod:`~rlsec.registry.versions` (push, read, delete),
:mod:`~rlsec.registry.promotion` (evidence, approvals, stage moves); this module adds the
audit log's queries.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from rlsec.registry import audit
from rlsec.registry._base import STAGES, VersionInfo, check_count
from rlsec.registry.access import Principal
from rlsec.registry.promotion import Promotion
from rlsec.registry.state import verify_rows

__all__ = ["STAGES", "Registry", "VersionInfo"]

_MAX_SIZE = 2**62


class Registry(Promotion):
    """A registry at ``home`` (default ``RLSEC_HOME``), its database at ``url`` (default
    ``RLSEC_DB``, else ``home/registry.db``).

    Opening does not create anything: :meth:`init` does, once.
    """

    def audit_verify(
        self, token: str | None, *, witness: audit.SignedHead | None = None
    ) -> audit.LogReport:
        """Verify the whole log, then replay it against the state: every bound row must be
        exactly as the last entry that set it says."""
        public = self.log_public()

        def look(s: Session, _p: Principal) -> audit.LogReport:
            report = audit.verify_log(s, public, witness=witness)
            rows = verify_rows(s, report.state)
            return audit.LogReport(
                entries=report.entries,
                heads=report.heads,
                nodes=report.nodes,
                head=report.head,
                state=report.state,
                rows=rows,
            )

        return self._query(token, "audit", "audit", look)

    def audit_head(self, token: str | None) -> audit.SignedHead | None:
        return self._query(token, "audit", "audit", lambda s, _p: audit.latest_head(s))

    def audit_inclusion(
        self, token: str | None, seq: int, size: int | None = None
    ) -> dict[str, Any]:
        check_count(seq, "an entry number", 0, _MAX_SIZE)
        if size is not None:
            check_count(size, "a tree size", 1, _MAX_SIZE)
        public = self.log_public()
        return self._query(
            token, "audit", "audit", lambda s, _p: audit.inclusion(s, seq, size, public=public)
        )

    def audit_consistency(
        self, token: str | None, old_size: int, new_size: int | None = None
    ) -> dict[str, Any]:
        check_count(old_size, "a tree size", 1, _MAX_SIZE)
        if new_size is not None:
            check_count(new_size, "a tree size", 1, _MAX_SIZE)
        public = self.log_public()
        return self._query(
            token,
            "audit",
            "audit",
            lambda s, _p: audit.consistency(s, old_size, new_size, public=public),
        )

    def audit_entries(self, token: str | None, start: int = 0) -> list[audit.Entry]:
        check_count(start, "an entry number", 0, _MAX_SIZE)
        return self._query(token, "audit", "audit", lambda s, _p: list(audit.entries(s, start)))
