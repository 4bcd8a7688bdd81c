"""Attacks on the parameters surface: the adversary rewrites a trained policy's stored weights.

The threat: someone with write access to the weights at rest (a model store, a shared disk,
a deployment bucket, a faulty memory) changes them before the policy is loaded. The attacks
here measure how much damage a given budget buys:

* :class:`NoiseParameters` (``noise-params-v1``): a random perturbation of every weight tensor
  inside its own ε-ball, the baseline.
* :class:`GradientParameters` (``pgd-params-v1``): projected gradient ascent on the weights,
  inside the same balls, maximising the action divergence on probe observations.
* :class:`BitFlipParameters` (``bitflip-params-v1``): exactly ``k`` flipped bits of the
  stored float32 weights, at random or chosen by a progressive bit search (Rakin et al. 2019).

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
exactly ``k``. :func:`tamper_directory` writes a tampered copy of a native policy directory;
:func:`parameter_damage` measures clean against tampered returns.

Non-finite outputs. Flipping an exponent bit can make a weight huge, infinite or NaN, and the
network's outputs with it. :meth:`TorchPolicy.act <rlsec.policies.TorchPolicy.act>` does not
guard against that: torch's ``argmax`` picks a NaN entry as the maximum, and a NaN continuous
action is passed to the environment. The evaluation here uses an explicit rule instead
(:func:`act_with_fallback`): NaN logits or Q-values never win (a row of nothing but NaN or
-inf takes the first action), a NaN continuous action becomes 0 clipped into the bounds and
an infinite one the bound; the rows this happens on are counted and reported.

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
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlsec.attacks._optim import Objective, action_divergence
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
from rlsec.policies.network import PolicyNetwork
from rlsec.policies.spaces import box_span

if TYPE_CHECKING:
    from rlsec.attacks.rollout import EpisodeStats

__all__ = [
    "DEFAULT_PARAMETER_BITS",
    "DEFAULT_PARAMETER_EPSILONS",
    "PARAMETER_ATTACKS",
    "BitFlipParameters",
    "GradientParameters",
    "NoiseParameters",
    "ParameterAttack",
    "act_with_fallback",
    "default_parameter_attacks",
    "make_parameter_attack",
    "parameter_damage",
    "probe_observations",
    "tamper_directory",
]

#: MITRE ATLAS AML.T0018.000, Manipulate AI Model: Poison AI Model ("manipulate an AI model's
#: weights to change its behavior or performance").
_POISON_MODEL = "AML.T0018.000"
_ACTOR = "policy."  # the actor's tensors in a PolicyNetwork's state dict
_BITS = 32
_SCOPES = ("actor", "all")
_PROBE_SEED = 20261125  # the attacker's probe, collected by parameter_damage
_HELD_OUT_SEED = _PROBE_SEED + 1  # the held-out probe the damage is measured on

_Weights = dict[str, torch.Tensor]
_Progress = Callable[[float], None]


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


# -- the working copy of a network that the optimising attacks move --------------------------
class _Work:
    """A private copy of a policy's network: set weights, run the actor, take gradients."""

    def __init__(self, policy: TorchPolicy) -> None:
        assert policy.network is not None
        self.policy = policy
        self.net: PolicyNetwork = copy.deepcopy(policy.network)
        self.params = dict(self.net.named_parameters())
        self.head = self.net.actor()
        width = int(self.net.out_dim)
        # The actor's outputs seen as "observations" of a policy whose module is the identity:
        # action_divergence on it measures the divergence of given outputs.
        self.outputs = TorchPolicy(
            gym.spaces.Box(-np.inf, np.inf, (width,), np.float32),
            policy.action_space,
            nn.Identity(),
            policy.output,
            info=PolicyInfo(source="<actor outputs>", sha256="", format="torch"),
        )

    def set(self, values: Mapping[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, v in values.items():
                self.params[name].copy_(v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.head(x))

    def divergence(self, clean: torch.Tensor, kind: str) -> Objective:
        return action_divergence(self.outputs, clean, kind)


def _saturate(d: torch.Tensor) -> torch.Tensor:
    """``d / (1 + d)`` per row, 1 where ``d`` is not finite: bounded, so no single row (or
    an overflowing one) dominates the mean, and a row grows until its action has changed."""
    finite = torch.isfinite(d)
    safe = torch.where(finite, d, torch.zeros_like(d)).clamp_min(0.0)
    return torch.where(finite, safe / (1.0 + safe), torch.ones_like(d))


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
        progress: _Progress | None = None,
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
        chosen = {n: t for n, t in clean.items() if self.tensors == "all" or n.startswith(_ACTOR)}
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

    def _prepare(self, chosen: _Weights) -> None:
        """Hook: per-policy set-up (budget scales); raise :class:`InvalidBudget` if the budget
        cannot be spent on these tensors."""

    def _tamper(
        self,
        policy: TorchPolicy,
        weights: _Weights,
        probe: torch.Tensor | None,
        rng: np.random.Generator,
        progress: _Progress | None,
    ) -> _Weights:
        """Pure core: candidate values for the chosen tensors (float32, same shapes)."""
        raise NotImplementedError

    def _project(self, clean: _Weights, candidate: _Weights) -> _Weights:
        """Hook: bring the candidate back into the budget (identity by default)."""
        return candidate

    def _check(self, clean: _Weights, after: _Weights, chosen: set[str]) -> None:
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
            if name not in chosen and not _bits(t).tobytes() == _bits(clean[name]).tobytes():
                raise BudgetViolation(f"tensor {name!r} is outside the attack's scope but changed")


def _bits(t: torch.Tensor) -> np.ndarray:
    """The float32 bit patterns of a tensor, flattened (a copy)."""
    return (
        t.detach().cpu().contiguous().numpy().astype(np.float32, copy=True).view(np.uint32).ravel()
    )


def _rebuild(policy: TorchPolicy, values: _Weights, attack: ParameterAttack) -> TorchPolicy:
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

    def _scale_of(self, clean: _Weights) -> dict[str, float]:
        if self.threat_model.unit == "raw":
            return {n: 1.0 for n in clean}
        return {
            n: float(t.double().std(unbiased=False)) if t.numel() else 0.0 for n, t in clean.items()
        }

    def _prepare(self, chosen: _Weights) -> None:
        self.scales = self._scale_of(chosen)

    def _project(self, clean: _Weights, candidate: _Weights) -> _Weights:
        eps, norm = self.threat_model.epsilon, self.threat_model.norm
        out: _Weights = {}
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

    def _check(self, clean: _Weights, after: _Weights, chosen: set[str]) -> None:
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
        weights: _Weights,
        probe: torch.Tensor | None,
        rng: np.random.Generator,
        progress: _Progress | None,
    ) -> _Weights:
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
        weights: _Weights,
        probe: torch.Tensor | None,
        rng: np.random.Generator,
        progress: _Progress | None,
    ) -> _Weights:
        assert probe is not None
        eps, linf = self.threat_model.epsilon, self.threat_model.norm == "linf"
        work = _Work(policy)
        names = [n for n in weights if n.startswith(_ACTOR)]
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

    def _prepare(self, chosen: _Weights) -> None:
        total = _BITS * sum(t.numel() for t in chosen.values())
        if self.k > total:
            raise InvalidBudget(
                f"{self.id} cannot flip k={self.k} distinct bits: the chosen tensors hold "
                f"{total} bits"
            )
        if self.mode == "targeted" and self.k > 0:
            actor_bits = _BITS * sum(t.numel() for n, t in chosen.items() if n.startswith(_ACTOR))
            if self.k > actor_bits:
                raise InvalidBudget(
                    f"the targeted search flips actor bits only; k={self.k} exceeds the "
                    f"actor's {actor_bits} bits"
                )

    def _tamper(
        self,
        policy: TorchPolicy,
        weights: _Weights,
        probe: torch.Tensor | None,
        rng: np.random.Generator,
        progress: _Progress | None,
    ) -> _Weights:
        self.flips = []
        if self.k == 0:
            return dict(weights)
        if self.mode == "random":
            self.flips = _random_flips(weights, self.k, rng)
        else:
            assert probe is not None
            self.flips = _bit_search(policy, weights, probe, self.k, self.candidates, progress)
        return _apply_flips(weights, self.flips)

    def _check(self, clean: _Weights, after: _Weights, chosen: set[str]) -> None:
        super()._check(clean, after, chosen)
        flipped = sum(
            int(np.bitwise_count(_bits(after[n]) ^ _bits(clean[n])).sum()) for n in chosen
        )
        if flipped != self.k:
            raise BudgetViolation(
                f"expected exactly k={self.k} flipped bits in the stored weights, got {flipped}"
            )


def _random_flips(
    weights: _Weights, k: int, rng: np.random.Generator
) -> list[tuple[str, int, int]]:
    names = list(weights)
    sizes = np.array([weights[n].numel() for n in names], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    positions = np.sort(rng.choice(int(starts[-1]) * _BITS, size=k, replace=False))
    out = []
    for pos in positions.tolist():
        element, bit = divmod(int(pos), _BITS)
        t = int(np.searchsorted(starts, element, side="right")) - 1
        out.append((names[t], element - int(starts[t]), bit))
    return out


def _apply_flips(weights: _Weights, flips: Sequence[tuple[str, int, int]]) -> _Weights:
    out = {n: _bits(t).copy() for n, t in weights.items()}
    for name, index, bit in flips:
        out[name][index] ^= np.uint32(1 << bit)
    return {
        n: torch.from_numpy(out[n].view(np.float32).reshape(tuple(weights[n].shape)))
        for n in weights
    }


def _flip_values(value: float) -> torch.Tensor:
    """The 32 float32 values one bit flip away from ``value`` (bit ``b`` at index ``b``)."""
    u = np.full(_BITS, np.float32(value)).view(np.uint32)
    u ^= np.left_shift(np.uint32(1), np.arange(_BITS, dtype=np.uint32))
    return torch.from_numpy(u.view(np.float32).copy())


def _bit_search(
    policy: TorchPolicy,
    weights: _Weights,
    probe: torch.Tensor,
    k: int,
    candidates: int,
    progress: _Progress | None,
) -> list[tuple[str, int, int]]:
    """Progressive bit search: ``k`` rounds, each keeping the single best flip found among
    the bits of the top-gradient actor weights. Scores are exact: for all 32 flips of a weight
    at once, the actor is re-run from the changed layer on, from the recorded layer inputs."""
    work = _Work(policy)
    work.set(weights)
    names = [n for n in weights if n.startswith(_ACTOR)]
    block = work.net.policy
    with torch.no_grad():
        clean = work.forward(probe)
    variants = work.divergence(clean.repeat(_BITS, *([1] * (clean.dim() - 1))), "ce")
    span = (
        torch.as_tensor(box_span(policy.action_space), dtype=torch.float32)
        if isinstance(policy.action_space, gym.spaces.Box)
        else None
    )
    inputs: dict[int, torch.Tensor] = {}
    record = False

    def remember(i: int) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            if record:
                inputs[i] = args[0].detach()

        return hook

    hooks = [
        m.register_forward_pre_hook(remember(i))
        for i, m in enumerate(block)
        if isinstance(m, nn.Linear)
    ]
    flipped: set[tuple[str, int, int]] = set()
    out: list[tuple[str, int, int]] = []
    try:
        for round_ in range(k):
            ranking = _rank(work, names, probe, clean, span)
            record = True
            with torch.no_grad():
                work.forward(probe)  # record every Linear layer's input on the whole probe
            record = False
            best: tuple[float, str, int, int] | None = None
            tried = 0
            for name, index in ranking:
                taken = [bit for bit in range(_BITS) if (name, index, bit) in flipped]
                if len(taken) == _BITS:
                    continue
                scores = _score_flips(block, inputs, name, index, variants)
                scores[taken] = -math.inf
                scores = torch.nan_to_num(scores, nan=-math.inf)
                bit = int(torch.argmax(scores))
                if best is None or float(scores[bit]) > best[0]:
                    best = (float(scores[bit]), name, index, bit)
                tried += 1
                if tried == candidates:
                    break
            assert best is not None  # k <= the actor's bits, checked before
            _, name, index, bit = best
            flipped.add((name, index, bit))
            out.append((name, index, bit))
            flat = work.params[name].data.view(-1)
            flat[index] = _flip_values(float(flat[index]))[bit]
            if progress is not None:
                progress((round_ + 1) / k)
    finally:
        for h in hooks:
            h.remove()
    return out


def _rank(
    work: _Work,
    names: list[str],
    probe: torch.Tensor,
    clean: torch.Tensor,
    span: torch.Tensor | None,
) -> list[tuple[str, int]]:
    """Actor weights by decreasing magnitude of the loss gradient (ties in tensor order)."""
    params = [work.params[n] for n in names]
    grads: Sequence[torch.Tensor | None] = [None] * len(params)
    with torch.no_grad():
        finite = torch.isfinite(work.forward(probe)).reshape(probe.shape[0], -1).all(dim=1)
    if finite.any():
        # Only rows whose output is finite: one NaN row would poison every gradient.
        rows = probe[finite]
        objective = work.divergence(clean[finite], "ce")
        with torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            try:
                score = _saturate(objective(work.forward(rows))[0]).sum()
                grads = torch.autograd.grad(score, params, allow_unused=True)
                if not any(g is not None and bool((g != 0).any()) for g in grads):
                    outputs = work.forward(rows).flatten(1)
                    if span is not None:
                        outputs = outputs / span
                    grads = torch.autograd.grad(outputs.abs().sum(), params, allow_unused=True)
            finally:
                for p in params:
                    p.requires_grad_(False)
    mags = torch.cat(
        [
            torch.zeros(p.numel())
            if g is None
            else torch.nan_to_num(g.detach().abs().reshape(-1), nan=0.0)
            for g, p in zip(grads, params, strict=True)
        ]
    )
    order = torch.argsort(mags, descending=True, stable=True).tolist()
    starts = np.cumsum([0] + [p.numel() for p in params])
    ranked = []
    for flat in order:
        t = int(np.searchsorted(starts, flat, side="right")) - 1
        ranked.append((names[t], flat - int(starts[t])))
    return ranked


def _score_flips(
    block: nn.Sequential,
    inputs: dict[int, torch.Tensor],
    name: str,
    index: int,
    variants: Objective,
) -> torch.Tensor:
    """The probe loss after each of the 32 single-bit flips of one actor weight."""
    _, layer, kind = name.split(".")
    i = int(layer)
    lin = block[i]
    assert isinstance(lin, nn.Linear)
    with torch.no_grad():
        x = inputs[i]
        b = x.shape[0]
        base = lin(x)
        if kind == "weight":
            j, col = divmod(index, lin.in_features)
            rows = lin.weight[j].unsqueeze(0).repeat(_BITS, 1)
            rows[:, col] = _flip_values(float(lin.weight[j, col]))
            new = x @ rows.T + lin.bias[j]  # (B, 32)
        else:
            j = index
            new = (x @ lin.weight[j]).unsqueeze(1) + _flip_values(float(lin.bias[j])).unsqueeze(0)
        h = base.unsqueeze(0).repeat(_BITS, 1, 1)
        h[:, :, j] = new.T
        h = h.reshape(_BITS * b, -1)
        for m in list(block)[i + 1 :]:
            h = m(h)
        d = variants(h)[0].reshape(_BITS, b)
        return _saturate(d).mean(dim=1)


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


def _relay(report: Callable[[str, float], None], label: str) -> _Progress:
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
