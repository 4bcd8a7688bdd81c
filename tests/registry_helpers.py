"""Registry test helpers."""

from __future__ import annotations

from rlsec.registry import Registry, signing


class Team:
    """An initialised registry with one principal per role, their tokens, and a trainer's
    registered signing key."""

    def __init__(self, reg: Registry) -> None:
        self.reg = reg
        self.admin = reg.init("alice")
        self.tokens = {"admin": self.admin}
        for role in ("viewer", "trainer", "reviewer", "deployer", "auditor"):
            reg.create_principal(self.admin, role, role)
            self.tokens[role] = reg.create_token(self.admin, role)
        reg.create_principal(self.admin, "reviewer2", "reviewer")
        self.tokens["reviewer2"] = reg.create_token(self.admin, "reviewer2")
        self.key = signing.generate_key()
        reg.register_key(self.tokens["trainer"], signing.public_pem(self.key))

    def __getitem__(self, role: str) -> str:
        return self.tokens[role]
