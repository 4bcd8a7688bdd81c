"""Red-team campaigns: attacks × budgets × seeds against one policy in one environment.

Everything is validated before the first episode runs (unknown ids, bad budgets, spaces that
do not match, attacks that cannot apply), so a bad request fails fast and writes nothing.
The result is a plain dict following the ``results.json`` contract (see ``docs/results.md``).
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from rlsec import _inputs
from rlsec._version import __version__
from rlsec.attacks import ATTACKS, attack_class, make_attack
from rlsec.attacks.rollout import EpisodeStats, rollout
from rlsec.core import Attack, Policy, Surface
from rlsec.defenses.inference import apply_defense, parse_defense
from rlsec.envs import check_env_id, check_policy_env, env_spec, make_vec, unsafe_no_sandbox
from rlsec.errors import AttackNotApplicable, ConfigError
from rlsec.policies.native import checked_std
from rlsec.stats import (
    CALIBRATION_EPISODES,
    CALIBRATION_SEED,
    STD_TOLERANCE,
    env_seed,
    eps50,
    summarize_returns,
)

__all__ = [
    "DEFAULT_ALPHAS",
    "DEFAULT_EPSILONS",
    "CampaignConfig",
    "ProgressFn",
    "applicable_attacks",
    "run_campaign",
]

DEFAULT_EPSILONS: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
DEFAULT_ALPHAS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)

#: ``progress(label, run_index, total_runs, fraction_of_this_run)``
ProgressFn = Callable[[str, int, int, float], None]


@dataclass
class CampaignConfig:
    """What to run. ``attacks=None`` means every registered attack that applies."""

    env_id: str | None = None
    attacks: Sequence[str] | None = None
    epsilons: Sequence[float] = DEFAULT_EPSILONS
    eps_unit: Literal["raw", "std"] = "std"
    alphas: Sequence[float] = DEFAULT_ALPHAS
    episodes: int = 20
    seeds: Sequence[int] = (0,)
    num_envs: int = 64
    step_budget: float = 0.25
    attack_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: an inference-time defense wrapped around the policy, ``NAME[:KEY=VALUE,...]`` (see
    #: :mod:`rlsec.defenses.inference`); ``None`` attacks the policy as given
    defense: str | None = None
    #: let the environment id import a module outside gymnasium and rlsec (its code runs
    #: unsandboxed; see :func:`rlsec.envs.unsafe_no_sandbox`); recorded in the results
    unsafe_no_sandbox: bool = False

    def validate(self) -> None:
        """Raise a clear error for anything out of its domain (the bounds of
        :mod:`rlsec._inputs`); drop repeated budgets."""
        if self.eps_unit not in ("raw", "std"):
            raise ConfigError(f"eps_unit must be 'raw' or 'std', got {self.eps_unit!r}")
        if not isinstance(self.unsafe_no_sandbox, bool):
            raise ConfigError(f"unsafe_no_sandbox must be a bool, got {self.unsafe_no_sandbox!r}")
        if self.env_id is not None:
            with unsafe_no_sandbox(self.unsafe_no_sandbox):
                check_env_id(self.env_id)
        epsilons = _inputs.budgets("every ε", self.epsilons)
        alphas = [_inputs.fraction("every action-attack α", a) for a in self.alphas]
        if not epsilons and not alphas:
            raise ConfigError("give at least one budget (epsilons or alphas)")
        if len(alphas) > _inputs.MAX_BUDGETS:
            raise ConfigError(f"give at most {_inputs.MAX_BUDGETS} budgets in α")
        self.epsilons = list(dict.fromkeys(epsilons))
        self.alphas = list(dict.fromkeys(alphas))
        if self.attacks is not None and not list(self.attacks):
            raise ConfigError("attacks is empty: give at least one attack id, or None for all")
        self.episodes = _inputs.count("episodes", self.episodes, limit=_inputs.MAX_EPISODES)
        seeds = list(self.seeds)
        if not seeds:
            raise ConfigError("give at least one seed")
        _inputs.count("seeds", len(seeds), limit=_inputs.MAX_SEEDS)
        self.seeds = [_inputs.seed(s) for s in seeds]
        self.num_envs = _inputs.count("num_envs", self.num_envs, limit=_inputs.MAX_NUM_ENVS)
        if _inputs.fraction("step_budget", self.step_budget) == 0.0:
            raise ConfigError(f"step_budget must be in (0, 1], got {self.step_budget}")
        for attack_id in list(self.attacks or []) + list(self.attack_params):
            attack_class(attack_id)
        if self.defense is not None:
            self.defense = str(parse_defense(self.defense))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(replace(self, attack_params={}))  # parameters may be objects: below
        d["attack_params"] = {
            a: {k: _jsonable(v) for k, v in ps.items()} for a, ps in self.attack_params.items()
        }
        d["attacks"] = list(self.attacks) if self.attacks is not None else None
        d["epsilons"], d["alphas"], d["seeds"] = (
            [float(e) for e in self.epsilons],
            [float(a) for a in self.alphas],
            [int(s) for s in self.seeds],
        )
        return d


def _jsonable(value: Any) -> Any:
    """An attack parameter as recorded in results: objects by their ``to_dict()``, paths
    as strings, arrays as lists."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _budgets(cls: type[Attack], config: CampaignConfig) -> list[float]:
    return (
        [float(a) for a in config.alphas]
        if cls.surface is Surface.ACTION
        else [float(e) for e in config.epsilons]
    )


def _build(attack_id: str, budget: float, config: CampaignConfig) -> Attack:
    cls = attack_class(attack_id)
    params = dict(config.attack_params.get(attack_id, {}))
    step_budget = config.step_budget if attack_id == "timed-obs-v1" else None
    unit = config.eps_unit if cls.surface is Surface.OBSERVATION else "probability"
    return make_attack(attack_id, budget, unit=unit, step_budget=step_budget, **params)


def applicable_attacks(
    policy: Policy, config: CampaignConfig, env_id: str | None = None
) -> tuple[list[str], list[dict[str, str]]]:
    """The attacks to run and those skipped with the reason.

    Every budget of every attack is checked against the policy (and ``env_id``), so a
    campaign fails before it plays an episode, never halfway. An attack named explicitly in
    ``config.attacks``, or given the parameters it requires in ``config.attack_params``, that
    cannot apply is an error; otherwise it is skipped and reported.

    Raises:
        AttackNotApplicable: a requested attack cannot run on this policy.
        ConfigError: a requested attack lacks its budgets or required parameters.
    """
    explicit = config.attacks is not None
    ids = list(config.attacks) if config.attacks is not None else list(ATTACKS)
    run, skipped = [], []
    for attack_id in dict.fromkeys(ids):
        cls = attack_class(attack_id)
        requires = tuple(getattr(cls, "requires", ()))
        given = config.attack_params.get(attack_id, {})
        asked = explicit or (bool(requires) and attack_id in config.attack_params)
        budgets = _budgets(cls, config)
        if not budgets:
            if asked:
                raise ConfigError(f"{attack_id} needs budgets but none were given")
            continue
        missing = [k for k in requires if k not in given]
        if missing:
            if asked:
                raise ConfigError(f"{attack_id} needs {', '.join(missing)} (attack_params)")
            skipped.append({"attack": attack_id, "reason": f"needs {', '.join(missing)}"})
            continue
        try:
            for budget in budgets:
                attack = _build(attack_id, budget, config)
                attack.check_applicable(policy)
                attack.check_environment(env_id)
        except AttackNotApplicable as exc:
            if asked:
                raise
            skipped.append({"attack": attack_id, "reason": str(exc)})
            continue
        run.append(attack_id)
    if not run:
        raise AttackNotApplicable(
            "no attack applies to this policy: "
            + "; ".join(f"{s['attack']}: {s['reason']}" for s in skipped)
        )
    return run, skipped


def _rng(seed: int, attack_id: str, index: int) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence([seed, zlib.crc32(attack_id.encode()), index])
    )


def _summary(stats: list[EpisodeStats]) -> dict[str, Any]:
    return summarize_returns(
        np.concatenate([s.returns for s in stats]), np.concatenate([s.lengths for s in stats])
    )


def _scale(
    policy: Policy,
    config: CampaignConfig,
    env_id: str,
    findings: list[dict[str, Any]] | None = None,
) -> tuple[np.ndarray | None, str]:
    """Per-feature scale of ε: ones for raw units; for std units, the std over a fixed
    calibration rollout, or the policy's recorded clean observation std when it agrees with
    the rollout's within :data:`STD_TOLERANCE` on every feature.

    The artefact under test does not choose its own yardstick: recorded statistics that are
    malformed or disagree (a std of 1e-30 would make every std-unit attack a no-op) are
    replaced by the rollout's, and the disagreement is appended to ``findings``.

    The calibration does not depend on the campaign's episodes or seed, so ε means the same
    thing across runs of the same policy (and cached learned adversaries stay valid).
    """
    space = policy.observation_space
    if not isinstance(space, gym.spaces.Box):
        return None, "not applicable (observations are not continuous)"
    dim = int(np.prod(space.shape))
    if config.eps_unit == "raw":
        return np.ones(dim), "raw observation units"
    venv = make_vec(env_id, CALIBRATION_EPISODES)  # its own envs: independent of the run
    try:
        calib = rollout(
            policy,
            venv,
            CALIBRATION_EPISODES,
            seed=env_seed(CALIBRATION_SEED),
            track_observations=True,
        )
    finally:
        venv.close()
    m = calib.obs_moments
    if m is None:
        raise ConfigError("the calibration rollout recorded no observation statistics")
    measured = m.std.copy()
    rollout_source = (
        f"calibration rollout ({CALIBRATION_EPISODES} clean episodes, seed "
        f"{CALIBRATION_SEED}, {m.n} observations)"
    )
    info = getattr(policy, "info", None)
    stats = getattr(info, "observation_stats", None)
    if stats is None:
        return measured, rollout_source
    scale, problem = checked_std(
        stats,
        space,
        measured,
        f"the {rollout_source}",
        instead="ε in std units uses the rollout's std instead",
        evidence={"observations": m.n},
        findings=findings,
    )
    if problem is None:
        return scale, (
            f"policy spec (clean observation std), within a factor of {STD_TOLERANCE:g} "
            f"of the {rollout_source} on every feature"
        )
    return measured, f"{rollout_source}; the policy spec's std was not used: {problem}"


def run_campaign(
    policy: Policy,
    config: CampaignConfig,
    *,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Run the campaign and return the results in the ``results.json`` contract.

    Every environment is built inside :func:`rlsec.envs.unsafe_no_sandbox` if, and only if,
    ``config.unsafe_no_sandbox``.

    Raises:
        UnknownEnv, UnsafeEnvId, UnknownAttack, InvalidBudget, SpaceMismatch,
        AttackNotApplicable, ConfigError: before any attack runs (a budget too large in raw
        units once the std scale is known: before the first attacked episode).
    """
    config.validate()
    with unsafe_no_sandbox(config.unsafe_no_sandbox):
        return _run_campaign(policy, config, progress)


def _run_campaign(
    policy: Policy, config: CampaignConfig, progress: ProgressFn | None
) -> dict[str, Any]:
    info = getattr(policy, "info", None)
    env_id = config.env_id or getattr(info, "env_id", None)
    if not env_id:
        raise ConfigError("the policy does not record its environment; give env_id")
    spec = env_spec(env_id)
    check_policy_env(policy, env_id)
    attack_ids, skipped = applicable_attacks(policy, config, env_id)
    base, defense = policy, None
    if config.defense is not None:
        policy, defense = _defend(base, config, env_id)
        info = getattr(policy, "info", None)
        attack_ids, skipped = applicable_attacks(policy, config, env_id)
    horizon = spec.max_episode_steps
    num_envs = min(int(config.num_envs), int(config.episodes))
    seeds = [int(s) for s in config.seeds]
    runs = [(a, b) for a in attack_ids for b in _budgets(attack_class(a), config)]
    total = 2 * len(seeds) + len(runs) * len(seeds)
    started = time.perf_counter()
    started_at = datetime.now(UTC).isoformat()
    done_runs = 0

    def report(label: str, fraction: float) -> None:
        if progress is not None:
            progress(label, done_runs, total, fraction)

    def episodes_cb(label: str) -> Callable[[int, int], None]:
        return lambda _steps, finished: report(label, finished / config.episodes)

    venv = make_vec(env_id, num_envs)
    try:
        clean_stats, random_stats = [], []
        for s in seeds:
            _fresh_noise(policy, s, "clean", 0)
            clean_stats.append(
                rollout(
                    policy,
                    venv,
                    config.episodes,
                    seed=env_seed(s),
                    on_step=episodes_cb(f"clean (seed {s})"),
                )
            )
            done_runs += 1
            random_stats.append(
                rollout(
                    None,
                    venv,
                    config.episodes,
                    seed=env_seed(s),
                    rng=_rng(s, "random-policy", 0),
                    on_step=episodes_cb(f"random policy (seed {s})"),
                )
            )
            done_runs += 1
        report("calibrating the ε scale", 0.0)
        # from the undefended policy, so ε means the same with and without a defense
        findings: list[dict[str, Any]] = []
        scale, scale_source = _scale(base, config, env_id, findings)
        _inputs.raw_budgets("ε", config.epsilons, scale)
        clean = _summary(clean_stats)
        random = _summary(random_stats)
        results = []
        for attack_id, budget in runs:
            per_seed, attack = [], None
            t0 = time.perf_counter()
            budget_index = _budgets(attack_class(attack_id), config).index(budget)
            for s in seeds:
                label = f"{attack_id} ε={budget:g} (seed {s})"
                attack = _build(attack_id, budget, config)
                _fresh_noise(policy, s, attack_id, budget_index)
                attack.start(
                    policy,
                    num_envs=num_envs,
                    rng=_rng(s, attack_id, budget_index),
                    scale=scale,
                    horizon=horizon,
                    env_id=env_id,
                    progress=_training_progress(report, label),
                )
                per_seed.append(
                    rollout(
                        policy,
                        venv,
                        config.episodes,
                        seed=env_seed(s),
                        attack=attack,
                        on_step=episodes_cb(label),
                    )
                )
                done_runs += 1
            assert attack is not None
            summary = _summary(per_seed)
            tm = attack.threat_model
            changed = sum(int(p.changed_steps.sum()) for p in per_seed)
            steps = sum(int(p.lengths.sum()) for p in per_seed)
            shifts = [p.action_shift for p in per_seed if p.action_shift is not None]
            results.append(
                {
                    "attack": attack_id,
                    "surface": attack.surface.value,
                    "epsilon": budget,
                    "norm": tm.norm,
                    "unit": tm.unit,
                    **summary,
                    "action_change_rate": changed / steps if steps else 0.0,
                    "mean_action_shift": (
                        float(sum(x.sum() for x in shifts) / steps) if shifts and steps else None
                    ),
                    "per_seed": [
                        {"seed": s, "mean_return": float(p.returns.mean())}
                        for s, p in zip(seeds, per_seed, strict=True)
                    ],
                    "threat_model": tm.to_dict(),
                    "atlas": list(attack.atlas),
                    "reference": attack.reference,
                    "params": attack.params(),
                    "seconds": time.perf_counter() - t0,
                }
            )
    finally:
        venv.close()
    floor = min(0.0, random["mean_return"])
    threshold = floor + 0.5 * (clean["mean_return"] - floor)
    worst = _worst_case(results)
    strength: dict[str, float | None] = {}
    for attack_id in attack_ids:
        rows = [r for r in results if r["attack"] == attack_id]
        strength[attack_id] = eps50(
            [r["epsilon"] for r in rows], [r["mean_return"] for r in rows], threshold
        )
    # "worst_case" is always the observation surface (ε), "worst_case:action" the action
    # surface (α): a script reading one key always gets the same quantity.
    for surface, key in (("observation", "worst_case"), ("action", "worst_case:action")):
        rows = [w for w in worst if w["surface"] == surface]
        strength[key] = (
            eps50([w["epsilon"] for w in rows], [w["mean_return"] for w in rows], threshold)
            if rows
            else None
        )
    policy_block = {
        "source": getattr(info, "source", repr(policy)),
        "sha256": getattr(info, "sha256", None),
    }
    if info is not None:
        policy_block.update(format=info.format, algo=info.algo, env_id=info.env_id)
    return {
        "rlsec_version": __version__,
        "kind": "redteam",
        "policy": policy_block,
        "defense": defense,
        "env": env_id,
        "seed": seeds[0],
        "eps_unit": config.eps_unit,
        "clean": clean,
        "random_policy": random,
        "results": results,
        "worst_case": worst,
        "eps50": strength,
        "eps50_threshold": threshold,
        "skipped": skipped,
        "findings": findings,
        "config": {
            **config.to_dict(),
            "env_id": env_id,
            "policy": policy_block["source"],
            "attacks_run": attack_ids,
            "num_envs_used": num_envs,
            "horizon": horizon,
            "scale": scale.tolist() if scale is not None else None,
            "scale_source": scale_source,
            "torch_threads": torch.get_num_threads(),
        },
        "started_at": started_at,
        "seconds": time.perf_counter() - started,
    }


def _defend(policy: Policy, config: CampaignConfig, env_id: str) -> tuple[Policy, dict[str, Any]]:
    """The policy wrapped in ``config.defense`` and the defense's record. The defense's unit
    defaults to ε's; in ``std`` units its scale is the one ε uses (:func:`_scale`)."""
    assert config.defense is not None
    spec = parse_defense(config.defense)
    scale, source = None, None
    if spec.params.get("unit", config.eps_unit) == "std":
        scale, source = _scale(policy, replace(config, eps_unit="std"), env_id)
    return apply_defense(
        policy, spec, std_scale=scale, std_source=source, default_unit=config.eps_unit
    )


def _fresh_noise(policy: Policy, seed: int, run: str, index: int) -> None:
    """Restart a randomized policy's noise (a smoothed policy's) for one run, so the run's
    numbers do not depend on the runs before it."""
    reseed = getattr(policy, "reseed", None)
    if callable(reseed):
        reseed(seed, zlib.crc32(run.encode()), index)


def _training_progress(report: Callable[[str, float], None], label: str) -> Callable[[float], None]:
    return lambda fraction: report(f"{label}: training adversary", fraction)


def _worst_case(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per surface and budget, the attack with the lowest mean return.

    The l2 ball of radius ε lies inside the linf ball of radius ε, so an l2 attack is also a
    valid linf attack at the same ε: the observation worst case is for the linf threat model.
    """
    best: dict[tuple[str, float], dict[str, Any]] = {}
    for r in results:
        k = (r["surface"], r["epsilon"])
        if k not in best or r["mean_return"] < best[k]["mean_return"]:
            best[k] = r
    return [
        {
            "surface": s,
            "epsilon": e,
            "attack": r["attack"],
            "mean_return": r["mean_return"],
            "ci95": r["ci95"],
        }
        for (s, e), r in sorted(best.items())
    ]
