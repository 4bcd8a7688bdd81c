"""Every (role, operation) pair, on SQLite and PostgreSQL: an operation succeeds exactly when
the role grants it, and every refusal is in the audit log with the reason. The expected
grants are written out here, independently of ``rlsec.registry.access.OPERATIONS``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rlsec.errors import AccessDenied
from rlsec.policies import zoo_path
from rlsec.registry import Registry, signing
from rlsec.registry.access import ROLES, parse_token

ZOO = zoo_path("cartpole-ppo")
SPEC_SHA = __import__("hashlib").sha256((ZOO / "spec.json").read_bytes()).hexdigest()
EVIDENCE = json.dumps(
    {
        "kind": "redteam",
        "policy": {"sha256": SPEC_SHA},
        "worst_case": [{"surface": "observation", "epsilon": 0.05, "mean_return": 1.0}],
    }
).encode()

#: operation -> roles that must be allowed (everything else must be refused)
EXPECTED: dict[str, set[str]] = {
    "versions": {"viewer", "trainer", "evaluator", "reviewer", "deployer", "admin"},
    "show": {"viewer", "trainer", "evaluator", "reviewer", "deployer", "admin"},
    "load_verified": {"viewer", "trainer", "evaluator", "reviewer", "deployer", "admin"},
    "pull": {"viewer", "trainer", "evaluator", "reviewer", "deployer", "admin"},
    "verify_version": {"viewer", "trainer", "evaluator", "reviewer", "deployer", "admin"},
    "push": {"trainer", "admin"},
    "attach": {"trainer", "evaluator", "reviewer", "admin"},
    "approve": {"reviewer"},
    "promote": {"deployer", "admin"},
    "rollback": {"deployer", "admin"},
    "quarantine": {"deployer", "admin"},
    "release": {"admin"},
    "delete": {"admin"},
    "audit_verify": {"auditor", "admin"},
    "audit_head": {"auditor", "admin"},
    "audit_inclusion": {"auditor", "admin"},
    "audit_consistency": {"auditor", "admin"},
    "audit_entries": {"auditor", "admin"},
    "register_own_key": {"trainer", "evaluator", "reviewer", "admin"},
    "revoke_own_key": {"trainer", "evaluator", "reviewer", "admin"},
    "register_key_for_other": {"admin"},
    "create_principal": {"admin"},
    "disable_principal": {"admin"},
    "create_token": {"admin"},
    "revoke_token": {"admin"},
    "set_gates": {"admin"},
}


class World:
    """A registry with the subject (one principal of the role under test) and helpers that
    prepare each operation's preconditions with other principals."""

    def __init__(self, reg: Registry, role: str, tmp: Path) -> None:
        self.reg, self.tmp = reg, tmp
        self.admin = reg.init("root")
        reg.set_gates(self.admin, {"staging": {"approvals": 0}, "production": {"approvals": 0}})
        for name, roles in (("t", "trainer"), ("d", "deployer"), ("subject", role)):
            reg.create_principal(self.admin, name, roles)
        self.trainer = reg.create_token(self.admin, "t")
        self.deployer = reg.create_token(self.admin, "d")
        self.token = reg.create_token(self.admin, "subject")
        self.tkey = signing.generate_key()
        reg.register_key(self.trainer, signing.public_pem(self.tkey))
        self.skey = signing.generate_key()  # the subject's key, registered by the admin
        self.skey_id = reg.register_key(
            self.admin, signing.public_pem(self.skey), principal="subject"
        )
        self.n = 0

    def version(self, stage: str = "candidate") -> str:
        v = self.reg.push(self.trainer, ZOO, name="p", key=self.tkey)
        if stage in ("staging", "production"):
            self.reg.promote(self.deployer, v.ref, "staging")
        if stage == "production":
            self.reg.promote(self.deployer, v.ref, "production")
        if stage == "quarantined":
            self.reg.quarantine(self.deployer, v.ref, "probe")
        return v.ref

    def fresh(self, what: str) -> str:
        self.n += 1
        return f"{what}{self.n}"


def operations(w: World) -> dict[str, Callable[[], Any]]:
    reg, tok = w.reg, w.token

    def rollback() -> Any:
        w.version("production")
        w.version("production")
        return reg.rollback(tok, "p", "probe")

    def disable() -> Any:
        name = w.fresh("x")
        reg.create_principal(w.admin, name, "viewer")
        return reg.disable_principal(tok, name, "probe")

    def revoke_token() -> Any:
        other = reg.create_token(w.admin, "t")
        return reg.revoke_token(tok, parse_token(other)[0])

    def revoke_own() -> Any:
        k = signing.generate_key()
        kid = reg.register_key(w.admin, signing.public_pem(k), principal="subject")
        return reg.revoke_key(tok, kid, "probe")

    return {
        "versions": lambda: reg.versions(tok),
        "show": lambda: reg.show(tok, w.version()),
        "load_verified": lambda: reg.load_verified(tok, w.version()),
        "pull": lambda: reg.pull(tok, w.version(), w.tmp / w.fresh("pull")),
        "verify_version": lambda: reg.verify_version(tok, w.version()),
        "push": lambda: reg.push(tok, ZOO, name="p", key=w.skey),
        "attach": lambda: reg.attach(tok, w.version(), EVIDENCE, key=w.skey),
        "approve": lambda: reg.approve(tok, w.version(), "staging"),
        "promote": lambda: reg.promote(tok, w.version(), "staging"),
        "rollback": rollback,
        "quarantine": lambda: reg.quarantine(tok, w.version(), "probe"),
        "release": lambda: reg.release(tok, w.version("quarantined"), "probe"),
        "delete": lambda: reg.delete(tok, w.version(), "probe"),
        "audit_verify": lambda: reg.audit_verify(tok),
        "audit_head": lambda: reg.audit_head(tok),
        "audit_inclusion": lambda: reg.audit_inclusion(tok, 0),
        "audit_consistency": lambda: reg.audit_consistency(tok, 1),
        "audit_entries": lambda: reg.audit_entries(tok),
        "register_own_key": lambda: reg.register_key(
            tok, signing.public_pem(signing.generate_key())
        ),
        "revoke_own_key": revoke_own,
        "register_key_for_other": lambda: reg.register_key(
            tok, signing.public_pem(signing.generate_key()), principal="t"
        ),
        "create_principal": lambda: reg.create_principal(tok, w.fresh("new"), "viewer"),
        "disable_principal": disable,
        "create_token": lambda: reg.create_token(tok, "t"),
        "revoke_token": revoke_token,
        "set_gates": lambda: reg.set_gates(tok, {"staging": {"approvals": 0}}),
    }


@pytest.mark.parametrize("role", ROLES)
def test_every_operation_succeeds_exactly_when_the_role_grants_it(
    role: str, tmp_path: Path, db_url: str
) -> None:
    w = World(Registry(tmp_path / "home", db_url), role, tmp_path)
    ops = operations(w)
    assert set(ops) == set(EXPECTED)
    unauthorised, wrongly_refused = [], []
    for name, call in ops.items():
        before = len(w.reg.audit_entries(w.admin))
        reason = None
        try:
            call()
        except AccessDenied as exc:
            reason = str(exc)
        if reason is None:
            if role not in EXPECTED[name]:
                unauthorised.append(name)
            continue
        if role in EXPECTED[name]:
            wrongly_refused.append(f"{name}: {reason}")
            continue
        entries = w.reg.audit_entries(w.admin)[before:]
        refusal = [e for e in entries if e.outcome == "denied"]
        assert refusal, f"{role} {name}: refused but not audited"
        assert refusal[-1].actor == "subject"
        assert refusal[-1].detail["reason"] == reason
    assert unauthorised == []
    assert wrongly_refused == []
    w.reg.audit_verify(w.admin)
