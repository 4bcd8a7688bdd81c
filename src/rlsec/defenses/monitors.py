"""Integrity monitors for the training loop: they watch what the learner is fed and how it
changes, and report :class:`~rlsec.core.Finding` s.

Checks (each yields one score per window of ``window`` environment steps, drift one per
drift check; a score above its calibrated threshold is a finding):

* ``reward-outlier`` (reward surface): the largest |z-score| of a reward in the window, from
  O(1) running moments of the rewards seen so far (Welford).
* ``transition-jump`` (data surface): the largest per-feature change ``|s' - s|`` in the
  window, in units of the running mean change of that feature: physically impossible jumps
  stand out.
* ``update-kl``, ``update-clip-fraction`` (parameters surface): PPO's approximate KL and clip
  fraction of each update (SB3's own log), and ``update-grad-norm``, the gradient norm of every
  optimiser step before clipping. KL and gradient norm are scored relative to the run itself:
  the z-score of the value's logarithm against exponentially weighted moments of the run's
  earlier values (:class:`LogZ`), because their scale differs from seed to seed by more than an
  attack moves them. The window's score is the largest over its updates.
* ``drift-reference`` (parameters surface): the fraction of fixed probe states on which the
  policy's action differs from a fixed reference policy's (slow drift accumulates here, where a
  comparison with the previous snapshot alone would miss it), and ``drift-step``, the same
  against the previous check's snapshot. With ``rollback=True`` a drift finding restores the
  last snapshot that passed.

Hard checks need no calibration and always report: non-finite or out-of-space observations,
non-finite rewards, replay-buffer accounting (more transitions entered the buffer than the
environment produced: something wrote into it directly), ``buffer-integrity`` (every row the
learner stores must be the transition the environment produced, and is sealed with a keyed
BLAKE2b digest; each row the learner samples is checked against its seal before it trains on
it, so a genuine row overwritten in place is found before it is used), and
``weight-integrity``: the
weights an optimiser trains must be exactly as its last step left them when its next step
begins (a copy is kept after each step; a change in between came from outside the optimiser).

Thresholds come from clean runs (:func:`calibrate`), and the *run*, not the window, is the
unit the calibration treats as exchangeable: windows of one run are correlated and share
the run's seed, so windows are not exchangeable across runs while runs are (pooling every
window into one conformal quantile missed its stated rate six times over on held-out
seeds). Per check, each calibration run gives the smallest threshold that keeps its own
windows' false-alarm rate at or under ``fpr``; the shipped threshold is the conformal
``coverage`` quantile of those per-run thresholds (the ``ceil((m + 1) · coverage)``-th
smallest of ``m``). So a new clean run, exchangeable with the calibration runs (same recipe
and length), alarms on at most a fraction ``fpr`` of its windows of that check with
probability at least ``coverage``: a guarantee per check, not for all checks at once. With
too few runs for the coverage the threshold is the largest per-run one and the coverage it
supports, ``m / (m + 1)``, is recorded per check
(``Thresholds.coverages``). A check that crashes is reported as a high-severity finding,
never as a pass.

Non-finite numbers never pass silently. Calibration drops NaN scores (a clean run's NaN
says nothing about where its threshold lies) and keeps ``+inf``. In detection, a score of
``+inf`` alarms against any finite threshold, and a NaN score (a check that could not
measure: a NaN KL or clip fraction in the learner's log, say) is a HIGH finding of that
check, never compared. Non-finite values are not folded into the running moments
the scores are measured against (one NaN or infinity there would switch a check off for the
rest of the run): a non-finite reward or observation is a hard finding instead, and a
non-finite KL or gradient norm scores ``+inf``. Hard checks accept only what they show to
be valid (``low <= x <= high``, never "not below low and not above high"), so NaN fails them.

Example:
    >>> runs = [{"update-kl": [0.1, 0.2, 0.3, 0.9]}, {"update-kl": [0.2, 0.4, 0.5, 0.6]},
    ...         {"update-kl": [0.4, 0.4, 0.4, 0.4]}]
    >>> t = calibrate(runs, fpr=0.25, coverage=0.5)  # run thresholds 0.3, 0.5 and 0.4
    >>> t.values["update-kl"], t.coverages["update-kl"]  # the 2nd of 3: ceil(4 * 0.5) = 2
    (0.4, 0.5)
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlsec.core import Finding, Severity, Surface
from rlsec.errors import ConfigError, IntegrityViolation
from rlsec.stats import RunningMoments

__all__ = [
    "CHECKS",
    "SCORING",
    "IntegrityMonitor",
    "LogZ",
    "Thresholds",
    "calibrate",
]

#: check name -> the surface it guards
CHECKS: dict[str, Surface] = {
    "reward-outlier": Surface.REWARD,
    "transition-jump": Surface.DATA,
    "update-kl": Surface.PARAMETERS,
    "update-clip-fraction": Surface.PARAMETERS,
    "update-grad-norm": Surface.PARAMETERS,
    "drift-reference": Surface.PARAMETERS,
    "drift-step": Surface.PARAMETERS,
}

#: How scores and thresholds are computed (3: thresholds calibrated over runs; 4: jumps
#: scored after ``jump_warmup`` transitions; 5: gradient norms after ``grad_warmup_windows``).
#: Thresholds calibrated under another version do not apply.
SCORING = 5


@dataclass
class Thresholds:
    """Per-check thresholds and how they were obtained.

    ``fpr`` is the per-window false-alarm rate a clean run keeps, with probability
    ``coverage`` (the target); ``coverages[check]`` is the probability the calibration
    supports for that check: ``coverage`` when there were enough runs, else ``m / (m + 1)``
    for ``m`` runs (``runs[check]``). ``samples[check]`` counts the clean windows.
    """

    values: dict[str, float]
    fpr: float
    coverage: float = 0.9
    samples: dict[str, int] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)
    coverages: dict[str, float] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.values.items() if not (-math.inf < float(v) <= math.inf)}
        if bad:  # a NaN threshold would never alarm: the check would be off, silently
            raise ConfigError(f"thresholds must be numbers or +inf, got {bad}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "scoring": SCORING,
            "values": self.values,
            "fpr": self.fpr,
            "coverage": self.coverage,
            "coverages": self.coverages,
            "samples": self.samples,
            "runs": self.runs,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Thresholds:
        scoring = d.get("scoring") if isinstance(d, Mapping) else None
        if scoring != SCORING:
            raise ConfigError(
                f"thresholds calibrated for scoring version {scoring!r}; this rlsec scores "
                f"version {SCORING}: recalibrate them (scripts/calibrate_monitors.py)"
            )

        def table(key: str, kind: type, required: bool = False) -> dict[str, Any]:
            if required and key not in d:
                raise ConfigError(f"thresholds need {key!r}")
            try:
                return {str(k): kind(v) for k, v in dict(d.get(key, {})).items()}
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"thresholds: bad {key!r} ({exc})") from None

        values = table("values", float, required=True)
        coverages = table("coverages", float)
        samples, runs = table("samples", int), table("runs", int)
        try:
            fpr, coverage = float(d["fpr"]), float(d["coverage"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"thresholds need a number for 'fpr' and 'coverage': {exc}") from None
        for name, v in (("fpr", fpr), ("coverage", coverage)):
            if not 0.0 < v < 1.0:
                raise ConfigError(f"thresholds: {name} must be in (0, 1), got {v!r}")
        off = {k: v for k, v in coverages.items() if not 0.0 < v <= 1.0}
        if off:
            raise ConfigError(f"thresholds: coverages must be in (0, 1], got {off}")
        named = set(values) | set(coverages) | set(samples) | set(runs)
        unknown = sorted(named - set(CHECKS))
        if unknown:
            raise ConfigError(f"unknown checks {unknown}; expected some of {sorted(CHECKS)}")
        return cls(values, fpr, coverage, samples, runs, coverages, str(d.get("source", "")))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write strict JSON (an infinite threshold as the string ``"inf"``)."""
        d = self.to_dict()
        d["values"] = {k: (v if math.isfinite(v) else str(v)) for k, v in self.values.items()}
        Path(path).write_text(json.dumps(d, indent=2, sort_keys=True, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Thresholds:
        from rlsec._files import read_regular

        try:
            return cls.from_dict(
                json.loads(read_regular(path, max_bytes=16 * 2**20, what="thresholds file"))
            )
        except (OSError, ConfigError, json.JSONDecodeError, RecursionError) as exc:
            raise ConfigError(f"cannot read thresholds from {path}: {exc}") from None


def _rank(n: int, level: float) -> int:
    """``ceil(n · level)``; the small slack keeps an exact integer from rounding up."""
    return math.ceil(n * level - 1e-9)


def calibrate(
    runs: Sequence[Mapping[str, Sequence[float]]],
    fpr: float,
    *,
    coverage: float = 0.9,
    source: str = "",
) -> Thresholds:
    """Per check, the threshold that keeps a new clean run's window false-alarm rate at or
    under ``fpr`` with probability ``coverage``, from clean calibration runs (one mapping of
    check -> window scores per run), as the module docstring describes.

    Run ``j``'s own threshold is its ``k_j = ceil(n_j (1 - fpr))``-th smallest score (at most
    ``n_j · fpr`` of its windows exceed it); the threshold is the ``K = ceil((m + 1) ·
    coverage)``-th smallest of the ``m`` run thresholds (split conformal prediction over runs).
    When ``K > m`` it is the largest, and the coverage it supports, ``m / (m + 1)``, is
    recorded. The guarantee is per check: a run may exceed the rate on some check more often.
    NaN scores are dropped (a NaN never alarms); ``+inf`` is kept (it alarms against any
    finite threshold, so a threshold may have to be ``inf``). A run with no score for a check
    does not count for it.

    Raises:
        ConfigError: ``fpr`` or ``coverage`` outside (0, 1), or ``runs`` not a non-empty
            sequence of mappings.
    """
    if not 0.0 < fpr < 1.0:
        raise ConfigError(f"fpr must be in (0, 1), got {fpr}")
    if not 0.0 < coverage < 1.0:
        raise ConfigError(f"coverage must be in (0, 1), got {coverage}")
    if isinstance(runs, Mapping):
        raise ConfigError(
            "calibrate needs one mapping of check -> window scores per clean run, got one mapping"
        )
    runs = list(runs)
    if not runs or not all(isinstance(r, Mapping) for r in runs):
        raise ConfigError(
            "calibrate needs a non-empty sequence of mappings of check -> window scores (one "
            f"per clean run), got {len(runs)} items of types "
            f"{sorted({type(r).__name__ for r in runs})}"
        )
    per_run: dict[str, list[float]] = {}
    samples: dict[str, int] = {}
    for run in runs:
        for name, xs in run.items():
            arr = np.sort(np.asarray([x for x in xs if not math.isnan(x)], dtype=float))
            if arr.size == 0:
                continue
            n = int(arr.size)
            per_run.setdefault(name, []).append(float(arr[_rank(n, 1.0 - fpr) - 1]))
            samples[name] = samples.get(name, 0) + n
    values, counts, coverages = {}, {}, {}
    for name, qs in per_run.items():
        m = len(qs)
        k = _rank(m + 1, coverage)
        values[name] = sorted(qs)[min(k, m) - 1]
        counts[name] = m
        coverages[name] = coverage if k <= m else m / (m + 1)
    return Thresholds(values, fpr, coverage, samples, counts, coverages, source)


class LogZ:
    """One-sided z-score of ``log(x)`` against exponentially weighted moments of the values
    seen before it, in O(1) memory. ``None`` until ``warmup`` values have been seen.

    The first values are averaged equally (weight ``1/n``); from then on older values fade with
    the given half-life (in values), so the score follows slow, legitimate trends of training
    and stands out on sudden jumps.

    Example:
        >>> z = LogZ(halflife=100, warmup=3)
        >>> [z(v) for v in (1.0, 1.1, 0.9)]
        [None, None, None]
        >>> z(1.0) < 1.0 < 5.0 < z(100.0)
        True
    """

    def __init__(self, halflife: float, warmup: int) -> None:
        self.alpha = 1.0 - 0.5 ** (1.0 / halflife)
        self.warmup = int(warmup)
        self.n = 0
        self.mean = 0.0
        self.var = 0.0

    def __call__(self, x: float) -> float | None:
        """The score of ``x``; ``+inf`` for a value that is not finite (NaN or infinite),
        which is not folded into the moments (it would switch the score off for good)."""
        x = float(x)
        if not math.isfinite(x):
            return math.inf
        lx = math.log(max(x, 1e-12))
        z = None
        if self.n >= self.warmup:
            sd = math.sqrt(self.var)
            z = (lx - self.mean) / sd if sd > 0 else (0.0 if lx <= self.mean else math.inf)
        a = max(self.alpha, 1.0 / (self.n + 1))
        d = lx - self.mean
        self.mean += a * d
        self.var = (1.0 - a) * (self.var + a * d * d)
        self.n += 1
        return z


def _base_callback() -> type:
    from stable_baselines3.common.callbacks import BaseCallback

    return BaseCallback


class IntegrityMonitor(_base_callback()):  # type: ignore[misc]
    """An SB3 callback running the integrity checks on a learner.

    Args:
        thresholds: per-check thresholds; ``None`` records scores only (calibration mode).
        window: environment steps (summed over envs) per reward/transition window.
        probe: observations on which drift is measured (default: the first window's).
        reference: a policy (``act``) whose actions on the probe are the fixed reference
            (default: the learner's own actions when monitoring starts).
        drift_every: environment steps between drift checks.
        rollback: on a drift or update finding, restore the last snapshot that passed.
        findings_path: append each finding there as a JSON line.
        warmup: reward steps before their z-scores count (the moments settle first).
        jump_warmup: transitions before jumps count. The scale of a jump is the running mean
            change of each feature, which early in training rests on few transitions and on a
            policy that is still changing fast: with 256, the largest clean scores of the PPO
            recipe fell in its first four windows, and on held-out seeds those windows raised
            most of the false alarms (4 of 8 runs over the rate, against 1 of 8 with 4096).
        update_warmup: optimiser steps (gradient norm) or updates (KL) before those count.
        grad_warmup_windows: windows with optimiser steps whose gradient-norm score is not
            counted (the z-scores go on learning from them). The first updates move the
            gradient norm fastest: every largest clean score of the PPO recipe's calibration
            runs fell in its first such window, and on held-out seeds two of them raised the
            only false alarms of this check there. A non-finite gradient norm always counts.
        probe_size: observations collected from the first steps as the drift probe.
        halt: stop training at the first finding of this severity or worse (hard checks
            and crashed checks are HIGH; calibrated checks MEDIUM); ``None`` never stops.
    """

    def __init__(
        self,
        thresholds: Thresholds | None = None,
        *,
        window: int = 1024,
        probe: np.ndarray | None = None,
        reference: Any = None,
        drift_every: int = 2048,
        rollback: bool = False,
        findings_path: str | os.PathLike[str] | None = None,
        warmup: int = 256,
        jump_warmup: int = 4096,
        update_warmup: int = 20,
        grad_warmup_windows: int = 2,
        probe_size: int = 256,
        halt: Severity | None = Severity.HIGH,
    ) -> None:
        super().__init__()
        if window < 1 or drift_every < 1 or min(warmup, jump_warmup, grad_warmup_windows) < 0:
            raise ConfigError(
                "window and drift_every must be >= 1, warmup, jump_warmup and "
                f"grad_warmup_windows >= 0; got {window}, {drift_every}, {warmup}, "
                f"{jump_warmup}, {grad_warmup_windows}"
            )
        self.thresholds = thresholds
        self.window, self.drift_every, self.warmup = int(window), int(drift_every), int(warmup)
        self.jump_warmup = int(jump_warmup)
        self._grad_windows_left = int(grad_warmup_windows)
        self.rollback, self.reference = rollback, reference
        self.findings_path = Path(findings_path) if findings_path is not None else None
        self.findings: list[Finding] = []
        self.scores: dict[str, list[float]] = {name: [] for name in CHECKS}
        self.first_alarm: dict[str, int] = {}
        self._probe = probe
        self._reward = RunningMoments(1)
        self._jump: RunningMoments | None = None
        self._win_steps = 0
        self._win_reward = 0.0
        self._win_jump = 0.0
        self._env_steps = 0
        self._first_checked = False
        self._buffer_pos: int | None = None
        self._pending_rows = 0
        self._buf: Any = None
        self._seals: np.ndarray | None = None  # (buffer_size, 16) BLAKE2b digest per row
        self._sealed: np.ndarray | None = None
        self._key = secrets.token_bytes(32)
        self._expected: dict[str, np.ndarray] | None = None
        self._probe_rows: list[np.ndarray] = []
        self.probe_size = int(probe_size)
        self._ref_actions: np.ndarray | None = None
        self._last_actions: np.ndarray | None = None
        self._good: dict[str, torch.Tensor] | None = None
        self._good_step = 0
        self._next_drift = 0
        self._grad_sq = 0.0
        self.grad_norms = 0
        self._grad_z = LogZ(halflife=500, warmup=update_warmup)
        self._kl_z = LogZ(halflife=50, warmup=update_warmup)
        self._pending: dict[str, float] = {}
        self._hooks: list[Any] = []
        self._optimizers: list[Any] = []
        self._weights: dict[int, list[torch.Tensor]] = {}
        self.rollbacks = 0
        self.halt = halt
        self.halted = False

    # -- plumbing -------------------------------------------------------------------------
    def _guard(self, name: str, surface: Surface, fn: Callable[[], None]) -> None:
        """Run one check; a crash is a high-severity finding, never a pass."""
        try:
            fn()
        except Exception as exc:  # fail closed: report it
            self._emit(Finding.from_exception(name, surface, exc))

    def _emit(self, finding: Finding) -> None:
        self.findings.append(finding)
        if self.halt is not None and finding.severity >= self.halt:
            self.halted = True
        self.first_alarm.setdefault(finding.detector, self.num_timesteps)
        if self.findings_path is not None:
            row = {"timesteps": int(self.num_timesteps), **finding.to_dict()}
            with self.findings_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row, sort_keys=True, default=str) + "\n")

    def _score(self, name: str, value: float, **evidence: Any) -> bool:
        """Record a score; in detection mode compare it with its threshold. True if alarmed."""
        value = float(value)
        self.scores[name].append(value)
        if self.thresholds is None:
            return False  # calibration mode records scores only (calibrate drops NaN)
        limit = self.thresholds.values.get(name)
        if limit is None:
            return False
        if math.isnan(value):  # never compared: NaN > limit is false
            self._hard(
                name,
                CHECKS[name],
                f"{name}: the score is NaN, so the check could not tell whether this window "
                "is clean",
                score=None,
                threshold=limit,
            )
            return True
        if value <= limit:
            return False
        self._emit(
            Finding(
                Severity.MEDIUM,
                CHECKS[name],
                f"{name}: score {value:.4g} above its threshold {limit:.4g} "
                f"(calibrated so that a clean run alarms on at most {self.thresholds.fpr:g} of "
                f"its windows of this check with probability at least "
                f"{self.thresholds.coverages.get(name, self.thresholds.coverage):.3g})",
                name,
                {
                    "score": float(value),
                    "threshold": limit,
                    "timesteps": int(self.num_timesteps),
                    **evidence,
                },
            )
        )
        return True

    def _hard(self, name: str, surface: Surface, message: str, **evidence: Any) -> None:
        self._emit(
            Finding(
                Severity.HIGH,
                surface,
                message,
                name,
                {"timesteps": int(self.num_timesteps), **evidence},
            )
        )

    # -- SB3 hooks ------------------------------------------------------------------------
    def _on_training_start(self) -> None:
        model = self.model
        optimizers = [
            getattr(getattr(model, "policy", None), "optimizer", None),
            getattr(getattr(model, "actor", None), "optimizer", None),
            getattr(getattr(model, "critic", None), "optimizer", None),  # SAC, TD3
        ]
        for opt in {id(o): o for o in optimizers if o is not None}.values():
            for group in opt.param_groups:
                for p in group["params"]:
                    self._hooks.append(p.register_post_accumulate_grad_hook(self._accumulate))
            self._hooks.append(opt.register_step_pre_hook(self._before_step))
            self._hooks.append(opt.register_step_post_hook(self._after_step))
            self._optimizers.append(opt)
        self._snapshot_weights()
        self._next_drift = self.num_timesteps + self.drift_every

    def _on_training_end(self) -> None:
        self._flush_updates()
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if self._seals is not None:
            self._guard("buffer-integrity", Surface.DATA, self.verify_buffer)
            self._buf.__dict__.pop("_get_samples", None)  # its own method (stays picklable)

    def _accumulate(self, p: torch.Tensor) -> None:
        if p.grad is not None:
            self._grad_sq += float(p.grad.detach().pow(2).sum())

    def _snapshot_weights(self) -> None:
        for opt in self._optimizers:
            self._after_step(opt, (), {})

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._weights[id(optimizer)] = [
            p.detach().clone() for g in optimizer.param_groups for p in g["params"]
        ]

    def _check_weights(self, optimizer: Any) -> None:
        kept = self._weights.get(id(optimizer))
        if kept is None:
            return
        now = [p for g in optimizer.param_groups for p in g["params"]]
        changed = sum(not torch.equal(p.detach(), k) for p, k in zip(now, kept, strict=True))
        if changed:
            self._hard(
                "weight-integrity",
                Surface.PARAMETERS,
                f"{changed} of {len(now)} weight tensors changed between two optimiser steps, "
                "outside the optimiser",
                tensors=int(changed),
            )
            self._weights[id(optimizer)] = [p.detach().clone() for p in now]  # report once

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._guard("weight-integrity", Surface.PARAMETERS, lambda: self._check_weights(optimizer))
        norm = math.sqrt(self._grad_sq)
        self._grad_sq = 0.0
        self.grad_norms += 1
        self._pend("update-grad-norm", self._grad_z(norm))  # +inf if the norm is not finite

    def _pend(self, name: str, value: float | None) -> None:
        """Fold an update's score into its window's maximum (scored at the window's end)."""
        if value is None:
            return
        held = self._pending.get(name)
        # max() would drop a NaN (it compares false); a NaN is kept and reported when scored
        if held is None or math.isnan(value) or value > held:
            self._pending[name] = float(value)

    def _flush_updates(self) -> None:
        grad = self._pending.get("update-grad-norm")
        if grad is not None and self._grad_windows_left > 0:
            self._grad_windows_left -= 1
            if math.isfinite(grad):  # still warming up; a non-finite norm always counts
                del self._pending["update-grad-norm"]
        alarmed = [name for name, v in sorted(self._pending.items()) if self._score(name, v)]
        self._pending = {}
        if alarmed and self.rollback:
            self._restore(", ".join(alarmed))

    def _on_step(self) -> bool:
        self._guard("transition-validation", Surface.DATA, self._check_transitions)
        self._guard("buffer-accounting", Surface.DATA, self._check_buffer)
        if self.num_timesteps >= self._next_drift:
            self._next_drift += self.drift_every
            self._guard("drift", Surface.PARAMETERS, self._check_drift)
        return not self.halted

    def _on_rollout_end(self) -> None:
        self._guard("update-watchdog", Surface.PARAMETERS, self._check_update_log)
        self._guard("buffer-accounting", Surface.DATA, lambda: self._check_buffer(after_step=False))

    # -- the checks -----------------------------------------------------------------------
    def _check_transitions(self) -> None:
        loc = self.locals
        new_obs = np.asarray(loc["new_obs"], dtype=np.float64)
        rewards = np.asarray(loc["rewards"], dtype=np.float64).reshape(-1)
        dones = np.asarray(loc["dones"]).reshape(-1)
        prev = np.asarray(self.model._last_obs, dtype=np.float64)
        n = len(rewards)
        self._env_steps += n
        finite_reward = np.isfinite(rewards)
        if not finite_reward.all():
            self._hard("reward-validation", Surface.REWARD, "non-finite reward from the env")
        space = self.model.observation_space
        nxt = new_obs.copy()
        for i, info in enumerate(loc.get("infos", [])):
            if dones[i] and isinstance(info, dict) and "terminal_observation" in info:
                nxt[i] = np.asarray(info["terminal_observation"], dtype=np.float64)
        # every observation the learner will see, once: the next observations, the reset
        # observations that start the done environments' new episodes (they reach the
        # learner as the next step's previous observations), and the run's first ones
        seen = [nxt.reshape(n, -1), new_obs.reshape(n, -1)[dones.astype(bool)]]
        if not self._first_checked:
            seen.append(prev.reshape(n, -1))
            self._first_checked = True
        rows = np.concatenate(seen)
        if not np.all(np.isfinite(rows)):
            self._hard("transition-validation", Surface.DATA, "non-finite observation")
            return
        if isinstance(space, gym.spaces.Box):
            flat = nxt.reshape(n, -1)
            low, high = space.low.reshape(-1), space.high.reshape(-1)
            if not np.all((rows >= low) & (rows <= high)):
                self._hard(
                    "transition-validation",
                    Surface.DATA,
                    "observation outside the observation space",
                    low=float(np.min(rows - low)),
                    high=float(np.max(rows - high)),
                )
            delta = np.abs(flat - prev.reshape(n, -1))
            # scored against the moments before this step, then folded in (O(1) memory)
            jump = self._jump
            if jump is None:
                jump = self._jump = RunningMoments(delta.shape[1])
            if jump.n >= self.jump_warmup:
                scale = np.where(jump.mean > 0, jump.mean, np.inf)
                self._win_jump = max(self._win_jump, float((delta / scale).max()))
            jump.update(delta)
        m = self._reward
        ok = rewards[finite_reward]  # a non-finite reward is a hard finding, not a moment
        if m.n >= self.warmup and ok.size:
            mean, std = float(m.mean[0]), float(m.std[0])
            dev = np.abs(ok - mean)
            z = dev / std if std > 0 else np.where(dev == 0, 0.0, np.inf)
            self._win_reward = max(self._win_reward, float(z.max()))
        m.update(ok[:, None])
        self._win_steps += n
        if self._probe is None:
            self._probe_rows.append(prev.astype(np.float32))
            if sum(len(r) for r in self._probe_rows) >= self.probe_size:
                self._probe = np.concatenate(self._probe_rows)[: self.probe_size]
                self._probe_rows = []
        if self._win_steps >= self.window:
            if self._reward.n > self.warmup:
                self._score("reward-outlier", self._win_reward)
            if self._jump is not None and self._jump.n > self.jump_warmup:
                self._score("transition-jump", self._win_jump)
            self._win_steps, self._win_reward, self._win_jump = 0, 0.0, 0.0
            self._flush_updates()

    def _check_buffer(self, *, after_step: bool = True) -> None:
        """SB3 stores one row per vector step, right after this callback's ``on_step``: the
        buffer's write position must advance by exactly the rows stored since the last check
        (one after an ``on_step``, none after a rollout's end). Checked at every step and again
        at the end of every rollout, before the learner trains on the buffer. The row the
        learner stored must hold the transition this monitor saw at that step; every new row
        is then sealed (:meth:`_verified_samples` checks the seals of what the learner
        samples)."""
        buf = getattr(self.model, "replay_buffer", None)
        if buf is None:
            return
        if buf is not self._buf:
            self._buf, self._seals = buf, None
            self._bind(buf)  # a buffer it cannot guard is reported once; accounting goes on
        sealing = self._seals is not None
        pos, size = int(buf.pos), int(buf.buffer_size)
        if self._buffer_pos is not None:
            added = (pos - self._buffer_pos) % size
            if added != self._pending_rows:
                extra = (added - self._pending_rows) * int(getattr(buf, "n_envs", 1))
                self._hard(
                    "buffer-accounting",
                    Surface.DATA,
                    f"the replay buffer's write position moved by {added} rows where the "
                    f"environment produced {self._pending_rows}: about {extra} transitions "
                    "entered it without coming from the environment",
                    rows=added,
                )
            if sealing:
                rows = (self._buffer_pos + np.arange(added)) % size
                if added and self._expected is not None:
                    self._check_stored(buf, rows, self._expected)
                self._seal(buf, rows)
        self._buffer_pos = pos
        self._pending_rows = 1 if after_step else 0
        self._expected = self._transition(buf) if after_step and sealing else None

    def _bind(self, buf: Any) -> None:
        """Start guarding ``buf``: seal the rows it already holds (taken as they are now) and
        route the learner's sampling through :meth:`_verified_samples`."""
        from stable_baselines3.common.buffers import ReplayBuffer

        if type(buf) is not ReplayBuffer or buf.optimize_memory_usage:
            raise ConfigError(
                "buffer-integrity guards a plain ReplayBuffer with next observations stored "
                f"apart (optimize_memory_usage=False); got {type(buf).__name__} "
                f"(optimize_memory_usage={getattr(buf, 'optimize_memory_usage', None)})"
            )
        if getattr(self.model, "_vec_normalize_env", None) is not None:
            raise ConfigError(
                "buffer-integrity compares stored rows with the environment's transitions; "
                "with VecNormalize the learner stores de-normalised copies it cannot check"
            )
        size = int(buf.buffer_size)
        self._seals = np.zeros((size, 16), dtype=np.uint8)
        self._sealed = np.zeros(size, dtype=bool)
        self._seal(buf, np.arange(size if buf.full else int(buf.pos)))
        buf._get_samples = functools.partial(self._verified_samples, buf._get_samples)  # type: ignore[method-assign]
        self._buffer_pos, self._expected = None, None

    def _digests(self, buf: Any, rows: np.ndarray) -> np.ndarray:
        """The keyed BLAKE2b digest (16 bytes) of each of ``rows``, over all their fields."""
        k = len(rows)
        data = np.concatenate(
            [
                np.ascontiguousarray(getattr(buf, name)[rows]).reshape(k, -1).view(np.uint8)
                for name in _ROW_FIELDS
            ],
            axis=1,
        )
        out = np.empty((k, 16), dtype=np.uint8)
        for i in range(k):
            out[i] = np.frombuffer(
                hashlib.blake2b(data[i], key=self._key, digest_size=16).digest(), np.uint8
            )
        return out

    def _seal(self, buf: Any, rows: np.ndarray) -> None:
        assert self._seals is not None
        assert self._sealed is not None
        if len(rows):
            self._seals[rows] = self._digests(buf, rows)
            self._sealed[rows] = True

    def _transition(self, buf: Any) -> dict[str, np.ndarray]:
        """The row SB3 is about to store for this step (``_store_transition``), as the
        buffer's arrays will hold it."""
        loc = self.locals
        n = int(buf.n_envs)
        nxt = np.array(loc["new_obs"])
        dones = np.asarray(loc["dones"]).reshape(n)
        infos = loc.get("infos", [{}] * n)
        for i, info in enumerate(infos):
            if dones[i] and "terminal_observation" in info:
                nxt[i] = info["terminal_observation"]
        row = {
            "observations": self.model._last_obs,  # what SB3 stores without VecNormalize
            "next_observations": nxt,
            "actions": np.asarray(loc["buffer_actions"]).reshape(n, buf.action_dim),
            "rewards": loc["rewards"],
            "dones": dones,
            "timeouts": [
                buf.handle_timeout_termination and info.get("TimeLimit.truncated", False)
                for info in infos
            ],
        }
        return {
            k: np.asarray(v).astype(getattr(buf, k).dtype).reshape(getattr(buf, k)[0].shape)
            for k, v in row.items()
        }

    def _check_stored(self, buf: Any, rows: np.ndarray, expected: dict[str, np.ndarray]) -> None:
        """One of ``rows`` (those written since the last check: SB3's, and any a callback
        added before or after it, which accounting reports) must hold ``expected``."""
        same = np.ones(len(rows), dtype=bool)
        for k in _ROW_FIELDS:
            got = getattr(buf, k)[rows].reshape(len(rows), -1)
            same &= np.all(got == expected[k].reshape(1, -1), axis=1)
        if not same.any():
            last = int(rows[-1])
            differ = [
                k for k in _ROW_FIELDS if not np.array_equal(getattr(buf, k)[last], expected[k])
            ]
            self._hard(
                "buffer-integrity",
                Surface.DATA,
                f"replay-buffer row {last} does not hold the transition the environment "
                f"produced ({', '.join(differ)} differ): it was changed before the learner "
                "could use it",
                row=last,
                fields=differ,
            )

    def _verified_samples(
        self, get_samples: Callable[..., Any], batch_inds: Any, env: Any = None
    ) -> Any:
        """The learner's ``ReplayBuffer._get_samples``, after checking the seal of every
        sampled row. A broken seal is a HIGH finding; if that (or any earlier finding) stops
        training, :class:`~rlsec.errors.IntegrityViolation` is raised instead of returning
        the batch, so the learner never trains on it."""
        self._guard("buffer-integrity", Surface.DATA, lambda: self._verify_rows(batch_inds))
        if self.halted:
            raise IntegrityViolation(
                f"training stopped at step {self.num_timesteps} before a gradient step on "
                f"replay-buffer rows: {self.findings[-1].message}"
            )
        return get_samples(batch_inds, env=env)

    def verify_buffer(self) -> None:
        """Check the seal of every row the replay buffer holds (run at the end of each
        ``learn``; the learner's samples are checked as it draws them)."""
        buf = self._buf
        if buf is None:
            return  # no replay buffer seen (an on-policy learner): nothing to verify
        if self._seals is None:  # a buffer it could not guard: refuse, never pass
            self._hard(
                "buffer-integrity",
                Surface.DATA,
                "the replay buffer's rows cannot be verified: it was never sealed (a buffer "
                "this monitor cannot guard)",
            )
            return
        self._verify_rows(np.arange(int(buf.buffer_size) if buf.full else int(buf.pos)))

    def _verify_rows(self, rows: Any) -> None:
        buf, seals, sealed = self._buf, self._seals, self._sealed
        assert seals is not None
        assert sealed is not None
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        bad = ~sealed[rows] | np.any(self._digests(buf, rows) != seals[rows], axis=1)
        broken = [int(r) for r in rows[bad]]
        if broken:
            self._hard(
                "buffer-integrity",
                Surface.DATA,
                f"{len(broken)} replay-buffer rows changed after they were stored "
                f"(rows {broken[:8]}{' ...' if len(broken) > 8 else ''})",
                rows=broken,
            )
            self._seal(buf, rows[bad])  # reported once; sealed as they are now

    def _check_update_log(self) -> None:
        values = getattr(self.model.logger, "name_to_value", {})
        if "train/approx_kl" in values:
            self._pend("update-kl", self._kl_z(float(values["train/approx_kl"])))
        if "train/clip_fraction" in values:
            self._pend("update-clip-fraction", float(values["train/clip_fraction"]))

    def _actions(self) -> np.ndarray:
        assert self._probe is not None
        acts, _ = self.model.predict(self._probe, deterministic=True)
        return np.asarray(acts)

    def _check_drift(self) -> None:
        if self._probe is None:
            return
        now = self._actions()
        if self._ref_actions is None:
            ref = self.reference
            self._ref_actions = np.asarray(ref.act(self._probe)) if ref is not None else now
        alarmed = self._score("drift-reference", _disagreement(now, self._ref_actions))
        if self._last_actions is not None:
            alarmed |= self._score("drift-step", _disagreement(now, self._last_actions))
        self._last_actions = now
        if alarmed and self.rollback:
            self._restore("drift")
        else:
            self._good = {k: v.detach().clone() for k, v in self.model.policy.state_dict().items()}
            self._good_step = int(self.num_timesteps)

    def _restore(self, why: str) -> None:
        if self._good is None:
            return
        for opt in self._optimizers:  # report a change from outside before overwriting it
            self._guard(
                "weight-integrity", Surface.PARAMETERS, functools.partial(self._check_weights, opt)
            )
        self.model.policy.load_state_dict(self._good)
        self._snapshot_weights()  # the monitor's own change of the weights
        self.rollbacks += 1
        self._emit(
            Finding(
                Severity.INFO,
                Surface.PARAMETERS,
                f"rolled back to the snapshot of step {self._good_step} after {why}",
                "rollback",
                {"to_step": self._good_step, "timesteps": int(self.num_timesteps)},
            )
        )


#: the arrays of an SB3 ReplayBuffer row that a seal covers
_ROW_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def _disagreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of probe states whose action differs (continuous: by more than 5% of the
    action's spread on the probe, per dimension)."""
    a2, b2 = a.reshape(len(a), -1).astype(float), b.reshape(len(b), -1).astype(float)
    if np.issubdtype(a.dtype, np.integer):
        return float(np.mean(np.any(a2 != b2, axis=1)))
    spread = np.maximum(np.ptp(b2, axis=0), 1e-8)
    # a state counts as agreeing only where it is shown to (NaN actions disagree)
    return float(np.mean(~np.all(np.abs(a2 - b2) <= 0.05 * spread, axis=1)))
