"""The damage of dynamics attacks: the results shape, ε = 0 replays the clean episodes, and
validation before anything runs."""

from __future__ import annotations

import pytest

from rlsec.attacks.dynamics import make_dynamics_attack
from rlsec.errors import ConfigError
from rlsec.evaluate.dynamics import dynamics_damage
from rlsec.policies import TorchPolicy, load_policy


@pytest.fixture(scope="module")
def victim() -> TorchPolicy:
    return load_policy("zoo:cartpole-ppo")


def test_damage_rows_have_the_results_shape_and_eps_zero_is_clean(victim: TorchPolicy) -> None:
    attacks = [
        make_dynamics_attack("shift-dynamics-v1", 0.0),
        make_dynamics_attack("noise-dynamics-v1", 0.0),
        make_dynamics_attack("rarl-dynamics-v1", 0.0),
        make_dynamics_attack("shift-dynamics-v1", 0.8, parameters=["force_mag"], direction="down"),
    ]
    r = dynamics_damage(victim, "CartPole-v1", attacks, episodes=3, seeds=[0, 1], num_envs=3)
    assert r["kind"] == "dynamics-damage"
    assert r["clean"]["episodes"] == 6
    clean = r["clean"]["mean_return"]
    for row in r["results"][:3]:
        assert row["mean_return"] == clean  # ε = 0 replays the clean episodes exactly
        assert row["budget_used"]["max_budget_fraction"] == 0.0
    weak = r["results"][3]
    assert weak["budget_used"]["max_budget_fraction"] == pytest.approx(1.0)
    for row in r["results"]:
        assert row["surface"] == "dynamics"
        for key in (
            "attack",
            "label",
            "epsilon",
            "norm",
            "unit",
            "mean_return",
            "ci95",
            "episodes",
            "mean_length",
            "std_return",
            "action_change_rate",
            "mean_action_shift",
            "per_seed",
            "threat_model",
            "atlas",
            "reference",
            "params",
            "seconds",
        ):
            assert key in row
        assert row["threat_model"]["surface"] == "dynamics"
        assert [p["seed"] for p in row["per_seed"]] == [0, 1]


def test_damage_validates_before_running(victim: TorchPolicy) -> None:
    with pytest.raises(ConfigError, match="Pendulum-v1 has no dynamics parameter"):
        dynamics_damage(
            load_policy("zoo:pendulum-sac"),
            attacks=[make_dynamics_attack("shift-dynamics-v1", 0.1, parameters=["masspole"])],
        )
    with pytest.raises(ConfigError, match="episodes"):
        dynamics_damage(victim, attacks=["noise-dynamics-v1"], budgets=[0.1], episodes=0)
