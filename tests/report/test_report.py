"""Tests of rlsec.report: plots, tables, HTML and the atomic writer."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from rlsec.report import eps50_table, render_html, results_table, write_report
from rlsec.report.plots import action_change_plot, render_plots, return_plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SHA = "3f2a9c0e1b7d4a6f8e5c2b1a0d9f8e7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f10"

_OBS = {
    # attack: (norm, knowledge, atlas, reference, means per ε, action change rates)
    "pgd-obs-v1": (
        "linf",
        "white-box",
        ["AML.T0043.000", "AML.T0015"],
        "Madry et al. 2018",
        [310.0, 140.5, 22.0],
        [0.12, 0.41, 0.77],
    ),
    "gaussian-obs-v1": (
        "l2",
        "black-box",
        ["AML.T0015"],
        "Gaussian sensor noise baseline",
        [495.0, 470.25, 380.0],
        [0.01, 0.04, 0.15],
    ),
    "mad-obs-v1": (
        "linf",
        "white-box",
        ["AML.T0043.000", "AML.T0015"],
        "Zhang et al. 2020",
        [280.0, 120.0, 35.5],
        [0.15, 0.45, 0.70],
    ),
}
_EPS = [0.05, 0.2, 1.0]
_ALPHAS = [0.1, 0.3]


def _row(
    attack: str,
    surface: str,
    budget: float,
    mean: float,
    rate: float,
    *,
    norm: str,
    unit: str,
    knowledge: str,
    atlas: list[str],
    reference: str,
) -> dict[str, Any]:
    return {
        "attack": attack,
        "surface": surface,
        "epsilon": budget,
        "norm": norm,
        "unit": unit,
        "mean_return": mean,
        "ci95": [mean - 12.5, mean + 12.5],
        "episodes": 20,
        "mean_length": max(mean, 8.0),
        "std_return": 27.0,
        "action_change_rate": rate,
        "per_seed": [{"seed": 0, "mean_return": mean}],
        "threat_model": {
            "surface": surface,
            "epsilon": budget,
            "norm": norm,
            "unit": unit,
            "knowledge": knowledge,
            "frequency": "every-step",
            "step_budget": None,
            "phase": "deployment",
        },
        "atlas": atlas,
        "reference": reference,
        "params": {"steps": 10},
        "seconds": 1.25,
    }


def make_results() -> dict[str, Any]:
    """A small realistic result: 3 observation attacks x 3 ε, 1 action attack x 2 alphas."""
    rows = []
    for attack, (norm, knowledge, atlas, ref, means, rates) in _OBS.items():
        for eps, mean, rate in zip(_EPS, means, rates, strict=True):
            rows.append(
                _row(
                    attack,
                    "observation",
                    eps,
                    mean,
                    rate,
                    norm=norm,
                    unit="std",
                    knowledge=knowledge,
                    atlas=atlas,
                    reference=ref,
                )
            )
    for alpha, mean, rate in zip(_ALPHAS, [430.0, 210.0], [0.05, 0.16], strict=True):
        rows.append(
            _row(
                "pr-adv-act-v1",
                "action",
                alpha,
                mean,
                rate,
                norm="prob",
                unit="probability",
                knowledge="white-box",
                atlas=["AML.T0031"],
                reference="Tessler et al. 2019",
            )
        )
    worst = []
    for surface, budgets in (("observation", _EPS), ("action", _ALPHAS)):
        for b in budgets:
            best = min(
                (r for r in rows if r["surface"] == surface and r["epsilon"] == b),
                key=lambda r: r["mean_return"],
            )
            worst.append(
                {
                    "surface": surface,
                    "epsilon": b,
                    "attack": best["attack"],
                    "mean_return": best["mean_return"],
                    "ci95": best["ci95"],
                }
            )
    return {
        "rlsec_version": "0.1.0",
        "kind": "redteam",
        "policy": {
            "source": "zoo:cartpole-dqn",
            "sha256": SHA,
            "format": "native",
            "algo": "dqn",
            "env_id": "CartPole-v1",
        },
        "env": "CartPole-v1",
        "seed": 0,
        "eps_unit": "std",
        "clean": {
            "mean_return": 500.0,
            "ci95": [500.0, 500.0],
            "episodes": 20,
            "mean_length": 500.0,
            "std_return": 0.0,
        },
        "random_policy": {
            "mean_return": 22.4,
            "ci95": [18.1, 26.7],
            "episodes": 20,
            "mean_length": 22.4,
            "std_return": 9.2,
        },
        "results": rows,
        "worst_case": worst,
        "eps50": {
            "pgd-obs-v1": 0.2,
            "gaussian-obs-v1": None,
            "mad-obs-v1": 0.2,
            "pr-adv-act-v1": 0.3,
            "worst_case": 0.2,
            "worst_case:action": 0.3,
        },
        "eps50_threshold": 250.0,
        "skipped": [{"attack": "critic-obs-v1", "reason": "the policy has no critic"}],
        "config": {
            "attacks": None,
            "epsilons": _EPS,
            "alphas": _ALPHAS,
            "episodes": 20,
            "seeds": [0],
            "eps_unit": "std",
            "env_id": "CartPole-v1",
        },
        "started_at": "2025-01-02T03:04:05+00:00",
        "seconds": 42.5,
    }


def observation_only(results: dict[str, Any]) -> dict[str, Any]:
    r = copy.deepcopy(results)
    r["results"] = [x for x in r["results"] if x["surface"] == "observation"]
    r["worst_case"] = [w for w in r["worst_case"] if w["surface"] == "observation"]
    r["eps50"] = {
        k: v for k, v in r["eps50"].items() if k not in ("pr-adv-act-v1", "worst_case:action")
    }
    return r


def without_ci(results: dict[str, Any]) -> dict[str, Any]:
    r = copy.deepcopy(results)
    for block in [r["clean"], r["random_policy"], *r["results"], *r["worst_case"]]:
        block["ci95"] = None
    return r


@pytest.fixture
def results() -> dict[str, Any]:
    return make_results()


# --------------------------------------------------------------------------- plots


def test_plots_are_png_and_deterministic(results: dict[str, Any]) -> None:
    first = render_plots(results)
    second = render_plots(copy.deepcopy(results))
    assert set(first) == {
        "observation_return",
        "observation_changes",
        "action_return",
        "action_changes",
    }
    for name, png in first.items():
        assert png.startswith(PNG_MAGIC), name
        assert len(png) > 5000, name  # a real picture, not an empty canvas
        assert png == second[name], f"{name} differs between two renders"
        assert b"Software" not in png
        assert b"matplotlib" not in png.lower()


def test_plots_change_with_the_data(results: dict[str, Any]) -> None:
    other = copy.deepcopy(results)
    other["results"][0]["mean_return"] = 10.0
    assert return_plot(results) != return_plot(other)
    assert action_change_plot(results) == action_change_plot(other)


def test_plots_skip_missing_surfaces_and_handle_null_ci(results: dict[str, Any]) -> None:
    obs = observation_only(results)
    assert set(render_plots(obs)) == {"observation_return", "observation_changes"}
    with pytest.raises(ValueError, match="action"):
        return_plot(obs, "action")
    assert return_plot(without_ci(results)).startswith(PNG_MAGIC)
    assert render_plots({"results": []}) == {}


def test_plot_does_not_touch_pyplot(results: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    render_plots(results)
    assert plt.get_fignums() == before


# --------------------------------------------------------------------------- tables


def _text(table: Any) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def test_results_table_rows_and_worst_case(results: dict[str, Any]) -> None:
    table = results_table(results)
    # 9 observation rows + 3 worst-case rows, 2 action rows + 2 worst-case rows
    assert table.row_count == 9 + 3 + 2 + 2
    text = _text(table)
    for attack in ("pgd-obs-v1", "gaussian-obs-v1", "mad-obs-v1", "pr-adv-act-v1"):
        assert attack in text
    assert text.count("worst case") == 5
    assert "500.00 ± 0.00" in text  # clean
    assert "140.50 ± 12.50" in text  # pgd at ε=0.2
    assert "-71.9%" in text  # (140.5 - 500) / 500
    assert "41.0%" in text  # pgd action change rate at ε=0.2
    assert "\N{GREEK SMALL LETTER ALPHA}=0.3" in text
    assert "ε=0.2 std" in text


def test_results_table_does_not_interpret_markup(results: dict[str, Any]) -> None:
    results["results"][0]["attack"] = "[bold]evil[/bold]"
    assert "[bold]evil[/bold]" in _text(results_table(results))


def test_eps50_table(results: dict[str, Any]) -> None:
    table = eps50_table(results)
    assert table.row_count == len(results["eps50"])
    text = _text(table)
    assert "not reached" in text  # gaussian-obs-v1
    assert "worst case:action" in text
    assert "250.00" in text


def test_tables_handle_null_ci(results: dict[str, Any]) -> None:
    text = _text(results_table(without_ci(results)))
    assert "140.50" in text
    rows = [line for line in text.splitlines() if "confidence interval" not in line]  # caption
    assert "±" not in "\n".join(rows)


# --------------------------------------------------------------------------- html

_EXTERNAL = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//""", re.I)


def test_html_contents(results: dict[str, Any]) -> None:
    html = render_html(results)
    assert html.startswith("<!DOCTYPE html>")
    for attack in ("pgd-obs-v1", "gaussian-obs-v1", "mad-obs-v1", "pr-adv-act-v1"):
        assert attack in html
    assert "critic-obs-v1" in html
    assert "the policy has no critic" in html
    assert SHA in html
    assert "CartPole-v1" in html
    assert "zoo:cartpole-dqn" in html
    assert "2025-01-02T03:04:05+00:00" in html
    assert "0.1.0" in html
    eps50_section = html.split('id="eps50"')[1].split("</section>")[0]
    assert re.search(r">\s*pgd-obs-v1</td>\s*<td[^>]*>0\.2</td>", eps50_section)
    assert re.search(r">\s*pr-adv-act-v1</td>\s*<td[^>]*>0\.3</td>", eps50_section)
    assert re.search(r">\s*gaussian-obs-v1</td>\s*<td[^>]*>not reached</td>", eps50_section)
    assert "250.00" in eps50_section
    # threat models: norm, unit, knowledge, frequency, ATLAS, reference
    tm = html.split('id="threat-models"')[1].split("</section>")[0]
    for needle in (
        "linf",
        "l2",
        "prob",
        "std",
        "probability",
        "white-box",
        "black-box",
        "every-step",
        "AML.T0043.000",
        "AML.T0031",
        "Madry et al. 2018",
        "Tessler et al. 2019",
    ):
        assert needle in tm, needle
    # clean and random-policy baselines
    assert "500.00 ± 0.00" in html
    assert "22.40 ± 4.30" in html
    # 4 plots embedded as data URIs
    assert html.count('src="data:image/png;base64,') == 4
    # config in a <details> block as pretty JSON
    details = html.split("<details>")[1].split("</details>")[0]
    assert "&#34;eps_unit&#34;: &#34;std&#34;" in details or '"eps_unit": "std"' in details


def test_html_is_self_contained(results: dict[str, Any]) -> None:
    results["policy"]["source"] = "https://example.com/policy.zip"
    html = render_html(results)
    assert not _EXTERNAL.search(html), _EXTERNAL.search(html)
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    assert "@import" not in html
    assert "url(" not in html
    for m in re.finditer(r"""(?:src|href)\s*=\s*["']([^"']*)""", html, re.I):
        assert m.group(1).startswith("data:image/png;base64,"), m.group(1)[:80]


def test_html_escapes_markup(results: dict[str, Any]) -> None:
    results["policy"]["source"] = "<script>alert('x')</script>.zip"
    results["skipped"][0]["reason"] = "<img src=x onerror=alert(1)>"
    results["config"]["policy"] = "<script>alert(2)</script>"
    html = render_html(results)
    assert "&lt;script&gt;alert(" in html
    assert "<script" not in html.lower()
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<img src=x" not in html


def test_html_without_action_attacks(results: dict[str, Any]) -> None:
    html = render_html(observation_only(results))
    assert "pgd-obs-v1" in html
    assert "pr-adv-act-v1" not in html
    assert html.count('src="data:image/png;base64,') == 2


def test_html_with_null_ci(results: dict[str, Any]) -> None:
    html = render_html(without_ci(results))
    body = html.split('id="results"')[1].split("<tbody>")[1].split("</tbody>")[0]
    assert "140.50" in body
    assert "±" not in body
    assert "140.50 ± 12.50" in render_html(results)


def test_html_is_deterministic(results: dict[str, Any]) -> None:
    assert render_html(results) == render_html(copy.deepcopy(results))


# --------------------------------------------------------------------------- write_report


def test_write_report(results: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "nested" / "run"
    paths = write_report(results, out)
    assert set(paths) == {"json", "html"}
    assert paths["json"] == out / "results.json"
    assert paths["html"] == out / "report.html"
    with paths["json"].open(encoding="utf-8") as f:
        assert json.load(f) == results
    text = paths["json"].read_text(encoding="utf-8")
    assert text.startswith('{\n  "rlsec_version"')  # pretty, keys in original order
    assert paths["html"].read_text(encoding="utf-8") == render_html(results)
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "results.json"]


def test_write_report_overwrites(results: dict[str, Any], tmp_path: Path) -> None:
    write_report(results, tmp_path)
    results["env"] = "Acrobot-v1"
    write_report(results, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["env"] == "Acrobot-v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "results.json"]


@pytest.mark.parametrize(
    ("where", "value"),
    [("mean", math.nan), ("ci", math.inf), ("threshold", -math.inf)],
)
def test_non_finite_raises_and_writes_nothing(
    results: dict[str, Any], tmp_path: Path, where: str, value: float
) -> None:
    if where == "mean":
        results["results"][4]["mean_return"] = value
    elif where == "ci":
        results["clean"]["ci95"] = [value, 500.0]
    else:
        results["eps50_threshold"] = value
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="finite"):
        write_report(results, out)
    assert not out.exists()
    out.mkdir()
    with pytest.raises(ValueError, match="finite"):
        write_report(results, out)
    assert list(out.iterdir()) == []


def test_non_finite_does_not_clobber_existing(results: dict[str, Any], tmp_path: Path) -> None:
    write_report(results, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    bad = copy.deepcopy(results)
    bad["results"][0]["mean_return"] = math.nan
    with pytest.raises(ValueError, match=r"results\['results'\]\[0\]\['mean_return'\]"):
        write_report(bad, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_write_failure_leaves_no_temp_files(
    results: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_report(results, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    import rlsec.report as report

    def boom(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(report.os, "replace", boom)
    results["env"] = "Acrobot-v1"
    with pytest.raises(OSError, match="disk full"):
        write_report(results, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_write_report_variants_render(results: dict[str, Any], tmp_path: Path) -> None:
    for i, variant in enumerate([observation_only(results), without_ci(results)]):
        paths = write_report(variant, tmp_path / str(i))
        assert json.loads(paths["json"].read_text(encoding="utf-8")) == variant
        assert "pgd-obs-v1" in paths["html"].read_text(encoding="utf-8")


def test_write_report_replaces_links_instead_of_writing_through_them(
    tmp_path: Path, results: dict[str, Any]
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("results.json", "report.html", ".results.json.tmp", ".report.html.tmp"):
        (out / name).symlink_to(victim)
    write_report(results, out)
    assert victim.read_text() == "keep"
    assert json.loads((out / "results.json").read_text())["kind"] == results["kind"]
    assert not (out / "report.html").is_symlink()
