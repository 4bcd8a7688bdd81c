"""The README's commands and snippets are the ones that work."""

from __future__ import annotations

import re
from pathlib import Path

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


def test_python_snippets_run() -> None:
    for code in _blocks("python"):
        namespace: dict[str, object] = {}
        exec(compile(code, "README.md", "exec"), namespace)
        results = namespace["results"]
        assert isinstance(results, dict) and "eps50" in results
