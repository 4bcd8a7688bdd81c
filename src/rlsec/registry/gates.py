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
  ``"min"`` or ``"holds": true``, each of which must have an attached result.

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
_PROPERTY_KEYS = {"property", "max", "min", "holds"}


@dataclass(frozen=True)
class Rule:
    approvals: int
    redteam: Mapping[str, Any] | None = None
    verification: Mapping[str, Any] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ConfigError(f"{where} must be a finite number, got {v!r}")
    return float(v)


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
        extra = sorted(set(body) - {"approvals", "redteam", "verification"})
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
        rules[stage] = Rule(approvals=k, redteam=red, verification=ver, raw=body)
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


def _check_redteam(want: Mapping[str, Any], docs: list[Mapping[str, Any]]) -> list[str]:
    if not docs:
        return ["no red-team results are attached"]
    out: list[str] = []
    if "min_clean_return" in want:
        for d in docs:
            clean = d.get("clean", {}).get("mean_return")
            if not isinstance(clean, int | float) or clean < want["min_clean_return"]:
                out.append(f"clean return {clean} is below the gate's {want['min_clean_return']}")
    if "epsilon" in want:
        eps = float(want["epsilon"])
        unit = want.get("eps_unit")
        seen = False
        for d in docs:
            if unit is not None and d.get("eps_unit") != unit:
                continue
            for row in d.get("worst_case", []):
                if row.get("surface") != "observation" or not isinstance(
                    row.get("epsilon"), int | float
                ):
                    continue
                if not math.isclose(float(row["epsilon"]), eps, rel_tol=1e-9, abs_tol=1e-12):
                    continue
                seen = True
                got = row.get("mean_return")
                floor = want.get("min_worst_case_return")
                if floor is not None and (not isinstance(got, int | float) or got < floor):
                    out.append(f"worst-case return {got} at ε = {eps} is below the gate's {floor}")
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
            if d.get("result") is False:
                out.append(f"verified property {d.get('property')!r} does not hold")
    for prop in want.get("properties", []):
        rows = [d for d in docs if d.get("property") == prop["property"]]
        if not rows:
            out.append(f"no verification result for {prop['property']!r} is attached")
        for d in rows:
            r = d.get("result")
            if "holds" in prop and r is not prop["holds"]:
                out.append(f"{prop['property']!r} is {r}, the gate needs {prop['holds']}")
            for key, ok in (("max", operator.le), ("min", operator.ge)):
                if key in prop:
                    if isinstance(r, bool) or not isinstance(r, int | float):
                        out.append(f"{prop['property']!r} has no numeric result ({r!r})")
                    elif not ok(float(r), float(prop[key])):
                        out.append(f"{prop['property']!r} = {r}, the gate's {key} is {prop[key]}")
    return out
