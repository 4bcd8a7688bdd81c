"""What a bound row is to the audit log: its name (:func:`key`) and its digest (:func:`digest`).

An audit entry records, under ``state``, ``{key(row): digest(row)}`` for the rows its change
set (:func:`state_of`); :mod:`rlsec.registry.state` checks rows against those records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from rlsec.registry.db import (
    ApprovalRow,
    Bound,
    EvidenceRow,
    KeyRow,
    PolicyRow,
    PrincipalRow,
    ProposalRow,
    SettingRow,
    StageChangeRow,
    TokenRow,
    VersionRow,
)

__all__ = ["TABLES", "digest", "digest_of", "key", "primary_key", "state_of"]

#: bound tables, by the prefix of their rows' keys
TABLES: dict[str, type[Bound]] = {
    "principal": PrincipalRow,
    "token": TokenRow,
    "key": KeyRow,
    "policy": PolicyRow,
    "version": VersionRow,
    "stage_change": StageChangeRow,
    "evidence": EvidenceRow,
    "approval": ApprovalRow,
    "setting": SettingRow,
    "proposal": ProposalRow,
}
_PREFIX = {table: prefix for prefix, table in TABLES.items()}


def _columns(table: type[Bound]) -> list[str]:
    return [c.name for c in table.__table__.columns if c.name != "audit_seq"]  # type: ignore[attr-defined]


def primary_key(table: type[Bound]) -> str:
    cols = list(table.__table__.primary_key.columns)  # type: ignore[attr-defined]
    return str(cols[0].name)


def key(row: Bound) -> str:
    """``table:primary key``, the name entries give a row under ``state``."""
    table = type(row)
    return f"{_PREFIX[table]}:{getattr(row, primary_key(table))}"


def _canonical(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"sha256": hashlib.sha256(bytes(value)).hexdigest()}
    return value


def digest(row: Bound) -> str:
    """SHA-256 of the row's columns (all but ``audit_seq``; bytes by their SHA-256), in
    canonical JSON."""
    table = type(row)
    return digest_of(table, {c: getattr(row, c) for c in _columns(table)})


def digest_of(table: type[Bound], values: Mapping[str, Any]) -> str:
    body = {c: _canonical(values[c]) for c in _columns(table)}
    body["_table"] = _PREFIX[table]
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def state_of(rows: Iterable[Bound]) -> dict[str, str]:
    """What an entry records for the rows its change set."""
    return {key(r): digest(r) for r in rows}
