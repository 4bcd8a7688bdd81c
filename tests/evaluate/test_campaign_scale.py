"""The scale of ε in std units: the policy under test does not choose its own yardstick."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlsec.evaluate import CampaignConfig, run_campaign
from rlsec.evaluate.campaign import _scale
from rlsec.policies import from_torch, load_policy, zoo_names
from rlsec.policies.base import TorchPolicy
from rlsec.stats import STD_TOLERANCE

STD = CampaignConfig(eps_unit="std")


def _with_stats(policy: TorchPolicy, stats: Any) -> TorchPolicy:
    policy.info = dataclasses.replace(policy.info, observation_stats=stats)
    return policy


def _box_zoo() -> list[str]:
    return [
        n
        for n in zoo_names()
        if isinstance(load_policy(f"zoo:{n}").observation_space, gym.spaces.Box)
    ]


@pytest.mark.parametrize("name", _box_zoo())
def test_every_zoo_policy_keeps_its_recorded_std(name: str) -> None:
    """The honest zoo's numbers do not move: each recorded std passes the rollout check."""
    policy = load_policy(f"zoo:{name}")
    findings: list[dict[str, Any]] = []
    scale, source = _scale(policy, STD, str(policy.info.env_id), findings)
    assert findings == []
    assert source.startswith("policy spec (clean observation std), within a factor of 2")
    assert scale is not None
    assert scale.tolist() == policy.info.observation_stats["std"]  # bit for bit


def test_spec_std_of_1e_30_does_not_blind_the_red_team() -> None:
    honest = load_policy("zoo:cartpole-ppo")
    measured, _ = _scale(_with_stats(load_policy("zoo:cartpole-ppo"), None), STD, "CartPole-v1")
    hostile = _with_stats(load_policy("zoo:cartpole-ppo"), {"std": [1e-30] * 4})
    cfg = dict(attacks=["uniform-obs-v1"], epsilons=[1.0], alphas=[], episodes=2, num_envs=2)
    r = run_campaign(hostile, CampaignConfig(**cfg))

    assert measured is not None
    assert r["config"]["scale"] == measured.tolist()
    assert r["config"]["scale_source"].startswith("calibration rollout")
    assert "the policy spec's std was not used" in r["config"]["scale_source"]
    (finding,) = r["findings"]
    assert finding["detector"] == "eps-scale-check"
    assert finding["severity"] == "medium"
    assert finding["surface"] == "observation"
    assert finding["evidence"]["features"] == [0, 1, 2, 3]
    assert finding["evidence"]["declared_std"] == [1e-30] * 4
    assert finding["evidence"]["tolerance"] == STD_TOLERANCE
    json.dumps(r, allow_nan=False)
    # the honest spec records no finding and keeps its own numbers
    clean = run_campaign(honest, CampaignConfig(**cfg))
    assert clean["findings"] == []
    assert clean["config"]["scale"] == honest.info.observation_stats["std"]


@pytest.fixture(scope="module")
def random_cartpole() -> tuple[TorchPolicy, np.ndarray]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    env = gym.make("CartPole-v1")
    policy = from_torch(net, env.observation_space, env.action_space)
    measured, source = _scale(policy, STD, "CartPole-v1")
    assert source.startswith("calibration rollout")
    assert measured is not None
    return policy, measured


@pytest.mark.parametrize(
    ("factor", "kept"),
    [(1.0, True), (1.9, True), (1 / 1.9, True), (2.1, False), (1 / 2.1, False)],
)
def test_recorded_std_is_kept_only_within_the_tolerance(
    random_cartpole: tuple[TorchPolicy, np.ndarray], factor: float, kept: bool
) -> None:
    policy, measured = random_cartpole
    declared = measured * np.array([1.0, 1.0, factor, 1.0])
    findings: list[dict[str, Any]] = []
    scale, _ = _scale(_with_stats(policy, {"std": declared.tolist()}), STD, "CartPole-v1", findings)
    assert scale is not None
    if kept:
        assert scale.tolist() == declared.tolist()
        assert findings == []
    else:
        assert scale.tolist() == measured.tolist()
        assert [f["evidence"]["features"] for f in findings] == [[2]]


@pytest.mark.parametrize(
    "stats",
    [
        pytest.param({"std": [float("nan")] * 4}, id="nan"),
        pytest.param({"std": ["0.1"] * 4}, id="strings"),
        pytest.param({"std": [0.1, 0.1, 0.1]}, id="too-short"),
        pytest.param({"std": [-0.1, 0.1, 0.1, 0.1]}, id="negative"),
        pytest.param({"mean": [0.0] * 4}, id="no-std"),
        pytest.param({"std": [0.0, 0.0, 0.0, 0.0]}, id="all-zero"),
    ],
)
def test_malformed_or_frozen_std_in_policy_info_is_replaced_and_reported(
    random_cartpole: tuple[TorchPolicy, np.ndarray], stats: dict[str, Any]
) -> None:
    policy, measured = random_cartpole
    findings: list[dict[str, Any]] = []
    scale, _ = _scale(_with_stats(policy, stats), STD, "CartPole-v1", findings)
    assert scale is not None
    assert scale.tolist() == measured.tolist()
    assert len(findings) == 1
    assert findings[0]["detector"] == "eps-scale-check"
