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
  live in and the derived attributes recomputed from them are in :data:`ENV_DYNAMICS`.
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

The disturbance is applied inside the environment's own ``step`` (the force or torque it
integrates is the agent's plus the disturbance) and the attributes it borrows are restored
before ``step`` returns; the reward is the environment's (Pendulum's torque cost is charged
on the agent's own torque, not the adversary's). The run-time check raises
:class:`~rlsec.errors.BudgetViolation` if a shift or a disturbance ever left its bounds.
Wrappers keep Gymnasium's ``step`` signature and record what they did in ``info``
(``rlsec_dynamics`` at reset, ``rlsec_disturbance`` on each step). Vector envs:
``gym.make_vec(env_id, n)`` builds CartPole's numpy-vectorised implementation, which has no
per-copy attributes; use ``vectorization_mode="sync"`` with
``wrappers=[lambda e: attack.as_wrapper(e, seed=...)]`` (as :func:`dynamics_damage` does).

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

import contextlib
import difflib
import hashlib
import json
import time
import zlib
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control import (
    AcrobotEnv,
    CartPoleEnv,
    Continuous_MountainCarEnv,
    MountainCarEnv,
    PendulumEnv,
)

from rlsec.core import Attack, Policy, Surface, ThreatModel
from rlsec.errors import (
    BudgetViolation,
    ConfigError,
    InvalidBudget,
    PolicyLoadError,
    UnknownAttack,
)

if TYPE_CHECKING:
    from rlsec.attacks.rollout import EpisodeStats
    from rlsec.policies import TorchPolicy

__all__ = [
    "DEFAULT_DYNAMICS_EPSILONS",
    "DYNAMICS_ATTACKS",
    "ENV_DYNAMICS",
    "DisturbanceAdversaryEnv",
    "DisturbanceDynamics",
    "DisturbanceWrapper",
    "DynamicsAttack",
    "DynamicsParameter",
    "EnvDynamics",
    "NoiseDynamics",
    "ParameterShiftWrapper",
    "RARLConfig",
    "ShiftDynamics",
    "disturbance_learner",
    "dynamics_damage",
    "env_dynamics",
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
#: Relative slack of the run-time budget checks (floating point only).
_REL = 1e-9
#: Pendulum-v1 charges ``0.001·u²`` for the torque it integrates (gymnasium's pendulum.py).
_PENDULUM_TORQUE_COST = 0.001
#: Budgets of :func:`dynamics_damage` when only attack ids are given.
DEFAULT_DYNAMICS_EPSILONS = (0.1, 0.2, 0.5)

_StepResult = tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]
#: ``(env, unwrapped, action, d) -> (the env's step result, the disturbance it integrated)``
_Mechanism = Callable[[gym.Env[Any, Any], Any, Any, float], tuple[_StepResult, float]]


# -- what rlsec knows of each environment's physics ---------------------------------------------
@dataclass(frozen=True)
class DynamicsParameter:
    """One physical parameter of an environment.

    Attributes:
        name: rlsec's name for it (what :class:`ShiftDynamics` takes).
        attribute: the attribute of the unwrapped environment that holds it.
        meaning: what it is, with its unit.
    """

    name: str
    attribute: str
    meaning: str


@dataclass(frozen=True)
class EnvDynamics:
    """What rlsec knows of one environment's physics: its shiftable parameters, the derived
    attributes recomputed from them, and how a bounded disturbance enters its ``step``.

    Attributes:
        env_id: the Gymnasium id this entry is listed under.
        env_class: the unwrapped environment class (matched with ``isinstance``, so every
            registered version of the environment qualifies).
        parameters: the parameters :class:`ShiftDynamics` can change.
        derived: derived attribute → how it is recomputed after a shift.
        disturbance: what a disturbance is in this environment.
        actuation_meaning: what ε = 1 of a disturbance means.
    """

    env_id: str
    env_class: type[Any]
    parameters: tuple[DynamicsParameter, ...]
    derived: Mapping[str, str]
    disturbance: str
    actuation_meaning: str
    _recompute: Callable[[Any, Mapping[str, float]], None]
    _actuation: Callable[[Any], float]
    _disturb: _Mechanism

    def parameter(self, name: str) -> DynamicsParameter:
        """The parameter called ``name`` (rlsec's name or the attribute's).

        Raises:
            ConfigError: naming the environment, what was asked and what it has.
        """
        for p in self.parameters:
            if name in (p.name, p.attribute):
                return p
        has = ", ".join(f"{p.name} ({p.attribute})" for p in self.parameters)
        raise ConfigError(
            f"{self.env_id} has no dynamics parameter {name!r}; its parameters are: {has}"
        )

    def attributes(self) -> tuple[str, ...]:
        """Every attribute a shift reads or writes: the parameters' and the derived ones."""
        return tuple(p.attribute for p in self.parameters) + tuple(self.derived)

    def actuation(self, env: gym.Env[Any, Any]) -> float:
        """The environment's own actuation now: the size of a disturbance at ε = 1."""
        return float(self._actuation(env.unwrapped))

    def recompute(self, env: gym.Env[Any, Any], nominal: Mapping[str, float]) -> None:
        """Recompute the derived attributes of ``env`` from its current parameters."""
        self._recompute(env.unwrapped, nominal)


def _nothing_derived(core: Any, nominal: Mapping[str, float]) -> None:
    return None


def _cartpole_derived(core: Any, nominal: Mapping[str, float]) -> None:
    core.total_mass = core.masspole + core.masscart
    core.polemass_length = core.masspole * core.length


def _acrobot_derived(core: Any, nominal: Mapping[str, float]) -> None:
    # The centres of mass sit at the same fraction of each link as in the nominal model.
    for i in (1, 2):
        ratio = nominal[f"LINK_COM_POS_{i}"] / nominal[f"LINK_LENGTH_{i}"]
        setattr(core, f"LINK_COM_POS_{i}", ratio * getattr(core, f"LINK_LENGTH_{i}"))


def _cartpole_push(
    env: gym.Env[Any, Any], core: Any, action: Any, d: float
) -> tuple[_StepResult, float]:
    # CartPole integrates force = ±force_mag by the action's sign; an extra horizontal force
    # d on the cart is force_mag + s·d in the direction s of the agent's push: s·F + d.
    f = core.force_mag
    s = 1.0 if bool(np.asarray(action) == 1) else -1.0
    core.force_mag = f + s * d
    try:
        return env.step(action), d
    finally:
        core.force_mag = f


def _pendulum_push(
    env: gym.Env[Any, Any], core: Any, action: Any, d: float
) -> tuple[_StepResult, float]:
    # Pendulum clips the torque to ±max_torque; the joint receives the agent's clipped torque
    # plus d, so the clip is widened for this step. Its cost charges 0.001·u² for the torque
    # it integrates; the agent is charged for its own torque only (the adversary's effort is
    # not the agent's), so that term is corrected. Wrappers beneath this one (SB3's Monitor)
    # see the uncorrected reward, lower by 0.001·((u + d)² - u²).
    mt = core.max_torque
    act = np.asarray(action)
    u = np.clip(act, -mt, mt).reshape(-1)[0]
    dtype = act.dtype if act.dtype.kind == "f" else np.dtype(np.float64)
    total = np.asarray([u + d], dtype=dtype)
    applied = float(total[0]) - float(u)
    core.max_torque = max(float(mt), abs(float(total[0])))
    try:
        obs, reward, terminated, truncated, info = env.step(total)
    finally:
        core.max_torque = mt
    reward = float(reward) + _PENDULUM_TORQUE_COST * (float(total[0]) ** 2 - float(u) ** 2)
    return (obs, reward, terminated, truncated, info), applied


def _acrobot_push(
    env: gym.Env[Any, Any], core: Any, action: Any, d: float
) -> tuple[_StepResult, float]:
    # Acrobot looks its torque up in AVAIL_TORQUE (a class attribute): shadow it on the
    # instance for this step with every entry moved by d.
    own = "AVAIL_TORQUE" in vars(core)
    old = core.AVAIL_TORQUE
    core.AVAIL_TORQUE = [float(t) + d for t in old]
    try:
        return env.step(action), d
    finally:
        if own:
            core.AVAIL_TORQUE = old
        else:
            del core.AVAIL_TORQUE


def _mountain_car_push(
    env: gym.Env[Any, Any], core: Any, action: Any, d: float
) -> tuple[_StepResult, float]:
    # MountainCar adds its force straight to the velocity before clipping and moving; adding
    # d to the velocity first is the same sum.
    position, velocity = core.state
    core.state = np.array([position, velocity + d], dtype=np.float64)
    return env.step(action), d


def _acrobot_actuation(core: Any) -> float:
    return max(abs(float(t)) for t in core.AVAIL_TORQUE)


#: What rlsec knows of each environment's physics, by Gymnasium id (checked against
#: gymnasium 1.4's classic-control sources).
ENV_DYNAMICS: dict[str, EnvDynamics] = {
    d.env_id: d
    for d in (
        EnvDynamics(
            "CartPole-v1",
            CartPoleEnv,
            (
                DynamicsParameter("gravity", "gravity", "gravitational acceleration, m/s²"),
                DynamicsParameter("masscart", "masscart", "mass of the cart, kg"),
                DynamicsParameter("masspole", "masspole", "mass of the pole, kg"),
                DynamicsParameter("length", "length", "half the pole's length, m"),
                DynamicsParameter("force_mag", "force_mag", "force of a push on the cart, N"),
            ),
            {
                "total_mass": "masspole + masscart",
                "polemass_length": "masspole · length",
            },
            "horizontal force on the cart",
            "force_mag (the agent's push)",
            _cartpole_derived,
            lambda core: core.force_mag,
            _cartpole_push,
        ),
        EnvDynamics(
            "Pendulum-v1",
            PendulumEnv,
            (
                DynamicsParameter("gravity", "g", "gravitational acceleration, m/s²"),
                DynamicsParameter("mass", "m", "mass of the pendulum, kg"),
                DynamicsParameter("length", "l", "length of the pendulum, m"),
            ),
            {},
            "torque at the joint",
            "max_torque (the agent's largest torque)",
            _nothing_derived,
            lambda core: core.max_torque,
            _pendulum_push,
        ),
        EnvDynamics(
            "Acrobot-v1",
            AcrobotEnv,
            (
                DynamicsParameter("link_length_1", "LINK_LENGTH_1", "length of link 1, m"),
                DynamicsParameter("link_length_2", "LINK_LENGTH_2", "length of link 2, m"),
                DynamicsParameter("link_mass_1", "LINK_MASS_1", "mass of link 1, kg"),
                DynamicsParameter("link_mass_2", "LINK_MASS_2", "mass of link 2, kg"),
                DynamicsParameter("link_moi", "LINK_MOI", "moment of inertia of each link"),
            ),
            {
                "LINK_COM_POS_1": "LINK_LENGTH_1 · nominal LINK_COM_POS_1 / LINK_LENGTH_1",
                "LINK_COM_POS_2": "LINK_LENGTH_2 · nominal LINK_COM_POS_2 / LINK_LENGTH_2",
            },
            "torque at the actuated (second) joint",
            "max |AVAIL_TORQUE| (the agent's largest torque)",
            _acrobot_derived,
            _acrobot_actuation,
            _acrobot_push,
        ),
        EnvDynamics(
            "MountainCar-v0",
            MountainCarEnv,
            (
                DynamicsParameter("gravity", "gravity", "pull of the slope, velocity per step"),
                DynamicsParameter("force", "force", "the engine's push, velocity per step"),
            ),
            {},
            "push along the track (a velocity change per step)",
            "force (the engine's push)",
            _nothing_derived,
            lambda core: core.force,
            _mountain_car_push,
        ),
        EnvDynamics(
            "MountainCarContinuous-v0",
            Continuous_MountainCarEnv,
            (DynamicsParameter("power", "power", "the engine's push at full throttle"),),
            {},
            "push along the track (a velocity change per step)",
            "power · max_action (the engine's push at full throttle)",
            _nothing_derived,
            lambda core: core.power * core.max_action,
            _mountain_car_push,
        ),
    )
}


def _env_name(env: gym.Env[Any, Any]) -> str:
    spec = env.spec or env.unwrapped.spec
    return spec.id if spec is not None else type(env.unwrapped).__name__


def env_dynamics(env: gym.Env[Any, Any] | str) -> EnvDynamics:
    """What rlsec knows of an environment's physics, by id or for a live environment.

    A live environment is matched by the class of its unwrapped env, an id by its entry
    point, so every registered version of a known environment qualifies.

    Raises:
        ConfigError: rlsec knows nothing of this environment's physics (naming the ones it
            knows).
        UnknownEnv: the id is not registered.

    Example:
        >>> [p.attribute for p in env_dynamics("Pendulum-v1").parameters]
        ['g', 'm', 'l']
        >>> env_dynamics("FrozenLake-v1")
        Traceback (most recent call last):
        ...
        rlsec.errors.ConfigError: rlsec knows no dynamics of FrozenLake-v1; it knows CartPole-v1, Pendulum-v1, Acrobot-v1, MountainCar-v0, MountainCarContinuous-v0
    """  # noqa: E501
    if isinstance(env, str):
        from rlsec.envs import env_spec

        if env in ENV_DYNAMICS:
            return ENV_DYNAMICS[env]
        entry = env_spec(env).entry_point
        for d in ENV_DYNAMICS.values():
            if entry == f"{d.env_class.__module__}:{d.env_class.__name__}":
                return d
        name = env
    else:
        for d in ENV_DYNAMICS.values():
            if isinstance(env.unwrapped, d.env_class):
                return d
        name = _env_name(env)
    raise ConfigError(f"rlsec knows no dynamics of {name}; it knows {', '.join(ENV_DYNAMICS)}")


def _known_parameter_names() -> list[str]:
    return sorted({p.name for d in ENV_DYNAMICS.values() for p in d.parameters})


def _wrappers_beneath(env: gym.Env[Any, Any]) -> list[gym.Env[Any, Any]]:
    out: list[gym.Env[Any, Any]] = []
    while isinstance(env, gym.Wrapper):
        out.append(env)
        env = env.env
    return out


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
        parameters: names from :data:`ENV_DYNAMICS` (rlsec's or the attribute's), or a mapping
            from name to direction; ``None``: every parameter of the environment.
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


@dataclass(frozen=True)
class RARLConfig:
    """Training budget and PPO settings of the RARL adversary (part of its cache key)."""

    timesteps: int = 100_000
    n_envs: int = 8
    n_steps: int = 256
    batch_size: int = 256
    n_epochs: int = 10
    learning_rate: float = 3e-4
    gamma: float = 0.99
    net_arch: tuple[int, ...] = (64, 64)
    train_seed: int = 0


class DisturbanceDynamics(_DisturbanceAttack):
    """The learned disturbance adversary of RARL (Pinto et al. 2017, Robust Adversarial
    Reinforcement Learning).

    With the victim fixed, choosing a disturbance on every step is itself an MDP
    (:class:`DisturbanceAdversaryEnv`): the adversary observes the true state, applies a
    disturbance of at most ε times the environment's actuation, and is paid the negative of
    the victim's reward. PPO trains it (:meth:`train_adversary`); trained adversaries are
    cached under ``RLSEC_HOME/cache/rarl/<key>``, keyed by the victim's digest, the
    environment, ε and the training settings. It needs only query access to the victim.

    RARL proper alternates: the adversary is trained against the current agent, then the agent
    against the current adversary. A trainer can do so from these parts: build the agent's
    learner; build the adversary's with :func:`disturbance_learner` on
    :class:`DisturbanceAdversaryEnv` copies holding a live view of the agent; give the agent
    environments wrapped by ``as_wrapper(env, adversary=<live view of the adversary>)`` (SB3's
    ``set_env``); then alternate the two learners' ``learn`` calls. Live views see every
    update (``rlsec.defenses._sb3.live_policy`` makes them from SB3 learners).

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
        from rlsec._home import cache_dir
        from rlsec.envs import check_policy_env
        from rlsec.policies import load_native, save_policy

        self.check_env(env_id)
        check_policy_env(victim, env_id)
        eps = self.threat_model.epsilon
        sha = getattr(getattr(victim, "info", None), "sha256", "") or ""
        key = _adversary_key(sha, env_id, eps, self.config)
        target = cache_dir("rarl") / key if self.cache and sha else None
        if target is not None and (target / "spec.json").is_file():
            try:
                adversary = load_native(target)
            except PolicyLoadError:
                pass  # a damaged cache entry is retrained and replaced below
            else:
                self.adversary, self.origin = adversary, "cache"
                return adversary
        adversary = _train(victim, env_id, eps, self.config, progress=progress)
        if target is not None:
            # an unwritable cache costs time on the next run, not correctness
            with contextlib.suppress(OSError):
                save_policy(
                    adversary,
                    target,
                    env_id=env_id,
                    algo="ppo",
                    overwrite=True,
                    provenance={
                        "kind": "rarl disturbance adversary",
                        "key": key,
                        "victim": sha,
                        "epsilon": eps,
                        "config": asdict(self.config),
                    },
                )
        self.adversary, self.origin = adversary, "trained"
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


class DisturbanceWrapper(gym.Wrapper[Any, Any, Any, Any]):
    """Apply a bounded disturbance inside every ``step`` of the environment.

    On each step ``direction(obs, rng)`` (the observation the agent is acting on, and the
    wrapper's seeded generator) gives ``a``, clipped to ``[-1, 1]``; the disturbance is
    ``d = a · ε · actuation`` with the actuation read from the environment now (see
    :data:`ENV_DYNAMICS`), and enters the environment's own integration of the step. ``info``
    gains ``rlsec_disturbance`` (``d`` as integrated) and ``rlsec_disturbance_bound``
    (``ε · actuation``). ``step`` keeps Gymnasium's signature.

    Raises:
        ConfigError: the environment's physics is unknown, an action wrapper sits beneath
            (the disturbance reads the action in the environment's own units), or another
            disturbance wrapper does.
    """

    def __init__(
        self,
        env: gym.Env[Any, Any],
        epsilon: float,
        direction: Callable[[Any, np.random.Generator], np.ndarray],
        *,
        seed: int | None = None,
        attack: DynamicsAttack | None = None,
    ) -> None:
        super().__init__(env)
        eps = float(epsilon)
        if not np.isfinite(eps) or eps < 0:
            raise InvalidBudget(f"epsilon must be a finite number >= 0, got {epsilon!r}")
        self.dynamics = env_dynamics(env)
        for inner in _wrappers_beneath(env):
            if isinstance(inner, gym.ActionWrapper):
                raise ConfigError(
                    f"{type(inner).__name__} transforms actions beneath the disturbance; apply "
                    "the disturbance directly on the environment, beneath action wrappers"
                )
            if isinstance(inner, DisturbanceWrapper):
                raise ConfigError("another disturbance wrapper is already beneath this one")
        self.epsilon = eps
        self.direction = direction
        self.attack = attack
        self._entropy = (
            int(seed) if seed is not None else int(np.random.SeedSequence().generate_state(1)[0])
        )
        self._rng = np.random.default_rng(self._entropy)
        self._obs: Any = None
        self.env_name = _env_name(env)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        if seed is not None:
            self._rng = np.random.default_rng(np.random.SeedSequence([self._entropy, int(seed)]))
        self._obs = obs
        if self.attack is not None:
            self.attack._episodes += 1
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._obs is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        bound = self.epsilon * self.dynamics.actuation(self.env)
        a = np.asarray(self.direction(self._obs, self._rng), dtype=np.float64).reshape(-1)
        if a.shape != (1,) or not np.isfinite(a[0]):
            raise ConfigError(f"a disturbance is one finite number, got {a!r}")
        d = float(np.clip(a[0], -1.0, 1.0)) * bound
        (obs, reward, terminated, truncated, info), applied = self.dynamics._disturb(
            self.env, self.env.unwrapped, action, d
        )
        # float32 actions round the torque they carry: allow that rounding, nothing more
        slack = 1e-6 * max(abs(bound), self.dynamics.actuation(self.env))
        if self.attack is not None:
            self.attack._spend(applied, bound + slack, f"{self.env_name} disturbance")
            self.attack._steps += 1
        elif not abs(applied) <= (bound + slack) * (1 + _REL):
            raise BudgetViolation(f"disturbance {applied!r} outside its bound ±{bound!r}")
        self._obs = obs
        info = {**info, "rlsec_disturbance": applied, "rlsec_disturbance_bound": bound}
        return obs, reward, terminated, truncated, info


# -- RARL: the adversary's MDP, its learner and its training -------------------------------------
class DisturbanceAdversaryEnv(gym.Env[np.ndarray, np.ndarray]):
    """RARL's adversary MDP: observe the true state, choose a disturbance, collect the
    victim's -reward.

    The action ``a ∈ [-1, 1]`` becomes the disturbance ``a · ε · actuation`` of
    :class:`DisturbanceWrapper`, applied while the victim's action on the same observation is
    executed. ``victim`` may be a live view of a learner that is still training (RARL's
    alternation): the adversary then plays against its current networks.

    Example:
        >>> from rlsec.policies import load_policy
        >>> env = DisturbanceAdversaryEnv("CartPole-v1", load_policy("zoo:cartpole-ppo"), 0.2)
        >>> _ = env.reset(seed=0)
        >>> obs, reward, *_ = env.step(np.ones(1, dtype=np.float32))
        >>> reward  # CartPole pays the victim +1 per step
        -1.0
    """

    def __init__(self, env_id: str, victim: Policy, epsilon: float) -> None:
        super().__init__()
        self._a = np.zeros(1)
        from rlsec.envs import make

        self.env = DisturbanceWrapper(make(env_id), epsilon, self._planned)
        self.victim = victim
        space = self.env.observation_space
        if not isinstance(space, gym.spaces.Box):
            raise ConfigError(f"the adversary observes Box observations; {env_id} has {space}")
        self.observation_space = gym.spaces.Box(
            low=space.low.astype(np.float32), high=space.high.astype(np.float32), dtype=np.float32
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self._obs: np.ndarray | None = None

    def _planned(self, obs: Any, rng: np.random.Generator) -> np.ndarray:
        return self._a

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._obs = np.asarray(obs, dtype=np.float32)
        return self._obs, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._obs is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        self._a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        victim_action = self.victim.act(self._obs[None])[0]
        obs, reward, term, trunc, info = self.env.step(victim_action)
        self._obs = np.asarray(obs, dtype=np.float32)
        return self._obs, -float(reward), bool(term), bool(trunc), info

    def close(self) -> None:
        self.env.close()


def disturbance_learner(venv: Any, config: RARLConfig) -> Any:
    """The Stable-Baselines3 PPO learner of the adversary, on a vector env of
    :class:`DisturbanceAdversaryEnv` (the same learner as SA-RL's)."""
    from rlsec.attacks._learned import adversary_learner

    return adversary_learner(venv, config)


_VERSION = "rarl-dynamics-v1"


def _adversary_key(victim_sha256: str, env_id: str, epsilon: float, config: RARLConfig) -> str:
    """SHA-256 of everything that determines the trained adversary."""
    body = {
        "version": _VERSION,
        "victim": victim_sha256,
        "env_id": env_id,
        "epsilon": repr(float(epsilon)),
        "config": asdict(config),
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _train(
    victim: Policy,
    env_id: str,
    epsilon: float,
    config: RARLConfig,
    *,
    progress: Callable[[float], None] | None = None,
) -> TorchPolicy:
    """Train the RARL adversary with PPO against the fixed victim; return it as a policy."""
    from rlsec.attacks._learned import train_ppo_adversary

    return train_ppo_adversary(
        lambda: DisturbanceAdversaryEnv(env_id, victim, epsilon),
        config,
        env_id=env_id,
        source="rarl disturbance adversary",
        progress=progress,
    )


# -- building and measuring ----------------------------------------------------------------------
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


def _env_seed(seed: int) -> int:
    from rlsec.stats import env_seed  # the campaign's: the same clean episodes

    return env_seed(seed)


def _wrapper_seed(seed: int, attack: DynamicsAttack, index: int) -> int:
    key = zlib.crc32(f"{attack.id}:{attack.label}:{attack.threat_model.epsilon!r}".encode())
    return int(np.random.SeedSequence([seed, key, index]).generate_state(1)[0])


_Wrap = Callable[[gym.Env[Any, Any]], gym.Wrapper[Any, Any, Any, Any]]


def _relay(report: Callable[[str, float], None], label: str) -> Callable[[float], None]:
    return lambda fraction: report(label, fraction)


def _summary(stats: Sequence[EpisodeStats]) -> dict[str, Any]:
    from rlsec.stats import summarize_returns

    return summarize_returns(
        np.concatenate([s.returns for s in stats]), np.concatenate([s.lengths for s in stats])
    )


def dynamics_damage(
    policy: Policy,
    env_id: str | None = None,
    attacks: Sequence[DynamicsAttack | str] | None = None,
    *,
    budgets: Sequence[float] = DEFAULT_DYNAMICS_EPSILONS,
    episodes: int = 20,
    seeds: Sequence[int] = (0,),
    num_envs: int = 8,
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """Clean against attacked returns for each dynamics attack and budget.

    Every run plays ``episodes`` episodes per seed on a synchronous vector env of
    ``min(num_envs, episodes)`` copies, reset with the same seeds as the clean run, so an
    attack at ε = 0 reproduces the clean returns exactly. Learned adversaries without one are
    trained (or loaded from the cache) against ``policy`` first.

    Args:
        attacks: built attacks (each with its own ε), or attack ids, each built at every
            budget of ``budgets``; default: ``shift-dynamics-v1`` (every parameter, uniform)
            and ``noise-dynamics-v1``.

    Returns:
        A dict in the shape of ``results.json`` (``docs/results.md``) with ``kind``
        ``dynamics-damage``: ``clean`` and one row per attack in ``results`` with ``surface:
        "dynamics"``, ``label``, ``epsilon_unit``, the return statistics, ``per_seed``, the
        threat model, ATLAS ids, ``params`` and ``budget_used`` (the attack's usage: episodes,
        steps, and the largest change as a fraction of its budget). ``action_change_rate`` is
        0 (the agent's actions are executed as chosen) and ``mean_action_shift`` 0 for
        continuous actions, else ``null``.

    Raises:
        ConfigError, UnknownEnv, UnknownAttack, SpaceMismatch: before anything runs.
    """
    from rlsec._version import __version__
    from rlsec.attacks.rollout import rollout
    from rlsec.envs import check_policy_env, make_vec

    specs = ["shift-dynamics-v1", "noise-dynamics-v1"] if attacks is None else list(attacks)
    grid: list[DynamicsAttack] = []
    for a in specs:
        if isinstance(a, str):
            grid += [make_dynamics_attack(a, float(b)) for b in budgets]
        elif isinstance(a, DynamicsAttack):
            grid.append(a)
        else:
            raise ConfigError(f"expected dynamics attacks or their ids, got {type(a).__name__}")
    if not grid:
        raise ConfigError("no attacks to run: give attacks (and budgets for attack ids)")
    info = getattr(policy, "info", None)
    env = env_id or getattr(info, "env_id", None)
    if not env:
        raise ConfigError("the policy does not record its environment; give env_id")
    check_policy_env(policy, env)
    for a in grid:
        a.check_env(env)
    if int(episodes) < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    seed_list = [int(s) for s in seeds]
    if not seed_list:
        raise ConfigError("give at least one seed")
    if int(num_envs) < 1:
        raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
    started, started_at = time.perf_counter(), datetime.now(UTC).isoformat()
    n = min(int(num_envs), int(episodes))
    continuous = isinstance(policy.action_space, gym.spaces.Box)

    def report(label: str, fraction: float) -> None:
        if progress is not None:
            progress(label, fraction)

    def play(seed: int, wrap: _Wrap | None) -> EpisodeStats:
        venv = make_vec(
            env, num_envs=n, vectorization_mode="sync", wrappers=[wrap] if wrap else None
        )
        try:
            return rollout(policy, venv, int(episodes), seed=_env_seed(seed))
        finally:
            venv.close()

    clean = []
    for s in seed_list:
        report(f"clean (seed {s})", 0.0)
        clean.append(play(s, None))
    results = []
    for index, attack in enumerate(grid):
        t0 = time.perf_counter()
        tm = attack.threat_model
        name = f"{attack.label} ε={tm.epsilon:g}"
        if isinstance(attack, DisturbanceDynamics) and attack.adversary is None:
            attack.start(
                policy,
                num_envs=n,
                rng=np.random.default_rng(0),
                env_id=env,
                progress=_relay(report, f"{name}: training the adversary"),
            )
        attack.reset_usage()
        per_seed = []
        for s in seed_list:
            report(f"{name} (seed {s})", 0.0)
            wseed = _wrapper_seed(s, attack, index)

            def wrap(
                e: gym.Env[Any, Any], a: DynamicsAttack = attack, w: int = wseed
            ) -> gym.Wrapper[Any, Any, Any, Any]:
                return a.as_wrapper(e, seed=w)

            per_seed.append((s, play(s, wrap)))
        results.append(
            {
                "attack": attack.id,
                "label": attack.label,
                "surface": attack.surface.value,
                "epsilon": tm.epsilon,
                "norm": tm.norm,
                "unit": tm.unit,
                "epsilon_unit": attack.epsilon_unit,
                **_summary([st for _, st in per_seed]),
                "action_change_rate": 0.0,
                "mean_action_shift": 0.0 if continuous else None,
                "per_seed": [
                    {"seed": s, "mean_return": float(st.returns.mean())} for s, st in per_seed
                ],
                "threat_model": tm.to_dict(),
                "atlas": list(attack.atlas),
                "reference": attack.reference,
                "params": attack.params(),
                "budget_used": attack.usage(),
                "seconds": time.perf_counter() - t0,
            }
        )
    return {
        "rlsec_version": __version__,
        "kind": "dynamics-damage",
        "policy": {
            "source": getattr(info, "source", None),
            "sha256": getattr(info, "sha256", None),
            "format": getattr(info, "format", None),
            "algo": getattr(info, "algo", None),
            "env_id": getattr(info, "env_id", None),
        },
        "env": env,
        "seed": seed_list[0],
        "clean": _summary(clean),
        "results": results,
        "config": {
            "env_id": env,
            "attacks": [a.describe() for a in grid],
            "episodes": int(episodes),
            "seeds": seed_list,
            "num_envs_used": n,
            "vectorization_mode": "sync",
        },
        "started_at": started_at,
        "seconds": time.perf_counter() - started,
    }
