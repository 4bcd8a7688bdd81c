"""Registry test helpers."""

from __future__ import annotations

from typing import Any

from rlsec.registry import Registry, signing


class Team:
    """An initialised registry with one principal per role, their tokens, and the trainer's
    and the evaluator's registered signing keys."""

    def __init__(self, reg: Registry) -> None:
        self.reg = reg
        self.admin = reg.init("alice")
        self.tokens = {"admin": self.admin}
        for role in ("viewer", "trainer", "evaluator", "reviewer", "deployer", "auditor"):
            reg.create_principal(self.admin, role, role)
            self.tokens[role] = reg.create_token(self.admin, role)
        reg.create_principal(self.admin, "reviewer2", "reviewer")
        self.tokens["reviewer2"] = reg.create_token(self.admin, "reviewer2")
        self.key = signing.generate_key()
        reg.register_key(self.tokens["trainer"], signing.public_pem(self.key))
        self.evaluator_key = signing.generate_key()
        reg.register_key(self.tokens["evaluator"], signing.public_pem(self.evaluator_key))

    def attach(self, ref: str, body: bytes) -> str:
        """Attach evidence as the evaluator, signed with the evaluator's key (the evidence
        the default gates count)."""
        return self.reg.attach(self.tokens["evaluator"], ref, body, key=self.evaluator_key)

    def __getitem__(self, role: str) -> str:
        return self.tokens[role]


def forge(reg: Registry, table: type, where: Any, **values: Any) -> None:
    """Change rows of ``table`` matching ``where`` *and* log the change with the log's own
    key, as an attacker who also holds that key (or a bug inside the registry) would: the
    state binding then passes, so what remains to refuse the row is every other check."""
    from sqlalchemy import select

    from rlsec.registry import audit

    with reg._write(checked=False) as s:
        rows = list(s.execute(select(table).where(where)).scalars())
        assert rows, "nothing to forge"
        for row in rows:
            for k, v in values.items():
                setattr(row, k, v)
        audit.append(s, reg.log_key(), actor="mallory", action="forged", target="forged", rows=rows)
