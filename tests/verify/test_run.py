"""`rlsec verify` and `rlsec certify`: the JSON contract, PRISM files, exit codes, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rlsec.errors import ConfigError, ModelError
from rlsec.policies import load_policy
from rlsec.verify.attack import Strategy
from rlsec.verify.run import certify, verify

PRISM = """dtmc
module plant
  s : [0..3] init 0;
  [] s=0 -> 0.7:(s'=1) + 0.3:(s'=2);
  [] s=1 -> 0.9:(s'=3) + 0.1:(s'=2);
  [] s>=2 -> (s'=s);
endmodule
label "unsafe" = s=2;
label "goal" = s=3;
"""


def rlsec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rlsec", *args],
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_verify_json_contract_and_exit_code_on_a_violated_bound(tmp_path: Path) -> None:
    out = tmp_path / "v.json"
    proc = rlsec(
        "verify",
        "--policy",
        "zoo:frozenlake-ppo",
        "--env",
        "FrozenLake-v1",
        "--property",
        'P<=0.1 [F "hole"]',
        "--json",
        str(out),
    )
    assert proc.returncode == 1, proc.stderr  # violated: non-zero, for CI gates
    doc = json.loads(out.read_text())
    assert doc["result"] is False and doc["states"] == 16 and doc["attack"] is None
    assert set(doc["seconds"]) == {"query", "build", "check"}
    assert doc["policy"]["sha256"] == load_policy("zoo:frozenlake-ppo").info.sha256
    path = doc["counterexample"]["path"]
    assert path[0]["name"].startswith("S") and path[-1]["name"].startswith("H")
    assert "most probable path into 'hole'" in proc.stdout


def test_verify_under_attack_writes_a_replayable_strategy(tmp_path: Path) -> None:
    doc = verify(
        prop='Pmax=? [F "unsafe"]',
        policy="zoo:plant-ppo",
        env_id="rlsec/SlipperyPlant-v0",
        attack_radius=0.05,
        strategy_out=tmp_path / "s.json",
    )
    clean = verify(prop='P=? [F "unsafe"]', policy="zoo:plant-ppo", env_id="rlsec/SlipperyPlant-v0")
    assert doc["attack"]["radius"] == 0.05 and doc["attack"]["choices"] == "crown"
    assert doc["result"] >= clean["result"]
    strategy = Strategy.load(tmp_path / "s.json")
    assert strategy.bound == doc["result"] and strategy.policy_sha256 == doc["policy"]["sha256"]
    with pytest.raises(ModelError, match="say Pmax"):
        verify(
            prop='P=? [F "unsafe"]',
            policy="zoo:plant-ppo",
            env_id="rlsec/SlipperyPlant-v0",
            attack_radius=0.05,
        )
    # bounded properties are checked under attack too (only a strategy needs an unbounded one)
    horizon = verify(
        prop='R{"reward"}min=? [C<=128]',
        policy="zoo:plant-ppo",
        env_id="rlsec/SlipperyPlant-v0",
        attack_radius=0.05,
    )
    calm = verify(
        prop='R{"reward"}=? [C<=128]', policy="zoo:plant-ppo", env_id="rlsec/SlipperyPlant-v0"
    )
    assert horizon["result"] < calm["result"] and "strategy" not in horizon["attack"]
    with pytest.raises(ModelError, match="no strategy"):
        verify(
            prop='R{"reward"}min=? [C<=128]',
            policy="zoo:plant-ppo",
            env_id="rlsec/SlipperyPlant-v0",
            attack_radius=0.05,
            strategy_out=tmp_path / "t.json",
        )


def test_prism_files_are_checked_and_their_errors_located(tmp_path: Path) -> None:
    good = tmp_path / "plant.pm"
    good.write_text(PRISM)
    doc = verify(prop='P=? [F "unsafe"]', prism=good)
    assert doc["result"] == pytest.approx(0.3 + 0.7 * 0.1, abs=1e-12)
    assert doc["states"] == 4 and doc["model"]["type"] == "DTMC"
    assert verify(prop="P=? [F s=3]", prism=good)["result"] == pytest.approx(0.63, abs=1e-12)
    bad = tmp_path / "bad.pm"
    bad.write_text(PRISM.replace("init 0;", "init 0"))
    with pytest.raises(ModelError, match=r"4:3"):  # the line and column of the problem
        verify(prop='P=? [F "unsafe"]', prism=bad)
    with pytest.raises(ModelError, match="unknown label 'unsfe' at column 8"):
        verify(prop='P=? [F "unsfe"]', prism=good)
    with pytest.raises(ConfigError, match="checked as written"):
        verify(prop='P=? [F "unsafe"]', prism=good, policy="zoo:frozenlake-ppo")
    with pytest.raises(ConfigError, match="exactly one of"):
        verify(prop='P=? [F "unsafe"]')


def test_certify_contract_and_soundness_against_pgd(tmp_path: Path) -> None:
    doc = certify(policy="zoo:cartpole-ppo", env_id="CartPole-v1", states=200, eps=[0.05, 0.1])
    assert doc["method"] == "crown" and doc["eps_unit"] == "std" and len(doc["states"]) == 200
    radii = np.array([s["radius"] for s in doc["states"]])
    assert doc["certified_fraction"]["0.05"] == pytest.approx(np.mean(radii >= 0.05))
    assert doc["certified_fraction"]["0.05"] >= doc["certified_fraction"]["0.1"]
    assert doc["policy"]["sha256"] == load_policy("zoo:cartpole-ppo").info.sha256
    out = tmp_path / "c.json"
    proc = rlsec(
        "certify", "--policy", "zoo:cartpole-ppo", "--env", "CartPole-v1", "--states", "50",
        "--method", "ibp", "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ibp = json.loads(out.read_text())
    assert ibp["method"] == "ibp" and len(ibp["states"]) == 50
    with pytest.raises(ConfigError, match="Box"):
        certify(policy="zoo:frozenlake-ppo", env_id="FrozenLake-v1", states=10)
    with pytest.raises(ConfigError, match="method must be one of"):
        certify(policy="zoo:cartpole-ppo", env_id="CartPole-v1", method="lipschitz")


def test_certify_with_smoothing_reports_l2_radii() -> None:
    doc = certify(
        policy="zoo:cartpole-ppo",
        env_id="CartPole-v1",
        states=20,
        method="smoothing",
        sigma=0.25,
        samples=200,
    )
    assert doc["norm"] == "l2" and doc["sigma"] == 0.25
    radii = np.array([s["radius"] for s in doc["states"]])
    assert np.all(radii >= 0) and np.all(radii <= 0.25 * 4)  # Phi^-1(1 - 1e-3) < 4


def test_shield_command_writes_loadable_safe_action_sets(tmp_path: Path) -> None:
    from rlsec.verify.shield import SafeActions

    out = tmp_path / "shield.json"
    proc = rlsec("shield", "--env", "FrozenLake-v1", "--label", "hole", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    shield = SafeActions.load(out)
    assert shield.label == "hole" and shield.allowed.shape == (16, 4)
    proc = rlsec("shield", "--env", "FrozenLake-v1", "--label", "hol", "--out", str(out))
    assert proc.returncode == 2 and "unknown label 'hol'" in proc.stderr


# -- the yardstick of std units -----------------------------------------------------------------
def _stats(policy: Any, stats: Any) -> Any:
    import dataclasses

    policy.info = dataclasses.replace(policy.info, observation_stats=stats)
    return policy


@pytest.mark.parametrize("method", ["crown", "ibp"])
def test_a_spec_std_of_1e_30_does_not_inflate_its_certificate(method: str) -> None:
    kw: dict[str, Any] = {"env_id": "CartPole-v1", "states": 50, "method": method, "eps": [0.05]}
    honest = certify(policy=load_policy("zoo:cartpole-ppo"), **kw)
    liar = load_policy("zoo:cartpole-ppo")
    _stats(liar, {**liar.info.observation_stats, "std": [1e-30] * 4})
    lied = certify(policy=liar, **kw)
    assert honest["findings"] == []
    assert honest["scale_source"].startswith("policy spec (clean observation std)")
    assert [f["detector"] for f in lied["findings"]] == ["eps-scale-check"]
    assert "the policy spec's std was not used" in lied["scale_source"]
    # radii measured with the honest yardstick: within the 2x the check allows, not 1e29x
    h = np.array([s["radius"] for s in honest["states"]])
    lr = np.array([s["radius"] for s in lied["states"]])
    assert np.all(lr <= 2 * h + 1e-3) and np.all(lr >= h / 2 - 1e-3)


def test_certify_in_std_units_measures_the_std_when_the_spec_records_none() -> None:
    bare = _stats(load_policy("zoo:cartpole-ppo"), None)
    doc = certify(policy=bare, env_id="CartPole-v1", states=20, eps=[0.05])
    assert doc["findings"] == []
    assert doc["scale_source"].startswith("the calibration rollout (20 clean episodes")
