"""Transitions and datasets: the .npz format (nothing unpickled), malformed inputs, the record."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from data_helpers import ACT, OBS, make_dataset, rows_of
from rlsec.attacks.transitions import PoisonRecord, TransitionDataset, Transitions
from rlsec.errors import AttackNotApplicable, BudgetViolation, ConfigError, UnsafeArtifact


def test_a_record_over_its_fraction_is_a_budget_violation() -> None:
    rec = PoisonRecord("flip-data-v1", "direct", 0.1, genuine=10, crafted=2)
    with pytest.raises(BudgetViolation, match="at most 1"):
        rec.check()


# -- the .npz format -------------------------------------------------------------------------
def test_datasets_round_trip_through_npz(tmp_path: Path) -> None:
    ds = make_dataset(7)
    back = TransitionDataset.load(ds.save(tmp_path / "d.npz"))
    for a, b in zip(rows_of(ds, slice(None)), rows_of(back, slice(None)), strict=True):
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
    ds = make_dataset(3)
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
        TransitionDataset.load(make_dataset(5).save(tmp_path / "ok.npz"), max_bytes=10)


def test_malformed_datasets_say_what_was_expected() -> None:
    ds = make_dataset(4)
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


def test_saving_a_dataset_never_writes_through_a_link_at_its_old_temporary_name(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / ".data.npz.tmp").symlink_to(victim)
    back = TransitionDataset.load(make_dataset(5).save(tmp_path / "data.npz"))
    assert victim.read_text() == "keep"
    assert len(back) == 5
