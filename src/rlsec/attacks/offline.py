"""Training-time offline-dataset poisoning: collect a dataset, poison it before an offline
learner sees it.

:func:`collect_dataset` plays a behaviour policy and keeps every transition as a
:class:`~rlsec.attacks.transitions.TransitionDataset` (saved as ``.npz`` without pickle);
:func:`poison_dataset` applies a data attack (:mod:`rlsec.attacks.data`) to it, inside the
attack's budget, and records every crafted transition. The damage evaluation, with the offline
learner it trains, is :mod:`rlsec.evaluate.data`.

Example:
    >>> import gymnasium as gym
    >>> from rlsec.attacks.data import make_data_attack
    >>> attack = make_data_attack("target-action-data-v1", 1.0, fraction=0.5, target_action=0)
    >>> ds = TransitionDataset(
    ...     obs=np.zeros((4, 2), np.float32), actions=np.array([0, 1, 0, 1]),
    ...     rewards=np.ones(4), next_obs=np.zeros((4, 2), np.float32),
    ...     dones=np.zeros(4, bool), observation_space=gym.spaces.Box(-1, 1, (2,)),
    ...     action_space=gym.spaces.Discrete(2))
    >>> poisoned, record = poison_dataset(ds, attack, np.random.default_rng(0))
    >>> len(poisoned), record.crafted, record.genuine
    (6, 2, 4)
    >>> sorted(poisoned.rewards[record.rows].tolist()) in ([0.0, 0.0], [0.0, 2.0], [2.0, 2.0])
    True
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rlsec.attacks.data import DataAttack
from rlsec.attacks.transitions import (
    _ARRAYS,
    PoisonRecord,
    TransitionDataset,
    Transitions,
    _allowed,
    _check_spaces,
)
from rlsec.core import Policy
from rlsec.errors import AttackNotApplicable, ConfigError

__all__ = ["collect_dataset", "poison_dataset"]


def collect_dataset(
    policy: Policy | None,
    env_id: str,
    steps: int,
    *,
    seed: int,
    explore: float = 0.0,
) -> TransitionDataset:
    """Play ``steps`` environment steps with ``policy`` and keep every transition.

    Args:
        policy: the behaviour policy; ``None`` plays uniformly random actions.
        steps: transitions to collect (episodes restart as they end).
        seed: seeds the environment's first reset, the action space and the exploration.
        explore: probability, per step, of a uniformly random action instead of the policy's
            (offline learners need to see actions the policy would not take).

    Example:
        >>> ds = collect_dataset(None, "CartPole-v1", 50, seed=0)
        >>> len(ds), ds.obs.shape, ds.info["env_id"]
        (50, (50, 4), 'CartPole-v1')
    """
    from rlsec.envs import check_policy_env, env_spec, make

    env_spec(env_id)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
    if not 0.0 <= float(explore) <= 1.0:
        raise ConfigError(f"explore must be a fraction in [0, 1], got {explore!r}")
    if policy is not None:
        check_policy_env(policy, env_id)
    rng = np.random.default_rng(seed)
    env = make(env_id)
    try:
        _check_spaces(env.observation_space, env.action_space, env_id)
        env.action_space.seed(int(rng.integers(2**31)))
        cols: dict[str, list[Any]] = {k: [] for k in _ARRAYS}
        obs, _ = env.reset(seed=seed)
        for _ in range(int(steps)):
            if policy is None or rng.random() < explore:
                action = env.action_space.sample()
            else:
                action = np.asarray(policy.act(np.asarray(obs)[None]))[0]
            nxt, reward, terminated, truncated, _ = env.step(action)
            for k, v in zip(
                _ARRAYS, (obs, action, float(reward), nxt, bool(terminated)), strict=True
            ):
                cols[k].append(v)
            obs = env.reset()[0] if terminated or truncated else nxt
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    assert isinstance(obs_space, gym.spaces.Box)
    actions = np.asarray(cols["actions"])
    if isinstance(act_space, gym.spaces.Discrete):
        actions = actions.astype(np.int64).reshape(-1)
    else:
        actions = actions.astype(act_space.dtype)
    source = getattr(getattr(policy, "info", None), "source", None) if policy else "random"
    return TransitionDataset(
        np.asarray(cols["obs"], dtype=obs_space.dtype),
        actions,
        np.asarray(cols["rewards"], dtype=np.float64),
        np.asarray(cols["next_obs"], dtype=obs_space.dtype),
        np.asarray(cols["dones"], dtype=bool),
        observation_space=obs_space,
        action_space=act_space,
        info={
            "env_id": env_id,
            "seed": seed,
            "steps": int(steps),
            "explore": float(explore),
            "policy": source if isinstance(source, str) else "<policy>",
        },
    )


def poison_dataset(
    dataset: TransitionDataset, attack: DataAttack, rng: np.random.Generator
) -> tuple[TransitionDataset, PoisonRecord]:
    """Poison an offline dataset; the input is not modified.

    ``k = floor(fraction · len(dataset))`` distinct genuine transitions are drawn as sources.
    ``direct`` mode inserts their crafted copies at random positions among the genuine ones
    (which keep their order); ``replace`` mode overwrites the sources in place.

    Returns:
        The poisoned dataset (its ``info`` names the attack) and the record.

    Raises:
        AttackNotApplicable: the dataset's spaces are not supported.
        ConfigError: the attack's parameters do not fit the dataset (a target action outside
            its action space, ...).
    """
    if not isinstance(dataset, TransitionDataset):
        raise ConfigError(f"expected a TransitionDataset, got {type(dataset).__name__}")
    if not isinstance(attack, DataAttack):
        raise ConfigError(f"expected a data attack, got {type(attack).__name__}")
    attack.bind(dataset.observation_space, dataset.action_space)
    n = len(dataset)
    k = _allowed(attack.fraction, n)
    record = PoisonRecord(attack.id, attack.mode, attack.fraction, genuine=n)
    clean = dataset.transitions()
    pool = np.flatnonzero(attack.eligible(clean))
    if len(pool) < k:
        raise AttackNotApplicable(
            f"{attack.id} needs {k} eligible transitions for a fraction {attack.fraction} of "
            f"{n}; the dataset has {len(pool)}"
        )
    src_idx = np.sort(rng.choice(pool, size=k, replace=False)) if k else np.zeros(0, np.int64)
    src = clean.take(src_idx)
    out = attack.craft(src, rng)
    if attack.mode == "replace":
        arrays = {name: np.array(getattr(clean, name)) for name in _ARRAYS}
        for name in _ARRAYS:
            arrays[name][src_idx] = getattr(out, name)
        at = src_idx
    else:
        at = np.sort(rng.choice(n + k, size=k, replace=False)) if k else src_idx
        is_crafted = np.zeros(n + k, dtype=bool)
        is_crafted[at] = True
        arrays = {}
        for name in _ARRAYS:
            g = getattr(clean, name)
            full = np.empty((n + k, *g.shape[1:]), dtype=g.dtype)
            full[~is_crafted] = g
            full[at] = getattr(out, name)
            arrays[name] = full
    record._add(src, out, [(int(i), 0) for i in at], [(int(i), 0) for i in src_idx], step=None)
    record.check()
    poisoned = dataset.with_transitions(
        Transitions(*(arrays[name] for name in _ARRAYS)), poisoned_by=attack.describe()
    )
    return poisoned, record
