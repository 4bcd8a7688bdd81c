"""The high-level red-team call: load a policy, run the campaign, optionally write the report."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from rlsec._files import check_new_dir
from rlsec.core import Policy
from rlsec.envs import env_spaces
from rlsec.envs import unsafe_no_sandbox as _no_sandbox
from rlsec.errors import ConfigError
from rlsec.evaluate import DEFAULT_ALPHAS, DEFAULT_EPSILONS, CampaignConfig, run_campaign
from rlsec.evaluate.campaign import ProgressFn
from rlsec.policies import load_policy

__all__ = ["DEFAULT_POLICY", "check_out_dir", "load_for_redteam", "redteam"]

DEFAULT_POLICY = "zoo:cartpole-ppo"


def load_for_redteam(source: str | os.PathLike[str], env_id: str | None) -> Policy:
    """Load ``source`` for a campaign; SB3 archives need ``env_id`` (they do not record it).

    Raises:
        ConfigError: an SB3 archive without ``env_id``.
        UnknownEnv, PolicyLoadError, SpaceMismatch: as the loaders raise them.
    """
    s = os.fspath(source)
    is_archive = not s.startswith("zoo:") and Path(s).is_file()
    if is_archive and not env_id:
        raise ConfigError(
            f"{s} is a Stable-Baselines3 archive, which does not record its environment: "
            "pass the environment id (--env ENV_ID)"
        )
    spaces = env_spaces(env_id) if env_id else None
    return load_policy(s, env_id=env_id, env_spaces=spaces)


def check_out_dir(out: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Check, before any work, that the report can be written to ``out``: a new directory,
    an empty one, or (``force``) any directory, whose ``results.json`` and ``report.html``
    are then replaced (nothing else in it is touched).

    Raises:
        ConfigError: ``out`` is a file or a link, is a directory that is not empty and
            ``force`` is false, or no directory on its path can be written.
    """
    path = Path(out)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        kind = "link" if path.is_symlink() else "file"
        raise ConfigError(f"--out must be a directory, got the existing {kind} {path}")
    if not force:
        try:
            check_new_dir(path)
        except ConfigError as exc:
            raise ConfigError(
                f"{exc} (or pass --force to replace the report in it: results.json and report.html)"
            ) from None
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the report to {path}: {existing} is not writable")
    return path


def redteam(
    policy: Policy | str | os.PathLike[str] = DEFAULT_POLICY,
    *,
    env_id: str | None = None,
    attacks: Sequence[str] | None = None,
    epsilons: Sequence[float] = DEFAULT_EPSILONS,
    eps_unit: Literal["raw", "std"] = "std",
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    episodes: int = 20,
    seeds: Sequence[int] = (0,),
    num_envs: int = 64,
    attack_params: dict[str, dict[str, Any]] | None = None,
    defense: str | None = None,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
    unsafe_no_sandbox: bool = False,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Attack a policy with every applicable inference-time attack and measure the damage.

    Args:
        policy: a policy object, ``zoo:NAME``, a native policy directory or an SB3 ``.zip``.
        env_id: the Gymnasium environment (required for SB3 archives).
        attacks: attack ids; ``None`` runs every attack that applies to the policy.
        epsilons: observation budgets, in ``eps_unit``.
        eps_unit: ``raw`` observation units or ``std`` (per-feature clean standard deviations).
        alphas: action-attack budgets (probabilities).
        defense: an inference-time defense to wrap the policy in, ``NAME[:KEY=VALUE,...]``
            such as ``smoothing:sigma=0.2,n=100`` (see :mod:`rlsec.defenses.inference`); the
            attacks then attack the defended policy, and ``results["defense"]`` records it.
        out: if given, write ``results.json`` and ``report.html`` there: a new or empty
            directory, unless ``force`` (then those two files are replaced).
        unsafe_no_sandbox: let ``env_id`` (or the policy's recorded environment) name a
            module outside gymnasium and rlsec to import (``module:EnvId``), which runs its
            code in this process; refused otherwise (:class:`~rlsec.errors.UnsafeEnvId`).
            Recorded in ``results["config"]``.

    Returns:
        The results, in the ``results.json`` contract.

    Raises:
        ConfigError and its kinds (UnknownEnv, UnsafeEnvId, InvalidBudget, ...), SpaceMismatch,
        PolicyLoadError, AttackNotApplicable: bad input, before anything runs or is written.
    """
    if out is not None:
        check_out_dir(out, force=force)
    config = CampaignConfig(
        env_id=env_id,
        attacks=attacks,
        epsilons=epsilons,
        eps_unit=eps_unit,
        alphas=alphas,
        episodes=episodes,
        seeds=seeds,
        num_envs=num_envs,
        attack_params=attack_params or {},
        defense=defense,
        unsafe_no_sandbox=unsafe_no_sandbox,
    )
    config.validate()  # before loading anything: run_campaign validates again, idempotently
    if isinstance(policy, (str, os.PathLike)):
        with _no_sandbox(config.unsafe_no_sandbox):
            policy = load_for_redteam(policy, env_id)
    results = run_campaign(policy, config, progress=progress)
    if out is not None:
        from rlsec.report import write_report

        write_report(results, Path(out))
    return results
