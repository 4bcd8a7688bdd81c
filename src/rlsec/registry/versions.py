"""Versions: push, list, show, verified load and pull, and deletion."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rlsec.errors import ConfigError, PolicyLoadError, VerificationError
from rlsec.policies import TorchPolicy
from rlsec.policies.native import SPEC_FILE, WEIGHTS_FILE, load_native_bytes, write_policy_dir
from rlsec.registry import signing
from rlsec.registry._base import (
    Denied,
    RegistryBase,
    VersionInfo,
    _name,
    _ref,
    _version_info,
    check_text,
)
from rlsec.registry.access import Principal, check_policy_name
from rlsec.registry.db import (
    ApprovalRow,
    EvidenceRow,
    KeyRow,
    PolicyRow,
    PrincipalRow,
    StageChangeRow,
    VersionRow,
)

__all__ = ["Stages", "Versions"]


class Versions(RegistryBase):
    """Pushing, reading and deleting versions."""

    def push(
        self,
        token: str | None,
        source: str | os.PathLike[str],
        *,
        name: str,
        key: ec.EllipticCurvePrivateKey,
        env_id: str | None = None,
        parent: str | None = None,
        datasets: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        """Push a native policy directory (or an SB3 ``.zip``, through the safe importer, or
        ``zoo:NAME``) as the next version of ``name``, signed with ``key`` (which must be
        registered to the caller). The files are validated as a policy first; nothing in
        them is run."""
        check_policy_name(name)
        if str(source).startswith("zoo:"):
            from rlsec.policies import zoo_path

            source = zoo_path(str(source)[4:])
        files = _read_source(Path(source), env_id)
        policy = load_native_bytes(files[SPEC_FILE], files[WEIGHTS_FILE], where=str(source))
        if env_id is not None and policy.info.env_id not in (None, env_id):
            raise ConfigError(f"the policy was made for {policy.info.env_id}, not {env_id}")
        env = env_id or policy.info.env_id
        for d, v in (datasets or {}).items():
            check_text(d, "a dataset name", 128)
            if not isinstance(v, str) or not re.fullmatch(r"[0-9a-f]{64}", v):
                raise ConfigError(f"dataset {d!r}: expected a SHA-256 hex digest, got {v!r:.80}")
        kid = signing.key_id(signing.public_pem(key))
        digests = {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}

        def change(s: Session, p: Principal) -> VersionInfo:
            krow = s.get(KeyRow, kid)
            if krow is None or krow.principal_id != p.id:
                raise Denied(p.name, f"key {kid[:16]}... is not registered to {p.name}")
            if krow.revoked_at is not None:
                raise Denied(p.name, f"key {kid[:16]}... was revoked at {krow.revoked_at}")
            prow = s.execute(select(PolicyRow).where(PolicyRow.name == name)).scalar_one_or_none()
            new_policy = prow is None
            if prow is None:
                prow = PolicyRow(name=name, created_at=self._now())
                s.add(prow)
                s.flush()
            last = s.execute(
                select(func.max(VersionRow.number)).where(VersionRow.policy_id == prow.id)
            ).scalar_one()
            number = int(last or 0) + 1
            parent_row = None if parent is None else self._resolve(s, parent)
            from rlsec._version import __version__

            provenance = {
                "_type": "https://in-toto.io/Statement/v1",
                "predicateType": "https://rlsec.dev/provenance/v1",
                "version": f"{name}@{number}",
                "pushed_by": p.name,
                "env_id": env,
                "parent": None if parent_row is None else _ref(s, parent_row),
                "datasets": dict(datasets or {}),
                "registry": f"rlsec {__version__}",
                "training": policy.info.provenance,
            }
            manifest = signing.Manifest(f"{name}@{number}", digests, provenance)
            bundle = signing.sign(manifest, key)
            for blob in files.values():  # before the commit: a crash leaves only orphan blobs
                self.artifacts.put(blob)
            row = VersionRow(
                policy_id=prow.id,
                number=number,
                manifest_sha256=hashlib.sha256(bundle).hexdigest(),
                bundle=bundle,
                files=digests,
                env_id=env,
                signer_key_id=kid,
                pushed_by=p.id,
                pushed_at=self._now(),
                parent_id=None if parent_row is None else parent_row.id,
                stage="candidate",
                epoch=0,
            )
            s.add(row)
            self._append(
                s,
                p.name,
                "version.push",
                f"{name}@{number}",
                after={"manifest_sha256": row.manifest_sha256, "files": digests},
                rows=[row, prow] if new_policy else [row],
            )
            return self._info(s, row)

        return self._mutate(token, "push", name, change)

    def _now(self) -> str:
        from rlsec.registry import audit

        return audit.now()

    def versions(self, token: str | None, name: str | None = None) -> list[VersionInfo]:
        def look(s: Session, _p: Principal) -> list[VersionInfo]:
            q = select(VersionRow).join(PolicyRow).order_by(PolicyRow.name, VersionRow.number)
            if name is not None:
                q = q.where(PolicyRow.name == name)
            rows = list(s.execute(q).scalars())
            # one query per table, not three per version
            policies = {p.id: p.name for p in s.execute(select(PolicyRow)).scalars()}
            people = {p.id: p.name for p in s.execute(select(PrincipalRow)).scalars()}
            refs = {
                v.id: f"{policies[v.policy_id]}@{v.number}"
                for v in s.execute(select(VersionRow.id, VersionRow.policy_id, VersionRow.number))
            }
            return [
                _version_info(
                    r,
                    policies[r.policy_id],
                    people[r.pushed_by],
                    None if r.parent_id is None else refs[r.parent_id],
                )
                for r in rows
            ]

        return self._query(token, "read", name or "*", look)

    def show(self, token: str | None, ref: str) -> dict[str, Any]:
        """A version, its provenance as signed, its evidence, approvals and stage history."""

        def look(s: Session, _p: Principal) -> dict[str, Any]:
            row = self._resolve(s, ref)
            doc = self._info(s, row).to_dict()
            statement = json.loads(
                signing._b64(json.loads(row.bundle)["dsseEnvelope"]["payload"], "payload")
            )
            doc["provenance"] = statement["predicate"].get("provenance")
            doc["epoch"] = row.epoch
            doc["evidence"] = [
                {
                    "kind": e.kind,
                    "sha256": e.sha256,
                    "attached_by": _name(s, e.attached_by),
                    "attached_at": e.attached_at,
                    "signed_by_key": e.signer_key_id,
                    "epoch": e.epoch,
                }
                for e in s.execute(
                    select(EvidenceRow).where(EvidenceRow.version_id == row.id)
                ).scalars()
            ]
            doc["approvals"] = [
                {
                    "stage": a.stage,
                    "reviewer": _name(s, a.reviewer_id),
                    "at": a.at,
                    "epoch": a.epoch,
                }
                for a in s.execute(
                    select(ApprovalRow).where(ApprovalRow.version_id == row.id)
                ).scalars()
            ]
            doc["history"] = [
                {
                    "from": c.from_stage,
                    "to": c.to_stage,
                    "by": _name(s, c.by),
                    "at": c.at,
                    "reason": c.reason,
                }
                for c in s.execute(
                    select(StageChangeRow)
                    .where(StageChangeRow.version_id == row.id)
                    .order_by(StageChangeRow.id)
                ).scalars()
            ]
            return doc

        return self._query(token, "read", ref, look)

    def _verified_files(self, s: Session, row: VersionRow) -> dict[str, bytes]:
        """The version's files, read once: the signature by the key the version records
        (which must still be registered to its pusher and unrevoked, and must be the key the
        bundle names), the manifest bound to this version, each file's bytes against it."""
        ref = _ref(s, row)
        krow = s.get(KeyRow, row.signer_key_id)
        if krow is None or krow.principal_id != row.pushed_by:
            raise VerificationError(
                f"{ref}: its signing key {row.signer_key_id[:16]}... is not registered to "
                f"its pusher"
            )
        if krow.revoked_at is not None:
            raise VerificationError(
                f"{ref}: its signing key {row.signer_key_id[:16]}... was revoked at "
                f"{krow.revoked_at}"
            )
        manifest = signing.verify(bytes(row.bundle), {krow.key_id: krow.public_pem.encode()})
        if manifest.name != ref:
            raise VerificationError(f"{ref}: its signed manifest belongs to {manifest.name}")
        if dict(manifest.files) != dict(row.files) or set(manifest.files) != {
            SPEC_FILE,
            WEIGHTS_FILE,
        }:
            raise VerificationError(f"{ref}: the stored file list differs from the signed one")
        return {n: self.artifacts.get(d) for n, d in manifest.files.items()}

    def load_verified(self, token: str | None, ref: str) -> TorchPolicy:
        """Load a version for use: signature, manifest and bytes verified, from the very
        bytes that were checked. A quarantined version is refused. Every refusal is an
        audit entry; a failed check also carries the :class:`~rlsec.core.Finding` recorded
        (``exc.finding``).

        Raises:
            VerificationError: any check fails (nothing is loaded).
            AccessDenied: the token may not read, or the version is quarantined.
        """

        def look(s: Session, p: Principal) -> TorchPolicy:
            row = self._resolve(s, ref)
            _not_deleted(s, row)
            if row.stage == "quarantined":
                raise Denied(p.name, f"{_ref(s, row)} is quarantined: it may not be served")
            files = self._verified_files(s, row)
            return load_native_bytes(
                files[SPEC_FILE], files[WEIGHTS_FILE], where=f"registry:{_ref(s, row)}"
            )

        return self._query(token, "read", ref, look)

    def pull(self, token: str | None, ref: str, out: str | os.PathLike[str]) -> VersionInfo:
        """Write a verified version as a policy directory at ``out`` (whole or not at all).
        Quarantined versions may be pulled, for forensics, by an admin only."""
        target = Path(out)
        if target.exists() or target.is_symlink():
            raise ConfigError(f"{target} exists: pull writes a new directory")

        def look(s: Session, p: Principal) -> VersionInfo:
            row = self._resolve(s, ref)
            _not_deleted(s, row)
            if row.stage == "quarantined" and "admin" not in p.roles:
                raise Denied(p.name, f"{_ref(s, row)} is quarantined: only an admin may pull it")
            files = self._verified_files(s, row)
            load_native_bytes(files[SPEC_FILE], files[WEIGHTS_FILE], where=_ref(s, row))
            write_policy_dir(target, files[WEIGHTS_FILE], files[SPEC_FILE])
            return self._info(s, row)

        return self._query(token, "read", ref, look)

    def verify_version(self, token: str | None, ref: str) -> VersionInfo:
        """Check a version's signature and bytes without loading it (raises if bad)."""

        def look(s: Session, _p: Principal) -> VersionInfo:
            row = self._resolve(s, ref)
            _not_deleted(s, row)
            files = self._verified_files(s, row)
            load_native_bytes(files[SPEC_FILE], files[WEIGHTS_FILE], where=_ref(s, row))
            return self._info(s, row)

        return self._query(token, "read", ref, look)


def _not_deleted(s: Session, row: VersionRow) -> None:
    if row.stage == "deleted":
        raise ConfigError(f"{_ref(s, row)} was deleted; only its record remains")


def _read_source(path: Path, env_id: str | None) -> dict[str, bytes]:
    """The two files of a native policy directory, or of an SB3 archive converted by the
    safe importer. Anything else is refused: no other file may travel with the weights."""
    from rlsec.policies.native import _MAX_SPEC_BYTES, _MAX_WEIGHTS_BYTES, _read_capped

    if path.is_symlink():
        raise PolicyLoadError(f"{path} is a symbolic link; push the directory itself")
    if path.is_dir():
        entries = sorted(p.name for p in path.iterdir())
        if entries != sorted([SPEC_FILE, WEIGHTS_FILE]):
            raise PolicyLoadError(
                f"{path}: a policy directory holds exactly {SPEC_FILE} and {WEIGHTS_FILE}, "
                f"found {entries}"
            )
        for n in entries:
            st = (path / n).lstat()
            if not stat.S_ISREG(st.st_mode):
                raise PolicyLoadError(f"{path / n} is not a regular file")
        return {
            SPEC_FILE: _read_capped(path / SPEC_FILE, _MAX_SPEC_BYTES, SPEC_FILE),
            WEIGHTS_FILE: _read_capped(path / WEIGHTS_FILE, _MAX_WEIGHTS_BYTES, WEIGHTS_FILE),
        }
    if path.is_file() and path.suffix == ".zip":
        import tempfile

        from rlsec.policies import from_sb3, save_policy

        policy = from_sb3(path, env_id=env_id)
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp) / "policy"
            save_policy(policy, d, env_id=env_id or policy.info.env_id, algo=policy.info.algo)
            return _read_source(d, env_id)
    raise PolicyLoadError(f"expected a native policy directory or an SB3 .zip archive, got {path}")


class Stages(Versions):
    """Stage moves and deletion (every move is a :class:`StageChangeRow` and an entry)."""

    def _move(
        self,
        s: Session,
        p: Principal,
        row: VersionRow,
        to: str,
        reason: str,
        action: str,
        detail: Mapping[str, Any] | None = None,
        *,
        new_epoch: bool = False,
    ) -> None:
        before = row.stage
        row.stage = to
        if new_epoch:  # approvals and evidence given so far stop counting
            row.epoch = row.epoch + 1
        change = StageChangeRow(
            version_id=row.id,
            policy_id=row.policy_id,
            from_stage=before,
            to_stage=to,
            by=p.id,
            at=self._now(),
            reason=reason,
        )
        s.add(change)
        self._append(
            s,
            p.name,
            action,
            _ref(s, row),
            before={"stage": before},
            after={"stage": to, "epoch": row.epoch},
            detail={"reason": reason, **dict(detail or {})},
            rows=[row, change],
        )

    def delete(self, token: str | None, ref: str, reason: str) -> VersionInfo:
        """Delete a version's stored files (admin). Its record, signed manifest and history
        stay as a tombstone in stage ``deleted``: numbers are never reused and the log still
        proves what existed. Files another version shares are kept. A production version
        must be rolled back or quarantined first."""
        if not check_text(reason, "reason").strip():
            raise ConfigError("a deletion needs a reason")
        trash: list[tuple[Path, Path]] = []

        def change(s: Session, p: Principal) -> VersionInfo:
            row = self._resolve(s, ref)
            if row.stage in ("production", "deleted"):
                raise ConfigError(
                    f"{_ref(s, row)} is {row.stage}: "
                    + (
                        "roll it back or quarantine it first"
                        if row.stage == "production"
                        else "it is already deleted"
                    )
                )
            kept = {
                d
                for other in s.execute(
                    select(VersionRow).where(VersionRow.id != row.id, VersionRow.stage != "deleted")
                ).scalars()
                for d in other.files.values()
            }
            gone = sorted(set(row.files.values()) - kept)
            self._move(s, p, row, "deleted", reason, "version.delete", {"removed": gone})
            bin_ = self.artifacts.root / "trash"
            bin_.mkdir(parents=True, exist_ok=True)
            for d in gone:  # under the log's lock, so no push can share a blob meanwhile
                src = self.artifacts.path(d)
                if src.exists():
                    dst = bin_ / d
                    os.replace(src, dst)
                    trash.append((src, dst))
            return self._info(s, row)

        try:
            info = self._mutate(token, "delete", ref, change)
        except BaseException:
            for src, dst in trash:  # the deletion did not commit: put the files back
                os.replace(dst, src)
            raise
        for _src, dst in trash:
            dst.unlink(missing_ok=True)
        return info
