"""The registry's lifecycle on SQLite and PostgreSQL: push, verified load and pull, evidence,
separation of duties, gates, promotion, rollback, quarantine, and that every change is in a
log that verifies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from registry_helpers import Team
from rlsec.errors import AccessDenied, ConfigError, GateRefused, PolicyLoadError
from rlsec.policies import load_policy, zoo_path
from rlsec.registry import Registry, signing
from rlsec.registry.access import parse_token

ZOO = zoo_path("cartpole-ppo")


def _spec_sha(path: Path = ZOO) -> str:
    import hashlib

    return hashlib.sha256((path / "spec.json").read_bytes()).hexdigest()


def redteam_doc(worst: float, eps: float = 0.05, sha: str | None = None) -> bytes:
    """The parts of an ``rlsec redteam`` results.json that gates read."""
    doc: dict[str, Any] = {
        "kind": "redteam",
        "policy": {"source": str(ZOO), "sha256": sha or _spec_sha()},
        "eps_unit": "raw",
        "clean": {"mean_return": 500.0},
        "worst_case": [{"surface": "observation", "epsilon": eps, "mean_return": worst}],
    }
    return json.dumps(doc).encode()


def test_init_once_and_only_once(registry: Registry) -> None:
    token = registry.init("alice")
    assert registry.whoami(token).roles == frozenset({"admin"})
    with pytest.raises(ConfigError, match="already initialised"):
        registry.init("mallory")
    assert (registry.home / "keys" / "audit-log.pem").stat().st_mode & 0o077 == 0


def test_push_load_and_pull_give_the_pushed_policy(team: Team, tmp_path: Path) -> None:
    reg = team.reg
    v1 = reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    v2 = reg.push(team["trainer"], ZOO, name="cartpole", key=team.key, parent="cartpole@1")
    assert (v1.ref, v2.ref, v2.parent) == ("cartpole@1", "cartpole@2", "cartpole@1")
    assert v1.stage == "candidate"
    original = load_policy(ZOO)
    loaded = reg.load_verified(team["viewer"], "cartpole@2")
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    assert np.array_equal(loaded.act(obs), original.act(obs))
    assert loaded.info.sha256 == original.info.sha256
    out = tmp_path / "pulled"
    reg.pull(team["viewer"], "cartpole", out)
    assert (out / "weights.safetensors").read_bytes() == (ZOO / "weights.safetensors").read_bytes()
    shown = reg.show(team["viewer"], "cartpole@2")
    prov = shown["provenance"]
    assert prov["version"] == "cartpole@2"
    assert prov["pushed_by"] == "trainer"
    assert prov["parent"] == "cartpole@1"
    assert prov["env_id"] == "CartPole-v1"
    assert [v.number for v in reg.versions(team["viewer"], "cartpole")] == [1, 2]
    report = reg.audit_verify(team["auditor"])
    actions = [e.action for e in reg.audit_entries(team["auditor"])]
    assert actions.count("version.push") == 2
    assert report.entries == len(actions)


def test_evidence_must_be_about_the_version(team: Team) -> None:
    reg = team.reg
    reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    with pytest.raises(ConfigError, match="evidence must be about the version"):
        reg.attach(team["trainer"], "cartpole@1", redteam_doc(400, sha="0" * 64), key=team.key)
    with pytest.raises(ConfigError, match="must be one of"):
        reg.attach(team["trainer"], "cartpole@1", json.dumps({"policy": {}}).encode(), key=team.key)
    digest = reg.attach(team["trainer"], "cartpole@1", redteam_doc(400), key=team.key)
    assert reg.show(team["viewer"], "cartpole@1")["evidence"][0]["sha256"] == digest


def test_separation_of_duties_and_k_approvals_gate_production(team: Team) -> None:
    reg = team.reg
    reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    reg.create_principal(team.admin, "tina", "trainer,reviewer")
    tina = reg.create_token(team.admin, "tina")
    key2 = signing.generate_key()
    reg.register_key(tina, signing.public_pem(key2))
    reg.push(tina, ZOO, name="cartpole", key=key2)
    with pytest.raises(AccessDenied, match="pushed cartpole@2 and may not approve it"):
        reg.approve(tina, "cartpole@2", "staging")
    reg.approve(team["reviewer"], "cartpole@1", "staging")
    with pytest.raises(ConfigError, match="already approved"):
        reg.approve(team["reviewer"], "cartpole@1", "staging")
    reg.promote(team["deployer"], "cartpole@1", "staging")
    team.attach("cartpole@1", redteam_doc(400))
    reg.approve(team["reviewer"], "cartpole@1", "production")
    with pytest.raises(GateRefused, match=r"2 approvals .* 1 given"):
        reg.promote(team["deployer"], "cartpole@1", "production")
    assert reg.show(team["viewer"], "cartpole@1")["stage"] == "staging"
    reg.approve(team["reviewer2"], "cartpole@1", "production")
    assert reg.promote(team["deployer"], "cartpole@1", "production").stage == "production"
    refused = [e for e in reg.audit_entries(team["auditor"]) if e.outcome == "refused"]
    assert len(refused) == 1
    assert refused[0].action == "version.promote"


def test_gate_thresholds_are_the_admins_and_every_result_must_meet_them(team: Team) -> None:
    reg = team.reg
    with pytest.raises(AccessDenied):
        reg.set_gates(team["deployer"], {"production": {"approvals": 0}})
    reg.set_gates(
        team.admin,
        {
            "staging": {"approvals": 0, "redteam": {"epsilon": 0.05, "min_worst_case_return": 300}},
        },
    )
    reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    with pytest.raises(GateRefused, match="no red-team results"):
        reg.promote(team["deployer"], "cartpole@1", "staging")
    team.attach("cartpole@1", redteam_doc(250))
    team.attach("cartpole@1", redteam_doc(450))  # a kinder one hides nothing
    with pytest.raises(GateRefused, match="worst-case return 250"):
        reg.promote(team["deployer"], "cartpole@1", "staging")
    reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    team.attach("cartpole@2", redteam_doc(450, eps=0.1))
    with pytest.raises(GateRefused, match="no attached red-team result measured"):
        reg.promote(team["deployer"], "cartpole@2", "staging")
    team.attach("cartpole@2", redteam_doc(301))
    assert reg.promote(team["deployer"], "cartpole@2", "staging").stage == "staging"


def _to_production(team: Team, ref: str) -> None:
    reg = team.reg
    reg.approve(team["reviewer"], ref, "staging")
    reg.promote(team["deployer"], ref, "staging")
    team.attach(ref, redteam_doc(400))
    reg.approve(team["reviewer"], ref, "production")
    reg.approve(team["reviewer2"], ref, "production")
    reg.promote(team["deployer"], ref, "production")


def test_rollback_restores_the_previous_production_version(team: Team) -> None:
    reg = team.reg
    for _ in range(3):
        reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    with pytest.raises(ConfigError, match="no earlier production version"):
        reg.rollback(team["deployer"], "cartpole", "nothing to go back to")
    _to_production(team, "cartpole@1")
    _to_production(team, "cartpole@2")
    assert reg.show(team["viewer"], "cartpole@1")["stage"] == "archived"
    with pytest.raises(ConfigError, match="needs a reason"):
        reg.rollback(team["deployer"], "cartpole", " ")
    back = reg.rollback(team["deployer"], "cartpole", "reward hacking seen in canary")
    assert back.ref == "cartpole@1"
    stages = {v.ref: v.stage for v in reg.versions(team["viewer"], "cartpole")}
    assert stages == {
        "cartpole@1": "production",
        "cartpole@2": "archived",
        "cartpole@3": "candidate",
    }
    assert reg.load_verified(team["viewer"], "cartpole@production").info.sha256 == _spec_sha()
    reg.audit_verify(team["auditor"])


def test_quarantine_blocks_serving_and_rollback_skips_it(team: Team, tmp_path: Path) -> None:
    reg = team.reg
    reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    _to_production(team, "cartpole@1")
    _to_production(team, "cartpole@2")
    reg.quarantine(team["deployer"], "cartpole@1", "backdoor trigger found")
    with pytest.raises(AccessDenied, match="quarantined"):
        reg.load_verified(team["viewer"], "cartpole@1")
    with pytest.raises(AccessDenied, match="only an admin"):
        reg.pull(team["viewer"], "cartpole@1", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    reg.pull(team.admin, "cartpole@1", tmp_path / "forensics")
    with pytest.raises(ConfigError, match="no earlier production version"):
        reg.rollback(team["deployer"], "cartpole", "1 is quarantined")
    with pytest.raises(AccessDenied):
        reg.release(team["deployer"], "cartpole@1", "false alarm")
    assert reg.release(team.admin, "cartpole@1", "false alarm").stage == "candidate"


def test_tokens_expire_revoke_and_principals_disable(team: Team) -> None:
    reg = team.reg
    short = reg.create_token(team.admin, "viewer", expires_in_days=1)
    assert reg.whoami(short).name == "viewer"
    reg.revoke_token(team.admin, parse_token(short)[0])
    with pytest.raises(AccessDenied, match="revoked"):
        reg.versions(short)
    reg.disable_principal(team.admin, "viewer", "left the team")
    with pytest.raises(AccessDenied, match="disabled"):
        reg.versions(team["viewer"])
    with pytest.raises(AccessDenied, match="not valid"):
        reg.versions(team["viewer"][:-4] + "AAAA")
    with pytest.raises(AccessDenied, match="no token"):
        reg.versions(None)
    denials = [e for e in reg.audit_entries(team["auditor"]) if e.outcome == "denied"]
    assert len(denials) == 4
    assert all(e.detail["reason"] for e in denials)
    assert not any(team["viewer"] in json.dumps(e.detail) for e in denials)  # no secrets logged


def test_a_policy_directory_with_anything_else_is_refused_and_nothing_stored(
    team: Team, tmp_path: Path
) -> None:
    import shutil

    reg = team.reg
    bad = tmp_path / "bad"
    shutil.copytree(ZOO, bad)
    (bad / "model.pkl").write_bytes(b"\x80\x04cos\nsystem\n")
    with pytest.raises(PolicyLoadError, match="holds exactly"):
        reg.push(team["trainer"], bad, name="cartpole", key=team.key)
    (bad / "model.pkl").unlink()
    (bad / "weights.safetensors").write_bytes(b"\x80\x04cos\nsystem\n(S'touch /tmp/pwned'\ntR.")
    with pytest.raises(PolicyLoadError):
        reg.push(team["trainer"], bad, name="cartpole", key=team.key)
    assert reg.versions(team["viewer"]) == []
    assert not (reg.home / "artifacts").exists()


def test_deleting_is_an_audited_admin_action_that_keeps_the_record(team: Team) -> None:
    reg = team.reg
    v1 = reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)  # the same files as v1
    with pytest.raises(AccessDenied):
        reg.delete(team["deployer"], "cartpole@1", "cleanup")
    reg.delete(team.admin, "cartpole@1", "superseded")
    blobs = [reg.artifacts.path(d) for d in v1.files.values()]
    assert all(b.is_file() for b in blobs)  # still used by cartpole@2
    with pytest.raises(ConfigError, match="was deleted"):
        reg.load_verified(team["viewer"], "cartpole@1")
    reg.load_verified(team["viewer"], "cartpole@2")
    reg.delete(team.admin, "cartpole@2", "retired")
    assert not any(b.exists() for b in blobs)
    assert not list((reg.artifacts.root / "trash").iterdir())
    assert reg.push(team["trainer"], ZOO, name="cartpole", key=team.key).number == 3
    stages = [v.stage for v in reg.versions(team["viewer"], "cartpole")]
    assert stages == ["deleted", "deleted", "candidate"]
    deletions = [e for e in reg.audit_entries(team["auditor"]) if e.action == "version.delete"]
    assert [d.detail["removed"] for d in deletions] == [[], sorted(v1.files.values())]
    reg.audit_verify(team["auditor"])
