"""Roles, permissions and API tokens.

Roles and what they may do (``admin`` may do everything but approve: approvals stay with
reviewers, so no single account can both push and wave a version into production):

=========  =====================================================================
viewer     read (list, show, pull)
trainer    read, push versions, attach evidence, register and revoke own keys
evaluator  read, attach signed evidence (red-team, verification results that gates count),
           register and revoke own keys
reviewer   read, approve, attach evidence, register and revoke own keys
deployer   read, promote, roll back, quarantine
auditor    read the audit log (verify, proofs, export)
admin      everything above but approve; principals, tokens, anyone's keys, lifting a
           quarantine, deleting a version's files
=========  =====================================================================

Tokens look like ``rlsec_<id>_<secret>``: 16 hex digits of id, 32 random bytes of secret
(``secrets.token_urlsafe``). Only the SHA-256 of the secret is stored (the secret has 256 bits
of entropy, so a fast hash is the right one: a slow password hash would protect nothing more),
compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from rlsec.errors import ConfigError

__all__ = [
    "OPERATIONS",
    "ROLES",
    "Principal",
    "allowed",
    "check_name",
    "check_policy_name",
    "hash_secret",
    "new_token",
    "parse_roles",
    "parse_token",
    "secret_matches",
]

ROLES = ("viewer", "trainer", "evaluator", "reviewer", "deployer", "auditor", "admin")

#: operation -> roles that may perform it
OPERATIONS: dict[str, frozenset[str]] = {
    "read": frozenset({"viewer", "trainer", "evaluator", "reviewer", "deployer", "admin"}),
    "push": frozenset({"trainer", "admin"}),
    "attach": frozenset({"trainer", "evaluator", "reviewer", "admin"}),
    "approve": frozenset({"reviewer"}),
    "promote": frozenset({"deployer", "admin"}),
    "rollback": frozenset({"deployer", "admin"}),
    "quarantine": frozenset({"deployer", "admin"}),
    "release": frozenset({"admin"}),
    "audit": frozenset({"auditor", "admin"}),
    "own-keys": frozenset({"trainer", "evaluator", "reviewer", "admin"}),
    "delete": frozenset({"admin"}),
    "admin": frozenset({"admin"}),
}

_TOKEN = re.compile(r"rlsec_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
_POLICY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class Principal:
    """An authenticated person or service."""

    id: int
    name: str
    kind: str
    roles: frozenset[str]

    def may(self, operation: str) -> bool:
        return allowed(self.roles, operation)


def allowed(roles: frozenset[str], operation: str) -> bool:
    """Whether any of ``roles`` grants ``operation`` (an unknown operation grants nothing)."""
    return bool(roles & OPERATIONS.get(operation, frozenset()))


def parse_roles(text: str | list[str] | tuple[str, ...]) -> frozenset[str]:
    """Roles from ``"trainer,reviewer"`` or a list; each must be known.

    Raises:
        ConfigError: an unknown role, or none.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    roles = frozenset(r.strip() for r in items if r.strip())
    bad = sorted(roles - set(ROLES))
    if bad or not roles:
        raise ConfigError(f"roles must be some of {list(ROLES)}, got {sorted(roles) or text!r}")
    return roles


def check_name(name: str, what: str = "name") -> str:
    """A principal's name: 1-128 letters, digits, ``.``, ``_``, ``@`` (for e-mail
    addresses) or ``-``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"{what} must be 1-128 letters, digits, '.', '_', '@' or '-' starting with a letter "
            f"or digit, got {name!r:.80}"
        )
    return name


def check_policy_name(name: str) -> str:
    """A policy's name: as :func:`check_name` but without ``@``, which separates a name
    from its version in a reference (``name@3``)."""
    if not isinstance(name, str) or not _POLICY_NAME.fullmatch(name):
        raise ConfigError(
            "a policy name must be 1-128 letters, digits, '.', '_' or '-' starting with a "
            f"letter or digit ('@' separates a name from its version), got {name!r:.80}"
        )
    return name


def new_token() -> tuple[str, str, str]:
    """A new token: ``(token, id, SHA-256 of the secret)``; show ``token`` once, store the
    other two."""
    tid = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return f"rlsec_{tid}_{secret}", tid, hash_secret(secret)


def parse_token(token: str) -> tuple[str, str]:
    """``(id, secret)`` of a well-formed token.

    Raises:
        ConfigError: not a token of this form (the message does not echo it).
    """
    m = _TOKEN.fullmatch(token.strip()) if isinstance(token, str) else None
    if m is None:
        raise ConfigError("expected a token of the form rlsec_<16 hex digits>_<43 characters>")
    return m.group(1), m.group(2)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_sha256: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_sha256)
