"""The damage of data poisoning: the offline learner and the clean-versus-poisoned comparison."""

from __future__ import annotations

import numpy as np
import pytest

from data_helpers import box_dataset, make_dataset
from rlsec.attacks.data import make_data_attack
from rlsec.attacks.offline import collect_dataset, poison_dataset
from rlsec.errors import AttackNotApplicable, ConfigError
from rlsec.evaluate.data import data_damage, fitted_q

ENV = "CartPole-v1"


def test_fitted_q_says_what_was_expected() -> None:
    with pytest.raises(ConfigError, match="loss must be 'huber' or 'mse', got 'l1'"):
        fitted_q(make_dataset(4), steps=1, loss="l1")  # type: ignore[arg-type]
    with pytest.raises(AttackNotApplicable, match=r"learns discrete actions.*Box\(shape=\(1,\)"):
        fitted_q(box_dataset(), steps=1)


def test_a_policy_against_itself_shows_no_damage_and_the_row_says_what_was_run() -> None:
    ds = collect_dataset(None, ENV, 64, seed=0)
    attack = make_data_attack("target-action-data-v1", 1.0, fraction=0.5, target_action=0)
    _, record = poison_dataset(ds, attack, np.random.default_rng(0))
    policy = fitted_q(ds, steps=5)
    row = data_damage(policy, policy, ENV, attack, record=record, episodes=3, seed=4)
    assert row["action_change_rate"] == 0.0
    assert row["mean_return"] == row["clean_return"]["mean_return"]
    assert row["target_action_rate"] == row["clean_target_rate"] is not None
    assert row["target_action"] == 0 and row["budget"] == record.summary()
    assert (row["surface"], row["epsilon"], row["fraction"], row["mode"]) == (
        "data",
        1.0,
        0.5,
        "direct",
    )
    assert row["episodes"] == 3 and row["per_seed"][0]["seed"] == 4


def test_an_untargeted_attack_has_no_target_rate_unless_one_is_given() -> None:
    ds = collect_dataset(None, ENV, 64, seed=0)
    attack = make_data_attack("flip-data-v1", 1.0, fraction=0.1)
    policy = fitted_q(ds, steps=5)
    row = data_damage(policy, policy, ENV, attack, episodes=2)
    assert row["target_action"] is None and row["target_action_rate"] is None
    assert row["budget"] is None
    row = data_damage(policy, policy, ENV, attack, episodes=2, target_action=1)
    assert row["target_action"] == 1 and 0.0 <= row["target_action_rate"] <= 1.0


def test_bad_episode_and_env_counts_are_refused() -> None:
    ds = collect_dataset(None, ENV, 16, seed=0)
    attack = make_data_attack("flip-data-v1", 1.0, fraction=0.1)
    policy = fitted_q(ds, steps=1)
    with pytest.raises(ConfigError, match="episodes must be an integer >= 1, got 0"):
        data_damage(policy, policy, ENV, attack, episodes=0)
    with pytest.raises(ConfigError, match="num_envs must be an integer >= 1, got 0"):
        data_damage(policy, policy, ENV, attack, episodes=2, num_envs=0)
