"""Randomized smoothing: certificates against closed forms and attacks, and red-team use."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from statistics import NormalDist
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import SyncVectorEnv
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import GenericTestEnv
from rlsec.attacks import make_attack
from rlsec.core import DifferentiablePolicy
from rlsec.defenses.inference import apply_defense, parse_defense
from rlsec.errors import ConfigError, SpaceMismatch
from rlsec.evaluate import rollout
from rlsec.evaluate.campaign import CampaignConfig
from rlsec.policies import TorchPolicy, from_torch
from rlsec.verify.smoothing import (
    SmoothedPolicy,
    certified_radius,
    expectation_bounds,
    hoeffding_halfwidth,
)

PHI = NormalDist()
FEW = settings(max_examples=8, deadline=None, derandomize=True)


def linear_classifier(w: np.ndarray, b: float, bound: float = 50.0) -> TorchPolicy:
    """Two actions; the logit difference is ``h(x) = w·x + b``: action 0 iff ``h(x) > 0``."""
    lin = torch.nn.Linear(len(w), 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0] = torch.as_tensor(w, dtype=torch.float32)
        lin.bias.zero_()
        lin.bias[0] = float(b)
    space = gym.spaces.Box(-bound, bound, (len(w),), np.float32)
    return from_torch(lin, space, gym.spaces.Discrete(2))


class Lambda(torch.nn.Module):
    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)  # type: ignore[no-any-return]


def mlp(obs: int, out: int, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(obs, 16), torch.nn.Tanh(), torch.nn.Linear(16, out))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 1.5)
    return net


# -- the Clopper-Pearson radius ------------------------------------------------------------------


def test_radius_of_a_unanimous_vote_is_the_hand_computed_one() -> None:
    # Every noisy copy votes 0: the one-sided 1-α Clopper-Pearson bound is α^(1/n).
    const = Lambda(lambda x: torch.stack([torch.ones(len(x)), torch.zeros(len(x))], dim=1))
    base = from_torch(const, gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Discrete(2))
    n, alpha, sigma = 200, 0.001, 0.3
    policy = SmoothedPolicy(base, sigma, n=n, n0=10, alpha=alpha)
    actions, radius, abstained = policy.certify(np.zeros((2, 3), np.float32))
    expected = sigma * PHI.inv_cdf(alpha ** (1 / n))
    assert actions.tolist() == [0, 0] and not abstained.any()
    assert radius == pytest.approx([expected, expected], rel=1e-9)
    assert policy.linf_radius(radius) == pytest.approx(radius / math.sqrt(3))


def test_radius_formula_and_abstention_threshold() -> None:
    p = np.array([0.3, 0.5, 0.5 + 1e-12, PHI.cdf(1.5)])
    r = certified_radius(p, 0.4)
    assert r[:2].tolist() == [0.0, 0.0]
    assert 0.0 < r[2] < 1e-9
    assert r[3] == pytest.approx(0.6)


# -- the linear classifier, where everything is known in closed form ---------------------------


@FEW
@given(
    w=st.lists(st.floats(-2, 2), min_size=3, max_size=3).filter(lambda v: np.linalg.norm(v) > 0.3),
    margin=st.floats(0.2, 2.0),
    side=st.sampled_from([-1.0, 1.0]),
    sigma=st.floats(0.2, 1.5),
    use_scale=st.booleans(),
)
def test_certified_radius_is_sound_and_tight_on_a_linear_classifier(
    w: list[float], margin: float, side: float, sigma: float, use_scale: bool
) -> None:
    """h(x) = w·x + b. In units of a scale s, the smoothed classifier's p_A is
    Φ(|h| / (σ‖w∘s‖)) and its exact robustness radius |h| / ‖w∘s‖ (= σ·margin here)."""
    wv = np.asarray(w)
    scale = np.array([0.5, 1.0, 2.0]) if use_scale else np.ones(3)
    ws = np.linalg.norm(wv * scale)
    x = np.array([[0.3, -0.2, 0.1]], np.float32)
    # pick b so that h(x) = side · margin · σ · ‖w∘s‖, i.e. the true radius is margin · σ
    b = float(side * margin * sigma * ws - wv @ x[0].astype(np.float64))
    true_radius = abs(float(wv @ x[0]) + b) / ws
    policy = SmoothedPolicy(
        linear_classifier(wv, b),
        sigma,
        n=100_000,
        n0=100,
        alpha=1e-6,
        scale=scale if use_scale else None,
        seed=1,
    )
    actions, radius, abstained = policy.certify(x)
    assert not abstained[0]
    assert int(actions[0]) == (0 if side > 0 else 1)
    assert radius[0] <= true_radius + 1e-9  # sound (fails with probability <= α)
    assert radius[0] >= true_radius - 0.06 * sigma  # and tight for large n


def test_a_coin_flip_abstains() -> None:
    # on the decision boundary of a linear classifier p_A = 1/2 exactly
    on_boundary = SmoothedPolicy(linear_classifier(np.array([1.0, 0.0]), 0.0), 0.5, n=5000)
    # a base policy that flips with every tiny move: a coin flip under noise
    flippy = Lambda(lambda x: torch.stack([torch.sin(1000 * x[:, 0]), torch.zeros(len(x))], 1))
    coin = SmoothedPolicy(
        from_torch(flippy, gym.spaces.Box(-5, 5, (2,), np.float32), gym.spaces.Discrete(2)),
        0.5,
        n=5000,
    )
    x = np.zeros((4, 2), np.float32)
    x[:, 1] = [0.0, 1.0, -2.0, 3.0]
    for policy in (on_boundary, coin):
        _, radius, abstained = policy.certify(x)
        assert abstained.all()
        assert (radius == 0).all()


# -- empirical soundness against random and PGD perturbations ----------------------------------


def test_perturbations_inside_the_certified_radius_never_change_the_smoothed_action() -> None:
    """A random 3-action MLP, σ in units of a per-feature scale. Inside 0.8 × the certified
    radius neither random directions nor PGD on the smoothed policy (expectation over noise)
    change the action; beyond 3 × the radius PGD does flip some, so the check has teeth."""
    scale = np.array([0.5, 2.0])
    sigma = 0.5
    base = from_torch(
        mlp(2, 3, seed=0), gym.spaces.Box(-20, 20, (2,), np.float32), gym.spaces.Discrete(3)
    )
    policy = SmoothedPolicy(base, sigma, n=20_000, n0=200, alpha=1e-4, scale=scale, seed=3)
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(24, 2)) * scale).astype(np.float32)
    actions, radius, abstained = policy.certify(x)
    keep = np.flatnonzero(~abstained & (radius > 0.3 * sigma))[:6]
    assert len(keep) >= 4

    def pgd(x0: np.ndarray, eps: float) -> np.ndarray:
        attack = make_attack("pgd-l2-obs-v1", eps, unit="std", steps=20)
        attack.start(policy, num_envs=1, rng=np.random.default_rng(1), scale=scale)
        return attack.perturb(x0[None])[0]

    flipped_beyond = 0
    for i in keep:
        r = 0.8 * float(radius[i])
        u = rng.normal(size=(16, 2))
        u *= r / np.linalg.norm(u, axis=1, keepdims=True)
        near = np.vstack([x[i] + u * scale, pgd(x[i], r)]).astype(np.float32)
        assert np.all(np.linalg.norm((near - x[i]) / scale, axis=1) <= r * (1 + 1e-5))
        assert (policy.act(near) == actions[i]).all(), f"point {i}, radius {radius[i]:.3f}"
        far = pgd(x[i], 3.0 * float(radius[i]))
        flipped_beyond += int(policy.act(far[None])[0] != actions[i])
    assert flipped_beyond >= 1


# -- continuous actions ------------------------------------------------------------------------


def test_continuous_bounds_are_exact_for_a_step_policy() -> None:
    """f(x) = l + (u-l)·1[w·x > 0] gives g(x) = Φ(w·x / (σ‖w‖)): the Lipschitz bound is
    attained by moving straight toward the boundary, so the bounds are tight and sound."""
    w = np.array([1.0, 2.0])
    low, high = -1.0, 3.0
    step = Lambda(
        lambda x: (low + (high - low) * (x @ torch.tensor(w, dtype=torch.float32) > 0))[:, None]
    )
    base = from_torch(
        step,
        gym.spaces.Box(-50, 50, (2,), np.float32),
        gym.spaces.Box(low, high, (1,), np.float32),
        output="action",
    )
    sigma, r = 0.8, 0.5
    policy = SmoothedPolicy(base, sigma, n=200_000, alpha=1e-6, seed=2)
    x = np.array([[0.3, 0.1], [-0.2, 0.0]], np.float32)
    z = (x.astype(np.float64) @ w) / (sigma * np.linalg.norm(w))
    bounds = policy.certify_bounds(x, r)
    exact_lo = low + (high - low) * np.array([PHI.cdf(v - r / sigma) for v in z])
    exact_hi = low + (high - low) * np.array([PHI.cdf(v + r / sigma) for v in z])
    slack = (high - low) * 0.02
    assert np.all(bounds.lower[:, 0] <= exact_lo + 1e-9)
    assert np.all(bounds.lower[:, 0] >= exact_lo - slack)
    assert np.all(bounds.upper[:, 0] >= exact_hi - 1e-9)
    assert np.all(bounds.upper[:, 0] <= exact_hi + slack)


def test_continuous_bounds_contain_the_smoothed_action_under_perturbations() -> None:
    box = gym.spaces.Box(-1.0, 2.0, (2,), np.float32)
    base = from_torch(
        mlp(3, 2, seed=4), gym.spaces.Box(-20, 20, (3,), np.float32), box, output="action"
    )
    sigma, r = 0.6, 0.3
    policy = SmoothedPolicy(base, sigma, n=20_000, alpha=1e-4, seed=5)
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    bounds = policy.certify_bounds(x, r)
    assert np.all(bounds.upper - bounds.lower < 3.0)  # not vacuous
    precise = SmoothedPolicy(base, sigma, n=100_000, seed=7)
    tol = 3.0 * hoeffding_halfwidth(100_000, 2, 1e-6)
    moved = 0.0
    for i in range(len(x)):
        u = rng.normal(size=(8, 3))
        u *= r / np.linalg.norm(u, axis=1, keepdims=True)
        attack = make_attack("pgd-l2-obs-v1", r, unit="raw", steps=20)
        attack.start(policy, num_envs=1, rng=np.random.default_rng(i))
        near = np.vstack([x[i] + u, attack.perturb(x[i : i + 1])]).astype(np.float32)
        mean = precise.act(near)
        assert np.all(mean >= bounds.lower[i] - tol), i
        assert np.all(mean <= bounds.upper[i] + tol), i
        moved = max(moved, float(np.abs(mean - bounds.mean[i]).max()))
    assert moved > 0.02  # the perturbations do move the smoothed action


@FEW
@given(
    g=st.floats(0.0, 1.0),
    t=st.floats(0.0, 0.2),
    k1=st.floats(0.0, 2.0),
    k2=st.floats(0.0, 2.0),
)
def test_expectation_bounds_widen_with_the_radius_and_contain_the_estimate(
    g: float, t: float, k1: float, k2: float
) -> None:
    lo1, hi1 = expectation_bounds(np.array([g - t]), np.array([g + t]), min(k1, k2))
    lo2, hi2 = expectation_bounds(np.array([g - t]), np.array([g + t]), max(k1, k2))
    assert 0.0 <= lo2[0] <= lo1[0] <= max(g - t, 0.0) + 1e-12
    assert min(g + t, 1.0) - 1e-12 <= hi1[0] <= hi2[0] <= 1.0


# -- determinism -------------------------------------------------------------------------------


def test_noise_is_deterministic_given_the_seed_and_independent_of_the_chunking() -> None:
    box = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    obs = gym.spaces.Box(-9, 9, (2,), np.float32)
    base = from_torch(mlp(2, 1, seed=8), obs, box, output="action")
    x = np.random.default_rng(9).normal(size=(5, 2)).astype(np.float32)

    def run(seed: int, batch_size: int) -> list[np.ndarray]:
        p = SmoothedPolicy(base, 0.5, n=64, seed=seed, batch_size=batch_size)
        return [p.act(x), p.act(x), p.certify_bounds(x, 0.1).lower]

    first = run(0, 65_536)
    for a, b in zip(first, run(0, 65_536), strict=True):
        assert np.array_equal(a, b)
    for a, b in zip(first, run(0, 7), strict=True):  # same noise; float32 sums may round apart
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert not np.array_equal(first[0], first[1])  # the generator advances between calls
    assert not np.array_equal(first[0], run(1, 65_536)[0])
    p = SmoothedPolicy(base, 0.5, n=64, seed=0)
    p.reseed(4, 2)
    after = p.act(x)
    p.act(x)
    p.reseed(4, 2)
    assert np.array_equal(p.act(x), after)
    p.reseed()
    assert np.array_equal(p.act(x), first[0])


# -- rollouts and attacks never bypass the smoothing ---------------------------------------------

C = NormalDist().inv_cdf(0.7)  # P(|Z| < C) = 0.4


def _three_way_base() -> TorchPolicy:
    """At x = 0 the base network picks 0, the soft smoothed classifier (mean softmax) picks 0,
    and the smoothed policy (majority vote under σ = 1) picks 1: inside |x| < C the base
    votes 0 with confidence, outside it votes 1 with softmax 0.55."""

    def logits(x: torch.Tensor) -> torch.Tensor:
        inside = torch.sigmoid(200.0 * (C - x[:, 0].abs()))
        return torch.stack([20.0 * inside, 0.2 * (1 - inside)], dim=1)

    value = Lambda(lambda x: -(x**2).sum(1))
    return from_torch(
        Lambda(logits),
        gym.spaces.Box(-5, 5, (1,), np.float32),
        gym.spaces.Discrete(2),
        value=value,
    )


@pytest.mark.parametrize(
    "attack_id", ["pgd-obs-v1", "fgsm-obs-v1", "mad-obs-v1", "critic-obs-v1", "timed-obs-v1"]
)
def test_rollouts_execute_the_smoothed_action_never_the_base_networks(attack_id: str) -> None:
    base = _three_way_base()
    policy = SmoothedPolicy(base, 1.0, n=2000, seed=0)
    zero = np.zeros((1, 1), np.float32)
    # the canaries: a leak of the base network's or the surrogate's action would show as 0
    assert base.act(zero).tolist() == [0]
    with torch.no_grad():  # soft smoothed classifier: P(0) = 0.4 + 0.6 · 0.45 = 0.67
        soft = policy.torch_module()(torch.zeros(256, 1)).exp().mean(0)
    assert soft[0] > 0.6
    assert policy.act(np.zeros((8, 1), np.float32)).tolist() == [1] * 8
    assert isinstance(policy, DifferentiablePolicy)

    executed: list[int] = []

    def step(env: GenericTestEnv, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        executed.append(int(action))
        env.t += 1
        return np.zeros(1, np.float32), float(int(action) == 1), env.t >= 4, False, {}

    def reset(env: GenericTestEnv, **_: Any) -> tuple[np.ndarray, dict[str, Any]]:
        env.t = 0
        return np.zeros(1, np.float32), {}

    venv = SyncVectorEnv(
        [
            lambda: GenericTestEnv(
                gym.spaces.Box(-5, 5, (1,), np.float32), gym.spaces.Discrete(2), reset, step
            )
            for _ in range(2)
        ]
    )
    attack = make_attack(attack_id, 0.05, unit="raw")
    attack.start(policy, num_envs=2, rng=np.random.default_rng(0), horizon=4)
    stats = rollout(policy, venv, 4, seed=0, attack=attack)
    assert executed and set(executed) == {1}
    assert stats.returns.tolist() == [4.0] * 4
    assert stats.changed_steps.sum() == 0


# -- the red-team defense --------------------------------------------------------------------


def test_apply_defense_records_the_defense_and_a_digest_of_the_defended_policy() -> None:
    base = linear_classifier(np.array([1.0, -1.0]), 0.1)
    policy, record = apply_defense(
        base, "smoothing:sigma=0.5,n=10,unit=std", std_scale=np.array([1.0, 2.0]), std_source="t"
    )
    assert isinstance(policy, SmoothedPolicy)
    assert policy.scale is not None and policy.scale.tolist() == [1.0, 2.0]
    assert record["spec"] == "smoothing:n=10,sigma=0.5,unit=std"
    assert (record["sigma"], record["n"], record["sigma_unit"]) == (0.5, 10, "std")
    assert record["scale"] == [1.0, 2.0] and record["scale_source"] == "t"
    assert record["base_sha256"] == base.info.sha256
    assert policy.info.sha256 == record["sha256"] != base.info.sha256
    other, _ = apply_defense(base, "smoothing:sigma=0.6,n=10")
    again, _ = apply_defense(base, "smoothing:sigma=0.5,n=10,seed=3,unit=std", std_scale=[1, 2])
    assert other.info.sha256 != policy.info.sha256 == again.info.sha256  # seed is not identity
    json.dumps(record, allow_nan=False)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "expected a defense such as smoothing:sigma=0.2, got ''"),
        ("smooth:sigma=1", "unknown defense 'smooth' in 'smooth:sigma=1'; expected one of"),
        ("smoothing:sigma=1,sgima=2", "unknown parameter 'sgima' for smoothing"),
        ("smoothing:n=10", "smoothing needs sigma (as in smoothing:sigma=0.2), got"),
        ("smoothing:sigma=0", "sigma must be a finite number > 0, got 0.0"),
        ("smoothing:sigma=-1", "sigma must be a finite number > 0, got -1.0"),
        ("smoothing:sigma=abc", "sigma of smoothing must be a number, got 'abc'"),
        ("smoothing:sigma=1,n=0", "n must be an integer >= 1, got 0"),
        ("smoothing:sigma=1,n=1.5", "n of smoothing must be an integer, got '1.5'"),
        ("smoothing:sigma=1,alpha=0.7", "alpha must be a number in (0, 0.5), got 0.7"),
        ("smoothing:sigma=1,unit=furlongs", "unit of smoothing must be raw or std, got"),
        ("smoothing:sigma=1,sigma=2", "parameter 'sigma' is given twice"),
        ("smoothing:sigma", "expected KEY=VALUE items after smoothing:, got 'sigma'"),
    ],
)
def test_bad_defense_specs_fail_clearly(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_defense(spec)
    assert message in str(info.value)
    with pytest.raises(ConfigError, match=r"smooth|sigma|KEY|alpha|unit|n "):
        CampaignConfig(epsilons=[0.1], defense=spec).validate()


def test_bad_smoothing_arguments_fail_clearly() -> None:
    base = linear_classifier(np.array([1.0, 0.0]), 0.0)
    for kwargs, message in [
        ({"sigma": 0.0}, "sigma must be a finite number > 0, got 0.0"),
        ({"sigma": float("nan")}, "sigma must be a finite number > 0, got nan"),
        ({"sigma": 1.0, "n": 0}, "n must be an integer >= 1, got 0"),
        ({"sigma": 1.0, "n0": 2.5}, "n0 must be an integer >= 1, got 2.5"),
        ({"sigma": 1.0, "scale": [1.0]}, "scale must be 2 finite numbers > 0"),
        ({"sigma": 1.0, "scale": [1.0, 0.0]}, "got [1.0, 0.0]"),
    ]:
        with pytest.raises(ConfigError, match=None) as info:
            SmoothedPolicy(base, **kwargs)
        assert message in str(info.value)
    with pytest.raises(ConfigError, match="already smoothed"):
        SmoothedPolicy(SmoothedPolicy(base, 1.0), 1.0)
    with pytest.raises(ConfigError, match=r"unit=std.*std_scale"):
        apply_defense(base, "smoothing:sigma=1,unit=std")
    grid = from_torch(torch.nn.Embedding(4, 2), gym.spaces.Discrete(4), gym.spaces.Discrete(2))
    with pytest.raises(SpaceMismatch, match="continuous observations"):
        SmoothedPolicy(grid, 1.0)
    with pytest.raises(ConfigError, match="certify_bounds"):
        SmoothedPolicy(base, 1.0).certify_bounds(np.zeros((1, 2), np.float32), 0.1)


def test_redteam_cli_attacks_the_smoothed_policy_and_records_the_defense(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # σ = 3 std topples the pole within a few dozen steps: a short run
    spec = "smoothing:sigma=3,n=8"
    args = ["--policy", "zoo:cartpole-ppo", "--attacks", "pgd-obs-v1", "--eps", "0.2"]
    args += ["--episodes", "1", "--num-envs", "1", "--out", str(out), "--defense", spec]
    proc = subprocess.run(
        [sys.executable, "-m", "rlsec", "redteam", *args],
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    d = results["defense"]
    assert d["spec"] == "smoothing:n=8,sigma=3.0"
    assert (d["name"], d["sigma"], d["n"], d["sigma_unit"]) == ("smoothing", 3.0, 8, "std")
    assert d["scale"] == results["config"]["scale"]  # σ and ε share their unit and scale
    assert results["config"]["defense"] == d["spec"]
    assert results["policy"]["sha256"] == d["sha256"] != d["base_sha256"]
    assert results["policy"]["source"] == "zoo:cartpole-ppo"
    assert results["clean"]["mean_return"] < 500  # the noise is really there
    assert d["spec"] in (out / "report.html").read_text()
    assert d["spec"] in proc.stdout


def test_redteam_refuses_a_bad_defense_before_running(tmp_path: Path) -> None:
    from rlsec.redteam import redteam

    with pytest.raises(ConfigError, match=r"unknown defense 'blur'.*expected one of"):
        redteam("zoo:cartpole-ppo", defense="blur:sigma=1", episodes=1, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
