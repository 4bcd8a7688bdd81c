"""The README's commands and snippets are the ones that work."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readmes_test_command() -> None:
    bash = _blocks("bash")
    install_and_run, test_command = bash[0].strip(), bash[1].strip()
    assert install_and_run.endswith("rlsec redteam")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci, f"{test_command!r} is not a line of .ci/run"


def test_the_first_screen_has_both_commands() -> None:
    first_screen = "\n".join(README.splitlines()[:30])
    assert "rlsec redteam" in first_screen and "pytest" in first_screen


def _eps50(rows: list[dict[str, Any]], threshold: float) -> float | None:
    """The smallest budget whose mean return falls below the threshold, recomputed."""
    below = [r["epsilon"] for r in rows if r["mean_return"] < threshold]
    return min(below) if below else None


def test_python_snippets_run() -> None:
    (code,) = _blocks("python")
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    results = namespace["results"]
    config = results["config"]
    assert config["attacks_run"] == ["pgd-obs-v1", "mad-obs-v1"]
    assert (config["epsilons"], config["episodes"], results["eps_unit"]) == ([0.05, 0.1], 5, "std")
    assert results["clean"]["mean_return"] == 500.0  # the zoo policy balances the pole
    assert results["eps50_threshold"] == 250.0
    eps50 = results["eps50"]
    assert set(eps50) == {"pgd-obs-v1", "mad-obs-v1", "worst_case", "worst_case:action"}
    for attack in ("pgd-obs-v1", "mad-obs-v1"):
        rows = [r for r in results["results"] if r["attack"] == attack]
        assert [r["epsilon"] for r in rows] == [0.05, 0.1]
        assert eps50[attack] == _eps50(rows, 250.0)
    assert eps50["worst_case"] == _eps50(results["worst_case"], 250.0)
    assert eps50["worst_case:action"] is None  # no action attack was asked for
    # what the README says of this policy: the white-box attacks break it by ε = 0.1 std
    assert eps50["pgd-obs-v1"] is not None and eps50["pgd-obs-v1"] <= 0.1
    assert eps50["worst_case"] == min(eps50["pgd-obs-v1"], eps50["mad-obs-v1"] or 1.0)
