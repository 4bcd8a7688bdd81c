"""The damage of parameter attacks: the non-finite decoding rule and the damage report."""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlsec.attacks._bit_search import apply_flips
from rlsec.attacks.parameters import BitFlipParameters, make_parameter_attack
from rlsec.core import Surface, ThreatModel
from rlsec.envs import env_spaces
from rlsec.evaluate.parameters import act_with_fallback, parameter_damage
from rlsec.policies import TorchPolicy, from_torch


# -- non-finite outputs and the damage report ----------------------------------------------
def test_non_finite_outputs_are_decoded_by_an_explicit_rule() -> None:
    nan, inf = float("nan"), float("inf")
    lin = torch.nn.Linear(1, 3)
    disc = TorchPolicy(gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(3, start=1), lin, "logits")
    cases = [([nan, 1.0, 2.0], 3), ([nan, nan, nan], 1), ([1.0, inf, nan], 2), ([0.0, 2.0, 1.0], 2)]
    for row, action in cases:
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(row).reshape(3, 1))
            lin.bias.zero_()
        a, bad = act_with_fallback(disc, np.ones((1, 1), np.float32))
        assert int(a[0]) == action, row
        assert bool(bad[0]) == (not np.isfinite(row).all())
    lin2 = torch.nn.Linear(1, 3)
    cont = TorchPolicy(
        gym.spaces.Box(-1, 1, (1,)),
        gym.spaces.Box(
            np.array([-2, 0.5, -2], np.float32), np.array([2, 1, 2], np.float32), dtype=np.float32
        ),
        lin2,
        "action",
    )
    with torch.no_grad():
        lin2.weight.copy_(torch.tensor([[nan], [nan], [-inf]]))
        lin2.bias.zero_()
    a, bad = act_with_fallback(cont, np.ones((1, 1), np.float32))
    assert a[0].tolist() == [0.0, 0.5, -2.0]  # NaN -> 0 clipped into the bounds, -inf -> low
    assert bad.tolist() == [True]


class _ExponentFlip(BitFlipParameters):
    """Flips bit 30 of the first weight: 1.5 (exponent 127) becomes NaN."""

    def _tamper(self, policy: Any, weights: Any, probe: Any, rng: Any, progress: Any) -> Any:
        self.flips = [("policy.0.weight", 0, 30)]
        return apply_flips(weights, self.flips)


def test_parameter_damage_reports_rows_and_survives_a_nan_network() -> None:
    obs_space, act_space = env_spaces("CartPole-v1")
    lin = torch.nn.Linear(4, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.5, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
        lin.bias.zero_()
    policy = from_torch(lin, obs_space, act_space)
    nan_attack = _ExponentFlip(
        ThreatModel(Surface.PARAMETERS, 1, norm="l0", knowledge="black-box"), mode="random"
    )
    noise = make_parameter_attack("noise-params-v1", 0.1)
    r = parameter_damage(
        policy,
        "CartPole-v1",
        [noise, nan_attack],
        episodes=4,
        seeds=[0],
        num_envs=4,
        probe_size=16,
    )
    json.dumps(r, allow_nan=False)  # a valid results file, NaN network or not
    assert r["kind"] == "parameter-damage"
    assert r["clean"]["episodes"] == 4
    noisy, broken = r["results"]
    for row in r["results"]:
        assert row["surface"] == "parameters"
        assert row["episodes"] == 4
        assert row["threat_model"]["surface"] == "parameters"
        assert row["atlas"] == ["AML.T0018.000"]
        assert 0.0 <= row["action_change_rate"] <= 1.0
    assert (noisy["epsilon"], noisy["norm"], noisy["unit"]) == (0.1, "linf", "std")
    assert noisy["nonfinite_outputs"] == 0.0
    assert broken["nonfinite_outputs"] == 1.0
    assert broken["probe_nonfinite_outputs"] == 1.0
    assert (broken["epsilon"], broken["norm"]) == (1.0, "l0")
    # logit 0 is NaN on every row, so the fallback always pushes right: a short episode
    assert broken["mean_return"] < 15
    assert broken["per_seed"][0]["weights_sha256"] != policy.info.sha256
