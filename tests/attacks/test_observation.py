from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import linear_policy
from rlsec.attacks import (
    ATTACKS,
    CriticObservation,
    ObservationAttack,
    PGDObservation,
    TimedObservation,
    make_attack,
)
from rlsec.attacks._ball import Ball
from rlsec.core import Surface, ThreatModel
from rlsec.errors import AttackNotApplicable, BudgetViolation, ConfigError
from rlsec.policies import TorchPolicy, from_torch, load_policy

# sa-rl trains a PPO adversary; it is tested on its own in test_learned.py. strategy-obs-v1
# replays a verified attacker's strategy on its finite model: tests/verify/test_attack.py
CHEAP_OBS_ATTACKS = sorted(
    i
    for i, c in ATTACKS.items()
    if c.surface is Surface.OBSERVATION and i not in ("sa-rl-obs-v1", "strategy-obs-v1")
)


def mlp_policy(
    dim: int,
    n_actions: int,
    seed: int,
    *,
    low: float = -3.0,
    high: float = 3.0,
    continuous: bool = False,
) -> TorchPolicy:
    torch.manual_seed(seed)
    out = n_actions
    net = torch.nn.Sequential(torch.nn.Linear(dim, 16), torch.nn.Tanh(), torch.nn.Linear(16, out))
    value = torch.nn.Sequential(torch.nn.Linear(dim, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    obs = gym.spaces.Box(low, high, (dim,), np.float32)
    if continuous:
        act = gym.spaces.Box(-1, 1, (n_actions,), np.float32)
        return from_torch(net, obs, act, output="action")

    class V(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return value(x).squeeze(-1)

    return from_torch(net, obs, gym.spaces.Discrete(n_actions), value=V())


def _reference_size(x0: np.ndarray, x: np.ndarray, scale: np.ndarray, norm: str) -> np.ndarray:
    d = (x.astype(np.float64) - x0.astype(np.float64)).reshape(len(x0), -1)
    u = np.divide(d, scale, out=np.zeros_like(d), where=scale > 0)
    return np.abs(u).max(axis=1) if norm == "linf" else np.linalg.norm(u, axis=1)


@settings(max_examples=60, deadline=None)
@given(
    attack_id=st.sampled_from(CHEAP_OBS_ATTACKS),
    eps=st.floats(0.0, 2.0),
    l2=st.booleans(),
    dim=st.integers(1, 5),
    seed=st.integers(0, 2**16),
    batch=st.integers(1, 9),
    continuous=st.booleans(),
    zero_feature=st.booleans(),
)
def test_every_attack_stays_in_its_ball_and_the_space(
    attack_id: str,
    eps: float,
    l2: bool,
    dim: int,
    seed: int,
    batch: int,
    continuous: bool,
    zero_feature: bool,
) -> None:
    cls = ATTACKS[attack_id]
    norm = "l2" if l2 and "l2" in cls.norms else cls.norms[0]
    policy = mlp_policy(dim, 3, seed, continuous=continuous)
    attack = make_attack(attack_id, eps, unit="std", norm=norm)
    try:
        attack.check_applicable(policy)
    except AttackNotApplicable:
        assert attack_id in ("timed-obs-v1", "critic-obs-v1")
        assert continuous
        return
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.1, 2.0, size=dim)
    if zero_feature:
        scale[0] = 0.0
    assert isinstance(attack, ObservationAttack)
    attack.start(policy, num_envs=batch, rng=rng, scale=scale, horizon=50)
    # observations near the bounds, so that clipping to the space matters too
    x0 = rng.uniform(-3.0, 3.0, size=(batch, dim)).astype(np.float32)
    x = attack.perturb(x0, np.arange(batch))
    assert x.shape == x0.shape
    assert x.dtype == np.float32
    size = _reference_size(x0, x, scale, norm)
    assert np.all(size <= eps * (1 + 1e-6) + 1e-12), (size, eps)
    assert np.all(x >= -3.0)
    assert np.all(x <= 3.0)
    if zero_feature:
        assert np.array_equal(x[:, 0], x0[:, 0])


@pytest.mark.parametrize("attack_id", ["pgd-obs-v1", "fgsm-obs-v1"])
@pytest.mark.parametrize("w", [[1.0, -2.0, 0.5], [0.3, 0.3], [4.0]])
def test_gradient_attack_flips_a_linear_policy_exactly_above_its_margin(
    attack_id: str, w: list[float]
) -> None:
    """logits = [w·s, 0]: action 0 iff w·s > 0; the linf margin is w·s / ||w||_1."""
    policy = linear_policy(np.array(w))
    rng = np.random.default_rng(0)
    x0 = np.abs(rng.normal(size=(16, len(w)))).astype(np.float32) * np.sign(w).astype(np.float32)
    margin = (x0 @ np.array(w)) / np.abs(w).sum()
    assert np.all(margin > 0)
    assert np.all(policy.act(x0) == 0)
    for factor, flips in ((1.02, True), (0.98, False)):
        eps_rows = margin * factor
        for row in range(len(x0)):
            attack = make_attack(attack_id, float(eps_rows[row]))
            attack.start(policy, num_envs=1, rng=np.random.default_rng(row))
            x = attack.perturb(x0[row : row + 1])
            assert (policy.act(x)[0] == 1) == flips, (attack_id, row, factor)


@pytest.mark.parametrize("w", [[1.0, -2.0, 0.5], [0.3, 0.3], [4.0]])
def test_mad_reaches_an_extreme_of_the_kl_on_a_linear_policy(w: list[float]) -> None:
    """KL(π(s) ‖ π(s+δ)) is convex in w·δ, so its maximum over the linf ball sits where
    |w·δ| = ε·||w||_1. MAD (SGLD on the KL, best iterate kept) must get there, on either side:
    KL grows both toward flipping the action and toward over-confidence, which is why MAD
    alone is not a flipping attack."""
    policy = linear_policy(np.array(w))
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, size=(16, len(w))).astype(np.float32)
    eps = 0.3
    attack = make_attack("mad-obs-v1", eps)
    attack.start(policy, num_envs=16, rng=np.random.default_rng(0))
    x = attack.perturb(x0)
    moved = np.abs((x - x0).astype(np.float64) @ np.array(w))
    assert np.all(moved >= 0.97 * eps * np.abs(w).sum()), moved


def test_pgd_l2_flips_above_the_l2_margin() -> None:
    w = np.array([1.0, -2.0, 0.5])
    policy = linear_policy(w)
    x0 = np.array([[1.0, -1.0, 1.0]], dtype=np.float32)
    margin = float(x0[0] @ w / np.linalg.norm(w))
    for factor, flips in ((1.02, True), (0.98, False)):
        attack = make_attack("pgd-l2-obs-v1", margin * factor)
        attack.start(policy, num_envs=1, rng=np.random.default_rng(0))
        assert (policy.act(attack.perturb(x0))[0] == 1) == flips


def test_pgd_keeps_the_best_iterate_so_more_steps_never_hurt() -> None:
    """With a fixed step size, the iterates of k steps are a prefix of those of k+1 steps;
    keeping each row's best iterate makes the objective non-decreasing in the step count."""
    policy = mlp_policy(4, 3, seed=3)
    x0 = np.random.default_rng(1).uniform(-1, 1, size=(64, 4)).astype(np.float32)
    clean = torch.from_numpy(np.asarray(policy.act(x0)))
    losses = []
    for steps in (1, 5, 20):
        a = PGDObservation(
            ThreatModel(Surface.OBSERVATION, 0.3), steps=steps, step_size=0.05, random_start=False
        )
        a.start(policy, num_envs=64, rng=np.random.default_rng(0))
        with torch.no_grad():
            logits = policy.torch_module()(torch.from_numpy(a.perturb(x0)))
        losses.append(torch.nn.functional.cross_entropy(logits, clean, reduction="none"))
    assert torch.all(losses[0] <= losses[1] + 1e-5)
    assert torch.all(losses[1] <= losses[2] + 1e-5)
    assert torch.any(losses[2] > losses[0] + 1e-3)


def test_zero_budget_returns_the_clean_observations() -> None:
    policy = mlp_policy(3, 2, seed=0)
    x0 = np.ones((4, 3), dtype=np.float32)
    for attack_id in CHEAP_OBS_ATTACKS:
        attack = make_attack(attack_id, 0.0)
        attack.start(policy, num_envs=4, rng=np.random.default_rng(0))
        assert np.array_equal(attack.perturb(x0), x0)


def test_same_seed_same_perturbation() -> None:
    policy = mlp_policy(3, 2, seed=0)
    x0 = np.zeros((5, 3), dtype=np.float32)
    outs = []
    for _ in range(2):
        attack = make_attack("mad-obs-v1", 0.5)
        attack.start(policy, num_envs=5, rng=np.random.default_rng(42))
        outs.append(attack.perturb(x0))
    assert np.array_equal(outs[0], outs[1])


def test_a_perturbation_outside_the_ball_raises_instead_of_passing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = mlp_policy(2, 2, seed=0)
    attack = make_attack("uniform-obs-v1", 0.1)
    attack.start(policy, num_envs=1, rng=np.random.default_rng(0))
    # a broken projection must not let an oversize perturbation through silently
    monkeypatch.setattr(attack.ball, "project", lambda x0, x: (x0 + 1.0).astype(np.float32))
    with pytest.raises(BudgetViolation, match="exceeds the budget"):
        attack.perturb(np.zeros((1, 2), dtype=np.float32))


def test_discrete_observations_are_not_attackable_by_perturbation() -> None:
    net = torch.nn.Linear(1, 2)
    policy = from_torch(net, gym.spaces.Discrete(4), gym.spaces.Discrete(2))
    with pytest.raises(AttackNotApplicable, match="continuous observations"):
        make_attack("pgd-obs-v1", 0.1).check_applicable(policy)


def test_white_box_attack_needs_a_differentiable_policy() -> None:
    class Blackbox:
        observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        action_space = gym.spaces.Discrete(2)

        def act(self, obs: np.ndarray) -> np.ndarray:
            return np.zeros(len(obs), dtype=np.int64)

    with pytest.raises(AttackNotApplicable, match="white-box"):
        make_attack("pgd-obs-v1", 0.1).check_applicable(Blackbox())  # type: ignore[arg-type]
    make_attack("uniform-obs-v1", 0.1).check_applicable(Blackbox())  # type: ignore[arg-type]


def test_perturb_before_start_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="start"):
        make_attack("pgd-obs-v1", 0.1).perturb(np.zeros((1, 2), dtype=np.float32))


def test_critic_attack_with_q_steers_toward_the_worst_action() -> None:
    # Q(s, ·) = [w·s, 0]: at s with w·s > 0 the worst action (lowest Q) is action 1.
    w = np.array([1.0, 1.0])
    policy = linear_policy(w, q=True)
    x0 = np.array([[0.05, 0.05]], dtype=np.float32)
    attack = make_attack("critic-obs-v1", 0.2)
    assert isinstance(attack, CriticObservation)
    attack.start(policy, num_envs=1, rng=np.random.default_rng(0))
    assert attack.params()["critic"] == "q"
    assert policy.act(attack.perturb(x0))[0] == 1


def test_critic_attack_with_only_v_lowers_the_value() -> None:
    policy = mlp_policy(3, 2, seed=5)
    v = policy.value_module()
    assert v is not None
    x0 = np.random.default_rng(0).uniform(-1, 1, (32, 3)).astype(np.float32)
    attack = make_attack("critic-obs-v1", 0.3)
    attack.start(policy, num_envs=32, rng=np.random.default_rng(0))
    x = attack.perturb(x0)
    with torch.no_grad():
        assert torch.all(v(torch.from_numpy(x)) <= v(torch.from_numpy(x0)) + 1e-6)
    assert attack.params()["critic"] == "v"


def test_critic_attack_needs_a_critic() -> None:
    policy = from_torch(torch.nn.Linear(2, 2), gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2))
    with pytest.raises(AttackNotApplicable, match="critic"):
        make_attack("critic-obs-v1", 0.1).check_applicable(policy)


@settings(max_examples=20, deadline=None)
@given(frac=st.floats(0.05, 1.0), horizon=st.integers(5, 60), seed=st.integers(0, 1000))
def test_timed_attack_never_exceeds_its_step_budget(frac: float, horizon: int, seed: int) -> None:
    policy = mlp_policy(3, 2, seed=seed)
    attack = make_attack("timed-obs-v1", 0.5, step_budget=frac)
    assert isinstance(attack, TimedObservation)
    attack.start(policy, num_envs=4, rng=np.random.default_rng(seed), horizon=horizon)
    cap = int(np.ceil(frac * horizon))
    rng = np.random.default_rng(seed)
    touched = np.zeros(4, dtype=int)
    for _ in range(horizon):
        x0 = rng.uniform(-1, 1, (4, 3)).astype(np.float32)
        x = attack.perturb(x0, np.arange(4))
        touched += np.any(x != x0, axis=1)
    assert np.all(touched <= cap)
    assert np.all(attack.attacked_steps() <= cap)
    attack.reset(np.array([1]))
    assert attack.attacked_steps()[1] == 0


def test_timed_attack_with_unreachable_threshold_never_fires() -> None:
    policy = mlp_policy(3, 2, seed=0)
    attack = TimedObservation(ThreatModel(Surface.OBSERVATION, 0.5), beta=1.5)
    attack.start(policy, num_envs=8, rng=np.random.default_rng(0), horizon=10)
    x0 = np.random.default_rng(0).uniform(-1, 1, (8, 3)).astype(np.float32)
    assert np.array_equal(attack.perturb(x0), x0)


def test_observation_wrapper_shows_perturbed_observations_within_budget() -> None:
    from helpers import GenericTestEnv

    true_obs = np.full(3, 0.5, dtype=np.float32)
    env = GenericTestEnv(
        observation_space=gym.spaces.Box(-3, 3, (3,), np.float32),
        reset_func=lambda self, **_: (true_obs.copy(), {}),
        step_func=lambda self, action: (true_obs.copy(), 1.0, False, False, {}),
    )
    policy = mlp_policy(3, 2, seed=0)
    wrapped = make_attack("pgd-obs-v1", 0.25).as_wrapper(env, policy, seed=0)
    obs, _ = wrapped.reset(seed=0)
    seen = [obs]
    for _ in range(5):
        obs, reward, *_ = wrapped.step(0)
        assert reward == 1.0
        seen.append(obs)
    dev = np.abs(np.stack(seen) - true_obs)
    assert np.all(dev <= 0.25 + 1e-6)
    assert dev.max() > 0.1  # the agent really saw perturbed observations


@pytest.mark.parametrize("attack_id", ["pgd-obs-v1", "pgd-l2-obs-v1", "mad-obs-v1", "fgsm-obs-v1"])
def test_clean_actions_reported_on_the_way_equal_the_policys_own(attack_id: str) -> None:
    """Gradient attacks hand the rollout the clean actions they computed on the way; they
    must be exactly what the policy does on the clean observations."""
    policy = mlp_policy(4, 3, seed=11, low=-1.0, high=1.0)  # tight bounds: clipping happens
    x0 = np.random.default_rng(2).uniform(-1, 1, (128, 4)).astype(np.float32)
    attack = make_attack(attack_id, 0.4)
    attack.start(policy, num_envs=128, rng=np.random.default_rng(0))
    attack.perturb(x0)
    assert np.array_equal(attack.clean_actions, policy.act(x0))


@pytest.mark.parametrize(
    ("attack_id", "policy_name"),
    [
        ("pgd-obs-v1", "zoo:cartpole-ppo"),
        ("pgd-obs-v1", "zoo:cartpole-dqn"),
        ("pgd-obs-v1", "zoo:pendulum-sac"),
        ("pgd-l2-obs-v1", "zoo:cartpole-ppo"),
        ("mad-obs-v1", "zoo:pendulum-sac"),
        ("fgsm-obs-v1", "zoo:acrobot-ppo"),
        ("critic-obs-v1", "zoo:cartpole-dqn"),
        ("critic-obs-v1", "zoo:pendulum-sac"),
        ("timed-obs-v1", "zoo:cartpole-dqn"),
    ],
)
def test_adversarial_actions_reported_on_the_way_equal_the_policys_own(
    attack_id: str, policy_name: str
) -> None:
    """The rollout executes the actions an attack reports for its perturbed batch instead of
    running the policy again: they must be exactly the policy's actions on that batch, for
    discrete and continuous actions, on the fast linf path and the projected l2/SGLD ones."""
    policy = load_policy(policy_name)
    space = policy.observation_space
    assert isinstance(space, gym.spaces.Box)
    rng = np.random.default_rng(5)
    stats = policy.info.observation_stats
    assert stats is not None
    std = np.asarray(stats["std"])
    x0 = (rng.standard_normal((96, std.size)) * std).astype(np.float32)
    x0 = np.clip(x0, space.low, space.high)
    reported = 0
    for eps in (0.05, 0.5, 2.0):
        attack = make_attack(attack_id, eps, unit="std")
        attack.start(policy, num_envs=96, rng=np.random.default_rng(1), scale=std)
        x = attack.perturb(x0)
        if attack.adversarial_actions is not None:
            reported += 1
            assert np.array_equal(attack.adversarial_actions, policy.act(x))
    assert reported == 3  # every one of these methods reports them


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    eps=st.floats(1e-4, 5.0),
    dim=st.integers(1, 6),
)
def test_pgd_iterates_need_no_projection(data: st.DataObject, eps: float, dim: int) -> None:
    """The linf loop stays inside the float32 box of the ball and the space, so projecting its
    result is a no-op: the point the policy was evaluated at is the point executed."""
    elems = st.floats(-50, 50, width=32)
    x0 = np.array(data.draw(st.lists(elems, min_size=dim, max_size=dim)), dtype=np.float32)[None]
    scale = np.array(data.draw(st.lists(st.floats(0, 3), min_size=dim, max_size=dim)))
    bound = np.float32(data.draw(st.floats(0.5, 60, width=32)))
    lo = np.full(dim, -bound, np.float32)
    hi = np.full(dim, bound, np.float32)
    ball = Ball(eps, "linf", scale, lo, hi)
    box_lo, box_hi = ball.box32(x0)
    assert np.all(box_lo <= x0) and np.all(x0 <= box_hi)
    t = np.array(data.draw(st.lists(st.floats(0, 1), min_size=dim, max_size=dim)))
    x = (box_lo + t * (box_hi.astype(np.float64) - box_lo)).astype(np.float32)
    x = np.clip(x, box_lo, box_hi)
    for corner in (x, box_lo, box_hi):
        assert np.array_equal(ball.project(x0, corner), corner)
        ball.check(x0, corner)


def test_box_edge_stays_inside_when_x0_minus_radius_rounds_outward() -> None:
    """Regression (found by Hypothesis): 6 - 1.9999999999999996 rounds to 4.0 in float64,
    which is outside the ball as project() measures it; the box must step inward."""
    x0 = np.array([[0, 0, 0, 6.0]], np.float32)
    scale = np.array([0, 0, 0, 1.9999999999999996])
    ball = Ball(1.0, "linf", scale, np.full(4, -1, np.float32), np.full(4, 1, np.float32))
    lo, hi = ball.box32(x0)
    assert np.array_equal(ball.project(x0, lo), lo)
    assert np.array_equal(ball.project(x0, hi), hi)


@pytest.mark.parametrize("attack_id", CHEAP_OBS_ATTACKS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_clean_observation_is_refused_before_the_attack_runs(
    attack_id: str, bad: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decided: the attack refuses the batch up front (ConfigError, naming the row and the
    feature), before its core runs; Ball.check refuses it again (tests/attacks/test_ball.py).
    There is no ε-ball around NaN or an infinite reading."""
    policy = mlp_policy(3, 2, seed=0)
    attack = make_attack(attack_id, 0.1)
    assert isinstance(attack, ObservationAttack)
    attack.start(policy, num_envs=2, rng=np.random.default_rng(0), horizon=10)

    def core(x0: np.ndarray, env_ids: np.ndarray) -> np.ndarray:
        raise AssertionError("the core ran on a non-finite batch")

    monkeypatch.setattr(attack, "_perturb", core)
    x0 = np.zeros((2, 3), np.float32)
    x0[1, 2] = bad
    with pytest.raises(ConfigError, match=r"row 1 holds .* at feature 2"):
        attack.perturb(x0)


def _timed(cap_frac: float, horizon: int, n: int = 1, **kw: Any) -> TimedObservation:
    attack = make_attack("timed-obs-v1", 0.5, step_budget=cap_frac, **kw)
    assert isinstance(attack, TimedObservation)
    attack.start(
        mlp_policy(3, 2, seed=0), num_envs=n, rng=np.random.default_rng(0), horizon=horizon
    )
    return attack


def test_the_step_budget_is_checked_at_run_time_apart_from_the_firing_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A core that ignores its budget (it attacks every step) is stopped by the run-time
    count of changed rows at the first step beyond ceil(step_budget · horizon)."""
    attack = _timed(0.25, horizon=8)  # cap 2
    assert attack.cap == 2
    everything = PGDObservation._perturb.__get__(attack)
    monkeypatch.setattr(attack, "_perturb", everything)
    x0 = np.full((1, 3), 0.5, np.float32)
    for _ in range(2):
        assert not np.array_equal(attack.perturb(x0, np.array([0])), x0)
    with pytest.raises(BudgetViolation, match="beyond its step budget of 2"):
        attack.perturb(x0, np.array([0]))
    attack.reset(np.array([0]))  # a new episode has its budget again
    attack.perturb(x0, np.array([0]))


def test_repeated_or_out_of_range_env_ids_cannot_share_one_step_budget() -> None:
    """Two rows of one environment in a batch both fired at the last unit of budget (the cap
    is read before either is counted); a negative id wrapped round to another env's count."""
    attack = _timed(1.0, horizon=4, n=2)
    x0 = np.zeros((2, 3), np.float32)
    for ids in ([0, 0], [-1, 0], [0, 2], [0.5, 1]):
        with pytest.raises(ConfigError, match="distinct integers"):
            attack.perturb(x0, np.array(ids))
    attack.perturb(x0, np.array([1, 0]))


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"beta": float("nan")}, "beta must be a finite number"),
        ({"beta": "0.5"}, "beta must be a finite number"),
        ({"window": 0}, "window must be an integer"),
    ],
)
def test_a_timed_threshold_that_would_silently_never_fire_is_refused(
    kw: dict[str, Any], why: str
) -> None:
    """``gap >= NaN`` is false: a NaN beta switched the attack off and the red team reported
    a policy that no attack had touched."""
    with pytest.raises(ConfigError, match=why):
        TimedObservation(ThreatModel(Surface.OBSERVATION, 0.5), **kw)


@pytest.mark.parametrize("horizon", [0, -5, 2.5, float("nan"), True])
def test_a_horizon_that_is_not_a_step_count_is_refused(horizon: object) -> None:
    attack = make_attack("timed-obs-v1", 0.5, step_budget=0.5)
    with pytest.raises(ConfigError, match="horizon must be an integer"):
        attack.start(
            mlp_policy(3, 2, seed=0),
            num_envs=1,
            rng=np.random.default_rng(0),
            horizon=horizon,  # type: ignore[arg-type]
        )


def test_a_nan_preference_gap_never_fires_and_does_not_poison_the_threshold() -> None:
    """A NaN gap in the running quantile made the threshold NaN, and the attack never fired
    again for the rest of its window."""

    class NaNOnFirstFeature(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.lin(x)
            return torch.where(x[:, :1] > 0.9, torch.full_like(out, float("nan")), out)

    policy = from_torch(
        NaNOnFirstFeature(), gym.spaces.Box(-3, 3, (3,), np.float32), gym.spaces.Discrete(2)
    )
    attack = make_attack("timed-obs-v1", 0.5, step_budget=1.0)
    assert isinstance(attack, TimedObservation)
    attack.start(policy, num_envs=2, rng=np.random.default_rng(0), horizon=100)
    x0 = np.array([[1.0, 0, 0], [0, 0.5, 0]], np.float32)
    x = attack.perturb(x0, np.arange(2))
    assert np.array_equal(x[0], x0[0])  # the NaN row does not fire
    again = np.array([[0, 0.3, 0], [0, 0.5, 0]], np.float32)
    assert np.all(np.any(attack.perturb(again, np.arange(2)) != again, axis=1))
