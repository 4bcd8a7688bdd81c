"""Verification under a bounded observation attacker: the bound holds and is attained, and
the attacker's strategy replays as an attack in the red team."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlsec.attacks import StrategyReplay, make_attack
from rlsec.core import Surface, ThreatModel
from rlsec.errors import (
    AttackNotApplicable,
    BudgetViolation,
    ConfigError,
    InvalidBudget,
    ModelError,
)
from rlsec.policies import from_torch, load_policy
from rlsec.redteam import redteam
from rlsec.stats import proportion_ci
from rlsec.verify import Model, check, induced_chain
from rlsec.verify.attack import Strategy, attacked_model, worst_case


def _unsafe_rate(env: gym.Env[Any, Any], policy: Any, episodes: int, label: np.ndarray) -> int:
    hits = 0
    for ep in range(episodes):
        obs, _ = env.reset(seed=ep)
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(int(policy.act(np.asarray([obs]))[0]))
            done = term or trunc
        # toy-text envs keep the state in .s, rlsec's envs report it in info
        state = info["state"] if "state" in info else env.unwrapped.s  # type: ignore[attr-defined]  # noqa: SIM401
        hits += bool(label[int(state)])
    return hits


def test_index_attacker_bound_is_attained_by_replaying_its_strategy(tmp_path: Any) -> None:
    policy = load_policy("zoo:frozenlake-ppo")
    m = Model.from_env("FrozenLake-v1")
    clean = check(induced_chain(m, policy), 'P=? [F "hole"]').result
    attacked = attacked_model(m, policy, 1)
    res, strategy = worst_case(attacked, 'Pmax=? [F "hole"]', env_id="FrozenLake-v1")
    assert res.result >= clean
    # radius 0 is the clean chain, and more budget never helps the policy
    assert check(attacked_model(m, policy, 0).mdp, 'Pmax=? [F "hole"]').result == pytest.approx(
        clean, abs=1e-12
    )
    assert check(attacked_model(m, policy, 2).mdp, 'Pmax=? [F "hole"]').result >= res.result
    # every substituted observation is within the radius
    cells = m.cells
    assert cells is not None
    assert np.all(np.abs(cells[strategy.observe] - cells).sum(axis=1) <= 1)
    # the strategy, followed, is a chain whose value is the bound
    probs = np.eye(4)[policy.act(strategy.observe)]
    assert check(m.chain(probs), 'P=? [F "hole"]').result == pytest.approx(res.result, abs=1e-9)
    # saved and loaded intact
    strategy.save(tmp_path / "s.json")
    again = Strategy.load(tmp_path / "s.json")
    assert np.array_equal(again.observe, strategy.observe) and again.bound == strategy.bound
    # replayed in the real environment (100-step episodes): matches the bounded value
    bounded = check(m.chain(probs), 'P=? [F<=100 "hole"]').result
    replay = StrategyReplay.from_strategy(again)
    env = replay.as_wrapper(gym.make("FrozenLake-v1"), policy, seed=0)
    n = 1000
    hits = _unsafe_rate(env, policy, n, m.labels["hole"])
    lo, hi = proportion_ci(hits, n, level=0.999)
    assert lo <= bounded <= hi
    assert hits / n > clean + 0.1  # the attack does real damage


def test_feature_attacker_bound_holds_against_every_redteam_attack() -> None:
    policy = load_policy("zoo:plant-ppo")
    env_id = "rlsec/SlipperyPlant-v0"
    m = Model.from_env(env_id)
    eps = 0.05
    clean = check(induced_chain(m, policy), 'P=? [F "unsafe"]').result
    attacked = attacked_model(m, policy, eps)
    bound, strategy = worst_case(attacked, 'Pmax=? [F "unsafe"]', env_id=env_id)
    assert clean <= bound.result <= 1.0
    ibp = check(attacked_model(m, policy, eps, method="ibp").mdp, 'Pmax=? [F "unsafe"]')
    assert ibp.result >= bound.result - 1e-12  # IBP's choices include CROWN's
    assert set(strategy.action.tolist()) <= set(range(4))
    unsafe = m.labels["unsafe"]
    n = 120
    for attack_id in ("uniform-obs-v1", "pgd-obs-v1", "mad-obs-v1", "fgsm-obs-v1"):
        attack = make_attack(attack_id, eps, unit="raw")
        env = attack.as_wrapper(gym.make(env_id), policy, rng=np.random.default_rng(0))
        hits = _unsafe_rate(env, policy, n, unsafe)
        lo, _ = proportion_ci(hits, n, level=0.999)
        assert lo <= bound.result, attack_id


def test_replayed_strategy_in_the_red_team_is_never_better_for_the_policy_than_verified(
    tmp_path: Any,
) -> None:
    # FrozenLake's return is 1 on reaching the goal within its 100 steps: Pmin=? [F<=100
    # "goal"] of the attacked MDP bounds the return of every attacker with the budget
    # (history-dependent ones included), so the red team's replay can never do better
    # than it, and it attains exactly its own strategy's value.
    policy = load_policy("zoo:frozenlake-ppo")
    m = Model.from_env("FrozenLake-v1")
    attacked = attacked_model(m, policy, 1)
    _, strategy = worst_case(
        attacked, 'Pmin=? [F "goal"]', env_id="FrozenLake-v1", policy_sha256=policy.info.sha256
    )
    bound = check(attacked.mdp, 'Pmin=? [F<=100 "goal"]').result
    own = check(m.chain(np.eye(4)[policy.act(strategy.observe)]), 'P=? [F<=100 "goal"]').result
    assert own >= bound - 1e-12
    strategy.save(tmp_path / "s.json")
    episodes = 400
    results = redteam(
        policy,
        attacks=["strategy-obs-v1"],
        epsilons=[1],
        eps_unit="raw",
        alphas=[],
        episodes=episodes,
        attack_params={"strategy-obs-v1": {"strategy": tmp_path / "s.json"}},
    )
    (row,) = results["results"]
    assert (row["attack"], row["norm"], row["unit"], row["epsilon"]) == (
        "strategy-obs-v1",
        "index",
        "raw",
        1.0,
    )
    assert row["params"]["strategy"]["bound"] == pytest.approx(strategy.bound)
    successes = round(row["mean_return"] * episodes)
    lo, hi = proportion_ci(successes, episodes, level=0.999)
    assert lo <= own <= hi  # the replay is the strategy, exactly
    assert hi >= bound  # and the verified worst case is never beaten
    assert row["mean_return"] < results["clean"]["mean_return"] - 0.2  # it does real damage
    json.dumps(results)  # results stay JSON


def test_a_strategy_that_leaves_its_budget_or_its_policy_is_refused(tmp_path: Any) -> None:
    policy = load_policy("zoo:frozenlake-ppo")
    m = Model.from_env("FrozenLake-v1")
    _, strategy = worst_case(
        attacked_model(m, policy, 1), 'Pmax=? [F "hole"]', env_id="FrozenLake-v1"
    )
    # a tampered strategy that shows the goal's observation from the start: never silent
    far = Strategy(**{**vars(strategy), "observe": np.full(16, 15)})
    attack = StrategyReplay.from_strategy(far)
    attack.start(policy, num_envs=1, rng=np.random.default_rng(0), env_id="FrozenLake-v1")
    with pytest.raises(BudgetViolation, match="distance 6 > ε = 1"):
        attack.perturb(np.array([0]))
    assert attack.perturb(np.array([15])).tolist() == [15]  # at distance 0 it is allowed
    # a smaller budget than the strategy's radius, another policy, continuous units
    small = StrategyReplay(ThreatModel(Surface.OBSERVATION, 0.5, "index"), strategy=strategy)
    with pytest.raises(AttackNotApplicable, match="radius 1"):
        small.check_applicable(policy)
    other = Strategy(**{**vars(strategy), "policy_sha256": "0" * 64})
    with pytest.raises(AttackNotApplicable, match="computed for policy 000000000000"):
        StrategyReplay.from_strategy(other).check_applicable(policy)
    with pytest.raises(ConfigError, match="unit='raw'"):
        make_attack("strategy-obs-v1", 1, unit="std", strategy=strategy)
    with pytest.raises(ConfigError, match="needs the strategy"):
        make_attack("strategy-obs-v1", 1)
    (tmp_path / "bad.json").write_text('{"kind": "something else"}')
    with pytest.raises(ConfigError, match="not an attack strategy file"):
        make_attack("strategy-obs-v1", 1, strategy=tmp_path / "bad.json")
    # a campaign runs it only when given a strategy, and says why otherwise
    results = redteam(policy, alphas=[0.1], episodes=4)
    assert {"attack": "strategy-obs-v1", "reason": "needs strategy"} in results["skipped"]
    with pytest.raises(ConfigError, match="needs strategy"):
        redteam(policy, attacks=["strategy-obs-v1"], epsilons=[1], eps_unit="raw", episodes=4)


def test_feature_strategy_replay_stays_in_its_ball_and_under_its_bound() -> None:
    policy = load_policy("zoo:plant-ppo")
    env_id = "rlsec/SlipperyPlant-v0"
    m = Model.from_env(env_id)
    eps = 0.05
    attacked = attacked_model(m, policy, eps)
    bound, strategy = worst_case(attacked, 'Pmax=? [F "unsafe"]', env_id=env_id)
    replay = StrategyReplay.from_strategy(strategy)
    assert replay.threat_model.norm == "linf"
    replay.start(policy, num_envs=len(m.observations), rng=np.random.default_rng(0))
    x0 = m.observations.astype(np.float32)
    assert replay.states_of(x0).tolist() == list(range(m.n_states))
    x = replay.perturb(x0)
    assert np.abs(x - x0).max() <= eps + 1e-6  # inside the ball (checked at run time too)
    induced = np.asarray(policy.act(x))
    # where the strategy keeps the policy's own action, the observation is left clean
    same = strategy.action == np.asarray(policy.act(x0))
    assert np.array_equal(x[same], x0[same])
    assert np.any(induced != np.asarray(policy.act(x0)))  # and it does move some actions
    # every action it induces is one the certified attacker may choose in that state
    for s, a in enumerate(induced):
        assert a in {int(attacked.action[c]) for c in attacked.choices(s)}
    unsafe = m.labels["unsafe"]
    n = 200
    env = StrategyReplay.from_strategy(strategy).as_wrapper(gym.make(env_id), policy, seed=0)
    hits = _unsafe_rate(env, policy, n, unsafe)
    lo, _ = proportion_ci(hits, n, level=0.999)
    assert lo <= bound.result
    with pytest.raises(ModelError, match="not emitted by any state"):
        replay.states_of(x0[:1] + 0.5)


def test_feature_replay_induces_the_named_action_when_actions_start_above_zero() -> None:
    # strategy actions are indices from 0; a policy over Discrete(4, start=1) acts 1..4
    env_id = "rlsec/SlipperyPlant-v0"
    m = Model.from_env(env_id)
    assert m.observations is not None and m.observation_space is not None
    torch.manual_seed(0)
    net = torch.nn.Linear(13, 4)
    policy = from_torch(net, m.observation_space, gym.spaces.Discrete(4, start=1))
    target = np.random.default_rng(0).integers(0, 4, m.n_states)
    strategy = Strategy(env_id, None, 0.5, "features", "test", 0.0, np.full(m.n_states, -1), target)
    replay = StrategyReplay.from_strategy(strategy, steps=50)
    replay.start(policy, num_envs=m.n_states, rng=np.random.default_rng(0), env_id=env_id)
    x0 = m.observations.astype(np.float32)
    hit = np.asarray(policy.act(replay.perturb(x0))) == target + 1
    assert hit.mean() > 0.9, hit.mean()
    # an observation that two states with different targets emit cannot be attributed
    replay._model = SimpleNamespace(observations=np.concatenate([x0[:1], x0[:1], x0[2:]]))
    replay.strategy = Strategy(**{**vars(strategy), "action": np.r_[0, 1, target[2:]]})
    with pytest.raises(ModelError, match="emitted by states \\[0, 1\\]"):
        replay.states_of(x0[:1])


def test_every_budget_and_the_environment_are_checked_before_any_episode(tmp_path: Any) -> None:
    policy = load_policy("zoo:frozenlake-ppo")
    m = Model.from_env("FrozenLake-v1")
    _, strategy = worst_case(
        attacked_model(m, policy, 1), 'Pmax=? [F "hole"]', env_id="FrozenLake-v1"
    )
    params = {"strategy-obs-v1": {"strategy": strategy}}
    played: list[int] = []
    with pytest.raises(AttackNotApplicable, match="radius 1"):  # ε = 0.5 is too small
        redteam(
            policy,
            epsilons=[1, 0.5],
            eps_unit="raw",
            alphas=[],
            episodes=4,
            attack_params=params,
            progress=lambda *a: played.append(1),
        )
    assert played == []  # nothing ran: not even the clean episodes
    nowhere = Strategy(**{**vars(strategy), "env_id": None})
    with pytest.raises(AttackNotApplicable, match="does not record its environment"):
        redteam(
            policy,
            epsilons=[1],
            eps_unit="raw",
            alphas=[],
            episodes=4,
            attack_params={"strategy-obs-v1": {"strategy": nowhere}},
        )
    # a bound that is not finite (an unreachable goal's expected steps) stays strict JSON
    endless = Strategy(**{**vars(strategy), "bound": float("inf")})
    endless.save(tmp_path / "inf.json")
    assert Strategy.load(tmp_path / "inf.json").bound == float("inf")
    results = redteam(
        policy,
        epsilons=[1],
        eps_unit="raw",
        alphas=[],
        episodes=4,
        attack_params={"strategy-obs-v1": {"strategy": tmp_path / "inf.json"}},
    )
    assert results["results"][0]["params"]["strategy"]["bound"] == "inf"
    json.dumps(results, allow_nan=False)


def test_no_attack_in_the_red_team_beats_the_verified_worst_case_return() -> None:
    # The plant's episodes end at max_steps: Rmin=? [C<=T] of the attacked MDP bounds the
    # expected return of every attacker within ε (history-dependent ones included), so
    # every attack of a red-team campaign on the same model and budget stays above it.
    policy = load_policy("zoo:plant-ppo")
    env_id = "rlsec/SlipperyPlant-v0"
    m = Model.from_env(env_id)
    horizon = gym.make(env_id).unwrapped.max_steps  # type: ignore[attr-defined]
    eps = 0.05
    attacked = attacked_model(m, policy, eps)
    bound = check(attacked.mdp, f'R{{"reward"}}min=? [C<={horizon}]').result
    exact = check(induced_chain(m, policy), f'R{{"reward"}}=? [C<={horizon}]').result
    assert bound < exact  # the attacker can do damage
    _, strategy = worst_case(
        attacked, 'Pmax=? [F "unsafe"]', env_id=env_id, policy_sha256=policy.info.sha256
    )
    results = redteam(
        policy,
        attacks=[
            "uniform-obs-v1",
            "fgsm-obs-v1",
            "pgd-obs-v1",
            "mad-obs-v1",
            "critic-obs-v1",
            "strategy-obs-v1",
        ],
        epsilons=[eps],
        eps_unit="raw",
        alphas=[],
        episodes=200,
        attack_params={"strategy-obs-v1": {"strategy": strategy}},
    )
    lo, hi = results["clean"]["ci95"]
    assert lo <= exact <= hi  # the rollouts are the model's
    rows = {r["attack"]: r for r in results["results"]}
    assert "strategy-obs-v1" in rows
    for attack_id, row in rows.items():
        assert row["ci95"][1] >= bound, attack_id


def test_bad_budgets_are_refused() -> None:
    m = Model.from_env("FrozenLake-v1")
    with pytest.raises(InvalidBudget, match="radius"):
        attacked_model(m, np.zeros(16, dtype=np.int64), -1)


@pytest.mark.parametrize("slippery", [False, True])
def test_a_zero_risk_shield_keeps_any_policy_out_of_the_holes(
    slippery: bool, tmp_path: Any
) -> None:
    from rlsec.verify import safe_actions
    from rlsec.verify.shield import SafeActions

    m = Model.from_env("FrozenLake-v1", is_slippery=slippery)
    shield = safe_actions(m, "hole", 0.0)
    least = check(m, 'Pmin=? [F "hole"]').values
    p = m.transitions.toarray().reshape(16, 4, 16)
    assert np.allclose(shield.risk[~m.labels["hole"]], (p @ least)[~m.labels["hole"]], atol=1e-12)
    # on the slippery lake some states cannot avoid holes for sure; the start can
    assert np.all(least[shield.unshieldable] > 0) and (shield.unshieldable.size > 0) == slippery
    assert not np.isin(np.flatnonzero(m.labels["init"]), shield.unshieldable).any()
    rng = np.random.default_rng(0)
    for _ in range(20):  # random policies over the allowed actions only
        pi = rng.random((16, 4)) * shield.allowed
        pi /= pi.sum(axis=1, keepdims=True)
        assert check(m.chain(pi), 'P=? [F "hole"]').result == pytest.approx(0.0, abs=1e-12)
    shield.save(tmp_path / "shield.json")
    again = SafeActions.load(tmp_path / "shield.json")
    assert np.array_equal(again.allowed, shield.allowed)
    looser = safe_actions(m, "hole", 0.5)
    assert np.all(looser.allowed >= shield.allowed)  # a larger delta allows more
