"""The damage of parameter attacks: a policy's returns with clean against tampered weights.

:func:`parameter_damage` tampers with a policy once per attack, budget and seed (the attacks
of :mod:`rlsec.attacks.parameters`), plays the tampered copy on the clean runs' environment
seeds and reports the return statistics with confidence intervals, how often the action
changed, and how often the network's output was not finite.

Non-finite outputs. Flipping an exponent bit can make a weight huge, infinite or NaN, and the
network's outputs with it. :meth:`TorchPolicy.act <rlsec.policies.TorchPolicy.act>` does not
guard against that: torch's ``argmax`` picks a NaN entry as the maximum, and a NaN continuous
action is passed to the environment. The evaluation here uses an explicit rule instead
(:func:`act_with_fallback`): NaN logits or Q-values never win (a row of nothing but NaN or
-inf takes the first action), a NaN continuous action becomes 0 clipped into the bounds and
an infinite one the bound; the rows this happens on are counted and reported.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch

from rlsec.attacks.parameters import (
    ParameterAttack,
    default_parameter_attacks,
    probe_observations,
)
from rlsec.core import Policy
from rlsec.errors import ConfigError
from rlsec.policies.base import TorchPolicy
from rlsec.policies.spaces import box_span

if TYPE_CHECKING:
    from rlsec.attacks.rollout import EpisodeStats

__all__ = ["act_with_fallback", "parameter_damage"]

_PROBE_SEED = 20261125  # the attacker's probe, collected by parameter_damage
_HELD_OUT_SEED = _PROBE_SEED + 1  # the held-out probe the damage is measured on


# -- the explicit decoding of non-finite outputs ----------------------------------------------
def _decode_with_fallback(policy: TorchPolicy, out: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Actions for actor outputs under the non-finite rule, and the rows it applied to."""
    bad = (~torch.isfinite(out)).reshape(out.shape[0], -1).any(dim=1).numpy()
    if bad.any():
        if isinstance(policy.action_space, gym.spaces.Box):
            out = torch.nan_to_num(out, nan=0.0)  # ±inf become ±float max, clipped to bounds
        elif not isinstance(policy.action_space, gym.spaces.MultiBinary):  # NaN > 0 is False
            out = torch.where(torch.isnan(out), torch.tensor(-math.inf), out)
    return policy.decode(out), bad


def act_with_fallback(
    policy: TorchPolicy, observations: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Actions of ``policy`` under the explicit non-finite rule, and which rows needed it.

    Rows whose actor output holds a NaN or an infinity are decoded as follows: discrete
    (``logits`` or ``q_values``): NaN entries never win the argmax, an infinite entry wins as
    usual, and a row (or MultiDiscrete segment) of nothing but NaN and -inf takes its first
    action; MultiBinary: a NaN entry is 0; continuous: NaN becomes 0 and ±inf the largest
    float, then clipped into the bounds as usual. Finite rows decode exactly as
    :meth:`TorchPolicy.act <rlsec.policies.TorchPolicy.act>`.

    Returns:
        ``(actions, nonfinite)``: the actions, and a boolean mask of the rows whose output was
        not finite.

    Example:
        >>> import gymnasium as gym, numpy as np, torch
        >>> lin = torch.nn.Linear(1, 3)
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[float("nan")], [1.0], [2.0]]))
        ...     _ = lin.bias.zero_()
        >>> p = TorchPolicy(gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(3), lin, "logits")
        >>> a, bad = act_with_fallback(p, np.ones((1, 1), np.float32))
        >>> int(p.act(np.ones((1, 1), np.float32))[0]), int(a[0]), bool(bad[0])
        (0, 2, True)
    """
    x = policy.as_batch(observations)
    with torch.no_grad():
        out = policy.torch_module()(torch.from_numpy(x))
    return _decode_with_fallback(policy, out)


# -- damage ----------------------------------------------------------------------------------
class _Watched:
    """A tampered policy as the rollout sees it: actions under the non-finite rule, with the
    steps whose output was not finite and those whose action differs from the clean policy's
    counted on the way."""

    def __init__(self, tampered: TorchPolicy, clean: Policy) -> None:
        self.tampered = tampered
        self.clean = clean
        space = tampered.action_space
        self.span = box_span(space) if isinstance(space, gym.spaces.Box) else None
        self.steps = self.nonfinite = self.changed = 0
        self.shift = 0.0

    @property
    def observation_space(self) -> gym.Space[Any]:
        return self.tampered.observation_space

    @property
    def action_space(self) -> gym.Space[Any]:
        return self.tampered.action_space

    def act(self, observations: np.ndarray) -> np.ndarray:
        from rlsec.attacks.rollout import CHANGE_TOLERANCE

        a, bad = act_with_fallback(self.tampered, observations)
        ref = self.clean.act(observations)
        n = len(a)
        self.steps += n
        self.nonfinite += int(bad.sum())
        if self.span is not None:
            d = np.abs(a.reshape(n, -1).astype(np.float64) - ref.reshape(n, -1)) / self.span
            moved = d.max(axis=1) if d.shape[1] else np.zeros(n)
            self.changed += int((moved > CHANGE_TOLERANCE).sum())
            self.shift += float(moved.sum())
        else:
            self.changed += int((a.reshape(n, -1) != ref.reshape(n, -1)).any(axis=1).sum())
        return a


def _env_seed(seed: int) -> int:
    from rlsec.stats import env_seed  # the campaign's: the same clean episodes

    return env_seed(seed)


def _summary(stats: Sequence[EpisodeStats]) -> dict[str, Any]:
    from rlsec.stats import summarize_returns

    return summarize_returns(
        np.concatenate([s.returns for s in stats]), np.concatenate([s.lengths for s in stats])
    )


def _probe_damage(
    tampered: TorchPolicy, clean_actions: np.ndarray, held_out: np.ndarray
) -> tuple[float, float]:
    """Fraction of held-out probe states whose action changed, and whose output is not
    finite (continuous actions: changed by more than the rollout's tolerance)."""
    from rlsec.attacks.rollout import CHANGE_TOLERANCE

    a, bad = act_with_fallback(tampered, held_out)
    n = len(a)
    space = tampered.action_space
    if isinstance(space, gym.spaces.Box):
        d = np.abs(a.reshape(n, -1).astype(np.float64) - clean_actions.reshape(n, -1))
        changed = (d / box_span(space)).max(axis=1) > CHANGE_TOLERANCE
    else:
        changed = (a.reshape(n, -1) != clean_actions.reshape(n, -1)).any(axis=1)
    return float(changed.mean()), float(bad.mean())


def _relay(report: Callable[[str, float], None], label: str) -> Callable[[float], None]:
    return lambda fraction: report(label, fraction)


def _attack_rng(seed: int, attack: ParameterAttack, index: int) -> np.random.Generator:
    key = zlib.crc32(json.dumps(attack.describe(), sort_keys=True).encode())
    return np.random.default_rng(np.random.SeedSequence([seed, key, index]))


def parameter_damage(
    policy: TorchPolicy,
    env_id: str | None = None,
    attacks: Sequence[ParameterAttack] | None = None,
    *,
    episodes: int = 20,
    seeds: Sequence[int] = (0,),
    num_envs: int = 16,
    probe: np.ndarray | None = None,
    probe_size: int = 256,
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """Clean against tampered returns for each parameter attack and budget.

    For every attack and seed the policy is tampered once (its random draws seeded by the
    seed, the attack's description and its position in ``attacks``), then played for
    ``episodes`` episodes on the same environment seeds as the clean runs. Gradient attacks
    optimise on ``probe`` (default: ``probe_size`` observations of the clean policy,
    collected with a fixed seed); the probe metrics are measured on a held-out set of as many
    states, collected with another fixed seed. Tampered policies act under the explicit
    non-finite rule of :func:`act_with_fallback`.

    Returns:
        A dict in the shape of ``results.json`` (``docs/results.md``) with ``kind``
        ``parameter-damage``: ``clean`` and one row per attack and budget in ``results``, with
        ``surface: "parameters"``, ``label``, the return statistics, ``action_change_rate``
        and ``mean_action_shift`` (over the tampered episodes' steps, against the clean
        policy's action on the same observation), ``nonfinite_outputs`` (fraction of those
        steps whose output was not finite), ``probe_action_change_rate`` and
        ``probe_nonfinite_outputs`` (on the held-out probe, averaged over seeds), and
        ``per_seed`` with the tampered weights' digest.

    Raises:
        ConfigError, UnknownEnv, SpaceMismatch, AttackNotApplicable: before anything runs.
    """
    from rlsec._version import __version__
    from rlsec.attacks.rollout import rollout
    from rlsec.envs import check_policy_env, make_vec

    grid = list(default_parameter_attacks() if attacks is None else attacks)
    if not grid:
        raise ConfigError("attacks is empty: give at least one parameter attack, or None")
    for a in grid:
        if not isinstance(a, ParameterAttack):
            raise ConfigError(f"expected parameter attacks, got {type(a).__name__}")
        a.check_applicable(policy)
    if int(episodes) < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    seed_list = [int(s) for s in seeds]
    if not seed_list:
        raise ConfigError("give at least one seed")
    if int(num_envs) < 1 or int(probe_size) < 1:
        raise ConfigError(f"num_envs and probe_size must be >= 1, got {num_envs}, {probe_size}")
    env = env_id or policy.info.env_id
    if not env:
        raise ConfigError("the policy does not record its environment; give env_id")
    check_policy_env(policy, env)
    started, started_at = time.perf_counter(), datetime.now(UTC).isoformat()

    def report(label: str, fraction: float) -> None:
        if progress is not None:
            progress(label, fraction)

    attacker_probe = (
        policy.as_batch(probe)
        if probe is not None
        else probe_observations(policy, env, n=int(probe_size), seed=_PROBE_SEED)
    )
    held_out = probe_observations(policy, env, n=int(probe_size), seed=_HELD_OUT_SEED)
    held_out_clean = policy.act(held_out)
    n_envs = min(int(num_envs), int(episodes))
    venv = make_vec(env, n_envs)
    try:
        clean_stats = []
        for s in seed_list:
            report(f"clean (seed {s})", 0.0)
            clean_stats.append(rollout(policy, venv, int(episodes), seed=_env_seed(s)))
        results = []
        for index, attack in enumerate(grid):
            t0 = time.perf_counter()
            per_seed, watched, probe_rates = [], [], []
            for s in seed_list:
                label = f"{attack.label} ε={attack.threat_model.epsilon:g} (seed {s})"
                report(label, 0.0)
                tampered = attack.tamper(
                    policy,
                    rng=_attack_rng(s, attack, index),
                    probe=attacker_probe,
                    env_id=env,
                    progress=_relay(report, f"{label}: tampering"),
                )
                probe_rates.append(_probe_damage(tampered, held_out_clean, held_out))
                w = _Watched(tampered, policy)
                per_seed.append(
                    (s, rollout(w, venv, int(episodes), seed=_env_seed(s)), tampered.info.sha256)
                )
                watched.append(w)
            steps = sum(w.steps for w in watched)
            tm = attack.threat_model
            results.append(
                {
                    "attack": attack.id,
                    "label": attack.label,
                    "surface": attack.surface.value,
                    "epsilon": tm.epsilon,
                    "norm": tm.norm,
                    "unit": tm.unit,
                    **_summary([p[1] for p in per_seed]),
                    "action_change_rate": sum(w.changed for w in watched) / steps if steps else 0.0,
                    "mean_action_shift": (
                        sum(w.shift for w in watched) / steps
                        if steps and watched[0].span is not None
                        else None
                    ),
                    "nonfinite_outputs": sum(w.nonfinite for w in watched) / steps
                    if steps
                    else 0.0,
                    "probe_action_change_rate": float(np.mean([r[0] for r in probe_rates])),
                    "probe_nonfinite_outputs": float(np.mean([r[1] for r in probe_rates])),
                    "per_seed": [
                        {"seed": s, "mean_return": float(st.returns.mean()), "weights_sha256": sha}
                        for s, st, sha in per_seed
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
    info = policy.info
    return {
        "rlsec_version": __version__,
        "kind": "parameter-damage",
        "policy": {
            "source": info.source,
            "sha256": info.sha256,
            "format": info.format,
            "algo": info.algo,
            "env_id": info.env_id,
        },
        "env": env,
        "seed": seed_list[0],
        "clean": _summary(clean_stats),
        "results": results,
        "probe": {
            "attacker": {
                "size": int(attacker_probe.shape[0]),
                "source": "given" if probe is not None else f"clean rollout, seed {_PROBE_SEED}",
            },
            "held_out": {
                "size": int(held_out.shape[0]),
                "source": f"clean rollout, seed {_HELD_OUT_SEED}",
            },
        },
        "nonfinite_rule": (
            "rows with a NaN or infinite actor output: NaN logits/Q-values never win the "
            "argmax (all-NaN rows take the first action); NaN continuous actions become 0 "
            "and infinite ones the bound, clipped into the action space"
        ),
        "config": {
            "env_id": env,
            "attacks": [a.describe() for a in grid],
            "episodes": int(episodes),
            "seeds": seed_list,
            "num_envs_used": n_envs,
            "probe_size": int(probe_size),
            "torch_threads": torch.get_num_threads(),
        },
        "started_at": started_at,
        "seconds": time.perf_counter() - started,
    }
