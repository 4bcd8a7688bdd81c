from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rlsec.errors import (
    AttackNotApplicable,
    InvalidBudget,
    SpaceMismatch,
    UnknownAttack,
    UnknownEnv,
)
from rlsec.evaluate import CampaignConfig, applicable_attacks, run_campaign
from rlsec.policies import load_policy

FAST = dict(epsilons=[0.1, 0.5], alphas=[0.5], episodes=4, num_envs=4)


@pytest.fixture(scope="module")
def dqn_results() -> dict:
    policy = load_policy("zoo:cartpole-dqn")
    config = CampaignConfig(attacks=["uniform-obs-v1", "pgd-obs-v1", "pr-random-act-v1"], **FAST)
    return run_campaign(policy, config)


def test_results_follow_the_contract(dqn_results: dict) -> None:
    r = dqn_results
    assert set(r) >= {
        "rlsec_version",
        "policy",
        "env",
        "seed",
        "eps_unit",
        "clean",
        "results",
        "worst_case",
        "eps50",
        "config",
    }
    assert r["env"] == "CartPole-v1"
    assert r["eps_unit"] == "std"
    assert r["seed"] == 0
    assert len(r["policy"]["sha256"]) == 64
    assert r["policy"]["source"] == "zoo:cartpole-dqn"
    assert r["clean"]["episodes"] == 4
    assert len(r["clean"]["ci95"]) == 2
    rows = r["results"]
    assert [(x["attack"], x["epsilon"]) for x in rows] == [
        ("uniform-obs-v1", 0.1),
        ("uniform-obs-v1", 0.5),
        ("pgd-obs-v1", 0.1),
        ("pgd-obs-v1", 0.5),
        ("pr-random-act-v1", 0.5),
    ]
    for x in rows:
        assert x["surface"] in ("observation", "action")
        assert x["unit"] == ("std" if x["surface"] == "observation" else "probability")
        assert x["episodes"] == 4
        assert 0.0 <= x["action_change_rate"] <= 1.0
        assert x["threat_model"]["epsilon"] == x["epsilon"]
        assert x["atlas"]
        assert all(a.startswith("AML.T") for a in x["atlas"])
        lo, hi = x["ci95"]
        assert lo <= x["mean_return"] <= hi
    # the worst case per budget is the minimum over that budget's attacks
    for w in r["worst_case"]:
        same = [x for x in rows if x["epsilon"] == w["epsilon"] and x["surface"] == w["surface"]]
        assert w["mean_return"] == min(x["mean_return"] for x in same)
    assert set(r["eps50"]) == {
        "uniform-obs-v1",
        "pgd-obs-v1",
        "pr-random-act-v1",
        "worst_case",
        "worst_case:action",
    }
    # replayable: the config records the scale actually used for std units
    assert len(r["config"]["scale"]) == 4
    assert r["config"]["scale_source"].startswith("policy spec")
    json.dumps(r, allow_nan=False)  # serialisable as is


def test_eps50_is_the_smallest_budget_below_half_the_clean_return(dqn_results: dict) -> None:
    r = dqn_results
    threshold = r["eps50_threshold"]
    assert math.isclose(threshold, 0.5 * r["clean"]["mean_return"])  # CartPole: floor 0
    for attack, value in r["eps50"].items():
        if attack.startswith("worst_case"):
            continue
        rows = [x for x in r["results"] if x["attack"] == attack]
        below = [x["epsilon"] for x in rows if x["mean_return"] < threshold]
        assert value == (min(below) if below else None)


def test_campaign_is_deterministic_given_the_seed(dqn_results: dict) -> None:
    policy = load_policy("zoo:cartpole-dqn")
    config = CampaignConfig(attacks=["uniform-obs-v1", "pgd-obs-v1", "pr-random-act-v1"], **FAST)
    again = run_campaign(policy, config)
    strip = lambda rs: [{k: v for k, v in x.items() if k != "seconds"} for x in rs]  # noqa: E731
    assert strip(again["results"]) == strip(dqn_results["results"])
    assert again["clean"] == dqn_results["clean"]


def test_strong_attacks_beat_noise_on_the_fragile_dqn() -> None:
    """Regression guard on attack strength: on zoo:cartpole-dqn, white-box attacks must do
    more damage at a small budget than uniform noise at the same budget."""
    policy = load_policy("zoo:cartpole-dqn")
    config = CampaignConfig(
        attacks=["uniform-obs-v1", "pgd-obs-v1", "mad-obs-v1", "critic-obs-v1"],
        epsilons=[0.1],
        alphas=[],
        episodes=8,
    )
    r = run_campaign(policy, config)
    by = {x["attack"]: x["mean_return"] for x in r["results"]}
    for strong in ("pgd-obs-v1", "critic-obs-v1"):
        assert by[strong] < 0.5 * by["uniform-obs-v1"], by
    # MAD maximises the KL, which also grows toward over-confidence, so it flips less
    assert by["mad-obs-v1"] < by["uniform-obs-v1"], by


def test_every_bad_input_fails_before_anything_runs() -> None:
    policy = load_policy("zoo:cartpole-ppo")
    with pytest.raises(UnknownEnv, match="CartPole-v1"):
        run_campaign(policy, CampaignConfig(env_id="CartPole-v9", **FAST))
    with pytest.raises(UnknownAttack, match="pgd-obs-v1"):
        run_campaign(policy, CampaignConfig(attacks=["pgd-obs-v2"], **FAST))
    with pytest.raises(InvalidBudget, match=">= 0"):
        run_campaign(policy, CampaignConfig(epsilons=[-0.1], alphas=[], episodes=1))
    with pytest.raises(InvalidBudget, match=r"\[0, 1\]"):
        run_campaign(policy, CampaignConfig(alphas=[2.0], episodes=1))
    with pytest.raises(SpaceMismatch, match="expected Box"):
        run_campaign(policy, CampaignConfig(env_id="Pendulum-v1", **FAST))
    frozen = load_policy("zoo:frozenlake-ppo")
    with pytest.raises(AttackNotApplicable, match="continuous observations"):
        run_campaign(frozen, CampaignConfig(attacks=["pgd-obs-v1"], **FAST))


def test_all_attacks_on_discrete_observations_skips_with_reasons() -> None:
    frozen = load_policy("zoo:frozenlake-ppo")
    run, skipped = applicable_attacks(frozen, CampaignConfig())
    assert run == ["pr-random-act-v1", "pr-adv-act-v1"]
    reasons = {s["attack"]: s["reason"] for s in skipped}
    assert "continuous observations" in reasons["pgd-obs-v1"]
    assert "continuous actions" in reasons["nr-random-act-v1"]


def test_continuous_action_policy_runs_nr_and_gradient_attacks() -> None:
    policy = load_policy("zoo:pendulum-sac")
    config = CampaignConfig(
        attacks=["pgd-obs-v1", "critic-obs-v1", "nr-adv-act-v1"],
        epsilons=[0.5],
        alphas=[0.5],
        episodes=2,
    )
    r = run_campaign(policy, config)
    by = {x["attack"]: x for x in r["results"]}
    assert r["clean"]["mean_return"] < 0  # Pendulum returns are costs
    assert r["eps50_threshold"] < r["clean"]["mean_return"]  # floor is the random policy's
    assert by["critic-obs-v1"]["params"]["critic"] == "q"
    assert by["nr-adv-act-v1"]["action_change_rate"] > 0.5
    assert np.isfinite(by["pgd-obs-v1"]["mean_return"])
    # continuous actions also report how far they moved, in units of the action range
    shift = by["nr-adv-act-v1"]["mean_action_shift"]
    assert 0.0 < shift <= 0.5 + 1e-9  # α=0.5 of at most the whole range


def test_worst_case_keys_keep_their_meaning_without_observation_attacks() -> None:
    frozen = load_policy("zoo:frozenlake-ppo")
    r = run_campaign(frozen, CampaignConfig(alphas=[0.5], episodes=3))
    assert r["eps50"]["worst_case"] is None  # always the observation surface (ε)
    assert "worst_case:action" in r["eps50"]  # the action surface (α) has its own key


def test_std_scale_of_a_policy_without_stats_does_not_depend_on_the_run() -> None:
    """ε in std units must mean the same thing whatever --episodes and --seed are."""
    import gymnasium as gym
    import torch

    from rlsec.policies import from_torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    env = gym.make("CartPole-v1")
    policy = from_torch(net, env.observation_space, env.action_space)
    scales = []
    for episodes, seed in ((2, 0), (3, 5)):
        cfg = CampaignConfig(
            env_id="CartPole-v1",
            attacks=["uniform-obs-v1"],
            epsilons=[0.1],
            episodes=episodes,
            seeds=[seed],
        )
        r = run_campaign(policy, cfg)
        assert r["config"]["scale_source"].startswith("calibration rollout")
        scales.append(r["config"]["scale"])
    assert scales[0] == scales[1]


def test_repeated_budgets_are_run_once_and_empty_attack_lists_are_refused() -> None:
    policy = load_policy("zoo:cartpole-dqn")
    cfg = CampaignConfig(attacks=["uniform-obs-v1"], epsilons=[0.1, 0.1], alphas=[], episodes=2)
    assert len(run_campaign(policy, cfg)["results"]) == 1
    from rlsec.errors import ConfigError

    with pytest.raises(ConfigError, match="at least one attack"):
        run_campaign(policy, CampaignConfig(attacks=[], episodes=1))


def test_a_budget_that_overflows_float32_in_raw_units_is_refused_before_any_attack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ε = 0.1 std is harmless, unless a feature's std is 1e20: then the raw budget is 1e19
    and the l2 norms of the perturbation overflow float32. (A spec cannot declare such a std
    any more: the calibration rollout's is used when they disagree. An environment whose
    own observations spread that far can, so the scale is set directly here.)"""
    import rlsec.evaluate.campaign as campaign

    policy = load_policy("zoo:cartpole-ppo")
    monkeypatch.setattr(
        campaign,
        "_scale",
        lambda *_a, **_k: (np.array([1.0, 1.0, 1.0, 1e20]), "calibration"),
    )
    attacked: list[object] = []
    original = campaign.rollout

    def rollout(*args: object, **kwargs: object) -> object:
        attacked.append(kwargs.get("attack"))
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(campaign, "rollout", rollout)
    config = CampaignConfig(attacks=["pgd-l2-obs-v1"], epsilons=[0.1], alphas=[], episodes=1)
    with pytest.raises(InvalidBudget, match="feature 3 is a raw budget of 1e\\+19"):
        run_campaign(policy, config)
    assert attacked and all(a is None for a in attacked)  # no attacked episode was played


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("episodes", 10**9, "episodes must be at most 1,000,000"),
        ("num_envs", 10**7, "num_envs must be at most 4,096"),
        ("episodes", True, "episodes must be an integer"),
        ("seeds", [-1], "seed must be in"),
        ("seeds", list(range(1001)), "seeds must be at most 1,000"),
        ("epsilons", [1e39], "at most 1e\\+15"),
        ("alphas", [math.nan], "must be in \\[0, 1\\]"),
        ("env_id", "this:CartPole-v1", "refusing the environment id"),
        ("unsafe_no_sandbox", "yes", "must be a bool"),
    ],
)
def test_campaign_input_is_bounded(field: str, value: object, message: str) -> None:
    from rlsec.errors import ConfigError

    config = CampaignConfig(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_the_results_record_whether_the_sandbox_was_bypassed(dqn_results: dict) -> None:
    assert dqn_results["config"]["unsafe_no_sandbox"] is False
