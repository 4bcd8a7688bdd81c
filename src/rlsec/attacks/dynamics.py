"""Attacks on the dynamics surface: the world the agent acts in behaves differently.

The agent sees true observations and its actions are executed as chosen, but the physics
between them is not the one it was trained for. Every attack here is a Gymnasium wrapper
(:meth:`DynamicsAttack.as_wrapper`) usable at deployment (the plant was tampered with or is
pushed while the policy runs) and during training (``train_policy(..., wrap_env=...)``: the
agent learns in a tampered simulator, or, as in RARL, against an adversary):

* :class:`ShiftDynamics` (``shift-dynamics-v1``): the environment's physical parameters
  (masses, lengths, gravity, actuator strength) changed at every reset, each by a relative
  amount of at most ε (``0.2`` = ±20% of its nominal value), in a chosen direction or drawn
  uniformly per episode. The parameters rlsec knows per environment, the attributes they
  live in and the derived attributes recomputed from them are in
  :data:`~rlsec.attacks.physics.ENV_DYNAMICS`.
* :class:`NoiseDynamics` (``noise-dynamics-v1``): a random disturbance on every step,
  uniform in ``[-ε, ε]`` times the environment's own actuation: the baseline.
* :class:`DisturbanceDynamics` (``rarl-dynamics-v1``): the learned disturbance adversary of
  RARL (Pinto et al. 2017): a PPO policy, trained against the fixed victim to minimise its
  return, that chooses a disturbance in the same bounds on every step.

Budgets (threat-model norm ``linf``, unit ``raw``; ``params()["epsilon_unit"]`` says what ε
measures, and every result records it). For shifts, ε is a relative change of each chosen
parameter: ``|value - nominal| <= ε·|nominal|``. For disturbances, ε is a fraction of the
environment's own actuation, read from the environment on every step:

============================  ==============================================  ===============
environment                   disturbance                                     actuation (ε=1)
============================  ==============================================  ===============
CartPole                      horizontal force on the cart                    ``force_mag``
Pendulum                      torque at the joint                             ``max_torque``
Acrobot                       torque at the actuated (second) joint           ``max|AVAIL_TORQUE|``
MountainCar                   push along the track (velocity change a step)   ``force``
MountainCarContinuous         push along the track (velocity change a step)   ``power·max_action``
============================  ==============================================  ===============

The disturbance is applied inside the environment's own ``step`` by
:class:`~rlsec.attacks.physics.DisturbanceWrapper` (see :mod:`rlsec.attacks.physics`); the
RARL adversary is trained in :mod:`rlsec.attacks.rarl`. The run-time check raises
:class:`~rlsec.errors.BudgetViolation` if a shift or a disturbance ever left its bounds.
Wrappers keep Gymnasium's ``step`` signature and record what they did in ``info``
(``rlsec_dynamics`` at reset, ``rlsec_disturbance`` on each step). Vector envs:
``gym.make_vec(env_id, n)`` builds CartPole's numpy-vectorised implementation, which has no
per-copy attributes; use ``vectorization_mode="sync"`` with
``wrappers=[lambda e: attack.as_wrapper(e, seed=...)]`` (as
:func:`~rlsec.evaluate.dynamics.dynamics_damage` does).

These are not in :data:`rlsec.attacks.ATTACKS` (the inference-time observation and action
suite); build them with :func:`make_dynamics_attack`.

Example:
    >>> import gymnasium as gym
    >>> attack = make_dynamics_attack("shift-dynamics-v1", 0.2, parameters=["masspole"],
    ...                               direction="up")
    >>> env = attack.as_wrapper(gym.make("CartPole-v1"), seed=0)
    >>> _, info = env.reset(seed=0)
    >>> shift = info["rlsec_dynamics"]["parameters"]["masspole"]
    >>> shift["nominal"], round(shift["value"], 6), round(env.unwrapped.total_mass, 6)
    (0.1, 0.12, 1.12)
"""

from __future__ import annotations

import difflib
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import gymnasium as gym
import numpy as np

from rlsec.attacks.physics import (
    _REL,
    ENV_DYNAMICS,
    DisturbanceWrapper,
    DynamicsParameter,
    _env_name,
    _known_parameter_names,
    _wrappers_beneath,
    env_dynamics,
)
from rlsec.attacks.rarl import RARLConfig, load_or_train_adversary
from rlsec.core import Attack, Policy, Surface, ThreatModel
from rlsec.errors import BudgetViolation, ConfigError, InvalidBudget, UnknownAttack

if TYPE_CHECKING:
    from rlsec.policies import TorchPolicy

__all__ = [
    "DYNAMICS_ATTACKS",
    "DisturbanceDynamics",
    "DynamicsAttack",
    "NoiseDynamics",
    "ParameterShiftWrapper",
    "ShiftDynamics",
    "make_dynamics_attack",
]

# MITRE ATLAS. AML.T0041 Physical Environment Access: the adversary acts on the physical world
# the AI system senses and controls rather than on its digital inputs; changing the plant's
# parameters or pushing it is exactly that, and the closest technique ATLAS has for it.
# AML.T0031 Erode AI Model Integrity: the impact sought, degraded performance of the deployed
# model. The learned adversary is also AML.T0043.001 Craft Adversarial Data: Black-Box
# Optimization: it optimises its disturbances by querying the victim through rollouts only.
_PHYSICAL = "AML.T0041"
_ERODE = "AML.T0031"
_BLACK_BOX = "AML.T0043.001"

Direction = Literal["up", "down", "uniform"]
_DIRECTIONS = ("up", "down", "uniform")


# -- the attacks ---------------------------------------------------------------------------------
class DynamicsAttack(Attack):
    """Base of dynamics attacks: a wrapper factory with a budget check and a usage tally.

    Dynamics attacks change the world, not what the policy sees or does, so they apply to any
    policy; whether they apply to an environment is :meth:`check_env`.
    """

    surface: ClassVar[Surface] = Surface.DYNAMICS
    norms: ClassVar[tuple[str, ...]] = ("linf",)
    knowledge: ClassVar[Literal["white-box", "black-box"]] = "black-box"
    epsilon_unit: ClassVar[str] = ""

    def __init__(self, threat_model: ThreatModel) -> None:
        super().__init__(threat_model)
        if threat_model.unit != "raw":
            raise ConfigError(
                f"{self.id} measures ε as {self.epsilon_unit} (threat-model unit 'raw'); "
                f"got unit {threat_model.unit!r}"
            )
        if threat_model.frequency != "every-step":
            raise ConfigError(
                f"{self.id} acts on every episode or step; got frequency {threat_model.frequency!r}"
            )
        self.reset_usage()

    @property
    def label(self) -> str:
        """A short human name of this configuration (used in tables)."""
        return self.id

    def check_applicable(self, policy: Policy) -> None:
        """Dynamics attacks change the world, not the policy's inputs or outputs: any policy."""

    @abstractmethod
    def check_env(self, env: gym.Env[Any, Any] | str) -> None:
        """Raise :class:`~rlsec.errors.ConfigError` unless this attack can act on ``env``."""

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
        """Check the policy and, when given, the environment. Dynamics attacks act through
        :meth:`as_wrapper`; ``num_envs``, ``rng``, ``scale`` and ``horizon`` are unused."""
        self.check_applicable(policy)
        if env_id is not None:
            self.check_env(env_id)

    @abstractmethod
    def as_wrapper(
        self, env: gym.Env[Any, Any], *, seed: int | None = None
    ) -> gym.Wrapper[Any, Any, Any, Any]:
        """A Gymnasium wrapper applying this attack to ``env`` (apply it directly on the
        environment, beneath any wrapper that transforms actions or observations).

        ``seed`` makes the attack's random choices reproducible; a ``reset(seed=s)`` reseeds
        them from ``(seed, s)``, so copies of a vector env reset with different seeds draw
        differently, and the same seeds replay the same episodes."""

    def params(self) -> dict[str, Any]:
        return {"epsilon_unit": self.epsilon_unit}

    # -- the usage tally ---------------------------------------------------------------------
    def reset_usage(self) -> None:
        """Zero the tally of :meth:`usage`."""
        self._episodes = 0
        self._steps = 0
        self._max_fraction = 0.0

    def usage(self) -> dict[str, Any]:
        """What the attack's wrappers did since the last :meth:`reset_usage`: episodes begun,
        steps disturbed (0 for shifts, which act at reset), and the largest change as a
        fraction of its budget (never above 1: the run-time check raises first)."""
        return {
            "episodes": self._episodes,
            "steps": self._steps,
            "max_budget_fraction": self._max_fraction,
        }

    def _spend(self, change: float, bound: float, what: str) -> None:
        """Check one change against its bound (raising if it left it) and tally it."""
        if not abs(change) <= bound * (1 + _REL) + 1e-12:
            raise BudgetViolation(
                f"{self.id}: {what} changed by {change!r}, outside its bound ±{bound!r} "
                f"(ε = {self.threat_model.epsilon})"
            )
        if bound > 0:
            self._max_fraction = max(self._max_fraction, min(1.0, abs(change) / bound))


class ShiftDynamics(DynamicsAttack):
    """Shifted physical parameters: each chosen parameter moves by a relative ``r`` with
    ``|r| <= ε`` at every reset: ``value = nominal · (1 + r)``.

    ``direction`` ``up`` sets ``r = +ε``, ``down`` ``r = -ε``, ``uniform`` draws ``r`` uniformly
    in ``[-ε, ε]`` for each parameter and episode from the wrapper's seeded generator. Derived
    attributes (CartPole's ``total_mass`` and ``polemass_length``, Acrobot's centres of mass)
    are recomputed after every shift. The nominal values are those the environment holds when
    it is wrapped.

    Args:
        threat_model: surface ``dynamics``, norm ``linf``, unit ``raw`` (ε relative), phase
            ``deployment`` or ``training``. ε < 1 when a parameter may move down.
        parameters: names from :data:`~rlsec.attacks.physics.ENV_DYNAMICS` (rlsec's or the
            attribute's), or a mapping from name to direction; ``None``: every parameter of
            the environment.
        direction: the direction of every parameter, unless ``parameters`` is a mapping.

    Raises:
        ConfigError: a parameter no known environment has (with the closest names), a
            direction other than ``up``/``down``/``uniform``.
        InvalidBudget: ε >= 1 with a direction that could make a parameter 0 or negative.
    """

    id = "shift-dynamics-v1"
    atlas = (_PHYSICAL, _ERODE)
    reference = (
        "parameter shifts of the simulator, the test of robustness to model mismatch in "
        "Pinto et al. 2017 (RARL) and Rajeswaran et al. 2017 (EPOpt)"
    )
    epsilon_unit = "relative change of each shifted parameter (0.2 = ±20% of nominal)"

    def __init__(
        self,
        threat_model: ThreatModel,
        *,
        parameters: Sequence[str] | Mapping[str, Direction] | None = None,
        direction: Direction = "uniform",
    ) -> None:
        super().__init__(threat_model)
        if direction not in _DIRECTIONS:
            raise ConfigError(f"direction must be one of {list(_DIRECTIONS)}, got {direction!r}")
        if isinstance(parameters, str):
            parameters = [parameters]
        plan: dict[str, Direction] | None
        if parameters is None:
            plan = None
        elif isinstance(parameters, Mapping):
            plan = dict(parameters)
        else:
            plan = dict.fromkeys(parameters, direction)
        if plan is not None:
            if not plan:
                raise ConfigError("parameters is empty: name at least one, or pass None (all)")
            known = set(_known_parameter_names())
            attrs = {p.attribute for d in ENV_DYNAMICS.values() for p in d.parameters}
            for name, way in plan.items():
                if name not in known and name not in attrs:
                    close = difflib.get_close_matches(name, sorted(known | attrs), n=1)
                    hint = f"did you mean {close[0]}? " if close else ""
                    raise ConfigError(
                        f"unknown dynamics parameter {name!r}; {hint}"
                        f"known: {', '.join(_known_parameter_names())}"
                    )
                if way not in _DIRECTIONS:
                    raise ConfigError(
                        f"direction of {name!r} must be one of {list(_DIRECTIONS)}, got {way!r}"
                    )
        self.plan = plan
        self.direction: Direction = direction
        ways = set(plan.values()) if plan is not None else {direction}
        if ways - {"up"} and threat_model.epsilon >= 1.0:
            raise InvalidBudget(
                f"{self.id}: a parameter moving down by ε >= 1 would reach 0 or below; "
                f"ε must be < 1 with directions {sorted(ways)}, got {threat_model.epsilon!r}"
            )

    @property
    def label(self) -> str:
        if self.plan is None:
            return f"shift all {self.direction}"
        ways = set(self.plan.values())
        if len(ways) == 1:
            return f"shift {'+'.join(self.plan)} {ways.pop()}"
        return "shift " + "+".join(f"{n} {w}" for n, w in self.plan.items())

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "parameters": None if self.plan is None else dict(self.plan),
            "direction": self.direction,
        }

    def resolve(self, env: gym.Env[Any, Any] | str) -> list[tuple[DynamicsParameter, Direction]]:
        """The parameters of ``env`` this attack shifts, with their directions.

        Raises:
            ConfigError: ``env``'s physics is unknown, or it lacks a named parameter (the
                message names the environment, the parameter and the ones it has).
        """
        dyn = env_dynamics(env)
        if self.plan is None:
            return [(p, self.direction) for p in dyn.parameters]
        return [(dyn.parameter(name), way) for name, way in self.plan.items()]

    def check_env(self, env: gym.Env[Any, Any] | str) -> None:
        self.resolve(env)

    def relative_shifts(
        self, directions: Sequence[Direction], rng: np.random.Generator
    ) -> np.ndarray:
        """Pure core: one episode's relative shifts ``r`` for parameters moving this way.

        One uniform draw per parameter is always taken, so the stream does not depend on the
        directions.

        Example:
            >>> tm = ThreatModel(Surface.DYNAMICS, 0.2)
            >>> r = ShiftDynamics(tm).relative_shifts(["up", "down", "uniform"],
            ...                                       np.random.default_rng(0))
            >>> r[:2].tolist(), bool(abs(r[2]) <= 0.2)
            ([0.2, -0.2], True)
        """
        eps = self.threat_model.epsilon
        u = rng.uniform(-eps, eps, size=len(directions))
        fixed = {"up": eps, "down": -eps}
        return np.array([fixed.get(w, float(x)) for w, x in zip(directions, u, strict=True)])

    def as_wrapper(
        self, env: gym.Env[Any, Any], *, seed: int | None = None
    ) -> ParameterShiftWrapper:
        """See :meth:`DynamicsAttack.as_wrapper`; the shift is applied at every reset."""
        return ParameterShiftWrapper(env, self, seed=seed)


class ParameterShiftWrapper(gym.Wrapper[Any, Any, Any, Any]):
    """Apply a :class:`ShiftDynamics` at every reset and record it in the reset's ``info``.

    ``info["rlsec_dynamics"]`` (and :attr:`record`) holds the environment, ε, and per
    parameter its attribute, nominal value, relative shift and new value, plus the derived
    attributes' new values. ``step`` is the environment's own.

    Raises:
        ConfigError: the environment's physics is unknown or lacks a named parameter, or
            another shift wrapper beneath already changes the same attributes.
    """

    def __init__(
        self, env: gym.Env[Any, Any], attack: ShiftDynamics, *, seed: int | None = None
    ) -> None:
        super().__init__(env)
        self.attack = attack
        self.dynamics = env_dynamics(env)
        self.chosen = attack.resolve(env)
        mine = {p.attribute for p, _ in self.chosen}
        for inner in _wrappers_beneath(env):
            clash = (
                mine & {p.attribute for p, _ in inner.chosen}
                if isinstance(inner, ParameterShiftWrapper)
                else set()
            )
            if clash:
                raise ConfigError(
                    f"a shift wrapper beneath already changes {sorted(clash)}: the outer one "
                    "would silently overwrite it; shift each parameter with one ShiftDynamics"
                )
        core = env.unwrapped
        self.nominal = {a: float(getattr(core, a)) for a in self.dynamics.attributes()}
        self._entropy = (
            int(seed) if seed is not None else int(np.random.SeedSequence().generate_state(1)[0])
        )
        self._rng = np.random.default_rng(self._entropy)
        self.env_name = _env_name(env)
        #: The shift applied at the last reset (``None`` before the first).
        self.record: dict[str, Any] | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        if seed is not None:
            self._rng = np.random.default_rng(np.random.SeedSequence([self._entropy, int(seed)]))
        self.record = self._shift()
        return obs, {**info, "rlsec_dynamics": self.record}

    def _shift(self) -> dict[str, Any]:
        attack, core = self.attack, self.env.unwrapped
        eps = attack.threat_model.epsilon
        r = attack.relative_shifts([w for _, w in self.chosen], self._rng)
        shifted: dict[str, Any] = {}
        for (p, way), rel in zip(self.chosen, r, strict=True):
            nominal = self.nominal[p.attribute]
            value = nominal * (1.0 + float(rel))
            attack._spend(value - nominal, eps * abs(nominal), f"{self.env_name}.{p.attribute}")
            setattr(core, p.attribute, value)
            shifted[p.name] = {
                "attribute": p.attribute,
                "direction": way,
                "nominal": nominal,
                "relative": float(rel),
                "value": value,
            }
        self.dynamics.recompute(self.env, self.nominal)
        attack._episodes += 1
        return {
            "attack": attack.id,
            "env": self.env_name,
            "epsilon": eps,
            "parameters": shifted,
            "derived": {a: float(getattr(core, a)) for a in self.dynamics.derived},
        }


class _DisturbanceAttack(DynamicsAttack):
    """Shared shell of per-step disturbances: subclasses choose a direction in [-1, 1]."""

    epsilon_unit = "fraction of the environment's own actuation per step (see ENV_DYNAMICS)"

    def check_env(self, env: gym.Env[Any, Any] | str) -> None:
        env_dynamics(env)

    def _direction(self, obs: Any, rng: np.random.Generator) -> np.ndarray:
        """Pure core: the disturbance for this observation, in ``[-1, 1]`` (scaled to ε·
        actuation by the wrapper)."""
        raise NotImplementedError

    def as_wrapper(self, env: gym.Env[Any, Any], *, seed: int | None = None) -> DisturbanceWrapper:
        """See :meth:`DynamicsAttack.as_wrapper`; a disturbance is applied on every step."""
        return DisturbanceWrapper(
            env, self.threat_model.epsilon, self._direction, seed=seed, attack=self
        )


class NoiseDynamics(_DisturbanceAttack):
    """A random disturbance on every step, uniform in ``[-ε, ε]`` times the actuation: the
    baseline a learned adversary must beat.

    Example:
        >>> import gymnasium as gym
        >>> attack = make_dynamics_attack("noise-dynamics-v1", 0.3)
        >>> env = attack.as_wrapper(gym.make("Pendulum-v1"), seed=0)
        >>> _ = env.reset(seed=0)
        >>> info = env.step(np.array([0.5], dtype=np.float32))[-1]
        >>> bool(abs(info["rlsec_disturbance"]) <= 0.3 * 2.0), info["rlsec_disturbance_bound"]
        (True, 0.6)
    """

    id = "noise-dynamics-v1"
    atlas = (_PHYSICAL, _ERODE)
    reference = "uniform random disturbance baseline (as in Pinto et al. 2017, RARL)"

    @property
    def label(self) -> str:
        return "noise"

    def _direction(self, obs: Any, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=1)


class DisturbanceDynamics(_DisturbanceAttack):
    """The learned disturbance adversary of RARL (Pinto et al. 2017, Robust Adversarial
    Reinforcement Learning).

    With the victim fixed, choosing a disturbance on every step is itself an MDP
    (:class:`~rlsec.attacks.rarl.DisturbanceAdversaryEnv`): the adversary observes the true
    state, applies a disturbance of at most ε times the environment's actuation, and is paid
    the negative of the victim's reward. PPO trains it (:meth:`train_adversary`, with
    :mod:`rlsec.attacks.rarl`); trained adversaries are cached under
    ``RLSEC_HOME/cache/rarl/<key>``, keyed by the victim's digest, the environment, ε and the
    training settings. It needs only query access to the victim.

    RARL proper alternates: the adversary is trained against the current agent, then the agent
    against the current adversary. A trainer can do so from these parts: build the agent's
    learner; build the adversary's with :func:`~rlsec.attacks.rarl.disturbance_learner` on
    :class:`~rlsec.attacks.rarl.DisturbanceAdversaryEnv` copies holding a live view of the
    agent; give the agent environments wrapped by ``as_wrapper(env, adversary=<live view of
    the adversary>)`` (SB3's ``set_env``); then alternate the two learners' ``learn`` calls.
    Live views see every update (``rlsec.defenses._sb3.live_policy`` makes them from SB3
    learners).

    Args:
        threat_model: surface ``dynamics``, norm ``linf``, unit ``raw`` (ε a fraction of the
            actuation).
        config: PPO settings of the adversary; ``timesteps`` and ``train_seed`` override its
            fields.
        cache: reuse and store trained adversaries under ``RLSEC_HOME``.
        adversary: use this trained adversary (environment observations to one action in
            ``[-1, 1]``) instead of training or loading one.

    Example:
        >>> import gymnasium as gym, torch
        >>> from rlsec.policies import from_torch
        >>> push = torch.nn.Linear(4, 1)
        >>> with torch.no_grad():
        ...     _ = push.weight.zero_(), push.bias.fill_(1.0)  # always +1: full push right
        >>> adversary = from_torch(push, gym.make("CartPole-v1").observation_space,
        ...                        gym.spaces.Box(-1, 1, (1,)), output="action")
        >>> attack = make_dynamics_attack("rarl-dynamics-v1", 0.2, adversary=adversary)
        >>> env = attack.as_wrapper(gym.make("CartPole-v1"))
        >>> _ = env.reset(seed=0)
        >>> env.step(0)[-1]["rlsec_disturbance"]  # 0.2 · force_mag, to the right
        2.0
    """

    id = "rarl-dynamics-v1"
    atlas = (_PHYSICAL, _BLACK_BOX, _ERODE)
    reference = "Pinto et al. 2017, Robust Adversarial Reinforcement Learning (RARL)"

    def __init__(
        self,
        threat_model: ThreatModel,
        *,
        config: RARLConfig | None = None,
        timesteps: int | None = None,
        train_seed: int | None = None,
        cache: bool = True,
        adversary: Policy | None = None,
    ) -> None:
        super().__init__(threat_model)
        cfg = config or RARLConfig()
        if timesteps is not None:
            cfg = replace(cfg, timesteps=int(timesteps))
        if train_seed is not None:
            cfg = replace(cfg, train_seed=int(train_seed))
        for name in ("timesteps", "n_envs", "n_steps", "batch_size", "n_epochs"):
            if int(getattr(cfg, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)!r}")
        self.config = cfg
        self.cache = cache
        self.adversary: Policy | None = adversary
        #: Where the adversary came from: ``given``, ``cache`` or ``trained`` ("" before).
        self.origin = "given" if adversary is not None else ""

    @property
    def label(self) -> str:
        return "rarl"

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "adversary_training": asdict(self.config),
            "adversary_origin": self.origin,
        }

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
        """Check the environment and train or load the adversary against ``policy`` (unless
        one was given, or ε = 0)."""
        super().start(policy, num_envs=num_envs, rng=rng, env_id=env_id)
        if self.origin == "given" or self.threat_model.epsilon == 0.0:
            return
        if env_id is None:
            raise ConfigError(f"{self.id} trains against an environment: pass env_id to start()")
        self.train_adversary(policy, env_id, progress=progress)

    def train_adversary(
        self,
        victim: Policy,
        env_id: str,
        *,
        progress: Callable[[float], None] | None = None,
    ) -> TorchPolicy:
        """The adversary for this victim, environment and budget: cached, or trained now with
        PPO (and cached). It becomes this attack's adversary.

        The cache is used only for victims with a digest (``victim.info.sha256``); a live
        view of a learner has none, and its adversary is always trained afresh.
        """
        from rlsec.envs import check_policy_env

        self.check_env(env_id)
        check_policy_env(victim, env_id)
        adversary, origin = load_or_train_adversary(
            victim,
            env_id,
            self.threat_model.epsilon,
            self.config,
            cache=self.cache,
            progress=progress,
        )
        self.adversary, self.origin = adversary, origin
        return adversary

    def _direction(self, obs: Any, rng: np.random.Generator) -> np.ndarray:
        if self.threat_model.epsilon == 0.0:
            return np.zeros(1)
        if self.adversary is None:
            raise ConfigError(
                f"{self.id} has no adversary: call train_adversary(victim, env_id) or "
                "start(...), or pass adversary="
            )
        return _adversary_direction(self.adversary, obs)

    def as_wrapper(
        self,
        env: gym.Env[Any, Any],
        *,
        seed: int | None = None,
        adversary: Policy | None = None,
    ) -> DisturbanceWrapper:
        """Apply the adversary's disturbances to ``env`` on every step.

        Args:
            adversary: use this adversary for this wrapper (a live view of a learner, in
                RARL's alternation); by default the attack's own, which must be trained,
                loaded or given first (unless ε = 0).
            seed: see :meth:`DynamicsAttack.as_wrapper` (the adversary itself is
                deterministic).
        """
        if adversary is None:
            return super().as_wrapper(env, seed=seed)
        _check_adversary(adversary, env)
        chosen = adversary

        def direction(obs: Any, rng: np.random.Generator) -> np.ndarray:
            return _adversary_direction(chosen, obs)

        return DisturbanceWrapper(env, self.threat_model.epsilon, direction, seed=seed, attack=self)


def _adversary_direction(adversary: Policy, obs: Any) -> np.ndarray:
    x = np.asarray(obs, dtype=np.float32)[None]
    return np.asarray(adversary.act(x), dtype=np.float64).reshape(-1)


def _check_adversary(adversary: Policy, env: gym.Env[Any, Any]) -> None:
    space = adversary.action_space
    if not isinstance(space, gym.spaces.Box) or space.shape != (1,):
        raise ConfigError(f"a disturbance adversary acts in Box(-1, 1, (1,)), got {space}")
    want = env.observation_space.shape
    if adversary.observation_space.shape != want:
        raise ConfigError(
            f"the adversary observes shape {adversary.observation_space.shape}, "
            f"the environment gives {want}"
        )


# -- building ----------------------------------------------------------------------------------
DYNAMICS_ATTACKS: dict[str, type[Attack]] = {
    cls.id: cls for cls in (ShiftDynamics, NoiseDynamics, DisturbanceDynamics)
}


def make_dynamics_attack(
    attack_id: str,
    epsilon: float,
    *,
    phase: Literal["deployment", "training"] = "deployment",
    **params: Any,
) -> DynamicsAttack:
    """Build a dynamics attack with an explicit threat model.

    Args:
        attack_id: one of :data:`DYNAMICS_ATTACKS`, e.g. ``shift-dynamics-v1``.
        epsilon: relative change of each parameter (shifts), or fraction of the actuation
            (disturbances).
        phase: ``deployment`` (the policy runs in the tampered world) or ``training`` (it
            learns in it, through ``train_policy(..., wrap_env=...)``); recorded only.
        params: the method's own parameters (``parameters``, ``direction``, ``timesteps``...).

    Example:
        >>> make_dynamics_attack("shift-dynamics-v1", 0.1, phase="training").threat_model.phase
        'training'
        >>> make_dynamics_attack("shift-dynamics-v1", 0.1, parameters=["mass_pole"])
        Traceback (most recent call last):
        ...
        rlsec.errors.ConfigError: unknown dynamics parameter 'mass_pole'; did you mean masspole? known: ...
        >>> make_dynamics_attack("rarl-dynamics-v2", 0.1)
        Traceback (most recent call last):
        ...
        rlsec.errors.UnknownAttack: unknown dynamics attack id 'rarl-dynamics-v2'; did you mean rarl-dynamics-v1? Known: ...
    """  # noqa: E501
    cls = DYNAMICS_ATTACKS.get(attack_id)
    if cls is None or not issubclass(cls, DynamicsAttack):
        close = difflib.get_close_matches(attack_id, DYNAMICS_ATTACKS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UnknownAttack(
            f"unknown dynamics attack id {attack_id!r}; {hint}Known: {', '.join(DYNAMICS_ATTACKS)}"
        )
    tm = ThreatModel(Surface.DYNAMICS, epsilon, "linf", "raw", knowledge=cls.knowledge, phase=phase)
    return cls(tm, **params)
