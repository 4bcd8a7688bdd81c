"""Attacks on the action surface (Tessler et al. 2019, Action Robust RL).

* **PR-MDP** (probabilistic action robust): with probability α the adversary's action is
  executed instead of the agent's.
* **NR-MDP** (noisy action robust, continuous actions): the executed action is the blend
  ``(1 - α)·a_agent + α·a_adversary``.

Each comes in a ``random`` variant (the adversary acts uniformly at random) and an
``adversarial`` variant that uses the victim's own model against it: the action with the
lowest Q-value (or the least preferred logit) for discrete actions; for continuous actions,
the action minimising Q(s, a) found by projected gradient descent when a Q-function exists,
else the corner of the action box farthest from the agent's action.

Example:
    >>> import gymnasium as gym, numpy as np, torch
    >>> from rlsec.core import Surface, ThreatModel
    >>> from rlsec.policies import from_torch
    >>> pol = from_torch(torch.nn.Linear(2, 3), gym.spaces.Box(-1, 1, (2,)),
    ...                  gym.spaces.Discrete(3))
    >>> atk = PRRandomAction(ThreatModel(Surface.ACTION, 1.0, norm="prob", unit="probability"))
    >>> atk.start(pol, num_envs=4, rng=np.random.default_rng(0))
    >>> a = atk.perturb_action(np.zeros((4, 2), np.float32), np.zeros(4, np.int64))
    >>> bool(np.all((a >= 0) & (a < 3)))
    True
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch

from rlsec.attacks.wrappers import ActionAttackWrapper
from rlsec.core import Attack, DifferentiablePolicy, Policy, Surface, ThreatModel
from rlsec.errors import AttackNotApplicable, BudgetViolation, ConfigError

__all__ = [
    "ActionAttack",
    "NRAdversarialAction",
    "NRRandomAction",
    "PRAdversarialAction",
    "PRRandomAction",
    "sample_actions",
]

_ERODE = "AML.T0031"
_EVADE = "AML.T0015"


def sample_actions(space: gym.Space[Any], rng: np.random.Generator, b: int) -> np.ndarray:
    """``b`` actions drawn uniformly from ``space`` with ``rng`` (Box bounds must be finite)."""
    if isinstance(space, gym.spaces.Discrete):
        return rng.integers(space.start, space.start + space.n, size=b).astype(np.int64)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return rng.integers(0, space.nvec, size=(b, *space.nvec.shape)).astype(np.int64)
    if isinstance(space, gym.spaces.MultiBinary):
        return rng.integers(0, 2, size=(b, *space.shape)).astype(np.int8)
    if isinstance(space, gym.spaces.Box):
        return rng.uniform(space.low, space.high, size=(b, *space.shape)).astype(space.dtype)
    raise AttackNotApplicable(f"cannot sample actions from {space}")


class ActionAttack(Attack):
    """Base of action attacks: ``perturb_action(obs, actions) -> executed actions``."""

    surface: ClassVar[Surface] = Surface.ACTION
    mode: ClassVar[Literal["pr", "nr"]]
    variant: ClassVar[Literal["random", "adversarial"]]
    atlas: ClassVar[tuple[str, ...]] = (_ERODE,)
    reference = "Tessler et al. 2019, Action Robust Reinforcement Learning"

    def __init__(self, threat_model: ThreatModel, *, q_steps: int = 10) -> None:
        super().__init__(threat_model)
        if threat_model.unit != "probability":
            raise ConfigError(
                f"{self.id} budgets are probabilities; got unit {threat_model.unit!r}"
            )
        self.q_steps = int(q_steps)
        self._policy: Policy | None = None
        self._rng = np.random.default_rng(0)
        self.last_mask = np.zeros(0, dtype=bool)

    def check_applicable(self, policy: Policy) -> None:
        space = policy.action_space
        if self.mode == "nr" and not isinstance(space, gym.spaces.Box):
            raise AttackNotApplicable(
                f"{self.id} blends continuous actions; the policy has {space}"
            )
        if (
            isinstance(space, gym.spaces.Box)
            and self.variant == "random"
            and not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high)))
        ):
            raise AttackNotApplicable(f"{self.id} samples actions and needs a bounded Box")
        if self.variant == "adversarial" and not isinstance(policy, DifferentiablePolicy):
            raise AttackNotApplicable(f"{self.id} reads the victim's network")

    def params(self) -> dict[str, Any]:
        return {"mode": self.mode, "variant": self.variant, "q_steps": self.q_steps}

    def start(
        self,
        policy: Policy,
        *,
        num_envs: int,
        rng: np.random.Generator,
        scale: np.ndarray | None = None,
        horizon: int | None = None,
        env_id: str | None = None,
        progress: Any = None,
    ) -> None:
        """Bind to a victim; ``scale``, ``horizon``, ``env_id`` and ``progress`` are unused."""
        self.check_applicable(policy)
        self._policy = policy
        self._rng = rng

    def reset(self, env_ids: np.ndarray) -> None:
        """Action attacks keep no per-episode state."""

    @property
    def policy(self) -> Policy:
        if self._policy is None:
            raise ConfigError(f"{self.id}: call start(policy, ...) before perturb_action()")
        return self._policy

    def perturb_action(
        self, observations: np.ndarray, actions: np.ndarray, env_ids: np.ndarray | None = None
    ) -> np.ndarray:
        """The actions the environment will execute, given the agent's ``actions``."""
        space = self.policy.action_space
        a = np.asarray(actions)
        b = a.shape[0]
        if np.asarray(observations).shape[0] != b:
            raise ConfigError(
                f"got {np.asarray(observations).shape[0]} observations for {b} actions"
            )
        alpha = self.threat_model.epsilon
        if alpha == 0.0 or b == 0:
            self.last_mask = np.zeros(b, dtype=bool)
            return a.copy()
        adv = self._adversary(np.asarray(observations), a)
        if self.mode == "pr":
            mask: np.ndarray = np.asarray(self._rng.random(b) < alpha)
            self.last_mask = mask
            shape = (b,) + (1,) * (a.ndim - 1)
            out = np.where(mask.reshape(shape), adv, a).astype(a.dtype)
        else:
            assert isinstance(space, gym.spaces.Box)
            self.last_mask = np.ones(b, dtype=bool)
            blend = (1.0 - alpha) * a.astype(np.float64) + alpha * adv.astype(np.float64)
            out = np.clip(blend, space.low, space.high).astype(space.dtype)
        self.check_executed(a, adv, out, self.last_mask)
        return out

    def check_executed(
        self, actions: np.ndarray, adversary: np.ndarray, executed: np.ndarray, mask: np.ndarray
    ) -> None:
        """The run-time check of the threat model: raise
        :class:`~rlsec.errors.BudgetViolation` unless every executed action is in the action
        space and the adversary stayed within α.

        PR: a row the takeover draw did not select (``mask`` false) executes the agent's
        action exactly. NR: the adversary's action is in the box and each executed feature is
        within ``α·|adversary - c|`` of ``c``, the agent's action clipped into the box (the
        blend, clipped, never moves farther; float32 rounding is allowed for). Every
        comparison accepts only what it shows to hold, so NaN refuses."""
        space = self.policy.action_space
        b = len(executed)
        for row in executed:
            if not space.contains(np.asarray(row, dtype=space.dtype)):
                raise BudgetViolation(f"{self.id} produced an action outside {space}: {row!r}")
        if self.mode == "pr":
            same = np.asarray(executed == actions).reshape(b, -1).all(axis=1)
            kept = np.asarray(mask, dtype=bool) | same
            if not kept.all():
                i = int(np.flatnonzero(~kept)[0])
                raise BudgetViolation(
                    f"{self.id} replaced the agent's action in row {i}, which the takeover "
                    f"draw (probability α={self.threat_model.epsilon:g}) did not select"
                )
            return
        assert isinstance(space, gym.spaces.Box)
        alpha = self.threat_model.epsilon
        low = np.asarray(space.low, dtype=np.float64)
        high = np.asarray(space.high, dtype=np.float64)
        adv = np.asarray(adversary, dtype=np.float64).reshape(executed.shape)
        c = np.clip(np.asarray(actions, dtype=np.float64).reshape(executed.shape), low, high)
        out = np.asarray(executed, dtype=np.float64)
        if not np.all((adv >= low) & (adv <= high)):
            raise BudgetViolation(f"{self.id}'s adversary chose an action outside {space}")
        slack = np.spacing(np.abs(executed).astype(np.float32)).astype(np.float64)
        slack += 1e-9 * (np.abs(c) + np.abs(adv))
        if not np.all(np.abs(out - c) <= alpha * np.abs(adv - c) + slack):
            worst = float(np.nanmax(np.abs(out - c) - alpha * np.abs(adv - c)))
            raise BudgetViolation(
                f"{self.id} moved an executed action farther than α={alpha:g} of the way to "
                f"the adversary's (by {worst:.3g} beyond it)"
            )

    def _adversary(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        if self.variant == "random":
            return self._random(actions.shape[0])
        return self._worst(obs, actions)

    def _random(self, b: int) -> np.ndarray:
        return sample_actions(self.policy.action_space, self._rng, b)

    def _worst(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        pol = self.policy
        assert isinstance(pol, DifferentiablePolicy)
        space = pol.action_space
        x = torch.from_numpy(np.asarray(getattr(pol, "as_batch", np.asarray)(obs)))
        q = pol.q_module()
        with torch.no_grad():
            if isinstance(space, gym.spaces.Discrete):
                scores: torch.Tensor = q(x) if q is not None else pol.torch_module()(x)
                worst: np.ndarray = (scores.argmin(dim=-1) + int(space.start)).numpy()
                return worst.astype(np.int64)
            if isinstance(space, gym.spaces.MultiDiscrete):
                parts = torch.split(pol.torch_module()(x), space.nvec.tolist(), dim=-1)
                return torch.stack([p.argmin(-1) for p in parts], -1).numpy().astype(np.int64)
            if isinstance(space, gym.spaces.MultiBinary):
                return (1 - np.asarray(actions)).astype(np.int8)
        assert isinstance(space, gym.spaces.Box)
        low = np.asarray(space.low, dtype=np.float64)
        high = np.asarray(space.high, dtype=np.float64)
        a = np.asarray(actions, dtype=np.float64)
        mid = np.where(np.isfinite(low + high), 0.5 * (low + high), 0.0)
        corner = np.where(a > mid, low, high)
        corner = np.where(np.isfinite(corner), corner, -a)
        if q is None:
            return corner.astype(space.dtype)
        return self._minimise_q(q, x, corner, low, high).astype(space.dtype)

    def _minimise_q(
        self,
        q: torch.nn.Module,
        x: torch.Tensor,
        start: np.ndarray,
        low: np.ndarray,
        high: np.ndarray,
    ) -> np.ndarray:
        """Sign-gradient descent on Q(s, ·) over the action box from several starts.

        Q need not be convex in the action, so one start can stop in a poor local minimum:
        the farthest corner, the opposite corner and two random points are tried, and each
        row keeps the lowest Q found.
        """
        lo = torch.as_tensor(np.where(np.isfinite(low), low, -1e6), dtype=torch.float32)
        hi = torch.as_tensor(np.where(np.isfinite(high), high, 1e6), dtype=torch.float32)
        span = (hi - lo).clamp_min(1e-6)
        corner = torch.as_tensor(start, dtype=torch.float32)
        starts = [corner, lo + hi - corner]
        for _ in range(2):
            u = torch.as_tensor(self._rng.uniform(size=start.shape), dtype=torch.float32)
            starts.append(lo + u * span)
        best = corner.clone()
        best_q = torch.full((corner.shape[0],), float("inf"))
        for a in starts:
            with torch.enable_grad():
                a, best, best_q = self._descend(q, x, a.clone(), best, best_q, lo, hi, span)
            with torch.no_grad():
                value = q(x, a)
                better = value < best_q
                best_q = torch.where(better, value, best_q)
                best[better] = a[better]
        return best.numpy().astype(np.float64)

    def _descend(
        self,
        q: torch.nn.Module,
        x: torch.Tensor,
        a: torch.Tensor,
        best: torch.Tensor,
        best_q: torch.Tensor,
        lo: torch.Tensor,
        hi: torch.Tensor,
        span: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        for _ in range(self.q_steps):
            a.requires_grad_(True)
            value = q(x, a)
            (g,) = torch.autograd.grad(value.sum(), a)
            with torch.no_grad():
                better = value < best_q
                best_q = torch.where(better, value, best_q)
                best[better] = a[better]
                a = torch.minimum(torch.maximum(a - 0.25 * span * g.sign(), lo), hi)
        return a, best, best_q

    def as_wrapper(self, env: gym.Env[Any, Any], policy: Policy, **start: Any) -> gym.Env[Any, Any]:
        """A Gymnasium wrapper that lets the adversary take over or blend the agent's actions."""
        return ActionAttackWrapper(env, self, policy, **start)


class PRRandomAction(ActionAttack):
    """PR-MDP: with probability α a uniformly random action replaces the agent's."""

    id = "pr-random-act-v1"
    norms = ("prob",)
    mode = "pr"
    variant = "random"
    knowledge = "black-box"


class PRAdversarialAction(ActionAttack):
    """PR-MDP: with probability α the victim's own worst action replaces the agent's."""

    id = "pr-adv-act-v1"
    norms = ("prob",)
    mode = "pr"
    variant = "adversarial"
    atlas = (_ERODE, _EVADE)


class NRRandomAction(ActionAttack):
    """NR-MDP: the executed action is ``(1-α)·a + α·u`` with ``u`` uniform in the action box."""

    id = "nr-random-act-v1"
    norms = ("mix",)
    mode = "nr"
    variant = "random"
    knowledge = "black-box"


class NRAdversarialAction(ActionAttack):
    """NR-MDP: the executed action is blended with the victim's own worst action."""

    id = "nr-adv-act-v1"
    norms = ("mix",)
    mode = "nr"
    variant = "adversarial"
    atlas = (_ERODE, _EVADE)
