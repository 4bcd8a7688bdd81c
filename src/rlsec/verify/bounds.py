"""Certified bounds on a policy's outputs when its observations are perturbed.

Every function here takes a batch of clean observations ``x0`` and a budget ``eps`` and
reasons about *every* observation in the box ``x0 ± eps`` (linf; ``eps`` in raw observation
units, a scalar, one number per feature, or per state; pass ``k * std`` for ``k`` standard
deviations), intersected with the observation space's bounds widened to include ``x0``,
exactly the set an attack's :class:`~rlsec.attacks._ball.Ball` may reach. Two methods:

* ``"ibp"``: interval bound propagation (Gowal et al. 2018): intervals pushed layer by layer.
* ``"crown"`` (default): CROWN (Zhang et al. 2018; the backward mode of auto_LiRPA): each
  activation is enclosed between two lines and linear bounds are propagated backward from
  the quantity bounded to the input box. Intermediate layers are bounded the same way, and
  every CROWN bound is intersected with the IBP bound, so it is never looser than IBP.

Action questions are margin specifications: CROWN bounds ``out_a - out_b`` directly, which
is much tighter than subtracting two intervals. All results are sound over-approximations
for the network in exact arithmetic (bounds are computed in float64); the float32 forward
pass may differ from it by rounding, around 1e-6 relative.

Supported actors: MLPs of Linear, Affine, ReLU, LeakyReLU, Tanh, Sigmoid, ELU (alpha >= 0),
Hardtanh, ReLU6, SiLU, GELU and Identity (the layers of :mod:`rlsec.policies.network`), on
feature-vector (Box) observations. ReLU-like, Hardtanh, Tanh, Sigmoid and ELU with
alpha <= 1 get linear relaxations; SiLU and GELU get them where they are convex and interval
bounds elsewhere (they are not monotone; their interval bounds use their minimum), as does
ELU with alpha > 1 where it is not convex.

This module owns the per-state certification problem and the public API; the network's
lowering is in :mod:`rlsec.verify._network`, the activations' intervals and relaxations in
:mod:`rlsec.verify._activations`, and IBP and CROWN in :mod:`rlsec.verify._propagation`.

Example:
    >>> import gymnasium as gym, numpy as np, torch
    >>> from rlsec.policies import from_torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    >>> with torch.no_grad():  # logits: ~(x1 - x2, x2 - x1), so either action can win
    ...     _ = net[0].weight.zero_(); _ = net[0].bias.zero_(); _ = net[2].bias.zero_()
    ...     _ = net[0].weight[0].copy_(torch.tensor([1.0, -1.0]))
    ...     _ = net[2].weight.zero_(); _ = net[2].weight[0, 0].fill_(1.0)
    ...     _ = net[2].weight[1, 0].fill_(-1.0)
    >>> p = from_torch(net, gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2))
    >>> x0 = np.tile(np.float32([0.5, 0.0]), (5, 1))  # clean action 0
    >>> reachable_actions(p, x0, 0.0).sum(axis=1).tolist()  # no budget: only the clean action
    [1, 1, 1, 1, 1]
    >>> bool(reachable_actions(p, x0, 1.0).all())  # the whole space: both actions possible
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlsec.core import DifferentiablePolicy
from rlsec.errors import ConfigError, InvalidBudget, SpaceMismatch
from rlsec.policies.base import output_width
from rlsec.policies.spaces import describe_space
from rlsec.verify._network import _DT, _compile
from rlsec.verify._propagation import Method, _lower

__all__ = [
    "Method",
    "action_bounds",
    "certified_radius",
    "certify",
    "output_bounds",
    "reachable_actions",
]


# -- the problem: a policy, a batch of states, their boxes ----------------------------------


class _Problem:
    """A compiled policy and a batch of clean observations, with their clean outputs."""

    def __init__(self, policy: DifferentiablePolicy, observations: np.ndarray, method: str):
        if method not in ("crown", "ibp"):
            raise ConfigError(f"method must be 'crown' or 'ibp', got {method!r}")
        self.method: Method = "crown" if method == "crown" else "ibp"
        self.net = _compile(policy)
        space = policy.observation_space
        assert isinstance(space, gym.spaces.Box)  # _compile checked it
        obs = np.asarray(observations)
        shape = tuple(space.shape)
        self.obs_shape = shape
        if obs.ndim != len(shape) + 1 or tuple(obs.shape[1:]) != shape:
            raise SpaceMismatch(
                f"expected a batch of observations of shape (B, {', '.join(map(str, shape))}) "
                f"for {describe_space(space)}, got shape {obs.shape}"
            )
        if not np.issubdtype(obs.dtype, np.number) or not np.isfinite(obs).all():
            raise SpaceMismatch("observations must be finite numbers")
        obs32 = np.ascontiguousarray(obs, dtype=np.float32)
        self.n = obs32.shape[0]
        self.x0 = torch.from_numpy(obs32.reshape(self.n, -1).astype(np.float64))
        d = self.net.in_dim
        if self.x0.shape[1] != d:
            raise SpaceMismatch(
                f"the actor reads {d} features, observations have {self.x0.shape[1]}"
            )
        self.low = torch.from_numpy(np.asarray(space.low, dtype=np.float64).reshape(-1))
        self.high = torch.from_numpy(np.asarray(space.high, dtype=np.float64).reshape(-1))
        self.action_space = policy.action_space
        want = output_width(policy.action_space, policy.output)
        if self.net.out_dim != want:
            raise SpaceMismatch(
                f"the actor outputs {self.net.out_dim} numbers, "
                f"{describe_space(policy.action_space)} with output {policy.output!r} needs {want}"
            )
        with torch.no_grad():
            out = policy.torch_module()(torch.from_numpy(obs32))
        self.clean = out.detach().to("cpu", torch.float32).reshape(self.n, -1).numpy()
        if not np.isfinite(self.clean).all():
            rows = np.flatnonzero(~np.isfinite(self.clean).all(axis=1))
            raise ConfigError(
                f"the policy's outputs are NaN or infinite on {rows.size} observations (first: "
                f"row {int(rows[0])}); no bound is certified for a network that overflows"
            )

    def radius(self, eps: Any) -> np.ndarray:
        """A budget as radii ``(d,)`` (scalar or per feature) or ``(B, d)`` (per state)."""
        arr = np.asarray(eps, dtype=np.float64)
        d, shape = self.net.in_dim, self.obs_shape
        if arr.ndim == 0 or arr.shape in ((d,), shape):
            return _per_feature(arr, d, "eps")
        if arr.shape in ((self.n, 1), (self.n, d), (self.n, *shape)):
            out = np.broadcast_to(arr.reshape(self.n, -1), (self.n, d))
            if not np.isfinite(out).all() or (out < 0).any():
                raise InvalidBudget("eps must be finite and >= 0")
            return out
        raise InvalidBudget(
            f"eps must be a scalar, one number per feature {shape}, one per state ({self.n}, 1)"
            f" or one per state and feature ({self.n}, {d}); got shape {arr.shape}"
        )

    def box(self, rows: np.ndarray, radius: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The boxes of ``rows`` for per-state radii ``(len(rows), d)`` or ``(d,)``."""
        x0 = self.x0[rows]
        r = torch.from_numpy(np.broadcast_to(radius, x0.shape).astype(np.float64))
        lo = torch.maximum(x0 - r, torch.minimum(self.low, x0))
        hi = torch.minimum(x0 + r, torch.maximum(self.high, x0))
        return lo, hi

    def lower(self, rows: np.ndarray, radius: np.ndarray, spec: torch.Tensor) -> torch.Tensor:
        lo, hi = self.box(rows, radius)
        return _lower(self.net, lo, hi, spec, self.method)

    def output_bounds(self, rows: np.ndarray, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = self.net.out_dim
        eye = torch.eye(n, dtype=_DT)
        low = self.lower(rows, radius, torch.cat([eye, -eye])).numpy()
        lower, upper = low[:, :n], -low[:, n:]
        # a bound that overflowed to NaN says nothing: widen it to the whole line
        lower = np.where(np.isnan(lower), -np.inf, lower)
        upper = np.where(np.isnan(upper), np.inf, upper)
        # on a degenerate box the two bounds meet, up to a rounding that may cross them
        return np.minimum(lower, upper), np.maximum(lower, upper)

    # -- discrete actions ---------------------------------------------------------------
    def n_actions(self, what: str) -> int:
        if not isinstance(self.action_space, gym.spaces.Discrete):
            raise SpaceMismatch(
                f"{what} needs a Discrete action space, got {describe_space(self.action_space)}"
            )
        return int(self.action_space.n)

    def clean_index(self) -> np.ndarray:
        idx: np.ndarray = self.clean.argmax(axis=1)
        return idx

    def certified_discrete(self, rows: np.ndarray, radius: np.ndarray) -> np.ndarray:
        """Whether the clean action provably stays the unique argmax in each row's box."""
        n = self.n_actions("certification")
        if n == 1:
            return np.ones(len(rows), dtype=bool)
        c = torch.from_numpy(self.clean_index()[rows])
        eye = torch.eye(n, dtype=_DT)
        others = torch.tensor([[b for b in range(n) if b != a] for a in range(n)])
        spec = eye[c][:, None, :] - eye[others[c]]  # rows e_c - e_b, b != c
        low = self.lower(rows, radius, spec)
        ok: np.ndarray = (torch.isfinite(low) & (low > 0)).all(dim=1).numpy()  # NaN: not > 0
        return ok

    # -- continuous actions -------------------------------------------------------------
    def box_actions(self, what: str) -> gym.spaces.Box:
        if not isinstance(self.action_space, gym.spaces.Box):
            raise SpaceMismatch(
                f"{what} needs a Box action space, got {describe_space(self.action_space)}"
            )
        return self.action_space

    def action_bounds(self, rows: np.ndarray, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        box = self.box_actions("action bounds")
        low, high = self.output_bounds(rows, radius)
        a_lo = np.asarray(box.low, dtype=np.float64).reshape(-1)
        a_hi = np.asarray(box.high, dtype=np.float64).reshape(-1)
        return np.clip(low, a_lo, a_hi), np.clip(high, a_lo, a_hi)

    def certified_continuous(
        self, rows: np.ndarray, radius: np.ndarray, delta: np.ndarray
    ) -> np.ndarray:
        box = self.box_actions("certification with delta")
        low, high = self.action_bounds(rows, radius)
        a_lo = np.asarray(box.low, dtype=np.float64).reshape(-1)
        a_hi = np.asarray(box.high, dtype=np.float64).reshape(-1)
        clean = np.clip(self.clean[rows].astype(np.float64), a_lo, a_hi)
        # NaN (and an infinite bound) compares False: not certified
        ok: np.ndarray = ((high - clean <= delta) & (clean - low <= delta)).all(axis=1)
        return ok


def _per_feature(value: Any, d: int, what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(d, float(arr))
    elif arr.size == d:
        arr = arr.reshape(-1)
    else:
        raise InvalidBudget(
            f"{what} must be a scalar or one number per feature ({d}), got shape {arr.shape}"
        )
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise InvalidBudget(f"{what} must be finite and >= 0, got {value!r}")
    return arr


def _all(problem: _Problem) -> np.ndarray:
    return np.arange(problem.n)


# -- public API -----------------------------------------------------------------------------


def output_bounds(
    policy: DifferentiablePolicy, observations: np.ndarray, eps: Any, *, method: Method = "crown"
) -> tuple[np.ndarray, np.ndarray]:
    """Certified lower and upper bounds on the actor's outputs over each state's box.

    The outputs are what ``policy.torch_module()`` returns: logits, Q-values, or continuous
    actions *before* clipping to the action space (see :func:`action_bounds` for clipped
    ones), flattened to ``(B, n_outputs)``.

    Args:
        observations: clean observations ``(B, *observation_shape)``.
        eps: linf radius in raw observation units: a scalar, one number per feature, or one
            per state ``(B, 1)`` or per state and feature ``(B, d)``.
        method: ``"crown"`` (tighter) or ``"ibp"`` (faster, looser).

    Returns:
        ``(lower, upper)``, float64 arrays of shape ``(B, n_outputs)``.

    Raises:
        SpaceMismatch: not a Box observation space, or observations of the wrong shape.
        ConfigError: the actor holds a layer that cannot be bounded (the message names it).
        InvalidBudget: ``eps`` negative, not finite or of the wrong shape.

    Example:
        >>> import gymnasium as gym, numpy as np, torch
        >>> from rlsec.policies import from_torch
        >>> lin = torch.nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        ...     _ = lin.bias.zero_()
        >>> p = from_torch(lin, gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2))
        >>> lo, hi = output_bounds(p, np.array([[0.5, 0.0]], dtype=np.float32), [0.1, 0.2])
        >>> lo.round(6).tolist(), hi.round(6).tolist()
        ([[0.2, 0.2]], [[0.8, 0.8]])
    """
    problem = _Problem(policy, observations, method)
    return problem.output_bounds(_all(problem), problem.radius(eps))


def action_bounds(
    policy: DifferentiablePolicy, observations: np.ndarray, eps: Any, *, method: Method = "crown"
) -> tuple[np.ndarray, np.ndarray]:
    """Certified per-dimension bounds on a continuous policy's action (clipped to the space).

    Args:
        observations: clean observations ``(B, *observation_shape)``.
        eps: linf radius in raw observation units: a scalar, one number per feature, or one
            per state ``(B, 1)`` or per state and feature ``(B, d)``.
        method: ``"crown"`` or ``"ibp"``.

    Returns:
        ``(lower, upper)``, float64 arrays of shape ``(B, action_dim)``: every action the
        policy takes on a state of the box lies between them.

    Raises:
        SpaceMismatch: the action space is not a Box (and the errors of :func:`output_bounds`).

    Example:
        >>> from rlsec.policies import load_policy
        >>> p = load_policy("zoo:pendulum-sac")
        >>> x0 = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)
        >>> lo, hi = action_bounds(p, x0, 0.01)
        >>> a = p.act(x0)
        >>> bool(lo[0, 0] <= a[0, 0] <= hi[0, 0] and -2 <= lo[0, 0] and hi[0, 0] <= 2)
        True
    """
    problem = _Problem(policy, observations, method)
    return problem.action_bounds(_all(problem), problem.radius(eps))


def reachable_actions(
    policy: DifferentiablePolicy, observations: np.ndarray, eps: Any, *, method: Method = "crown"
) -> np.ndarray:
    """Which discrete actions the policy may take somewhere in each state's box.

    Action ``a`` is ruled out only when some action ``b`` provably beats it everywhere in
    the box (a certified lower bound of ``out_b - out_a`` above 0, CROWN bounding the margin
    directly). The result over-approximates the set of argmax actions over the box (sound
    for an attacker's choices); the clean action is always in it. Column ``i`` is action
    ``action_space.start + i``. Q-value policies are treated like logits.

    Args:
        observations: clean observations ``(B, *observation_shape)``.
        eps: linf radius in raw observation units: a scalar, one number per feature, or one
            per state ``(B, 1)`` or per state and feature ``(B, d)``.
        method: ``"crown"`` or ``"ibp"``.

    Returns:
        Boolean array ``(B, n_actions)``.

    Raises:
        SpaceMismatch: the action space is not Discrete (and the errors of
            :func:`output_bounds`).

    Example:
        >>> import gymnasium as gym, numpy as np, torch
        >>> from rlsec.policies import from_torch
        >>> lin = torch.nn.Linear(1, 3)
        >>> with torch.no_grad():  # logits x, 0.1, -x: action 1 iff |x| < 0.1
        ...     _ = lin.weight.copy_(torch.tensor([[1.0], [0.0], [-1.0]]))
        ...     _ = lin.bias.copy_(torch.tensor([0.0, 0.1, 0.0]))
        >>> p = from_torch(lin, gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(3))
        >>> reachable_actions(p, np.array([[0.5], [0.05]], dtype=np.float32), 0.1).tolist()
        [[True, False, False], [True, True, False]]
    """
    problem = _Problem(policy, observations, method)
    n = problem.n_actions("reachable_actions")
    rows = _all(problem)
    clean = problem.clean_index()
    reach = np.zeros((problem.n, n), dtype=bool)
    reach[rows, clean] = True
    if n == 1:
        return reach
    eye = torch.eye(n, dtype=_DT)
    # rows grouped by the action under test a: e_b - e_a for every b != a
    spec = torch.stack([eye[b] - eye[a] for a in range(n) for b in range(n) if b != a])
    low = problem.lower(rows, problem.radius(eps), spec).reshape(problem.n, n, n - 1)
    beaten = torch.isfinite(low) & (low > 0)  # a NaN or infinite bound rules nothing out
    reach |= ~beaten.any(dim=2).numpy()
    return reach


def certify(
    policy: DifferentiablePolicy,
    observations: np.ndarray,
    eps: Any,
    *,
    method: Method = "crown",
    delta: Any = None,
) -> np.ndarray:
    """Whether each state's action provably does not change anywhere in its box.

    Discrete actions: the clean action stays the unique argmax (margins against every other
    action bounded above 0). Continuous actions (pass ``delta``): every dimension of the
    clipped action stays within ``delta`` (scalar or per dimension, action units) of the clean
    clipped action.

    Args:
        observations: clean observations ``(B, *observation_shape)``.
        eps: linf radius in raw observation units: a scalar, one number per feature, or one
            per state ``(B, 1)`` or per state and feature ``(B, d)``.
        method: ``"crown"`` or ``"ibp"``.
        delta: tolerance on continuous actions; required for them, refused for discrete ones.

    Returns:
        Boolean array ``(B,)``.

    Raises:
        ConfigError: ``delta`` missing for a Box action space or given for another.
        SpaceMismatch: neither a Discrete nor a Box action space (and the errors of
            :func:`output_bounds`).

    Example:
        >>> import gymnasium as gym, numpy as np, torch
        >>> from rlsec.policies import from_torch
        >>> lin = torch.nn.Linear(1, 2)
        >>> with torch.no_grad():  # logits x, 0: action 0 iff x > 0
        ...     _ = lin.weight.copy_(torch.tensor([[1.0], [0.0]]))
        ...     _ = lin.bias.zero_()
        >>> p = from_torch(lin, gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(2))
        >>> certify(p, np.array([[0.5], [0.05]], dtype=np.float32), 0.1).tolist()
        [True, False]
    """
    problem = _Problem(policy, observations, method)
    check = _checker(problem, delta)
    return check(_all(problem), problem.radius(eps))


def certified_radius(
    policy: DifferentiablePolicy,
    observations: np.ndarray,
    *,
    method: Method = "crown",
    eps_max: float = 1.0,
    tol: float = 1e-3,
    scale: Any = None,
    delta: Any = None,
) -> np.ndarray:
    """Per state, the largest certified linf radius, found by bisection (batched over states).

    The radius is in units of ``scale`` (a per-feature vector, e.g. the observation standard
    deviations; the box is ``x0 ± r·scale``; features with scale 0 are not perturbed), or in
    raw observation units when ``scale`` is None. For discrete actions it is the largest
    ``r`` at which :func:`certify` proves the action unchanged; for continuous actions (pass
    ``delta``) the largest at which every action dimension provably stays within ``delta``
    of the clean action. The answer is certified (a lower end of the bisection interval)
    and within ``tol`` of the largest radius the method can certify; states certified at
    ``eps_max`` get ``eps_max`` (read it as "at least"), and 0 means none was certified.

    Args:
        observations: clean observations ``(B, *observation_shape)``.
        method: ``"crown"`` or ``"ibp"``.
        eps_max: the largest radius tried (in units of ``scale``).
        tol: bisection precision (in units of ``scale``).
        scale: per-feature unit of the radius; None for raw units.
        delta: action tolerance for continuous actions, as in :func:`certify`.

    Returns:
        Float64 array ``(B,)``.

    Raises:
        InvalidBudget: ``eps_max``, ``tol`` or ``scale`` out of range (and the errors of
            :func:`certify`).

    Example:
        >>> import gymnasium as gym, numpy as np, torch
        >>> from rlsec.policies import from_torch
        >>> lin = torch.nn.Linear(2, 2)
        >>> with torch.no_grad():  # logits x1 + x2, 0: the margin shrinks by 2ε
        ...     _ = lin.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
        ...     _ = lin.bias.zero_()
        >>> p = from_torch(lin, gym.spaces.Box(-9, 9, (2,)), gym.spaces.Discrete(2))
        >>> x0 = np.array([[0.5, 0.5], [0.1, 0.0]], dtype=np.float32)
        >>> certified_radius(p, x0, eps_max=2.0, tol=1e-4).round(3).tolist()
        [0.5, 0.05]
    """
    problem = _Problem(policy, observations, method)
    d = problem.net.in_dim
    unit = np.ones(d) if scale is None else _per_feature(scale, d, "scale")
    if not (math.isfinite(eps_max) and eps_max > 0):
        raise InvalidBudget(f"eps_max must be finite and > 0, got {eps_max!r}")
    if not (math.isfinite(tol) and tol > 0):
        raise InvalidBudget(f"tol must be finite and > 0, got {tol!r}")
    with np.errstate(over="ignore"):
        widest = eps_max * unit
    if not np.isfinite(widest).all():
        raise InvalidBudget(f"eps_max * scale overflows: eps_max={eps_max!r}")
    check = _checker(problem, delta)
    rows = _all(problem)
    lo = np.zeros(problem.n)
    hi = np.full(problem.n, float(eps_max))
    done = check(rows, eps_max * unit)
    lo[done] = eps_max
    active = rows[~done]
    for _ in range(max(0, math.ceil(math.log2(eps_max / tol)))):
        if active.size == 0:
            break
        mid = 0.5 * (lo[active] + hi[active])
        ok = check(active, mid[:, None] * unit[None, :])
        lo[active[ok]] = mid[ok]
        hi[active[~ok]] = mid[~ok]
    return lo


def _checker(problem: _Problem, delta: Any) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The certification test for the problem's action space: ``(rows, radius) -> ok``."""
    if isinstance(problem.action_space, gym.spaces.Box):
        if delta is None:
            raise ConfigError(
                "continuous actions need delta: the tolerance within which the action must stay"
            )
        box = problem.box_actions("certification")
        tol = _per_feature(delta, int(np.prod(box.shape)), "delta")
        return lambda rows, radius: problem.certified_continuous(rows, radius, tol)
    if delta is not None:
        raise ConfigError(
            "delta applies to continuous actions only; got it for "
            f"{describe_space(problem.action_space)}"
        )
    problem.n_actions("certification")
    return problem.certified_discrete
