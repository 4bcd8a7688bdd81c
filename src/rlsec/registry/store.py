"""The governed policy registry: every operation authenticated, authorised and audited.

A :class:`Registry` is a database (SQLite under ``RLSEC_HOME`` by default, PostgreSQL by
``RLSEC_DB``), a content-addressed artifact directory and the audit log's signing key. Every
mutation runs in one transaction that first takes the audit log's lock, makes its change and
appends its audit entry, so the two commit together or not at all; every refusal is appended
in a transaction of its own before :class:`~rlsec.errors.AccessDenied` is raised.

References to versions: ``name@3`` (a number), ``name@production`` (a stage), or ``name``
(the newest version).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from rlsec.errors import (
    AccessDenied,
    ConfigError,
    GateRefused,
    PolicyLoadError,
    VerificationError,
)
from rlsec.policies import TorchPolicy
from rlsec.policies.native import SPEC_FILE, WEIGHTS_FILE, load_native_bytes, write_policy_dir
from rlsec.registry import audit, signing
from rlsec.registry.access import (
    OPERATIONS,
    Principal,
    check_name,
    new_token,
    parse_roles,
    parse_token,
    secret_matches,
)
from rlsec.registry.artifacts import ArtifactStore, write_whole
from rlsec.registry.db import (
    ApprovalRow,
    AuditStateRow,
    EvidenceRow,
    KeyRow,
    PolicyRow,
    PrincipalRow,
    SettingRow,
    StageChangeRow,
    TokenRow,
    VersionRow,
    database_url,
    make_engine,
    upgrade,
)
from rlsec.registry.gates import DEFAULT_GATES, GATED_STAGES, check_gate, parse_gates

__all__ = ["STAGES", "Registry", "VersionInfo"]

STAGES = ("candidate", "staging", "production", "quarantined", "archived", "deleted")
_NEXT = {"candidate": "staging", "staging": "production"}
_EVIDENCE_KINDS = ("redteam", "verification")
_MAX_EVIDENCE = 64 * 2**20
_REF = re.compile(r"(?P<name>[^@]+)(?:@(?P<at>[A-Za-z0-9]+))?")
_T = TypeVar("_T")


@dataclass(frozen=True)
class VersionInfo:
    """A version as listed (never its bytes)."""

    name: str
    number: int
    stage: str
    env_id: str | None
    pushed_by: str
    pushed_at: str
    manifest_sha256: str
    files: Mapping[str, str]
    signer_key_id: str
    parent: str | None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.number}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "name": self.name,
            "number": self.number,
            "stage": self.stage,
            "env_id": self.env_id,
            "pushed_by": self.pushed_by,
            "pushed_at": self.pushed_at,
            "manifest_sha256": self.manifest_sha256,
            "files": dict(self.files),
            "signer_key_id": self.signer_key_id,
            "parent": self.parent,
        }


class _Denied(Exception):
    def __init__(self, actor: str, reason: str) -> None:
        super().__init__(reason)
        self.actor, self.reason = actor, reason


class Registry:
    """A registry at ``home`` (default ``RLSEC_HOME``), its database at ``url`` (default
    ``RLSEC_DB``, else ``home/registry.db``).

    Opening does not create anything: :meth:`init` does, once.
    """

    def __init__(self, home: str | os.PathLike[str] | None = None, url: str | None = None):
        from rlsec._home import home as default_home

        self.home = Path(home) if home is not None else default_home()
        self.url = url or database_url(self.home)
        self.engine: Engine = make_engine(self.url)
        # reads see one snapshot: SQLite's WAL read transaction, PostgreSQL's REPEATABLE READ
        # (a log verified while others append must not see entries without their heads)
        self.read_engine: Engine = (
            make_engine(self.url, reads=True)
            if self.url.startswith("sqlite")
            else self.engine.execution_options(isolation_level="REPEATABLE READ")
        )
        self.artifacts = ArtifactStore(self.home / "artifacts")
        self._log_key: audit.LogKey | None = None

    # -- set-up -----------------------------------------------------------------------------
    @property
    def log_key_path(self) -> Path:
        return self.home / "keys" / "audit-log.pem"

    @property
    def log_public_path(self) -> Path:
        return self.home / "keys" / "audit-log.pub"

    def log_key(self) -> audit.LogKey:
        if self._log_key is None:
            try:
                pem = self.log_key_path.read_bytes()
            except FileNotFoundError:
                raise ConfigError(
                    f"the audit log's key is missing at {self.log_key_path}: no change can be "
                    f"recorded, so none is made (run `rlsec admin init`, or restore the key)"
                ) from None
            self._log_key = audit.LogKey.from_pem(pem)
        return self._log_key

    def log_public(self) -> audit.LogPublicKey:
        try:
            return audit.LogPublicKey.from_pem(self.log_public_path.read_bytes())
        except FileNotFoundError:
            raise ConfigError(
                f"the audit log's public key is missing at {self.log_public_path}"
            ) from None

    def init(self, admin: str = "admin") -> str:
        """Create the schema, the audit log's key and the first admin; returns the admin's
        token (shown once; only its hash is stored).

        Raises:
            ConfigError: the registry already has principals.
        """
        check_name(admin, "admin name")
        self.home.mkdir(parents=True, exist_ok=True)
        upgrade(self.engine)
        with Session(self.engine) as s, s.begin():
            if s.execute(select(func.count()).select_from(PrincipalRow)).scalar_one():
                raise ConfigError(f"the registry at {self.url} is already initialised")
        keys = self.home / "keys"
        keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.log_key_path.exists():
            key = audit.LogKey.generate()
            write_whole(self.log_key_path, key.pem())  # mode 0600
            self.log_public_path.write_bytes(key.public().pem())
        with self._write() as s:
            p = self._add_principal(s, admin, "person", frozenset({"admin"}))
            token = self._add_token(s, p, "bootstrap", None)
            audit.append(
                s,
                self.log_key(),
                actor=f"bootstrap:{admin}",
                action="registry.init",
                target=f"principal:{admin}",
                after={"roles": ["admin"], "log_key": self.log_key().public().key_id},
            )
        return token

    # -- transactions -----------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A mutation's transaction: takes the audit log's lock first (a row lock on
        PostgreSQL; SQLite's BEGIN IMMEDIATE already holds the write lock)."""
        self.log_key()  # fail before changing anything if the change could not be audited
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            s.execute(select(AuditStateRow).where(AuditStateRow.id == 1).with_for_update())
            yield s

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.read_engine, expire_on_commit=False) as s, s.begin():
            yield s

    def _authenticate(self, s: Session, token: str | None) -> Principal:
        if not token:
            raise _Denied("anonymous", "no token given (set RLSEC_TOKEN)")
        try:
            tid, secret = parse_token(token)
        except ConfigError as exc:
            raise _Denied("anonymous", str(exc)) from None
        row = s.get(TokenRow, tid)
        if row is None or not secret_matches(secret, row.secret_sha256):
            raise _Denied(f"token:{tid}", f"token {tid} is not valid")
        if row.revoked_at is not None:
            raise _Denied(f"token:{tid}", f"token {tid} was revoked at {row.revoked_at}")
        if row.expires_at is not None and row.expires_at <= audit.now():
            raise _Denied(f"token:{tid}", f"token {tid} expired at {row.expires_at}")
        p = s.get(PrincipalRow, row.principal_id)
        assert p is not None  # a foreign key
        if p.disabled_at is not None:
            raise _Denied(p.name, f"principal {p.name} is disabled")
        return Principal(p.id, p.name, p.kind, parse_roles(p.roles))

    def _authorize(self, s: Session, token: str | None, operation: str) -> Principal:
        p = self._authenticate(s, token)
        if not p.may(operation):
            need = sorted(OPERATIONS[operation])
            raise _Denied(p.name, f"{p.name} may not {operation}: it needs one of roles {need}")
        return p

    def _mutate(
        self,
        token: str | None,
        operation: str,
        target: str,
        change: Callable[[Session, Principal], _T],
    ) -> _T:
        return self._call(token, operation, target, change, self._write)

    def _query(
        self,
        token: str | None,
        operation: str,
        target: str,
        look: Callable[[Session, Principal], _T],
    ) -> _T:
        return self._call(token, operation, target, look, self._read)

    def _call(
        self,
        token: str | None,
        operation: str,
        target: str,
        body: Callable[[Session, Principal], _T],
        transaction: Callable[[], AbstractContextManager[Session]],
    ) -> _T:
        """Authorise, then run ``body`` in ``transaction``; a refusal is audited, then
        raised as :class:`AccessDenied`."""
        try:
            with transaction() as s:
                return body(s, self._authorize(s, token, operation))
        except _Denied as d:
            self._deny(d, operation, target)
            raise AccessDenied(d.reason) from None

    def _deny(self, d: _Denied, operation: str, target: str) -> None:
        with self._write() as s:
            audit.append(
                s,
                self.log_key(),
                actor=d.actor,
                action=f"denied:{operation}",
                target=target,
                outcome="denied",
                detail={"reason": d.reason},
            )

    # -- principals, tokens, keys -----------------------------------------------------------
    def _add_principal(
        self, s: Session, name: str, kind: str, roles: frozenset[str]
    ) -> PrincipalRow:
        if kind not in ("person", "service"):
            raise ConfigError(f"kind must be person or service, got {kind!r}")
        if s.execute(select(PrincipalRow).where(PrincipalRow.name == name)).first():
            raise ConfigError(f"principal {name!r} already exists")
        row = PrincipalRow(
            name=name, kind=kind, roles=",".join(sorted(roles)), created_at=audit.now()
        )
        s.add(row)
        s.flush()
        return row

    def _add_token(
        self, s: Session, p: PrincipalRow, label: str, expires_in: timedelta | None
    ) -> str:
        token, tid, digest = new_token()
        expires = None
        if expires_in is not None:  # the log's format: compared as text with audit.now()
            expires = audit.timestamp(datetime.now(UTC) + expires_in)
        s.add(
            TokenRow(
                id=tid,
                principal_id=p.id,
                secret_sha256=digest,
                label=label,
                created_at=audit.now(),
                expires_at=expires,
            )
        )
        return token

    def whoami(self, token: str | None) -> Principal:
        """The principal a token authenticates (a refused token is audited)."""
        try:
            with self._read() as s:
                return self._authenticate(s, token)
        except _Denied as d:
            self._deny(d, "authenticate", "registry")
            raise AccessDenied(d.reason) from None

    def create_principal(
        self, token: str | None, name: str, roles: str | list[str], kind: str = "person"
    ) -> None:
        check_name(name, "principal name")
        parsed = parse_roles(roles)

        def change(s: Session, p: Principal) -> None:
            self._add_principal(s, name, kind, parsed)
            audit.append(
                s,
                self.log_key(),
                actor=p.name,
                action="principal.create",
                target=f"principal:{name}",
                after={"kind": kind, "roles": sorted(parsed)},
            )

        self._mutate(token, "admin", f"principal:{name}", change)

    def disable_principal(self, token: str | None, name: str, reason: str) -> None:
        def change(s: Session, p: Principal) -> None:
            row = self._principal(s, name)
            if row.disabled_at is not None:
                raise ConfigError(f"principal {name!r} is already disabled")
            row.disabled_at = audit.now()
            audit.append(
                s,
                self.log_key(),
                actor=p.name,
                action="principal.disable",
                target=f"principal:{name}",
                before={"disabled": False},
                after={"disabled": True},
                detail={"reason": reason},
            )

        self._mutate(token, "admin", f"principal:{name}", change)

    def _principal(self, s: Session, name: str) -> PrincipalRow:
        row = s.execute(select(PrincipalRow).where(PrincipalRow.name == name)).scalar_one_or_none()
        if row is None:
            raise ConfigError(f"no principal named {name!r}")
        return row

    def create_token(
        self,
        token: str | None,
        principal: str,
        *,
        label: str = "",
        expires_in_days: float | None = None,
    ) -> str:
        """A new token for ``principal`` (admin); returned once."""
        if expires_in_days is not None and not (0 < expires_in_days <= 3650):
            raise ConfigError(f"expires_in_days must be in (0, 3650], got {expires_in_days}")
        life = None if expires_in_days is None else timedelta(days=expires_in_days)

        def change(s: Session, p: Principal) -> str:
            row = self._principal(s, principal)
            new = self._add_token(s, row, label, life)
            audit.append(
                s,
                self.log_key(),
                actor=p.name,
                action="token.create",
                target=f"principal:{principal}",
                after={"token_id": parse_token(new)[0], "expires_in_days": expires_in_days},
            )
            return new

        return self._mutate(token, "admin", f"principal:{principal}", change)

    def revoke_token(self, token: str | None, token_id: str) -> None:
        def change(s: Session, p: Principal) -> None:
            row = s.get(TokenRow, token_id)
            if row is None:
                raise ConfigError(f"no token with id {token_id!r}")
            if row.revoked_at is not None:
                raise ConfigError(f"token {token_id} is already revoked")
            row.revoked_at = audit.now()
            audit.append(
                s,
                self.log_key(),
                actor=p.name,
                action="token.revoke",
                target=f"token:{token_id}",
                before={"revoked": False},
                after={"revoked": True},
            )

        self._mutate(token, "admin", f"token:{token_id}", change)

    def register_key(
        self, token: str | None, public_pem: bytes, *, principal: str | None = None
    ) -> str:
        """Trust ``public_pem`` for signing by ``principal`` (default: the caller; someone
        else's key needs admin). Returns the key id."""
        kid = signing.key_id(public_pem)  # parses it: only supported EC public keys
        pem = signing.public_pem(signing.load_public_key(public_pem)).decode()

        def change(s: Session, p: Principal) -> str:
            owner = p.name if principal is None else principal
            if owner != p.name and "admin" not in p.roles:
                raise _Denied(p.name, f"{p.name} may only register its own keys")
            row = self._principal(s, owner)
            if s.get(KeyRow, kid) is not None:
                raise ConfigError(f"key {kid[:16]}... is already registered")
            s.add(
                KeyRow(key_id=kid, principal_id=row.id, public_pem=pem, registered_at=audit.now())
            )
            audit.append(
                s,
                self.log_key(),
                actor=p.name,
                action="key.register",
                target=f"key:{kid}",
                after={"principal": owner},
            )
            return kid

        return self._mutate(token, "own-keys", f"key:{kid}", change)

    def revoke_key(self, token: str | None, key_id: str, reason: str) -> None:
        """Revoke a key: versions it signed no longer load."""

        def change(s: Session, p: Principal) -> None:
            row = s.get(KeyRow, key_id)
            if row is None:
                raise ConfigError(f"no registered key {key_id!r}")
            if row.principal_id != p.id and "admin" not in p.roles:
                raise _Denied(p.name, f"{p.name} may only revoke its own keys")
            if row.revoked_at is not None:
                raise ConfigError(f"key {key_id[:16]}... is already revoked")
            row.revoked_at, row.revoked_reason = audit.now(), reason
            audit.append(
                s,
                self.log_key(),
                actor=p.name,
                action="key.revoke",
                target=f"key:{key_id}",
                before={"revoked": False},
                after={"revoked": True},
                detail={"reason": reason},
            )

        self._mutate(token, "own-keys", f"key:{key_id}", change)

    def set_gates(self, token: str | None, doc: Any) -> None:
        """Set the gate policy (admin); see :mod:`rlsec.registry.gates`."""
        parse_gates(doc)
        body = json.loads(json.dumps(doc))

        def change(s: Session, p: Principal) -> None:
            row = s.get(SettingRow, "gates")
            before = None if row is None else _digest_json(row.value)
            if row is None:
                s.add(SettingRow(key="gates", value=body))
            else:
                row.value = body
            audit.append(
                s,
                self.log_key(),
                actor=p.name,
                action="gates.set",
                target="settings:gates",
                before=before,
                after=_digest_json(body),
                detail={"gates": body},
            )

        self._mutate(token, "admin", "settings:gates", change)

    def gates(self, s: Session) -> dict[str, Any]:
        row = s.get(SettingRow, "gates")
        return DEFAULT_GATES if row is None else dict(row.value)

    # -- versions ---------------------------------------------------------------------------
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
        check_name(name, "policy name")
        if str(source).startswith("zoo:"):
            from rlsec.policies import zoo_path

            source = zoo_path(str(source)[4:])
        files = _read_source(Path(source), env_id)
        policy = load_native_bytes(files[SPEC_FILE], files[WEIGHTS_FILE], where=str(source))
        if env_id is not None and policy.info.env_id not in (None, env_id):
            raise ConfigError(f"the policy was made for {policy.info.env_id}, not {env_id}")
        env = env_id or policy.info.env_id
        for d, v in (datasets or {}).items():
            if not re.fullmatch(r"[0-9a-f]{64}", v):
                raise ConfigError(f"dataset {d!r}: expected a SHA-256 hex digest, got {v!r}")
        kid = signing.key_id(signing.public_pem(key))
        digests = {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}

        def change(s: Session, p: Principal) -> VersionInfo:
            krow = s.get(KeyRow, kid)
            if krow is None or krow.principal_id != p.id:
                raise _Denied(p.name, f"key {kid[:16]}... is not registered to {p.name}")
            if krow.revoked_at is not None:
                raise _Denied(p.name, f"key {kid[:16]}... was revoked at {krow.revoked_at}")
            prow = s.execute(select(PolicyRow).where(PolicyRow.name == name)).scalar_one_or_none()
            if prow is None:
                prow = PolicyRow(name=name, created_at=audit.now())
                s.add(prow)
                s.flush()
            last = s.execute(
                select(func.max(VersionRow.number)).where(VersionRow.policy_id == prow.id)
            ).scalar_one()
            number = int(last or 0) + 1
            parent_row = None if parent is None else self._resolve(s, parent)
            from rlsec import __version__

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
                pushed_at=audit.now(),
                parent_id=None if parent_row is None else parent_row.id,
                stage="candidate",
            )
            s.add(row)
            s.flush()
            audit.append(
                s,
                self.log_key(),
                actor=p.name,
                action="version.push",
                target=f"{name}@{number}",
                after={"manifest_sha256": row.manifest_sha256, "files": digests},
            )
            return self._info(s, row)

        return self._mutate(token, "push", name, change)

    def _resolve(self, s: Session, ref: str) -> VersionRow:
        m = _REF.fullmatch(ref) if isinstance(ref, str) else None
        if m is None:
            raise ConfigError(
                f"expected a version like name@3, name@production or name, got {ref!r}"
            )
        prow = s.execute(
            select(PolicyRow).where(PolicyRow.name == m.group("name"))
        ).scalar_one_or_none()
        if prow is None:
            raise ConfigError(f"no policy named {m.group('name')!r}")
        at = m.group("at")
        q = select(VersionRow).where(VersionRow.policy_id == prow.id)
        if at is None:
            q = q.order_by(VersionRow.number.desc()).limit(1)
        elif at.isdigit():
            q = q.where(VersionRow.number == int(at))
        elif at in STAGES:
            q = q.where(VersionRow.stage == at).order_by(VersionRow.number.desc()).limit(1)
        else:
            raise ConfigError(f"{ref!r}: after @ give a version number or one of {list(STAGES)}")
        row = s.execute(q).scalar_one_or_none()
        if row is None:
            raise ConfigError(f"no version {ref!r}")
        return row

    def _info(self, s: Session, row: VersionRow) -> VersionInfo:
        prow = s.get(PolicyRow, row.policy_id)
        pusher = s.get(PrincipalRow, row.pushed_by)
        assert prow is not None
        assert pusher is not None
        parent = None if row.parent_id is None else s.get(VersionRow, row.parent_id)
        return _version_info(
            row, prow.name, pusher.name, None if parent is None else _ref(s, parent)
        )

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
            doc["evidence"] = [
                {"kind": e.kind, "sha256": e.sha256, "attached_at": e.attached_at}
                for e in s.execute(
                    select(EvidenceRow).where(EvidenceRow.version_id == row.id)
                ).scalars()
            ]
            doc["approvals"] = [
                {"stage": a.stage, "reviewer": _name(s, a.reviewer_id), "at": a.at}
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
        """The version's files, read once: signature against the pusher's trusted,
        unrevoked keys; manifest bound to this version; each file's bytes against it."""
        keys = s.execute(
            select(KeyRow).where(KeyRow.principal_id == row.pushed_by, KeyRow.revoked_at.is_(None))
        ).scalars()
        trusted = {k.key_id: k.public_pem.encode() for k in keys}
        manifest = signing.verify(bytes(row.bundle), trusted)
        ref = _ref(s, row)
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
        bytes that were checked. A quarantined version is refused.

        Raises:
            VerificationError: any check fails (nothing is loaded).
            AccessDenied: the token may not read, or the version is quarantined.
        """

        def look(s: Session, p: Principal) -> TorchPolicy:
            row = self._resolve(s, ref)
            _not_deleted(s, row)
            if row.stage == "quarantined":
                raise _Denied(p.name, f"{_ref(s, row)} is quarantined: it may not be served")
            files = self._verified_files(s, row)
            return load_native_bytes(
                files[SPEC_FILE], files[WEIGHTS_FILE], where=f"registry:{_ref(s, row)}"
            )

        return self._query(token, "read", ref, look)

    def pull(self, token: str | None, ref: str, out: str | os.PathLike[str]) -> VersionInfo:
        """Write a verified version as a policy directory at ``out`` (whole or not at all).
        Quarantined versions may be pulled, for forensics, by an admin only."""
        target = Path(out)
        if target.exists():
            raise ConfigError(f"{target} exists: pull writes a new directory")

        def look(s: Session, p: Principal) -> VersionInfo:
            row = self._resolve(s, ref)
            _not_deleted(s, row)
            if row.stage == "quarantined" and "admin" not in p.roles:
                raise _Denied(p.name, f"{_ref(s, row)} is quarantined: only an admin may pull it")
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

    # -- evidence, approvals, stages --------------------------------------------------------
    def attach(self, token: str | None, ref: str, body: bytes) -> str:
        """Attach a ``results.json`` of ``rlsec redteam`` or a JSON of ``rlsec verify`` to a
        version; it must be about this version's policy (its digest). Returns its SHA-256."""
        if len(body) > _MAX_EVIDENCE:
            raise ConfigError(f"evidence may be {_MAX_EVIDENCE} bytes, got {len(body)}")
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"evidence must be JSON: {exc}") from None
        kind = _evidence_kind(doc)
        digest = hashlib.sha256(body).hexdigest()

        def change(s: Session, p: Principal) -> str:
            row = self._resolve(s, ref)
            want = row.files[SPEC_FILE]
            got = doc.get("policy", {}).get("sha256")
            if got != want:
                raise ConfigError(
                    f"this {kind} result is about policy {str(got)[:16]}..., but "
                    f"{_ref(s, row)} is {want[:16]}...: evidence must be about the version"
                )
            s.add(
                EvidenceRow(
                    version_id=row.id,
                    kind=kind,
                    sha256=digest,
                    body=body,
                    attached_by=p.id,
                    attached_at=audit.now(),
                )
            )
            audit.append(
                s,
                self.log_key(),
                actor=p.name,
                action="evidence.attach",
                target=_ref(s, row),
                after={"kind": kind, "sha256": digest},
            )
            return digest

        return self._mutate(token, "attach", ref, change)

    def approve(self, token: str | None, ref: str, stage: str, comment: str = "") -> None:
        """Approve a version for ``stage``; the version's pusher may not approve it."""
        if stage not in GATED_STAGES:
            raise ConfigError(f"approvals are for {list(GATED_STAGES)}, got {stage!r}")

        def change(s: Session, p: Principal) -> None:
            row = self._resolve(s, ref)
            if row.pushed_by == p.id:
                raise _Denied(p.name, f"{p.name} pushed {_ref(s, row)} and may not approve it")
            if row.stage in ("quarantined", "archived", "deleted"):
                raise ConfigError(f"{_ref(s, row)} is {row.stage}: it cannot be approved")
            dup = s.execute(
                select(ApprovalRow).where(
                    ApprovalRow.version_id == row.id,
                    ApprovalRow.stage == stage,
                    ApprovalRow.reviewer_id == p.id,
                )
            ).first()
            if dup:
                raise ConfigError(f"{p.name} already approved {_ref(s, row)} for {stage}")
            s.add(
                ApprovalRow(
                    version_id=row.id,
                    stage=stage,
                    reviewer_id=p.id,
                    at=audit.now(),
                    comment=comment,
                )
            )
            audit.append(
                s,
                self.log_key(),
                actor=p.name,
                action="version.approve",
                target=_ref(s, row),
                after={"stage": stage},
                detail={"comment": comment},
            )

        self._mutate(token, "approve", ref, change)

    def _move(
        self,
        s: Session,
        p: Principal,
        row: VersionRow,
        to: str,
        reason: str,
        action: str,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        before = row.stage
        row.stage = to
        s.add(
            StageChangeRow(
                version_id=row.id,
                policy_id=row.policy_id,
                from_stage=before,
                to_stage=to,
                by=p.id,
                at=audit.now(),
                reason=reason,
            )
        )
        audit.append(
            s,
            self.log_key(),
            actor=p.name,
            action=action,
            target=_ref(s, row),
            before={"stage": before},
            after={"stage": to},
            detail={"reason": reason, **dict(detail or {})},
        )

    def promote(self, token: str | None, ref: str, stage: str, reason: str = "") -> VersionInfo:
        """Move a version to the next stage (candidate → staging → production) if the gate
        policy's evidence and approvals are there; the production version it replaces is
        archived. A refused promotion raises :class:`GateRefused` and is audited."""
        if stage not in GATED_STAGES:
            raise ConfigError(f"promote to one of {list(GATED_STAGES)}, got {stage!r}")
        refused: list[str] = []

        def change(s: Session, p: Principal) -> VersionInfo:
            row = self._resolve(s, ref)
            if _NEXT.get(row.stage) != stage:
                raise ConfigError(
                    f"{_ref(s, row)} is {row.stage}; it can only be promoted to "
                    f"{_NEXT.get(row.stage, 'nothing')}"
                )
            rule = parse_gates(self.gates(s))[stage]
            attached = list(
                s.execute(select(EvidenceRow).where(EvidenceRow.version_id == row.id)).scalars()
            )
            evidence = [(e.kind, json.loads(e.body)) for e in attached]
            approvers = s.execute(
                select(func.count(func.distinct(ApprovalRow.reviewer_id))).where(
                    ApprovalRow.version_id == row.id,
                    ApprovalRow.stage == stage,
                    ApprovalRow.reviewer_id != row.pushed_by,
                )
            ).scalar_one()
            missing = check_gate(rule, evidence, int(approvers))
            self._verified_files(s, row)  # a version that does not verify never moves
            if missing:
                refused.extend(missing)
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
            self._move(
                s,
                p,
                row,
                stage,
                reason,
                "version.promote",
                {"evidence": [e.sha256 for e in attached], "approvals": int(approvers)},
            )
            return self._info(s, row)

        try:
            return self._mutate(token, "promote", ref, change)
        except _GateMiss as miss:
            with self._write() as s:
                p = self._authorize(s, token, "promote")
                audit.append(
                    s,
                    self.log_key(),
                    actor=p.name,
                    action="version.promote",
                    target=miss.ref,
                    outcome="refused",
                    detail={"stage": stage, "missing": refused},
                )
            raise GateRefused(f"{miss.ref} may not enter {stage}: " + "; ".join(refused)) from None

    def rollback(self, token: str | None, name: str, reason: str) -> VersionInfo:
        """Put the previous known-good production version of ``name`` back in production,
        in one audited step (the current one, if any, is archived)."""
        if not reason.strip():
            raise ConfigError("a rollback needs a reason")

        def change(s: Session, p: Principal) -> VersionInfo:
            prow = s.execute(select(PolicyRow).where(PolicyRow.name == name)).scalar_one_or_none()
            if prow is None:
                raise ConfigError(f"no policy named {name!r}")
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
            for change_row in history:
                v = s.get(VersionRow, change_row.version_id)
                assert v is not None
                if current is not None and v.id == current.id:
                    continue
                if v.stage in ("quarantined", "production", "deleted"):
                    continue
                target = v
                break
            if target is None:
                raise ConfigError(f"{name} has no earlier production version to roll back to")
            self._verified_files(s, target)
            if current is not None:
                self._move(s, p, current, "archived", f"rolled back: {reason}", "version.rollback")
            self._move(s, p, target, "production", f"rollback: {reason}", "version.rollback")
            return self._info(s, target)

        return self._mutate(token, "rollback", name, change)

    def quarantine(self, token: str | None, ref: str, reason: str) -> VersionInfo:
        """Block a version from being served (it stays stored, for forensics)."""
        if not reason.strip():
            raise ConfigError("a quarantine needs a reason")

        def change(s: Session, p: Principal) -> VersionInfo:
            row = self._resolve(s, ref)
            if row.stage in ("quarantined", "deleted"):
                raise ConfigError(f"{_ref(s, row)} is already {row.stage}")
            self._move(s, p, row, "quarantined", reason, "version.quarantine")
            return self._info(s, row)

        return self._mutate(token, "quarantine", ref, change)

    def release(self, token: str | None, ref: str, reason: str) -> VersionInfo:
        """Lift a quarantine (admin): the version returns to candidate and must pass its
        gates again."""

        def change(s: Session, p: Principal) -> VersionInfo:
            row = self._resolve(s, ref)
            if row.stage != "quarantined":
                raise ConfigError(f"{_ref(s, row)} is {row.stage}, not quarantined")
            self._move(s, p, row, "candidate", reason, "version.release")
            return self._info(s, row)

        return self._mutate(token, "release", ref, change)

    def delete(self, token: str | None, ref: str, reason: str) -> VersionInfo:
        """Delete a version's stored files (admin). Its record, signed manifest and history
        stay as a tombstone in stage ``deleted``: numbers are never reused and the log still
        proves what existed. Files another version shares are kept. A production version
        must be rolled back or quarantined first."""
        if not reason.strip():
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
                for (files,) in s.execute(
                    select(VersionRow.files).where(
                        VersionRow.id != row.id, VersionRow.stage != "deleted"
                    )
                )
                for d in files.values()
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

    # -- audit ------------------------------------------------------------------------------
    def audit_verify(
        self, token: str | None, *, witness: audit.SignedHead | None = None
    ) -> audit.LogReport:
        public = self.log_public()
        return self._query(
            token, "audit", "audit", lambda s, _p: audit.verify_log(s, public, witness=witness)
        )

    def audit_head(self, token: str | None) -> audit.SignedHead | None:
        return self._query(token, "audit", "audit", lambda s, _p: audit.latest_head(s))

    def audit_inclusion(
        self, token: str | None, seq: int, size: int | None = None
    ) -> dict[str, Any]:
        public = self.log_public()
        return self._query(
            token, "audit", "audit", lambda s, _p: audit.inclusion(s, seq, size, public=public)
        )

    def audit_consistency(
        self, token: str | None, old_size: int, new_size: int | None = None
    ) -> dict[str, Any]:
        public = self.log_public()
        return self._query(
            token,
            "audit",
            "audit",
            lambda s, _p: audit.consistency(s, old_size, new_size, public=public),
        )

    def audit_entries(self, token: str | None, start: int = 0) -> list[audit.Entry]:
        return self._query(token, "audit", "audit", lambda s, _p: list(audit.entries(s, start)))


class _GateMiss(Exception):
    def __init__(self, ref: str) -> None:
        super().__init__(ref)
        self.ref = ref


def _version_info(row: VersionRow, name: str, pusher: str, parent: str | None) -> VersionInfo:
    return VersionInfo(
        name=name,
        number=row.number,
        stage=row.stage,
        env_id=row.env_id,
        pushed_by=pusher,
        pushed_at=row.pushed_at,
        manifest_sha256=row.manifest_sha256,
        files=dict(row.files),
        signer_key_id=row.signer_key_id,
        parent=parent,
    )


def _digest_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _name(s: Session, principal_id: int) -> str:
    row = s.get(PrincipalRow, principal_id)
    return "?" if row is None else row.name


def _ref(s: Session, row: VersionRow) -> str:
    prow = s.get(PolicyRow, row.policy_id)
    assert prow is not None
    return f"{prow.name}@{row.number}"


def _not_deleted(s: Session, row: VersionRow) -> None:
    if row.stage == "deleted":
        raise ConfigError(f"{_ref(s, row)} was deleted; only its record remains")


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
