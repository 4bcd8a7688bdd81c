"""The damage of dynamics attacks: a policy's returns in the clean against a changed world.

:func:`dynamics_damage` plays a policy on a synchronous vector env, clean and under each
dynamics attack of :mod:`rlsec.attacks.dynamics` (shifted parameters, random or learned
disturbances) at each budget and seed, reset with the same seeds as the clean run, and
reports the return statistics with confidence intervals and what each attack spent of its
budget. Learned RARL adversaries are trained (or loaded from the cache) against the policy
first.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import gymnasium as gym
import numpy as np

from rlsec._version import __version__
from rlsec.attacks.dynamics import DisturbanceDynamics, DynamicsAttack, make_dynamics_attack
from rlsec.attacks.rollout import EpisodeStats, rollout
from rlsec.core import Policy
from rlsec.envs import check_policy_env, make_vec
from rlsec.errors import ConfigError
from rlsec.stats import env_seed, summarize_returns

__all__ = ["DEFAULT_DYNAMICS_EPSILONS", "dynamics_damage"]

#: Budgets of :func:`dynamics_damage` when only attack ids are given.
DEFAULT_DYNAMICS_EPSILONS = (0.1, 0.2, 0.5)


def _wrapper_seed(seed: int, attack: DynamicsAttack, index: int) -> int:
    key = zlib.crc32(f"{attack.id}:{attack.label}:{attack.threat_model.epsilon!r}".encode())
    return int(np.random.SeedSequence([seed, key, index]).generate_state(1)[0])


_Wrap = Callable[[gym.Env[Any, Any]], gym.Wrapper[Any, Any, Any, Any]]


def _relay(report: Callable[[str, float], None], label: str) -> Callable[[float], None]:
    return lambda fraction: report(label, fraction)


def _summary(stats: Sequence[EpisodeStats]) -> dict[str, Any]:
    return summarize_returns(
        np.concatenate([s.returns for s in stats]), np.concatenate([s.lengths for s in stats])
    )


def dynamics_damage(
    policy: Policy,
    env_id: str | None = None,
    attacks: Sequence[DynamicsAttack | str] | None = None,
    *,
    budgets: Sequence[float] = DEFAULT_DYNAMICS_EPSILONS,
    episodes: int = 20,
    seeds: Sequence[int] = (0,),
    num_envs: int = 8,
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """Clean against attacked returns for each dynamics attack and budget.

    Every run plays ``episodes`` episodes per seed on a synchronous vector env of
    ``min(num_envs, episodes)`` copies, reset with the same seeds as the clean run, so an
    attack at ε = 0 reproduces the clean returns exactly. Learned adversaries without one are
    trained (or loaded from the cache) against ``policy`` first.

    Args:
        attacks: built attacks (each with its own ε), or attack ids, each built at every
            budget of ``budgets``; default: ``shift-dynamics-v1`` (every parameter, uniform)
            and ``noise-dynamics-v1``.

    Returns:
        A dict in the shape of ``results.json`` (``docs/results.md``) with ``kind``
        ``dynamics-damage``: ``clean`` and one row per attack in ``results`` with ``surface:
        "dynamics"``, ``label``, ``epsilon_unit``, the return statistics, ``per_seed``, the
        threat model, ATLAS ids, ``params`` and ``budget_used`` (the attack's usage: episodes,
        steps, and the largest change as a fraction of its budget). ``action_change_rate`` is
        0 (the agent's actions are executed as chosen) and ``mean_action_shift`` 0 for
        continuous actions, else ``null``.

    Raises:
        ConfigError, UnknownEnv, UnknownAttack, SpaceMismatch: before anything runs.
    """
    specs = ["shift-dynamics-v1", "noise-dynamics-v1"] if attacks is None else list(attacks)
    grid: list[DynamicsAttack] = []
    for a in specs:
        if isinstance(a, str):
            grid += [make_dynamics_attack(a, float(b)) for b in budgets]
        elif isinstance(a, DynamicsAttack):
            grid.append(a)
        else:
            raise ConfigError(f"expected dynamics attacks or their ids, got {type(a).__name__}")
    if not grid:
        raise ConfigError("no attacks to run: give attacks (and budgets for attack ids)")
    info = getattr(policy, "info", None)
    env = env_id or getattr(info, "env_id", None)
    if not env:
        raise ConfigError("the policy does not record its environment; give env_id")
    check_policy_env(policy, env)
    for a in grid:
        a.check_env(env)
    if int(episodes) < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    seed_list = [int(s) for s in seeds]
    if not seed_list:
        raise ConfigError("give at least one seed")
    if int(num_envs) < 1:
        raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
    started, started_at = time.perf_counter(), datetime.now(UTC).isoformat()
    n = min(int(num_envs), int(episodes))
    continuous = isinstance(policy.action_space, gym.spaces.Box)

    def report(label: str, fraction: float) -> None:
        if progress is not None:
            progress(label, fraction)

    def play(seed: int, wrap: _Wrap | None) -> EpisodeStats:
        venv = make_vec(
            env, num_envs=n, vectorization_mode="sync", wrappers=[wrap] if wrap else None
        )
        try:
            # the campaign's environment seeds: the same clean episodes
            return rollout(policy, venv, int(episodes), seed=env_seed(seed))
        finally:
            venv.close()

    clean = []
    for s in seed_list:
        report(f"clean (seed {s})", 0.0)
        clean.append(play(s, None))
    results = []
    for index, attack in enumerate(grid):
        t0 = time.perf_counter()
        tm = attack.threat_model
        name = f"{attack.label} ε={tm.epsilon:g}"
        if isinstance(attack, DisturbanceDynamics) and attack.adversary is None:
            attack.start(
                policy,
                num_envs=n,
                rng=np.random.default_rng(0),
                env_id=env,
                progress=_relay(report, f"{name}: training the adversary"),
            )
        attack.reset_usage()
        per_seed = []
        for s in seed_list:
            report(f"{name} (seed {s})", 0.0)
            wseed = _wrapper_seed(s, attack, index)

            def wrap(
                e: gym.Env[Any, Any], a: DynamicsAttack = attack, w: int = wseed
            ) -> gym.Wrapper[Any, Any, Any, Any]:
                return a.as_wrapper(e, seed=w)

            per_seed.append((s, play(s, wrap)))
        results.append(
            {
                "attack": attack.id,
                "label": attack.label,
                "surface": attack.surface.value,
                "epsilon": tm.epsilon,
                "norm": tm.norm,
                "unit": tm.unit,
                "epsilon_unit": attack.epsilon_unit,
                **_summary([st for _, st in per_seed]),
                "action_change_rate": 0.0,
                "mean_action_shift": 0.0 if continuous else None,
                "per_seed": [
                    {"seed": s, "mean_return": float(st.returns.mean())} for s, st in per_seed
                ],
                "threat_model": tm.to_dict(),
                "atlas": list(attack.atlas),
                "reference": attack.reference,
                "params": attack.params(),
                "budget_used": attack.usage(),
                "seconds": time.perf_counter() - t0,
            }
        )
    return {
        "rlsec_version": __version__,
        "kind": "dynamics-damage",
        "policy": {
            "source": getattr(info, "source", None),
            "sha256": getattr(info, "sha256", None),
            "format": getattr(info, "format", None),
            "algo": getattr(info, "algo", None),
            "env_id": getattr(info, "env_id", None),
        },
        "env": env,
        "seed": seed_list[0],
        "clean": _summary(clean),
        "results": results,
        "config": {
            "env_id": env,
            "attacks": [a.describe() for a in grid],
            "episodes": int(episodes),
            "seeds": seed_list,
            "num_envs_used": n,
            "vectorization_mode": "sync",
        },
        "started_at": started_at,
        "seconds": time.perf_counter() - started,
    }
