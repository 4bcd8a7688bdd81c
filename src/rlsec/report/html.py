"""A self-contained HTML page for a red-team campaign.

The page has inline CSS, plots as base64 ``data:`` URIs and no script, font, stylesheet or
image from anywhere else, so it can be archived or mailed as one file. Every value from the
results is autoescaped by Jinja2: a policy path containing markup prints as text.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import jinja2

from rlsec.report.table import (
    budget_groups,
    budget_symbol,
    eps50_rows,
    fmt_budget,
    fmt_num,
    fmt_pct,
    fmt_rate,
    fmt_return,
    pct_change,
)

__all__ = ["build_context", "render_html"]

_TEMPLATE = "report.html.j2"

_PLOT_TITLES = {
    "observation_return": "Mean return vs ε (observation attacks)",
    "observation_changes": "Actions changed vs ε (observation attacks)",
    "action_return": "Mean return vs \N{GREEK SMALL LETTER ALPHA} (action attacks)",
    "action_changes": "Actions changed vs \N{GREEK SMALL LETTER ALPHA} (action attacks)",
}


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("rlsec.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _text(x: Any) -> str:
    return "" if x is None else str(x)


def _summary(name: str, block: Mapping[str, Any]) -> dict[str, str]:
    return {
        "name": name,
        "mean": fmt_return(block.get("mean_return"), block.get("ci95")),
        "episodes": _text(block.get("episodes", "")),
        "mean_length": fmt_num(block.get("mean_length"), ".1f"),
        "std": fmt_num(block.get("std_return")),
    }


def _budget_text(surface: str, budget: float, unit: str) -> str:
    text = f"{budget_symbol(surface)} = {fmt_budget(budget)}"
    return f"{text} ({unit})" if unit and unit != "probability" else text


def _threat_models(results: Mapping[str, Any]) -> list[dict[str, str]]:
    attacks: dict[str, dict[str, Any]] = {}
    budgets: dict[str, list[float]] = {}
    for r in results.get("results", []):
        attacks.setdefault(str(r["attack"]), r)
        budgets.setdefault(str(r["attack"]), []).append(float(r["epsilon"]))
    out = []
    for attack, r in attacks.items():
        tm = r.get("threat_model") or {}
        frequency = _text(tm.get("frequency"))
        if tm.get("step_budget") is not None:
            frequency += f" (≤ {fmt_num(100.0 * float(tm['step_budget']), '.0f')}% of steps)"
        out.append(
            {
                "attack": attack,
                "surface": _text(r.get("surface")),
                "budgets": ", ".join(fmt_budget(b) for b in sorted(budgets[attack])),
                "norm": _text(r.get("norm", tm.get("norm"))),
                "unit": _text(r.get("unit", tm.get("unit"))),
                "knowledge": _text(tm.get("knowledge")),
                "frequency": frequency,
                "phase": _text(tm.get("phase")),
                "atlas": ", ".join(str(a) for a in r.get("atlas", [])),
                "reference": _text(r.get("reference")),
                "params": json.dumps(r.get("params", {}), sort_keys=True, default=str),
            }
        )
    return out


def build_context(
    results: Mapping[str, Any], plots: Mapping[str, bytes] | None = None
) -> dict[str, Any]:
    """The preformatted values the template shows (all plain strings, lists and dicts).

    Args:
        results: a campaign's results in the ``results.json`` contract.
        plots: PNG bytes by name, as :func:`rlsec.report.plots.render_plots` returns them;
            ``None`` shows no plots.
    """
    policy = results.get("policy") or {}
    clean = results.get("clean") or {}
    clean_mean = clean.get("mean_return")
    groups = []
    for surface, budget, rows, worst in budget_groups(results):
        unit = _text(rows[0].get("unit"))
        groups.append(
            {
                "budget": _budget_text(surface, budget, unit),
                "rows": [
                    {
                        "attack": _text(r["attack"]),
                        "surface": surface,
                        "mean": fmt_return(r.get("mean_return"), r.get("ci95")),
                        "change": fmt_pct(pct_change(r.get("mean_return"), clean_mean)),
                        "changed": fmt_rate(r.get("action_change_rate")),
                        "episodes": _text(r.get("episodes", "")),
                        "mean_length": fmt_num(r.get("mean_length"), ".1f"),
                        "seeds": ", ".join(
                            f"{s.get('seed')}: {fmt_num(s.get('mean_return'))}"
                            for s in r.get("per_seed", [])
                        ),
                        "seconds": fmt_num(r.get("seconds"), ".1f"),
                    }
                    for r in rows
                ],
                "worst": None
                if worst is None
                else {
                    "attack": _text(worst.get("attack")),
                    "mean": fmt_return(worst.get("mean_return"), worst.get("ci95")),
                    "change": fmt_pct(pct_change(worst.get("mean_return"), clean_mean)),
                },
            }
        )
    worst_rows = []
    for w in results.get("worst_case", []):
        surface = _text(w.get("surface"))
        unit = "probability" if surface == "action" else _text(results.get("eps_unit"))
        worst_rows.append(
            {
                "surface": surface,
                "budget": _budget_text(surface, float(w["epsilon"]), unit),
                "attack": _text(w.get("attack")),
                "mean": fmt_return(w.get("mean_return"), w.get("ci95")),
                "change": fmt_pct(pct_change(w.get("mean_return"), clean_mean)),
            }
        )
    threshold = results.get("eps50_threshold")
    return {
        "title": f"rlsec red team: {_text(policy.get('source')) or 'policy'}",
        "policy": {
            "source": _text(policy.get("source")),
            "sha256": _text(policy.get("sha256")) or "not recorded",
            "format": _text(policy.get("format")),
            "algo": _text(policy.get("algo")),
            "env_id": _text(policy.get("env_id")),
        },
        "defense": _text((results.get("defense") or {}).get("spec")),
        "env": _text(results.get("env")),
        "kind": _text(results.get("kind")),
        "version": _text(results.get("rlsec_version")),
        "started_at": _text(results.get("started_at")),
        "seconds": fmt_num(results.get("seconds"), ".1f"),
        "seed": _text(results.get("seed")),
        "eps_unit": _text(results.get("eps_unit")),
        "baselines": [
            _summary("clean policy", clean),
            _summary("random policy", results.get("random_policy") or {}),
        ],
        "eps50": [
            {
                "name": name.replace("_", " ") if name.startswith("worst_case") else name,
                "worst": name.startswith("worst_case"),
                "value": fmt_budget(value) if value is not None else "not reached",
                "unit": unit,
            }
            for name, value, unit in eps50_rows(results)
        ],
        "threshold": fmt_num(threshold) if threshold is not None else "",
        "worst_case": worst_rows,
        "groups": groups,
        "threat_models": _threat_models(results),
        "skipped": [
            {"attack": _text(s.get("attack")), "reason": _text(s.get("reason"))}
            for s in results.get("skipped", [])
        ],
        "plots": [
            {
                "title": _PLOT_TITLES.get(name, name),
                "uri": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
            }
            for name, png in (plots or {}).items()
        ],
        "config_json": json.dumps(
            results.get("config", {}), indent=2, ensure_ascii=False, default=str
        ),
    }


def render_html(results: Mapping[str, Any]) -> str:
    """Render the whole report page in memory.

    Args:
        results: a campaign's results in the ``results.json`` contract.

    Returns:
        The HTML document; it references nothing outside itself.
    """
    from rlsec.report.plots import render_plots  # matplotlib is only needed here

    context = build_context(results, render_plots(results))
    return _environment().get_template(_TEMPLATE).render(**context)
