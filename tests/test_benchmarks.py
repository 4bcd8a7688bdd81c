"""The benchmarks' own bookkeeping: cached runs are reused only under the same key and say so;
the throughput baseline does the campaign's work per step."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rt() -> ModuleType:
    return _load("robust_training")


VERSIONS = {"rlsec": "0", "rlsec_source_sha256": "a" * 64}


def _digest(rt: ModuleType, **kw: Any) -> str:
    args: dict[str, Any] = {
        "task": "cartpole-ppo",
        "defense": "sa-reg",
        "eps": 0.05,
        "seed": 0,
        "smoke": True,
    }
    versions = kw.pop("versions", VERSIONS)
    args.update(kw)
    return str(rt.digest(rt.train_key(rt.train_config(**args), versions)))


def test_cached_training_is_keyed_by_every_setting_that_changes_a_number(rt: ModuleType) -> None:
    base = _digest(rt)
    changed = {
        "eps": _digest(rt, eps=0.2),
        "seed": _digest(rt, seed=1),
        "defense": _digest(rt, defense="adv"),
        "steps": _digest(rt, smoke=False),
        "task": _digest(rt, task="cartpole-dqn"),
        "code": _digest(rt, versions={**VERSIONS, "rlsec_source_sha256": "b" * 64}),
        "version": _digest(rt, versions={**VERSIONS, "rlsec": "1"}),
    }
    assert all(d != base for d in changed.values()), changed
    assert len(set(changed.values())) == len(changed)
    assert _digest(rt) == base  # and stable


def test_cached_training_is_keyed_by_the_per_task_options(
    rt: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = _digest(rt, task="cartpole-dqn", defense="adv")
    monkeypatch.setitem(rt.OPTIONS, ("cartpole-dqn", "adv"), {"attack": "pgd-obs-v1"})
    assert _digest(rt, task="cartpole-dqn", defense="adv") != base


def test_cached_red_team_is_keyed_by_attacks_budget_and_episodes(rt: ModuleType) -> None:
    base = rt.digest(rt.redteam_key("t", ["pgd-obs-v1"], 0.05, 20))
    for other in (
        rt.redteam_key("u", ["pgd-obs-v1"], 0.05, 20),
        rt.redteam_key("t", ["pgd-obs-v1", "mad-obs-v1"], 0.05, 20),
        rt.redteam_key("t", ["pgd-obs-v1"], 0.1, 20),
        rt.redteam_key("t", ["pgd-obs-v1"], 0.05, 50),
    ):
        assert rt.digest(other) != base


def test_vanilla_control_differs_from_adversarial_training_only_in_perturbing_nothing(
    rt: ModuleType,
) -> None:
    control = rt.train_config("cartpole-dqn", "none-robust-select", 0.05, 0, False)
    adv = rt.train_config("cartpole-dqn", "adv", 0.05, 0, False)
    assert control.adv_prob == 0.0  # the learner never sees a perturbed observation
    assert (control.select, control.attack, control.eps) == ("robust", "mad-obs-v1", 0.05)
    c, a = control.to_dict(), adv.to_dict()
    assert {k for k in c if c[k] != a[k]} == {"adv_prob"}


def _fakes(rt: ModuleType, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls = {"train": 0, "redteam": 0}

    def train_policy(cfg: Any, out: Path) -> None:
        calls["train"] += 1
        (out / "policy").mkdir(parents=True)
        (out / "training.json").write_text(json.dumps({"seconds": 1.0}))

    def redteam(policy: str, *, out: Path, attacks: list[str], **_: Any) -> None:
        calls["redteam"] += 1
        out.mkdir(parents=True)
        results = [{"attack": a, "mean_return": 100.0 + i} for i, a in enumerate(attacks)]
        body = {"clean": {"mean_return": 500.0}, "results": results}
        (out / "results.json").write_text(json.dumps(body))

    monkeypatch.setattr(rt, "train_policy", train_policy)
    monkeypatch.setattr(rt, "redteam", redteam)
    return calls


def test_a_reused_run_is_marked_and_a_changed_key_runs_again(
    rt: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = _fakes(rt, monkeypatch)
    args: dict[str, Any] = {"episodes": 3, "smoke": True, "attacks": ["pgd-obs-v1"]}
    first = rt.run_one("cartpole-ppo", "none", 0, tmp_path, versions=VERSIONS, **args)
    assert first["reused"] == {"training": False, "redteam": False}
    again = rt.run_one("cartpole-ppo", "none", 0, tmp_path, versions=VERSIONS, **args)
    assert again["reused"] == {"training": True, "redteam": True}
    assert calls == {"train": 1, "redteam": 1}
    # other attacks: the training is reused, the red team is not
    args["attacks"] = ["pgd-obs-v1", "mad-obs-v1"]
    more = rt.run_one("cartpole-ppo", "none", 0, tmp_path, versions=VERSIONS, **args)
    assert more["reused"] == {"training": True, "redteam": False}
    assert more["worst"] == 100.0
    # other code: nothing is reused
    newer = {**VERSIONS, "rlsec_source_sha256": "c" * 64}
    fresh = rt.run_one("cartpole-ppo", "none", 0, tmp_path, versions=newer, **args)
    assert fresh["reused"] == {"training": False, "redteam": False}
    assert calls == {"train": 2, "redteam": 3}
    table = rt.table([first, again])
    assert table.splitlines()[-1].endswith("| 1/2, 1/2 |")


def test_an_unfinished_or_mismatched_cached_run_is_never_reused(
    rt: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = _fakes(rt, monkeypatch)
    args: dict[str, Any] = {"episodes": 3, "smoke": True, "attacks": ["pgd-obs-v1"]}
    row = rt.run_one("cartpole-ppo", "none", 0, tmp_path, versions=VERSIONS, **args)
    key_path = Path(row["run"]) / "key.json"
    key = json.loads(key_path.read_text())
    key["config"]["seed"] = 99  # a key that is not this run's
    key_path.write_text(json.dumps(key))
    again = rt.run_one("cartpole-ppo", "none", 0, tmp_path, versions=VERSIONS, **args)
    assert again["reused"]["training"] is False
    (Path(row["run"]) / "key.json").unlink()  # interrupted before the key was written
    again = rt.run_one("cartpole-ppo", "none", 0, tmp_path, versions=VERSIONS, **args)
    assert again["reused"]["training"] is False
    assert calls["train"] == 3


def test_single_env_baseline_spends_no_forward_pass_the_campaign_avoids() -> None:
    at = _load("attack_throughput")
    from rlsec.policies import load_policy

    policy = load_policy("zoo:cartpole-ppo")
    with at.CountActs(policy) as counted:
        at.single_env_loop(policy, 20)
    assert counted.rows == 0
    assert "act" not in vars(policy)  # the counter is removed again
