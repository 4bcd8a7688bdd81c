"""Replay-buffer poisoning: budget and record on a real buffer; what the integrity monitor sees."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.buffers import ReplayBuffer

from data_helpers import ACT, OBS, attacks, fractions, make_attack, modes
from rlsec.attacks.data import DataAttack, make_data_attack
from rlsec.attacks.replay import ReplayPoisoner
from rlsec.core import Severity
from rlsec.defenses.monitors import IntegrityMonitor
from rlsec.errors import AttackNotApplicable


# -- replay buffers: exercised on a real ReplayBuffer with a stand-in learner ------------------
class _Learner:
    """What ReplayPoisoner reads of an SB3 off-policy learner."""

    def __init__(self, buffer_size: int, n_envs: int = 1) -> None:
        self.observation_space, self.action_space = OBS, ACT
        self.replay_buffer = ReplayBuffer(buffer_size, OBS, ACT, "cpu", n_envs=n_envs)
        self.num_timesteps = 0


def _play(
    attack: DataAttack, steps: int, seed: int, *, buffer_size: int = 500, n_envs: int = 1
) -> tuple[ReplayPoisoner, _Learner, list[tuple[int, tuple[np.ndarray, ...]]]]:
    """Store ``steps`` genuine rows the way SB3 does (callback first, then ``add``)."""
    learner = _Learner(buffer_size, n_envs)
    cb = attack.callback(seed=seed)
    cb.init_callback(learner)  # type: ignore[arg-type]
    cb.on_training_start({}, {})
    rng = np.random.default_rng(1000 + seed)
    written: list[tuple[int, tuple[np.ndarray, ...]]] = []
    for _ in range(steps):
        learner.num_timesteps += n_envs
        cb.on_step()
        row = (
            rng.uniform(-1, 1, (n_envs, 3)).astype(np.float32),
            rng.uniform(-1, 1, (n_envs, 3)).astype(np.float32),
            rng.integers(0, 3, (n_envs, 1)),
            rng.normal(size=n_envs).astype(np.float32),
            (rng.random(n_envs) < 0.1).astype(np.float32),
        )
        written.append((int(learner.replay_buffer.pos), row))
        learner.replay_buffer.add(*row, [{} for _ in range(n_envs)])
    cb.on_rollout_end()
    return cb, learner, written


@settings(max_examples=30, deadline=None)
@given(
    name=attacks,
    mode=modes,
    fraction=fractions,
    steps=st.integers(0, 120),
    seed=st.integers(0, 2**16),
)
def test_buffer_poisoning_spends_the_budget_exactly_and_leaves_genuine_rows_alone(
    name: str, mode: str, fraction: float, steps: int, seed: int
) -> None:
    attack = make_attack(name, 1.0, fraction, mode)
    cb, learner, written = _play(attack, steps, seed)
    rec, buf = cb.record, learner.replay_buffer
    assert rec.genuine == steps
    assert rec.crafted == math.floor(fraction * steps + 1e-9)
    assert len(rec.rows) == len(rec.source_rows) == len(rec.steps) == rec.crafted
    assert buf.pos == steps + (rec.crafted if mode == "direct" else 0)
    crafted = set(zip(rec.rows, rec.envs, strict=True))
    for pos, (obs, nxt, act, rew, done) in written:
        if (pos, 0) in crafted:
            assert mode == "replace"
            assert abs(float(buf.rewards[pos, 0]) - float(rew[0])) <= 1.0 + 1e-6
            continue
        np.testing.assert_array_equal(buf.observations[pos], obs)
        np.testing.assert_array_equal(buf.next_observations[pos], nxt)
        np.testing.assert_array_equal(buf.actions[pos], act)
        np.testing.assert_array_equal(buf.rewards[pos], rew)
        np.testing.assert_array_equal(buf.dones[pos], done)
    if mode == "direct":  # each crafted row copies a genuine one within the budget
        for r, sr in zip(rec.rows, rec.source_rows, strict=True):
            assert abs(float(buf.rewards[r, 0] - buf.rewards[sr, 0])) <= 1.0 + 1e-6
            assert np.all(np.abs(buf.observations[r] - buf.observations[sr]) <= 0.1 + 1e-6)


@settings(max_examples=10, deadline=None)
@given(name=attacks, mode=modes, seed=st.integers(0, 2**16))
def test_buffer_poisoning_is_deterministic_per_seed(name: str, mode: str, seed: int) -> None:
    a, la, _ = _play(make_attack(name, 1.0, 0.3, mode), 60, seed)
    b, lb, _ = _play(make_attack(name, 1.0, 0.3, mode), 60, seed)
    assert a.record.to_dict() == b.record.to_dict()
    np.testing.assert_array_equal(la.replay_buffer.rewards, lb.replay_buffer.rewards)
    np.testing.assert_array_equal(la.replay_buffer.actions, lb.replay_buffer.actions)


def test_direct_mode_with_several_envs_writes_whole_rows() -> None:
    cb, learner, _ = _play(make_attack("flip-data-v1", 2.0, 0.25, "direct"), 40, 0, n_envs=4)
    assert cb.record.genuine == 160 and cb.record.crafted == 40  # 10 rows of 4
    assert learner.replay_buffer.pos == 50
    assert sorted(set(cb.record.envs)) == [0, 1, 2, 3]


def test_a_full_buffer_keeps_counting() -> None:
    cb, learner, _ = _play(make_attack("flip-data-v1", 2.0, 0.5, "replace"), 300, 0, buffer_size=64)
    assert cb.record.genuine == 300 and cb.record.crafted == 150
    assert learner.replay_buffer.full


# -- the integrity monitor sees direct injection (accounting) and replacement (seals) ----------
def _dqn_with(mode: str) -> tuple[ReplayPoisoner, IntegrityMonitor]:
    attack = make_data_attack(
        "target-action-data-v1",
        1.0,
        fraction=0.1,
        mode=mode,
        target_action=0,  # type: ignore[arg-type]
    )
    poisoner = attack.callback(seed=0)
    monitor = IntegrityMonitor(window=64, halt=None)
    model = DQN(
        "MlpPolicy",
        "CartPole-v1",
        learning_starts=50,
        seed=0,
        device="cpu",
        train_freq=50,
        gradient_steps=1,
    )
    model.learn(200, callback=[poisoner, monitor])
    return poisoner, monitor


def test_buffer_accounting_finds_direct_injection_at_the_step_it_happens() -> None:
    poisoner, monitor = _dqn_with("direct")
    hits = [f for f in monitor.findings if f.detector == "buffer-accounting"]
    rec = poisoner.record
    assert rec.crafted == 20 and monitor.first_alarm["buffer-accounting"] == rec.steps[0]
    # Each write is found at the next check: the next environment step, or the end of the
    # rollout for the top-up after the final step (checked before the learner trains on it).
    assert len(hits) == rec.crafted and rec.steps[-1] == 200


def test_replacement_escapes_accounting_but_breaks_the_seals_of_exactly_the_rows_it_wrote() -> None:
    poisoner, monitor = _dqn_with("replace")
    assert poisoner.record.crafted == 20
    assert [f for f in monitor.findings if f.detector == "buffer-accounting"] == []
    hits = [f for f in monitor.findings if f.detector == "buffer-integrity"]
    assert hits and all(f.severity is Severity.HIGH for f in hits)
    found = {r for f in hits for r in f.evidence.get("rows", [f.evidence.get("row")])}
    assert found == set(poisoner.record.rows)


def test_learners_without_a_plain_replay_buffer_are_refused() -> None:
    attack = make_attack("flip-data-v1", 1.0, 0.1, "direct")
    with pytest.raises(AttackNotApplicable, match="PPO keeps none"):
        PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, device="cpu").learn(
            32, callback=attack.callback(seed=0)
        )
    model = DQN(
        "MlpPolicy",
        "CartPole-v1",
        device="cpu",
        optimize_memory_usage=True,
        replay_buffer_kwargs={"handle_timeout_termination": False},
    )
    with pytest.raises(AttackNotApplicable, match="optimize_memory_usage=False"):
        model.learn(10, callback=attack.callback(seed=0))
