"""The registry's trust gaps, each closed by a check and held by a test named after what it
stops, on SQLite and PostgreSQL: self-reported evidence, non-finite gate inputs, gates
bypassed by release and rollback, approvals that should not count, and the small ones."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry_helpers import Team
from rlsec.errors import AccessDenied, ConfigError, GateRefused, VerificationError
from rlsec.policies import zoo_path
from rlsec.registry import Registry, signing
from rlsec.registry.gates import check_gate, parse_gates
from rlsec.registry.promotion import sign_evidence

ZOO = zoo_path("cartpole-ppo")
SPEC_SHA = __import__("hashlib").sha256((ZOO / "spec.json").read_bytes()).hexdigest()


def redteam(worst: Any = 400.0, clean: Any = 500.0, eps: Any = 0.05, unit: str = "raw") -> bytes:
    doc = {
        "kind": "redteam",
        "policy": {"sha256": SPEC_SHA},
        "eps_unit": unit,
        "clean": {"mean_return": clean},
        "worst_case": [{"surface": "observation", "epsilon": eps, "mean_return": worst}],
    }
    return json.dumps(doc).encode()  # NaN and Infinity as JSON's non-standard literals


def _staged(team: Team) -> str:
    """cartpole@1 in staging with two production approvals: only evidence is missing."""
    reg = team.reg
    ref = reg.push(team["trainer"], ZOO, name="cartpole", key=team.key).ref
    reg.approve(team["reviewer"], ref, "staging")
    reg.promote(team["deployer"], ref, "staging")
    reg.approve(team["reviewer"], ref, "production")
    reg.approve(team["reviewer2"], ref, "production")
    return ref


def _production(team: Team, ref: str) -> None:
    reg = team.reg
    reg.approve(team["reviewer"], ref, "staging")
    reg.promote(team["deployer"], ref, "staging")
    team.attach(ref, redteam())
    reg.approve(team["reviewer"], ref, "production")
    reg.approve(team["reviewer2"], ref, "production")
    reg.promote(team["deployer"], ref, "production")


# -- 1. evidence is signed, and the people it judges cannot supply it ---------------------------
def test_the_pushers_own_evidence_never_satisfies_its_gate(team: Team) -> None:
    ref = _staged(team)
    team.reg.attach(team["trainer"], ref, redteam(), key=team.key)
    with pytest.raises(GateRefused, match="the pusher's own evidence never does"):
        team.reg.promote(team["deployer"], ref, "production")
    team.attach(ref, redteam())
    assert team.reg.promote(team["deployer"], ref, "production").stage == "production"


def test_evidence_from_a_role_the_gate_does_not_name_does_not_count(team: Team) -> None:
    reg = team.reg
    ref = _staged(team)
    reg.create_principal(team.admin, "tara", "trainer")
    tara = reg.create_token(team.admin, "tara")
    key = signing.generate_key()
    reg.register_key(tara, signing.public_pem(key))
    reg.attach(tara, ref, redteam(), key=key)
    with pytest.raises(GateRefused, match=r"takes evidence from \['evaluator', 'reviewer'\]"):
        reg.promote(team["deployer"], ref, "production")
    reg.set_gates(
        team.admin, {"production": {"approvals": 2, "redteam": {}, "evidence_from": ["trainer"]}}
    )
    assert reg.promote(team["deployer"], ref, "production").stage == "production"


def test_evidence_signed_with_someone_elses_key_is_refused(team: Team) -> None:
    ref = team.reg.push(team["trainer"], ZOO, name="cartpole", key=team.key).ref
    with pytest.raises(AccessDenied, match="not evaluator's"):
        team.reg.attach(team["evaluator"], ref, redteam(), key=team.key)  # the trainer's key
    forged = sign_evidence(ref, redteam(worst=1.0), team.evaluator_key)  # other bytes
    with pytest.raises(AccessDenied, match="covers other bytes"):
        team.reg.attach(team["evaluator"], ref, redteam(), signature=forged)
    with pytest.raises(ConfigError, match="must be signed"):
        team.reg.attach(team["evaluator"], ref, redteam())


def test_an_evidence_signature_for_another_version_is_refused(team: Team) -> None:
    team.reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    team.reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    moved = sign_evidence("cartpole@1", redteam(), team.evaluator_key)
    with pytest.raises(AccessDenied, match="is for evidence:cartpole@1, not cartpole@2"):
        team.reg.attach(team["evaluator"], "cartpole@2", redteam(), signature=moved)


def test_evidence_stops_counting_when_its_signer_is_disabled_or_its_key_revoked(
    team: Team,
) -> None:
    reg = team.reg
    ref = _staged(team)
    team.attach(ref, redteam())
    reg.revoke_key(team["evaluator"], signing.key_id(signing.public_pem(team.evaluator_key)), "x")
    with pytest.raises(GateRefused, match="signing key is missing or revoked"):
        reg.promote(team["deployer"], ref, "production")
    key = signing.generate_key()
    reg.register_key(team["evaluator"], signing.public_pem(key))
    reg.attach(team["evaluator"], ref, redteam(), key=key)
    reg.disable_principal(team.admin, "evaluator", "left")
    with pytest.raises(GateRefused, match="evaluator is disabled"):
        reg.promote(team["deployer"], ref, "production")


# -- 2. non-finite numbers and non-boolean verdicts never pass ----------------------------------
@pytest.mark.parametrize(
    ("worst", "clean"),
    [
        (math.nan, 500.0),
        (math.inf, 500.0),
        (400.0, math.nan),
        (400.0, -math.inf),
        ("450", 500.0),
        (None, 500.0),
        (True, 500.0),
        (400.0, "lots"),
        (10**400, 500.0),
    ],
)
def test_non_finite_or_non_numeric_gate_inputs_fail_the_gate(worst: Any, clean: Any) -> None:
    rule = parse_gates(
        {
            "production": {
                "approvals": 0,
                "redteam": {"epsilon": 0.05, "min_worst_case_return": 300, "min_clean_return": 450},
            }
        }
    )["production"]
    doc = json.loads(redteam(worst=worst, clean=clean))
    missing = check_gate(rule, [("redteam", doc)], 0)
    assert any("not a finite number" in m for m in missing), missing


@given(
    worst=st.one_of(st.floats(), st.integers(), st.text(max_size=3), st.none(), st.booleans()),
    floor=st.floats(-1e6, 1e6),
)
@settings(max_examples=300, deadline=None)
def test_a_worst_case_passes_exactly_when_it_is_a_finite_number_at_or_above_the_floor(
    worst: Any, floor: float
) -> None:
    rule = parse_gates(
        {"staging": {"approvals": 0, "redteam": {"epsilon": 0.05, "min_worst_case_return": floor}}}
    )["staging"]
    doc = {"worst_case": [{"surface": "observation", "epsilon": 0.05, "mean_return": worst}]}
    passed = check_gate(rule, [("redteam", doc)], 0) == []
    finite = (
        isinstance(worst, int | float)
        and not isinstance(worst, bool)
        and math.isfinite(float(worst) if abs(worst) < 1e308 else math.inf)
    )
    assert passed == (finite and worst >= floor)


@pytest.mark.parametrize("result", ["true", None, math.nan, [True], {"holds": True}])
@pytest.mark.parametrize("rule", ["all_hold", "holds"])
def test_a_property_verdict_that_is_not_a_boolean_fails_the_gate(result: Any, rule: str) -> None:
    """Each rule on its own: ``all_hold`` takes a verdict or a finite value (a quantitative
    property), ``holds`` only a verdict."""
    name = "P>=0.9 [F goal]"
    want: dict[str, Any] = (
        {"all_hold": True}
        if rule == "all_hold"
        else {"properties": [{"property": name, "holds": True}]}
    )
    rules = parse_gates({"staging": {"approvals": 0, "verification": want}})
    missing = check_gate(
        rules["staging"], [("verification", {"property": name, "result": result})], 0
    )
    assert any("verdict" in m for m in missing), missing
    ok = check_gate(rules["staging"], [("verification", {"property": name, "result": True})], 0)
    assert ok == []


def test_a_gate_with_non_boolean_settings_is_refused() -> None:
    with pytest.raises(ConfigError, match="all_hold must be true or false"):
        parse_gates({"staging": {"verification": {"all_hold": "yes"}}})
    with pytest.raises(ConfigError, match="finite number"):
        parse_gates({"staging": {"redteam": {"epsilon": 10**400}}})


def test_the_gates_eps_unit_filter_counts_only_results_in_that_unit() -> None:
    rule = parse_gates(
        {
            "staging": {
                "approvals": 0,
                "redteam": {"epsilon": 0.05, "eps_unit": "std", "min_worst_case_return": 300},
            }
        }
    )["staging"]
    raw = json.loads(redteam(worst=450.0, unit="raw"))
    assert check_gate(rule, [("redteam", raw)], 0) == [
        "no attached red-team result measured the worst case at ε = 0.05 (std)"
    ]
    weak = json.loads(redteam(worst=100.0, unit="std"))
    assert check_gate(rule, [("redteam", raw), ("redteam", weak)], 0) == [
        "worst-case return 100.0 at ε = 0.05 is below the gate's 300"
    ]


# -- 4. release and rollback do not bypass the gates -------------------------------------------
def test_a_released_version_must_pass_its_gates_again_with_fresh_approvals(team: Team) -> None:
    reg = team.reg
    ref = reg.push(team["trainer"], ZOO, name="cartpole", key=team.key).ref
    _production(team, ref)
    reg.quarantine(team["deployer"], ref, "trigger found")
    reg.release(team.admin, ref, "false alarm")
    with pytest.raises(
        GateRefused, match="1 approvals from reviewers other than the pusher are needed, 0 given"
    ):
        reg.promote(team["deployer"], ref, "staging")
    reg.approve(team["reviewer"], ref, "staging")  # fresh approval in the new epoch
    reg.promote(team["deployer"], ref, "staging")
    reg.approve(team["reviewer"], ref, "production")
    reg.approve(team["reviewer2"], ref, "production")
    with pytest.raises(GateRefused, match="no red-team results are attached"):
        reg.promote(team["deployer"], ref, "production")  # the old evidence is stale


def test_rollback_skips_a_released_version_that_has_not_passed_its_gate_again(team: Team) -> None:
    reg = team.reg
    for _ in range(2):
        reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    _production(team, "cartpole@1")
    _production(team, "cartpole@2")  # cartpole@1 archived
    reg.quarantine(team["deployer"], "cartpole@1", "suspect")
    reg.release(team.admin, "cartpole@1", "cleared")
    with pytest.raises(ConfigError, match=r"no earlier production version that meets .*cartpole@1"):
        reg.rollback(team["deployer"], "cartpole", "canary regressed")
    assert reg.show(team["viewer"], "cartpole@2")["stage"] == "production"


def test_rollback_skips_a_version_whose_approvers_were_disabled(team: Team) -> None:
    reg = team.reg
    for _ in range(2):
        reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    _production(team, "cartpole@1")
    _production(team, "cartpole@2")
    reg.disable_principal(team.admin, "reviewer2", "left the company")
    with pytest.raises(ConfigError, match="1 given"):
        reg.rollback(team["deployer"], "cartpole", "canary regressed")


def test_approvals_by_principals_disabled_later_do_not_count(team: Team) -> None:
    reg = team.reg
    ref = _staged(team)
    team.attach(ref, redteam())
    reg.disable_principal(team.admin, "reviewer2", "left")
    with pytest.raises(GateRefused, match="the approval by reviewer2 does not count: disabled"):
        reg.promote(team["deployer"], ref, "production")


# -- 13. one admin cannot manufacture reviewers for a version already pushed -------------------
def test_approvals_by_reviewers_created_after_the_push_do_not_count(team: Team) -> None:
    reg = team.reg
    ref = reg.push(team["trainer"], ZOO, name="cartpole", key=team.key).ref
    for name in ("sock1", "sock2"):
        reg.create_principal(team.admin, name, "reviewer")
        reg.approve(reg.create_token(team.admin, name), ref, "staging")
    with pytest.raises(
        GateRefused, match="sock1 does not count: created after the version was pushed"
    ):
        reg.promote(team["deployer"], ref, "staging")


def test_an_admin_who_acted_on_a_version_may_not_count_as_its_reviewer(team: Team) -> None:
    reg = team.reg
    reg.create_principal(team.admin, "boss", "admin,reviewer")
    boss = reg.create_token(team.admin, "boss")
    key = signing.generate_key()
    reg.register_key(boss, signing.public_pem(key))
    ref = reg.push(team["trainer"], ZOO, name="cartpole", key=team.key).ref
    reg.attach(boss, ref, redteam(), key=key)
    reg.approve(boss, ref, "staging")
    with pytest.raises(GateRefused, match="an admin who acted on the version"):
        reg.promote(team["deployer"], ref, "staging")


# -- 6. the small ones -------------------------------------------------------------------------
def test_policy_names_may_not_contain_the_reference_separator(team: Team) -> None:
    with pytest.raises(ConfigError, match="'@' separates a name from its version"):
        team.reg.push(team["trainer"], ZOO, name="cart@pole", key=team.key)


_INIT = """
import sys
from rlsec.errors import ConfigError
from rlsec.registry import Registry
try:
    print(Registry(sys.argv[1], sys.argv[2]).init("admin"))
except ConfigError as exc:
    print(f"refused: {exc}")
"""


def test_two_concurrent_inits_make_exactly_one_admin(tmp_path: Path, db_url: str) -> None:
    # separate interpreters, as two operators' shells would be
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _INIT, str(tmp_path / "home"), db_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    results = sorted(out.strip() for out, _ in outs)
    assert results[0].startswith("refused: ") and "already initialised" in results[0]
    assert results[1].startswith("rlsec_")
    reg = Registry(tmp_path / "home", db_url)
    assert reg.whoami(results[1]).roles == frozenset({"admin"})
    assert reg.audit_verify(results[1]).entries == 1


def test_a_bundle_whose_key_differs_from_the_recorded_signer_is_refused(team: Team) -> None:
    from registry_helpers import forge
    from rlsec.registry.db import VersionRow

    reg = team.reg
    other = signing.generate_key()
    other_id = reg.register_key(team["trainer"], signing.public_pem(other))
    reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    forge(reg, VersionRow, VersionRow.number == 1, signer_key_id=other_id)
    with pytest.raises(VerificationError, match="not a trusted key"):
        reg.load_verified(team["viewer"], "cartpole@1")


# -- 14, 17. bounded input on both engines ------------------------------------------------------
@pytest.mark.parametrize(
    "ref", ["x" * 10_000, "cart\x00pole@1", "cartpole@99999999999999999999999", "cartpole@0"]
)
def test_hostile_references_are_refused_cleanly_and_logged_bounded(team: Team, ref: str) -> None:
    reg = team.reg
    reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    with pytest.raises(ConfigError):
        reg.load_verified(team["viewer"], ref)
    with pytest.raises(AccessDenied):
        reg.load_verified("rlsec_0123456789abcdef_" + "A" * 43, ref)
    denied = reg.audit_entries(team["auditor"])[-1]
    assert denied.outcome == "denied" and len(denied.target) <= 256 and "\x00" not in denied.target
    reg.audit_verify(team["auditor"])


@pytest.mark.parametrize(("seq", "size"), [(10**20, None), (0, 10**20), (-1, None), (0, 0)])
def test_huge_or_negative_audit_positions_are_refused_cleanly(
    team: Team, seq: int, size: int | None
) -> None:
    with pytest.raises(ConfigError, match="must be in"):
        team.reg.audit_inclusion(team["auditor"], seq, size)


def test_a_flood_of_refused_calls_is_counted_not_written_one_by_one(team: Team) -> None:
    reg = team.reg
    before = len(reg.audit_entries(team["auditor"]))
    for _ in range(100):
        with pytest.raises(AccessDenied):
            reg.versions("rlsec_0123456789abcdef_" + "B" * 43)
    reg.flush_refusals()
    logged = reg.audit_entries(team["auditor"])[before:]
    assert len(logged) == reg._refusals.limit + 1
    assert logged[-1].action == "denied:rate-limited"
    assert logged[-1].detail["refusals_not_written"] == 100 - reg._refusals.limit


# -- 15. token ids are no timing oracle ----------------------------------------------------------
def test_an_unknown_token_id_and_a_wrong_secret_do_the_same_work(
    team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both refusals hash the secret once, miss on the same index lookup and load no token
    row; benchmarks/registry_state.py measures the times."""
    from sqlalchemy import event

    from rlsec.registry import _base

    hashed: list[str] = []
    real = _base.hash_secret
    monkeypatch.setattr(_base, "hash_secret", lambda x: (hashed.append(x), real(x))[1])
    statements: list[str] = []

    def seen(_conn: Any, _cur: Any, statement: str, *_a: Any) -> None:
        if "tokens" in statement:
            statements.append(" ".join(statement.split()))

    event.listen(team.reg.read_engine.engine, "before_cursor_execute", seen)
    tid = team["viewer"].split("_")[1]
    runs = []
    for token in (f"rlsec_{tid}_" + "C" * 43, "rlsec_fedcba9876543210_" + "C" * 43):
        hashed.clear()
        statements.clear()
        with pytest.raises(AccessDenied, match="is not valid"):
            team.reg.versions(token)
        runs.append((list(hashed), list(statements)))
    assert runs[0] == runs[1]
    assert runs[0][0] == ["C" * 43]
    assert len(runs[0][1]) == 1 and "secret_sha256" in runs[0][1][0]


# -- the checks weakened in review -------------------------------------------------------------
def test_an_expired_token_is_refused(team: Team, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime, timedelta

    from rlsec.registry import audit

    token = team.reg.create_token(team.admin, "viewer", expires_in_days=1)
    assert team.reg.whoami(token).name == "viewer"
    later = audit.timestamp(datetime.now(UTC) + timedelta(days=1, seconds=1))
    monkeypatch.setattr(audit, "now", lambda: later)
    with pytest.raises(AccessDenied, match="expired at"):
        team.reg.versions(token)
    assert team.reg.whoami(team["viewer"]).name == "viewer"  # tokens without expiry still work


def test_promotion_re_verifies_the_version_it_moves(team: Team) -> None:
    reg = team.reg
    ref = _staged(team)
    team.attach(ref, redteam())
    blob = reg.artifacts.path(reg.show(team["viewer"], ref)["files"]["weights.safetensors"])
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x00")
    with pytest.raises(VerificationError, match="was modified on disk"):
        reg.promote(team["deployer"], ref, "production")
    assert reg.show(team["viewer"], ref)["stage"] == "staging"
    assert reg.audit_entries(team["auditor"])[-1].action == "refused:promote"


def test_rollback_re_verifies_the_version_it_restores(team: Team) -> None:
    reg = team.reg
    for _ in range(2):
        reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    _production(team, "cartpole@1")
    _production(team, "cartpole@2")
    # cartpole@1's weights are shared with cartpole@2 (same bytes), so change its spec's
    # blob record instead: a version whose files no longer verify never goes back
    from registry_helpers import forge
    from rlsec.registry.db import VersionRow

    forge(
        reg,
        VersionRow,
        VersionRow.number == 1,
        files={"spec.json": "0" * 64, "weights.safetensors": "1" * 64},
    )
    with pytest.raises(VerificationError, match="differs from the signed one"):
        reg.rollback(team["deployer"], "cartpole", "canary regressed")
    assert reg.show(team["viewer"], "cartpole@2")["stage"] == "production"


def test_a_subject_digest_that_does_not_match_its_resources_is_refused() -> None:
    key = signing.generate_key()
    manifest = signing.Manifest("m", {"a": "0" * 64, "b": "1" * 64})
    statement = manifest.statement()
    statement["subject"][0]["digest"]["sha256"] = "2" * 64
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    bundle = json.loads(signing.sign(manifest, key))
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    sig = key.sign(signing.pae(signing.PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(sig).decode()
    pem = signing.public_pem(key)
    with pytest.raises(VerificationError, match="subject digest does not match"):
        signing.verify(json.dumps(bundle).encode(), {signing.key_id(pem): pem})


# -- 13. k of n admins --------------------------------------------------------------------------
def _two_admins(registry: Registry) -> tuple[str, str]:
    alice = registry.init("alice")
    registry.create_principal(alice, "bob", "admin")
    bob = registry.create_token(alice, "bob")
    registry.set_admin_quorum(alice, 2)  # the quorum was 1: this takes effect at once
    return alice, bob


def test_one_admin_alone_cannot_grant_reviewer_rights_once_the_quorum_is_two(
    registry: Registry,
) -> None:
    from rlsec.errors import ApprovalPending

    alice, bob = _two_admins(registry)
    with pytest.raises(ApprovalPending, match="needs 2 admins: recorded as proposal 1") as p:
        registry.create_principal(alice, "sock", "reviewer")
    with pytest.raises(ConfigError, match="no principal named 'sock'"):
        registry.create_token(alice, "sock")  # not created yet
    with pytest.raises(ConfigError, match="alice already approved proposal 1"):
        registry.approve_admin(alice, p.value.proposal)
    assert [x["action"] for x in registry.proposals(bob)] == ["principal.create"]
    registry.approve_admin(bob, p.value.proposal)
    assert registry.proposals(bob) == []
    registry.create_principal(alice, "viewer1", "viewer")  # nothing privileged: no quorum
    # a token for a reviewer would let one admin act as that reviewer
    with pytest.raises(ApprovalPending) as t:
        registry.create_token(alice, "sock")
    token = registry.approve_admin(bob, t.value.proposal)  # the completing admin receives it
    assert registry.whoami(token).name == "sock"
    with pytest.raises(ApprovalPending):
        registry.set_gates(alice, {"production": {"approvals": 0}})
    with pytest.raises(ApprovalPending):
        registry.register_key(alice, signing.public_pem(signing.generate_key()), principal="sock")
    registry.audit_verify(alice)


def test_a_disabled_admins_approval_does_not_complete_a_quorum(registry: Registry) -> None:
    from rlsec.errors import ApprovalPending

    alice, bob = _two_admins(registry)
    registry.create_principal(alice, "carol", "viewer")
    with pytest.raises(ApprovalPending) as p:
        registry.set_gates(bob, {"production": {"approvals": 0}})
    registry.disable_principal(alice, "bob", "left")
    registry.create_principal(alice, "dave", "viewer")
    registry.approve_admin(alice, p.value.proposal)  # bob's own approval no longer counts
    assert registry.proposals(alice)[0]["approvers"] == ["bob", "alice"]


def test_a_quorum_larger_than_the_admins_is_refused(registry: Registry) -> None:
    alice = registry.init("alice")
    with pytest.raises(ConfigError, match="a quorum of 2 needs 2 enabled admins, there are 1"):
        registry.set_admin_quorum(alice, 2)


def test_an_evidence_body_replaced_with_the_log_key_is_still_refused(team: Team) -> None:
    """Evidence rewritten together with its audit binding (by whoever holds the log's key)
    no longer matches its stored digest nor its attacher's signature."""
    from registry_helpers import forge
    from rlsec.registry.db import EvidenceRow

    ref = _staged(team)
    team.attach(ref, redteam(worst=100.0))
    forge(team.reg, EvidenceRow, EvidenceRow.id > 0, body=redteam(worst=450.0))
    with pytest.raises(VerificationError, match=r"does not match its digest|covers other bytes"):
        team.reg.promote(team["deployer"], ref, "production")


# -- the log key's directory ---------------------------------------------------------------------
def test_the_log_key_is_never_written_through_a_linked_keys_directory(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    (home / "keys").symlink_to(elsewhere)
    reg = Registry(home, f"sqlite:///{tmp_path / 'r.db'}")
    with pytest.raises(ConfigError, match="keys is a symbolic link"):
        reg.init("admin")
    assert list(elsewhere.iterdir()) == []


def test_the_log_key_is_never_written_into_a_directory_others_may_write(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "keys").mkdir(parents=True)
    (home / "keys").chmod(0o777)
    reg = Registry(home, f"sqlite:///{tmp_path / 'r.db'}")
    with pytest.raises(ConfigError, match="writable by others"):
        reg.init("admin")
    assert list((home / "keys").iterdir()) == []
    (home / "keys").chmod(0o700)
    assert reg.init("admin").startswith("rlsec_")
