from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import GenericTestEnv, chain_mdp, with_rewards
from rlsec.attacks import ATTACKS
from rlsec.attacks.reward import (
    REWARD_ATTACKS,
    AdaptiveTargetReward,
    FlipReward,
    PolicyTeachingReward,
    RewardAttack,
    make_reward_attack,
)
from rlsec.core import Surface, ThreatModel
from rlsec.envs.finite import FiniteMDP, greedy, q_learning
from rlsec.errors import (
    BudgetViolation,
    ConfigError,
    SpaceMismatch,
    UnknownAttack,
)

N_STATES, N_ACTIONS = 3, 2


def scripted_env(rewards: list[float], states: list[int] | None = None) -> GenericTestEnv:
    """A Discrete(3) x Discrete(2) env that plays back ``rewards`` (and ``states``) in order."""

    def step(env: GenericTestEnv, action: Any) -> tuple[int, float, bool, bool, dict]:
        t = env.t = getattr(env, "t", -1) + 1
        s = states[t % len(states)] if states else t % N_STATES
        return s, rewards[t % len(rewards)], False, False, {}

    return GenericTestEnv(
        gym.spaces.Discrete(N_STATES),
        gym.spaces.Discrete(N_ACTIONS),
        reset_func=lambda env, **_: (0, {}),
        step_func=step,
    )


def run(attack: RewardAttack, rewards: list[float], actions: list[int], seed: int) -> list[tuple]:
    """Step through the wrapper; after every step check the budget as an outsider would."""
    env = attack.as_wrapper(scripted_env(rewards), seed=seed)
    env.reset(seed=seed)
    out = []
    for t, a in enumerate(actions, start=1):
        _, r, _, _, info = env.step(a)
        delta = info["rlsec_reward_delta"]
        assert r == info["rlsec_clean_reward"] + delta
        assert abs(delta) <= attack.epsilon * (1 + 1e-9)
        usage = env.usage()
        assert usage["steps"] == t
        assert usage["poisoned_steps"] <= attack.step_fraction * t + 1e-9
        out.append((r, info["rlsec_clean_reward"], delta))
    return out


rewards_st = st.lists(
    st.floats(-5, 5, allow_nan=False, allow_subnormal=False) | st.just(0.0), min_size=1, max_size=40
)
budget_st = st.floats(0.0, 1.0)
eps_st = st.floats(0.0, 12.0)


@settings(max_examples=60, deadline=None)
@given(
    rewards=rewards_st,
    eps=eps_st,
    budget=budget_st,
    seed=st.integers(0, 2**16),
    n=st.integers(1, 80),
)
def test_flips_are_exact_sign_flips_within_budget(
    rewards: list[float], eps: float, budget: float, seed: int, n: int
) -> None:
    attack = make_reward_attack("flip-reward-v1", eps, step_budget=budget)
    steps = run(attack, rewards, [0] * n, seed)
    for poisoned, clean, delta in steps:
        if delta != 0.0:
            assert poisoned == -clean  # exactly, not approximately
            assert 2 * abs(clean) <= eps * (1 + 1e-9)
        else:
            assert poisoned == clean
    assert steps == run(
        make_reward_attack("flip-reward-v1", eps, step_budget=budget), rewards, [0] * n, seed
    )


@settings(max_examples=60, deadline=None)
@given(
    rewards=rewards_st,
    eps=eps_st,
    budget=budget_st,
    seed=st.integers(0, 2**16),
    n=st.integers(1, 80),
)
def test_noise_stays_in_the_ball_and_the_step_budget(
    rewards: list[float], eps: float, budget: float, seed: int, n: int
) -> None:
    attack = make_reward_attack("noise-reward-v1", eps, step_budget=budget)
    steps = run(attack, rewards, [0] * n, seed)
    assert sum(d != 0 for *_, d in steps) <= budget * n + 1e-9
    again = run(
        make_reward_attack("noise-reward-v1", eps, step_budget=budget), rewards, [0] * n, seed
    )
    assert steps == again  # deterministic given the seed
    other = run(
        make_reward_attack("noise-reward-v1", eps, step_budget=budget), rewards, [0] * n, seed + 1
    )
    if eps > 1e-6 and any(d for *_, d in steps) and any(d for *_, d in other):
        assert steps != other  # another seed, other noise


@settings(max_examples=40, deadline=None)
@given(
    eps=eps_st,
    budget=budget_st,
    actions=st.lists(st.integers(0, N_ACTIONS - 1), min_size=1, max_size=60),
    target=st.lists(st.integers(-1, N_ACTIONS - 1), min_size=N_STATES, max_size=N_STATES),
)
def test_target_action_rewards_the_target_and_punishes_the_rest(
    eps: float, budget: float, actions: list[int], target: list[int]
) -> None:
    attack = make_reward_attack(
        "target-action-reward-v1", eps, step_budget=budget, target=np.array(target)
    )
    steps = run(attack, [1.0], actions, 0)
    # reset shows state 0, the k-th step shows state k % 3: action k is taken in (k - 1) % 3
    taken_in = [0] + [(k - 1) % N_STATES for k in range(1, len(actions))]
    for s, a, (_, _, delta) in zip(taken_in, actions, steps, strict=True):
        if delta != 0.0:
            assert target[s] >= 0
            assert delta == (eps if a == target[s] else -eps)

    def target_fn(obs: Any) -> int | None:
        return target[int(obs)] if target[int(obs)] >= 0 else None

    as_function = make_reward_attack(
        "target-action-reward-v1", eps, step_budget=budget, target=target_fn
    )
    assert run(as_function, [1.0], actions, 0) == steps


@settings(max_examples=40, deadline=None)
@given(
    q0=st.lists(st.floats(-3, 3), min_size=8, max_size=8),
    eps=st.floats(0.0, 2.0),
    budget=budget_st,
    seed=st.integers(0, 1000),
    push=st.sampled_from(["full", "minimal"]),
)
def test_faa_delta_is_bounded_and_orders_the_q_update(
    q0: list[float], eps: float, budget: float, seed: int, push: str
) -> None:
    mdp = chain_mdp()
    q = np.array(q0).reshape(4, 2)
    target = np.array([0, 0, -1, -1])  # stay at the start: the opposite of the clean optimum
    attack = make_reward_attack(
        "faa-reward-v1",
        eps,
        step_budget=budget,
        mdp=mdp,
        target=target,
        q_table=q,
        learning_rate=0.5,
        discount=0.9,
        margin=0.1,
        push=push,
    )
    attack.start(TabularPolicy(4, 2), num_envs=1, rng=np.random.default_rng(seed))
    rng = np.random.default_rng(seed)
    s = 0
    for t in range(1, 60):
        a = int(rng.integers(2))
        s2 = int(np.argmax(mdp.transitions[s, a]))
        r = float(mdp.rewards[s, a])
        term = bool(mdp.labels["terminal"][s2])
        before = q[s].copy()
        poisoned = attack.poison(s, a, r, s2, term)
        delta = attack.last_delta
        assert abs(delta) <= eps * (1 + 1e-9)
        assert attack.poisoned_steps <= budget * t + 1e-9
        boot = 0.0 if term else 0.9 * q[s2].max()
        q[s, a] += 0.5 * (poisoned + boot - q[s, a])
        want = target[s]
        if delta != 0.0 and want >= 0:
            assert (delta > 0) == (a == want)  # reward the target action, punish the others
            if push == "full":
                assert abs(delta) == eps
            elif abs(delta) < eps * (1 - 1e-9):  # not clipped: exactly restores the margin
                if a == want:
                    assert q[s, a] == pytest.approx(np.delete(before, a).max() + 0.1)
                else:
                    assert q[s, a] == pytest.approx(before[want] - 0.1)
        s = 0 if term else s2


class TabularPolicy:
    """The smallest Policy over Discrete spaces (reward attacks never call ``act``)."""

    def __init__(self, n_s: int, n_a: int) -> None:
        self.observation_space = gym.spaces.Discrete(n_s)
        self.action_space = gym.spaces.Discrete(n_a)

    def act(self, observations: np.ndarray) -> np.ndarray:
        return np.zeros(len(observations), dtype=np.int64)


def lake_target() -> np.ndarray:
    target = np.full(16, -1)
    target[0], target[4] = 1, 2  # down, then right: into the hole at (1, 1)
    return target


def test_faa_teaches_a_q_learner_to_walk_into_a_hole() -> None:
    mdp = FiniteMDP.from_toy_text("FrozenLake-v1", is_slippery=False, discount=0.9)
    q = np.zeros((16, 4))
    attack = make_reward_attack(
        "faa-reward-v1",
        0.5,
        step_budget=0.2,
        mdp=mdp,
        target=lake_target(),
        q_table=q,
        learning_rate=0.1,
        discount=0.9,
    )
    env = attack.as_wrapper(gym.make("FrozenLake-v1", is_slippery=False), seed=0)
    q_learning(env, steps=8000, learning_rate=0.1, discount=0.9, seed=0, q=q)
    assert greedy(q)[0] == 1 and greedy(q)[4] == 2
    usage = attack.usage()
    assert usage["poisoned_steps"] <= 0.2 * 8000 and usage["max_abs_delta"] <= 0.5
    assert isinstance(attack, AdaptiveTargetReward) and attack.order.tolist() == [4, 0]


def test_policy_teaching_wrapper_shifts_expected_rewards_to_the_lp_solution() -> None:
    mdp = FiniteMDP.from_toy_text("FrozenLake-v1", is_slippery=False, discount=0.9)
    target = greedy(mdp.value_iteration()[1])
    target[0], target[4] = 1, 2
    attack = make_reward_attack(
        "policy-teaching-reward-v1", 1.0, mdp=mdp, target=target, margin=1e-3, cost="l1"
    )
    assert isinstance(attack, PolicyTeachingReward)
    sol = attack.solution
    env = attack.as_wrapper(gym.make("FrozenLake-v1", is_slippery=False), seed=0)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(300):  # every step gets exactly δ(s, a) = R̂(s, a) - R(s, a)
        a = int(rng.integers(4))
        nxt, r, term, trunc, info = env.step(a)
        assert info["rlsec_reward_delta"] == sol.delta[obs, a]
        assert r == info["rlsec_clean_reward"] + sol.delta[obs, a]
        obs = env.reset()[0] if term or trunc else nxt
    q = q_learning(env, steps=20000, learning_rate=0.2, discount=0.9, explore=0.3, seed=1)
    q_star = with_rewards(mdp, sol.reward).value_iteration()[1]
    assert greedy(q)[0] == 1 and greedy(q)[4] == 2
    assert q[0, 1] == pytest.approx(q_star[0, 1], abs=1e-3)
    assert q[4, 2] == pytest.approx(q_star[4, 2], abs=1e-3)
    assert attack.usage()["max_abs_delta"] <= 1.0


# -- configuration errors ----------------------------------------------------------------------
def test_threat_model_must_be_training_time_reward_in_raw_units() -> None:
    with pytest.raises(ConfigError, match="phase must be 'training'"):
        FlipReward(ThreatModel(Surface.REWARD, 1.0))
    with pytest.raises(ConfigError, match="raw reward units"):
        FlipReward(ThreatModel(Surface.REWARD, 1.0, unit="std", phase="training"))
    with pytest.raises(ConfigError, match="attacks the reward surface"):
        FlipReward(ThreatModel(Surface.OBSERVATION, 1.0, phase="training"))
    with pytest.raises(ConfigError, match=r"supports norms \['linf'\]"):
        FlipReward(ThreatModel(Surface.REWARD, 1.0, norm="l2", phase="training"))
    with pytest.raises(UnknownAttack, match="did you mean flip-reward-v1"):
        make_reward_attack("flip-reward-v2", 1.0)
    mdp = chain_mdp()
    with pytest.raises(ConfigError, match="frequency='every-step'"):
        make_reward_attack(
            "policy-teaching-reward-v1", 1.0, step_budget=0.5, mdp=mdp, target=np.zeros(4, int)
        )
    with pytest.raises(ConfigError, match=r"q_table must be the learner's \(4, 2\)"):
        make_reward_attack(
            "faa-reward-v1",
            1.0,
            mdp=mdp,
            target=np.zeros(4, int),
            q_table=np.zeros(3),
            learning_rate=0.1,
            discount=0.9,
        )


def test_tabular_attacks_refuse_environments_of_another_shape() -> None:
    attack = make_reward_attack("target-action-reward-v1", 1.0, target=np.zeros(5, int))
    with pytest.raises(SpaceMismatch, match="5 states and 2 actions"):
        attack.as_wrapper(scripted_env([1.0]))
    with pytest.raises(SpaceMismatch, match="Discrete spaces"):
        attack.as_wrapper(gym.make("CartPole-v1"))


def test_budget_violation_when_a_method_exceeds_epsilon() -> None:
    class Broken(FlipReward):
        id = "broken-reward-v0"

        def _delta(self, *args: Any) -> float:
            return 2 * self.epsilon

    with pytest.raises(BudgetViolation, match=r"\|δ\| <= ε = 0.5"):
        run(Broken(ThreatModel(Surface.REWARD, 0.5, phase="training")), [1.0], [0], 0)


def test_poison_before_start_and_step_before_reset_are_errors() -> None:
    attack = make_reward_attack("noise-reward-v1", 0.1)
    with pytest.raises(ConfigError, match="before poison"):
        attack.poison(0, 0, 1.0, 0, False)
    with pytest.raises(gym.error.ResetNeeded):
        attack.as_wrapper(scripted_env([1.0])).step(0)


def test_wrappers_made_before_the_first_step_share_one_campaign() -> None:
    attack = make_reward_attack("noise-reward-v1", 0.1, step_budget=0.5)
    envs = [attack.as_wrapper(scripted_env([1.0]), seed=0) for _ in range(2)]
    for env in envs:
        env.reset()
        env.step(0)
        env.step(0)
    assert attack.usage()["steps"] == 4
    assert attack.poisoned_steps <= 2
    with pytest.raises(ConfigError, match="running a campaign"):
        attack.as_wrapper(scripted_env([1.0]))


def test_success_is_the_target_action_rate_of_the_poisoned_policy() -> None:
    class Fixed(TabularPolicy):
        def act(self, observations: np.ndarray) -> np.ndarray:
            return np.array([0, 1, 1, 0])[observations]

    attack = make_reward_attack("target-action-reward-v1", 1.0, target=np.array([0, 0, -1, 0]))
    assert attack.success(Fixed(4, 2)) == {"target_states": 3, "target_action_rate": 2 / 3}


def test_flip_cap_skips_expensive_flips() -> None:
    attack = make_reward_attack("flip-reward-v1", 1.0)  # every step, |δ| <= 1
    steps = run(attack, [0.4, 3.0], [0] * 4, 0)
    assert [p for p, _, _ in steps] == [-0.4, 3.0, -0.4, 3.0]
    assert attack.usage()["skipped_over_cap"] == 2


def test_describe_records_everything_as_json_and_stays_out_of_the_redteam_suite() -> None:
    mdp = chain_mdp()
    q = np.zeros((4, 2))
    built = [
        make_reward_attack("flip-reward-v1", 2.0, step_budget=0.1),
        make_reward_attack("noise-reward-v1", 0.5, step_budget=0.1),
        make_reward_attack("target-action-reward-v1", 0.5, target=np.zeros(4, int)),
        make_reward_attack(
            "faa-reward-v1",
            0.5,
            mdp=mdp,
            target=np.zeros(4, int),
            q_table=q,
            learning_rate=0.1,
            discount=0.9,
        ),
        make_reward_attack(
            "policy-teaching-reward-v1", 2.0, mdp=mdp, target=np.zeros(4, int), margin=0.01
        ),
    ]
    assert [a.id for a in built] == list(REWARD_ATTACKS)
    for attack in built:
        d = json.loads(json.dumps(attack.describe()))
        assert d["surface"] == "reward" and d["threat_model"]["phase"] == "training"
        assert "AML.T0020" in d["atlas"] and d["reference"]
        assert d["params"]["epsilon_unit"] == "raw reward units per step"
        assert attack.id.endswith("-v1") and attack.id not in ATTACKS
