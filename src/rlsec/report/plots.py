"""Plots of a red-team campaign, rendered to PNG bytes.

Every function builds its own :class:`matplotlib.figure.Figure` and renders it with the Agg
canvas directly, so nothing touches ``pyplot`` or the global backend, and the PNG carries no
software/version/date metadata: the same results give byte-identical images.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, PercentFormatter

__all__ = ["PlotSurface", "action_change_plot", "render_plots", "return_plot"]

PlotSurface = Literal["observation", "action"]

_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
    "#d62728",
)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")


def _rows(results: Mapping[str, Any], surface: PlotSurface) -> list[Mapping[str, Any]]:
    rows = [r for r in results.get("results", []) if r.get("surface") == surface]
    if not rows:
        raise ValueError(f"no {surface}-surface results to plot")
    return rows


def _by_attack(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(str(r["attack"]), []).append(r)
    return {k: sorted(v, key=lambda r: float(r["epsilon"])) for k, v in groups.items()}


def _use_log_x(budgets: Sequence[float]) -> bool:
    """Log x-axis only if every budget is positive and they span more than a factor of 10."""
    if not budgets or min(budgets) <= 0:
        return False
    return max(budgets) / min(budgets) > 10.0


def _budget_label(
    results: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], surface: PlotSurface
) -> str:
    if surface == "action":
        return "\N{GREEK SMALL LETTER ALPHA} (probability the adversary acts)"
    unit = rows[0].get("unit") or results.get("eps_unit") or "raw"
    return f"ε ({'clean-observation std' if unit == 'std' else 'raw observation units'})"


def _new_axes(
    results: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], surface: PlotSurface, title: str
) -> tuple[Figure, Any]:
    fig = Figure(figsize=(7.5, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    budgets = sorted({float(r["epsilon"]) for r in rows})
    if _use_log_x(budgets):
        ax.set_xscale("log")
    if len(budgets) <= 12:  # label the grid itself: 0.05, 0.1, 0.2 ... rather than 10^-1
        ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(_budget_label(results, rows, surface))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _finite(x: Any) -> float | None:
    """``x`` as a float if it is a finite number, else ``None``."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
        return None
    return float(x)


def return_plot(results: Mapping[str, Any], surface: PlotSurface = "observation") -> bytes:
    """Mean return against the budget, one line per attack of ``surface``.

    Each attack's 95% confidence interval is a shaded band (omitted where ``ci95`` is null),
    the clean return a dashed line, the eps50 threshold a dotted line and the worst case
    over attacks a thick black line.

    Raises:
        ValueError: ``results`` holds no result on ``surface``.
    """
    rows = _rows(results, surface)
    what = "ε" if surface == "observation" else "\N{GREEK SMALL LETTER ALPHA}"
    fig, ax = _new_axes(results, rows, surface, f"Mean return vs {what} ({surface} attacks)")
    for i, (attack, group) in enumerate(_by_attack(rows).items()):
        color, marker = _COLORS[i % len(_COLORS)], _MARKERS[i % len(_MARKERS)]
        x = np.array([float(r["epsilon"]) for r in group])
        y = np.array([float(r["mean_return"]) for r in group])
        ax.plot(x, y, color=color, marker=marker, markersize=4, linewidth=1.4, label=attack)
        ci = [r.get("ci95") for r in group]
        if any(c is not None for c in ci):
            lo = np.ma.masked_invalid([float(c[0]) if c is not None else np.nan for c in ci])
            hi = np.ma.masked_invalid([float(c[1]) if c is not None else np.nan for c in ci])
            ax.fill_between(x, lo, hi, color=color, alpha=0.15, linewidth=0)
    worst = [w for w in results.get("worst_case", []) if w.get("surface") == surface]
    if not worst:  # derive it when the results do not carry it
        best: dict[float, float] = {}
        for r in rows:
            e = float(r["epsilon"])
            best[e] = min(best.get(e, math.inf), float(r["mean_return"]))
        worst = [{"epsilon": e, "mean_return": m} for e, m in best.items()]
    worst = sorted(worst, key=lambda w: float(w["epsilon"]))
    ax.plot(
        [float(w["epsilon"]) for w in worst],
        [float(w["mean_return"]) for w in worst],
        color="black",
        linewidth=3.2,
        alpha=0.8,
        label="worst case",
        zorder=3,
    )
    clean = _finite((results.get("clean") or {}).get("mean_return"))
    if clean is not None:
        ax.axhline(
            clean, color="#444444", linestyle="--", linewidth=1.2, label=f"clean ({clean:.1f})"
        )
    threshold = _finite(results.get("eps50_threshold"))
    if threshold is not None:
        ax.axhline(
            threshold,
            color="#d62728",
            linestyle=":",
            linewidth=1.5,
            label=f"eps50 threshold ({threshold:.1f})",
        )
    ax.set_ylabel("mean episode return")
    ax.legend(fontsize="small", loc="best")
    return _png(fig)


def action_change_plot(results: Mapping[str, Any], surface: PlotSurface = "observation") -> bytes:
    """Fraction of steps whose action the attack changed, against the budget.

    Raises:
        ValueError: ``results`` holds no result on ``surface``.
    """
    rows = _rows(results, surface)
    what = "ε" if surface == "observation" else "\N{GREEK SMALL LETTER ALPHA}"
    fig, ax = _new_axes(results, rows, surface, f"Actions changed vs {what} ({surface} attacks)")
    for i, (attack, group) in enumerate(_by_attack(rows).items()):
        ax.plot(
            [float(r["epsilon"]) for r in group],
            [float(r.get("action_change_rate", np.nan)) for r in group],
            color=_COLORS[i % len(_COLORS)],
            marker=_MARKERS[i % len(_MARKERS)],
            markersize=4,
            linewidth=1.4,
            label=attack,
        )
    ax.set_ylim(-0.02, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("steps with a changed action")
    ax.legend(fontsize="small", loc="best")
    return _png(fig)


def render_plots(results: Mapping[str, Any]) -> dict[str, bytes]:
    """Every plot that applies, as PNG bytes keyed ``<surface>_return`` / ``<surface>_changes``.

    Surfaces without results are left out.

    Example:
        >>> render_plots({"results": []})
        {}
    """
    plots: dict[str, bytes] = {}
    surfaces: tuple[PlotSurface, ...] = ("observation", "action")
    for surface in surfaces:
        if any(r.get("surface") == surface for r in results.get("results", [])):
            plots[f"{surface}_return"] = return_plot(results, surface)
            plots[f"{surface}_changes"] = action_change_plot(results, surface)
    return plots
