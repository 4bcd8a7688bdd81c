"""Terminal tables of a red-team campaign (``rich``), as printed by the CLI.

Data cells are :class:`rich.text.Text`, never markup strings, so an attack id or policy path
containing ``[...]`` prints literally.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

__all__ = [
    "budget_groups",
    "budget_symbol",
    "eps50_rows",
    "eps50_table",
    "fmt_budget",
    "fmt_num",
    "fmt_pct",
    "fmt_rate",
    "fmt_return",
    "half_width",
    "pct_change",
    "results_table",
]


def fmt_num(x: Any, spec: str = ".2f") -> str:
    """``x`` formatted with ``spec``, or ``n/a`` when it is missing or not finite."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
        return "n/a"
    return format(float(x), spec)


def fmt_budget(x: Any) -> str:
    """A budget as short as it can be written (``0.1``, ``1``, ``0.05``)."""
    return fmt_num(x, "g")


def half_width(ci: Sequence[float] | None) -> float | None:
    """Half the width of a confidence interval, ``None`` without one."""
    if ci is None or len(ci) != 2:
        return None
    return (float(ci[1]) - float(ci[0])) / 2.0


def fmt_return(mean: Any, ci: Sequence[float] | None) -> str:
    """``mean ± half-width`` (just the mean when there is no interval)."""
    h = half_width(ci)
    return fmt_num(mean) if h is None else f"{fmt_num(mean)} ± {fmt_num(h)}"


def pct_change(attacked: Any, clean: Any) -> float | None:
    """Relative change of the return in percent, ``None`` when the clean return is zero."""
    try:
        a, c = float(attacked), float(clean)
    except (TypeError, ValueError):
        return None
    if c == 0 or not (math.isfinite(a) and math.isfinite(c)):
        return None
    return 100.0 * (a - c) / abs(c)


def fmt_pct(x: float | None) -> str:
    """A signed percentage such as ``-52.3%``."""
    return "n/a" if x is None else f"{x:+.1f}%"


def fmt_rate(x: Any) -> str:
    """A fraction in [0, 1] as a percentage such as ``42.0%`` (``n/a`` if missing)."""
    text = fmt_num(x, ".3f")
    return text if text == "n/a" else f"{100.0 * float(x):.1f}%"


def budget_symbol(surface: str) -> str:
    """``ε`` for observation budgets, alpha for action budgets."""
    return "\N{GREEK SMALL LETTER ALPHA}" if surface == "action" else "ε"


def budget_groups(
    results: Mapping[str, Any],
) -> list[tuple[str, float, list[Mapping[str, Any]], Mapping[str, Any] | None]]:
    """Results grouped by surface and budget: ``(surface, budget, rows, worst_case_row)``.

    Observation budgets come first, then action budgets, each in increasing order; within a
    budget the rows keep the order of ``results["results"]``.
    """
    rows = list(results.get("results", []))
    worst = {(str(w["surface"]), float(w["epsilon"])): w for w in results.get("worst_case", [])}
    order = {"observation": 0, "action": 1}
    keys = sorted(
        {(str(r["surface"]), float(r["epsilon"])) for r in rows},
        key=lambda k: (order.get(k[0], 2), k[0], k[1]),
    )
    groups = []
    for surface, budget in keys:
        group = [r for r in rows if str(r["surface"]) == surface and float(r["epsilon"]) == budget]
        groups.append((surface, budget, group, worst.get((surface, budget))))
    return groups


def results_table(results: Mapping[str, Any]) -> Table:
    """Clean vs attacked return for every attack and budget, with a worst-case row per budget.

    Rows are grouped by surface and budget; each group ends with a highlighted ``worst case``
    row (the attack with the lowest mean return at that budget).

    Args:
        results: a campaign's results in the ``results.json`` contract.

    Returns:
        The table, ready for ``rich.console.Console.print``.

    Example:
        >>> r = {"clean": {"mean_return": 500.0, "ci95": [490.0, 510.0]},
        ...      "results": [{"attack": "pgd-obs-v1", "surface": "observation",
        ...                   "epsilon": 0.1, "unit": "std", "mean_return": 250.0,
        ...                   "ci95": None, "action_change_rate": 0.4}],
        ...      "worst_case": [{"surface": "observation", "epsilon": 0.1,
        ...                      "attack": "pgd-obs-v1", "mean_return": 250.0, "ci95": None}]}
        >>> table = results_table(r)
        >>> table.row_count, [c.header for c in table.columns][:3]
        (2, ['attack', 'surface', 'budget'])
    """
    clean = results.get("clean", {})
    clean_text = fmt_return(clean.get("mean_return"), clean.get("ci95"))
    policy = results.get("policy", {}).get("source")
    defense = (results.get("defense") or {}).get("spec")
    if policy and defense:
        policy = f"{policy} + {defense}"
    env = results.get("env")
    title = " on ".join(str(x) for x in (policy, env) if x) or None
    table = Table(
        title=Text(f"red team: {title}") if title else None,
        caption="returns: mean ± half-width of the 95% confidence interval",
        show_lines=False,
    )
    for header, justify in (
        ("attack", "left"),
        ("surface", "left"),
        ("budget", "right"),
        ("clean return", "right"),
        ("attacked return", "right"),
        ("change", "right"),
        ("actions changed", "right"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for surface, budget, group, worst in budget_groups(results):
        unit = str(group[0].get("unit") or "")
        budget_text = f"{budget_symbol(surface)}={fmt_budget(budget)}"
        if unit and unit != "probability":
            budget_text += f" {unit}"
        for r in group:
            change = pct_change(r.get("mean_return"), clean.get("mean_return"))
            table.add_row(
                Text(str(r["attack"])),
                Text(surface),
                Text(budget_text),
                Text(clean_text),
                Text(fmt_return(r.get("mean_return"), r.get("ci95"))),
                Text(fmt_pct(change), style="red" if change is not None and change < 0 else ""),
                Text(fmt_rate(r.get("action_change_rate"))),
            )
        if worst is not None:
            change = pct_change(worst.get("mean_return"), clean.get("mean_return"))
            table.add_row(
                Text(f"worst case ({worst['attack']})"),
                Text(surface),
                Text(budget_text),
                Text(clean_text),
                Text(fmt_return(worst.get("mean_return"), worst.get("ci95"))),
                Text(fmt_pct(change)),
                Text(""),
                style="bold red",
                end_section=True,
            )
        else:
            table.rows[-1].end_section = True
    return table


def eps50_rows(results: Mapping[str, Any]) -> list[tuple[str, float | None, str]]:
    """``(name, eps50, unit)`` for every entry of ``results["eps50"]``, in the stored order."""
    rows = list(results.get("results", []))
    units = {str(r["attack"]): str(r.get("unit") or "") for r in rows}
    has_obs = any(r.get("surface") == "observation" for r in rows)
    eps_unit = str(results.get("eps_unit") or "raw")
    out: list[tuple[str, float | None, str]] = []
    for name, value in results.get("eps50", {}).items():
        if name == "worst_case":
            unit = eps_unit if has_obs or not rows else "probability"
        elif name.startswith("worst_case:"):
            unit = "probability" if name == "worst_case:action" else eps_unit
        else:
            unit = units.get(name, "")
        out.append((str(name), None if value is None else float(value), unit))
    return out


def eps50_table(results: Mapping[str, Any]) -> Table:
    """The smallest budget that halves the policy's return, per attack and for the worst case.

    ``not reached`` means no budget on the grid pushed the mean return below the threshold
    (half-way between the clean return and ``min(0, random-policy return)``).

    Example:
        >>> table = eps50_table({"eps50": {"pgd-obs-v1": 0.2, "worst_case": None},
        ...                      "eps50_threshold": 250.0})
        >>> table.row_count
        2
    """
    threshold = results.get("eps50_threshold")
    caption = f"threshold: mean return < {fmt_num(threshold)}" if threshold is not None else None
    table = Table(
        title="eps50 (smallest budget whose return falls below the threshold)", caption=caption
    )
    table.add_column("attack")
    table.add_column("eps50", justify="right")
    table.add_column("unit")
    for name, value, unit in eps50_rows(results):
        is_worst = name.startswith("worst_case")
        table.add_row(
            Text(name.replace("_", " ") if is_worst else name),
            Text(
                fmt_budget(value) if value is not None else "not reached",
                style="" if value is not None else "dim",
            ),
            Text(unit),
            style="bold" if is_worst else None,
        )
    return table
