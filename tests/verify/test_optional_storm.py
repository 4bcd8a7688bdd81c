"""Storm (stormpy, GPL-3.0) is the optional extra ``rlsec[storm]``: every rlsec module imports
and the model checks that do not need it work without it, and the commands that do need it
say how to install it, with exit code 2. Each probe runs in a fresh interpreter whose import
system refuses stormpy, as on a machine where it was never installed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

NO_STORM = """
import importlib.abc, sys

class _NoStorm(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "stormpy" or name.startswith("stormpy."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoStorm())
"""


def _without_storm(
    code: str, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", NO_STORM + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd,
    )


def test_every_rlsec_module_imports_and_runs_without_stormpy() -> None:
    proc = _without_storm(
        """
        import importlib, pkgutil
        import numpy as np, torch, gymnasium as gym
        import rlsec
        names = [m.name for m in pkgutil.walk_packages(rlsec.__path__, "rlsec.")
                 if ".migrations" not in m.name and m.name != "rlsec.__main__"]
        for name in names:
            importlib.import_module(name)
        assert "stormpy" not in sys.modules, "stormpy was imported"
        print("imported", len(names))

        # exact tabular evaluation, the sparse model and its chain need no Storm
        from rlsec.envs.finite import FiniteMDP, greedy
        mdp = FiniteMDP.from_toy_text("FrozenLake-v1", is_slippery=False, discount=0.9)
        v, q = mdp.value_iteration()
        assert np.allclose(mdp.evaluate(greedy(q)), v) and round(float(v[0]), 5) == 0.59049
        from rlsec.verify import Model, check, certified_radius
        m = Model.from_env("FrozenLake-v1")
        chain = m.chain(np.full((16, 4), 0.25))
        # certification by bound propagation needs no Storm either
        from rlsec.policies import from_torch
        lin = torch.nn.Linear(2, 2)
        with torch.no_grad():
            lin.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0]])); lin.bias.zero_()
        p = from_torch(lin, gym.spaces.Box(-9, 9, (2,)), gym.spaces.Discrete(2))
        r = certified_radius(p, np.array([[0.5, 0.5]], dtype=np.float32), eps_max=2.0, tol=1e-4)
        assert abs(float(r[0]) - 0.5) < 1e-3
        from rlsec.errors import MissingDependency
        try:
            check(chain, 'P=? [F "goal"]')
        except MissingDependency as exc:
            print("hint:", exc)
        assert "stormpy" not in sys.modules
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "hint: the Storm model checker (stormpy) is not installed" in proc.stdout
    assert "pip install 'rlsec[storm]'" in proc.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["verify", "--policy", "zoo:frozenlake-ppo", "--env", "FrozenLake-v1",
         "--property", 'P=? [F "goal"]'],
        ["verify", "--prism", "model.pm", "--property", 'P=? [F "goal"]'],
        ["shield", "--env", "FrozenLake-v1", "--out", "shield.json"],
    ],
)  # fmt: skip
def test_the_storm_commands_give_the_install_hint_and_exit_code_2(
    args: list[str], tmp_path: Path
) -> None:
    (tmp_path / "model.pm").write_text("dtmc\n")
    proc = _without_storm("from rlsec.cli import main\nmain()\n", *args, cwd=tmp_path)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    text = " ".join(proc.stderr.split())
    assert "error: the Storm model checker (stormpy) is not installed" in text
    assert "pip install 'rlsec[storm]'" in text and "Traceback" not in proc.stderr
    assert not (tmp_path / "shield.json").exists()


@pytest.mark.slow
def test_redteam_runs_without_stormpy(tmp_path: Path) -> None:
    proc = _without_storm(
        "from rlsec.cli import main\nmain()\n",
        "redteam", "--episodes", "2", "--attacks", "uniform-obs-v1", "--eps", "0.1",
        "--num-envs", "2", "--out", str(tmp_path / "out"),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out" / "results.json").exists()


def _requirement_names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=!\[ ;]", r, maxsplit=1)[0].lower() for r in reqs}


def test_stormpy_is_an_extra_and_not_a_base_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "stormpy" not in _requirement_names(project["dependencies"])
    extras = project["optional-dependencies"]
    assert _requirement_names(extras["storm"]) == {"stormpy"}
    assert "stormpy" in _requirement_names(extras["dev"])  # the tests run Storm in CI
    assert project["license"] == {"text": "Apache-2.0"}
    assert (ROOT / "LICENSE").read_text().split()[:3] == ["Apache", "License", "Version"]


def test_the_readme_gives_the_licence_of_every_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Licences\n", 1)[1].split("\n## ", 1)[0]
    rows = {
        m.group(1).lower(): m.group(2)
        for m in re.finditer(r"^\| `([^`]+)` \| [^|]* \| ([^|]+) \|", section, re.M)
    }
    names = _requirement_names(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        names |= _requirement_names(extra)
    assert names <= set(rows), f"missing from the README's licence table: {names - set(rows)}"
    assert "GPL-3.0" in rows["stormpy"]
    assert not any("GPL" in rows[n] and "LGPL" not in rows[n] for n in rows if n != "stormpy")
