from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import GenericTestEnv, linear_policy
from rlsec.attacks import ActionAttack, make_attack
from rlsec.errors import AttackNotApplicable, BudgetViolation, ConfigError, InvalidBudget
from rlsec.policies import TorchPolicy
from rlsec.policies.network import PolicyNetwork


def continuous_policy_with_q(target: float = 0.5) -> TorchPolicy:
    """Actor a = clip(0.1·s0); critic Q(s, a) = -(a - target)^2, lowest at the far bound."""
    spec = {
        "input": {"type": "float", "dim": 2},
        "policy": [{"type": "linear", "in": 2, "out": 1}],
        "output": "action",
        "q": [{"type": "linear", "in": 3, "out": 1}],
        "q_takes_action": True,
    }
    net = PolicyNetwork(spec, action_dim=1)
    with torch.no_grad():
        net.policy[0].weight.copy_(torch.tensor([[0.1, 0.0]]))
        net.policy[0].bias.zero_()

    class Q(torch.nn.Module):
        def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
            return -((act.flatten(1) - target) ** 2).sum(1)

    return TorchPolicy(
        gym.spaces.Box(-5, 5, (2,), np.float32),
        gym.spaces.Box(-1, 1, (1,), np.float32),
        net.actor(),
        "action",
        q=Q(),
    )


def _start(
    attack_id: str, alpha: float, policy: TorchPolicy, n: int, seed: int = 0
) -> ActionAttack:
    attack = make_attack(attack_id, alpha)
    assert isinstance(attack, ActionAttack)
    attack.start(policy, num_envs=n, rng=np.random.default_rng(seed))
    return attack


@settings(max_examples=40, deadline=None)
@given(
    alpha=st.floats(0.0, 1.0),
    seed=st.integers(0, 10_000),
    n=st.integers(1, 64),
    adversarial=st.booleans(),
)
def test_pr_replaces_exactly_the_masked_rows_and_nothing_else(
    alpha: float, seed: int, n: int, adversarial: bool
) -> None:
    policy = linear_policy(np.array([1.0, -1.0]), q=True)
    attack = _start("pr-adv-act-v1" if adversarial else "pr-random-act-v1", alpha, policy, n, seed)
    obs = np.random.default_rng(seed).uniform(-1, 1, (n, 2)).astype(np.float32)
    agent = policy.act(obs)
    executed = attack.perturb_action(obs, agent)
    mask = attack.last_mask
    assert np.array_equal(executed[~mask], agent[~mask])
    assert np.all((executed >= 0) & (executed < 2))
    if adversarial:  # the replacement is the action with the lowest Q
        worst = 1 - agent
        assert np.array_equal(executed[mask], worst[mask])
    if alpha == 0.0:
        assert not mask.any()


def test_pr_takeover_rate_matches_alpha() -> None:
    policy = linear_policy(np.array([1.0]))
    attack = _start("pr-random-act-v1", 0.3, policy, 20_000, seed=1)
    attack.perturb_action(np.zeros((20_000, 1), np.float32), np.zeros(20_000, np.int64))
    rate = attack.last_mask.mean()
    assert abs(rate - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 20_000)


@settings(max_examples=30, deadline=None)
@given(alpha=st.floats(0.0, 1.0), seed=st.integers(0, 1000), adversarial=st.booleans())
def test_nr_blend_moves_at_most_alpha_of_the_way_and_stays_in_bounds(
    alpha: float, seed: int, adversarial: bool
) -> None:
    policy = continuous_policy_with_q()
    attack = _start("nr-adv-act-v1" if adversarial else "nr-random-act-v1", alpha, policy, 16, seed)
    obs = np.random.default_rng(seed).uniform(-5, 5, (16, 2)).astype(np.float32)
    agent = policy.act(obs)
    executed = attack.perturb_action(obs, agent)
    assert np.all(executed >= -1)
    assert np.all(executed <= 1)
    # |executed - agent| = α·|adversary - agent| <= α·(range of the box)
    assert np.all(np.abs(executed - agent) <= alpha * 2.0 + 1e-6)


def test_adversarial_continuous_action_minimises_the_victims_q() -> None:
    policy = continuous_policy_with_q(target=0.5)
    attack = _start("pr-adv-act-v1", 1.0, policy, 8)
    obs = np.random.default_rng(0).uniform(-5, 5, (8, 2)).astype(np.float32)
    executed = attack.perturb_action(obs, policy.act(obs))
    # Q = -(a - 0.5)^2 on [-1, 1] is lowest at a = -1
    assert np.allclose(executed, -1.0, atol=1e-6)


def test_adversarial_continuous_without_q_takes_the_farthest_corner() -> None:
    policy = continuous_policy_with_q()
    policy._q = None  # the same actor, no critic
    attack = _start("pr-adv-act-v1", 1.0, policy, 2)
    obs = np.array([[3.0, 0.0], [-3.0, 0.0]], np.float32)  # agent actions 0.3 and -0.3
    assert np.allclose(attack.perturb_action(obs, policy.act(obs)).ravel(), [-1.0, 1.0])


def test_nr_needs_continuous_actions() -> None:
    with pytest.raises(AttackNotApplicable, match="continuous"):
        make_attack("nr-random-act-v1", 0.1).check_applicable(linear_policy(np.array([1.0])))


def test_action_budget_is_a_probability() -> None:
    with pytest.raises(InvalidBudget, match=r"\[0, 1\]"):
        make_attack("pr-random-act-v1", 1.5)


def test_perturb_action_before_start_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="start"):
        make_attack("pr-random-act-v1", 0.1).perturb_action(np.zeros((1, 1)), np.zeros(1))


def test_action_wrapper_executes_the_adversarys_action() -> None:
    seen: list[int] = []

    def step(env: GenericTestEnv, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        seen.append(int(action))
        return np.array([1.0, 1.0], np.float32), 1.0, False, False, {}

    env = GenericTestEnv(
        reset_func=lambda self, **_: (np.array([1.0, 1.0], np.float32), {}), step_func=step
    )
    policy = linear_policy(np.array([1.0, 1.0]), q=True)  # picks 0 at s = (1, 1); worst is 1
    wrapped = make_attack("pr-adv-act-v1", 1.0).as_wrapper(env, policy, seed=0)
    wrapped.reset(seed=0)
    _, _, _, _, info = wrapped.step(0)
    assert seen == [1]
    assert info["rlsec_action_replaced"] is True
    with pytest.raises(gym.error.ResetNeeded):
        make_attack("pr-adv-act-v1", 1.0).as_wrapper(env, policy).step(0)


def _box_attack(attack_id: str, alpha: float) -> ActionAttack:
    return _start(attack_id, alpha, continuous_policy_with_q(), 4)


def test_pr_check_refuses_a_replacement_the_takeover_draw_did_not_select() -> None:
    attack = _start("pr-random-act-v1", 0.5, linear_policy(np.array([1.0])), 3)
    agent, adv = np.array([0, 1, 0]), np.array([1, 0, 1])
    attack.check_executed(agent, adv, np.array([1, 1, 0]), np.array([True, False, False]))
    with pytest.raises(BudgetViolation, match="row 2, which the takeover draw"):
        attack.check_executed(agent, adv, np.array([1, 1, 1]), np.array([True, False, False]))


@settings(max_examples=60, deadline=None)
@given(
    alpha=st.floats(0.0, 1.0),
    factor=st.floats(1.01, 5.0),
    agent=st.lists(st.floats(-3, 3, width=32), min_size=4, max_size=4),
    adversary=st.lists(st.floats(-1, 1, width=32), min_size=4, max_size=4),
)
def test_nr_check_passes_the_blend_and_refuses_any_blend_that_moves_farther(
    alpha: float, factor: float, agent: list[float], adversary: list[float]
) -> None:
    """The executed NR action is within α·|adversary - c| of c (the agent's action clipped
    into the box): the honest blend passes, whatever the agent proposed (inside the box or
    not); a blend moved ``factor`` times as far (the review's "five times looser" weakening,
    and anything above 1%) is refused wherever that leaves the box's clip room."""
    attack = _box_attack("nr-random-act-v1", alpha)
    a = np.asarray(agent, np.float32).reshape(4, 1)
    adv = np.asarray(adversary, np.float32).reshape(4, 1)
    blend = (1 - alpha) * a.astype(np.float64) + alpha * adv.astype(np.float64)
    honest = np.clip(blend, -1, 1).astype(np.float32)
    attack.check_executed(a, adv, honest, np.ones(4, bool))
    c = np.clip(a.astype(np.float64), -1, 1)
    looser = np.clip(c + factor * alpha * (adv - c), -1, 1).astype(np.float32)
    moved = np.abs(looser - c) - alpha * np.abs(adv - c)
    if np.any(moved > 1e-5):
        with pytest.raises(BudgetViolation, match="farther than α"):
            attack.check_executed(a, adv, looser, np.ones(4, bool))


def test_an_nr_adversary_outside_the_action_box_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attack = _box_attack("nr-random-act-v1", 0.1)
    monkeypatch.setattr(attack, "_adversary", lambda obs, a: np.full((4, 1), 50.0, np.float32))
    obs = np.zeros((4, 2), np.float32)
    with pytest.raises(BudgetViolation, match="adversary chose an action outside"):
        attack.perturb_action(obs, np.zeros((4, 1), np.float32))


@pytest.mark.parametrize("attack_id", ["nr-random-act-v1", "pr-random-act-v1"])
def test_a_nan_executed_or_adversary_action_is_refused(attack_id: str) -> None:
    attack = _box_attack(attack_id, 0.5)
    a = np.zeros((1, 1), np.float32)
    nan = np.full((1, 1), np.nan, np.float32)
    with pytest.raises(BudgetViolation):
        attack.check_executed(a, a, nan, np.ones(1, bool))
    if attack_id.startswith("nr"):
        with pytest.raises(BudgetViolation, match="outside"):
            attack.check_executed(a, nan, a, np.ones(1, bool))
