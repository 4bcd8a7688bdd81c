"""Integrity monitors: hard checks, calibrated checks, rollback, and failing closed."""

from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.callbacks import BaseCallback

from helpers import GenericTestEnv
from rlsec.core import Severity, Surface
from rlsec.defenses.monitors import (
    CHECKS,
    SCORING,
    IntegrityMonitor,
    LogZ,
    Thresholds,
    calibrate,
)
from rlsec.defenses.training import shipped_thresholds
from rlsec.errors import ConfigError, IntegrityViolation

runs_of_scores = st.lists(
    st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=120), min_size=1, max_size=25
)


@settings(max_examples=80, deadline=None)
@given(runs=runs_of_scores, fpr=st.floats(0.001, 0.5), coverage=st.floats(0.05, 0.95))
def test_calibrated_threshold_keeps_enough_runs_within_the_rate(
    runs: list[list[float]], fpr: float, coverage: float
) -> None:
    t = calibrate([{"reward-outlier": xs} for xs in runs], fpr, coverage=coverage)
    limit, m = t.values["reward-outlier"], len(runs)
    assert t.runs["reward-outlier"] == m
    assert t.samples["reward-outlier"] == sum(map(len, runs))
    within = [sum(x > limit for x in xs) <= fpr * len(xs) + 1e-9 for xs in runs]
    # conformal over runs: counting a new run as one more, at least a fraction `coverage`
    # of the m + 1 keep their rate (the new one included only when the bound allows)
    k = math.ceil((m + 1) * coverage - 1e-9)
    assert sum(within) >= min(k, m)
    assert t.coverages["reward-outlier"] == (coverage if k <= m else m / (m + 1))
    # and no lower threshold among the runs' own would do: one step down breaks it
    lower = sorted({x for xs in runs for x in xs if x < limit})
    if lower:
        below = lower[-1]
        assert sum(sum(x > below for x in xs) <= fpr * len(xs) + 1e-9 for xs in runs) < min(k, m)


def test_held_out_runs_keep_the_rate_as_often_as_the_coverage_says() -> None:
    # Each run has its own level (seed-to-seed spread 1) and windows spread 0.3 around it, so
    # windows are far from exchangeable across runs; the runs are. Over 100 calibrations of
    # 20 runs, each tried on 100 new runs, the fraction of new runs whose window false-alarm
    # rate stays within fpr is between K/(m+1) and (K+1)/(m+1) (K = 19, m = 20): conformal
    # coverage, not more (the threshold is not needlessly high) and not less.
    rng = np.random.default_rng(0)

    def runs(m: int) -> list[np.ndarray]:
        return [rng.normal(rng.normal(0, 1), 0.3, 100) for _ in range(m)]

    fpr, coverage, kept = 0.01, 0.9, []
    for _ in range(100):
        t = calibrate([{"update-kl": r.tolist()} for r in runs(20)], fpr, coverage=coverage)
        kept.append(np.mean([np.mean(r > t.values["update-kl"]) <= fpr for r in runs(100)]))
    assert t.coverages["update-kl"] == coverage
    # 3 standard errors of the mean over the 100 calibrations (sd of one is about 0.08)
    assert 19 / 21 - 0.025 <= float(np.mean(kept)) <= 20 / 21 + 0.025


def test_infinite_scores_count_and_nan_scores_do_not(tmp_path: Any) -> None:
    # A zero-spread z-score is +inf and alarms against any finite threshold: dropping it
    # from calibration would leave runs with such windows far above the stated rate.
    rng = np.random.default_rng(0)
    runs = [{"reward-outlier": [*rng.normal(0, 1, 8), math.inf, math.inf]} for _ in range(20)]
    # 2 of 10 windows exceed any finite threshold: within fpr 0.25, beyond fpr 0.1
    assert calibrate(runs, 0.25, coverage=0.9).values["reward-outlier"] < math.inf
    t = calibrate(runs, 0.1, coverage=0.9)
    assert t.values["reward-outlier"] == math.inf
    t.save(tmp_path / "t.json")
    assert '"inf"' in (tmp_path / "t.json").read_text()  # strict JSON
    assert Thresholds.load(tmp_path / "t.json") == t
    nan = calibrate([{"update-kl": [1.0, math.nan, 2.0, 3.0]}], 0.25)
    assert nan.samples["update-kl"] == 3


def test_calibration_input_that_would_switch_checks_off_is_refused() -> None:
    runs = [{"update-kl": [0.1, 0.2]}] * 3
    assert calibrate((r for r in runs), 0.1).values == calibrate(runs, 0.1).values != {}
    with pytest.raises(ConfigError, match="non-empty sequence"):
        calibrate([], 0.1)
    good = {"scoring": SCORING, "values": {"update-kl": 1.0}, "fpr": 0.01, "coverage": 0.9}
    assert Thresholds.from_dict(good).values == {"update-kl": 1.0}
    for bad, why in (
        ({"values": {"update-kl": math.nan}}, "numbers or \\+inf"),
        ({"fpr": 7.0}, "fpr must be in"),
        ({"coverage": -3.0}, "coverage must be in"),
        ({"coverages": {"update-kl": 0.0}}, "coverages must be in"),
        ({"runs": {"nope": 3}}, "unknown checks"),
        ({"samples": {"update-kl": "many"}}, "bad 'samples'"),
    ):
        with pytest.raises(ConfigError, match=why):
            Thresholds.from_dict({**good, **bad})


def test_every_shipped_calibration_loads_under_this_scoring() -> None:
    from importlib import resources

    files = sorted(
        f.name
        for f in resources.files("rlsec.defenses.calibration").iterdir()
        if f.name.endswith(".json")
    )
    assert files == ["dqn-CartPole-v1.json", "ppo-CartPole-v1.json", "sac-Pendulum-v1.json"]
    for name in files:
        algo, env_id = name[: -len(".json")].split("-", 1)
        t = shipped_thresholds(algo, env_id)
        assert t is not None and set(t.values) == set(CHECKS) - _unused_checks(algo), name
        assert all(c >= 0.9 for c in t.coverages.values()), name  # enough runs for 0.9


def _unused_checks(algo: str) -> set[str]:
    return {"update-kl", "update-clip-fraction"} if algo != "ppo" else set()


def test_log_z_scores_jumps_not_the_scale_of_a_run() -> None:
    rng = np.random.default_rng(0)
    for scale in (1e-3, 1.0, 1e4):  # a run whose values are 10^7 apart scores alike
        z = LogZ(halflife=200, warmup=20)
        scores = [z(scale * v) for v in np.exp(0.1 * rng.standard_normal(500))]
        assert all(s is None for s in scores[:20])
        assert max(s for s in scores[20:] if s is not None) < 5
        jump = z(scale * 3.0)  # log(3) is 11 std of log-noise 0.1
        assert jump is not None and jump > 8


def test_thresholds_round_trip_and_refuse_unknown_checks(tmp_path: Any) -> None:
    t = calibrate([{"update-kl": [0.01, 0.02, 0.03]}] * 3, 0.1, source="test")
    assert t.coverages == {"update-kl": 0.75}  # 3 runs support no better than 3/4
    t.save(tmp_path / "t.json")
    assert Thresholds.load(tmp_path / "t.json") == t
    with pytest.raises(ConfigError, match="unknown checks"):
        Thresholds.from_dict(
            {"scoring": SCORING, "values": {"nope": 1.0}, "fpr": 0.1, "coverage": 0.9}
        )
    with pytest.raises(ConfigError, match="recalibrate"):  # thresholds of an older scoring
        Thresholds.from_dict({"values": {"update-kl": 1.0}, "fpr": 0.1})
    with pytest.raises(ConfigError, match="fpr"):
        calibrate([{"update-kl": [1.0]}], 1.5)
    with pytest.raises(ConfigError, match="coverage"):
        calibrate([{"update-kl": [1.0]}], 0.1, coverage=1.0)
    with pytest.raises(ConfigError, match="one mapping of check -> window scores per clean run"):
        calibrate({"update-kl": [1.0]}, 0.1)  # type: ignore[arg-type]


class _FlipAfter(gym.Wrapper[Any, Any, Any, Any]):
    """Reward poisoning: from step ``start`` on, flip the sign of every ``every``-th reward."""

    def __init__(self, env: gym.Env[Any, Any], start: int, every: int) -> None:
        super().__init__(env)
        self.t, self.start, self.every = 0, start, every

    def step(self, action: Any) -> Any:
        obs, r, term, trunc, info = self.env.step(action)
        self.t += 1
        if self.t >= self.start and self.t % self.every == 0:
            r = -r
        return obs, r, term, trunc, info


def _ppo(env: gym.Env[Any, Any]) -> PPO:
    return PPO("MlpPolicy", env, n_steps=128, batch_size=64, n_epochs=1, seed=0, device="cpu")


def test_reward_flips_are_found_soon_after_they_start_and_clean_training_is_quiet() -> None:
    clean = IntegrityMonitor(window=128, warmup=64)
    _ppo(gym.make("CartPole-v1")).learn(1024, callback=clean)
    thresholds = calibrate([clean.scores], 0.01)
    quiet = IntegrityMonitor(thresholds, window=128, warmup=64)
    _ppo(gym.make("CartPole-v1")).learn(1024, callback=quiet)
    assert [f for f in quiet.findings if f.detector == "reward-outlier"] == []
    loud = IntegrityMonitor(thresholds, window=128, warmup=64)
    _ppo(_FlipAfter(gym.make("CartPole-v1"), start=600, every=10)).learn(1024, callback=loud)
    found = [f for f in loud.findings if f.detector == "reward-outlier"]
    assert found and all(f.surface is Surface.REWARD for f in found)
    latency = loud.first_alarm["reward-outlier"] - 600
    assert 0 <= latency <= 2 * 128  # within two windows of the first flip


class _Teleport(gym.Wrapper[Any, Any, Any, Any]):
    """Falsified transitions: at step ``at`` the cart's position reading jumps by 2 m."""

    def __init__(self, env: gym.Env[Any, Any], at: int) -> None:
        super().__init__(env)
        self.at, self.t = at, 0

    def step(self, action: Any) -> Any:
        obs, r, term, trunc, info = self.env.step(action)
        self.t += 1
        if self.t == self.at:
            obs = obs.copy()
            obs[0] = np.clip(obs[0] + 2.0, -4.7, 4.7)
        return obs, r, term, trunc, info


def test_teleports_are_jumps_and_jumps_count_only_after_the_jump_warmup() -> None:
    clean = IntegrityMonitor(window=64, jump_warmup=128)
    _ppo(gym.make("CartPole-v1")).learn(512, callback=clean)
    # 64-step windows: the first two end before more than 128 transitions are in
    assert len(clean.scores["transition-jump"]) == 512 // 64 - 2
    thresholds = calibrate([clean.scores], 0.01)
    loud = IntegrityMonitor(thresholds, window=64, jump_warmup=128)
    _ppo(_Teleport(gym.make("CartPole-v1"), at=300)).learn(512, callback=loud)
    found = [f for f in loud.findings if f.detector == "transition-jump"]
    assert found and all(f.surface is Surface.DATA for f in found)
    assert 300 <= loud.first_alarm["transition-jump"] < 300 + 64
    with pytest.raises(ConfigError, match="jump_warmup and grad_warmup_windows >= 0"):
        IntegrityMonitor(jump_warmup=-1)


def test_the_first_windows_of_gradient_norms_are_not_scored() -> None:
    runs = {}
    for skip in (0, 2):
        monitor = IntegrityMonitor(window=128, update_warmup=5, grad_warmup_windows=skip)
        _ppo(gym.make("CartPole-v1")).learn(1024, callback=monitor)
        runs[skip] = monitor.scores["update-grad-norm"]
    # the same run (same seed): the later windows score alike, the first two are left out
    assert len(runs[0]) >= 4 and runs[2] == runs[0][2:]


def _env_with(bad: Any, at: int) -> GenericTestEnv:
    t = [0]

    def step(self: Any, action: Any) -> Any:
        t[0] += 1
        obs = np.zeros(2, np.float32) if t[0] != at else np.asarray(bad, np.float32)
        return obs, 1.0, False, t[0] % 50 == 0, {}

    return GenericTestEnv(
        observation_space=gym.spaces.Box(-1, 1, (2,), np.float32),
        reset_func=lambda self, **_: (np.zeros(2, np.float32), {}),
        step_func=step,
    )


@pytest.mark.parametrize(
    ("bad", "message"),
    [([np.nan, 0.0], "non-finite observation"), ([5.0, 0.0], "outside the observation space")],
)
def test_invalid_observations_are_hard_findings(bad: list[float], message: str) -> None:
    monitor = IntegrityMonitor(window=64, warmup=8)
    _ppo(_env_with(bad, at=40)).learn(128, callback=monitor)
    hits = [f for f in monitor.findings if message in f.message]
    assert len(hits) == 1
    assert hits[0].severity is Severity.HIGH
    assert hits[0].evidence["timesteps"] == 40


class _Injector(BaseCallback):
    """Data poisoning: write crafted transitions straight into the replay buffer at ``at``."""

    def __init__(self, at: int, count: int) -> None:
        super().__init__()
        self.at, self.count = at, count

    def _on_step(self) -> bool:
        if self.num_timesteps == self.at:
            buf = self.model.replay_buffer
            obs = np.zeros((1, 4), np.float32)
            for _ in range(self.count):
                buf.add(obs, obs, np.array([0]), np.array([100.0]), np.array([False]), [{}])
        return True


@pytest.mark.parametrize("monitor_first", [False, True])
def test_replay_buffer_injection_is_found_at_the_step_it_happens(monitor_first: bool) -> None:
    def run(callbacks: list[BaseCallback]) -> IntegrityMonitor:
        monitor = IntegrityMonitor(window=64)
        model = DQN("MlpPolicy", "CartPole-v1", learning_starts=50, seed=0, device="cpu")
        order = [monitor, *callbacks] if monitor_first else [*callbacks, monitor]
        model.learn(300, callback=order)
        return monitor

    assert [f for f in run([]).findings if f.detector == "buffer-accounting"] == []
    monitor = run([_Injector(at=150, count=5)])
    hits = [f for f in monitor.findings if f.detector == "buffer-accounting"]
    assert len(hits) == 1
    assert hits[0].evidence["rows"] == 6
    # found at the step it happened, or the next check when the writer runs after the monitor
    assert monitor.first_alarm["buffer-accounting"] == 150 + monitor_first
    # the genuine row is among the new ones, wherever the writer put its own: no seal finding
    assert [f for f in monitor.findings if f.detector == "buffer-integrity"] == []


def test_drift_from_a_fixed_reference_is_found_and_rolled_back() -> None:
    class Always:
        def act(self, obs: np.ndarray) -> np.ndarray:
            return np.ones(len(obs), dtype=np.int64)

    class Sabotage(BaseCallback):
        """Parameter tampering mid-training: every action becomes 0."""

        def _on_step(self) -> bool:
            if self.num_timesteps == 700:
                with torch.no_grad():
                    self.model.policy.action_net.bias.copy_(torch.tensor([100.0, -100.0]))
            return True

    thresholds = Thresholds({"drift-reference": 0.5, "drift-step": 0.5}, fpr=0.01)
    monitor = IntegrityMonitor(
        thresholds, reference=Always(), drift_every=256, rollback=True, probe_size=64, halt=None
    )
    model = _ppo(gym.make("CartPole-v1"))
    with torch.no_grad():  # start as the reference does: always action 1
        model.policy.action_net.bias.copy_(torch.tensor([-100.0, 100.0]))
    model.learn(1024, callback=[Sabotage(), monitor])
    drift = [f for f in monitor.findings if f.detector.startswith("drift")]
    assert drift and monitor.first_alarm["drift-reference"] >= 700
    # the sabotage itself is also a hard finding at the next optimiser step
    assert 700 <= monitor.first_alarm["weight-integrity"] <= 700 + 128
    assert monitor.rollbacks >= 1
    assert any(f.detector == "rollback" for f in monitor.findings)
    probe = np.zeros((8, 4), np.float32)
    assert np.array_equal(model.predict(probe, deterministic=True)[0], np.ones(8))


def test_a_crashing_check_is_a_finding_not_a_pass() -> None:
    monitor = IntegrityMonitor(window=64)
    model = _ppo(gym.make("CartPole-v1"))
    monitor.init_callback(model)
    monitor.update_locals({"rewards": np.ones(1)})  # no new_obs: the check cannot run
    monitor.on_step()
    crash = [f for f in monitor.findings if "failed to run" in f.message]
    assert crash and crash[0].severity is Severity.HIGH


def test_each_crashed_check_is_reported_under_its_own_name_and_surface() -> None:
    """A crash is a HIGH finding of the check that crashed (so a reader knows what went
    unchecked), on that check's attack surface."""
    monitor = IntegrityMonitor(halt=None)
    model = _ppo(gym.make("CartPole-v1"))
    monitor.init_callback(model)

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    for name in (
        "_check_weights", "_check_update_log", "_check_buffer", "verify_buffer",
        "_check_transitions", "_check_drift",
    ):  # fmt: skip
        setattr(monitor, name, boom)
    monitor._on_step()  # the drift check is due (step 0)
    monitor._before_step(model.policy.optimizer, (), {})
    monitor._on_rollout_end()
    monitor._seals, monitor._buf = np.zeros((1, 16), np.uint8), SimpleNamespace()
    monitor._on_training_end()  # (a buffer whose sampling hook is already gone)
    assert [(f.detector, f.surface, f.severity) for f in monitor.findings] == [
        ("transition-validation", Surface.DATA, Severity.HIGH),
        ("buffer-accounting", Surface.DATA, Severity.HIGH),
        ("drift", Surface.PARAMETERS, Severity.HIGH),
        ("weight-integrity", Surface.PARAMETERS, Severity.HIGH),
        ("update-watchdog", Surface.PARAMETERS, Severity.HIGH),
        ("buffer-accounting", Surface.DATA, Severity.HIGH),
        ("buffer-integrity", Surface.DATA, Severity.HIGH),
    ]


def test_one_monitor_guards_successive_learn_calls() -> None:
    monitor = IntegrityMonitor(window=64)
    model = _ppo(gym.make("CartPole-v1"))
    model.learn(128, callback=monitor)
    assert monitor._hooks == []  # every hook removed when learning ends
    model.learn(128, callback=monitor, reset_num_timesteps=False)
    assert monitor._hooks == [] and monitor.grad_norms == 2 * 2
    assert [f for f in monitor.findings if f.severity >= Severity.MEDIUM] == []


def test_every_optimiser_step_is_scored() -> None:
    monitor = IntegrityMonitor()
    model = PPO(
        "MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, n_epochs=3, seed=0, device="cpu"
    )
    model.learn(128, callback=monitor)
    assert monitor.grad_norms == 2 * 3 * 2  # rollouts x epochs x batches


def test_update_scores_are_one_per_window_and_a_weight_jump_stands_out() -> None:
    class Tamper(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps == 2048:
                with torch.no_grad():
                    for p in self.model.policy.action_net.parameters():
                        p.mul_(20.0)  # the logits blow up: the next update is a big step
            return True

    def run(callbacks: list[BaseCallback]) -> IntegrityMonitor:
        monitor = IntegrityMonitor(window=256, update_warmup=10, halt=None)
        PPO(
            "MlpPolicy",
            "CartPole-v1",
            n_steps=128,
            batch_size=64,
            n_epochs=4,
            seed=0,
            device="cpu",
        ).learn(3072, callback=[*callbacks, monitor])
        return monitor

    clean, tampered = run([]), run([Tamper()])
    # 12 windows of 256 steps; update scores start once 10 updates have been seen
    assert 8 <= len(clean.scores["update-grad-norm"]) <= 12
    assert len(clean.scores["update-clip-fraction"]) == 12
    assert len(clean.scores["update-kl"]) <= 12
    assert clean.scores["update-kl"][:2] == tampered.scores["update-kl"][:2]  # same until 2048
    jump = max(tampered.scores["update-kl"])
    assert jump > 3 * max(clean.scores["update-kl"]) and jump > 5


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_weights_changed_outside_the_optimiser_are_a_hard_finding(algo: str) -> None:
    class Tamper(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps == 300:
                with torch.no_grad():
                    next(iter(self.model.policy.parameters())).add_(1e-3)
            return True

    def run(callbacks: list[BaseCallback]) -> IntegrityMonitor:
        monitor = IntegrityMonitor(window=64, halt=None)
        if algo == "ppo":
            model: Any = _ppo(gym.make("CartPole-v1"))
        else:
            model = DQN("MlpPolicy", "CartPole-v1", learning_starts=50, seed=0, device="cpu")
        model.learn(640, callback=[*callbacks, monitor])
        return monitor

    assert [f for f in run([]).findings if f.detector == "weight-integrity"] == []
    hits = [f for f in run([Tamper()]).findings if f.detector == "weight-integrity"]
    assert len(hits) == 1 and hits[0].severity is Severity.HIGH
    assert 300 <= hits[0].evidence["timesteps"] <= 300 + 128  # the next optimiser step
    assert hits[0].surface is Surface.PARAMETERS and hits[0].evidence["tensors"] == 1
    assert re.fullmatch(
        r"1 of \d+ weight tensors changed between two optimiser steps, outside the optimiser",
        hits[0].message,
    )


@pytest.mark.parametrize("net", ["actor", "critic"])
def test_weights_of_an_actor_critic_changed_outside_its_optimisers_are_found(net: str) -> None:
    """SAC trains an actor and a critic with an optimiser each: both are watched (before,
    a critic changed outside its optimiser went unreported)."""
    from stable_baselines3 import SAC

    class Tamper(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps == 80:
                with torch.no_grad():
                    next(iter(getattr(self.model, net).parameters())).add_(1e-3)
            return True

    monitor = IntegrityMonitor(window=64, halt=None)
    model = SAC("MlpPolicy", "Pendulum-v1", learning_starts=50, batch_size=32, seed=0,
                device="cpu")  # fmt: skip
    model.learn(100, callback=[Tamper(), monitor])
    hits = [f for f in monitor.findings if f.detector == "weight-integrity"]
    assert len(hits) == 1 and hits[0].severity is Severity.HIGH
    assert hits[0].evidence["timesteps"] in (80, 81)  # the next optimiser step


@pytest.mark.parametrize("change", ["added", "removed"])
def test_a_tensor_added_to_or_removed_from_the_optimiser_outside_it_is_a_hard_finding(
    change: str,
) -> None:
    """Tensors are compared pairwise with the snapshot: a tensor more or fewer is not a pair
    to skip (the check refuses, a HIGH finding), else an added tensor would go unchecked."""
    monitor = IntegrityMonitor(halt=None)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1)
    if change == "removed":
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))]})
    monitor._after_step(opt, (), {})
    if change == "added":
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))]})
    else:
        opt.param_groups.pop()
    monitor._before_step(opt, (), {})
    (hit,) = [f for f in monitor.findings if f.detector == "weight-integrity"]
    assert hit.severity is Severity.HIGH and hit.surface is Surface.PARAMETERS


# -- replay-buffer seals ------------------------------------------------------------------------
def _off_policy(algo: str) -> Any:
    if algo == "dqn":
        return DQN("MlpPolicy", "CartPole-v1", learning_starts=50, seed=0, device="cpu")
    from stable_baselines3 import SAC

    return SAC("MlpPolicy", "Pendulum-v1", learning_starts=50, batch_size=32, seed=0, device="cpu")


@pytest.mark.parametrize("algo", ["dqn", "sac"])
def test_clean_off_policy_training_keeps_every_seal(algo: str) -> None:
    """No false alarm: every stored row is the transition the env produced (episode ends,
    truncations and, for SAC, actions rescaled for storage included) and stays sealed."""
    monitor = IntegrityMonitor(window=64)
    model = _off_policy(algo)
    model.learn(450 if algo == "dqn" else 250, callback=monitor)
    assert [f for f in monitor.findings if f.severity is Severity.HIGH] == []
    assert monitor._sealed is not None and monitor._sealed[: model.replay_buffer.pos].all()
    assert "_get_samples" not in vars(model.replay_buffer)  # unhooked after learn


class _Overwrite(BaseCallback):
    """Data poisoning in place: at step ``at`` set the reward of buffer row ``row`` (the row
    stored at the previous step if ``row`` is None: a write racing the monitor's check)."""

    def __init__(self, at: int, row: int | None) -> None:
        super().__init__()
        self.at, self.row = at, row

    def _on_step(self) -> bool:
        if self.num_timesteps == self.at:
            buf = self.model.replay_buffer
            row = (buf.pos - 1) % buf.buffer_size if self.row is None else self.row
            buf.rewards[row] = 100.0
        return True


def test_a_row_overwritten_in_place_stops_training_before_a_gradient_step_uses_it() -> None:
    model = DQN(
        "MlpPolicy", "CartPole-v1", learning_starts=10, batch_size=256, seed=0, device="cpu"
    )
    monitor = IntegrityMonitor(window=64)
    stepped: list[int] = []
    model.policy.optimizer.register_step_post_hook(
        lambda *_: stepped.append(int(model.num_timesteps))
    )
    with pytest.raises(IntegrityViolation, match="before a gradient step"):
        model.learn(400, callback=[_Overwrite(at=120, row=3), monitor])
    hits = [f for f in monitor.findings if f.detector == "buffer-integrity"]
    assert len(hits) == 1 and hits[0].severity is Severity.HIGH
    assert hits[0].evidence["rows"] == [3]
    found_at = hits[0].evidence["timesteps"]
    assert 120 <= found_at <= 160  # the first batch that drew row 3 (256 draws from 120+)
    assert stepped and max(stepped) < found_at  # it trained before, never on that batch


def test_a_write_racing_the_check_is_found_by_comparing_with_the_environment() -> None:
    monitor = IntegrityMonitor(window=64, halt=None)
    model = DQN("MlpPolicy", "CartPole-v1", learning_starts=50, seed=0, device="cpu")
    model.learn(300, callback=[_Overwrite(at=200, row=None), monitor])
    hits = [f for f in monitor.findings if f.detector == "buffer-integrity"]
    assert len(hits) == 1  # found where it was written, and reported once
    assert hits[0].evidence["row"] == 198 and hits[0].evidence["fields"] == ["rewards"]
    assert hits[0].evidence["timesteps"] == 200
    assert hits[0].surface is Surface.DATA and hits[0].severity is Severity.HIGH
    assert hits[0].message == (
        "replay-buffer row 198 does not hold the transition the environment produced "
        "(rewards differ): it was changed before the learner could use it"
    )
    # a write in place adds no row: nothing else is reported (nor did the check crash)
    assert [f.detector for f in monitor.findings if f.severity >= Severity.MEDIUM] == [
        "buffer-integrity"
    ]


@pytest.mark.parametrize(("buffer_size", "at", "row"), [(1_000, 120, 3), (100, 200, 90)])
def test_a_row_the_learner_never_samples_is_found_when_learning_ends(
    buffer_size: int, at: int, row: int
) -> None:
    """No gradient step ever draws the row (learning has not started), so only the end of
    ``learn`` sees it: every row the buffer holds is checked, the whole ring once it has
    wrapped (row 90 lies past the write position 50)."""
    monitor = IntegrityMonitor(window=64, halt=None)
    model = DQN(
        "MlpPolicy", "CartPole-v1", buffer_size=buffer_size, learning_starts=10_000, seed=0,
        device="cpu",
    )  # fmt: skip
    model.learn(250, callback=[_Overwrite(at=at, row=row), monitor])
    assert model.replay_buffer.full is (buffer_size == 100)
    hits = [f for f in monitor.findings if f.severity >= Severity.MEDIUM]
    assert [f.detector for f in hits] == ["buffer-integrity"]
    assert hits[0].surface is Surface.DATA and hits[0].evidence["rows"] == [row]
    assert hits[0].message == f"1 replay-buffer rows changed after they were stored (rows [{row}])"
    assert hits[0].evidence["timesteps"] == model.num_timesteps  # at the end of learn


def test_a_seal_check_that_crashes_on_a_sample_stops_training_on_it() -> None:
    monitor = IntegrityMonitor(window=64)
    model = DQN("MlpPolicy", "CartPole-v1", learning_starts=50, seed=0, device="cpu")

    def crash(rows: Any) -> None:
        raise RuntimeError("seal store unreadable")

    monitor._verify_rows = crash  # type: ignore[method-assign]
    with pytest.raises(IntegrityViolation, match="before a gradient step"):
        model.learn(300, callback=monitor)
    (hit,) = monitor.findings
    assert hit.detector == "buffer-integrity" and hit.surface is Surface.DATA
    assert hit.severity is Severity.HIGH and "seal store unreadable" in hit.message


def _sealed_buffer(rows: int) -> tuple[IntegrityMonitor, SimpleNamespace]:
    """A monitor guarding a full ring of ``rows`` rows, every one sealed as it is now."""
    buf = SimpleNamespace(
        observations=np.zeros((rows, 1, 4), np.float32),
        next_observations=np.zeros((rows, 1, 4), np.float32),
        actions=np.zeros((rows, 1, 1)), rewards=np.zeros((rows, 1), np.float32),
        dones=np.zeros((rows, 1), np.float32), timeouts=np.zeros((rows, 1), np.float32),
        buffer_size=rows, full=True, pos=0,
    )  # fmt: skip
    monitor = IntegrityMonitor(halt=None)
    monitor._buf = buf
    monitor._seals = np.zeros((rows, 16), np.uint8)
    monitor._sealed = np.zeros(rows, bool)
    monitor._seal(buf, np.arange(rows))
    return monitor, buf


@pytest.mark.parametrize("changed", [8, 9])
def test_every_changed_row_is_reported_once_with_the_first_eight_named(changed: int) -> None:
    monitor, buf = _sealed_buffer(12)
    buf.rewards[:changed] = 1.0
    monitor.verify_buffer()
    monitor.verify_buffer()  # resealed as they are now: not reported again
    (hit,) = monitor.findings
    assert hit.detector == "buffer-integrity" and hit.severity is Severity.HIGH
    assert hit.evidence["rows"] == list(range(changed))
    more = " ..." if changed > 8 else ""
    assert hit.message == (
        f"{changed} replay-buffer rows changed after they were stored "
        f"(rows {list(range(min(changed, 8)))}{more})"
    )


def test_a_stored_row_unlike_the_transition_names_every_field_that_differs() -> None:
    monitor, buf = _sealed_buffer(4)
    expected = {k: getattr(buf, k)[3].copy() for k in ("observations", "next_observations")}
    expected |= {k: getattr(buf, k)[3] + 1 for k in ("actions", "rewards", "dones", "timeouts")}
    expected["actions"] = buf.actions[3].copy()
    monitor._check_stored(buf, np.array([2, 3]), expected)
    (hit,) = monitor.findings
    assert hit.evidence["row"] == 3 and hit.evidence["fields"] == ["rewards", "dones", "timeouts"]
    assert "(rewards, dones, timeouts differ)" in hit.message


def test_seals_are_keyed_per_monitor() -> None:
    """A writer that can recompute a row's digest could re-seal a poisoned row; without the
    monitor's secret key it cannot: two monitors seal the same row differently."""
    buf = SimpleNamespace(
        observations=np.zeros((2, 1, 4), np.float32), next_observations=np.ones((2, 1, 4)),
        actions=np.zeros((2, 1, 1)), rewards=np.ones((2, 1)), dones=np.zeros((2, 1)),
        timeouts=np.zeros((2, 1)),
    )  # fmt: skip
    rows = np.arange(2)
    a, b = IntegrityMonitor()._digests(buf, rows), IntegrityMonitor()._digests(buf, rows)
    assert a.shape == (2, 16) and not np.array_equal(a, b)


def test_clean_training_on_two_envs_keeps_every_seal() -> None:
    from stable_baselines3.common.env_util import make_vec_env

    monitor = IntegrityMonitor(window=64)
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = DQN("MlpPolicy", env, learning_starts=50, seed=0, device="cpu")
    model.learn(300, callback=monitor)
    assert [f for f in monitor.findings if f.severity >= Severity.MEDIUM] == []
    assert monitor._sealed is not None and monitor._sealed[: model.replay_buffer.pos].all()


@pytest.mark.parametrize("first", [30, 150])
def test_rows_already_in_the_buffer_are_sealed_when_guarding_starts(first: int) -> None:
    """A second ``learn`` with a fresh monitor: the rows stored before are sealed as they are
    (all of a ring that has wrapped, not just those below the write position), so clean
    training raises nothing and a later write to one of them is found."""
    model = DQN(
        "MlpPolicy", "CartPole-v1", buffer_size=100, learning_starts=10_000, seed=0, device="cpu"
    )
    model.learn(first)
    assert model.replay_buffer.full is (first > 100)
    clean = IntegrityMonitor(window=64, halt=None)
    model.learn(20, callback=clean, reset_num_timesteps=False)
    assert [f for f in clean.findings if f.severity >= Severity.MEDIUM] == []
    stored = 100 if first > 100 else model.replay_buffer.pos
    assert clean._sealed is not None and clean._sealed[:stored].all()
    tampered = IntegrityMonitor(window=64, halt=None)
    model.learn(20, callback=[_Overwrite(at=model.num_timesteps + 5, row=3), tampered],
                reset_num_timesteps=False)  # fmt: skip
    hits = [f for f in tampered.findings if f.severity >= Severity.MEDIUM]
    assert [(f.detector, f.evidence["rows"]) for f in hits] == [("buffer-integrity", [3])]


def test_a_learner_behind_vecnormalize_is_refused_not_guarded() -> None:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    monitor = IntegrityMonitor(window=64, halt=None)
    env = VecNormalize(make_vec_env("CartPole-v1", n_envs=1, seed=0))
    model = DQN("MlpPolicy", env, learning_starts=50, seed=0, device="cpu")
    model.learn(100, callback=monitor)
    (refused,) = [f for f in monitor.findings if f.detector.startswith("buffer-")]
    assert refused.detector == "buffer-accounting" and refused.severity is Severity.HIGH
    assert "with VecNormalize" in refused.message
    assert "_get_samples" not in vars(model.replay_buffer)  # its sampling was never routed


def test_each_finding_is_appended_to_the_findings_file_as_a_json_line(tmp_path: Any) -> None:
    path = tmp_path / "findings.jsonl"
    monitor = IntegrityMonitor(findings_path=path, halt=None)
    monitor._hard("weight-integrity", Surface.PARAMETERS, "one", tensors=1)
    monitor._hard("buffer-integrity", Surface.DATA, "two", level=np.float32(0.5))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["timesteps"], r["detector"], r["message"]) for r in rows] == [
        (0, "weight-integrity", "one"),
        (0, "buffer-integrity", "two"),
    ]
    assert rows[0]["evidence"]["tensors"] == 1
    assert rows[1]["evidence"]["level"] == "0.5"  # numpy values are written, not refused


def test_an_unguardable_buffer_is_a_high_finding_not_a_pass() -> None:
    monitor = IntegrityMonitor(window=64, halt=None)
    model = DQN(
        "MlpPolicy",
        "CartPole-v1",
        learning_starts=50,
        device="cpu",
        optimize_memory_usage=True,
        replay_buffer_kwargs={"handle_timeout_termination": False},
    )
    model.learn(100, callback=monitor)
    crashed = [f for f in monitor.findings if f.detector == "buffer-accounting"]
    assert len(crashed) == 1 and crashed[0].severity is Severity.HIGH  # reported once
    assert "optimize_memory_usage=False" in crashed[0].message
    # asked to verify the rows it could not seal, it refuses rather than passing them
    monitor.verify_buffer()
    (refused,) = [f for f in monitor.findings if f.detector == "buffer-integrity"]
    assert refused.severity is Severity.HIGH and refused.surface is Surface.DATA
    assert "cannot be verified" in refused.message


# -- non-finite numbers never pass silently --------------------------------------------------


def _detecting(**values: float) -> IntegrityMonitor:
    return IntegrityMonitor(Thresholds(dict(values), fpr=0.01))


def test_a_nan_score_is_a_high_finding_not_a_pass() -> None:
    """``NaN > threshold`` is false: a check whose score was NaN passed every window."""
    monitor = _detecting(**{"update-clip-fraction": 0.5, "drift-step": 0.5})
    assert monitor._score("update-clip-fraction", math.nan) is True
    assert monitor._score("drift-step", 0.25) is False
    [f] = monitor.findings
    assert (f.severity, f.detector, f.surface) == (
        Severity.HIGH,
        "update-clip-fraction",
        Surface.PARAMETERS,
    )
    assert "score is NaN" in f.message
    assert f.evidence["score"] is None
    assert monitor.halted  # HIGH stops training by default


def test_a_nan_update_score_survives_the_window_maximum() -> None:
    """``max(held, NaN)`` keeps ``held``: a NaN clip fraction in a window with finite ones
    disappeared before it was scored."""
    monitor = _detecting(**{"update-clip-fraction": 0.5})
    for v in (0.1, math.nan, 0.2):
        monitor._pend("update-clip-fraction", v)
    monitor._flush_updates()
    assert [f.severity for f in monitor.findings] == [Severity.HIGH]
    calm = _detecting(**{"update-clip-fraction": 0.5})
    for v in (0.1, 0.2):
        calm._pend("update-clip-fraction", v)
    calm._flush_updates()
    assert calm.findings == []


def test_calibration_mode_records_a_nan_score_and_calibrate_drops_it() -> None:
    monitor = IntegrityMonitor()
    assert monitor._score("update-kl", math.nan) is False
    assert monitor.findings == []
    assert math.isnan(monitor.scores["update-kl"][0])


def test_one_infinite_or_nan_value_does_not_switch_log_z_off() -> None:
    """An infinite KL made the moments infinite, every later score NaN, and NaN never alarms:
    the check was off for the rest of the run."""
    rng = np.random.default_rng(0)
    for bad in (math.inf, math.nan, -math.inf):
        z = LogZ(halflife=100, warmup=10)
        for v in np.exp(0.1 * rng.standard_normal(50)):
            z(v)
        assert z(bad) == math.inf
        assert math.isfinite(z.mean) and math.isfinite(z.var)
        later = [z(v) for v in np.exp(0.1 * rng.standard_normal(20))]
        assert all(s is not None and math.isfinite(s) and s < 5 for s in later)
        jump = z(3.0)
        assert jump is not None and jump > 8


def test_a_non_finite_kl_in_the_learners_log_scores_inf() -> None:
    monitor = _detecting(**{"update-kl": 10.0})

    class Log:
        name_to_value: ClassVar[dict[str, float]] = {"train/approx_kl": math.nan}

    monitor.model = SimpleNamespace(logger=Log())
    monitor._check_update_log()
    assert monitor._pending == {"update-kl": math.inf}
    monitor._flush_updates()
    assert [f.detector for f in monitor.findings] == ["update-kl"]


def _reset_env(bad: list[float], on_reset: int) -> GenericTestEnv:
    resets = [0]

    def reset(self: Any, **_: Any) -> Any:
        resets[0] += 1
        obs = np.asarray(bad if resets[0] == on_reset else [0.0, 0.0], np.float32)
        return obs, {}

    def step(self: Any, action: Any) -> Any:
        return np.zeros(2, np.float32), 1.0, False, self.np_random.random() < 0.05, {}

    return GenericTestEnv(
        observation_space=gym.spaces.Box(-1, 1, (2,), np.float32),
        reset_func=reset,
        step_func=step,
    )


@pytest.mark.parametrize(
    ("bad", "message", "on_reset"),
    [
        # the first reset: PPO itself cannot act on NaN, so only the out-of-space case
        ([0.0, 7.0], "outside the observation space", 1),
        ([np.nan, 0.0], "non-finite observation", 3),
        ([0.0, 7.0], "outside the observation space", 3),
    ],
)
def test_a_bad_reset_observation_is_a_hard_finding_and_leaves_the_jump_check_on(
    bad: list[float], message: str, on_reset: int
) -> None:
    """The observation that starts an episode reaches the learner as the next step's previous
    observation and was never checked (the next observation of a done step is the terminal
    one); a NaN there made the running mean change NaN, every later jump score 0, and the
    transition-jump check silently off."""
    monitor = IntegrityMonitor(window=64, warmup=8, jump_warmup=16)
    _ppo(_reset_env(bad, on_reset)).learn(256, callback=monitor)
    hits = [f for f in monitor.findings if message in f.message]
    assert len(hits) == 1
    assert hits[0].severity is Severity.HIGH
    assert monitor._jump is not None and np.all(np.isfinite(monitor._jump.mean))


def _validate(space: Any, last: Any, new: Any, done: bool = False, info: Any = None) -> Any:
    """Run the transition check once on one env's step; the monitor's HIGH findings."""
    monitor = IntegrityMonitor(halt=None)
    monitor.model = SimpleNamespace(observation_space=space, _last_obs=np.asarray([last]))
    monitor.locals = {
        "new_obs": np.asarray([new], np.float32), "rewards": np.zeros(1),
        "dones": np.array([done]), "infos": [info or {}],
    }  # fmt: skip
    monitor._check_transitions()
    return [f for f in monitor.findings if f.severity is Severity.HIGH]


_BOX = gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32)


def test_the_terminal_observation_an_episode_ends_on_is_validated_too() -> None:
    """At an episode's end the learner stores ``infos[i]["terminal_observation"]`` as the
    next observation (``new_obs`` is already the reset one): that is the one checked."""
    ok = np.zeros((2, 2), np.float32)
    cases = [
        (np.full((2, 2), np.nan), "non-finite observation"),
        (np.full((2, 2), 3.0), "observation outside the observation space"),
    ]
    for bad, message in cases:
        (hit,) = _validate(_BOX, ok, ok, done=True, info={"terminal_observation": bad})
        assert (hit.detector, hit.surface, hit.message) == (
            "transition-validation", Surface.DATA, message,
        )  # fmt: skip
    assert _validate(_BOX, ok, ok, done=False, info={"terminal_observation": ok + 3}) == []


def test_observations_on_the_space_bounds_pass_and_the_excess_is_reported() -> None:
    """Bounds are inclusive, per feature of a multi-dimensional Box; the evidence says by how
    much the observation left it on each side."""
    edge = np.array([[-1.0, 1.0], [1.0, -1.0]], np.float32)
    assert _validate(_BOX, edge, edge) == []
    out = np.array([[-1.5, 0.0], [0.0, 1.25]], np.float32)
    (hit,) = _validate(_BOX, edge, out)
    assert hit.message == "observation outside the observation space"
    assert (hit.detector, hit.surface) == ("transition-validation", Surface.DATA)
    assert hit.evidence["low"] == -0.5 and hit.evidence["high"] == 0.25


def test_a_non_finite_reward_is_a_hard_finding_and_not_a_moment() -> None:
    monitor = IntegrityMonitor(window=64, warmup=8)
    _ppo(_env_with([0.0, 0.0], at=10**9)).learn(64, callback=monitor)
    monitor.locals = {
        "new_obs": np.zeros((1, 2)),
        "rewards": np.array([math.nan]),
        "dones": np.array([False]),
        "infos": [{}],
    }
    monitor._check_transitions()
    assert [f.message for f in monitor.findings] == ["non-finite reward from the env"]
    (hit,) = monitor.findings
    assert (hit.detector, hit.surface, hit.severity) == (
        "reward-validation",
        Surface.REWARD,
        Severity.HIGH,
    )
    assert np.isfinite(monitor._reward.mean).all() and np.isfinite(monitor._reward.std).all()


def test_nan_actions_on_the_probe_count_as_drift() -> None:
    from rlsec.defenses.monitors import _disagreement

    ref = np.array([[0.0], [1.0], [2.0]])
    assert _disagreement(np.array([[0.0], [np.nan], [2.0]]), ref) == pytest.approx(1 / 3)
    assert _disagreement(ref.copy(), ref) == 0.0


@pytest.mark.parametrize("bad", [math.nan, -math.inf])
def test_thresholds_that_never_alarm_are_refused_however_they_are_built(bad: float) -> None:
    """from_dict refused a NaN threshold; building Thresholds directly did not."""
    with pytest.raises(ConfigError, match="numbers or \\+inf"):
        Thresholds({"update-kl": bad}, fpr=0.01)
    Thresholds({"update-kl": math.inf}, fpr=0.01)
