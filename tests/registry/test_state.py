"""The state bound to the log, on SQLite and PostgreSQL: every table and column that decides
an authorisation, edited directly in the database, makes the operation that reads it fail
closed (with an audit entry and a critical finding) and makes ``audit verify`` fail, naming
the row."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from registry_helpers import Team
from rlsec.core import Finding, Severity
from rlsec.policies import zoo_path
from rlsec.registry import audit, signing
from rlsec.registry.access import parse_token
from rlsec.registry.state import TamperedState

ZOO = zoo_path("cartpole-ppo")
SPEC_SHA = __import__("hashlib").sha256((ZOO / "spec.json").read_bytes()).hexdigest()
EVIDENCE = json.dumps(
    {
        "kind": "redteam",
        "policy": {"sha256": SPEC_SHA},
        "worst_case": [{"surface": "observation", "epsilon": 0.05, "mean_return": 100.0}],
    }
).encode()


def sql(team: Team, statement: str, **params: Any) -> None:
    """An edit made directly in the database, outside the registry."""
    with team.reg.engine.begin() as conn:
        conn.execute(text(statement), params)


def one(team: Team, statement: str, **params: Any) -> Any:
    with team.reg.engine.connect() as conn:
        return conn.execute(text(statement), params).scalar_one()


class World:
    """cartpole@1 a candidate; cartpole@2 in staging with one production approval and
    evaluator evidence that fails the gate; a revoked token; a revoked key."""

    def __init__(self, team: Team) -> None:
        reg = self.reg = team.reg
        self.team = team
        reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
        reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
        reg.set_gates(
            team.admin,
            {
                "staging": {"approvals": 1},
                "production": {
                    "approvals": 2,
                    "redteam": {"epsilon": 0.05, "min_worst_case_return": 300},
                },
            },
        )
        reg.approve(team["reviewer"], "cartpole@2", "staging")
        reg.promote(team["deployer"], "cartpole@2", "staging")
        reg.approve(team["reviewer"], "cartpole@2", "production")
        team.attach("cartpole@2", EVIDENCE)
        self.revoked = reg.create_token(team.admin, "viewer")
        reg.revoke_token(team.admin, parse_token(self.revoked)[0])
        reg.create_principal(team.admin, "old", "trainer")
        old = reg.create_token(team.admin, "old")
        self.old_key = signing.generate_key()
        self.old_kid = reg.register_key(old, signing.public_pem(self.old_key))
        reg.push(old, ZOO, name="legacy", key=self.old_key)
        reg.revoke_key(old, self.old_kid, "rotated")
        self.v1 = one(team, "SELECT id FROM versions WHERE number = 1 AND policy_id = 1")
        self.v2 = one(team, "SELECT id FROM versions WHERE number = 2 AND policy_id = 1")

    def id_of(self, name: str) -> int:
        return int(one(self.team, "SELECT id FROM principals WHERE name = :n", n=name))

    def promote2(self) -> Any:
        return self.reg.promote(self.team["deployer"], "cartpole@2", "production")


#: name -> (the edit, the operation that must fail closed, the operation's name in the log)
Case = tuple[Callable[[World], None], Callable[[World], Any], str]
CASES: dict[str, Case] = {
    "a refused version set to production loads": (
        lambda w: sql(w.team, "UPDATE versions SET stage = 'production' WHERE id = :i", i=w.v1),
        lambda w: w.reg.load_verified(w.team["viewer"], "cartpole@production"),
        "read",
    ),
    "a viewer's roles set to admin creates an admin": (
        lambda w: sql(w.team, "UPDATE principals SET roles = 'admin' WHERE name = 'viewer'"),
        lambda w: w.reg.create_principal(w.team["viewer"], "mallory", "admin"),
        "admin",
    ),
    "a disabled principal enabled again": (
        lambda w: _reenabled(w),
        lambda w: w.reg.versions(w.team["viewer"]),
        "read",
    ),
    "a revoked token works again": (
        lambda w: sql(w.team, "UPDATE tokens SET revoked_at = NULL"),
        lambda w: w.reg.versions(w.revoked),
        "read",
    ),
    "a token's expiry pushed back": (
        lambda w: sql(
            w.team,
            "UPDATE tokens SET expires_at = :t WHERE principal_id = :v",
            t="2999-01-01T00:00:00.000000Z",
            v=w.id_of("viewer"),
        ),
        lambda w: w.reg.versions(w.team["viewer"]),
        "read",
    ),
    "a token moved to another principal": (
        lambda w: sql(
            w.team,
            "UPDATE tokens SET principal_id = :a WHERE principal_id = :v",
            a=w.id_of("alice"),
            v=w.id_of("viewer"),
        ),
        lambda w: w.reg.versions(w.team["viewer"]),
        "read",
    ),
    "a revoked key works again": (
        lambda w: sql(w.team, "UPDATE signing_keys SET revoked_at = NULL, revoked_reason = NULL"),
        lambda w: w.reg.load_verified(w.team["viewer"], "legacy@1"),
        "read",
    ),
    "a key moved to another principal": (
        lambda w: sql(
            w.team,
            "UPDATE signing_keys SET principal_id = :p WHERE key_id = :k",
            p=w.id_of("trainer"),
            k=w.old_kid,
        ),
        lambda w: w.reg.load_verified(w.team["viewer"], "legacy@1"),
        "read",
    ),
    "an inserted approval row promotes a version": (
        lambda w: sql(
            w.team,
            "INSERT INTO approvals (version_id, stage, reviewer_id, at, comment, epoch) "
            "VALUES (:v, 'production', :r, '2026-01-01T00:00:00.000000Z', '', 0)",
            v=w.v2,
            r=w.id_of("reviewer2"),
        ),
        World.promote2,
        "promote",
    ),
    "a stale approval moved into the current epoch": (
        lambda w: _stale_approval(w),
        lambda w: w.reg.promote(w.team["deployer"], "cartpole@2", "staging"),
        "promote",
    ),
    "an inserted approval row pointing at an entry that did not set it": (
        lambda w: sql(
            w.team,
            "INSERT INTO approvals (version_id, stage, reviewer_id, at, comment, epoch, audit_seq)"
            " SELECT :v, 'production', :r, at, '', 0, audit_seq FROM approvals LIMIT 1",
            v=w.v2,
            r=w.id_of("reviewer2"),
        ),
        World.promote2,
        "promote",
    ),
    "gates set to zero approvals": (
        lambda w: sql(
            w.team,
            "UPDATE settings SET value = :v WHERE key = 'gates'",
            v=json.dumps({"production": {"approvals": 0}}),
        ),
        World.promote2,
        "promote",
    ),
    "an admin quorum written into the settings": (
        lambda w: sql(
            w.team,
            "INSERT INTO settings (key, value) VALUES ('admin_quorum', :v)",
            v=json.dumps({"k": 1}),
        ),
        lambda w: w.reg.create_principal(w.team.admin, "sock", "reviewer"),
        "admin",
    ),
    "an evidence body replaced under its unchanged digest": (
        lambda w: sql(
            w.team,
            "UPDATE evidence SET body = :b",
            b=EVIDENCE.replace(b"100.0", b"500.0"),
        ),
        World.promote2,
        "promote",
    ),
    "the pusher's evidence attributed to an evaluator": (
        lambda w: sql(w.team, "UPDATE evidence SET attached_by = :e", e=w.id_of("reviewer2")),
        World.promote2,
        "promote",
    ),
    "a version's pusher changed so it can approve": (
        lambda w: sql(
            w.team, "UPDATE versions SET pushed_by = :a WHERE id = :i", a=w.id_of("alice"), i=w.v2
        ),
        lambda w: w.reg.approve(w.team["reviewer2"], "cartpole@2", "production"),
        "approve",
    ),
    "a reviewer's creation moved before the push": (
        lambda w: _late_reviewer(w),
        World.promote2,
        "promote",
    ),
    "a production history inserted for rollback": (
        lambda w: sql(
            w.team,
            "INSERT INTO stage_changes (version_id, policy_id, from_stage, to_stage, by, at, "
            "reason) VALUES (:v, 1, 'staging', 'production', 1, "
            "'2026-01-01T00:00:00.000000Z', 'x')",
            v=w.v1,
        ),
        lambda w: w.reg.rollback(w.team["deployer"], "cartpole", "probe"),
        "rollback",
    ),
    "an inserted principal with an inserted token": (
        lambda w: _insert_admin(w),
        lambda w: w.reg.versions(w.inserted),
        "read",
    ),
    "a policy renamed": (
        lambda w: sql(w.team, "UPDATE policies SET name = 'prod' WHERE name = 'cartpole'"),
        lambda w: w.reg.load_verified(w.team["viewer"], "prod@1"),
        "read",
    ),
}


def _reenabled(w: World) -> None:
    w.reg.disable_principal(w.team.admin, "viewer", "left")
    sql(w.team, "UPDATE principals SET disabled_at = NULL WHERE name = 'viewer'")


def _stale_approval(w: World) -> None:
    w.reg.quarantine(w.team["deployer"], "cartpole@2", "suspect")
    w.reg.release(w.team.admin, "cartpole@2", "cleared")
    sql(w.team, "UPDATE approvals SET epoch = 2")


def _late_reviewer(w: World) -> None:
    w.reg.create_principal(w.team.admin, "late", "reviewer")
    w.reg.approve(w.reg.create_token(w.team.admin, "late"), "cartpole@2", "production")
    sql(
        w.team,
        "UPDATE principals SET created_at = '2000-01-01T00:00:00.000000Z' WHERE name = 'late'",
    )


def _insert_admin(w: World) -> None:
    from rlsec.registry.access import new_token

    token, tid, digest = new_token()
    sql(
        w.team,
        "INSERT INTO principals (name, kind, roles, created_at) "
        "VALUES ('ghost', 'person', 'admin', '2026-01-01T00:00:00.000000Z')",
    )
    sql(
        w.team,
        "INSERT INTO tokens (id, principal_id, secret_sha256, label, created_at) "
        "VALUES (:t, :p, :d, '', '2026-01-01T00:00:00.000000Z')",
        t=tid,
        p=w.id_of("ghost"),
        d=digest,
    )
    w.inserted = token  # type: ignore[attr-defined]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_row_edited_in_the_database_fails_closed_and_audit_verify_finds_it(
    team: Team, case: str
) -> None:
    w = World(team)
    edit, operation, op_name = CASES[case]
    team.reg.audit_verify(team["auditor"])  # the world is sound before the edit
    edit(w)
    with pytest.raises(TamperedState) as refused:
        operation(w)
    finding = refused.value.finding
    assert isinstance(finding, Finding) and finding.severity == Severity.CRITICAL
    entries = [e for e in team.reg.audit_entries(team.admin) if e.action == f"refused:{op_name}"]
    assert entries and entries[-1].detail["finding"] == finding.to_dict()
    with pytest.raises(TamperedState):
        team.reg.audit_verify(team["auditor"])


def test_a_row_put_back_to_an_earlier_logged_state_is_found_by_audit_verify(team: Team) -> None:
    """A revoked token un-revoked *and* pointed back at its creation entry matches that entry:
    the replay of ``audit verify`` finds it, because a later entry set the row."""
    reg = team.reg
    token = reg.create_token(team.admin, "viewer")
    tid = parse_token(token)[0]
    created = one(team, "SELECT audit_seq FROM tokens WHERE id = :t", t=tid)
    reg.revoke_token(team.admin, tid)
    sql(team, "UPDATE tokens SET revoked_at = NULL, audit_seq = :s WHERE id = :t", s=created, t=tid)
    with pytest.raises(TamperedState, match=f"token:{tid} points at audit entry {created}"):
        reg.audit_verify(team["auditor"])


def test_a_deleted_row_is_found_by_audit_verify(team: Team) -> None:
    reg = team.reg
    token = reg.create_token(team.admin, "viewer", label="doomed")
    tid = parse_token(token)[0]
    sql(team, "DELETE FROM tokens WHERE id = :t", t=tid)
    with pytest.raises(TamperedState, match=f"token:{tid} was set by the log but is missing"):
        reg.audit_verify(team["auditor"])


def test_an_entry_rewritten_to_match_an_edited_row_fails_its_inclusion_proof(team: Team) -> None:
    """Editing the row *and* the entry's leaf consistently (without the log key) passes the
    digest comparison but not the proof against the signed tree head."""
    reg = team.reg
    reg.create_principal(team.admin, "vic", "viewer")
    seq = one(team, "SELECT audit_seq FROM principals WHERE name = 'vic'")
    sql(team, "UPDATE principals SET roles = 'admin' WHERE name = 'vic'")
    from rlsec.registry.state import state_of

    fresh = type(reg)(reg.home, reg.url)  # a process that has proved nothing yet
    from sqlalchemy.orm import Session

    from rlsec.registry.db import AuditEntryRow, PrincipalRow

    with Session(reg.engine) as s, s.begin():
        row = s.query(PrincipalRow).filter(PrincipalRow.name == "vic").one()
        entry_row = s.get(AuditEntryRow, seq)
        assert entry_row is not None
        entry = audit.Entry.from_row(entry_row)
        forged = audit.Entry(
            entry.seq,
            entry.at,
            entry.actor,
            entry.action,
            entry.target,
            entry.outcome,
            entry.before,
            entry.after,
            entry.detail,
            state_of([row]),
        )
        entry_row.leaf = forged.leaf()
    with pytest.raises(TamperedState, match="is not the one the signed tree head"):
        fresh.create_token(team.admin, "vic")  # loads vic's row


def test_rows_from_before_the_binding_fail_closed_until_an_upgrade_binds_them(team: Team) -> None:
    """A registry made before rows were bound (audit_seq empty everywhere) refuses to act on
    any of them; ``upgrade`` binds them in one audited entry and everything works again."""
    from rlsec.registry.state import TABLES

    reg = team.reg
    reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    for table in TABLES.values():
        sql(team, f"UPDATE {table.__tablename__} SET audit_seq = NULL")  # type: ignore[attr-defined]
    with pytest.raises(TamperedState, match="is not bound to the audit log"):
        reg.versions(team["viewer"])
    n = type(reg)(reg.home, reg.url).upgrade()
    assert (
        n
        == one(team, "SELECT count(*) FROM principals")
        + one(team, "SELECT count(*) FROM tokens")
        + one(team, "SELECT count(*) FROM signing_keys")
        + 2
    )  # + the policy and its version
    fresh = type(reg)(reg.home, reg.url)
    assert [v.ref for v in fresh.versions(team["viewer"])] == ["cartpole@1"]
    adopted = [e for e in fresh.audit_entries(team["auditor"]) if e.action == "state.adopt"]
    assert len(adopted) == 1 and adopted[0].detail == {"rows": n}
    fresh.audit_verify(team["auditor"])
