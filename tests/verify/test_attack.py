"""Verification under a bounded observation attacker: the bound holds and is attained."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from rlsec.attacks import make_attack
from rlsec.errors import InvalidBudget
from rlsec.evaluate.stats import proportion_ci
from rlsec.policies import load_policy
from rlsec.verify import Model, check, induced_chain
from rlsec.verify.attack import Strategy, attacked_model, worst_case


class _Substitute(gym.ObservationWrapper[Any, Any, Any]):
    """Replays a strategy on index observations: shows the observation it names."""

    def __init__(self, env: gym.Env[Any, Any], observe: np.ndarray) -> None:
        super().__init__(env)
        self.observe = observe

    def observation(self, observation: Any) -> Any:
        return int(self.observe[int(observation)])


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
    env = _Substitute(gym.make("FrozenLake-v1"), strategy.observe)
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
