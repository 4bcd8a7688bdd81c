"""Setting a registry up, and who may act in it: principals, tokens, signing keys, and the
gate policy (an admin's setting)."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from rlsec.errors import ApprovalPending, ConfigError
from rlsec.registry import audit, signing
from rlsec.registry._base import Denied, RegistryBase, _name, check_count, check_text
from rlsec.registry.access import Principal, check_name, new_token, parse_roles, parse_token
from rlsec.registry.artifacts import write_whole
from rlsec.registry.db import KeyRow, PrincipalRow, ProposalRow, SettingRow, TokenRow, upgrade
from rlsec.registry.gates import DEFAULT_GATES, parse_gates

__all__ = ["PRIVILEGED", "Principals"]

#: roles whose grant, like the gate policy, needs the admin quorum
PRIVILEGED = frozenset({"admin", "reviewer", "deployer", "evaluator"})


class Principals(RegistryBase):
    """Set-up, principals, tokens, keys and the gate policy."""

    def init(self, admin: str = "admin") -> str:
        """Create the schema, the audit log's key and the first admin; returns the admin's
        token (shown once; only its hash is stored).

        Raises:
            ConfigError: the registry already has principals (also when another process
                initialised it at the same moment: the check and the creation are one
                transaction under the log's lock).
        """
        check_name(admin, "admin name")
        self.home.mkdir(parents=True, exist_ok=True)
        upgrade(self.engine)
        self._create_log_key()
        with self._write(checked=False) as s:
            if self._has_principals(s):
                raise ConfigError(f"the registry at {self.url} is already initialised")
            p = self._add_principal(s, admin, "person", frozenset({"admin"}))
            token, row = self._add_token(s, p, "bootstrap", None)
            self._append(
                s,
                f"bootstrap:{admin}",
                "registry.init",
                f"principal:{admin}",
                after={"roles": ["admin"], "log_key": self.log_key().public().key_id},
                rows=[p, row],
            )
        return token

    def _create_log_key(self) -> None:
        """The log's key, made once: of two processes creating it at the same time, one
        links its file into place and both use that one."""
        keys = self.home / "keys"
        keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_private_dir(keys)
        if not self.log_key_path.exists():
            fd, tmp = tempfile.mkstemp(prefix=".key-", dir=keys)
            try:
                with os.fdopen(fd, "wb") as f:  # mkstemp: mode 0600
                    f.write(audit.LogKey.generate().pem())
                    f.flush()
                    os.fsync(f.fileno())
                with contextlib.suppress(FileExistsError):  # another process made it first
                    os.link(tmp, self.log_key_path)
            finally:
                os.unlink(tmp)
        self._log_key = None
        if not self.log_public_path.exists():
            write_whole(self.log_public_path, self.log_key().public().pem())
            self.log_public_path.chmod(0o644)

    def upgrade(self) -> int:
        """Bring an existing registry's schema to this release and bind rows made before
        rows were bound to the log, in one audited ``state.adopt`` entry (run by whoever
        holds the log's key, like :meth:`init`). Returns how many rows were bound.

        Run it right after upgrading rlsec: every unbound row it finds is taken as
        legitimate, and the entry lists them all for review.
        """
        upgrade(self.engine)
        with self._write(checked=False) as s:
            rows = self._unbound(s)
            if rows:
                self._append(
                    s,
                    "upgrade",
                    "state.adopt",
                    "registry",
                    detail={"rows": len(rows)},
                    rows=rows,
                )
        return len(rows)

    def _add_principal(
        self, s: Session, name: str, kind: str, roles: frozenset[str]
    ) -> PrincipalRow:
        if kind not in ("person", "service"):
            raise ConfigError(f"kind must be person or service, got {kind!r:.40}")
        if s.query(PrincipalRow.id).filter(PrincipalRow.name == name).first():
            raise ConfigError(f"principal {name!r} already exists")
        row = PrincipalRow(
            name=name, kind=kind, roles=",".join(sorted(roles)), created_at=audit.now()
        )
        s.add(row)
        s.flush()
        return row

    def _add_token(
        self, s: Session, p: PrincipalRow, label: str, expires_in: timedelta | None
    ) -> tuple[str, TokenRow]:
        token, tid, digest = new_token()
        expires = None
        if expires_in is not None:  # the log's format: compared as text with audit.now()
            expires = audit.timestamp(datetime.now(UTC) + expires_in)
        row = TokenRow(
            id=tid,
            principal_id=p.id,
            secret_sha256=digest,
            label=label,
            created_at=audit.now(),
            expires_at=expires,
        )
        s.add(row)
        return token, row

    def whoami(self, token: str | None) -> Principal:
        """The principal a token authenticates (a refused token is audited)."""
        try:
            with self._read() as s:
                return self._authenticate(s, token)
        except Denied as d:
            self._deny(d, "authenticate", "registry")
            from rlsec.errors import AccessDenied

            raise AccessDenied(d.reason) from None

    def create_principal(
        self, token: str | None, name: str, roles: str | list[str], kind: str = "person"
    ) -> None:
        """Create a principal (admin). Granting admin, reviewer, deployer or evaluator needs
        the admin quorum (:meth:`set_admin_quorum`)."""
        check_name(name, "principal name")
        parsed = parse_roles(roles)
        if kind not in ("person", "service"):
            raise ConfigError(f"kind must be person or service, got {kind!r:.40}")
        payload = {"name": name, "roles": sorted(parsed), "kind": kind}
        self._admin_action(token, "principal.create", payload, f"principal:{name}")

    def _do_create_principal(self, s: Session, p: Principal, a: dict[str, Any]) -> None:
        row = self._add_principal(s, a["name"], a["kind"], frozenset(a["roles"]))
        self._append(
            s,
            p.name,
            "principal.create",
            f"principal:{a['name']}",
            after={"kind": a["kind"], "roles": a["roles"]},
            rows=[row],
        )

    def disable_principal(self, token: str | None, name: str, reason: str) -> None:
        check_text(reason, "reason")

        def change(s: Session, p: Principal) -> None:
            row = self._principal(s, name)
            if row.disabled_at is not None:
                raise ConfigError(f"principal {name!r} is already disabled")
            row.disabled_at = audit.now()
            self._append(
                s,
                p.name,
                "principal.disable",
                f"principal:{name}",
                before={"disabled": False},
                after={"disabled": True},
                detail={"reason": reason},
                rows=[row],
            )

        self._mutate(token, "admin", f"principal:{name}", change)

    def create_token(
        self,
        token: str | None,
        principal: str,
        *,
        label: str = "",
        expires_in_days: float | None = None,
    ) -> str:
        """A new token for ``principal`` (admin); returned once. A token for a principal
        holding admin, reviewer, deployer or evaluator needs the admin quorum (else one admin
        could act as any reviewer); once approved, the admin whose approval completes the
        quorum receives it."""
        check_text(label, "label", 128)
        if expires_in_days is not None and not (0 < expires_in_days <= 3650):
            raise ConfigError(f"expires_in_days must be in (0, 3650], got {expires_in_days}")
        payload = {"principal": principal, "label": label, "expires_in_days": expires_in_days}
        return str(self._admin_action(token, "token.create", payload, f"principal:{principal}"))

    def _do_create_token(self, s: Session, p: Principal, a: dict[str, Any]) -> str:
        row = self._principal(s, a["principal"])
        days = a["expires_in_days"]
        new, trow = self._add_token(
            s, row, a["label"], None if days is None else timedelta(days=days)
        )
        self._append(
            s,
            p.name,
            "token.create",
            f"principal:{a['principal']}",
            after={"token_id": parse_token(new)[0], "expires_in_days": days},
            rows=[trow],
        )
        return new

    def revoke_token(self, token: str | None, token_id: str) -> None:
        def change(s: Session, p: Principal) -> None:
            row = s.get(TokenRow, token_id) if _short(token_id, 32) else None
            if row is None:
                raise ConfigError(f"no token with id {audit.bounded(str(token_id), 40)!r}")
            if row.revoked_at is not None:
                raise ConfigError(f"token {token_id} is already revoked")
            row.revoked_at = audit.now()
            self._append(
                s,
                p.name,
                "token.revoke",
                f"token:{token_id}",
                before={"revoked": False},
                after={"revoked": True},
                rows=[row],
            )

        self._mutate(token, "admin", f"token:{token_id}", change)

    def register_key(
        self, token: str | None, public_pem: bytes, *, principal: str | None = None
    ) -> str:
        """Trust ``public_pem`` for signing by ``principal`` (default: the caller). Someone
        else's key needs admin, and the admin quorum. Returns the key id."""
        kid = signing.key_id(public_pem)  # parses it: only supported EC public keys
        pem = signing.public_pem(signing.load_public_key(public_pem)).decode()
        if principal is None:

            def own(s: Session, p: Principal) -> str:
                return self._do_register_key(s, p, {"pem": pem, "principal": p.name})

            return self._mutate(token, "own-keys", f"key:{kid}", own)
        payload = {"pem": pem, "principal": principal}
        return str(self._admin_action(token, "key.register", payload, f"key:{kid}", "own-keys"))

    def _do_register_key(self, s: Session, p: Principal, a: dict[str, Any]) -> str:
        owner, pem = a["principal"], a["pem"]
        kid = signing.key_id(pem.encode())
        if owner != p.name and "admin" not in p.roles:
            raise Denied(p.name, f"{p.name} may only register its own keys")
        row = self._principal(s, owner)
        if s.get(KeyRow, kid) is not None:
            raise ConfigError(f"key {kid[:16]}... is already registered")
        krow = KeyRow(key_id=kid, principal_id=row.id, public_pem=pem, registered_at=audit.now())
        s.add(krow)
        self._append(
            s, p.name, "key.register", f"key:{kid}", after={"principal": owner}, rows=[krow]
        )
        return kid

    def revoke_key(self, token: str | None, key_id: str, reason: str) -> None:
        """Revoke a key: versions and evidence it signed no longer verify."""
        check_text(reason, "reason")

        def change(s: Session, p: Principal) -> None:
            row = s.get(KeyRow, key_id) if _short(key_id, 64) else None
            if row is None:
                raise ConfigError(f"no registered key {audit.bounded(str(key_id), 70)!r}")
            if row.principal_id != p.id and "admin" not in p.roles:
                raise Denied(p.name, f"{p.name} may only revoke its own keys")
            if row.revoked_at is not None:
                raise ConfigError(f"key {key_id[:16]}... is already revoked")
            row.revoked_at, row.revoked_reason = audit.now(), reason
            self._append(
                s,
                p.name,
                "key.revoke",
                f"key:{key_id}",
                before={"revoked": False},
                after={"revoked": True},
                detail={"reason": reason},
                rows=[row],
            )

        self._mutate(token, "own-keys", f"key:{key_id}", change)

    def set_gates(self, token: str | None, doc: Any) -> None:
        """Set the gate policy (admin, and the admin quorum); see
        :mod:`rlsec.registry.gates`."""
        parse_gates(doc)
        body = json.loads(json.dumps(doc, allow_nan=False))
        self._admin_action(token, "gates.set", {"gates": body}, "settings:gates")

    def _do_set_gates(self, s: Session, p: Principal, a: dict[str, Any]) -> None:
        body = a["gates"]
        parse_gates(body)
        row = s.get(SettingRow, "gates")
        before = None if row is None else _digest_json(row.value)
        if row is None:
            row = SettingRow(key="gates", value=body)
            s.add(row)
        else:
            row.value = body
        self._append(
            s,
            p.name,
            "gates.set",
            "settings:gates",
            before=before,
            after=_digest_json(body),
            detail={"gates": body},
            rows=[row],
        )

    def set_admin_quorum(self, token: str | None, k: int) -> None:
        """How many distinct admins must approve granting privileged roles (admin, reviewer,
        deployer, evaluator), tokens for privileged principals, keys for others, the gate
        policy and this quorum itself (default 1: one admin decides alone). Raising it is
        itself such an action: with a quorum of 2, the next change needs two admins."""
        check_count(k, "an admin quorum", 1, 16)
        self._admin_action(token, "quorum.set", {"k": k}, "settings:admin_quorum")

    def _do_set_quorum(self, s: Session, p: Principal, a: dict[str, Any]) -> None:
        k = check_count(a["k"], "an admin quorum", 1, 16)
        admins = sum(
            "admin" in parse_roles(r.roles) and r.disabled_at is None
            for r in s.execute(select(PrincipalRow)).scalars()
        )
        if k > admins:
            raise ConfigError(f"a quorum of {k} needs {k} enabled admins, there are {admins}")
        row = s.get(SettingRow, "admin_quorum")
        before = None if row is None else row.value
        if row is None:
            row = SettingRow(key="admin_quorum", value={"k": k})
            s.add(row)
        else:
            row.value = {"k": k}
        self._append(
            s,
            p.name,
            "quorum.set",
            "settings:admin_quorum",
            before=before,
            after={"k": k},
            rows=[row],
        )

    def admin_quorum(self, s: Session) -> int:
        row = s.get(SettingRow, "admin_quorum")
        return 1 if row is None else int(row.value["k"])

    # -- k of n admins ------------------------------------------------------------------------
    _ACTIONS: ClassVar[dict[str, str]] = {
        "principal.create": "_do_create_principal",
        "token.create": "_do_create_token",
        "key.register": "_do_register_key",
        "gates.set": "_do_set_gates",
        "quorum.set": "_do_set_quorum",
    }

    def _needs_quorum(self, s: Session, action: str, a: dict[str, Any]) -> bool:
        if action == "principal.create":
            return bool(PRIVILEGED & set(a["roles"]))
        if action == "token.create":
            return bool(PRIVILEGED & parse_roles(self._principal(s, a["principal"]).roles))
        return True  # someone else's key, the gates, the quorum

    def _admin_action(
        self,
        token: str | None,
        action: str,
        payload: dict[str, Any],
        target: str,
        operation: str = "admin",
    ) -> Any:
        """Do ``action`` now if the quorum is 1 or it grants nothing privileged; else record
        it as a proposal (with the caller's approval) and raise :class:`ApprovalPending`."""
        pending: list[tuple[int, int]] = []

        def change(s: Session, p: Principal) -> Any:
            if operation != "admin" and "admin" not in p.roles:
                raise Denied(p.name, f"{p.name} may only register its own keys")
            k = self.admin_quorum(s)
            if k <= 1 or not self._needs_quorum(s, action, payload):
                return getattr(self, self._ACTIONS[action])(s, p, payload)
            prow = ProposalRow(
                action=action,
                payload=payload,
                proposed_by=p.id,
                at=audit.now(),
                approvers=[p.id],
                executed_at=None,
            )
            s.add(prow)
            self._append(
                s,
                p.name,
                "admin.propose",
                target,
                detail={"action": action, "payload": _public(payload), "quorum": k},
                rows=[prow],
            )
            pending.append((prow.id, k))
            return None

        result = self._mutate(token, operation, target, change)
        if pending:
            pid, k = pending[0]
            raise ApprovalPending(
                f"{action} on {target} needs {k} admins: recorded as proposal {pid}; another "
                f"admin approves it with `rlsec admin approve {pid}`",
                pid,
            )
        return result

    def approve_admin(self, token: str | None, proposal: int) -> Any:
        """Approve an admin proposal (another admin than those who approved it so far). When
        enabled admins' approvals reach the quorum, the action is done in this call, and its
        result (a new token, a key id) returned to this caller; until then None."""
        check_count(proposal, "a proposal number", 1)

        def change(s: Session, p: Principal) -> Any:
            prow = s.get(ProposalRow, proposal)
            if prow is None:
                raise ConfigError(f"no admin proposal {proposal}")
            if prow.executed_at is not None:
                raise ConfigError(f"proposal {proposal} was done at {prow.executed_at}")
            if p.id in prow.approvers:
                raise ConfigError(f"{p.name} already approved proposal {proposal}")
            prow.approvers = [*prow.approvers, p.id]
            admins = [
                r
                for r in (s.get(PrincipalRow, i) for i in prow.approvers)
                if r is not None and r.disabled_at is None and "admin" in parse_roles(r.roles)
            ]
            k = self.admin_quorum(s)
            result = None
            done = len(admins) >= k
            if done:
                result = getattr(self, self._ACTIONS[prow.action])(s, p, dict(prow.payload))
                prow.executed_at = audit.now()
            self._append(
                s,
                p.name,
                "admin.approve",
                f"proposal:{proposal}",
                after={"approvals": len(admins), "quorum": k, "done": done},
                detail={"action": prow.action, "approvers": sorted(r.name for r in admins)},
                rows=[prow],
            )
            return result

        return self._mutate(token, "admin", f"proposal:{proposal}", change)

    def proposals(self, token: str | None) -> list[dict[str, Any]]:
        """Admin proposals still waiting, oldest first (admin)."""

        def look(s: Session, _p: Principal) -> list[dict[str, Any]]:
            return [
                {
                    "proposal": r.id,
                    "action": r.action,
                    "payload": _public(r.payload),
                    "proposed_by": _name(s, r.proposed_by),
                    "at": r.at,
                    "approvers": [_name(s, i) for i in r.approvers],
                }
                for r in s.execute(
                    select(ProposalRow)
                    .where(ProposalRow.executed_at.is_(None))
                    .order_by(ProposalRow.id)
                ).scalars()
            ]

        return self._query(token, "admin", "proposals", look)

    def gates(self, s: Session) -> dict[str, Any]:
        """The gate policy in force (read in ``s``, the row checked against the log)."""
        row = s.get(SettingRow, "gates")
        return DEFAULT_GATES if row is None else dict(row.value)


def _public(payload: Any) -> Any:
    """A proposal's payload as the log and listings show it (a key's PEM by its id)."""
    if isinstance(payload, dict) and "pem" in payload:
        return {**payload, "pem": signing.key_id(str(payload["pem"]).encode())}
    return payload


def _short(text: Any, limit: int) -> bool:
    return isinstance(text, str) and 0 < len(text) <= limit and "\x00" not in text


def _digest_json(value: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _check_private_dir(path: Path) -> None:
    """The directory the log's private key goes in must be a real directory (not a link to
    one somewhere else), owned by this user and writable by no one else: whoever can write
    it can swap the key.

    Raises:
        ConfigError: it is not; the message says what it is.
    """
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"
        raise ConfigError(
            f"{path} is {kind}; the audit log's key is kept only in a real directory (remove "
            "it and run the command again)"
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise ConfigError(f"{path} belongs to uid {st.st_uid}, not to this user ({os.getuid()})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"{path} is writable by others (mode {stat.S_IMODE(st.st_mode):o}); expected 700"
        )
