from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


def rlsec(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "rlsec", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_redteam_writes_results_and_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = rlsec(
        "redteam",
        "--policy",
        "zoo:cartpole-dqn",
        "--attacks",
        "uniform-obs-v1,pgd-obs-v1,pr-adv-act-v1",
        "--eps",
        "0.05,0.2",
        "--alpha",
        "0.3",
        "--episodes",
        "3",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert [r["attack"] for r in results["results"]] == [
        "uniform-obs-v1",
        "uniform-obs-v1",
        "pgd-obs-v1",
        "pgd-obs-v1",
        "pr-adv-act-v1",
    ]
    html = (out / "report.html").read_text()
    assert "pgd-obs-v1" in html
    assert results["policy"]["sha256"] in html
    assert "pgd-obs-v1" in proc.stdout
    assert "worst" in proc.stdout.lower()
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "results.json"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "NoSuchEnv-v0"], "unknown environment id 'NoSuchEnv-v0'"),
        (["--attacks", "pgd-obs-v9"], "did you mean pgd-obs-v1"),
        (["--eps", "-0.5"], "got -0.5"),
        (["--eps", "abc"], "expected comma-separated numbers"),
        (["--eps-unit", "furlongs"], "expected raw or std"),
        (["--env", "Pendulum-v1"], "expected Box(shape=(3,)"),
        (["--policy", "zoo:nope"], "unknown zoo policy 'nope'"),
    ],
)
def test_bad_input_fails_clearly_and_writes_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    proc = rlsec("redteam", *args, "--episodes", "1", "--out", str(out), cwd=tmp_path)
    assert proc.returncode != 0
    assert message in " ".join((proc.stderr + proc.stdout).split())
    assert not out.exists()
    assert "Traceback" not in proc.stderr


def _sb3_archive(path: Path) -> None:
    from stable_baselines3 import PPO

    PPO(
        "MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16, policy_kwargs={"net_arch": [8]}
    ).save(path)


def test_sb3_archive_needs_env_and_runs_with_it(tmp_path: Path) -> None:
    archive = tmp_path / "model.zip"
    _sb3_archive(archive)
    out = tmp_path / "out"
    proc = rlsec("redteam", "--policy", str(archive), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 2
    assert "--env" in proc.stderr
    assert not out.exists()
    proc = rlsec(
        "redteam",
        "--policy",
        str(archive),
        "--env",
        "CartPole-v1",
        "--attacks",
        "fgsm-obs-v1",
        "--eps",
        "0.1",
        "--episodes",
        "2",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "results.json").read_text())["policy"]["format"] == "sb3"


def test_corrupted_archive_is_a_clear_error(tmp_path: Path) -> None:
    archive = tmp_path / "model.zip"
    _sb3_archive(archive)
    buf = io.BytesIO()
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            dst.writestr(info.filename, b"{not json" if info.filename == "data" else data)
    archive.write_bytes(buf.getvalue())
    out = tmp_path / "out"
    proc = rlsec(
        "redteam", "--policy", str(archive), "--env", "CartPole-v1", "--out", str(out), cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "'data' is not valid JSON" in proc.stderr
    assert not out.exists()


def test_an_unwritable_out_fails_before_running(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    proc = rlsec("redteam", "--out", str(afile), cwd=tmp_path)
    assert proc.returncode == 2 and "must be a directory" in proc.stderr
    assert afile.read_text() == "keep me"


def test_truncated_archive_says_so(tmp_path: Path) -> None:
    archive = tmp_path / "model.zip"
    _sb3_archive(archive)
    archive.write_bytes(archive.read_bytes()[: len(archive.read_bytes()) // 2])
    proc = rlsec("redteam", "--policy", str(archive), "--env", "CartPole-v1", cwd=tmp_path)
    assert proc.returncode == 2
    assert "truncated or corrupt" in proc.stderr or "not a zip" in proc.stderr.lower()


def test_listing_commands(tmp_path: Path) -> None:
    proc = rlsec("attacks", cwd=tmp_path)
    assert proc.returncode == 0
    assert "sa-rl-obs-v1" in proc.stdout
    assert "AML.T0043" in proc.stdout
    proc = rlsec("zoo", cwd=tmp_path)
    assert proc.returncode == 0
    assert "zoo:pendulum-sac" in proc.stdout


def test_verify_then_redteam_replays_the_attackers_strategy(tmp_path: Path) -> None:
    proc = rlsec(
        "verify",
        "--policy",
        "zoo:frozenlake-ppo",
        "--env",
        "FrozenLake-v1",
        "--property",
        'Pmin=? [F "goal"]',
        "--attack-radius",
        "1",
        "--strategy",
        "s.json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    proc = rlsec(
        "redteam",
        "--policy",
        "zoo:frozenlake-ppo",
        "--strategy",
        "s.json",
        "--alpha",
        "0.1",
        "--episodes",
        "40",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    rows = {r["attack"]: r for r in results["results"]}
    replay = rows["strategy-obs-v1"]
    assert (replay["epsilon"], replay["norm"], replay["unit"]) == (1.0, "index", "raw")
    assert replay["params"]["strategy"]["property"] == 'Pmin=? [F "goal"]'
    assert replay["mean_return"] <= replay["params"]["strategy"]["bound"] + 0.15
    assert results["config"]["attack_params"] == {"strategy-obs-v1": {"strategy": "s.json"}}
    assert "strategy-obs-v1" in proc.stdout
    # a strategy in standard-deviation units, or a file that is not one, is refused clearly
    bad = rlsec("redteam", "--strategy", "s.json", "--eps-unit", "std", cwd=tmp_path)
    assert bad.returncode != 0 and "raw units" in bad.stderr
    (tmp_path / "x.json").write_text("{}")
    bad = rlsec("redteam", "--policy", "zoo:frozenlake-ppo", "--strategy", "x.json", cwd=tmp_path)
    assert bad.returncode != 0 and "not an attack strategy file" in bad.stderr


def test_train_writes_a_policy_that_redteam_accepts(tmp_path: Path) -> None:
    run = rlsec(
        "train",
        "--algo",
        "ppo",
        "--env",
        "CartPole-v1",
        "--steps",
        "256",
        "--defense",
        "sa-reg",
        "--eps",
        "0.05",
        "--out",
        "trained",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "clean return" in run.stdout
    # 256 steps cannot reach the recipe's vanilla 500: the output says so plainly
    said = " ".join(run.stdout.split())
    assert "warning: the defense sa-reg at ε = 0.05 (raw) did not keep the clean return" in said
    for name in (
        "policy/spec.json",
        "policy/weights.safetensors",
        "train_log.jsonl",
        "training.json",
        "checkpoints/LATEST",
    ):
        assert (tmp_path / "trained" / name).is_file(), name
    red = rlsec(
        "redteam",
        "--policy",
        "trained/policy",
        "--attacks",
        "pgd-obs-v1",
        "--eps",
        "0.05",
        "--eps-unit",
        "raw",
        "--episodes",
        "2",
        "--alpha",
        "0.1",
        "--out",
        "rt",
        cwd=tmp_path,
    )
    assert red.returncode == 0, red.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--algo", "dqn", "--env", "Pendulum-v1"], "dqn needs a Discrete action space"),
        (["--algo", "ppo", "--env", "CartPole-v1", "--defense", "atla"], "needs a budget"),
        (["--algo", "ppo", "--env", "Nope-v0"], "unknown environment id"),
        (["--algo", "ppo", "--env", "CartPole-v1", "--eps", "-1"], "eps must be"),
    ],
)
def test_train_bad_input_fails_clearly_and_writes_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    run = rlsec("train", *args, "--out", "x", cwd=tmp_path)
    assert run.returncode == 2
    assert message in " ".join(run.stderr.split())
    assert not (tmp_path / "x").exists()


def test_poison_trains_clean_and_poisoned_and_writes_the_results_contract(tmp_path: Path) -> None:
    run = rlsec(
        "poison",
        "--attack",
        "flip-reward-v1",
        "--eps",
        "2",
        "--budget",
        "0.3",
        "--algo",
        "ppo",
        "--env",
        "CartPole-v1",
        "--steps",
        "2048",
        "--episodes",
        "4",
        "--out",
        "p",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    results = json.loads((tmp_path / "p" / "results.json").read_text())
    assert results["kind"] == "poison"
    row = results["results"][0]
    assert row["surface"] == "reward"
    assert row["attack"] == "flip-reward-v1"
    assert 0.2 < row["budget_used"]["poisoned_fraction"] <= 0.3
    assert row["integrity"]["detected"] is True  # flipped CartPole rewards are outliers
    for key in ("clean", "worst_case", "eps50", "config"):
        assert key in results
    assert (tmp_path / "p" / "reference" / "policy" / "spec.json").is_file()
    assert (tmp_path / "p" / "poisoned" / "findings.jsonl").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--attack", "flip-reward-v9", "--eps", "2"], "unknown training-time attack"),
        (["--attack", "flip-reward-v1", "--eps", "-1"], "epsilon"),
        (["--attack", "flip-reward-v1", "--eps", "2", "--budget", "2"], "step_budget"),
    ],
)
def test_poison_bad_input_fails_clearly_and_writes_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    run = rlsec(
        "poison", *args, "--algo", "ppo", "--env", "CartPole-v1", "--out", "x", cwd=tmp_path
    )
    assert run.returncode == 2, run.stderr
    assert message in " ".join(run.stderr.split())
    assert not (tmp_path / "x").exists()
