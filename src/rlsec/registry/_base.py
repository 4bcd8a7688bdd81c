"""The registry's core: its files, transactions, authentication and authorisation, and how
refusals and failed checks are recorded. The operations live in the modules that build on
this one (:mod:`~rlsec.registry.principals`, :mod:`~rlsec.registry.versions`,
:mod:`~rlsec.registry.promotion`); :class:`rlsec.registry.Registry` combines them.
"""

from __future__ import annotations

import hmac
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from rlsec.core import Finding, Severity, Surface
from rlsec.errors import AccessDenied, ConfigError, VerificationError
from rlsec.registry import audit
from rlsec.registry.access import (
    OPERATIONS,
    Principal,
    hash_secret,
    parse_roles,
    parse_token,
)
from rlsec.registry.artifacts import ArtifactStore
from rlsec.registry.db import (
    AuditStateRow,
    Bound,
    PolicyRow,
    PrincipalRow,
    TokenRow,
    VersionRow,
    database_url,
    make_engine,
)
from rlsec.registry.state import TABLES, Checker, TamperedState

__all__ = ["STAGES", "RegistryBase", "VersionInfo", "check_count", "check_text"]

STAGES = ("candidate", "staging", "production", "quarantined", "archived", "deleted")
_T = TypeVar("_T")
#: a version number or an audit position: the database's integer columns hold 2^31 - 1 on
#: every engine (SQLite's hold more; the bound is the smaller)
MAX_NUMBER = 2**31 - 1
_MAX_TEXT = 4096
_REF = re.compile(r"(?P<name>[^@]{1,128})(?:@(?P<at>[A-Za-z0-9]{1,16}))?")


def check_text(value: Any, what: str, limit: int = _MAX_TEXT) -> str:
    """A free-text argument (reason, comment, label): a string of at most ``limit``
    characters without NUL bytes, checked before it reaches the database or the log.

    Raises:
        ConfigError: anything else.
    """
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be text, got {type(value).__name__}")
    if len(value) > limit:
        raise ConfigError(f"{what} may be at most {limit} characters, got {len(value)}")
    if "\x00" in value:
        raise ConfigError(f"{what} may not contain NUL characters")
    return value


def check_count(value: Any, what: str, low: int = 0, high: int = MAX_NUMBER) -> int:
    """An integer argument in ``[low, high]`` (a version number, an audit position).

    Raises:
        ConfigError: a non-integer or one out of range (never a driver's overflow).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an integer, got {value!r:.40}")
    if not low <= value <= high:
        raise ConfigError(f"{what} must be in [{low}, {high}], got {str(value)[:40]}")
    return value


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


class Denied(Exception):
    """Raised inside a transaction to refuse; :meth:`RegistryBase._call` audits it and
    raises :class:`AccessDenied`."""

    def __init__(self, actor: str, reason: str) -> None:
        super().__init__(reason)
        self.actor, self.reason = actor, reason


class _RefusalLimiter:
    """Per caller, at most ``limit`` refusals are written to the log in any ``window``
    seconds; past that they are counted, and the next one written carries the count, so a
    flood of refused calls cannot grow the log without bound but is never unrecorded."""

    def __init__(self, limit: int = 30, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self._times: dict[str, deque[float]] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def admit(self, caller: str) -> tuple[bool, int]:
        """Whether this refusal is written, and how many earlier ones it stands for."""
        now = time.monotonic()
        with self._lock:
            times = self._times.setdefault(caller, deque())
            while times and now - times[0] > self.window:
                times.popleft()
            if len(times) >= self.limit:
                self._held[caller] = self._held.get(caller, 0) + 1
                return False, 0
            times.append(now)
            return True, self._held.pop(caller, 0)

    def held(self) -> dict[str, int]:
        with self._lock:
            out, self._held = self._held, {}
            return out


class RegistryBase:
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
        self._checker: Checker | None = None
        self._refusals = _RefusalLimiter()

    # -- the log's keys ---------------------------------------------------------------------
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

    def _state_checker(self) -> Checker:
        if self._checker is None:
            self._checker = Checker(self.log_public())
        return self._checker

    # -- transactions -----------------------------------------------------------------------
    @contextmanager
    def _write(self, *, checked: bool = True) -> Iterator[Session]:
        """A mutation's transaction: takes the audit log's lock first (a row lock on
        PostgreSQL; SQLite's BEGIN IMMEDIATE already holds the write lock). Every bound row
        it loads is checked against the log (``checked``)."""
        self.log_key()  # fail before changing anything if the change could not be audited
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            if checked:
                self._state_checker().watch(s)
            s.execute(select(AuditStateRow).where(AuditStateRow.id == 1).with_for_update())
            yield s

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.read_engine, expire_on_commit=False) as s, s.begin():
            self._state_checker().watch(s)
            yield s

    def _append(self, s: Session, actor: str, action: str, target: str, **kw: Any) -> None:
        audit.append(s, self.log_key(), actor=actor, action=action, target=target, **kw)

    # -- who is calling ---------------------------------------------------------------------
    def _authenticate(self, s: Session, token: str | None) -> Principal:
        if not token:
            raise Denied("anonymous", "no token given (set RLSEC_TOKEN)")
        try:
            tid, secret = parse_token(token)
        except ConfigError as exc:
            raise Denied("anonymous", str(exc)) from None
        # the token is found by the digest of its secret, then its id is compared: a wrong
        # secret and an unknown id are the same miss on the same index, so timing does not
        # tell which token ids exist (only the SHA-256 of the secret is stored; it is
        # unique, and 256 random bits)
        found = s.execute(
            select(TokenRow.id).where(TokenRow.secret_sha256 == hash_secret(secret))
        ).scalar_one_or_none()
        if found is None or not hmac.compare_digest(found, tid):
            raise Denied(f"token:{tid}", f"token {tid} is not valid")
        row = s.get(TokenRow, tid)  # loading it checks it against the log
        if row is None:
            raise Denied(f"token:{tid}", f"token {tid} is not valid")
        if row.revoked_at is not None:
            raise Denied(f"token:{tid}", f"token {tid} was revoked at {row.revoked_at}")
        if row.expires_at is not None and not row.expires_at > audit.now():
            raise Denied(f"token:{tid}", f"token {tid} expired at {row.expires_at}")
        p = s.get(PrincipalRow, row.principal_id)
        if p is None:
            raise TamperedState(f"token:{tid} belongs to no principal")
        if p.disabled_at is not None:
            raise Denied(p.name, f"principal {p.name} is disabled")
        return Principal(p.id, p.name, p.kind, parse_roles(p.roles))

    def _authorize(self, s: Session, token: str | None, operation: str) -> Principal:
        p = self._authenticate(s, token)
        if not p.may(operation):
            need = sorted(OPERATIONS[operation])
            raise Denied(p.name, f"{p.name} may not {operation}: it needs one of roles {need}")
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
        """Authorise, then run ``body`` in ``transaction``. A refusal is audited, then raised
        as :class:`AccessDenied`; a check that fails (a signature, a digest, a row that does
        not match the log) is audited as a refusal with its :class:`~rlsec.core.Finding`
        and re-raised, nothing having changed."""
        who = ["anonymous"]
        try:
            with transaction() as s:
                p = self._authorize(s, token, operation)
                who[0] = p.name
                return body(s, p)
        except Denied as d:
            self._deny(d, operation, target)
            raise AccessDenied(d.reason) from None
        except VerificationError as exc:
            self._refuse(who[0], operation, target, exc)
            raise

    def _deny(self, d: Denied, operation: str, target: str) -> None:
        write, held = self._refusals.admit(d.actor)
        if not write:
            return
        detail: dict[str, Any] = {"reason": audit.bounded(d.reason, _MAX_TEXT)}
        if held:
            detail["refusals_not_written"] = held
        with self._write(checked=False) as s:
            self._append(s, d.actor, f"denied:{operation}", target, outcome="denied", detail=detail)

    def _refuse(self, actor: str, operation: str, target: str, exc: VerificationError) -> None:
        """Record a failed verification as an audit entry and a finding (attached to the
        exception as ``finding``)."""
        finding = Finding(
            severity=Severity.CRITICAL if isinstance(exc, TamperedState) else Severity.HIGH,
            surface=Surface.PARAMETERS if operation == "read" else Surface.INTERFACE,
            message=f"registry refused {operation} on {audit.bounded(target, 256)}: {exc}",
            detector="registry.tampered-state"
            if isinstance(exc, TamperedState)
            else "registry.verification",
            evidence={"operation": operation, "target": audit.bounded(target, 256)},
        )
        exc.finding = finding
        with self._write(checked=False) as s:
            self._append(
                s,
                actor,
                f"refused:{operation}",
                target,
                outcome="refused",
                detail={"reason": audit.bounded(str(exc), _MAX_TEXT), "finding": finding.to_dict()},
            )

    def flush_refusals(self) -> None:
        """Write one entry per caller whose refusals were counted but not yet written (the
        service calls this periodically)."""
        for caller, n in self._refusals.held().items():
            with self._write(checked=False) as s:
                self._append(
                    s,
                    caller,
                    "denied:rate-limited",
                    "registry",
                    outcome="denied",
                    detail={"refusals_not_written": n},
                )

    # -- lookups ----------------------------------------------------------------------------
    def _principal(self, s: Session, name: str) -> PrincipalRow:
        if not isinstance(name, str) or len(name) > 128:
            raise ConfigError(f"no principal named {audit.bounded(str(name), 80)!r}")
        row = s.execute(select(PrincipalRow).where(PrincipalRow.name == name)).scalar_one_or_none()
        if row is None:
            raise ConfigError(f"no principal named {name!r}")
        return row

    def _resolve(self, s: Session, ref: str) -> VersionRow:
        m = _REF.fullmatch(ref) if isinstance(ref, str) else None
        if m is None or "\x00" in ref:
            raise ConfigError(
                "expected a version like name@3, name@production or name, got "
                f"{audit.bounded(str(ref), 80)!r}"
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
            q = q.where(VersionRow.number == check_count(int(at), "a version number", 1))
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
        if prow is None or pusher is None:
            raise TamperedState(f"version:{row.id} names a policy or pusher that is missing")
        parent = None if row.parent_id is None else s.get(VersionRow, row.parent_id)
        return _version_info(
            row, prow.name, pusher.name, None if parent is None else _ref(s, parent)
        )

    def _has_principals(self, s: Session) -> bool:
        return bool(s.execute(select(func.count()).select_from(PrincipalRow)).scalar_one())

    def _unbound(self, s: Session) -> list[Bound]:
        return [
            row
            for table in TABLES.values()
            for row in s.execute(select(table).where(table.audit_seq.is_(None))).scalars()
        ]


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


def _ref(s: Session, row: VersionRow) -> str:
    prow = s.get(PolicyRow, row.policy_id)
    if prow is None:
        raise TamperedState(f"version:{row.id} names a policy that is missing")
    return f"{prow.name}@{row.number}"


def _name(s: Session, principal_id: int) -> str:
    row = s.get(PrincipalRow, principal_id)
    return "?" if row is None else row.name
