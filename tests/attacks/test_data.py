"""Data attacks: what each strategy crafts, its budget checked at run time, bad parameters."""

from __future__ import annotations

import numpy as np
import pytest

from data_helpers import ACT, OBS, box_dataset, make_dataset
from rlsec.attacks.data import DATA_ATTACKS, FlipData, NoiseData, TargetActionData, make_data_attack
from rlsec.attacks.offline import poison_dataset
from rlsec.attacks.transitions import Transitions
from rlsec.core import Surface, ThreatModel
from rlsec.errors import BudgetViolation, ConfigError, InvalidBudget, UnknownAttack


def test_targeted_copies_reward_the_target_action_and_punish_the_others() -> None:
    ds = make_dataset(200)
    attack = make_data_attack("target-action-data-v1", 0.5, fraction=1.0, target_action=1)
    out, rec = poison_dataset(ds, attack, np.random.default_rng(0))
    src = ds.take(np.array(rec.source_rows))
    got = out.take(np.array(rec.rows))
    hit = src.actions == 1
    np.testing.assert_allclose(got.rewards[hit], src.rewards[hit] + 0.5)
    np.testing.assert_allclose(got.rewards[~hit], src.rewards[~hit] - 0.5)


def test_focused_relabelling_copies_only_other_actions_and_gives_them_the_target() -> None:
    ds = make_dataset(100)
    attack = make_data_attack(
        "target-action-data-v1", 1.0, fraction=0.3, target_action=0, relabel=1.0, focus=True
    )
    out, rec = poison_dataset(ds, attack, np.random.default_rng(0))
    assert np.all(ds.actions[rec.source_rows] != 0)
    assert np.all(out.actions[rec.rows] == 0) and rec.relabelled == rec.crafted == 30
    np.testing.assert_allclose(out.rewards[rec.rows], ds.rewards[rec.source_rows] + 1.0)


def test_random_relabelling_gives_another_action() -> None:
    ds = make_dataset(50)
    attack = make_data_attack("noise-data-v1", 0.0, fraction=1.0, relabel=1.0)
    out, rec = poison_dataset(ds, attack, np.random.default_rng(0))
    assert np.all(out.actions[rec.rows] != ds.actions[rec.source_rows])
    assert set(out.actions[rec.rows].tolist()) == {0, 1, 2} and rec.relabelled == 50


def test_continuous_targets_are_scored_by_distance_in_units_of_the_action_range() -> None:
    ds = box_dataset()
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
        poison_dataset(make_dataset(10), attack, np.random.default_rng(0))


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
        poison_dataset(make_dataset(10), attack, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="call start"):
        FlipData(attack.threat_model).craft(make_dataset(2).transitions(), np.random.default_rng(0))


def test_data_attacks_are_not_in_the_red_team_suite() -> None:
    from rlsec.attacks import ATTACKS

    assert not set(DATA_ATTACKS) & set(ATTACKS)
    assert {cls.id for cls in (FlipData, NoiseData, TargetActionData)} == set(DATA_ATTACKS)


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
    attack.bind(OBS, ACT)
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
