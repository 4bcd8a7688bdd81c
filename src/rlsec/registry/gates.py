"""Promotion gates: what a version needs before it may enter a stage.

A gate policy is JSON, one rule per stage (``staging``, ``production``); an admin sets it
(``rlsec admin gates FILE``, audited) and every promotion reads it from the registry, so
whoever promotes cannot bring a laxer one. Each rule may ask for:

* ``approvals``: distinct reviewers, none of them the version's pusher (default 1 for
  staging, 2 for production);
* ``redteam``: attached ``rlsec redteam`` results for this version, with optional
  thresholds ``epsilon`` (with ``eps_unit``, default any) and ``min_worst_case_return``
  (every attached result that measured that ε must meet it: a later, kinder result cannot
  hide an earlier bad one), ``min_clean_return``;
* ``verification``: attached ``rlsec verify`` results; ``all_hold`` (every qualitative
  property verified true) and ``properties``: ``[{"property": "...", "max": x}]`` or
  ``"min"`` or ``"holds": true``, each of which must have an attached result;
* ``evidence_from``: the roles whose signed evidence counts (default ``["evaluator",
  "reviewer"]``). Evidence counts only if its attacher signed it with a registered,
  unrevoked key, holds one of these roles and is not disabled when the gate is checked, is
  not the version's pusher, and attached it in the version's current epoch (a quarantine
  or release starts a new one).

Every number a gate reads must be a finite number and every verdict a boolean: a NaN, an
infinity, a string or a missing field in an attached result fails the gate, with a message
(``x < limit`` is false for NaN, so each comparison is written to pass only finite numbers
inside the limit).

Example:
    >>> rules = parse_gates({"production": {"approvals": 2, "redteam": {"epsilon": 0.05,
    ...     "min_worst_case_return": 300}}})
    >>> rules["production"].approvals, rules["staging"].approvals
    (2, 1)
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rlsec.errors import ConfigError

__all__ = ["DEFAULT_GATES", "GATED_STAGES", "Rule", "check_gate", "parse_gates"]

GATED_STAGES = ("staging", "production")
DEFAULT_GATES: dict[str, Any] = {
    "staging": {"approvals": 1},
    "production": {"approvals": 2, "redteam": {}},
}
_REDTEAM_KEYS = {"epsilon", "eps_unit", "min_worst_case_return", "min_clean_return"}
DEFAULT_EVIDENCE_FROM = ("evaluator", "reviewer")
_PROPERTY_KEYS = {"property", "max", "min", "holds"}


@dataclass(frozen=True)
class Rule:
    approvals: int
    redteam: Mapping[str, Any] | None = None
    verification: Mapping[str, Any] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
    evidence_from: frozenset[str] = frozenset(DEFAULT_EVIDENCE_FROM)


def _number(v: Any, where: str) -> float:
    got = _finite(v)
    if got is None:
        raise ConfigError(f"{where} must be a finite number, got {v!r:.40}")
    return got


def parse_gates(doc: Any) -> dict[str, Rule]:
    """Check a gate policy and fill in defaults for stages it does not name.

    Raises:
        ConfigError: an unknown stage or key, or a value of the wrong type.
    """
    if not isinstance(doc, dict):
        raise ConfigError(f"a gate policy is a JSON object by stage, got {type(doc).__name__}")
    bad = sorted(set(doc) - set(GATED_STAGES))
    if bad:
        raise ConfigError(f"gate stages must be among {list(GATED_STAGES)}, got {bad}")
    rules: dict[str, Rule] = {}
    for stage in GATED_STAGES:
        body = doc.get(stage, DEFAULT_GATES[stage])
        where = f"gates.{stage}"
        if not isinstance(body, dict):
            raise ConfigError(f"{where} must be an object, got {body!r:.80}")
        extra = sorted(set(body) - {"approvals", "redteam", "verification", "evidence_from"})
        if extra:
            raise ConfigError(f"{where}: unknown keys {extra}")
        default_k = DEFAULT_GATES[stage]["approvals"]
        k = body.get("approvals", default_k)
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ConfigError(f"{where}.approvals must be an integer >= 0, got {k!r}")
        red = body.get("redteam")
        if red is not None:
            if not isinstance(red, dict) or set(red) - _REDTEAM_KEYS:
                raise ConfigError(
                    f"{where}.redteam must be an object with keys among {sorted(_REDTEAM_KEYS)}"
                )
            for key in ("epsilon", "min_worst_case_return", "min_clean_return"):
                if key in red:
                    _number(red[key], f"{where}.redteam.{key}")
            if "eps_unit" in red and red["eps_unit"] not in ("raw", "std"):
                raise ConfigError(f"{where}.redteam.eps_unit must be raw or std")
            if "min_worst_case_return" in red and "epsilon" not in red:
                raise ConfigError(f"{where}.redteam.min_worst_case_return needs an epsilon")
        ver = body.get("verification")
        if ver is not None:
            if not isinstance(ver, dict) or set(ver) - {"all_hold", "properties"}:
                raise ConfigError(
                    f"{where}.verification must be an object with all_hold and/or properties"
                )
            for i, prop in enumerate(ver.get("properties", [])):
                if not isinstance(prop, dict) or not isinstance(prop.get("property"), str):
                    raise ConfigError(f"{where}.verification.properties[{i}] needs a property")
                if set(prop) - _PROPERTY_KEYS:
                    raise ConfigError(
                        f"{where}.verification.properties[{i}]: keys must be among "
                        f"{sorted(_PROPERTY_KEYS)}"
                    )
                for key in ("max", "min"):
                    if key in prop:
                        _number(prop[key], f"{where}.verification.properties[{i}].{key}")
                if "holds" in prop and not isinstance(prop["holds"], bool):
                    raise ConfigError(
                        f"{where}.verification.properties[{i}].holds must be true or false"
                    )
            if "all_hold" in ver and not isinstance(ver["all_hold"], bool):
                raise ConfigError(f"{where}.verification.all_hold must be true or false")
            if not isinstance(ver.get("properties", []), list):
                raise ConfigError(f"{where}.verification.properties must be a list")
        who = body.get("evidence_from", list(DEFAULT_EVIDENCE_FROM))
        if not isinstance(who, list) or not who or not all(isinstance(r, str) for r in who):
            raise ConfigError(f"{where}.evidence_from must be a non-empty list of roles")
        from rlsec.registry.access import parse_roles

        rules[stage] = Rule(
            approvals=k,
            redteam=red,
            verification=ver,
            raw=body,
            evidence_from=parse_roles(who),
        )
    return rules


def check_gate(
    rule: Rule, evidence: Sequence[tuple[str, Mapping[str, Any]]], approvers: int
) -> list[str]:
    """What the version still lacks for ``rule`` (empty: the gate is met).

    ``evidence``: ``(kind, parsed JSON)`` of every result attached to the version (already
    checked to be about this version); ``approvers``: distinct eligible reviewers.
    """
    missing: list[str] = []
    if approvers < rule.approvals:
        missing.append(
            f"{rule.approvals} approvals from reviewers other than the pusher "
            f"are needed, {approvers} given"
        )
    if rule.redteam is not None:
        missing += _check_redteam(rule.redteam, [d for k, d in evidence if k == "redteam"])
    if rule.verification is not None:
        missing += _check_verification(
            rule.verification, [d for k, d in evidence if k == "verification"]
        )
    return missing


def _finite(v: Any) -> float | None:
    """``v`` as a float if it is a finite number (not a bool), else None."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    try:
        f = float(v)
    except OverflowError:  # an int too large for a float
        return None
    return f if math.isfinite(f) else None


def _check_redteam(want: Mapping[str, Any], docs: list[Mapping[str, Any]]) -> list[str]:
    if not docs:
        return ["no red-team results are attached"]
    out: list[str] = []
    if "min_clean_return" in want:
        floor = float(want["min_clean_return"])
        for d in docs:
            clean = d.get("clean") if isinstance(d, Mapping) else None
            raw = clean.get("mean_return") if isinstance(clean, Mapping) else None
            got = _finite(raw)
            if got is None:
                out.append(f"clean return {raw!r:.40} is not a finite number")
            elif not got >= floor:
                out.append(f"clean return {raw} is below the gate's {floor:g}")
    if "epsilon" in want:
        eps = float(want["epsilon"])
        unit = want.get("eps_unit")
        seen = False
        for d in docs:
            if unit is not None and d.get("eps_unit") != unit:
                continue
            rows = d.get("worst_case", [])
            if not isinstance(rows, list):
                out.append(f"worst_case of an attached result is not a list: {rows!r:.40}")
                continue
            for row in rows:
                if not isinstance(row, Mapping) or row.get("surface") != "observation":
                    continue
                at = _finite(row.get("epsilon"))
                if at is None:
                    out.append(
                        f"a worst-case row's ε is not a finite number: {row.get('epsilon')!r:.40}"
                    )
                    continue
                if not math.isclose(at, eps, rel_tol=1e-9, abs_tol=1e-12):
                    continue
                seen = True
                raw = row.get("mean_return")
                got = _finite(raw)
                least = want.get("min_worst_case_return")
                if least is None:
                    continue
                if got is None:
                    out.append(f"worst-case return {raw!r:.40} at ε = {eps} is not a finite number")
                elif not got >= float(least):
                    out.append(f"worst-case return {raw} at ε = {eps} is below the gate's {least}")
        if not seen:
            what = f"ε = {eps}" + (f" ({unit})" if unit else "")
            out.append(f"no attached red-team result measured the worst case at {what}")
    return out


def _check_verification(want: Mapping[str, Any], docs: list[Mapping[str, Any]]) -> list[str]:
    if not docs:
        return ["no verification results are attached"]
    out: list[str] = []
    if want.get("all_hold"):
        for d in docs:
            r = d.get("result")
            if isinstance(r, bool):
                if r is False:
                    out.append(f"verified property {d.get('property')!r:.80} does not hold")
            elif _finite(r) is None:
                out.append(
                    f"verified property {d.get('property')!r:.80} has a result that is neither "
                    f"a verdict (true/false) nor a finite number: {r!r:.40}"
                )
    for prop in want.get("properties", []):
        name = prop["property"]
        rows = [d for d in docs if d.get("property") == name]
        if not rows:
            out.append(f"no verification result for {name!r} is attached")
        for d in rows:
            r = d.get("result")
            if "holds" in prop:
                if not isinstance(r, bool):
                    out.append(f"{name!r} has no verdict (true/false), got {r!r:.40}")
                elif r is not prop["holds"]:
                    out.append(f"{name!r} is {r}, the gate needs {prop['holds']}")
            for key, ok in (("max", operator.le), ("min", operator.ge)):
                if key in prop:
                    got = _finite(r)
                    if got is None:
                        out.append(f"{name!r} has no finite numeric result ({r!r:.40})")
                    elif not ok(got, float(prop[key])):
                        out.append(f"{name!r} = {r}, the gate's {key} is {prop[key]}")
    return out
