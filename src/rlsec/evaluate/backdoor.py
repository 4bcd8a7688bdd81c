"""Effect of a backdoor: stealth and attack success of a (possibly) backdoored policy.

:func:`backdoor_effect` plays the policy twice on the same environment seeds, once clean and
once with the trigger stamped into each step's observation with a given probability, and
reports its clean return (stealth: compare it with a clean policy's) next to the attack
success rate (how often it takes the target action on triggered steps), with confidence
intervals that treat episodes as clusters.

The attacks are in :mod:`rlsec.attacks.backdoor`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from rlsec.attacks.backdoor import BackdoorAttack
from rlsec.core import Policy, Surface
from rlsec.errors import ConfigError

__all__ = ["backdoor_effect"]


@dataclass
class _Play:
    returns: np.ndarray
    lengths: np.ndarray
    triggered: np.ndarray  # per episode: steps whose observation was triggered
    success: np.ndarray  # ... on which the policy took the target action
    clean_target: np.ndarray  # ... on which it takes the target action on the clean observation
    changed: np.ndarray  # ... on which the two actions differ


def _play(
    policy: Policy,
    env_id: str,
    attack: BackdoorAttack,
    episodes: int,
    seed: int,
    trigger_rate: float,
    num_envs: int,
) -> _Play:
    """Play ``episodes`` episodes; each step's observation is triggered with probability
    ``trigger_rate``. Row ``r`` of the vector env plays episodes ``r, r + R, ...`` (as
    :func:`rlsec.attacks.rollout` does), so short episodes are not over-sampled."""
    from gymnasium.vector import AutoresetMode

    from rlsec.envs import make_vec

    venv = make_vec(env_id, num_envs)
    try:
        n = venv.num_envs
        space = venv.single_observation_space
        assert isinstance(space, gym.spaces.Box)
        quota = np.array([len(range(r, episodes, n)) for r in range(n)])
        ints = [np.zeros(episodes, dtype=np.int64) for _ in range(4)]
        out = _Play(np.zeros(episodes), np.zeros(episodes, dtype=np.int64), *ints)
        cur = np.zeros((6, n))
        done = np.zeros(n, dtype=np.int64)
        pending = np.zeros(n, dtype=bool)
        mode = venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        rng = np.random.default_rng([seed, 1])
        obs, _ = venv.reset(seed=seed)
        filler = np.full(n, attack.target_action, dtype=np.int64)
        while (done < quota).any():
            active = (done < quota) & ~pending
            rows = np.flatnonzero(active)
            actions = filler.copy()
            if rows.size:
                x = np.asarray(obs[rows])
                trig = rng.random(rows.size) < trigger_rate
                if trig.any():
                    xt = x.copy()
                    xt[trig] = attack.apply_trigger(x[trig], space)
                    both = policy.act(np.concatenate([xt, x[trig]]))
                    a, clean = both[: rows.size], both[rows.size :]
                    tr = rows[trig]
                    cur[2, tr] += 1
                    cur[3, tr] += a[trig] == attack.target_action
                    cur[4, tr] += clean == attack.target_action
                    cur[5, tr] += a[trig] != clean
                else:
                    a = policy.act(x)
                actions[rows] = a
            was_pending = pending.copy()
            obs, reward, term, trunc, _ = venv.step(actions)
            cur[0, rows] += np.asarray(reward, dtype=np.float64)[rows]
            cur[1, rows] += 1
            pending[was_pending] = False
            ended = active & (np.asarray(term) | np.asarray(trunc))
            for r in np.flatnonzero(ended):
                i = r + done[r] * n
                for k, arr in enumerate(
                    (
                        out.returns,
                        out.lengths,
                        out.triggered,
                        out.success,
                        out.clean_target,
                        out.changed,
                    )
                ):
                    arr[i] = cur[k, r]
                done[r] += 1
            cur[:, ended] = 0.0
            if ended.any():
                if mode == AutoresetMode.NEXT_STEP:
                    pending |= ended
                elif mode == AutoresetMode.DISABLED:
                    obs, _ = venv.reset(options={"reset_mask": ended})
        return out
    finally:
        venv.close()


def _ratio_ci(hits: np.ndarray, counts: np.ndarray) -> tuple[float | None, list[float] | None]:
    """Rate ``Σhits / Σcounts`` and its 95% interval, with episodes as clusters (steps of one
    episode are not independent): the delta-method standard error of a ratio estimator."""
    from scipy import stats

    keep = counts > 0
    h, c = hits[keep].astype(np.float64), counts[keep].astype(np.float64)
    if c.sum() == 0:
        return None, None
    rate = float(h.sum() / c.sum())
    m = h.size
    if m < 2:
        return rate, None
    resid = h - rate * c
    se = math.sqrt(float((resid**2).sum()) / (m * (m - 1))) / float(c.mean())
    half = float(stats.t.ppf(0.975, df=m - 1)) * se
    return rate, [max(0.0, rate - half), min(1.0, rate + half)]


def backdoor_effect(
    policy: Policy,
    env_id: str,
    attack: BackdoorAttack,
    episodes: int = 50,
    seed: int = 0,
    *,
    trigger_rate: float = 0.1,
    num_envs: int | None = None,
) -> dict[str, Any]:
    """Measure a (possibly) backdoored policy: stealth and attack success.

    Two runs of ``episodes`` episodes on the same environment seeds: a clean one, and one in
    which each step's observation is triggered with probability ``trigger_rate``. Returned in
    the row shape of ``results.json`` (docs/results.md), with ``surface: "backdoor"`` and
    ``epsilon`` the attack's step budget:

    * ``mean_return``, ``ci95``, ``std_return``, ``mean_length``: the triggered run;
      ``clean_return`` holds the same keys for the clean run (stealth: compare it with a clean
      policy's return).
    * ``attack_success_rate``: the fraction of triggered steps on which the policy took the
      target action, with ``attack_success_ci95`` (episodes as clusters);
      ``clean_target_rate``: the fraction of the same steps on which it takes the target
      action on the clean observation (the rate without a backdoor).
    * ``action_change_rate``: fraction of all steps of the triggered run whose action differs
      from the action on the clean observation.

    Raises:
        ConfigError: bad ``episodes``, ``trigger_rate`` or ``num_envs``.
        SpaceMismatch, AttackNotApplicable: the policy, the environment and the attack disagree.

    Example:
        >>> from rlsec.attacks.backdoor import make_backdoor_attack
        >>> from rlsec.policies import load_policy
        >>> attack = make_backdoor_attack(
        ...     "trigger-backdoor-v1", 0.05, target_action=0, features=[0], values=[2.2])
        >>> row = backdoor_effect(load_policy("zoo:cartpole-ppo"), "CartPole-v1", attack,
        ...                       episodes=4, seed=0)
        >>> row["surface"], row["epsilon"], 0.0 <= row["attack_success_rate"] <= 1.0
        ('backdoor', 0.05, True)
    """
    from rlsec.envs import check_policy_env, env_spaces
    from rlsec.stats import mean_ci

    t0 = time.perf_counter()
    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ConfigError(f"episodes must be an integer >= 1, got {episodes!r}")
    rate = float(trigger_rate)
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"trigger_rate must be a fraction in [0, 1], got {trigger_rate!r}")
    n = min(int(episodes), 16) if num_envs is None else int(num_envs)
    if n < 1:
        raise ConfigError(f"num_envs must be >= 1, got {num_envs!r}")
    check_policy_env(policy, env_id)
    obs_space, act_space = env_spaces(env_id)
    attack.check_spaces(obs_space, act_space)
    attack.check_applicable(policy)
    clean = _play(policy, env_id, attack, int(episodes), seed, 0.0, n)
    hot = _play(policy, env_id, attack, int(episodes), seed, rate, n)

    def summary(p: _Play) -> dict[str, Any]:
        mean, ci = mean_ci(p.returns)
        return {
            "mean_return": mean,
            "ci95": ci,
            "episodes": int(episodes),
            "mean_length": float(p.lengths.mean()),
            "std_return": float(p.returns.std(ddof=1)) if p.returns.size > 1 else 0.0,
        }

    asr, asr_ci = _ratio_ci(hot.success, hot.triggered)
    base, _ = _ratio_ci(hot.clean_target, hot.triggered)
    steps = int(hot.lengths.sum())
    tm = attack.threat_model
    return {
        "attack": attack.id,
        "surface": Surface.BACKDOOR.value,
        "epsilon": attack.step_fraction,
        "norm": tm.norm,
        "unit": tm.unit,
        **summary(hot),
        "action_change_rate": float(hot.changed.sum() / steps) if steps else 0.0,
        "mean_action_shift": None,
        "per_seed": [{"seed": seed, "mean_return": float(hot.returns.mean())}],
        "threat_model": tm.to_dict(),
        "atlas": list(attack.atlas),
        "reference": attack.reference,
        "params": attack.params(),
        "seconds": time.perf_counter() - t0,
        "trigger_rate": rate,
        "target_action": attack.target_action,
        "clean_return": summary(clean),
        "attack_success_rate": asr,
        "attack_success_ci95": asr_ci,
        "clean_target_rate": base,
        "triggered_steps": int(hot.triggered.sum()),
    }
