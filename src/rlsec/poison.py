"""The high-level poisoning call: train under a training-time attack and measure what it did.

:func:`poison` trains the same configuration twice, once clean (the reference, or a given
policy) and once with the attack in the loop (wrapping every training env, or as a callback
on the learner), then evaluates both on the clean environment and writes a ``results.json``
with the contract of ``rlsec redteam`` (``kind: "poison"``, ``surface`` the attacked one) plus
the attack's own success metrics, the budget it actually used and what the integrity monitor
saw during the poisoned training.
"""

from __future__ import annotations

import difflib
import importlib
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import gymnasium as gym
import numpy as np

from rlsec.core import Attack, Policy
from rlsec.errors import ConfigError, UnknownAttack

__all__ = ["TRAINING_SURFACES", "make_training_attack", "poison", "training_attacks"]

#: module, registry and factory of each surface's training-time attacks
TRAINING_SURFACES: dict[str, tuple[str, str, str]] = {
    "reward": ("rlsec.attacks.reward", "REWARD_ATTACKS", "make_reward_attack"),
    "data": ("rlsec.attacks.data", "DATA_ATTACKS", "make_data_attack"),
    "dynamics": ("rlsec.attacks.dynamics", "DYNAMICS_ATTACKS", "make_dynamics_attack"),
    "backdoor": ("rlsec.attacks.backdoor", "BACKDOOR_ATTACKS", "make_backdoor_attack"),
}


def _adapt(surface: str, make: Callable[..., Attack]) -> Callable[..., Attack]:
    """Map ``(id, ε, step_budget=..., **params)`` onto each surface's own factory."""

    def build(attack_id: str, epsilon: float, **params: Any) -> Attack:
        budget = params.pop("step_budget", None)
        if surface == "reward":
            return make(attack_id, epsilon, step_budget=budget, **params)
        if surface == "data":
            if budget is None:
                raise ConfigError(f"{attack_id} needs --budget, the fraction of data injected")
            return make(attack_id, epsilon, fraction=budget, **params)
        if surface == "backdoor":  # ε: trigger probability; budget: cap on poisoned steps
            return make(attack_id, epsilon if budget is None else budget, rate=epsilon, **params)
        if budget is not None:
            raise ConfigError(f"{attack_id} acts on every step; it takes no --budget")
        return make(attack_id, epsilon, phase="training", **params)

    return build


def _registries() -> list[tuple[dict[str, type[Attack]], Callable[..., Attack]]]:
    found = []
    for surface, (module_name, registry, factory) in TRAINING_SURFACES.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        reg = getattr(module, registry, None)
        make = getattr(module, factory, None)
        if isinstance(reg, dict) and callable(make):
            found.append((reg, _adapt(surface, make)))
    return found


def training_attacks() -> dict[str, type[Attack]]:
    """Every training-time attack ``rlsec poison`` can run, by id."""
    out: dict[str, type[Attack]] = {}
    for reg, _ in _registries():
        out.update(reg)
    return out


def make_training_attack(attack_id: str, epsilon: float, **params: Any) -> Attack:
    """Build a training-time attack by id with budget ``epsilon`` and its own parameters.

    Raises:
        UnknownAttack: with the closest known ids.
    """
    for reg, make in _registries():
        if attack_id in reg:
            try:
                return make(attack_id, epsilon, **params)
            except TypeError as exc:  # an unknown or missing parameter of the attack
                raise ConfigError(f"{attack_id}: {exc}") from None
    known = sorted(training_attacks())
    close = difflib.get_close_matches(attack_id, known, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise UnknownAttack(f"unknown training-time attack {attack_id!r}; {hint}Known: {known}")


def _agreement(policy: Policy, reference: Policy, env_id: str, *, steps: int, seed: int) -> float:
    """Fraction of the states ``policy`` visits (clean env, ``steps`` steps) on which its
    action differs from ``reference``'s."""
    from rlsec.envs import make_vec

    env = make_vec(env_id, num_envs=8)
    try:
        obs, _ = env.reset(seed=seed)
        differ = total = 0
        for _ in range(max(1, steps // 8)):
            a = policy.act(obs)
            b = reference.act(obs)
            d = a.reshape(len(a), -1) != b.reshape(len(b), -1)
            space = env.single_action_space
            if isinstance(space, gym.spaces.Box):
                span = np.asarray(space.high, float) - np.asarray(space.low, float)
                d = np.abs(a.reshape(len(a), -1) - b.reshape(len(b), -1)) > 0.05 * span
            differ += int(d.any(axis=1).sum())
            total += len(a)
            obs, *_ = env.step(a)
    finally:
        env.close()
    return differ / total if total else 0.0


def poison(
    attack_id: str,
    epsilon: float,
    *,
    algo: str,
    env_id: str,
    out: str | os.PathLike[str],
    params: Mapping[str, Any] | None = None,
    steps: int | None = None,
    seed: int = 0,
    episodes: int = 50,
    reference: str | os.PathLike[str] | None = None,
    unsafe_no_sandbox: bool = False,
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """Train ``algo`` on ``env_id`` under a training-time attack and measure the damage.

    Writes ``out/poisoned/`` (the poisoned policy, its training log and the integrity
    monitor's findings), ``out/reference/`` (a clean training with the same configuration and
    seed, unless ``reference`` names an existing policy), and ``out/results.json`` plus
    ``out/report.html``. ``out`` must be new or an empty directory. ``unsafe_no_sandbox``
    lets ``env_id`` name a module outside gymnasium and rlsec to import (see
    :func:`rlsec.envs.unsafe_no_sandbox`); the results' ``config`` records it.

    Raises:
        ConfigError, UnknownAttack, UnknownEnv, UnsafeEnvId: bad input; nothing was written.
    """
    from rlsec.envs import unsafe_no_sandbox as no_sandbox

    if not isinstance(unsafe_no_sandbox, bool):
        raise ConfigError(f"unsafe_no_sandbox must be a bool, got {unsafe_no_sandbox!r}")
    with no_sandbox(unsafe_no_sandbox):
        return _poison(
            attack_id,
            epsilon,
            algo=algo,
            env_id=env_id,
            out=out,
            params=params,
            steps=steps,
            seed=seed,
            episodes=episodes,
            reference=reference,
            unsafe_no_sandbox=unsafe_no_sandbox,
            progress=progress,
        )


def _poison(
    attack_id: str,
    epsilon: float,
    *,
    algo: str,
    env_id: str,
    out: str | os.PathLike[str],
    params: Mapping[str, Any] | None,
    steps: int | None,
    seed: int,
    episodes: int,
    reference: str | os.PathLike[str] | None,
    unsafe_no_sandbox: bool,
    progress: Callable[[str, float], None] | None,
) -> dict[str, Any]:
    from rlsec import _inputs
    from rlsec._files import check_new_dir
    from rlsec.attacks.rollout import rollout
    from rlsec.defenses import TrainConfig, train_policy
    from rlsec.defenses.monitors import IntegrityMonitor
    from rlsec.defenses.training import shipped_thresholds
    from rlsec.envs import make, make_vec
    from rlsec.policies import load_policy
    from rlsec.redteam import check_out_dir
    from rlsec.report import write_report
    from rlsec.stats import summarize_returns

    t0 = time.perf_counter()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    epsilon = _inputs.budget("epsilon", epsilon)
    episodes = _inputs.count("episodes", episodes, limit=_inputs.MAX_EPISODES)
    _inputs.seed(_inputs.seed(seed) + 10_000, "seed + 10000 (the evaluation's seed)")
    attack = make_training_attack(attack_id, epsilon, **dict(params or {}))
    config = TrainConfig(
        algo=algo, env_id=env_id, steps=steps, seed=seed, unsafe_no_sandbox=unsafe_no_sandbox
    ).validated()
    out_dir = check_new_dir(check_out_dir(out, force=True))
    ref_policy = None
    if reference is not None:
        ref_policy = load_policy(reference, env_id=env_id)
    prepare = getattr(attack, "prepare", None)
    if callable(prepare):  # attacks that need the env or a victim before training
        prepare(env_id=env_id, seed=seed)

    def report(label: str) -> Callable[[float, str], None]:
        return lambda fraction, _what: progress(label, fraction) if progress else None

    as_wrapper = getattr(attack, "as_wrapper", None)
    factory = getattr(attack, "wrapper_factory", None)
    wrap: Callable[[gym.Env[Any, Any]], gym.Env[Any, Any]] | None = None
    if callable(factory):  # one seed per training env, so they do not act in lockstep
        wrap = factory(seed)
    elif callable(as_wrapper):

        def wrap(env: gym.Env[Any, Any]) -> gym.Env[Any, Any]:
            wrapped: gym.Env[Any, Any] = as_wrapper(env, seed=seed)
            return wrapped

    make_callback = getattr(attack, "callback", None)  # learner-side (replay buffer)
    callbacks = [make_callback(seed)] if callable(make_callback) else []
    if wrap is None and not callbacks:
        raise ConfigError(f"{attack_id} has no way into training (no env wrapper, no callback)")
    if wrap is not None:  # fail now, not after the reference training (a missing parameter)
        probe = make(env_id)
        try:
            wrap(probe)
        finally:
            probe.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    if ref_policy is None:
        train_policy(config, out_dir / "reference", progress=report("reference training"))
        ref_policy = load_policy(out_dir / "reference" / "policy")
    watch = IntegrityMonitor(
        shipped_thresholds(algo, env_id),
        halt=None,  # observe the attack, do not stop it: the point is to measure it
        findings_path=out_dir / "poisoned" / "findings.jsonl",
    )
    train_policy(
        config,
        out_dir / "poisoned",
        progress=report("poisoned training"),
        wrap_env=wrap,
        callbacks=callbacks,
        monitor=watch,
    )
    poisoned = load_policy(out_dir / "poisoned" / "policy")
    if progress:
        progress("evaluating", 0.0)
    venv = make_vec(env_id, num_envs=min(episodes, 32))
    try:
        clean_stats = rollout(ref_policy, venv, episodes, seed=seed + 10_000)
        poisoned_stats = rollout(poisoned, venv, episodes, seed=seed + 10_000)
    finally:
        venv.close()
    clean = summarize_returns(clean_stats.returns, clean_stats.lengths)
    row: dict[str, Any] = {
        "attack": attack.id,
        "surface": attack.surface.value,
        "epsilon": float(epsilon),
        "norm": attack.threat_model.norm,
        "unit": attack.threat_model.unit,
        **summarize_returns(poisoned_stats.returns, poisoned_stats.lengths),
        "action_change_rate": _agreement(poisoned, ref_policy, env_id, steps=2000, seed=seed),
        "threat_model": attack.threat_model.to_dict(),
        "atlas": list(attack.atlas),
        "reference": attack.reference,
        "params": attack.params(),
    }
    usage = getattr(attack, "usage", None)
    if callable(usage):
        row["budget_used"] = usage()
    success = getattr(attack, "success", None)
    if callable(success):
        row["success"] = success(poisoned, env_id=env_id, episodes=episodes, seed=seed)
    elif attack.surface.value == "backdoor":
        from rlsec.attacks.backdoor import BackdoorAttack
        from rlsec.evaluate.backdoor import backdoor_effect

        assert isinstance(attack, BackdoorAttack)
        effect = backdoor_effect(poisoned, env_id, attack, episodes, seed + 10_000)
        row["success"] = {
            k: effect[k]
            for k in ("attack_success_rate", "attack_success_ci95", "clean_target_rate")
            if k in effect
        }
    row["integrity"] = {
        "findings": len(watch.findings),
        "first_alarm": dict(watch.first_alarm),
        "detected": bool(watch.findings),
    }
    threshold = clean["mean_return"] / 2.0
    results: dict[str, Any] = {
        "rlsec_version": _version(),
        "kind": "poison",
        "policy": {
            "source": str(out_dir / "poisoned" / "policy"),
            "sha256": poisoned.info.sha256,
            "format": "rlsec.policy",
            "algo": algo,
            "env_id": env_id,
            "reference": str(reference) if reference is not None else "trained",
            "reference_sha256": getattr(getattr(ref_policy, "info", None), "sha256", None),
        },
        "env": env_id,
        "seed": seed,
        "eps_unit": attack.threat_model.unit,
        "clean": clean,
        "results": [row],
        "worst_case": [
            {
                "surface": row["surface"],
                "epsilon": row["epsilon"],
                "attack": row["attack"],
                "mean_return": row["mean_return"],
                "ci95": row["ci95"],
            }
        ],
        "eps50": {
            attack.id: row["epsilon"] if row["mean_return"] < threshold else None,
            "worst_case": row["epsilon"] if row["mean_return"] < threshold else None,
        },
        "eps50_threshold": threshold,
        "skipped": [],
        "config": {
            "attack": attack_id,
            "epsilon": float(epsilon),
            "params": _jsonable(dict(params or {})),
            "training": config.to_dict(),
            "episodes": int(episodes),
            "eval_seed": seed + 10_000,
            "unsafe_no_sandbox": unsafe_no_sandbox,
        },
        "started_at": started,
        "seconds": time.perf_counter() - t0,
    }
    write_report(results, out_dir)
    return results


def _jsonable(value: Any) -> Any:
    import json

    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return repr(value)


def _version() -> str:
    from rlsec._version import __version__

    return __version__
