"""The trainer: validation before anything is written, outputs, checkpoints, defenses wired."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlsec.defenses import TrainConfig, train_policy
from rlsec.errors import ConfigError, UnknownEnv
from rlsec.policies import load_policy

TINY: dict[str, Any] = {"eval_episodes": 2}
PPO_TINY = {"n_steps": 64, "batch_size": 64, "n_epochs": 2}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"algo": "trpo", "env_id": "CartPole-v1"}, "algo must be one of"),
        ({"algo": "ppo", "env_id": "CartPole-v1", "defense": "magic"}, "defense must be one of"),
        ({"algo": "ppo", "env_id": "CartPole-v1", "defense": "sa-reg"}, "needs a budget"),
        ({"algo": "ppo", "env_id": "CartPole-v1", "eps": -0.1}, "eps must be"),
        ({"algo": "ppo", "env_id": "CartPole-v1", "eps": float("nan")}, "eps must be"),
        ({"algo": "dqn", "env_id": "Pendulum-v1"}, "dqn needs a Discrete action space"),
        ({"algo": "sac", "env_id": "CartPole-v1"}, "sac needs a Box action space"),
        (
            {"algo": "ppo", "env_id": "FrozenLake-v1", "defense": "adv", "eps": 0.1},
            "perturbs continuous observations",
        ),
        ({"algo": "ppo", "env_id": "CartPole-v1", "steps": 0}, "steps must be >= 1, got 0"),
        ({"algo": "ppo", "env_id": "CartPole-v1", "adv_prob": 1.5}, "adv_prob must be"),
        (
            {
                "algo": "ppo",
                "env_id": "CartPole-v1",
                "defense": "adv",
                "eps": 0.1,
                "attack": "sa-rl-obs-v1",
            },
            "use defense 'atla'",
        ),
        (
            {
                "algo": "ppo",
                "env_id": "CartPole-v1",
                "defense": "adv",
                "eps": 0.1,
                "attack": "pr-random-act-v1",
            },
            "observation attack",
        ),
        ({"algo": "ppo", "env_id": "CartPole-v1", "scale": (1.0, 2.0)}, "scale must be 4"),
        ({"algo": "ppo", "env_id": "CartPole-v1", "select": "last"}, "select must be one of"),
        ({"algo": "ppo", "env_id": "CartPole-v1", "select_episodes": 0}, "select_episodes"),
        ({"algo": "ppo", "env_id": "CartPole-v1", "select": "robust"}, "it needs a defense"),
        ({"algo": "dqn", "env_id": "CartPole-v1", "margin": -1.0}, "margin must be"),
    ],
)
def test_bad_configs_are_refused_before_anything_is_written(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        train_policy(TrainConfig(**kwargs), out)
    assert not out.exists()


def test_unknown_env_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnknownEnv, match="CartPole-v1"):
        train_policy(TrainConfig(algo="ppo", env_id="CartPole-v9"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_existing_output_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an empty directory"):
        train_policy(TrainConfig(algo="ppo", env_id="CartPole-v1", steps=64), tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def _run(tmp_path: Path, name: str, **kw: Any) -> Path:
    hp = kw.pop("hyperparameters", PPO_TINY)
    kw.setdefault("n_envs", 2)  # with n_steps 64: 128 steps per rollout
    cfg = TrainConfig(
        algo=kw.pop("algo", "ppo"),
        env_id=kw.pop("env_id", "CartPole-v1"),
        hyperparameters=hp,
        **TINY,
        **kw,
    )
    train_policy(cfg, tmp_path / name)
    return tmp_path / name


def test_a_run_writes_a_loadable_policy_log_summary_and_checkpoints(tmp_path: Path) -> None:
    out = _run(tmp_path, "ppo", steps=256, checkpoint_every=128)
    policy = load_policy(out / "policy")
    assert policy.info.env_id == "CartPole-v1"
    assert policy.info.algo == "ppo"
    assert policy.info.clean_return is not None
    assert policy.info.clean_return["episodes"] == 2
    assert policy.info.provenance["config"]["steps"] == 256
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log and log[-1]["timesteps"] == 256
    assert "train/approx_kl" in log[-1]
    summary = json.loads((out / "training.json").read_text())
    assert summary["policy_sha256"] == policy.info.sha256
    latest = (out / "checkpoints" / "LATEST").read_text().strip()
    assert latest == "step-000000256"
    assert len(list((out / "checkpoints").glob("step-*"))) == 2  # the newest two are kept
    ckpt = load_policy(out / "checkpoints" / latest)
    obs = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    assert np.array_equal(ckpt.act(obs), policy.act(obs))


@pytest.mark.parametrize("rule", ["best", "robust"])
def test_best_selection_exports_the_best_checkpoint_trained_at_the_full_budget(
    tmp_path: Path, rule: str
) -> None:
    """Only checkpoints at the full ε compete; the highest validation score wins (ties to the
    later); it is kept on disk, named by BEST, exported, and recorded with every score.
    ``robust`` scores by the lower of the clean and the attacked validation return."""
    out = _run(
        tmp_path,
        rule,
        steps=768,
        checkpoint_every=128,
        defense="sa-reg",
        eps=0.05,
        eps_ramp=0.5,
        kappa=0.01,
        attack_steps=2,
        select=rule,
        select_episodes=3,
    )
    summary = json.loads((out / "training.json").read_text())
    chosen = summary["selection"]
    assert chosen["rule"] == rule
    steps = [s["step"] for s in chosen["scores"]]
    assert steps == [384, 512, 640, 768]  # the ramp reaches ε at step 384 (0.5 x 768)
    scores = [s["mean_return"] for s in chosen["scores"]]
    if rule == "robust":
        attacked = [s["attacked_return"] for s in chosen["scores"]]
        assert all(0 < a <= 500 for a in attacked)
        scores = [min(c, a) for c, a in zip(scores, attacked, strict=True)]
    best = max(scores)
    assert chosen["step"] == max(s for s, r in zip(steps, scores, strict=True) if r == best)
    name = f"step-{chosen['step']:09d}"
    assert (out / "checkpoints" / "BEST").read_text().strip() == name
    policy = load_policy(out / "policy")
    kept = load_policy(out / "checkpoints" / name)
    obs = np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32)
    assert np.array_equal(kept.act(obs), policy.act(obs))
    assert policy.info.provenance["selection"] == chosen
    # the validation episodes are not the ones the exported clean return is measured on
    assert chosen["seed"] >= policy.info.clean_return["seed"] + policy.info.clean_return["episodes"]


def test_final_selection_exports_the_last_policy(tmp_path: Path) -> None:
    out = _run(tmp_path, "final", steps=256, checkpoint_every=128, select="final")
    summary = json.loads((out / "training.json").read_text())
    assert summary["selection"] == {"rule": "final", "step": 256}
    assert not (out / "checkpoints" / "BEST").exists()
    last = load_policy(out / "checkpoints" / "step-000000256")
    obs = np.random.default_rng(2).normal(size=(64, 4)).astype(np.float32)
    assert np.array_equal(last.act(obs), load_policy(out / "policy").act(obs))


def test_the_dqn_cartpole_recipe_selects_the_best_checkpoint() -> None:
    assert TrainConfig(algo="dqn", env_id="CartPole-v1").validated().select == "best"
    assert TrainConfig(algo="ppo", env_id="CartPole-v1").validated().select == "final"
    assert TrainConfig(algo="dqn", env_id="CartPole-v1", select="final").validated().select == (
        "final"
    )


def _weights(out: Path) -> list[torch.Tensor]:
    p = load_policy(out / "policy")
    return [t.clone() for t in p.torch_module().state_dict().values()]


def test_sa_reg_changes_training_only_through_its_term(tmp_path: Path) -> None:
    """With κ = 0 the hooks are attached but add nothing: weights equal vanilla training's,
    bit for bit. With κ > 0 the term's gradient reaches the optimiser and they differ."""
    base = _weights(_run(tmp_path, "none", steps=128, seed=3))
    zero = _weights(_run(tmp_path, "k0", steps=128, seed=3, defense="sa-reg", eps=0.1, kappa=0.0))
    reg = _weights(
        _run(tmp_path, "k1", steps=128, seed=3, defense="sa-reg", eps=0.1, kappa=1.0, eps_ramp=0.0)
    )
    assert all(torch.equal(a, b) for a, b in zip(base, zero, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(base, reg, strict=True))
    log = [json.loads(x) for x in (tmp_path / "k1" / "train_log.jsonl").read_text().splitlines()]
    assert any((row.get("rlsec/sa_reg") or 0) > 0 for row in log)


@pytest.mark.parametrize(
    ("algo", "env_id", "hp"),
    [
        ("dqn", "CartPole-v1", {"learning_starts": 32, "train_freq": 16, "gradient_steps": 4}),
        ("sac", "Pendulum-v1", {"learning_starts": 32, "train_freq": 16, "gradient_steps": 2}),
    ],
)
def test_sa_reg_runs_for_off_policy_learners(
    tmp_path: Path, algo: str, env_id: str, hp: dict[str, Any]
) -> None:
    out = _run(
        tmp_path,
        algo,
        algo=algo,
        env_id=env_id,
        hyperparameters=hp,
        steps=200,
        defense="sa-reg",
        eps=0.1,
        eps_ramp=0.0,
    )
    summary = json.loads((out / "training.json").read_text())
    assert summary["config"]["defense"] == "sa-reg"
    assert load_policy(out / "policy").info.algo == algo


@pytest.mark.parametrize("defense", ["adv", "atla"])
def test_adversarial_defenses_attack_the_stated_fraction_of_steps(
    tmp_path: Path, defense: str
) -> None:
    out = _run(
        tmp_path,
        defense,
        steps=512,
        defense=defense,
        eps=0.1,
        eps_ramp=0.0,
        adv_prob=0.5,
        atla_phases=2,
        adversary_steps=256,
        attack_steps=2,
    )
    stats = json.loads((out / "training.json").read_text())["defense"]
    frac = stats["attacked_steps"] / stats["observed_steps"]
    assert 0.4 < frac < 0.6
    if defense == "atla":
        assert stats["adversary_steps"] >= 256


class _Poison(gym.ObservationWrapper[Any, Any, Any]):
    """Emits a non-finite observation from step ``at`` on."""

    def __init__(self, env: gym.Env[Any, Any], at: int) -> None:
        super().__init__(env)
        self.t, self.at = 0, at

    def observation(self, observation: Any) -> Any:
        self.t += 1
        return observation * np.nan if self.t >= self.at else observation


def test_a_high_integrity_finding_stops_training_and_writes_no_policy(tmp_path: Path) -> None:
    from rlsec.errors import IntegrityViolation

    out = tmp_path / "run"
    cfg = TrainConfig(
        algo="ppo", env_id="CartPole-v1", steps=512, n_envs=1, hyperparameters=PPO_TINY, **TINY
    )
    with pytest.raises(IntegrityViolation, match="non-finite observation"):
        train_policy(cfg, out, wrap_env=lambda env: _Poison(env, at=100))
    assert not (out / "policy").exists()
    rows = [json.loads(x) for x in (out / "findings.jsonl").read_text().splitlines()]
    assert rows[0]["severity"] == "high"
    assert rows[0]["timesteps"] <= 101


def test_wrap_env_and_callbacks_reach_the_learner(tmp_path: Path) -> None:
    from stable_baselines3.common.callbacks import BaseCallback

    seen: list[int] = []

    class Count(BaseCallback):
        def _on_step(self) -> bool:
            seen.append(self.num_timesteps)
            return True

    wrapped: list[gym.Env[Any, Any]] = []

    def wrap(env: gym.Env[Any, Any]) -> gym.Env[Any, Any]:
        wrapped.append(env)
        return env

    cfg = TrainConfig(
        algo="ppo", env_id="CartPole-v1", steps=128, n_envs=2, hyperparameters=PPO_TINY, **TINY
    )
    result = train_policy(cfg, tmp_path / "cb", wrap_env=wrap, callbacks=[Count()])
    assert len(wrapped) == 2
    assert seen[-1] == 128
    summary = json.loads(result.summary.read_text())
    assert summary["monitor"]["findings"] == 0


def test_pointer_and_summary_files_never_write_through_a_link_at_their_old_temporary_name(
    tmp_path: Path,
) -> None:
    from rlsec.defenses.training import _point, _write_json

    victim = tmp_path / "victim"
    victim.write_text("keep")
    for name in (".LATEST.tmp", ".training.json.tmp", "BEST"):
        (tmp_path / name).symlink_to(victim)
    _point(tmp_path / "LATEST", "step-000000010")
    _point(tmp_path / "BEST", "step-000000010")
    _write_json(tmp_path / "training.json", {"ok": True})
    assert victim.read_text() == "keep"
    assert (tmp_path / "LATEST").read_text() == "step-000000010\n"
    assert not (tmp_path / "BEST").is_symlink()
    assert json.loads((tmp_path / "training.json").read_text()) == {"ok": True}


def test_the_unsafe_env_flag_is_recorded_with_the_config() -> None:
    assert TrainConfig(algo="ppo", env_id="CartPole-v1").to_dict()["unsafe_no_sandbox"] is False
    with pytest.raises(ConfigError, match="steps must be at most 1,000,000,000"):
        TrainConfig(algo="ppo", env_id="CartPole-v1", steps=10**12).validated()
