"""Attacks on the observation surface: the agent sees ``s + δ`` while the world stays at ``s``.

Every attack here perturbs within the ε-ball of its threat model (``linf`` or ``l2``, in raw
units or per-feature standard deviations) and inside the observation space. The public
:meth:`ObservationAttack.perturb` validates the batch, calls the method's pure core
(:meth:`ObservationAttack._perturb`), projects the result and checks the budget at run time,
raising :class:`~rlsec.errors.BudgetViolation` if anything left it.

Example:
    >>> import gymnasium as gym, numpy as np, torch
    >>> from rlsec.core import Surface, ThreatModel
    >>> from rlsec.policies import from_torch
    >>> policy = from_torch(torch.nn.Linear(2, 2), gym.spaces.Box(-5, 5, (2,)),
    ...                     gym.spaces.Discrete(2))
    >>> attack = PGDObservation(ThreatModel(Surface.OBSERVATION, 0.1))
    >>> attack.start(policy, num_envs=3, rng=np.random.default_rng(0))
    >>> x0 = np.zeros((3, 2), dtype=np.float32)
    >>> bool(np.abs(attack.perturb(x0) - x0).max() <= 0.1)
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, cast

import gymnasium as gym
import numpy as np
import torch

from rlsec.attacks._ball import Ball
from rlsec.attacks._optim import Objective, action_divergence, optimise
from rlsec.attacks.wrappers import ObservationAttackWrapper
from rlsec.core import Attack, DifferentiablePolicy, Policy, Surface, ThreatModel
from rlsec.errors import AttackNotApplicable, BudgetViolation, ConfigError

__all__ = [
    "CriticObservation",
    "FGSMObservation",
    "GaussianNoiseObservation",
    "LearnedObservation",
    "MADObservation",
    "ObservationAttack",
    "PGDL2Observation",
    "PGDObservation",
    "TimedObservation",
    "UniformNoiseObservation",
]

_EVADE = "AML.T0015"
_WHITE_BOX = "AML.T0043.000"
_BLACK_BOX = "AML.T0043.001"


class ObservationAttack(Attack):
    """Base of observation attacks. Subclasses implement :meth:`_perturb` only."""

    surface: ClassVar[Surface] = Surface.OBSERVATION
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2")

    def __init__(self, threat_model: ThreatModel) -> None:
        super().__init__(threat_model)
        self._policy: Policy | None = None
        self._ball: Ball | None = None
        self._rng = np.random.default_rng(0)
        self.num_envs = 0
        #: The victim's actions on the last clean batch, when the method computed them on the
        #: way (gradient attacks do); ``None`` otherwise. Saves the caller a forward pass.
        self.clean_actions: np.ndarray | None = None
        #: The victim's actions on the last perturbed batch that :meth:`perturb` returned, when
        #: the method computed them on the way; ``None`` otherwise. Equal to
        #: ``policy.act(perturb(...))``; saves the caller another forward pass.
        self.adversarial_actions: np.ndarray | None = None
        # Set by _perturb: the actor's output on the candidate batch it returns, if known.
        self._candidate_out: torch.Tensor | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def check_applicable(self, policy: Policy) -> None:
        space = policy.observation_space
        if not isinstance(space, gym.spaces.Box):
            raise AttackNotApplicable(
                f"{self.id} perturbs continuous observations; the policy observes {space}"
            )
        if self.knowledge == "white-box" and not isinstance(policy, DifferentiablePolicy):
            raise AttackNotApplicable(
                f"{self.id} is white-box and needs a differentiable policy (torch_module())"
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
        """See :meth:`rlsec.core.Attack.start`; builds the ε-ball and calls :meth:`_setup`."""
        self.check_applicable(policy)
        space = policy.observation_space
        assert isinstance(space, gym.spaces.Box)
        dim = int(np.prod(space.shape))
        sc = np.ones(dim) if scale is None else np.asarray(scale, dtype=np.float64).reshape(-1)
        if sc.shape != (dim,) or not np.all(np.isfinite(sc)) or np.any(sc < 0):
            raise ConfigError(
                f"scale must be {dim} finite non-negative numbers, got shape {sc.shape}"
            )
        self._policy = policy
        self._ball = Ball(
            self.threat_model.epsilon, self.threat_model.norm, sc, space.low, space.high
        )
        self._rng = rng
        self.num_envs = num_envs
        self.horizon = horizon
        self.env_id = env_id
        self.progress = progress
        self._setup(policy)
        self.reset(np.arange(num_envs))

    def _setup(self, policy: Policy) -> None:
        """Hook: prepare per-run state (called by :meth:`start`)."""

    def reset(self, env_ids: np.ndarray) -> None:
        """Hook: the environments ``env_ids`` begin a new episode."""

    # -- the shell around the pure core -------------------------------------------------------
    @property
    def ball(self) -> Ball:
        if self._ball is None:
            raise ConfigError(f"{self.id}: call start(policy, ...) before perturb()")
        return self._ball

    @property
    def policy(self) -> Policy:
        if self._policy is None:
            raise ConfigError(f"{self.id}: call start(policy, ...) before perturb()")
        return self._policy

    def perturb(self, observations: np.ndarray, env_ids: np.ndarray | None = None) -> np.ndarray:
        """Perturbed copies of a batch of observations, inside the ball and the space.

        Args:
            observations: ``(B, *obs_shape)`` clean observations.
            env_ids: which environments the rows come from (defaults to ``0..B-1``).

        Raises:
            BudgetViolation: the method produced a point outside its budget (never silent).
        """
        ball = self.ball
        x0 = _as_batch(self.policy, observations)
        ids = np.arange(x0.shape[0]) if env_ids is None else np.asarray(env_ids)
        if ids.shape != (x0.shape[0],):
            raise ConfigError(f"env_ids must have shape ({x0.shape[0]},), got {ids.shape}")
        _refuse_non_finite(self.id, x0)
        self.clean_actions = self.adversarial_actions = self._candidate_out = None
        if self.threat_model.epsilon == 0.0 or x0.shape[0] == 0:
            return x0.copy()
        candidate = self._perturb(x0, ids)
        x = ball.project(x0, candidate)
        ball.check(x0, x)
        self._check_run(x0, x, ids)
        out = self._take_candidate_out()
        if out is not None:
            self.adversarial_actions = self._actions_at(x, candidate, out)
        return x

    def _check_run(self, x0: np.ndarray, x: np.ndarray, env_ids: np.ndarray) -> None:
        """Hook: a run-time check of the threat model beyond the ball (the step budget of a
        budgeted attack); raise :class:`~rlsec.errors.BudgetViolation` if it does not hold."""

    def _take_candidate_out(self) -> torch.Tensor | None:
        out, self._candidate_out = self._candidate_out, None
        return out

    def _actions_at(
        self, x: np.ndarray, candidate: np.ndarray, out: torch.Tensor
    ) -> np.ndarray | None:
        """The policy's actions on ``x`` from its output on ``candidate``; rows that the
        projection moved (bitwise) get a forward pass of their own."""
        decode = getattr(self.policy, "decode", None)
        if decode is None:
            return None
        actions = np.asarray(decode(out))
        moved = np.flatnonzero((x != candidate).reshape(len(x), -1).any(axis=1))
        if moved.size:
            actions[moved] = self.policy.act(x[moved])
        return actions

    def _perturb(self, x0: np.ndarray, env_ids: np.ndarray) -> np.ndarray:
        """Pure core: return candidate perturbed observations for the batch."""
        raise NotImplementedError

    def as_wrapper(self, env: gym.Env[Any, Any], policy: Policy, **start: Any) -> gym.Env[Any, Any]:
        """A Gymnasium wrapper that shows the agent perturbed observations."""
        return ObservationAttackWrapper(env, self, policy, **start)


def _as_batch(policy: Policy, observations: np.ndarray) -> np.ndarray:
    as_batch = getattr(policy, "as_batch", None)
    if as_batch is not None:
        return np.asarray(as_batch(observations))
    return np.ascontiguousarray(observations, dtype=np.float32)


def _refuse_non_finite(attack_id: str, x0: np.ndarray) -> None:
    """Refuse a clean batch holding NaN or an infinity, up front: there is no ε-ball around a
    non-finite point (``inf - inf`` is NaN, and a NaN distance compares false with any
    budget), so rlsec does not guess one. :meth:`Ball.check` refuses it again."""
    flat = x0.reshape(len(x0), -1)
    bad = np.argwhere(~np.isfinite(flat))
    if bad.size:
        row, feature = (int(v) for v in bad[0])
        raise ConfigError(
            f"{attack_id} perturbs finite observations; row {row} holds {flat[row, feature]!r} "
            f"at feature {feature} ({len(bad)} non-finite entries in the batch): there is no "
            "ε-ball around a non-finite point"
        )


def _diff(policy: Policy) -> DifferentiablePolicy:
    # check_applicable() verified the protocol once at start(); re-checking a runtime
    # protocol here would cost more than a forward pass of a small policy on every step.
    return cast(DifferentiablePolicy, policy)


class UniformNoiseObservation(ObservationAttack):
    """Noise drawn uniformly from the ε-ball: the baseline every real attack must beat."""

    id = "uniform-obs-v1"
    atlas = (_EVADE,)
    knowledge = "black-box"
    reference = "uniform random noise baseline (as in Zhang et al. 2020, SA-MDP)"

    def _perturb(self, x0: np.ndarray, env_ids: np.ndarray) -> np.ndarray:
        b = x0.shape[0]
        u = self.ball.random_start((b, int(np.prod(x0.shape[1:]))), self._rng)
        return x0 + (u * self.ball.scale).reshape(x0.shape)


class GaussianNoiseObservation(ObservationAttack):
    """Per-feature Gaussian noise of standard deviation ε (ε/√d for l2), clipped to the ball."""

    id = "gaussian-obs-v1"
    atlas = (_EVADE,)
    knowledge = "black-box"
    reference = "Gaussian sensor noise baseline"

    def _perturb(self, x0: np.ndarray, env_ids: np.ndarray) -> np.ndarray:
        d = int(np.prod(x0.shape[1:]))
        sigma = self.threat_model.epsilon
        if self.threat_model.norm == "l2":
            sigma /= np.sqrt(d)
        u = self._rng.normal(0.0, sigma, size=(x0.shape[0], d))
        return x0 + (u * self.ball.scale).reshape(x0.shape)


class _GradientAttack(ObservationAttack):
    """Shared shell of white-box attacks that optimise an objective over the ball."""

    atlas = (_WHITE_BOX, _EVADE)
    objective: ClassVar[str] = "ce"

    def __init__(
        self,
        threat_model: ThreatModel,
        *,
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool = True,
    ) -> None:
        super().__init__(threat_model)
        if int(steps) < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}")
        if step_size is not None and not step_size > 0:
            raise ConfigError(f"step_size must be > 0, got {step_size}")
        self.steps = int(steps)
        self.step_size = step_size
        self.random_start = random_start

    def params(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "step_size": self._step_size(),
            "step_size_unit": "ε units (raw, or clean std per feature)",
            "random_start": self.random_start,
            "objective": self.objective,
        }

    def _step_size(self) -> float:
        # Madry et al. 2018: 2.5·ε/steps lets PGD reach any point of the ball and move along it.
        return (
            self.step_size
            if self.step_size is not None
            else (2.5 * self.threat_model.epsilon / self.steps)
        )

    def _objective(self, x0t: torch.Tensor) -> Objective:
        pol = _diff(self.policy)
        with torch.no_grad():
            clean = pol.torch_module()(x0t)
        self._remember_clean(clean)
        return action_divergence(pol, clean, self.objective)

    def _remember_clean(self, clean: torch.Tensor) -> None:
        decode = getattr(self.policy, "decode", None)
        self.clean_actions = decode(clean) if decode is not None else None

    def _sgld(self) -> float:
        return 0.0

    def _perturb(self, x0: np.ndarray, env_ids: np.ndarray) -> np.ndarray:
        x, self._candidate_out = optimise(
            self._objective(torch.from_numpy(x0)),
            x0,
            self.ball,
            steps=self.steps,
            step_size=self._step_size(),
            rng=self._rng,
            random_start=self.random_start,
            sgld_noise=self._sgld(),
        )
        return x


class PGDObservation(_GradientAttack):
    """Projected gradient descent in the linf ball: maximise cross-entropy to the clean action."""

    id = "pgd-obs-v1"
    norms = ("linf",)
    reference = "Madry et al. 2018; applied to deep RL policies by Huang et al. 2017"


class PGDL2Observation(PGDObservation):
    """Projected gradient descent in the l2 ball."""

    id = "pgd-l2-obs-v1"
    norms = ("l2",)


class FGSMObservation(_GradientAttack):
    """Fast gradient sign method (Huang et al. 2017): one step of size ε toward higher loss.

    For continuous actions the gradient of the action distance is zero at the clean point,
    so the step starts from a random point of the ball.
    """

    id = "fgsm-obs-v1"
    reference = "Huang et al. 2017, Adversarial Attacks on Neural Network Policies"

    def __init__(self, threat_model: ThreatModel) -> None:
        super().__init__(threat_model, steps=1, random_start=False)

    def _setup(self, policy: Policy) -> None:
        self.random_start = isinstance(policy.action_space, gym.spaces.Box)

    def _step_size(self) -> float:
        return self.threat_model.epsilon * (2.0 if self.random_start else 1.0)


class MADObservation(_GradientAttack):
    """Maximal action difference (Zhang et al. 2020): maximise KL(π(s) ‖ π(s+δ)) with SGLD."""

    id = "mad-obs-v1"
    objective = "kl"
    reference = "Zhang et al. 2020, Robust Deep RL against Adversarial Perturbations (SA-MDP)"

    def _sgld(self) -> float:
        # SA-PPO's reference code scales its SGLD noise by sqrt(2·step size).
        return float(np.sqrt(2.0 * self._step_size()))


class CriticObservation(_GradientAttack):
    """Critic-guided attack (Pattanaik et al. 2018): steer the agent toward what its own
    critic rates worst.

    With a Q-function: for discrete actions, maximise the probability of the action with the
    lowest Q(s, ·) at the true state; for continuous actions, minimise Q(s, π(s+δ)). With only
    a state-value function (PPO, A2C), minimise V(s+δ) as SA-PPO's reference code does.
    """

    id = "critic-obs-v1"
    objective = "critic"
    reference = "Pattanaik et al. 2018, Robust Deep RL with Adversarial Attacks"

    def check_applicable(self, policy: Policy) -> None:
        super().check_applicable(policy)
        pol = _diff(policy)
        if pol.q_module() is None and pol.value_module() is None:
            raise AttackNotApplicable(f"{self.id} needs a critic (Q or V); the policy has none")

    def params(self) -> dict[str, Any]:
        p = super().params()
        pol = self._policy
        if pol is not None:
            p["critic"] = "q" if _diff(pol).q_module() is not None else "v"
        return p

    def _objective(self, x0t: torch.Tensor) -> Objective:
        pol = _diff(self.policy)
        q = pol.q_module()
        actor = pol.torch_module()
        if q is None:
            v = pol.value_module()
            assert v is not None
            return lambda x: (-v(x).reshape(-1), None)
        if isinstance(pol.action_space, gym.spaces.Box):

            def low_q(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                out = actor(x)
                return -q(x0t, out).reshape(-1), out

            return low_q
        with torch.no_grad():
            worst = q(x0t).argmin(dim=-1)

        def toward_worst(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = actor(x)
            return -torch.nn.functional.cross_entropy(out, worst, reduction="none"), out

        return toward_worst


class TimedObservation(_GradientAttack):
    """Strategically-timed attack (Lin et al. 2017): attack only when it matters.

    At each step the preference gap ``c(s) = max_a π(a|s) - min_a π(a|s)`` is computed (softmax
    of logits or Q-values). The attack fires, with PGD, when ``c(s)`` reaches the threshold and
    the episode has budget left: at most ``ceil(step_budget · horizon)`` attacked steps per
    episode. The threshold is ``beta`` if given, else the running ``1 - step_budget`` quantile
    of the gaps seen so far, so the attacker spends its budget on the most decisive moments.
    Without a horizon (an environment with no step limit) the episode is taken to last 1000
    steps; the cap is recorded in :meth:`params` as ``max_attacks_per_episode``.

    The step budget is checked at run time, apart from the firing rule: every row that
    :meth:`perturb` returns changed counts against its environment's episode, and a count
    above the cap raises :class:`~rlsec.errors.BudgetViolation`. Each row of a batch must
    come from a different environment (``env_ids`` distinct, in ``[0, num_envs)``). A NaN
    preference gap (a policy whose output is not finite) never fires and never enters the
    running quantile.
    """

    id = "timed-obs-v1"
    reference = "Lin et al. 2017, Tactics of Adversarial Attack on Deep RL Agents"

    def __init__(
        self,
        threat_model: ThreatModel,
        *,
        beta: float | None = None,
        steps: int = 10,
        window: int = 4096,
    ) -> None:
        if threat_model.frequency != "budgeted-steps":
            threat_model = ThreatModel(
                threat_model.surface,
                threat_model.epsilon,
                threat_model.norm,
                threat_model.unit,
                threat_model.knowledge,
                "budgeted-steps",
                0.25,
                threat_model.phase,
            )
        super().__init__(threat_model, steps=steps)
        if beta is not None and (
            isinstance(beta, bool)
            or not isinstance(beta, (int, float, np.integer, np.floating))
            or not math.isfinite(beta)
        ):
            raise ConfigError(f"beta must be a finite number or None, got {beta!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"window must be an integer >= 1, got {window!r}")
        self.beta = beta
        self.window = int(window)
        self.attacked = np.zeros(0, dtype=np.int64)
        self.spent = np.zeros(0, dtype=np.int64)
        self.cap = 0

    def check_applicable(self, policy: Policy) -> None:
        super().check_applicable(policy)
        if not isinstance(policy.action_space, gym.spaces.Discrete):
            raise AttackNotApplicable(
                f"{self.id} needs a preference over discrete actions; got {policy.action_space}"
            )

    def params(self) -> dict[str, Any]:
        return {**super().params(), "beta": self.beta, "max_attacks_per_episode": self.cap}

    def _setup(self, policy: Policy) -> None:
        frac = float(self.threat_model.step_budget or 0.0)
        horizon = self.horizon
        if horizon is not None and (
            isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1
        ):
            raise ConfigError(f"horizon must be an integer >= 1 or None, got {horizon!r}")
        self.cap = int(np.ceil(frac * (1000 if horizon is None else int(horizon))))
        self.attacked = np.zeros(self.num_envs, dtype=np.int64)
        self.spent = np.zeros(self.num_envs, dtype=np.int64)
        self._gaps: list[np.ndarray] = []
        self._seen = 0

    def reset(self, env_ids: np.ndarray) -> None:
        if self.attacked.size:
            self.attacked[env_ids] = 0
            self.spent[env_ids] = 0

    def attacked_steps(self) -> np.ndarray:
        """Steps attacked so far in each environment's current episode."""
        return self.attacked.copy()

    def _threshold(self, gaps: np.ndarray) -> float:
        if self.beta is not None:
            return float(self.beta)
        self._gaps.append(gaps[np.isfinite(gaps)])
        pool = np.concatenate(self._gaps)[-self.window :]
        self._gaps = [pool]
        if pool.size == 0:
            return math.inf
        return float(np.quantile(pool, 1.0 - float(self.threat_model.step_budget or 0.0)))

    def _check_run(self, x0: np.ndarray, x: np.ndarray, env_ids: np.ndarray) -> None:
        """The step budget, counted apart from the firing rule: each returned row that
        differs from its clean row is an attacked step of its environment's episode."""
        moved = np.any((x != x0).reshape(len(x), -1), axis=1)
        np.add.at(self.spent, env_ids[moved], 1)
        over = np.flatnonzero(~(self.spent <= self.cap))
        if over.size:
            e = int(over[0])
            raise BudgetViolation(
                f"{self.id} attacked {int(self.spent[e])} steps of environment {e}'s episode, "
                f"beyond its step budget of {self.cap} (ceil({self.threat_model.step_budget} "
                "· horizon))"
            )

    def _perturb(self, x0: np.ndarray, env_ids: np.ndarray) -> np.ndarray:
        ids = env_ids.astype(np.int64, copy=False)
        if ids.size and (
            not np.array_equal(ids, env_ids)
            or ids.min() < 0
            or ids.max() >= self.num_envs
            or np.unique(ids).size != ids.size
        ):
            raise ConfigError(
                f"{self.id} counts attacked steps per environment: env_ids must be distinct "
                f"integers in [0, {self.num_envs}), got {env_ids.tolist()}"
            )
        pol = _diff(self.policy)
        x0t = torch.from_numpy(x0)
        with torch.no_grad():
            logits = pol.torch_module()(x0t)
        probs = torch.softmax(logits, dim=-1)
        gaps = (probs.max(dim=-1).values - probs.min(dim=-1).values).numpy()
        fire = (gaps >= self._threshold(gaps)) & (self.attacked[env_ids] < self.cap)
        out = x0.copy()
        outputs: torch.Tensor | None = logits
        if fire.any():
            rows = np.flatnonzero(fire)
            out[rows] = super()._perturb(x0[rows], env_ids[rows])
            np.add.at(self.attacked, env_ids[rows], 1)
            if self._candidate_out is None:
                outputs = None
            else:
                outputs = logits.clone()
                outputs[torch.from_numpy(rows)] = self._candidate_out
        start = int(getattr(self.policy.action_space, "start", 0))
        self.clean_actions = probs.argmax(dim=-1).numpy() + start
        self._candidate_out = outputs
        return out


class LearnedObservation(ObservationAttack):
    """The learned optimal adversary of SA-RL (Zhang et al. 2021).

    A PPO policy, trained against this victim in this environment, chooses the perturbation
    in the ε-ball that minimises the victim's return. It needs only query access to the victim
    (black-box). Trained adversaries are cached (see :mod:`rlsec.attacks._learned`); the zoo's
    come pretrained for the default budgets.
    """

    id = "sa-rl-obs-v1"
    atlas = (_BLACK_BOX, _EVADE)
    knowledge = "black-box"
    reference = "Zhang et al. 2021, Robust RL on State Observations with Learned Optimal Adversary"

    def __init__(
        self,
        threat_model: ThreatModel,
        *,
        timesteps: int = 100_000,
        train_seed: int = 0,
        cache: bool = True,
        adversary: Policy | None = None,
    ) -> None:
        """
        Args:
            timesteps: PPO steps to train the adversary for.
            train_seed: seed of the adversary's training.
            cache: reuse and store trained adversaries under ``RLSEC_HOME``.
            adversary: use this trained adversary (observations to actions in [-1, 1]^d,
                scaled to the ε-ball) instead of training or loading one.
        """
        super().__init__(threat_model)
        from rlsec.attacks._learned import SARLConfig

        if int(timesteps) < 1:
            raise ConfigError(f"timesteps must be >= 1, got {timesteps}")
        self.config = SARLConfig(timesteps=int(timesteps), train_seed=int(train_seed))
        self.cache = cache
        self.adversary: Policy | None = adversary
        self.origin = "given" if adversary is not None else ""

    def params(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"adversary_training": asdict(self.config), "adversary_origin": self.origin}

    def _setup(self, policy: Policy) -> None:
        from rlsec.attacks._learned import load_or_train_adversary

        if self.origin == "given" or self.threat_model.epsilon == 0.0:
            return
        if self.env_id is None:
            raise ConfigError(f"{self.id} trains against an environment: pass env_id to start()")
        info = getattr(policy, "info", None)
        sha = getattr(info, "sha256", None) or repr(policy)
        self.adversary, self.origin = load_or_train_adversary(
            policy,
            sha,
            self.env_id,
            self.ball,
            self.config,
            progress=self.progress,
            cache=self.cache,
        )

    def _perturb(self, x0: np.ndarray, env_ids: np.ndarray) -> np.ndarray:
        assert self.adversary is not None
        a = np.clip(self.adversary.act(x0).astype(np.float64).reshape(x0.shape[0], -1), -1, 1)
        return x0 + (a * self.threat_model.epsilon * self.ball.scale).reshape(x0.shape)
