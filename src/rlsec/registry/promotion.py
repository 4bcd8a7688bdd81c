"""Evidence, approvals and gated stage moves: attach, approve, promote, rollback,
quarantine, release.

What counts toward a gate is decided when the gate is checked, from the rows as they are
then (each checked against the audit log as it loads):

* **evidence** (:func:`sign_evidence`): signed by its attacher with a key registered to
  them and unrevoked; the attacher holds one of the gate's ``evidence_from`` roles and is
  not disabled; is not the version's pusher; was attached in the version's current epoch.
  A signature says who vouches for a result: it does not make the result true. A signer can
  still lie; what the registry guarantees is that the pusher cannot vouch for their own
  version, that the signer is named, and that the act is in the audit log.
* **approvals**: by a principal who holds ``reviewer`` now and is not disabled, is not the
  pusher, existed before the version was pushed (so an admin cannot create reviewers for a
  version already pushed), and, if an admin, did not otherwise act on the version (attach
  evidence, move its stage); given in the version's current epoch.

A quarantine and a release each start a new epoch: a released version must gather fresh
evidence and approvals. Rollback chooses only a version that meets the production gate as it
stands.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from sqlalchemy.orm import Session

from rlsec.errors import ConfigError, GateRefused, VerificationError
from rlsec.policies.native import SPEC_FILE
from rlsec.registry import signing
from rlsec.registry._base import Denied, VersionInfo, _ref, check_text
from rlsec.registry.access import Principal, parse_roles
from rlsec.registry.db import (
    ApprovalRow,
    EvidenceRow,
    KeyRow,
    PolicyRow,
    PrincipalRow,
    StageChangeRow,
    VersionRow,
)
from rlsec.registry.gates import GATED_STAGES, Rule, check_gate, parse_gates
from rlsec.registry.principals import Principals
from rlsec.registry.versions import Stages

__all__ = ["Promotion", "sign_evidence"]

_NEXT = {"candidate": "staging", "staging": "production"}
_EVIDENCE_KINDS = ("redteam", "verification")
_MAX_EVIDENCE = 64 * 2**20
EVIDENCE_FILE = "evidence.json"


def sign_evidence(ref: str, body: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """A signature bundle over an evidence document for version ``ref``: the OpenSSF
    model-signing format over one file, ``evidence.json``, named ``evidence:REF``. Made on
    the signer's side; the registry stores and verifies it."""
    manifest = signing.Manifest(
        f"evidence:{ref}", {EVIDENCE_FILE: hashlib.sha256(body).hexdigest()}
    )
    return signing.sign(manifest, key)


class Promotion(Stages, Principals):
    """Evidence, approvals and the gated stage moves."""

    # -- evidence -----------------------------------------------------------------------------
    def attach(
        self,
        token: str | None,
        ref: str,
        body: bytes,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        signature: bytes | None = None,
    ) -> str:
        """Attach a ``results.json`` of ``rlsec redteam`` or a JSON of ``rlsec verify`` to a
        version, signed by the caller: with ``key`` (signed here) or a ``signature`` made by
        :func:`sign_evidence` elsewhere, by a key registered to the caller. It must be about
        this version's policy (its digest). Returns its SHA-256."""
        if not isinstance(body, bytes) or len(body) > _MAX_EVIDENCE:
            raise ConfigError(f"evidence must be at most {_MAX_EVIDENCE} bytes")
        if (key is None) == (signature is None):
            raise ConfigError(
                "evidence must be signed by whoever attaches it: give a key or a signature"
            )
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ConfigError(f"evidence must be JSON: {exc}") from None
        kind = _evidence_kind(doc)
        digest = hashlib.sha256(body).hexdigest()

        def change(s: Session, p: Principal) -> str:
            row = self._resolve(s, ref)
            vref = _ref(s, row)
            want = row.files[SPEC_FILE]
            got = doc.get("policy", {}).get("sha256")
            if got != want:
                raise ConfigError(
                    f"this {kind} result is about policy {str(got)[:16]}..., but "
                    f"{vref} is {want[:16]}...: evidence must be about the version. "
                    f"Run it on the version itself (rlsec registry pull {vref} --out DIR, "
                    f"then --policy DIR)"
                )
            bundle = sign_evidence(vref, body, key) if key is not None else signature
            assert bundle is not None
            kid = self._evidence_signer(s, p, vref, body, bundle)
            erow = EvidenceRow(
                version_id=row.id,
                kind=kind,
                sha256=digest,
                body=body,
                attached_by=p.id,
                attached_at=self._now(),
                epoch=row.epoch,
                signer_key_id=kid,
                bundle=bundle,
            )
            s.add(erow)
            self._append(
                s,
                p.name,
                "evidence.attach",
                vref,
                after={"kind": kind, "sha256": digest, "signed_by_key": kid},
                rows=[erow],
            )
            return digest

        return self._mutate(token, "attach", ref, change)

    def _evidence_signer(
        self, s: Session, p: Principal, ref: str, body: bytes, bundle: bytes
    ) -> str:
        """The id of the caller's key that signed ``body`` for ``ref`` (refused otherwise)."""
        keys = {
            k.key_id: k.public_pem.encode()
            for k in s.execute(
                select(KeyRow).where(KeyRow.principal_id == p.id, KeyRow.revoked_at.is_(None))
            ).scalars()
        }
        if not keys:
            raise Denied(p.name, f"{p.name} has no registered, unrevoked signing key")
        try:
            _check_evidence_bundle(bundle, keys, ref, body)
        except VerificationError as exc:
            raise Denied(p.name, f"the evidence signature is not {p.name}'s: {exc}") from None
        return str(json.loads(bundle)["verificationMaterial"]["publicKey"]["hint"])

    def _counted_evidence(
        self, s: Session, row: VersionRow, rule: Rule
    ) -> tuple[list[tuple[str, Any]], list[str]]:
        """The evidence that counts for ``rule``, parsed, and why the rest does not."""
        ref = _ref(s, row)
        counted: list[tuple[str, Any]] = []
        notes: list[str] = []
        for e in s.execute(select(EvidenceRow).where(EvidenceRow.version_id == row.id)).scalars():
            body = bytes(e.body)
            if hashlib.sha256(body).hexdigest() != e.sha256:
                raise VerificationError(
                    f"evidence {e.sha256[:16]}... on {ref}: its body does not match its digest"
                )
            who = s.get(PrincipalRow, e.attached_by)
            name = "?" if who is None else who.name
            short = f"{e.kind} result {e.sha256[:12]} by {name}"
            if e.epoch != row.epoch:
                continue  # from before a quarantine or release: silently stale
            if who is None or e.attached_by == row.pushed_by:
                notes.append(f"{short} does not count: the pusher's own evidence never does")
                continue
            if who.disabled_at is not None:
                notes.append(f"{short} does not count: {name} is disabled")
                continue
            if not parse_roles(who.roles) & rule.evidence_from:
                notes.append(
                    f"{short} does not count: the gate takes evidence from "
                    f"{sorted(rule.evidence_from)} only"
                )
                continue
            krow = None if e.signer_key_id is None else s.get(KeyRow, e.signer_key_id)
            if (
                e.bundle is None
                or krow is None
                or krow.principal_id != e.attached_by
                or krow.revoked_at is not None
            ):
                notes.append(f"{short} does not count: its signing key is missing or revoked")
                continue
            _check_evidence_bundle(
                bytes(e.bundle), {krow.key_id: krow.public_pem.encode()}, ref, body
            )
            counted.append((e.kind, json.loads(body)))
        return counted, notes

    # -- approvals ----------------------------------------------------------------------------
    def approve(self, token: str | None, ref: str, stage: str, comment: str = "") -> None:
        """Approve a version for ``stage``; the version's pusher may not approve it."""
        if stage not in GATED_STAGES:
            raise ConfigError(f"approvals are for {list(GATED_STAGES)}, got {stage!r:.40}")
        check_text(comment, "comment")

        def change(s: Session, p: Principal) -> None:
            row = self._resolve(s, ref)
            if row.pushed_by == p.id:
                raise Denied(p.name, f"{p.name} pushed {_ref(s, row)} and may not approve it")
            if row.stage in ("quarantined", "archived", "deleted"):
                raise ConfigError(f"{_ref(s, row)} is {row.stage}: it cannot be approved")
            dup = s.execute(
                select(ApprovalRow).where(
                    ApprovalRow.version_id == row.id,
                    ApprovalRow.stage == stage,
                    ApprovalRow.reviewer_id == p.id,
                    ApprovalRow.epoch == row.epoch,
                )
            ).first()
            if dup:
                raise ConfigError(f"{p.name} already approved {_ref(s, row)} for {stage}")
            arow = ApprovalRow(
                version_id=row.id,
                stage=stage,
                reviewer_id=p.id,
                at=self._now(),
                comment=comment,
                epoch=row.epoch,
            )
            s.add(arow)
            self._append(
                s,
                p.name,
                "version.approve",
                _ref(s, row),
                after={"stage": stage, "epoch": row.epoch},
                detail={"comment": comment},
                rows=[arow],
            )

        self._mutate(token, "approve", ref, change)

    def _counted_approvals(self, s: Session, row: VersionRow, stage: str) -> tuple[int, list[str]]:
        """Distinct eligible reviewers of ``row`` for ``stage``, and why others do not count."""
        acted = {row.pushed_by}
        acted |= {
            e.attached_by
            for e in s.execute(
                select(EvidenceRow).where(EvidenceRow.version_id == row.id)
            ).scalars()
        }
        acted |= {
            c.by
            for c in s.execute(
                select(StageChangeRow).where(StageChangeRow.version_id == row.id)
            ).scalars()
        }
        counted: set[int] = set()
        notes: list[str] = []
        for a in s.execute(
            select(ApprovalRow).where(
                ApprovalRow.version_id == row.id,
                ApprovalRow.stage == stage,
                ApprovalRow.epoch == row.epoch,
            )
        ).scalars():
            who = s.get(PrincipalRow, a.reviewer_id)
            name = "?" if who is None else who.name
            roles = frozenset() if who is None else parse_roles(who.roles)
            why = None
            if who is None or a.reviewer_id == row.pushed_by:
                why = "the pusher may not approve"
            elif who.disabled_at is not None:
                why = "disabled"
            elif "reviewer" not in roles:
                why = "no longer a reviewer"
            elif not who.created_at < row.pushed_at:
                why = "created after the version was pushed"
            elif "admin" in roles and a.reviewer_id in acted:
                why = "an admin who acted on the version"
            if why is None:
                counted.add(a.reviewer_id)
            else:
                notes.append(f"the approval by {name} does not count: {why}")
        return len(counted), notes

    def _gate_missing(self, s: Session, row: VersionRow, stage: str) -> tuple[list[str], list[str]]:
        """What ``row`` lacks for ``stage`` under the gate policy in force, and notes on
        evidence and approvals that do not count."""
        rule = parse_gates(self.gates(s))[stage]
        evidence, enotes = self._counted_evidence(s, row, rule)
        approvers, anotes = self._counted_approvals(s, row, stage)
        return check_gate(rule, evidence, approvers), enotes + anotes

    # -- stage moves --------------------------------------------------------------------------
    def promote(self, token: str | None, ref: str, stage: str, reason: str = "") -> VersionInfo:
        """Move a version to the next stage (candidate → staging → production) if the gate
        policy's evidence and approvals are there; the production version it replaces is
        archived. A refused promotion raises :class:`GateRefused` and is audited."""
        if stage not in GATED_STAGES:
            raise ConfigError(f"promote to one of {list(GATED_STAGES)}, got {stage!r:.40}")
        check_text(reason, "reason")
        refused: list[str] = []

        def change(s: Session, p: Principal) -> VersionInfo:
            row = self._resolve(s, ref)
            if _NEXT.get(row.stage) != stage:
                raise ConfigError(
                    f"{_ref(s, row)} is {row.stage}; it can only be promoted to "
                    f"{_NEXT.get(row.stage, 'nothing')}"
                )
            missing, notes = self._gate_missing(s, row, stage)
            self._verified_files(s, row)  # a version that does not verify never moves
            if missing:
                refused.extend(missing + notes)
                raise _GateMiss(_ref(s, row))
            if stage == "production":
                for old in s.execute(
                    select(VersionRow).where(
                        VersionRow.policy_id == row.policy_id, VersionRow.stage == "production"
                    )
                ).scalars():
                    self._move(
                        s, p, old, "archived", f"replaced by {_ref(s, row)}", "version.archive"
                    )
            attached = [
                e.sha256
                for e in s.execute(
                    select(EvidenceRow).where(
                        EvidenceRow.version_id == row.id, EvidenceRow.epoch == row.epoch
                    )
                ).scalars()
            ]
            self._move(s, p, row, stage, reason, "version.promote", {"evidence": attached})
            return self._info(s, row)

        try:
            return self._mutate(token, "promote", ref, change)
        except _GateMiss as miss:
            with self._write() as s:
                p = self._authorize(s, token, "promote")
                self._append(
                    s,
                    p.name,
                    "version.promote",
                    miss.ref,
                    outcome="refused",
                    detail={"stage": stage, "missing": refused},
                )
            raise GateRefused(f"{miss.ref} may not enter {stage}: " + "; ".join(refused)) from None

    def rollback(self, token: str | None, name: str, reason: str) -> VersionInfo:
        """Put the newest earlier production version of ``name`` that still meets the
        production gate back in production, in one audited step (the current one, if any,
        is archived). Quarantined, deleted and released versions (a release starts a new
        epoch) do not qualify until they pass the gate again."""
        if not check_text(reason, "reason").strip():
            raise ConfigError("a rollback needs a reason")

        def change(s: Session, p: Principal) -> VersionInfo:
            prow = s.execute(select(PolicyRow).where(PolicyRow.name == name)).scalar_one_or_none()
            if prow is None:
                raise ConfigError(f"no policy named {name!r:.140}")
            current = s.execute(
                select(VersionRow).where(
                    VersionRow.policy_id == prow.id, VersionRow.stage == "production"
                )
            ).scalar_one_or_none()
            history = s.execute(
                select(StageChangeRow)
                .where(StageChangeRow.policy_id == prow.id, StageChangeRow.to_stage == "production")
                .order_by(StageChangeRow.id.desc())
            ).scalars()
            target = None
            passed: list[str] = []
            seen: set[int] = set()
            for change_row in history:
                v = s.get(VersionRow, change_row.version_id)
                if v is None or v.id in seen:
                    continue
                seen.add(v.id)
                if current is not None and v.id == current.id:
                    continue
                if v.stage in ("quarantined", "production", "deleted"):
                    continue
                missing, _notes = self._gate_missing(s, v, "production")
                if missing:
                    passed.append(f"{_ref(s, v)}: " + "; ".join(missing))
                    continue
                target = v
                break
            if target is None:
                raise ConfigError(
                    f"{name} has no earlier production version that meets the production gate"
                    + (" (" + " | ".join(passed) + ")" if passed else "")
                )
            self._verified_files(s, target)
            if current is not None:
                self._move(s, p, current, "archived", f"rolled back: {reason}", "version.rollback")
            self._move(s, p, target, "production", f"rollback: {reason}", "version.rollback")
            return self._info(s, target)

        return self._mutate(token, "rollback", name, change)

    def quarantine(self, token: str | None, ref: str, reason: str) -> VersionInfo:
        """Block a version from being served (it stays stored, for forensics). Its
        approvals and evidence stop counting."""
        if not check_text(reason, "reason").strip():
            raise ConfigError("a quarantine needs a reason")

        def change(s: Session, p: Principal) -> VersionInfo:
            row = self._resolve(s, ref)
            if row.stage in ("quarantined", "deleted"):
                raise ConfigError(f"{_ref(s, row)} is already {row.stage}")
            self._move(s, p, row, "quarantined", reason, "version.quarantine", new_epoch=True)
            return self._info(s, row)

        return self._mutate(token, "quarantine", ref, change)

    def release(self, token: str | None, ref: str, reason: str) -> VersionInfo:
        """Lift a quarantine (admin): the version returns to candidate in a new epoch and
        must pass its gates again with fresh evidence and approvals."""
        check_text(reason, "reason")

        def change(s: Session, p: Principal) -> VersionInfo:
            row = self._resolve(s, ref)
            if row.stage != "quarantined":
                raise ConfigError(f"{_ref(s, row)} is {row.stage}, not quarantined")
            self._move(s, p, row, "candidate", reason, "version.release", new_epoch=True)
            return self._info(s, row)

        return self._mutate(token, "release", ref, change)


class _GateMiss(Exception):
    def __init__(self, ref: str) -> None:
        super().__init__(ref)
        self.ref = ref


def _check_evidence_bundle(
    bundle: bytes, trusted: Mapping[str, bytes], ref: str, body: bytes
) -> None:
    manifest = signing.verify(bundle, trusted)
    if manifest.name != f"evidence:{ref}":
        raise VerificationError(f"the evidence signature is for {manifest.name}, not {ref}")
    if dict(manifest.files) != {EVIDENCE_FILE: hashlib.sha256(body).hexdigest()}:
        raise VerificationError("the evidence signature covers other bytes")


def _evidence_kind(doc: Any) -> str:
    if not isinstance(doc, dict) or not isinstance(doc.get("policy"), dict):
        raise ConfigError("evidence must be a JSON object with a policy block (its sha256)")
    if doc.get("kind") == "redteam":
        return "redteam"
    if "property" in doc and "result" in doc:
        return "verification"
    raise ConfigError(
        f"evidence must be one of {list(_EVIDENCE_KINDS)}: a results.json of rlsec redteam "
        f"(kind 'redteam') or a JSON of rlsec verify (property and result)"
    )
