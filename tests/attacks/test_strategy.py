"""Strategy replay refuses what it cannot show to be within its budget (the replay itself is
tested with Storm in tests/verify/test_attack.py)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlsec.attacks import StrategyReplay
from rlsec.core import Surface, ThreatModel
from rlsec.errors import AttackNotApplicable
from rlsec.policies import from_torch
from rlsec.verify.attack import Strategy


def _strategy(radius: float) -> Strategy:
    n = 16
    return Strategy(
        "FrozenLake-v1", None, radius, "index", 'Pmax=? [F "hole"]', 0.5,
        np.arange(n), np.zeros(n, np.int64),
    )  # fmt: skip


@pytest.mark.parametrize("radius", [float("nan"), 1.5, float("inf")])
def test_a_strategy_radius_the_budget_does_not_cover_is_refused(radius: float) -> None:
    """``ε < NaN`` is false: a strategy whose radius was NaN passed the budget test."""
    policy = from_torch(torch.nn.Linear(1, 4), gym.spaces.Discrete(16), gym.spaces.Discrete(4))
    replay = StrategyReplay(
        ThreatModel(Surface.OBSERVATION, 1.0, "index"), strategy=_strategy(radius)
    )
    with pytest.raises(AttackNotApplicable, match="cannot play it"):
        replay.check_applicable(policy)
    ok = StrategyReplay(ThreatModel(Surface.OBSERVATION, 1.0, "index"), strategy=_strategy(1.0))
    ok.check_applicable(policy)
