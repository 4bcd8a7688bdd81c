"""Offline-dataset poisoning: the budget spent exactly and recorded, reproducible collection."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from data_helpers import OBS, attacks, fractions, make_attack, make_dataset, modes, rows_of
from rlsec.attacks.offline import collect_dataset, poison_dataset


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
    ds = make_dataset(n, seed)
    before = rows_of(ds, slice(None))
    attack = make_attack(name, eps, fraction, mode)
    out, rec = poison_dataset(ds, attack, np.random.default_rng(seed))
    k = math.floor(fraction * n + 1e-9)
    assert rec.genuine == n and rec.crafted == k and len(rec.rows) == k == len(rec.source_rows)
    assert rec.crafted <= fraction * n + 1e-6
    for a, b in zip(before, rows_of(ds, slice(None)), strict=True):
        np.testing.assert_array_equal(a, b)  # the input is not modified
    crafted = np.zeros(len(out), dtype=bool)
    crafted[rec.rows] = True
    if mode == "direct":
        assert len(out) == n + k
        for a, b in zip(rows_of(out, ~crafted), before, strict=True):
            np.testing.assert_array_equal(a, b)  # genuine transitions untouched, in order
    else:
        assert len(out) == n and rec.rows == rec.source_rows
        for a, b in zip(rows_of(out, ~crafted), rows_of(ds, ~crafted), strict=True):
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
    ds = make_dataset(25)
    a, ra = poison_dataset(ds, make_attack(name, 1.0, fraction, mode), np.random.default_rng(seed))
    b, rb = poison_dataset(ds, make_attack(name, 1.0, fraction, mode), np.random.default_rng(seed))
    assert ra.to_dict() == rb.to_dict()
    for x, y in zip(rows_of(a, slice(None)), rows_of(b, slice(None)), strict=True):
        np.testing.assert_array_equal(x, y)


def test_collected_datasets_are_reproducible_per_seed() -> None:
    a = collect_dataset(None, "CartPole-v1", 60, seed=3, explore=0.5)
    b = collect_dataset(None, "CartPole-v1", 60, seed=3, explore=0.5)
    for x, y in zip(rows_of(a, slice(None)), rows_of(b, slice(None)), strict=True):
        np.testing.assert_array_equal(x, y)
    assert a.dones.sum() >= 1  # random play ends episodes; the next one restarts
    ended = np.flatnonzero(a.dones[:-1])
    assert not np.allclose(a.next_obs[ended], a.obs[ended + 1])
