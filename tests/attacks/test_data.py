"""Data poisoning: replay buffers and offline datasets, budgets, records, modes, the .npz format."""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.buffers import ReplayBuffer

from rlsec.attacks.data import (
    DATA_ATTACKS,
    DataAttack,
    FlipData,
    NoiseData,
    TargetActionData,
    make_data_attack,
)
from rlsec.attacks.offline import collect_dataset, poison_dataset
from rlsec.attacks.replay import ReplayPoisoner
from rlsec.attacks.transitions import PoisonRecord, TransitionDataset, Transitions
from rlsec.core import Severity, Surface, ThreatModel
from rlsec.defenses.monitors import IntegrityMonitor
from rlsec.errors import (
    AttackNotApplicable,
    BudgetViolation,
    ConfigError,
    InvalidBudget,
    UnknownAttack,
    UnsafeArtifact,
)
from rlsec.evaluate.data import fitted_q

OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
ACT = gym.spaces.Discrete(3)


def _dataset(n: int, seed: int = 0) -> TransitionDataset:
    rng = np.random.default_rng(seed)
    return TransitionDataset(
        obs=rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        actions=rng.integers(0, 3, n),
        rewards=rng.normal(size=n),
        next_obs=rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        dones=rng.random(n) < 0.1,
        observation_space=OBS,
        action_space=ACT,
        info={"env_id": "test"},
    )


def _attack(name: str, eps: float, fraction: float, mode: str) -> DataAttack:
    params: dict[str, Any] = {
        "flip-data-v1": {},
        "noise-data-v1": {"obs_epsilon": 0.1, "relabel": 0.5},
        "target-action-data-v1": {"target_action": 2, "relabel": 0.5},
    }[name]
    return make_data_attack(name, eps, fraction=fraction, mode=mode, **params)  # type: ignore[arg-type]


def _rows(ds: Transitions, idx: Any) -> tuple[np.ndarray, ...]:
    return tuple(
        np.asarray(getattr(ds, k)[idx]) for k in ("obs", "actions", "rewards", "next_obs", "dones")
    )


attacks = st.sampled_from(sorted(DATA_ATTACKS))
modes = st.sampled_from(["direct", "replace"])
fractions = st.floats(0.0, 1.0)


# -- offline datasets: the budget and the record -----------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    name=attacks,
    mode=modes,
    fraction=fractions,
    n=st.integers(1, 40),
    eps=st.floats(0.0, 3.0),
    seed=st.integers(0, 2**16),
)
def test_dataset_poisoning_spends_the_budget_exactly_and_records_it(
    name: str, mode: str, fraction: float, n: int, eps: float, seed: int
) -> None:
    ds = _dataset(n, seed)
    before = _rows(ds, slice(None))
    attack = _attack(name, eps, fraction, mode)
    out, rec = poison_dataset(ds, attack, np.random.default_rng(seed))
    k = math.floor(fraction * n + 1e-9)
    assert rec.genuine == n and rec.crafted == k and len(rec.rows) == k == len(rec.source_rows)
    assert rec.crafted <= fraction * n + 1e-6
    for a, b in zip(before, _rows(ds, slice(None)), strict=True):
        np.testing.assert_array_equal(a, b)  # the input is not modified
    crafted = np.zeros(len(out), dtype=bool)
    crafted[rec.rows] = True
    if mode == "direct":
        assert len(out) == n + k
        for a, b in zip(_rows(out, ~crafted), before, strict=True):
            np.testing.assert_array_equal(a, b)  # genuine transitions untouched, in order
    else:
        assert len(out) == n and rec.rows == rec.source_rows
        for a, b in zip(_rows(out, ~crafted), _rows(ds, ~crafted), strict=True):
            np.testing.assert_array_equal(a, b)
    # every crafted transition stays within ε of its source (rewards), obs_epsilon (obs)
    src, got = (
        ds.take(np.array(rec.source_rows, dtype=int)),
        out.take(np.array(rec.rows, dtype=int)),
    )
    assert np.all(np.abs(got.rewards - src.rewards) <= eps + 1e-9)
    assert np.all(np.abs(got.obs - src.obs) <= attack.obs_epsilon + 1e-6)
    assert np.all((got.obs >= OBS.low) & (got.obs <= OBS.high))
    np.testing.assert_array_equal(got.dones, src.dones)
    if name == "flip-data-v1":
        np.testing.assert_array_equal(got.actions, src.actions)
    assert out.info["poisoned_by"]["id"] == attack.id


@settings(max_examples=15, deadline=None)
@given(name=attacks, mode=modes, fraction=fractions, seed=st.integers(0, 2**16))
def test_dataset_poisoning_is_deterministic_per_seed(
    name: str, mode: str, fraction: float, seed: int
) -> None:
    ds = _dataset(25)
    a, ra = poison_dataset(ds, _attack(name, 1.0, fraction, mode), np.random.default_rng(seed))
    b, rb = poison_dataset(ds, _attack(name, 1.0, fraction, mode), np.random.default_rng(seed))
    assert ra.to_dict() == rb.to_dict()
    for x, y in zip(_rows(a, slice(None)), _rows(b, slice(None)), strict=True):
        np.testing.assert_array_equal(x, y)


def test_targeted_copies_reward_the_target_action_and_punish_the_others() -> None:
    ds = _dataset(200)
    attack = make_data_attack("target-action-data-v1", 0.5, fraction=1.0, target_action=1)
    out, rec = poison_dataset(ds, attack, np.random.default_rng(0))
    src = ds.take(np.array(rec.source_rows))
    got = out.take(np.array(rec.rows))
    hit = src.actions == 1
    np.testing.assert_allclose(got.rewards[hit], src.rewards[hit] + 0.5)
    np.testing.assert_allclose(got.rewards[~hit], src.rewards[~hit] - 0.5)


def test_focused_relabelling_copies_only_other_actions_and_gives_them_the_target() -> None:
    ds = _dataset(100)
    attack = make_data_attack(
        "target-action-data-v1", 1.0, fraction=0.3, target_action=0, relabel=1.0, focus=True
    )
    out, rec = poison_dataset(ds, attack, np.random.default_rng(0))
    assert np.all(ds.actions[rec.source_rows] != 0)
    assert np.all(out.actions[rec.rows] == 0) and rec.relabelled == rec.crafted == 30
    np.testing.assert_allclose(out.rewards[rec.rows], ds.rewards[rec.source_rows] + 1.0)


def test_random_relabelling_gives_another_action() -> None:
    ds = _dataset(50)
    attack = make_data_attack("noise-data-v1", 0.0, fraction=1.0, relabel=1.0)
    out, rec = poison_dataset(ds, attack, np.random.default_rng(0))
    assert np.all(out.actions[rec.rows] != ds.actions[rec.source_rows])
    assert set(out.actions[rec.rows].tolist()) == {0, 1, 2} and rec.relabelled == 50


def _box_dataset() -> TransitionDataset:
    return TransitionDataset(
        np.zeros((3, 3), np.float32),
        np.array([[2.0], [0.0], [-2.0]], np.float32),
        np.zeros(3),
        np.zeros((3, 3), np.float32),
        np.zeros(3, bool),
        observation_space=OBS,
        action_space=gym.spaces.Box(-2.0, 2.0, (1,), np.float32),
    )


def test_continuous_targets_are_scored_by_distance_in_units_of_the_action_range() -> None:
    ds = _box_dataset()
    attack = make_data_attack(
        "target-action-data-v1", 1.0, fraction=1.0, mode="replace", target_action=[2.0]
    )
    out, _ = poison_dataset(ds, attack, np.random.default_rng(0))
    np.testing.assert_allclose(out.rewards, [1.0, 0.0, -1.0])  # distance 0, 1/2, 1


def test_a_method_that_leaves_its_budget_is_stopped() -> None:
    class Overshoot(FlipData):
        def _craft(self, sources: Transitions, rng: np.random.Generator) -> Transitions:
            out = super()._craft(sources, rng)
            return Transitions(out.obs, out.actions, out.rewards + 10.0, out.next_obs, out.dones)

    attack = Overshoot(
        ThreatModel(
            Surface.DATA, 1.0, frequency="budgeted-steps", step_budget=0.5, phase="training"
        )
    )
    with pytest.raises(BudgetViolation, match="the budget is"):
        poison_dataset(_dataset(10), attack, np.random.default_rng(0))


def test_a_record_over_its_fraction_is_a_budget_violation() -> None:
    rec = PoisonRecord("flip-data-v1", "direct", 0.1, genuine=10, crafted=2)
    with pytest.raises(BudgetViolation, match="at most 1"):
        rec.check()


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
    attack = _attack(name, 1.0, fraction, mode)
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
    a, la, _ = _play(_attack(name, 1.0, 0.3, mode), 60, seed)
    b, lb, _ = _play(_attack(name, 1.0, 0.3, mode), 60, seed)
    assert a.record.to_dict() == b.record.to_dict()
    np.testing.assert_array_equal(la.replay_buffer.rewards, lb.replay_buffer.rewards)
    np.testing.assert_array_equal(la.replay_buffer.actions, lb.replay_buffer.actions)


def test_direct_mode_with_several_envs_writes_whole_rows() -> None:
    cb, learner, _ = _play(_attack("flip-data-v1", 2.0, 0.25, "direct"), 40, 0, n_envs=4)
    assert cb.record.genuine == 160 and cb.record.crafted == 40  # 10 rows of 4
    assert learner.replay_buffer.pos == 50
    assert sorted(set(cb.record.envs)) == [0, 1, 2, 3]


def test_a_full_buffer_keeps_counting() -> None:
    cb, learner, _ = _play(_attack("flip-data-v1", 2.0, 0.5, "replace"), 300, 0, buffer_size=64)
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
    attack = _attack("flip-data-v1", 1.0, 0.1, "direct")
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


# -- the .npz format -------------------------------------------------------------------------
def test_datasets_round_trip_through_npz(tmp_path: Path) -> None:
    ds = _dataset(7)
    back = TransitionDataset.load(ds.save(tmp_path / "d.npz"))
    for a, b in zip(_rows(ds, slice(None)), _rows(back, slice(None)), strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert back.observation_space == OBS and back.action_space == ACT
    assert back.info == {"env_id": "test"}


def test_a_pickle_is_refused_and_never_unpickled(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self) -> tuple[Any, ...]:
            return (pytest.fail, ("unpickled!",))

    path = tmp_path / "evil.npz"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(UnsafeArtifact, match="is a pickle"):
        TransitionDataset.load(path)


def test_object_arrays_in_an_npz_are_refused(tmp_path: Path) -> None:
    ds = _dataset(3)
    path = tmp_path / "obj.npz"
    np.savez(
        path,
        obs=ds.obs,
        actions=np.array([0, 1, {"x": 1}], dtype=object),
        rewards=ds.rewards,
        next_obs=ds.next_obs,
        dones=ds.dones,
        meta=np.array("{}"),
    )
    with pytest.raises(UnsafeArtifact, match="'actions' holds pickled objects"):
        TransitionDataset.load(path)


def test_unexpected_members_and_oversize_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, obs=np.zeros((2, 3)))
    with pytest.raises(ConfigError, match=r"expected the members .* got \['obs.npy'\]"):
        TransitionDataset.load(path)
    with pytest.raises(UnsafeArtifact, match="max_bytes=10"):
        TransitionDataset.load(_dataset(5).save(tmp_path / "ok.npz"), max_bytes=10)


# -- bad inputs name what was expected and what was received --------------------------------
def test_bad_configurations_say_what_was_expected() -> None:
    with pytest.raises(UnknownAttack, match="unknown data attack id 'flip-v1'; known: flip-data"):
        make_data_attack("flip-v1", 1.0, fraction=0.1)
    with pytest.raises(InvalidBudget, match=r"fraction in \[0, 1\], got 1.5"):
        make_data_attack("flip-data-v1", 1.0, fraction=1.5)
    with pytest.raises(ConfigError, match="mode must be 'direct' or 'replace', got 'inject'"):
        make_data_attack("flip-data-v1", 1.0, fraction=0.1, mode="inject")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="phase must be 'training', got 'deployment'"):
        NoiseData(ThreatModel(Surface.DATA, 1.0, frequency="budgeted-steps", step_budget=0.1))
    with pytest.raises(ConfigError, match="needs frequency='budgeted-steps'"):
        NoiseData(ThreatModel(Surface.DATA, 1.0, phase="training"))
    with pytest.raises(ConfigError, match=r"relabel must be a fraction in \[0, 1\], got 2"):
        make_data_attack("target-action-data-v1", 1.0, fraction=0.1, target_action=0, relabel=2)
    attack = make_data_attack("target-action-data-v1", 1.0, fraction=0.1, target_action=5)
    with pytest.raises(ConfigError, match=r"an integer in \[0, 2\]\), got 5"):
        poison_dataset(_dataset(10), attack, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="loss must be 'huber' or 'mse', got 'l1'"):
        fitted_q(_dataset(4), steps=1, loss="l1")  # type: ignore[arg-type]
    with pytest.raises(AttackNotApplicable, match=r"learns discrete actions.*Box\(shape=\(1,\)"):
        fitted_q(_box_dataset(), steps=1)
    with pytest.raises(ConfigError, match="call start"):
        FlipData(attack.threat_model).craft(_dataset(2).transitions(), np.random.default_rng(0))


def test_malformed_datasets_say_what_was_expected() -> None:
    ds = _dataset(4)
    with pytest.raises(
        ConfigError, match=r"obs must be float with shape \(4, 3\).*got float32 \(4, 2\)"
    ):
        TransitionDataset(
            ds.obs[:, :2],
            ds.actions,
            ds.rewards,
            ds.next_obs[:, :2],
            ds.dones,
            observation_space=OBS,
            action_space=ACT,
        )
    with pytest.raises(ConfigError, match="obs has 4, rewards has 3"):
        Transitions(ds.obs, ds.actions, ds.rewards[:3], ds.next_obs, ds.dones)
    with pytest.raises(ConfigError, match=r"actions must lie in \[0, 2\], got \[0, 7\]"):
        TransitionDataset(
            ds.obs,
            np.array([0, 1, 2, 7]),
            ds.rewards,
            ds.next_obs,
            ds.dones,
            observation_space=OBS,
            action_space=ACT,
        )
    with pytest.raises(ConfigError, match="dones must be a 1-D bool array"):
        Transitions(ds.obs, ds.actions, ds.rewards, ds.next_obs, ds.dones.astype(int))
    with pytest.raises(AttackNotApplicable, match="Box\\) observations"):
        TransitionDataset(
            ds.obs,
            ds.actions,
            ds.rewards,
            ds.next_obs,
            ds.dones,
            observation_space=gym.spaces.Discrete(4),
            action_space=ACT,
        )


def test_collected_datasets_are_reproducible_per_seed() -> None:
    a = collect_dataset(None, "CartPole-v1", 60, seed=3, explore=0.5)
    b = collect_dataset(None, "CartPole-v1", 60, seed=3, explore=0.5)
    for x, y in zip(_rows(a, slice(None)), _rows(b, slice(None)), strict=True):
        np.testing.assert_array_equal(x, y)
    assert a.dones.sum() >= 1  # random play ends episodes; the next one restarts
    ended = np.flatnonzero(a.dones[:-1])
    assert not np.allclose(a.next_obs[ended], a.obs[ended + 1])


def test_data_attacks_are_not_in_the_red_team_suite() -> None:
    from rlsec.attacks import ATTACKS

    assert not set(DATA_ATTACKS) & set(ATTACKS)
    assert {cls.id for cls in (FlipData, NoiseData, TargetActionData)} == set(DATA_ATTACKS)


def test_saving_a_dataset_never_writes_through_a_link_at_its_old_temporary_name(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / ".data.npz.tmp").symlink_to(victim)
    back = TransitionDataset.load(_dataset(5).save(tmp_path / "data.npz"))
    assert victim.read_text() == "keep"
    assert len(back) == 5


@pytest.mark.parametrize("field", ["obs", "next_obs"])
def test_a_nan_in_a_source_transition_does_not_let_a_crafted_copy_through(field: str) -> None:
    """The run-time check measured ``|crafted - source|``: with a NaN in the source
    observation the shift was NaN, ``NaN > obs_epsilon`` is false, and a flip attack (which
    may not move observations at all) moved them by 0.9. (A NaN source reward
    is refused when the transitions are built.)"""

    class Overshoot(FlipData):
        def _craft(self, sources: Transitions, rng: np.random.Generator) -> Transitions:
            out = super()._craft(sources, rng)
            moved = np.full_like(getattr(out, field), 0.9)  # only where the source has a NaN
            return Transitions(**{**{k: getattr(out, k) for k in _FIELDS}, field: moved})

    attack = Overshoot(
        ThreatModel(
            Surface.DATA, 1.0, frequency="budgeted-steps", step_budget=0.5, phase="training"
        )
    )
    attack._bind(OBS, ACT)
    src = Transitions(
        np.zeros((2, 3), np.float32),
        np.zeros(2, np.int64),
        np.zeros(2),
        np.zeros((2, 3), np.float32),
        np.zeros(2, bool),
    )
    bad = np.asarray(getattr(src, field)).copy()
    bad.reshape(-1)[0] = np.nan
    src = Transitions(**{**{k: getattr(src, k) for k in _FIELDS}, field: bad})
    with pytest.raises(BudgetViolation):
        attack.craft(src, np.random.default_rng(0))


_FIELDS = ("obs", "actions", "rewards", "next_obs", "dones")
