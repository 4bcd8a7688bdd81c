"""Randomized smoothing of policies: actions certified against L2 observation perturbations.

:class:`SmoothedPolicy` wraps a policy ``f`` and acts on Gaussian-noised copies of each
observation, ``x + σ·s·ε`` with ``ε ~ N(0, I)`` and ``s`` a per-feature scale:

* **Discrete actions** (Cohen et al. 2019, applied at every step of an episode by Kumar et al.
  2022): the action is the majority vote of ``f`` over ``n`` noisy copies. :meth:`certify`
  runs Cohen's CERTIFY: it picks the top action from ``n0`` copies, bounds its probability
  ``p_A`` below by a one-sided Clopper-Pearson bound at level ``1 - α`` from ``n`` fresh copies,
  and certifies the L2 radius ``σ·Φ⁻¹(p_A_lower)``, abstaining when ``p_A_lower <= 1/2``.
* **Continuous actions** (expectation smoothing: Salman et al. 2019, Lemma 2; Kumar et al.
  2022): the action is the mean of ``clip(f(x + noise), l, u)``. With ``g = (E f - l)/(u - l)``
  in ``[0, 1]``, ``Φ⁻¹(g)`` is ``1/σ``-Lipschitz, so under a perturbation of L2 norm at most
  ``r`` the smoothed action stays in ``[l + (u-l)·Φ(Φ⁻¹(g_lo) - r/σ), l + (u-l)·Φ(Φ⁻¹(g_hi) +
  r/σ)]`` (:meth:`certify_bounds`), where ``g_lo, g_hi`` are Hoeffding bounds on the Monte
  Carlo mean, union-bounded over the action dimensions and both sides.

Units. ``σ`` is in raw observation units (``scale=None``) or in units of ``scale`` (e.g. the
clean observation standard deviation per feature). Certified radii are **L2** radii in the same
units: a perturbation ``δ`` is covered when ``‖δ / s‖₂ <= r``. An L∞ ball of radius ``r`` lies
inside the L2 ball of radius ``r·√d`` (``d`` observation features), so the certified L∞ radius
is ``r / √d`` (:meth:`SmoothedPolicy.linf_radius`).

Guarantees are per step and probabilistic. Each certificate holds with probability at least
``1 - α`` over the noise, for one observation; over an episode of ``T`` steps, all ``T`` hold
together with probability at least ``1 - T·α`` (union bound). The noise is fresh at every step,
so an adversary that picks step ``t``'s perturbation from everything before learns nothing of
step ``t``'s noise (Kumar et al. 2022 certify returns on top of this; here only actions are
certified). :meth:`act` is Cohen's PREDICT without abstention: the plain majority vote, which
equals the smoothed classifier's decision except with a small probability (not ``α``) when the
top two actions are close.

Attacks. A smoothed policy is a :class:`~rlsec.core.DifferentiablePolicy`, so white-box
attacks apply: :meth:`SmoothedPolicy.torch_module` is the expectation over ``eot_samples``
fresh noise draws (EOT) of the base network's softmax (discrete: the soft smoothed classifier
that SmoothAdv, Salman et al. 2019, attacks) or of its clipped action (continuous). Its value
and Q modules are the base policy's. It has no ``decode()``: its actions are never a function
of that module's output, and :func:`rlsec.attacks.rollout` only trusts the actions an attack
reports for policies that have one, so the executed actions are always :meth:`act` on the
perturbed observation.

Randomness. Everything comes from ``np.random.SeedSequence([seed, *keys])`` (``keys`` from the
last :meth:`SmoothedPolicy.reseed`, none at first), spawned into two generators: one for
:meth:`act` and :meth:`certify`, one for the attack surrogate. :meth:`act` on ``B`` rows draws
``B·n·d`` float32 standard normals in (row, copy, feature) order; :meth:`certify` draws
``B·n0·d`` then ``B·n·d``; :meth:`certify_bounds` draws ``B·n·d``. Actions are thus
deterministic given the seed and the sequence of calls. ``batch_size`` (the most noisy copies
per forward pass) never changes the noise drawn; the network's float32 arithmetic may round
differently for another batch size, which can move a continuous action in its last bits.

Example:
    >>> import gymnasium as gym, numpy as np, torch
    >>> from rlsec.policies import from_torch
    >>> lin = torch.nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    ...     _ = lin.bias.zero_()
    >>> base = from_torch(lin, gym.spaces.Box(-5, 5, (2,)), gym.spaces.Discrete(2))
    >>> smooth = SmoothedPolicy(base, sigma=0.5, n=1000, n0=100, seed=0)
    >>> smooth.act(np.array([[1.0, 0.0], [-1.0, 0.0]], dtype=np.float32)).tolist()
    [0, 1]
    >>> actions, radius, abstained = smooth.certify(np.array([[1.0, 0.0]], dtype=np.float32))
    >>> int(actions[0]), bool(abstained[0]), bool(0.5 < radius[0] < 1.0)  # exact radius: 1.0
    (0, False, True)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from scipy import stats
from torch import nn

from rlsec.core import DifferentiablePolicy, Policy
from rlsec.errors import ConfigError, SpaceMismatch
from rlsec.policies.base import PolicyInfo
from rlsec.policies.spaces import describe_space
from rlsec.stats import proportion_ci

__all__ = [
    "ActionBounds",
    "Certificate",
    "SmoothedPolicy",
    "certified_radius",
    "check_params",
    "expectation_bounds",
    "hoeffding_halfwidth",
    "lower_confidence_bound",
]

SMOOTHING_ID = "smoothing-v1"
REFERENCE = (
    "Cohen et al. 2019, Certified Adversarial Robustness via Randomized Smoothing; "
    "Kumar et al. 2022, Policy Smoothing for Provably Robust RL; "
    "Salman et al. 2019, Provably Robust Deep Learning via Adversarially Trained Smoothed "
    "Classifiers"
)


class Certificate(NamedTuple):
    """What :meth:`SmoothedPolicy.certify` returns, one entry per observation.

    Attributes:
        actions: the top action from the selection samples (meaningful only where not
            abstained).
        radius: certified L2 radius in σ's units (0 where abstained).
        abstained: the lower confidence bound on ``p_A`` was at most 1/2: nothing certified.
    """

    actions: np.ndarray
    radius: np.ndarray
    abstained: np.ndarray


class ActionBounds(NamedTuple):
    """What :meth:`SmoothedPolicy.certify_bounds` returns, shaped like a batch of actions.

    Attributes:
        mean: the Monte Carlo estimate of the smoothed action at the observation.
        lower: with probability >= 1 - α, the smoothed action (its expectation over the noise)
            at every observation within the radius is at least this, per dimension.
        upper: likewise, at most this.
    """

    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


# -- the pure math ---------------------------------------------------------------------------


def lower_confidence_bound(successes: int, trials: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` Clopper-Pearson lower bound on a binomial proportion.

    It is the lower end of the two-sided exact interval at level ``1 - 2·alpha``.

    Example:
        >>> round(lower_confidence_bound(100, 100, 0.001), 6)  # = 0.001 ** (1 / 100)
        0.933254
    """
    return proportion_ci(int(successes), int(trials), 1.0 - 2.0 * alpha)[0]


def certified_radius(p_lower: np.ndarray | float, sigma: float) -> np.ndarray:
    """Cohen's L2 radius ``σ·Φ⁻¹(p_lower)``; 0 where ``p_lower <= 1/2`` (abstain).

    Example:
        >>> certified_radius(np.array([0.5, 0.8413447460685429]), 2.0).round(6).tolist()
        [0.0, 2.0]
    """
    p = np.asarray(p_lower, dtype=np.float64)
    return np.where(p > 0.5, sigma * stats.norm.ppf(np.maximum(p, 0.5)), 0.0)


def hoeffding_halfwidth(n: int, dims: int, alpha: float) -> float:
    """Half-width ``t`` such that the means of ``n`` samples of ``dims`` variables in
    ``[0, 1]`` are all within ``t`` of their expectations with probability >= ``1 - alpha``
    (Hoeffding, union bound over the dimensions and both sides).

    Example:
        >>> round(hoeffding_halfwidth(1000, 1, 0.05), 4)
        0.0429
    """
    return math.sqrt(math.log(2.0 * dims / alpha) / (2.0 * n))


def expectation_bounds(
    g_lo: np.ndarray, g_hi: np.ndarray, radius_over_sigma: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on ``E h(x' + noise)`` for all ``‖x' - x‖₂ <= r``, given bounds at ``x``.

    ``h`` maps into ``[0, 1]``; ``Φ⁻¹(E h(· + N(0, σ²I)))`` is ``1/σ``-Lipschitz (Salman et
    al. 2019, Lemma 2), which gives ``[Φ(Φ⁻¹(g_lo) - r/σ), Φ(Φ⁻¹(g_hi) + r/σ)]``.

    Example:
        >>> lo, hi = expectation_bounds(np.array([0.5]), np.array([0.5]), 1.0)
        >>> [round(float(lo[0]), 4), round(float(hi[0]), 4)]
        [0.1587, 0.8413]
    """
    k = np.asarray(radius_over_sigma, dtype=np.float64)
    lo = stats.norm.cdf(stats.norm.ppf(np.clip(g_lo, 0.0, 1.0)) - k)
    hi = stats.norm.cdf(stats.norm.ppf(np.clip(g_hi, 0.0, 1.0)) + k)
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


# -- the policy --------------------------------------------------------------------------------


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        return None
    return float(value)


def check_params(
    *,
    sigma: object,
    n: object = 100,
    n0: object = 100,
    alpha: object = 0.001,
    seed: object = 0,
    batch_size: object = 65_536,
    eot_samples: object = 8,
) -> dict[str, Any]:
    """Validate :class:`SmoothedPolicy`'s numeric parameters; return them normalised.

    Raises:
        ConfigError: saying what was expected and what was received.

    Example:
        >>> check_params(sigma=0.2, n=50)["n"]
        50
        >>> check_params(sigma=0.0)
        Traceback (most recent call last):
        ...
        rlsec.errors.ConfigError: sigma must be a finite number > 0, got 0.0
    """
    s = _number(sigma)
    if s is None or not math.isfinite(s) or s <= 0:
        raise ConfigError(f"sigma must be a finite number > 0, got {sigma!r}")
    from rlsec._inputs import budget

    s = budget("sigma", s, positive=True)  # at most 1e15: larger noise overflows float32
    a = _number(alpha)
    if a is None or not 0.0 < a < 0.5:
        raise ConfigError(f"alpha must be a number in (0, 0.5), got {alpha!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    return {
        "sigma": s,
        "n": _positive_int("n", n),
        "n0": _positive_int("n0", n0),
        "alpha": a,
        "seed": int(seed),
        "batch_size": _positive_int("batch_size", batch_size),
        "eot_samples": _positive_int("eot_samples", eot_samples),
    }


class _NoiseExpectation(nn.Module):
    """The attack surrogate: the base network averaged over fresh Gaussian noise draws.

    Discrete actions: the log of the mean softmax of the base output (log-probabilities of the
    soft smoothed classifier, usable as logits). Continuous: the mean clipped action.
    """

    def __init__(
        self,
        base: nn.Module,
        std: np.ndarray,
        samples: int,
        rng: np.random.Generator,
        bounds: tuple[np.ndarray, np.ndarray] | None,
    ) -> None:
        super().__init__()
        self.base = base
        self.samples = samples
        self.rng = rng
        self.std: torch.Tensor = torch.from_numpy(std.astype(np.float32))
        self.bounds = (
            None
            if bounds is None
            else tuple(
                torch.from_numpy(np.asarray(b, dtype=np.float32).reshape(-1)) for b in bounds
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, m = x.shape[0], self.samples
        d = int(self.std.shape[0])
        eps = torch.from_numpy(self.rng.standard_normal((b, m, d), dtype=np.float32))
        noisy = (x.reshape(b, 1, d) + eps * self.std).reshape(b * m, *x.shape[1:])
        out = self.base(noisy).reshape(b, m, -1)
        if self.bounds is None:
            p = torch.softmax(out, dim=-1).mean(dim=1)
            return p.clamp_min(1e-12).log()
        lo, hi = self.bounds
        return torch.clamp(out, lo, hi).mean(dim=1)


class SmoothedPolicy:
    """A base policy smoothed with Gaussian observation noise; see the module docstring.

    Args:
        base: a differentiable policy (every rlsec loader produces one) with continuous
            (``Box``) observations and ``Discrete`` or ``Box`` actions.
        sigma: noise standard deviation, in raw observation units or in units of ``scale``.
        n: noisy copies per observation for :meth:`act` and for the estimate of
            :meth:`certify` / :meth:`certify_bounds`.
        n0: copies that select the top action in :meth:`certify`.
        alpha: failure probability of each certificate, in ``(0, 0.5)``.
        scale: per-feature scale of ``sigma`` (``d`` positive numbers); ``None`` for raw units.
        seed: seed of the noise (see "Randomness" in the module docstring).
        batch_size: at most this many noisy copies per forward pass (bounds memory; does not
            change the noise drawn).
        eot_samples: noise draws per call of the attack surrogate :meth:`torch_module`.

    Raises:
        ConfigError: a parameter out of its domain (the message says what was expected).
        SpaceMismatch: observations that are not a ``Box``, or unsupported actions.
    """

    def __init__(
        self,
        base: Policy,
        sigma: float,
        *,
        n: int = 100,
        n0: int = 100,
        alpha: float = 0.001,
        scale: Sequence[float] | np.ndarray | None = None,
        seed: int = 0,
        batch_size: int = 65_536,
        eot_samples: int = 8,
    ) -> None:
        if isinstance(base, SmoothedPolicy):
            raise ConfigError("the base policy is already smoothed; smooth the original once")
        if not isinstance(base, DifferentiablePolicy):
            raise ConfigError(
                "SmoothedPolicy needs a policy with torch_module() (every rlsec loader gives "
                f"one), got {type(base).__name__}"
            )
        params = check_params(
            sigma=sigma,
            n=n,
            n0=n0,
            alpha=alpha,
            seed=seed,
            batch_size=batch_size,
            eot_samples=eot_samples,
        )
        obs_space = base.observation_space
        if not isinstance(obs_space, gym.spaces.Box):
            raise SpaceMismatch(
                "smoothing adds Gaussian noise to continuous observations; the policy observes "
                f"{describe_space(obs_space)}"
            )
        act_space = base.action_space
        if not isinstance(act_space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise SpaceMismatch(
                "smoothing supports Discrete (majority vote) and Box (mean) actions, got "
                f"{describe_space(act_space)}"
            )
        self.dim = int(np.prod(obs_space.shape))
        if scale is None:
            sc = np.ones(self.dim)
        else:
            sc = np.asarray(scale, dtype=np.float64).reshape(-1)
            if sc.shape != (self.dim,) or not np.all(np.isfinite(sc)) or np.any(sc <= 0):
                raise ConfigError(
                    f"scale must be {self.dim} finite numbers > 0 (one per observation "
                    f"feature), got {np.asarray(scale).tolist()!r}"
                )
        self.base = base
        self.sigma: float = params["sigma"]
        self.n: int = params["n"]
        self.n0: int = params["n0"]
        self.alpha: float = params["alpha"]
        self.scale: np.ndarray | None = None if scale is None else sc
        self.seed: int = params["seed"]
        self.batch_size: int = params["batch_size"]
        self.eot_samples: int = params["eot_samples"]
        self._std = (self.sigma * sc).astype(np.float32)
        self._module = base.torch_module()
        self._bounds: tuple[np.ndarray, np.ndarray] | None = None
        if isinstance(act_space, gym.spaces.Box):
            self._bounds = (
                np.asarray(act_space.low, dtype=np.float64).reshape(-1),
                np.asarray(act_space.high, dtype=np.float64).reshape(-1),
            )
        self._rng, eot_rng = self._streams(())
        self._surrogate = _NoiseExpectation(
            self._module, self._std, self.eot_samples, eot_rng, self._bounds
        ).eval()
        self.info = self._info()

    # -- randomness ----------------------------------------------------------------------------
    def _streams(self, keys: Sequence[int]) -> tuple[np.random.Generator, np.random.Generator]:
        act_ss, eot_ss = np.random.SeedSequence([self.seed, *keys]).spawn(2)
        return np.random.default_rng(act_ss), np.random.default_rng(eot_ss)

    def reseed(self, *keys: int) -> None:
        """Restart the noise from ``SeedSequence([seed, *keys])`` (no keys: the initial state).

        Campaigns call this before each run, so a run's numbers do not depend on the runs
        before it.
        """
        self._rng, self._surrogate.rng = self._streams([int(k) for k in keys])

    # -- the Policy protocol -------------------------------------------------------------------
    @property
    def observation_space(self) -> gym.Space[Any]:
        return self.base.observation_space

    @property
    def action_space(self) -> gym.Space[Any]:
        return self.base.action_space

    def act(self, observations: np.ndarray) -> np.ndarray:
        """The smoothed actions: majority vote (discrete) or mean (continuous) over ``n``
        noisy copies of each observation; ties go to the lowest action."""
        x = self.as_batch(observations)
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            votes = self._counts(x, self.n).argmax(axis=1) + int(space.start)
            return np.asarray(votes, dtype=np.int64)
        box = space
        assert isinstance(box, gym.spaces.Box)
        mean = self._sums(x, self.n) / self.n
        out = np.clip(mean.reshape(len(x), *box.shape), box.low, box.high)
        return np.asarray(out.astype(box.dtype))

    # -- the DifferentiablePolicy protocol (for white-box attacks) ------------------------------
    @property
    def output(self) -> Literal["logits", "q_values", "action"]:
        return "action" if self._bounds is not None else "logits"

    def torch_module(self) -> nn.Module:
        """The attack surrogate: the base network averaged over noise (see module docstring)."""
        return self._surrogate

    def value_module(self) -> nn.Module | None:
        return self.base.value_module()

    def q_module(self) -> nn.Module | None:
        return self.base.q_module()

    def as_batch(self, observations: np.ndarray) -> np.ndarray:
        """The base policy's check of a batch of observations, as float32."""
        check = getattr(self.base, "as_batch", None)
        obs = np.asarray(check(observations) if check is not None else observations)
        shape = tuple(self.observation_space.shape or ())
        if obs.ndim != len(shape) + 1 or tuple(obs.shape[1:]) != shape:
            raise SpaceMismatch(
                f"expected a batch of observations of shape (B, {', '.join(map(str, shape))}), "
                f"got shape {obs.shape}"
            )
        return np.ascontiguousarray(obs, dtype=np.float32)

    # -- certificates ------------------------------------------------------------------------
    def certify(
        self, observations: np.ndarray, *, n: int | None = None, n0: int | None = None
    ) -> Certificate:
        """Cohen et al.'s CERTIFY for each observation (discrete actions).

        Args:
            n: estimation copies (default ``self.n``); ``n0``: selection copies (default
                ``self.n0``). The estimate uses fresh noise, independent of the selection.

        Returns:
            A :class:`Certificate`: with probability >= ``1 - alpha`` per observation, if not
            abstained, the smoothed classifier returns ``actions[i]`` at every observation
            ``x'`` with ``‖(x' - x) / scale‖₂ <= radius[i]``.
        """
        space = self.action_space
        if not isinstance(space, gym.spaces.Discrete):
            raise ConfigError(
                "certify() certifies discrete actions; for continuous actions use "
                f"certify_bounds(), got {describe_space(space)}"
            )
        n = self.n if n is None else _positive_int("n", n)
        n0 = self.n0 if n0 is None else _positive_int("n0", n0)
        x = self.as_batch(observations)
        top = self._counts(x, n0).argmax(axis=1)
        hits = self._counts(x, n)[np.arange(len(x)), top]
        p_lower = np.array([lower_confidence_bound(int(k), n, self.alpha) for k in hits])
        abstained = p_lower <= 0.5
        radius = certified_radius(p_lower, self.sigma)
        return Certificate((top + int(space.start)).astype(np.int64), radius, np.asarray(abstained))

    def certify_bounds(
        self, observations: np.ndarray, radius: float | np.ndarray, *, n: int | None = None
    ) -> ActionBounds:
        """Per-dimension bounds on the smoothed action under perturbations of L2 norm
        ``<= radius`` (continuous actions, finite bounds).

        ``radius`` is in σ's units (a number, or one per observation). With probability
        >= ``1 - alpha`` (jointly over the dimensions), the smoothed action's expectation at
        every ``x'`` with ``‖(x' - x) / scale‖₂ <= radius`` lies in ``[lower, upper]``. The
        executed action is a Monte Carlo mean of ``n`` copies: it may further differ from that
        expectation by ``(u - l)·hoeffding_halfwidth(n, dims, alpha)`` with probability at most
        ``alpha``.
        """
        space = self.action_space
        if self._bounds is None or not isinstance(space, gym.spaces.Box):
            raise ConfigError(
                "certify_bounds() bounds continuous actions; for discrete actions use "
                f"certify(), got {describe_space(space)}"
            )
        low, high = self._bounds
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ConfigError(
                f"certify_bounds() needs finite action bounds, got {describe_space(space)}"
            )
        n = self.n if n is None else _positive_int("n", n)
        x = self.as_batch(observations)
        r = np.asarray(radius, dtype=np.float64)
        if r.ndim > 1 or (r.ndim == 1 and r.shape != (len(x),)) or np.any(~(r >= 0)):
            raise ConfigError(
                f"radius must be a number >= 0 or {len(x)} of them, got {np.asarray(radius)!r}"
            )
        span = np.where(high > low, high - low, 1.0)
        g = (self._sums(x, n) / n - low) / span
        t = hoeffding_halfwidth(n, low.size, self.alpha)
        k = (r if r.ndim == 0 else r[:, None]) / self.sigma
        g_lo, g_hi = expectation_bounds(g - t, g + t, k)
        shape = (len(x), *space.shape)
        return ActionBounds(
            (low + span * g).reshape(shape),
            (low + span * g_lo).reshape(shape),
            (low + span * g_hi).reshape(shape),
        )

    def linf_radius(self, radius: np.ndarray | float) -> np.ndarray:
        """The certified L∞ radius implied by an L2 one: ``radius / √d``."""
        return np.asarray(radius, dtype=np.float64) / math.sqrt(self.dim)

    # -- Monte Carlo -----------------------------------------------------------------------------
    def _noisy_outputs(
        self, x: np.ndarray, copies: int
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """``(rows, base outputs)`` for ``copies`` noisy copies of every row, in chunks of at
        most ``batch_size`` copies, drawing noise in (row, copy, feature) order."""
        b = x.shape[0]
        flat = x.reshape(b, self.dim)
        total = b * copies
        for start in range(0, total, self.batch_size):
            stop = min(total, start + self.batch_size)
            rows = np.arange(start, stop) // copies
            eps = self._rng.standard_normal((stop - start, self.dim), dtype=np.float32)
            noisy = (flat[rows] + eps * self._std).reshape(stop - start, *x.shape[1:])
            with torch.no_grad():
                out = self._module(torch.from_numpy(noisy))
            yield rows, out

    def _counts(self, x: np.ndarray, copies: int) -> np.ndarray:
        """Votes per action, ``(B, n_actions)``."""
        space = self.action_space
        assert isinstance(space, gym.spaces.Discrete)
        k = int(space.n)
        counts = np.zeros(len(x) * k, dtype=np.int64)
        for rows, out in self._noisy_outputs(x, copies):
            votes = out.reshape(len(rows), -1).argmax(dim=1).numpy()
            counts += np.bincount(rows * k + votes, minlength=len(x) * k)
        return counts.reshape(len(x), k)

    def _sums(self, x: np.ndarray, copies: int) -> np.ndarray:
        """Sums of the clipped actions, ``(B, action_dims)``, in float64."""
        assert self._bounds is not None
        low, high = self._bounds
        sums = np.zeros((len(x), low.size))
        for rows, out in self._noisy_outputs(x, copies):
            a = np.clip(out.reshape(len(rows), -1).numpy().astype(np.float64), low, high)
            np.add.at(sums, rows, a)
        return sums

    # -- records -------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Everything needed to rebuild this defense, as recorded in results.

        ``sha256`` identifies the defended policy: the base policy's digest with the
        parameters that decide its actions and certificates (not ``seed``, ``batch_size`` or
        ``eot_samples``), so evidence about it never stands for the bare base policy.
        """
        base_info = getattr(self.base, "info", None)
        ident: dict[str, Any] = {
            "id": SMOOTHING_ID,
            "sigma": self.sigma,
            "scale": None if self.scale is None else [float(s) for s in self.scale],
            "n": self.n,
            "n0": self.n0,
            "alpha": self.alpha,
        }
        base_sha = getattr(base_info, "sha256", None)
        digest = hashlib.sha256(
            json.dumps({"base_sha256": base_sha, **ident}, sort_keys=True).encode()
        ).hexdigest()
        return {
            "name": "smoothing",
            **ident,
            "sigma_unit": "raw" if self.scale is None else "scale",
            "actions": "mean" if self._bounds is not None else "majority vote",
            "certificate": "per-step L2 radius in sigma's units (L-inf radius = L2 / sqrt(d))",
            "seed": self.seed,
            "batch_size": self.batch_size,
            "eot_samples": self.eot_samples,
            "reference": REFERENCE,
            "base_sha256": base_sha,
            "sha256": digest,
        }

    def _info(self) -> PolicyInfo:
        base = getattr(self.base, "info", None)
        record = self.describe()
        return PolicyInfo(
            source=getattr(base, "source", repr(self.base)),
            sha256=record["sha256"],
            format=getattr(base, "format", "torch"),
            env_id=getattr(base, "env_id", None),
            algo=getattr(base, "algo", None),
            clean_return=None,  # the base policy's, not this one's
            observation_stats=getattr(base, "observation_stats", None),
            provenance={"defense": record},
        )

    def __repr__(self) -> str:
        unit = "raw" if self.scale is None else "scale"
        return f"SmoothedPolicy({self.base!r}, sigma={self.sigma:g} {unit}, n={self.n})"
