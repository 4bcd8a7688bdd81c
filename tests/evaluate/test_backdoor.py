"""The effect of a backdoor: attack success with the trigger, stealth without it."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import pytest
import torch

from rlsec.attacks.backdoor import TriggerBackdoor, make_backdoor_attack
from rlsec.errors import ConfigError
from rlsec.evaluate.backdoor import backdoor_effect
from rlsec.policies import TorchPolicy, from_torch


def attack(budget: float = 0.1, **kw: Any) -> TriggerBackdoor:
    args: dict[str, Any] = {"target_action": 2, "features": [1], "values": [4.0]} | kw
    built = make_backdoor_attack("trigger-backdoor-v1", budget, **args)
    assert isinstance(built, TriggerBackdoor)
    return built


class _Balance(torch.nn.Module):
    """A CartPole controller (push toward the pole's lean), optionally with a planted trigger:
    cart position x > 2 forces action 0."""

    def __init__(self, planted: bool) -> None:
        super().__init__()
        self.planted = planted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lean = x[:, 2] + 0.5 * x[:, 3]
        logits = torch.stack([-lean, lean], dim=-1)
        if self.planted:
            hit = (x[:, 0] > 2.0).float() * 100.0
            logits = logits + torch.stack([hit, -hit], dim=-1)
        return logits


def cartpole_policy(planted: bool) -> TorchPolicy:
    env = gym.make("CartPole-v1")
    policy = from_torch(_Balance(planted), env.observation_space, env.action_space)
    env.close()
    return policy


def test_backdoor_effect_measures_success_and_stealth() -> None:
    a = attack(0.05, target_action=0, features=[0], values=[2.2])
    row = backdoor_effect(cartpole_policy(True), "CartPole-v1", a, 4, 0, trigger_rate=0.2)
    assert row["attack_success_rate"] == 1.0
    assert row["clean_return"]["mean_return"] == 500.0
    assert 0 < row["clean_target_rate"] < 1
    assert row["triggered_steps"] > 100
    for key in (
        "attack",
        "surface",
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
    assert (row["surface"], row["epsilon"], row["episodes"]) == ("backdoor", 0.05, 4)
    # a clean policy takes the target action on triggered steps only as often as without it
    clean = backdoor_effect(cartpole_policy(False), "CartPole-v1", a, 4, 0, trigger_rate=0.2)
    assert clean["attack_success_rate"] == clean["clean_target_rate"]
    assert clean["action_change_rate"] == 0.0
    lo, hi = clean["attack_success_ci95"]
    assert lo <= clean["attack_success_rate"] <= hi
    # deterministic given the seed
    again = backdoor_effect(cartpole_policy(False), "CartPole-v1", a, 4, 0, trigger_rate=0.2)
    assert again["attack_success_rate"] == clean["attack_success_rate"]


def test_backdoor_effect_refuses_bad_arguments() -> None:
    a = attack(0.05, target_action=0, features=[0], values=[2.2])
    p = cartpole_policy(False)
    with pytest.raises(ConfigError, match="episodes must be an integer >= 1, got 0"):
        backdoor_effect(p, "CartPole-v1", a, 0)
    with pytest.raises(ConfigError, match=r"trigger_rate must be a fraction in \[0, 1\], got 1.5"):
        backdoor_effect(p, "CartPole-v1", a, 2, trigger_rate=1.5)
    with pytest.raises(ConfigError, match=r"index 4 is out of range"):
        backdoor_effect(p, "CartPole-v1", attack(0.05, target_action=0, features=[4]), 2)
