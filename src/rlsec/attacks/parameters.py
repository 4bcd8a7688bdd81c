"""Attacks on the parameters surface: the adversary rewrites a trained policy's stored weights.

The threat: someone with write access to the weights at rest (a model store, a shared disk,
a deployment bucket, a faulty memory) changes them before the policy is loaded, either the
deployed artifact (phase ``deployment``) or a checkpoint between training runs (phase
``training``). The attacks here measure how much damage a given budget buys:

* :class:`NoiseParameters` (``noise-params-v1``): a random perturbation of every weight tensor
  inside its own ε-ball, the baseline.
* :class:`GradientParameters` (``pgd-params-v1``): projected gradient ascent on the weights,
  inside the same balls, maximising the action divergence on probe observations.
* :class:`BitFlipParameters` (``bitflip-params-v1``): exactly ``k`` flipped bits of the
  stored float32 weights, at random or chosen by a progressive bit search (Rakin et al. 2019;
  the search is :mod:`rlsec.attacks._bit_search`).

Budgets. The ball attacks bound each tensor ``t`` separately: ``|δ_i| <= ε·s_t`` (``linf``) or
``‖δ / s_t‖_2 <= ε`` (``l2``), where ``s_t`` is the standard deviation of the clean tensor's
entries (unit ``std``) or 1 (unit ``raw``). A tensor whose entries are all equal (a bias left
at zero) has ``s_t = 0`` and cannot move in ``std`` units. The bit-flip budget is ``ε = k``
(norm ``l0``, unit ``raw``): the Hamming distance between the clean and the tampered float32
bit patterns is exactly ``k``. By default only the actor's tensors (``policy.*``, those that
decide actions) are touched; ``tensors="all"`` spreads random draws over the critic's too.

Every attack returns a new :class:`~rlsec.policies.TorchPolicy` and leaves the original
untouched. :meth:`ParameterAttack.tamper` validates, calls the method's pure core
(``_tamper``), projects the result into the budget, rebuilds the policy and then checks the
rebuilt policy's weights against the clean ones, raising
:class:`~rlsec.errors.BudgetViolation` if any tensor left its ball or the bit count is not
exactly ``k``. :func:`probe_observations` collects the states gradient attacks optimise on;
:func:`tamper_directory` writes a tampered copy of a native policy directory. The damage
evaluation (clean against tampered returns) is :mod:`rlsec.evaluate.parameters`.

Example:
    >>> import gymnasium as gym, numpy as np, torch
    >>> from rlsec.policies import from_torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    >>> policy = from_torch(net, gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2))
    >>> attack = make_parameter_attack("bitflip-params-v1", 3, mode="random")
    >>> tampered = attack.tamper(policy, rng=np.random.default_rng(0))
    >>> len(attack.flips), tampered is policy, tampered.info.sha256 != policy.info.sha256
    (3, False, True)
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import numpy as np
import torch

from rlsec.attacks._bit_search import apply_flips, bit_search, random_flips
from rlsec.attacks._weights import ACTOR, BITS, Progress, Weights, WorkingCopy, float_bits
from rlsec.core import Attack, Policy, Surface, ThreatModel
from rlsec.errors import (
    AttackNotApplicable,
    BudgetViolation,
    ConfigError,
    InvalidBudget,
    PolicyLoadError,
    UnknownAttack,
)
from rlsec.policies.base import PolicyInfo, TorchPolicy

__all__ = [
    "DEFAULT_PARAMETER_BITS",
    "DEFAULT_PARAMETER_EPSILONS",
    "PARAMETER_ATTACKS",
    "BitFlipParameters",
    "GradientParameters",
    "NoiseParameters",
    "ParameterAttack",
    "default_parameter_attacks",
    "make_parameter_attack",
    "probe_observations",
    "tamper_directory",
]

#: MITRE ATLAS AML.T0018.000, Manipulate AI Model: Poison AI Model ("manipulate an AI model's
#: weights to change its behavior or performance").
_POISON_MODEL = "AML.T0018.000"
_SCOPES = ("actor", "all")


# -- probe observations -----------------------------------------------------------------------
def probe_observations(
    policy: Policy,
    env_id: str | None = None,
    *,
    n: int = 256,
    seed: int = 0,
    num_envs: int = 8,
    stride: int = 4,
) -> np.ndarray:
    """Observations the clean ``policy`` visits: the probe set of gradient attacks.

    Plays ``num_envs`` parallel episodes (reset with ``seed``), keeps the observation of every
    ``stride``-th step of each row (never a terminal observation the policy does not act on)
    until it holds ``2·n``, then draws ``n`` of them without replacement with ``seed``.

    Raises:
        ConfigError: no ``env_id`` and the policy does not record one; ``n < 1``.
        UnknownEnv, SpaceMismatch: the environment does not exist or does not fit.
    """
    from rlsec.envs import check_policy_env, make_vec

    env = env_id or getattr(getattr(policy, "info", None), "env_id", None)
    if not env:
        raise ConfigError("collecting probe observations needs env_id (the policy records none)")
    if int(n) < 1 or int(num_envs) < 1 or int(stride) < 1:
        raise ConfigError(
            f"n, num_envs and stride must be >= 1, got n={n}, num_envs={num_envs}, stride={stride}"
        )
    check_policy_env(policy, env)
    want = 2 * int(n)
    venv = make_vec(env, int(num_envs))
    kept: list[np.ndarray] = []
    held = 0
    try:
        obs, _ = venv.reset(seed=int(seed))
        fresh = np.ones(int(num_envs), dtype=bool)  # False: obs is a terminal observation
        step = 0
        while held < want and step < 100_000:
            if step % int(stride) == 0 and fresh.any():
                kept.append(np.asarray(obs)[fresh].copy())
                held += int(fresh.sum())
            obs, _, term, trunc, _ = venv.step(policy.act(obs))
            fresh = ~(np.asarray(term) | np.asarray(trunc))
            step += 1
    finally:
        venv.close()
    pool = np.concatenate(kept)
    pick = np.sort(
        np.random.default_rng(int(seed)).choice(len(pool), min(int(n), len(pool)), False)
    )
    return np.ascontiguousarray(pool[pick])


# -- the attacks ------------------------------------------------------------------------------
class ParameterAttack(Attack):
    """Base of parameter attacks. Subclasses implement the pure core :meth:`_tamper`.

    Args:
        threat_model: surface ``parameters``; phase ``deployment`` (the deployed artifact is
            tampered at rest) or ``training`` (a checkpoint is, between training runs).
        tensors: ``actor`` (the tensors that decide actions) or ``all`` (critic heads too).
        probe_size: probe observations to collect when :meth:`tamper` is given none (only
            attacks that optimise on a probe use it).
    """

    surface: ClassVar[Surface] = Surface.PARAMETERS
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2")
    atlas: ClassVar[tuple[str, ...]] = (_POISON_MODEL,)
    units: ClassVar[tuple[str, ...]] = ("std", "raw")

    def __init__(
        self, threat_model: ThreatModel, *, tensors: str = "actor", probe_size: int = 256
    ) -> None:
        super().__init__(threat_model)
        if threat_model.unit not in self.units:
            raise ConfigError(
                f"{self.id} measures ε in {list(self.units)}, got unit {threat_model.unit!r}"
            )
        if tensors not in _SCOPES:
            raise ConfigError(f"tensors must be one of {list(_SCOPES)}, got {tensors!r}")
        if isinstance(probe_size, bool) or int(probe_size) < 1:
            raise ConfigError(f"probe_size must be >= 1, got {probe_size!r}")
        self.tensors = tensors
        self.probe_size = int(probe_size)
        #: The tampered policy of the last :meth:`start`.
        self.tampered: TorchPolicy | None = None

    @classmethod
    def knowledge_for(cls, **params: Any) -> Literal["white-box", "black-box"]:
        """The adversary knowledge this attack needs with these parameters."""
        return cls.knowledge

    @property
    def needs_probe(self) -> bool:
        """Whether :meth:`tamper` optimises on probe observations."""
        return False

    @property
    def label(self) -> str:
        """A short name for tables: the id, and the variant where there are several."""
        return self.id

    def params(self) -> dict[str, Any]:
        return {"tensors": self.tensors, "budget_unit": self._budget_unit()}

    def _evidence(self) -> dict[str, Any]:
        """What the tampered policy's provenance records beyond :meth:`describe`."""
        return {}

    def _budget_unit(self) -> str:
        tm = self.threat_model
        per = "standard deviation of its clean entries" if tm.unit == "std" else "raw units"
        return f"{tm.norm} ball per weight tensor, in the tensor's {per}"

    # -- lifecycle -------------------------------------------------------------------------
    def check_applicable(self, policy: Policy) -> None:
        if not isinstance(policy, TorchPolicy) or policy.network is None:
            raise AttackNotApplicable(
                f"{self.id} rewrites stored weights and needs a policy with a declarative "
                "network (a native or zoo policy, or from_torch on an nn.Sequential MLP); got "
                f"{policy!r}"
            )
        odd = [n for n, p in policy.network.named_parameters() if p.dtype != torch.float32]
        if odd:
            raise AttackNotApplicable(
                f"{self.id} tampers with float32 weights, as rlsec stores them; tensors {odd} "
                "are not float32"
            )

    def start(
        self,
        policy: Policy,
        *,
        num_envs: int,
        rng: np.random.Generator,
        scale: np.ndarray | None = None,
        horizon: int | None = None,
        env_id: str | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        """Tamper with ``policy`` once; :attr:`tampered` holds the result.

        The weights are tampered at rest, before any episode: ``num_envs``, ``scale`` and
        ``horizon`` are not used. ``env_id`` is where probe observations are collected for
        attacks that need them; ``progress`` reports the optimisation.
        """
        self.tampered = self.tamper(policy, rng=rng, env_id=env_id, progress=progress)

    # -- the shell around the pure core ---------------------------------------------------
    def tamper(
        self,
        policy: Policy,
        *,
        rng: np.random.Generator,
        probe: np.ndarray | None = None,
        env_id: str | None = None,
        progress: Progress | None = None,
    ) -> TorchPolicy:
        """A new policy with tampered weights; ``policy`` is left untouched.

        Args:
            policy: a :class:`~rlsec.policies.TorchPolicy` with a declarative network.
            rng: every random choice; the result is a function of the policy, the probe and
                the generator's state.
            probe: ``(B, *obs_shape)`` observations to optimise on (gradient attacks); when
                omitted they are collected with :func:`probe_observations` in ``env_id`` (or
                the policy's recorded environment), seeded from ``rng``.
            env_id: the environment to collect probe observations in.
            progress: called with the fraction done during optimisation.

        Raises:
            AttackNotApplicable: the policy has no declarative network.
            InvalidBudget: the budget cannot be spent on this policy (more bits than it has).
            BudgetViolation: the tampered weights left the budget (an attack bug; never silent).
        """
        self.check_applicable(policy)
        pol = cast(TorchPolicy, policy)
        assert pol.network is not None
        clean = {n: p.detach().clone() for n, p in pol.network.named_parameters()}
        chosen = {n: t for n, t in clean.items() if self.tensors == "all" or n.startswith(ACTOR)}
        self._prepare(chosen)
        x = self._probe(pol, probe, env_id, rng) if self.needs_probe else None
        candidate = self._tamper(pol, chosen, x, rng, progress)
        final = self._project(chosen, candidate)
        tampered = _rebuild(pol, final, self)
        assert tampered.network is not None
        after = {n: p.detach() for n, p in tampered.network.named_parameters()}
        self._check(clean, after, set(chosen))
        return tampered

    def _probe(
        self,
        policy: TorchPolicy,
        probe: np.ndarray | None,
        env_id: str | None,
        rng: np.random.Generator,
    ) -> torch.Tensor:
        if probe is None:
            env = env_id or policy.info.env_id
            if not env:
                raise ConfigError(
                    f"{self.id} optimises on probe observations: pass probe=, or env_id= to "
                    "collect them (the policy records no environment)"
                )
            seed = int(rng.integers(0, 2**31 - 1))
            probe = probe_observations(policy, env, n=self.probe_size, seed=seed)
        x = policy.as_batch(probe)
        if x.shape[0] == 0:
            raise ConfigError(f"{self.id} needs at least one probe observation, got none")
        return torch.from_numpy(x)

    def _prepare(self, chosen: Weights) -> None:
        """Hook: per-policy set-up (budget scales); raise :class:`InvalidBudget` if the budget
        cannot be spent on these tensors."""

    def _tamper(
        self,
        policy: TorchPolicy,
        weights: Weights,
        probe: torch.Tensor | None,
        rng: np.random.Generator,
        progress: Progress | None,
    ) -> Weights:
        """Pure core: candidate values for the chosen tensors (float32, same shapes)."""
        raise NotImplementedError

    def _project(self, clean: Weights, candidate: Weights) -> Weights:
        """Hook: bring the candidate back into the budget (identity by default)."""
        return candidate

    def _check(self, clean: Weights, after: Weights, chosen: set[str]) -> None:
        """Raise :class:`BudgetViolation` unless ``after`` is within budget of ``clean``."""
        if set(after) != set(clean):
            raise BudgetViolation(
                f"tampered weights hold tensors {sorted(after)}, expected {sorted(clean)}"
            )
        for name, t in after.items():
            if tuple(t.shape) != tuple(clean[name].shape) or t.dtype != torch.float32:
                raise BudgetViolation(
                    f"tensor {name!r} changed shape or dtype: expected "
                    f"{tuple(clean[name].shape)} float32, got {tuple(t.shape)} {t.dtype}"
                )
            if (
                name not in chosen
                and not float_bits(t).tobytes() == float_bits(clean[name]).tobytes()
            ):
                raise BudgetViolation(f"tensor {name!r} is outside the attack's scope but changed")


def _rebuild(policy: TorchPolicy, values: Weights, attack: ParameterAttack) -> TorchPolicy:
    """A new policy: ``policy``'s network (deep-copied) with ``values`` written into it."""
    assert policy.network is not None
    net = copy.deepcopy(policy.network)
    params = dict(net.named_parameters())
    with torch.no_grad():
        for name, v in values.items():
            params[name].copy_(v)
    out = TorchPolicy.from_network(policy.observation_space, policy.action_space, net)
    tm = attack.threat_model
    parent = policy.info
    out.info = PolicyInfo(
        source=f"{parent.source} [tampered: {attack.label}, ε={tm.epsilon:g} {tm.norm}]",
        sha256=out.info.sha256,  # the digest of the tampered weights
        format="torch",
        env_id=parent.env_id,
        algo=parent.algo,
        clean_return=None,  # measured on the clean weights; no longer this policy's
        observation_stats=parent.observation_stats,
        provenance={
            "tampered": {
                "parent_source": parent.source,
                "parent_sha256": parent.sha256,
                "attack": attack.describe(),
                **attack._evidence(),
            },
            "parent_provenance": parent.provenance,
        },
    )
    return out


class _BallAttack(ParameterAttack):
    """Shared shell of attacks bounded by a per-tensor ε-ball: scales, projection, check."""

    def __init__(self, threat_model: ThreatModel, **kwargs: Any) -> None:
        super().__init__(threat_model, **kwargs)
        self.scales: dict[str, float] = {}

    @property
    def label(self) -> str:
        return self.id if self.threat_model.norm == "linf" else f"{self.id} (l2)"

    def _evidence(self) -> dict[str, Any]:
        return {"scales": dict(self.scales)}

    def _scale_of(self, clean: Weights) -> dict[str, float]:
        if self.threat_model.unit == "raw":
            return {n: 1.0 for n in clean}
        return {
            n: float(t.double().std(unbiased=False)) if t.numel() else 0.0 for n, t in clean.items()
        }

    def _prepare(self, chosen: Weights) -> None:
        self.scales = self._scale_of(chosen)

    def _project(self, clean: Weights, candidate: Weights) -> Weights:
        eps, norm = self.threat_model.epsilon, self.threat_model.norm
        out: Weights = {}
        for name, w0t in clean.items():
            w0 = w0t.numpy().astype(np.float32)
            w = w0.astype(np.float64)
            s = self.scales[name]
            cand = candidate[name].detach().numpy().astype(np.float64)
            if norm == "linf":
                r = eps * s
                d = np.clip(cand - w, -r, r)  # NaN stays NaN: the check catches a broken core
            else:
                u = (cand - w) / s if s > 0 else np.zeros_like(w)
                n = float(np.linalg.norm(u))
                d = u * (min(1.0, eps / n) * s) if n > 0 else u * s
            x = (w + d).astype(np.float32)
            # Rounding to float32 can move an entry further than asked (past the linf radius,
            # or growing the l2 norm): pull such entries one ulp toward the clean value, which
            # is float32 and on the near side, so every entry ends within what was asked.
            for _ in range(3):
                over = np.abs(x.astype(np.float64) - w) > np.abs(d)
                if not over.any():
                    break
                x = np.where(over, np.nextafter(x, w0), x)
            out[name] = torch.from_numpy(np.ascontiguousarray(x))
        return out

    def _check(self, clean: Weights, after: Weights, chosen: set[str]) -> None:
        super()._check(clean, after, chosen)
        eps, norm = self.threat_model.epsilon, self.threat_model.norm
        for name in chosen:
            w = clean[name].numpy().astype(np.float64)
            d = after[name].numpy().astype(np.float64) - w
            s = self.scales[name]
            if not np.isfinite(d).all():
                raise BudgetViolation(f"tampered tensor {name!r} is not finite")
            if norm == "linf":
                worst = float(np.abs(d).max()) if d.size else 0.0
                ok = worst <= eps * s
            else:
                if s == 0.0:
                    worst, ok = float(np.abs(d).max()) if d.size else 0.0, not d.any()
                else:
                    worst = float(np.linalg.norm(d / s))
                    ok = worst <= eps * (1 + 1e-9)  # the float64 norm's own rounding
            if not ok:
                raise BudgetViolation(
                    f"tensor {name!r} moved by {norm} {worst:.9g}, beyond its budget "
                    f"ε·s = {eps:.9g}·{s:.9g}"
                )

    def _random_start(self, w: torch.Tensor, r: float, rng: np.random.Generator) -> np.ndarray:
        """A uniform random point of one tensor's ball (radius ``r`` in raw units)."""
        shape = tuple(w.shape)
        if self.threat_model.norm == "linf":
            u: np.ndarray = rng.uniform(-1.0, 1.0, size=shape) * r
            return u
        g: np.ndarray = rng.standard_normal(size=shape)
        g /= max(float(np.linalg.norm(g)), 1e-12)
        radius = r * float(rng.uniform()) ** (1.0 / max(w.numel(), 1))
        out: np.ndarray = g * radius
        return out


class NoiseParameters(_BallAttack):
    """Every chosen weight tensor moves to a point drawn uniformly from its ε-ball.

    The baseline the adversarial attacks must beat, and a model of undirected corruption.
    """

    id = "noise-params-v1"
    knowledge = "black-box"
    reference = "uniform random weight perturbation baseline"

    def params(self) -> dict[str, Any]:
        return {**super().params(), "distribution": "uniform in each tensor's ball"}

    def _tamper(
        self,
        policy: TorchPolicy,
        weights: Weights,
        probe: torch.Tensor | None,
        rng: np.random.Generator,
        progress: Progress | None,
    ) -> Weights:
        eps = self.threat_model.epsilon
        return {
            n: torch.from_numpy(
                (
                    w.numpy().astype(np.float64) + self._random_start(w, eps * self.scales[n], rng)
                ).astype(np.float32)
            )
            for n, w in weights.items()
        }


class GradientParameters(_BallAttack):
    """Projected gradient ascent on the weights inside each tensor's ε-ball.

    Maximises the mean action divergence over the probe observations (see
    :func:`rlsec.attacks._optim.action_divergence`: cross-entropy to the clean action for
    discrete actions, squared distance in units of the action range for continuous ones),
    moving every actor tensor by signed-gradient steps (``linf``) or normalised gradient steps
    (``l2``) of ``step_size``·ε·s per step, from a random point of the ball (needed for
    continuous actions, whose divergence has zero gradient at the clean weights). The best
    iterate is kept. The critic's weights do not move actions, so they are left alone.

    Args:
        steps: gradient steps.
        step_size: step in units of ε·s (default ``2.5 / steps``, Madry et al. 2018).
        random_start: start from a uniform random point of the ball.
        objective: ``ce`` or ``kl`` (the same for continuous actions).
    """

    id = "pgd-params-v1"
    reference = (
        "projected gradient ascent (Madry et al. 2018) on the weights, bounded per tensor; "
        "adversarial weight perturbation as in Wu et al. 2020"
    )

    def __init__(
        self,
        threat_model: ThreatModel,
        *,
        steps: int = 20,
        step_size: float | None = None,
        random_start: bool = True,
        objective: str = "ce",
        tensors: str = "actor",
        probe_size: int = 256,
    ) -> None:
        super().__init__(threat_model, tensors=tensors, probe_size=probe_size)
        if isinstance(steps, bool) or int(steps) < 1:
            raise ConfigError(f"steps must be >= 1, got {steps!r}")
        if step_size is not None and not step_size > 0:
            raise ConfigError(f"step_size must be > 0, got {step_size!r}")
        if objective not in ("ce", "kl"):
            raise ConfigError(f"objective must be 'ce' or 'kl', got {objective!r}")
        self.steps = int(steps)
        self.step_size = step_size
        self.random_start = bool(random_start)
        self.objective = objective

    @property
    def needs_probe(self) -> bool:
        return True

    def _step(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 / self.steps

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "steps": self.steps,
            "step_size": self._step(),
            "step_size_unit": "ε·s (s: the tensor's scale)",
            "random_start": self.random_start,
            "objective": self.objective,
            "probe_size": self.probe_size,
        }

    def _tamper(
        self,
        policy: TorchPolicy,
        weights: Weights,
        probe: torch.Tensor | None,
        rng: np.random.Generator,
        progress: Progress | None,
    ) -> Weights:
        assert probe is not None
        eps, linf = self.threat_model.epsilon, self.threat_model.norm == "linf"
        work = WorkingCopy(policy)
        names = [n for n in weights if n.startswith(ACTOR)]
        w0 = {n: weights[n].double() for n in names}
        r = {n: eps * self.scales[n] for n in names}
        with torch.no_grad():
            objective = work.divergence(work.forward(probe), self.objective)
        delta = {
            n: torch.from_numpy(self._random_start(weights[n], r[n], rng))
            if self.random_start
            else torch.zeros_like(w0[n])
            for n in names
        }
        params = [work.params[n] for n in names]
        best_value, best = -math.inf, {n: d.clone() for n, d in delta.items()}
        with torch.enable_grad():  # callers may be inside torch.no_grad()
            for i in range(self.steps + 1):
                work.set({n: (w0[n] + delta[n]).float() for n in names})
                for p in params:
                    p.requires_grad_(True)
                value = objective(work.forward(probe))[0].mean()
                v = float(value.detach())
                if v > best_value:  # NaN never replaces the best
                    best_value, best = v, {n: d.clone() for n, d in delta.items()}
                if i == self.steps:
                    break
                grads = torch.autograd.grad(value, params)
                for n, g in zip(names, grads, strict=True):
                    g = torch.nan_to_num(g.double(), nan=0.0)
                    stride = self._step() * r[n]
                    if linf:
                        delta[n] = (delta[n] + stride * torch.sign(g)).clamp(-r[n], r[n])
                    elif r[n] > 0:
                        gn = float(g.norm())
                        step = delta[n] + stride * g / gn if gn > 0 else delta[n]
                        sn = float(step.norm())
                        delta[n] = step * min(1.0, r[n] / sn) if sn > 0 else step
                if progress is not None:
                    progress((i + 1) / self.steps)
        for p in params:
            p.requires_grad_(False)
        out = dict(weights)
        out.update({n: (w0[n] + best[n]).float() for n in names})
        return out


class BitFlipParameters(ParameterAttack):
    """Flip exactly ``k`` bits of the stored float32 weights (budget ε = k, norm ``l0``).

    ``mode="random"`` flips ``k`` distinct bits drawn uniformly from every bit of the chosen
    tensors (sign, exponent and mantissa alike). ``mode="targeted"`` is a progressive bit
    search in the spirit of Rakin et al. 2019 (Bit-Flip Attack), adapted to float32: in each
    of ``k`` rounds it ranks the actor's weights by the gradient of the probe loss, tries every
    not-yet-flipped bit of the ``candidates`` top-ranked weights, and keeps the single flip that
    raises the loss most. The loss is the probe mean of ``d / (1 + d)`` with ``d`` the action
    divergence (cross-entropy to the clean action, or squared distance in units of the action
    range), and 1 for a row whose output is no longer finite: bounded, so the search spreads
    damage over many states rather than inflating one. Where the loss has no gradient (at the
    clean weights of a continuous policy) weights are ranked by the gradient of the outputs.

    Bits are numbered from 0 (the mantissa's least significant bit) to 31 (the sign); 23-30
    are the exponent. :attr:`flips` lists the flipped bits of the last :meth:`tamper`.

    Args:
        mode: ``random`` or ``targeted``.
        candidates: weights whose bits the targeted search tries in each round.
    """

    id = "bitflip-params-v1"
    norms = ("l0",)
    units = ("raw",)
    reference = (
        "Rakin et al. 2019, Bit-Flip Attack: Crushing Neural Network with Progressive Bit "
        "Search; Hong et al. 2019, Terminal Brain Damage (float32 exponent bits)"
    )

    def __init__(
        self,
        threat_model: ThreatModel,
        *,
        mode: str = "targeted",
        candidates: int = 8,
        tensors: str = "actor",
        probe_size: int = 256,
    ) -> None:
        super().__init__(threat_model, tensors=tensors, probe_size=probe_size)
        k = threat_model.epsilon
        if not float(k).is_integer():
            raise InvalidBudget(f"a bit-flip budget is a whole number of bits k >= 0, got {k!r}")
        if mode not in ("random", "targeted"):
            raise ConfigError(f"mode must be 'random' or 'targeted', got {mode!r}")
        if mode == "targeted" and threat_model.knowledge != "white-box":
            raise ConfigError(
                "the targeted bit search ranks weights by gradients: it needs a white-box "
                f"threat model, got knowledge={threat_model.knowledge!r}"
            )
        if isinstance(candidates, bool) or int(candidates) < 1:
            raise ConfigError(f"candidates must be >= 1, got {candidates!r}")
        self.k = int(k)
        self.mode = mode
        self.candidates = int(candidates)
        #: ``(tensor, flat index, bit)`` of every bit flipped by the last :meth:`tamper`.
        self.flips: list[tuple[str, int, int]] = []

    @classmethod
    def knowledge_for(cls, **params: Any) -> Literal["white-box", "black-box"]:
        return "black-box" if params.get("mode") == "random" else "white-box"

    @property
    def needs_probe(self) -> bool:
        return self.mode == "targeted" and self.k > 0

    @property
    def label(self) -> str:
        return f"{self.id} ({self.mode})"

    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {
            **super().params(),
            "mode": self.mode,
            "bit_order": "0 = mantissa LSB, 23-30 = exponent, 31 = sign (float32)",
        }
        if self.mode == "targeted":
            p.update(candidates=self.candidates, probe_size=self.probe_size, objective="ce")
        return p

    def _budget_unit(self) -> str:
        return "bits flipped in the stored float32 weights (Hamming distance, exactly k)"

    def _evidence(self) -> dict[str, Any]:
        return {"flips": [list(f) for f in self.flips]}

    def _prepare(self, chosen: Weights) -> None:
        total = BITS * sum(t.numel() for t in chosen.values())
        if self.k > total:
            raise InvalidBudget(
                f"{self.id} cannot flip k={self.k} distinct bits: the chosen tensors hold "
                f"{total} bits"
            )
        if self.mode == "targeted" and self.k > 0:
            actor_bits = BITS * sum(t.numel() for n, t in chosen.items() if n.startswith(ACTOR))
            if self.k > actor_bits:
                raise InvalidBudget(
                    f"the targeted search flips actor bits only; k={self.k} exceeds the "
                    f"actor's {actor_bits} bits"
                )

    def _tamper(
        self,
        policy: TorchPolicy,
        weights: Weights,
        probe: torch.Tensor | None,
        rng: np.random.Generator,
        progress: Progress | None,
    ) -> Weights:
        self.flips = []
        if self.k == 0:
            return dict(weights)
        if self.mode == "random":
            self.flips = random_flips(weights, self.k, rng)
        else:
            assert probe is not None
            self.flips = bit_search(policy, weights, probe, self.k, self.candidates, progress)
        return apply_flips(weights, self.flips)

    def _check(self, clean: Weights, after: Weights, chosen: set[str]) -> None:
        super()._check(clean, after, chosen)
        flipped = sum(
            int(np.bitwise_count(float_bits(after[n]) ^ float_bits(clean[n])).sum()) for n in chosen
        )
        if flipped != self.k:
            raise BudgetViolation(
                f"expected exactly k={self.k} flipped bits in the stored weights, got {flipped}"
            )


# -- registry --------------------------------------------------------------------------------
PARAMETER_ATTACKS: dict[str, type[ParameterAttack]] = {
    cls.id: cls for cls in (NoiseParameters, GradientParameters, BitFlipParameters)
}


def make_parameter_attack(
    attack_id: str,
    epsilon: float,
    *,
    unit: str | None = None,
    norm: str | None = None,
    phase: str = "deployment",
    **params: Any,
) -> ParameterAttack:
    """Build a parameter attack with an explicit threat model.

    Args:
        attack_id: ``noise-params-v1``, ``pgd-params-v1`` or ``bitflip-params-v1``.
        epsilon: the per-tensor radius (ball attacks, in ``unit``), or the number of bits k.
        unit: ``std`` (default for ball attacks) or ``raw`` (the only unit of bit flips).
        norm: defaults to the attack's first norm (``linf``; ``l0`` for bit flips).
        phase: ``deployment`` (the deployed artifact) or ``training`` (a checkpoint).
        params: the method's own parameters (``steps``, ``mode``, ``tensors``...).

    Raises:
        UnknownAttack: with the closest known id.
        InvalidBudget, ConfigError: a budget or setting out of its domain.

    Example:
        >>> make_parameter_attack("bitflip-params-v1", 2.5)
        Traceback (most recent call last):
        ...
        rlsec.errors.InvalidBudget: a bit-flip budget is a whole number of bits k >= 0, got 2.5
    """
    try:
        cls = PARAMETER_ATTACKS[attack_id]
    except KeyError:
        close = difflib.get_close_matches(attack_id, PARAMETER_ATTACKS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UnknownAttack(
            f"unknown parameter attack id {attack_id!r}; {hint}Known: "
            f"{', '.join(PARAMETER_ATTACKS)}"
        ) from None
    tm = ThreatModel(
        Surface.PARAMETERS,
        epsilon,
        norm or cls.norms[0],  # type: ignore[arg-type]  # ThreatModel validates it
        unit or cls.units[0],  # type: ignore[arg-type]
        knowledge=cls.knowledge_for(**params),
        phase=phase,  # type: ignore[arg-type]
    )
    return cls(tm, **params)


DEFAULT_PARAMETER_EPSILONS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0)
DEFAULT_PARAMETER_BITS: tuple[int, ...] = (1, 2, 4, 8, 16)


def default_parameter_attacks(
    epsilons: Sequence[float] = DEFAULT_PARAMETER_EPSILONS,
    bits: Sequence[int] = DEFAULT_PARAMETER_BITS,
) -> list[ParameterAttack]:
    """The default grid: noise and PGD at each ε (linf, std units), random and targeted bit
    flips at each k."""
    grid: list[ParameterAttack] = []
    for attack_id in ("noise-params-v1", "pgd-params-v1"):
        grid += [make_parameter_attack(attack_id, e) for e in epsilons]
    for mode in ("random", "targeted"):
        grid += [make_parameter_attack("bitflip-params-v1", k, mode=mode) for k in bits]
    return grid


# -- a tampered copy of a policy directory ----------------------------------------------------
def tamper_directory(
    src_dir: str | os.PathLike[str],
    dst_dir: str | os.PathLike[str],
    attack: ParameterAttack,
    *,
    rng: np.random.Generator,
    probe: np.ndarray | None = None,
    env_id: str | None = None,
    rehash: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write a tampered copy of the native policy directory ``src_dir`` to ``dst_dir``.

    By default this plays an attacker who can write the weights file only: ``spec.json`` is
    copied byte for byte, so it still pins the SHA-256 of the clean weights and
    :func:`rlsec.policies.load_policy` refuses the copy. With ``rehash=True`` the attacker can
    rewrite the spec too and replaces that digest (nothing else in the spec changes): the copy
    loads. Nothing inside a policy directory can catch that case; only a signature over the
    spec, or a digest of it pinned somewhere the attacker cannot write (the registry), does.

    The copy is written to a temporary sibling directory and renamed into place.

    Raises:
        PolicyLoadError: ``src_dir`` is not a loadable policy directory, or changed while read.
        FileExistsError: ``dst_dir`` exists and ``overwrite`` is false.
    """
    from rlsec.policies.native import SPEC_FILE, load_native, write_policy_dir

    src, dst = Path(src_dir), Path(dst_dir)
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; pass overwrite=True to replace it")
    try:
        spec_bytes = (src / SPEC_FILE).read_bytes()
    except OSError as exc:
        raise PolicyLoadError(f"cannot read {src / SPEC_FILE}: {exc}") from None
    policy = load_native(src)
    if hashlib.sha256(spec_bytes).hexdigest() != policy.info.sha256:
        raise PolicyLoadError(f"{src / SPEC_FILE} changed while it was being read")
    tampered = attack.tamper(policy, rng=rng, probe=probe, env_id=env_id)
    assert tampered.network is not None
    import safetensors.torch

    tensors = {
        k: v.detach().contiguous().to(torch.float32)
        for k, v in tampered.network.state_dict().items()
    }
    weights = safetensors.torch.save(tensors)
    if rehash:
        spec = json.loads(spec_bytes)
        spec["weights"]["sha256"] = hashlib.sha256(weights).hexdigest()
        spec_bytes = (json.dumps(spec, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
    write_policy_dir(dst, weights, spec_bytes)
    return dst
