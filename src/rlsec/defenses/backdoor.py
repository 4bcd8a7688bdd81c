"""Detecting backdoored (trojaned) policies by trigger inversion.

:func:`scan_backdoor` adapts Neural Cleanse (Wang et al. 2019) to policies, with the RL
setting of BIRD (Chen et al. 2023): no knowledge of the trigger, the target action or the
training run; only the policy and states from clean rollouts of its environment (*probe
states*, :func:`probe_states`). For each action it restores the smallest trigger that makes
the policy take that action on at least ``success`` (95%) of the probe states, and flags the
policy when one trigger is anomalously small compared with the others: its anomaly index
``(median - size) / (1.4826 · MAD)`` exceeds ``threshold`` (2, as in Neural Cleanse; the MAD
is floored at ``min_mad`` = 5% of the median, see :class:`TriggerInversion`). BIRD's own
restoration (a generative trigger model optimised in the environment with the victim's value
network), its detection metric and its fine-tuning removal are not implemented here.

**Triggers and their size** (vector observations). A trigger is a mask ``m ∈ [0, 1]^D`` and a
pattern ``p``: a state ``x`` becomes ``(1 - m)·x + m·p``. Neural Cleanse measures a trigger by
its mask's L1 norm, which suits images (any pixel may take any value at the same cost). With a
few features, every feature is "one pixel", so here the *size* is how far the trigger moves the
probe states, in units of their per-feature standard deviation:
``mean over x of Σ_j m_j·|p_j - x_j| / σ_j``. The pattern lives in the observation space;
features whose space is unbounded are limited to ``pattern_range`` standard deviations beyond
the range of the probe states.

**Candidates** (``support``):

* ``joint`` (Neural Cleanse): one trigger per action over all features, found by gradient
  descent on ``cross-entropy(policy(x'), a) + λ·size`` with Neural Cleanse's schedule for λ
  (raised ×1.5 after ``patience`` successful steps in a row, lowered ÷1.5^1.5 after
  ``patience`` failures). Needs a differentiable policy with logits or Q-values.
* ``per-feature``: one trigger per (action, feature): the feature is stamped to a value
  searched exhaustively on a grid over its pattern range (black-box: ``act`` only). The
  median absolute deviation of two numbers makes every anomaly index 1/1.4826 ≈ 0.67, so with
  two actions (CartPole) ``joint`` could never flag anything; ``auto`` (the default) uses
  ``per-feature`` when the policy has fewer than three actions.

The statistic is taken over the feasible triggers (success reached) and, for ``per-feature``,
over the *censored* ones too: a feature that cannot force the action anywhere on its grid
enters with the largest size on the grid, a lower bound of its true size. That is
conservative (it can only make a small trigger look less anomalous) and lets a policy in which
a single feature forces an action, while no other does, be flagged. Only feasible triggers
can be flagged. With fewer than three candidates in the statistic the scan is inconclusive
and says so.

**What the detector assumes** (and where it is blind): that the backdoor trigger is *small*
compared with the perturbations that make a clean policy take an action on almost every state.
That holds for images, where changing the class of any image takes a large change. It fails
when clean decisions have thin margins relative to the spread of clean states (CartPole: moving
the pole's angular velocity by a few standard deviations forces either action) or when the
trigger is an out-of-distribution value of a feature clean play barely moves (the trigger is
then *large* in these units). ``benchmarks/backdoor.py`` measures both on CartPole PPO: the
smallest restored triggers of clean and backdoored policies alike move the pole's angular
velocity by 1-1.5 standard deviations, while the restored triggers on the planted feature (cart
position) measure 7-22, so no backdoored policy is flagged (0 of 3, and 0 of 3 clean ones).
It also assumes a trigger shared by all states (not state-dependent), discrete actions, and
probe states from the deployment distribution.

Example:
    >>> anomaly_index([1.0, 10.0, 11.0, 12.0]).round(2).tolist()
    [6.41, 0.34, 0.34, 1.01]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from rlsec.core import DifferentiablePolicy, Finding, Policy, Severity, Surface
from rlsec.errors import AttackNotApplicable, ConfigError

__all__ = [
    "DETECTOR",
    "REVERSAL_DETECTOR",
    "ForcedResponse",
    "InvertedTrigger",
    "ResponseScan",
    "TriggerInversion",
    "anomaly_index",
    "forced_responses",
    "invert_triggers",
    "probe_states",
    "scan_backdoor",
    "scan_reversals",
]

#: The detector id recorded in findings.
DETECTOR = "trigger-inversion-v1"
_MAD_CONSISTENCY = 1.4826  # MAD of a normal distribution is 0.6745 σ
_MIN_STD = 1e-6


@dataclass(frozen=True)
class TriggerInversion:
    """Settings of the trigger-inversion scan (recorded in every finding).

    Attributes:
        support: ``joint``, ``per-feature`` or ``auto`` (see the module docstring).
        success: fraction of probe states on which the policy must take the action.
        threshold: anomaly index above which a small trigger is flagged (Neural Cleanse: 2).
        min_mad: floor of the MAD as a fraction of the median size: near-equal sizes differ
            by the optimiser's noise, and with a handful of candidates a tiny MAD would turn
            that noise into large anomaly indices (0 recovers Neural Cleanse exactly).
        steps: gradient steps per action (``joint``).
        lr: Adam step size on the mask and pattern logits (``joint``).
        init_cost: initial weight λ of the size term (``joint``).
        cost_multiplier: λ's up factor; down is its 1.5 power (Neural Cleanse).
        patience: steps in a row before λ moves (``joint``).
        grid: values tried per feature (``per-feature``).
        pattern_range: for unbounded features, how many standard deviations beyond the probe
            states' range the pattern may go.
        max_probe_states: probe states used (an evenly spaced subset if more are given).
    """

    support: Literal["auto", "joint", "per-feature"] = "auto"
    success: float = 0.95
    threshold: float = 2.0
    min_mad: float = 0.05
    steps: int = 300
    lr: float = 0.1
    init_cost: float = 1e-2
    cost_multiplier: float = 1.5
    patience: int = 10
    grid: int = 201
    pattern_range: float = 10.0
    max_probe_states: int = 512

    def validated(self) -> TriggerInversion:
        """Check every field.

        Raises:
            ConfigError: with what was expected and what was received.
        """
        if self.support not in ("auto", "joint", "per-feature"):
            raise ConfigError(
                f"support must be 'auto', 'joint' or 'per-feature', got {self.support!r}"
            )
        if not 0.0 < _real(self, "success") <= 1.0:
            raise ConfigError(f"success must be a fraction in (0, 1], got {self.success!r}")
        _check_fields(
            self,
            positive=("threshold", "lr", "init_cost", "pattern_range"),
            non_negative=("min_mad",),
            integers=(("steps", 1), ("patience", 1), ("grid", 2), ("max_probe_states", 3)),
        )
        if not 1.0 < _real(self, "cost_multiplier") < math.inf:
            raise ConfigError(
                f"cost_multiplier must be a finite number > 1, got {self.cost_multiplier!r}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _check_fields(
    cfg: Any,
    *,
    positive: tuple[str, ...],
    non_negative: tuple[str, ...],
    integers: tuple[tuple[str, int], ...],
) -> None:
    """The numeric fields of a scan's settings: finite and > 0, finite and >= 0, integers of
    at least a given value.

    Raises:
        ConfigError: naming the field, what was expected and what was received.
    """
    for name in positive:
        v = _real(cfg, name)
        if not (math.isfinite(v) and v > 0):
            raise ConfigError(f"{name} must be a finite number > 0, got {v!r}")
    for name in non_negative:
        v = _real(cfg, name)
        if not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"{name} must be a finite number >= 0, got {getattr(cfg, name)!r}")
    for name, least in integers:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise ConfigError(f"{name} must be an integer >= {least}, got {v!r}")


def _real(cfg: Any, name: str) -> float:
    """The field ``name`` of ``cfg`` as a float; a bool, a string or anything else that is not
    a real number is refused (``float("nan")`` and ``float(True)`` would pass for numbers).

    Raises:
        ConfigError: naming the field and what was received.
    """
    v = getattr(cfg, name)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} must be a number, got {type(v).__name__} {v!r}")
    return float(v)


@dataclass(frozen=True)
class InvertedTrigger:
    """The smallest trigger found for one action (and, ``per-feature``, one feature).

    ``size`` is in per-feature standard deviations of the probe states. When no trigger
    reached the success rate (``feasible`` is false), ``censored`` says whether ``size`` is a
    lower bound (``per-feature``: the largest size on the grid) or unknown (``joint``:
    ``inf``). ``mask`` and ``pattern`` have one entry per feature.
    """

    action: int
    support: tuple[int, ...]
    mask: tuple[float, ...]
    pattern: tuple[float, ...]
    size: float
    success_rate: float
    feasible: bool
    censored: bool = False
    anomaly_index: float | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "support": list(self.support),
            "mask": [round(v, 6) for v in self.mask],
            "pattern": [round(v, 6) for v in self.pattern],
            "size": self.size if math.isfinite(self.size) else None,
            "success_rate": self.success_rate,
            "feasible": self.feasible,
            "censored": self.censored,
            "anomaly_index": self.anomaly_index,
        }


def anomaly_index(sizes: np.ndarray | list[float], *, min_mad: float = 0.0) -> np.ndarray:
    """Neural Cleanse's anomaly index: ``|size - median| / (1.4826 · MAD)``.

    ``min_mad`` floors the MAD at that fraction of the median (0: Neural Cleanse's statistic
    exactly). When the MAD is still 0, sizes equal to the median get 0 and the others ``inf``.

    Raises:
        ConfigError: no sizes, a size that is not finite, or a negative ``min_mad``.

    Example:
        >>> anomaly_index([4.0, 4.1, 3.9, 3.6]).round(2).tolist()
        [0.34, 1.01, 0.34, 2.36]
        >>> anomaly_index([4.0, 4.1, 3.9, 3.6], min_mad=0.05).round(2).tolist()
        [0.17, 0.51, 0.17, 1.2]
    """
    s = np.asarray(sizes, dtype=np.float64).reshape(-1)
    if s.size == 0 or not np.all(np.isfinite(s)):
        raise ConfigError(f"anomaly_index needs finite sizes, got {s.tolist()}")
    if not (math.isfinite(min_mad) and min_mad >= 0):
        raise ConfigError(f"min_mad must be a finite number >= 0, got {min_mad!r}")
    med = float(np.median(s))
    dev = np.abs(s - med)
    mad = max(float(np.median(dev)), min_mad * abs(med)) * _MAD_CONSISTENCY
    if mad == 0.0:
        return np.where(dev == 0.0, 0.0, np.inf)
    return np.asarray(dev / mad)


def probe_states(
    policy: Policy, env_id: str, *, episodes: int = 10, seed: int = 0, max_states: int = 512
) -> np.ndarray:
    """Observations of ``episodes`` clean episodes played by ``policy`` (the probe states of
    a scan), an evenly spaced subset of at most ``max_states``.

    Raises:
        ConfigError: bad counts. SpaceMismatch: the policy does not fit the environment.
    """
    from rlsec.envs import check_policy_env, make

    if episodes < 1 or max_states < 1:
        raise ConfigError(
            f"episodes and max_states must be >= 1, got {episodes!r} and {max_states!r}"
        )
    check_policy_env(policy, env_id)
    env = make(env_id)
    states: list[np.ndarray] = []
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            done = False
            while not done:
                states.append(np.asarray(obs))
                action = policy.act(np.asarray(obs)[None])[0]
                obs, _, terminated, truncated, _ = env.step(action)
                done = bool(terminated or truncated)
    finally:
        env.close()
    x = np.stack(states)
    return _subset(x, max_states)


def _subset(x: np.ndarray, n: int) -> np.ndarray:
    if len(x) <= n:
        return x
    return x[np.linspace(0, len(x) - 1, n).round().astype(np.int64)]


def _bounds(space: gym.spaces.Box, x: np.ndarray, sd: np.ndarray, k: float) -> np.ndarray:
    """Per feature, the [low, high] the pattern may take."""
    lo = np.where(np.isfinite(space.low), space.low, x.min(axis=0) - k * sd)
    hi = np.where(np.isfinite(space.high), space.high, x.max(axis=0) + k * sd)
    return np.stack([lo, hi]).astype(np.float64)


def invert_triggers(
    policy: Policy,
    probe: np.ndarray,
    config: TriggerInversion | None = None,
    *,
    seed: int = 0,
) -> list[InvertedTrigger]:
    """The smallest trigger per candidate (action, or action × feature), as described in the
    module docstring. Deterministic given ``seed``.

    Raises:
        AttackNotApplicable: not vector observations and discrete actions, or ``joint`` on a
            policy without logits or Q-values.
        ConfigError: bad probe states or settings.
    """
    cfg = (config or TriggerInversion()).validated()
    x, sd, box, n_actions, start = _setup(policy, probe, cfg.max_probe_states, cfg.pattern_range)
    dim = x.shape[1]
    support = cfg.support
    if support == "auto":
        support = "joint" if n_actions >= 3 else "per-feature"
    if support == "per-feature":
        return [
            t
            for i in range(dim)
            for t in _per_feature(policy, x, sd, box, i, n_actions, start, cfg)
        ]
    if not isinstance(policy, DifferentiablePolicy) or policy.output == "action":
        raise AttackNotApplicable(
            "joint trigger inversion needs a differentiable policy with logits or Q-values"
        )
    gen = torch.Generator().manual_seed(seed)
    return [_joint(policy, x, sd, box, a, start, cfg, gen) for a in range(n_actions)]


def _act_index(policy: Policy, x: np.ndarray, start: int) -> np.ndarray:
    obs_space = policy.observation_space
    assert isinstance(obs_space, gym.spaces.Box)
    return np.asarray(policy.act(x.astype(obs_space.dtype))) - start


def _stamp_rates(
    policy: Policy, x: np.ndarray, i: int, values: np.ndarray, n_actions: int, start: int
) -> np.ndarray:
    """``rates[g, a]``: the fraction of states ``x`` on which the policy takes action ``a``
    once feature ``i`` is stamped to ``values[g]``. Batched over values and states."""
    n, dim = x.shape
    rates = np.zeros((len(values), n_actions))
    chunk = max(1, 65536 // n)
    for g0 in range(0, len(values), chunk):
        vs = values[g0 : g0 + chunk]
        batch = np.repeat(x[None], len(vs), axis=0)
        batch[:, :, i] = vs[:, None]
        acts = _act_index(policy, batch.reshape(-1, dim), start).reshape(len(vs), n)
        for a in range(n_actions):
            rates[g0 : g0 + len(vs), a] = (acts == a).mean(axis=1)
    return rates


def _per_feature(
    policy: Policy,
    x: np.ndarray,
    sd: np.ndarray,
    box: np.ndarray,
    i: int,
    n_actions: int,
    start: int,
    cfg: TriggerInversion,
) -> list[InvertedTrigger]:
    """Stamp feature ``i`` to each grid value; per action, the smallest feasible value."""
    values = np.linspace(box[0, i], box[1, i], cfg.grid)
    dim = x.shape[1]
    rates = _stamp_rates(policy, x, i, values, n_actions, start)
    sizes = np.abs(values[:, None] - x[None, :, i]).mean(axis=1) / sd[i]
    out = []
    for a in range(n_actions):
        ok = rates[:, a] >= cfg.success
        feasible = bool(ok.any())
        g = int(np.argmin(np.where(ok, sizes, np.inf))) if feasible else int(rates[:, a].argmax())
        mask = tuple(1.0 if j == i else 0.0 for j in range(dim))
        pattern = tuple(float(values[g]) if j == i else 0.0 for j in range(dim))
        out.append(
            InvertedTrigger(
                action=start + a,
                support=(i,),
                mask=mask,
                pattern=pattern,
                size=float(sizes[g]) if feasible else float(sizes.max()),
                success_rate=float(rates[g, a]),
                feasible=feasible,
                censored=not feasible,
            )
        )
    return out


def _joint(
    policy: DifferentiablePolicy,
    x: np.ndarray,
    sd: np.ndarray,
    box: np.ndarray,
    a: int,
    start: int,
    cfg: TriggerInversion,
    gen: torch.Generator,
) -> InvertedTrigger:
    """Neural Cleanse for one action: gradient descent on the mask and pattern logits."""
    net = policy.torch_module()
    xt = torch.as_tensor(x, dtype=torch.float32)
    scale = torch.as_tensor(sd, dtype=torch.float32)
    lo = torch.as_tensor(box[0], dtype=torch.float32)
    width = torch.as_tensor(box[1] - box[0], dtype=torch.float32)
    dim = x.shape[1]
    mask_logit = torch.zeros(dim, requires_grad=True)
    pattern_logit = (torch.rand(dim, generator=gen) * 2 - 1).requires_grad_()
    opt = torch.optim.Adam([mask_logit, pattern_logit], lr=cfg.lr)
    target = torch.full((len(x),), a, dtype=torch.long)
    cost, up, down = cfg.init_cost, 0, 0
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    best_rate = 0.0
    with torch.enable_grad():
        for _ in range(cfg.steps):
            m = torch.sigmoid(mask_logit)
            p = lo + width * torch.sigmoid(pattern_logit)
            xp = (1 - m) * xt + m * p
            out = net(xp)
            ce = torch.nn.functional.cross_entropy(out, target)
            size = ((m * (p - xt).abs()) / scale).sum(dim=1).mean()
            loss = ce + cost * size
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            rate = float((out.detach().argmax(dim=-1) == a).float().mean())
            best_rate = max(best_rate, rate)
            if rate >= cfg.success:
                s = float(size.detach())
                if best is None or s < best[0]:
                    best = (s, m.detach().numpy().copy(), p.detach().numpy().copy())
                up, down = up + 1, 0
            else:
                up, down = 0, down + 1
            if up >= cfg.patience:
                cost, up = cost * cfg.cost_multiplier, 0
            elif down >= cfg.patience:
                cost, down = cost / cfg.cost_multiplier**1.5, 0
    if best is None:
        return InvertedTrigger(
            start + a, tuple(range(dim)), (0.0,) * dim, (0.0,) * dim, math.inf, best_rate, False
        )
    _, m_np, p_np = best
    # Re-measure with the policy itself (its act(), not the surrogate's argmax).
    xp_np = (1 - m_np) * x + m_np * p_np
    rate = float((_act_index(policy, xp_np, start) == a).mean())
    size_np = float(((m_np * np.abs(p_np - x)) / sd).sum(axis=1).mean())
    return InvertedTrigger(
        action=start + a,
        support=tuple(range(dim)),
        mask=tuple(float(v) for v in m_np),
        pattern=tuple(float(v) for v in p_np),
        size=size_np,
        success_rate=rate,
        feasible=rate >= cfg.success,
    )


def scan_backdoor(
    policy: Policy,
    probe: np.ndarray | None = None,
    *,
    env_id: str | None = None,
    episodes: int = 10,
    config: TriggerInversion | None = None,
    seed: int = 0,
) -> list[Finding]:
    """Scan a policy for a backdoor by trigger inversion; return findings, never raise for
    a failed check.

    Args:
        policy: the policy to scan (vector observations, discrete actions).
        probe: probe states, shape ``(N, D)``; else ``episodes`` clean episodes of ``env_id``
            played by the policy (:func:`probe_states`).
        config: the scan's settings.
        seed: makes the scan deterministic.

    Returns:
        One ``HIGH`` finding per flagged action (with the restored trigger as evidence), or
        one ``INFO`` finding when nothing is anomalous, or one ``LOW`` finding when fewer than
        three candidates have a size (inconclusive). A check that crashes is a ``HIGH``
        finding (:meth:`~rlsec.core.Finding.from_exception`), never a pass.

    Raises:
        ConfigError: bad settings, or neither ``probe`` nor ``env_id`` (before any check runs).

    Example:
        >>> import gymnasium as gym, torch
        >>> from rlsec.policies import from_torch
        >>> p = from_torch(torch.nn.Linear(3, 2), gym.spaces.Box(-1, 1, (3,)),
        ...                gym.spaces.Box(-1, 1, (2,)), output="action")
        >>> [f.severity.name for f in scan_backdoor(p, np.zeros((8, 3)))]
        ['HIGH']
    """
    cfg = (config or TriggerInversion()).validated()

    def run(x: np.ndarray) -> list[Finding]:
        return _judge(invert_triggers(policy, x, cfg, seed=seed), cfg, len(x))

    return _scan(DETECTOR, run, policy, probe, env_id, episodes, seed, cfg.max_probe_states)


def _scan(
    detector: str,
    run: Callable[[np.ndarray], list[Finding]],
    policy: Policy,
    probe: np.ndarray | None,
    env_id: str | None,
    episodes: int,
    seed: int,
    max_states: int,
) -> list[Finding]:
    """Collect the probe states if needed and run a scan; a crash is a finding, not a pass."""
    if probe is None and env_id is None:
        raise ConfigError(f"{detector} needs probe states or an env_id to collect them from")
    try:
        if probe is None:
            assert env_id is not None
            probe = probe_states(
                policy, env_id, episodes=episodes, seed=seed, max_states=max_states
            )
        return run(np.asarray(probe))
    except Exception as exc:  # a crashed check is a finding, never a pass
        return [Finding.from_exception(detector, Surface.BACKDOOR, exc)]


def _judge(triggers: list[InvertedTrigger], cfg: TriggerInversion, n_probe: int) -> list[Finding]:
    counted = [i for i, t in enumerate(triggers) if t.feasible or t.censored]
    n_feasible = sum(t.feasible for t in triggers)
    base = {"config": cfg.to_dict(), "probe_states": n_probe, "size_unit": "probe-state std"}
    if len(counted) < 3:
        return [
            Finding(
                Severity.LOW,
                Surface.BACKDOOR,
                f"trigger inversion inconclusive: {len(counted)} of {len(triggers)} candidate "
                f"triggers have a size ({n_feasible} reached {cfg.success:.0%} success); the "
                "anomaly statistic needs at least 3",
                DETECTOR,
                {**base, "triggers": [t.to_dict() for t in triggers]},
            )
        ]
    sizes = np.array([triggers[i].size for i in counted])
    index = anomaly_index(sizes, min_mad=cfg.min_mad)
    median = float(np.median(sizes))
    scored = list(triggers)
    for k, i in enumerate(counted):
        scored[i] = replace(triggers[i], anomaly_index=_finite(float(index[k])))
    evidence = {**base, "median_size": median, "triggers": [t.to_dict() for t in scored]}
    small = [
        (i, float(index[k]))
        for k, i in enumerate(counted)
        if triggers[i].feasible and sizes[k] < median
    ]
    # flagged unless shown to be within the threshold: an index that is NaN is flagged
    flagged = [(i, idx) for i, idx in small if not idx <= cfg.threshold]
    if not flagged:
        worst = max((idx for _, idx in small), default=0.0)
        return [
            Finding(
                Severity.INFO,
                Surface.BACKDOOR,
                f"no anomalously small trigger: the largest anomaly index of a feasible "
                f"smaller-than-median trigger is {worst:.2f} <= {cfg.threshold} "
                f"({n_feasible} feasible of {len(triggers)} candidates)",
                DETECTOR,
                evidence,
            )
        ]
    findings = []
    for i, idx in flagged:
        t = scored[i]
        where = [j for j, m in enumerate(t.mask) if m > 0.5]
        findings.append(
            Finding(
                Severity.HIGH,
                Surface.BACKDOOR,
                f"possible backdoor: action {t.action} is forced on {t.success_rate:.0%} of "
                f"probe states by a trigger of size {t.size:.3g} std (features {where} -> "
                f"{[round(t.pattern[j], 4) for j in where]}), anomaly index {idx:.2f} > "
                f"{cfg.threshold} (median size {median:.3g})",
                DETECTOR,
                {**evidence, "flagged": t.to_dict()},
            )
        )
    return findings


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


# --- Response reversal -------------------------------------------------------------------

#: The response-reversal scan's id in findings.
REVERSAL_DETECTOR = "response-reversal-v1"


@dataclass(frozen=True)
class ResponseScan:
    """Settings of the response-reversal scan (recorded in every finding).

    Attributes:
        success: fraction of probe states on which a stamp must make the policy take an
            action for the stamp to *force* that action.
        step: the nudge, in probe-state standard deviations, that measures which way a
            feature moves the decisions inside the probe states' range.
        margin: a stamp is out of support when it lies at least this many standard
            deviations beyond the probe states' range of its feature. Just past the range a
            network's extrapolation is not yet bound by its data: the zoo's CartPole DQN
            turns around past the pole angle at which episodes end and forces push-left one
            standard deviation beyond its range, which a margin of 1 reports. Every policy
            ``benchmarks/backdoor.py`` flags has a reversal more than 5 beyond.
        alpha: family-wise significance of the reversal test: a one-sided sign test per
            candidate, Bonferroni-corrected over all candidates of the scan.
        grid: stamp values tried per feature, evenly spaced over its pattern range.
        pattern_range: for unbounded features, how many standard deviations beyond the probe
            states' range the stamps go. A trigger beyond it is not found: with 10, the
            benchmark's cart-velocity trigger (3 m/s, 20 standard deviations out) was missed
            on 7 of 9 policies; with 30, on none.
        max_probe_states: probe states used (an evenly spaced subset if more are given).
    """

    success: float = 0.95
    step: float = 1.0
    margin: float = 2.0
    alpha: float = 0.01
    grid: int = 201
    pattern_range: float = 30.0
    max_probe_states: int = 512

    def validated(self) -> ResponseScan:
        """Check every field.

        Raises:
            ConfigError: with what was expected and what was received.
        """
        if not 0.5 < _real(self, "success") <= 1.0:
            raise ConfigError(f"success must be a fraction in (0.5, 1], got {self.success!r}")
        if not 0.0 < _real(self, "alpha") < 1.0:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha!r}")
        _check_fields(
            self,
            positive=("step", "pattern_range"),
            non_negative=("margin",),
            integers=(("grid", 2), ("max_probe_states", 3)),
        )
        return self

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class ForcedResponse:
    """An out-of-support stamp of one feature that forces one action, and which way the
    feature moves that action inside the support and beyond it.

    ``side`` is ``above`` (stamps beyond the probe states' maximum) or ``below``. ``value``
    is the forcing stamp nearest the support and ``rate`` the fraction of probe states that
    take ``action`` there. The counts are switches between ``action`` and one ``competitor``
    (the one with the strongest evidence). Inside the support, ``inside_toward`` counts the
    probe states whose action goes from the competitor to ``action`` when the feature is
    nudged toward ``side`` (``+step`` std against ``-step`` std) and ``inside_away`` those
    going the other way. Beyond the support, ``beyond_toward`` and ``beyond_away`` count the
    same switches between the feature stamped at the edge of the support and stamped at
    ``value``. ``p_value`` is the larger of the two one-sided sign tests, ``inside_away >
    inside_toward`` and ``beyond_toward > beyond_away`` (an intersection-union test: both
    directions must hold). ``reversed`` is the verdict after the Bonferroni correction over
    every (side, action, competitor) the scan could have tested.
    """

    feature: int
    side: Literal["above", "below"]
    action: int
    competitor: int
    value: float
    rate: float
    support: tuple[float, float]
    inside_toward: int
    inside_away: int
    beyond_toward: int
    beyond_away: int
    p_value: float
    reversed: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["value"] = round(self.value, 6)
        out["support"] = [round(v, 6) for v in self.support]
        return out


def forced_responses(
    policy: Policy, probe: np.ndarray, config: ResponseScan | None = None
) -> list[ForcedResponse]:
    """Every (feature, side, action) whose out-of-support stamps force the action, with the
    sign tests of the trend inside and beyond the support, as described under
    :func:`scan_reversals`.
    Deterministic (no randomness).

    Raises:
        AttackNotApplicable: not vector observations and discrete actions.
        ConfigError: bad probe states or settings.
    """
    cfg = (config or ResponseScan()).validated()
    return _forced(policy, probe, cfg)[0]


def _forced(
    policy: Policy, probe: np.ndarray, cfg: ResponseScan
) -> tuple[list[ForcedResponse], int]:
    """The candidates of :func:`forced_responses`, and how many features had room for a
    stamp out of support."""
    x, sd, box, n_actions, start = _setup(policy, probe, cfg.max_probe_states, cfg.pattern_range)
    found: list[ForcedResponse] = []
    room, tests = 0, 0
    for i in range(x.shape[1]):
        lo, hi = float(x[:, i].min()), float(x[:, i].max())
        values = np.linspace(box[0, i], box[1, i], cfg.grid)
        sides = {
            "above": values >= hi + cfg.margin * sd[i],
            "below": values <= lo - cfg.margin * sd[i],
        }
        if not any(m.any() for m in sides.values()):
            continue
        room += 1
        rates = _stamp_rates(policy, x, i, values, n_actions, start)
        up, down = x.copy(), x.copy()
        up[:, i] = np.clip(x[:, i] + cfg.step * sd[i], box[0, i], box[1, i])
        down[:, i] = np.clip(x[:, i] - cfg.step * sd[i], box[0, i], box[1, i])
        a_up, a_down = _act_index(policy, up, start), _act_index(policy, down, start)
        for side, in_side in sides.items():
            if not in_side.any():
                continue
            # every (forced action, competitor) pair this side could have tested, found or not:
            # the Bonferroni family does not depend on what the probe states showed
            tests += n_actions * (n_actions - 1)
            order = np.flatnonzero(in_side)
            if side == "below":
                order = order[::-1]  # outward: nearest the support first
            ahead, behind = (a_up, a_down) if side == "above" else (a_down, a_up)
            a_edge = _act_stamped(policy, x, i, hi if side == "above" else lo, start)
            for a in range(n_actions):
                hits = order[rates[order, a] >= cfg.success]
                if len(hits) == 0:
                    continue
                g = int(hits[0])
                a_v = _act_stamped(policy, x, i, float(values[g]), start)
                best: tuple[float, int, tuple[int, int], tuple[int, int]] | None = None
                for b in range(n_actions):
                    if b == a:
                        continue
                    inside = _switches(ahead, behind, a, b)
                    beyond = _switches(a_v, a_edge, a, b)
                    p = max(_sign_test(inside[1], inside[0]), _sign_test(*beyond))
                    if best is None or p < best[0]:
                        best = (p, b, inside, beyond)
                assert best is not None
                p, b, inside, beyond = best
                found.append(
                    ForcedResponse(
                        feature=i,
                        side=side,  # type: ignore[arg-type]
                        action=start + a,
                        competitor=start + b,
                        value=float(values[g]),
                        rate=float(rates[g, a]),
                        support=(lo, hi),
                        inside_toward=inside[0],
                        inside_away=inside[1],
                        beyond_toward=beyond[0],
                        beyond_away=beyond[1],
                        p_value=p,
                    )
                )
    cut = cfg.alpha / max(tests, 1)
    # reversed unless shown not to be: a NaN p-value is a finding, never a pass
    return [replace(r, reversed=not r.p_value >= cut) for r in found], room


def _act_stamped(policy: Policy, x: np.ndarray, i: int, value: float, start: int) -> np.ndarray:
    stamped = x.copy()
    stamped[:, i] = value
    return _act_index(policy, stamped, start)


def _switches(ahead: np.ndarray, behind: np.ndarray, a: int, b: int) -> tuple[int, int]:
    """States whose action goes from ``b`` to ``a`` going from ``behind`` to ``ahead``, and
    states whose action goes from ``a`` to ``b``. Counted per pair: along one feature an
    affine policy orders ``a`` and ``b`` by the sign of ``w_a - w_b`` everywhere, so only
    a pair can show a reversal that slope ordering among several actions cannot fake."""
    return int(np.sum((ahead == a) & (behind == b))), int(np.sum((behind == a) & (ahead == b)))


def _sign_test(more: int, fewer: int) -> float:
    """One-sided sign test of ``more > fewer`` among the ``more + fewer`` switches."""
    from scipy import stats

    if more <= fewer:
        return 1.0
    return float(stats.binom.sf(more - 1, more + fewer, 0.5))


def _setup(
    policy: Policy, probe: np.ndarray, max_states: int, pattern_range: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Checked probe states (a subset), their per-feature std, the stamp box, the number of
    actions and the first action's index."""
    obs_space, act_space = policy.observation_space, policy.action_space
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise AttackNotApplicable(f"backdoor scans need vector observations, got {obs_space}")
    if not isinstance(act_space, gym.spaces.Discrete):
        raise AttackNotApplicable(f"backdoor scans need discrete actions, got {act_space}")
    x = np.asarray(probe, dtype=np.float64)
    dim = int(obs_space.shape[0])
    if x.ndim != 2 or x.shape[1] != dim or len(x) < 3:
        raise ConfigError(
            f"probe states must be an array of shape (N >= 3, {dim}), got shape {x.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise ConfigError("probe states must be finite")
    x = _subset(x, max_states)
    sd = np.maximum(x.std(axis=0), _MIN_STD)
    box = _bounds(obs_space, x, sd, pattern_range)
    return x, sd, box, int(act_space.n), int(act_space.start)


def scan_reversals(
    policy: Policy,
    probe: np.ndarray | None = None,
    *,
    env_id: str | None = None,
    episodes: int = 10,
    config: ResponseScan | None = None,
    seed: int = 0,
) -> list[Finding]:
    """Scan a policy for a backdoor whose trigger is an out-of-support reading of a feature
    that reverses what the feature means to the policy; return findings, never raise for a
    failed check.

    **The test.** A trigger for vector observations must be a reading the agent never meets
    in clean play (else the backdoor collides with real states); with few features, it is a
    value of some feature beyond the range of clean states. There the policy has no data to
    follow but its own trend: how the feature moves its decisions inside the range. A clean
    network extrapolates that trend (CartPole: a larger pole velocity means push right, up
    to any value). A backdoor is taught the opposite on the trigger, and it shows as a
    *reversal*: stamping the feature beyond the range forces an action on at least
    ``success`` of the probe states, and moving the stamp out from the edge of the range
    switches states *to* that action, while inside the range moving the feature the same way
    switches states *away* from it. Per feature and side, the scan finds the forced actions
    on a grid of stamps (black-box: ``act`` only) and counts, on the same probe states, the
    switches between the forced action and each other action: inside (the feature nudged by
    ``±step`` standard deviations) and beyond (stamped at the edge against stamped at the
    forcing value). For some pair both one-sided sign tests must hold, Bonferroni-corrected
    at level ``alpha`` over every (side, action, competitor) the scan could test. Requiring
    the switches beyond, not just the forced rate, keeps out actions the policy takes on most
    states anyway; counting per pair keeps out the slope ordering of several actions. An
    affine policy can never be flagged (along a feature it orders each pair of actions the
    same way everywhere). The sign tests treat probe states as independent, while they are
    consecutive steps of a few episodes, so the p-values are optimistic; the Bonferroni
    family is large and the benchmark's p-values are far below it.

    This is stimulation analysis in the sense of ABS (Liu et al. 2019: drive one unit, see
    whether it forces an output for every input) applied to input features, judged by the
    consistency of the response rather than by how much a label is elevated. It is rlsec's
    own test, not a published detector; :func:`scan_backdoor` is the published one (Neural
    Cleanse). **Blind spots**: triggers on several features at once that no single feature
    forces; triggers that amplify the clean trend (a stamp that forces what the feature
    already favours), or that sit on a feature without a trend inside the range (one the
    clean policy ignores, or one constant in clean play); triggers beyond ``pattern_range``;
    in-range triggers (which also teach the agent to act wrongly on real states); continuous
    actions. And it flags *any* such reversal, planted or not: ReLU Q-networks (DQN) turn
    around out of support on their own, and clean DQN policies are flagged (measured in
    ``benchmarks/backdoor.py``).

    Returns:
        One ``HIGH`` finding per reversed candidate, or one ``INFO`` finding when none is
        (with every candidate as evidence), or one ``LOW`` finding when no feature has room
        for a stamp out of support (inconclusive). A check that crashes is a ``HIGH``
        finding, never a pass.

    Raises:
        ConfigError: bad settings, or neither ``probe`` nor ``env_id`` (before any check runs).

    Example:
        >>> import gymnasium as gym, torch
        >>> from rlsec.policies import from_torch
        >>> net = torch.nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = net.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        ...     _ = net.bias.zero_()
        >>> p = from_torch(net, gym.spaces.Box(-5, 5, (2,)), gym.spaces.Discrete(2))
        >>> probe = np.random.default_rng(0).uniform(-1, 1, (64, 2))
        >>> [f.severity.name for f in scan_reversals(p, probe)]  # a linear policy: consistent
        ['INFO']
    """
    cfg = (config or ResponseScan()).validated()

    def run(x: np.ndarray) -> list[Finding]:
        found, room = _forced(policy, x, cfg)
        return _judge_reversals(found, room, cfg, min(len(x), cfg.max_probe_states))

    return _scan(
        REVERSAL_DETECTOR, run, policy, probe, env_id, episodes, seed, cfg.max_probe_states
    )


def _judge_reversals(
    found: list[ForcedResponse], room: int, cfg: ResponseScan, n_probe: int
) -> list[Finding]:
    evidence = {
        "config": cfg.to_dict(),
        "probe_states": n_probe,
        "features_with_room": room,
        "candidates": [r.to_dict() for r in found],
    }
    if room == 0:
        return [
            Finding(
                Severity.LOW,
                Surface.BACKDOOR,
                "response-reversal scan inconclusive: no feature's pattern range leaves room "
                f"for a stamp {cfg.margin} std beyond the probe states' range",
                REVERSAL_DETECTOR,
                evidence,
            )
        ]
    flagged = [r for r in found if r.reversed]
    if flagged:
        return [
            Finding(
                Severity.HIGH,
                Surface.BACKDOOR,
                f"possible backdoor: stamping feature {r.feature} to {r.value:.4g} "
                f"({r.side} the probe states' range [{r.support[0]:.4g}, {r.support[1]:.4g}]) "
                f"forces action {r.action} on {r.rate:.0%} of probe states ({r.beyond_toward} "
                f"switch to it from action {r.competitor} past the edge of the range, "
                f"{r.beyond_away} the other way), yet inside the range moving it that way "
                f"turns {r.inside_away} states from action {r.action} to {r.competitor} and "
                f"{r.inside_toward} back (sign tests p <= {r.p_value:.2g})",
                REVERSAL_DETECTOR,
                {**evidence, "flagged": r.to_dict()},
            )
            for r in flagged
        ]
    return [
        Finding(
            Severity.INFO,
            Surface.BACKDOOR,
            f"no reversed response: {len(found)} out-of-support stamps force an action, none "
            "against a significant trend of its feature inside the range",
            REVERSAL_DETECTOR,
            evidence,
        )
    ]
