"""Hostile artifacts and tampered storage, on SQLite and PostgreSQL: each is refused with
nothing executed, stored or written."""

from __future__ import annotations

import base64
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from sqlalchemy.orm import Session

from registry_helpers import Team, forge
from rlsec.core import Finding, Severity
from rlsec.errors import AccessDenied, PolicyLoadError, UnsafeArtifact, VerificationError
from rlsec.policies import zoo_path
from rlsec.registry import signing
from rlsec.registry.db import KeyRow, VersionRow

ZOO = zoo_path("cartpole-ppo")


class _TouchOnUnpickle:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _set_version(team: Team, number: int, **values: Any) -> None:
    """Change a version's row with a forged audit entry binding it (see ``forge``): these
    tests are of the checks behind the state binding."""
    forge(team.reg, VersionRow, VersionRow.number == number, **values)


def _row(team: Team, number: int) -> VersionRow:
    with Session(team.reg.engine, expire_on_commit=False) as s:
        return s.execute(select(VersionRow).where(VersionRow.number == number)).scalar_one()


def _refused(team: Team, ref: str, tmp_path: Path, match: str) -> None:
    """Both ways of reading the version are refused with ``match``; each refusal is an audit
    entry naming the reader and the reason, and carries its finding."""
    before = len(team.reg.audit_entries(team["auditor"]))
    with pytest.raises(VerificationError, match=match) as loaded:
        team.reg.load_verified(team["viewer"], ref)
    with pytest.raises(VerificationError, match=match) as pulled:
        team.reg.pull(team["viewer"], ref, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    logged = team.reg.audit_entries(team["auditor"])[before:]
    refusals = [e for e in logged if e.action == "refused:read"]
    assert [(e.actor, e.target, e.outcome) for e in refusals] == [("viewer", ref, "refused")] * 2
    assert all(re.search(match, e.detail["reason"]) for e in refusals)
    for exc in (loaded.value, pulled.value):
        finding = exc.finding
        assert isinstance(finding, Finding) and finding.severity >= Severity.HIGH
        assert finding.to_dict() == refusals[0].detail["finding"]


def test_weights_changed_on_disk_are_refused(team: Team, tmp_path: Path) -> None:
    v = team.reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    blob = team.reg.artifacts.path(v.files["weights.safetensors"])
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    _refused(team, "cartpole@1", tmp_path, "modified on disk")


def test_a_valid_signature_by_an_unregistered_key_is_refused(team: Team, tmp_path: Path) -> None:
    team.reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    row = _row(team, 1)
    statement = json.loads(
        signing._b64(json.loads(row.bundle)["dsseEnvelope"]["payload"], "payload")
    )
    pred = statement["predicate"]
    manifest = signing.Manifest(
        statement["subject"][0]["name"],
        {r["name"]: r["digest"] for r in pred["resources"]},
        {**pred["provenance"], "pushed_by": "mallory"},
    )
    _set_version(team, 1, bundle=signing.sign(manifest, signing.generate_key()))
    _refused(team, "cartpole@1", tmp_path, "not a trusted key")
    with pytest.raises(AccessDenied, match="not registered to trainer"):
        team.reg.push(team["trainer"], ZOO, name="cartpole", key=signing.generate_key())
    assert [v.number for v in team.reg.versions(team["viewer"])] == [1]


def test_versions_signed_by_a_revoked_key_no_longer_load(team: Team, tmp_path: Path) -> None:
    team.reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    kid = signing.key_id(signing.public_pem(team.key))
    team.reg.revoke_key(team["trainer"], kid, "laptop stolen")
    _refused(team, "cartpole@1", tmp_path, "was revoked at")
    with pytest.raises(AccessDenied, match="revoked"):
        team.reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    with Session(team.reg.engine) as s:
        assert s.get(KeyRow, kid) is not None  # revoked, not deleted


def test_a_manifest_swapped_between_versions_is_refused(team: Team, tmp_path: Path) -> None:
    team.reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    team.reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    _set_version(team, 2, bundle=_row(team, 1).bundle)
    _refused(team, "cartpole@2", tmp_path, "belongs to cartpole@1")


def test_a_signed_manifest_naming_traversal_paths_is_refused(team: Team, tmp_path: Path) -> None:
    team.reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    row = _row(team, 1)
    payload = json.loads(signing._b64(json.loads(row.bundle)["dsseEnvelope"]["payload"], "payload"))
    payload["predicate"]["resources"][0]["name"] = "../../../etc/cron.d/x"
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    sig = team.key.sign(signing.pae(signing.PAYLOAD_TYPE, body), ec.ECDSA(hashes.SHA256()))
    bundle = json.loads(row.bundle)
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(body).decode()
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(sig).decode()
    _set_version(team, 1, bundle=json.dumps(bundle).encode())
    _refused(team, "cartpole@1", tmp_path, "not a plain relative path")
    assert not (tmp_path.parent / "etc").exists()


def test_a_stored_file_list_changed_in_the_database_is_refused(team: Team, tmp_path: Path) -> None:
    team.reg.push(team["trainer"], ZOO, name="cartpole", key=team.key)
    files = dict(_row(team, 1).files)
    files["weights.safetensors"] = "0" * 64
    _set_version(team, 1, files=files)
    _refused(team, "cartpole@1", tmp_path, "differs from the signed one")


def test_pickled_code_in_an_sb3_archive_never_runs_and_nothing_is_stored(
    team: Team, tmp_path: Path
) -> None:
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, device="cpu")
    buf = io.BytesIO()
    model.save(buf)
    marker = tmp_path / "pwned"
    evil = io.BytesIO()
    torch.save({"evil": _TouchOnUnpickle(marker)}, evil)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    hostile = tmp_path / "hostile.zip"
    with zipfile.ZipFile(hostile, "w") as z:
        for info in src.infolist():
            body = evil.getvalue() if info.filename == "policy.pth" else src.read(info)
            z.writestr(info.filename, body)
    with pytest.raises(UnsafeArtifact):
        team.reg.push(team["trainer"], hostile, name="cartpole", key=team.key, env_id="CartPole-v1")
    assert not marker.exists()
    assert team.reg.versions(team["viewer"]) == []
    assert not (team.reg.home / "artifacts").exists()
    clean = tmp_path / "clean.zip"
    clean.write_bytes(buf.getvalue())
    v = team.reg.push(team["trainer"], clean, name="cartpole", key=team.key, env_id="CartPole-v1")
    assert team.reg.load_verified(team["viewer"], v.ref).info.env_id == "CartPole-v1"


def test_symlinks_are_refused(team: Team, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(ZOO)
    with pytest.raises(PolicyLoadError, match="symbolic link"):
        team.reg.push(team["trainer"], link, name="cartpole", key=team.key)
    d = tmp_path / "d"
    d.mkdir()
    (d / "spec.json").symlink_to(ZOO / "spec.json")
    (d / "weights.safetensors").write_bytes((ZOO / "weights.safetensors").read_bytes())
    with pytest.raises(PolicyLoadError, match="not a regular file"):
        team.reg.push(team["trainer"], d, name="cartpole", key=team.key)
