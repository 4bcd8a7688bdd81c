"""Setting a registry up, and who may act in it: principals, tokens, signing keys, and the
gate policy (an admin's setting)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from rlsec.errors import ConfigError
from rlsec.registry import audit, signing
from rlsec.registry._base import Denied, RegistryBase, check_text
from rlsec.registry.access import Principal, check_name, new_token, parse_roles, parse_token
from rlsec.registry.artifacts import write_whole
from rlsec.registry.db import KeyRow, PrincipalRow, SettingRow, TokenRow, upgrade
from rlsec.registry.gates import DEFAULT_GATES, parse_gates

__all__ = ["Principals"]


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
        check_name(name, "principal name")
        parsed = parse_roles(roles)

        def change(s: Session, p: Principal) -> None:
            row = self._add_principal(s, name, kind, parsed)
            self._append(
                s,
                p.name,
                "principal.create",
                f"principal:{name}",
                after={"kind": kind, "roles": sorted(parsed)},
                rows=[row],
            )

        self._mutate(token, "admin", f"principal:{name}", change)

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
        """A new token for ``principal`` (admin); returned once."""
        check_text(label, "label", 128)
        if expires_in_days is not None and not (0 < expires_in_days <= 3650):
            raise ConfigError(f"expires_in_days must be in (0, 3650], got {expires_in_days}")
        life = None if expires_in_days is None else timedelta(days=expires_in_days)

        def change(s: Session, p: Principal) -> str:
            row = self._principal(s, principal)
            new, trow = self._add_token(s, row, label, life)
            self._append(
                s,
                p.name,
                "token.create",
                f"principal:{principal}",
                after={"token_id": parse_token(new)[0], "expires_in_days": expires_in_days},
                rows=[trow],
            )
            return new

        return self._mutate(token, "admin", f"principal:{principal}", change)

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
        """Trust ``public_pem`` for signing by ``principal`` (default: the caller; someone
        else's key needs admin). Returns the key id."""
        kid = signing.key_id(public_pem)  # parses it: only supported EC public keys
        pem = signing.public_pem(signing.load_public_key(public_pem)).decode()

        def change(s: Session, p: Principal) -> str:
            owner = p.name if principal is None else principal
            if owner != p.name and "admin" not in p.roles:
                raise Denied(p.name, f"{p.name} may only register its own keys")
            row = self._principal(s, owner)
            if s.get(KeyRow, kid) is not None:
                raise ConfigError(f"key {kid[:16]}... is already registered")
            krow = KeyRow(
                key_id=kid, principal_id=row.id, public_pem=pem, registered_at=audit.now()
            )
            s.add(krow)
            self._append(
                s, p.name, "key.register", f"key:{kid}", after={"principal": owner}, rows=[krow]
            )
            return kid

        return self._mutate(token, "own-keys", f"key:{kid}", change)

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
        """Set the gate policy (admin); see :mod:`rlsec.registry.gates`."""
        parse_gates(doc)
        body = json.loads(json.dumps(doc, allow_nan=False))

        def change(s: Session, p: Principal) -> None:
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

        self._mutate(token, "admin", "settings:gates", change)

    def gates(self, s: Session) -> dict[str, Any]:
        """The gate policy in force (read in ``s``, the row checked against the log)."""
        row = s.get(SettingRow, "gates")
        return DEFAULT_GATES if row is None else dict(row.value)


def _short(text: Any, limit: int) -> bool:
    return isinstance(text, str) and 0 < len(text) <= limit and "\x00" not in text


def _digest_json(value: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
