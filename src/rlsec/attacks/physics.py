"""What rlsec knows of each environment's physics, and how a bounded disturbance enters it.

:data:`ENV_DYNAMICS` lists, per Gymnasium environment, the physical parameters a shift may
change (the attributes they live in), the derived attributes recomputed from them, what a
disturbance is and what the environment's own actuation (ε = 1 of a disturbance) is;
:func:`env_dynamics` finds the entry of an id or a live environment.

:class:`DisturbanceWrapper` applies a bounded disturbance inside the environment's own
``step``: the force or torque it integrates is the agent's plus the disturbance, and the
attributes it borrows are restored before ``step`` returns; the reward is the environment's
(Pendulum's torque cost is charged on the agent's own torque, not the disturbance's). It is
the mechanism of the disturbance attacks of :mod:`rlsec.attacks.dynamics` and of RARL's
adversary MDP (:mod:`rlsec.attacks.rarl`).

Example:
    >>> import gymnasium as gym
    >>> env = DisturbanceWrapper(gym.make("CartPole-v1"), 0.2, lambda obs, rng: np.ones(1))
    >>> _ = env.reset(seed=0)
    >>> env.step(0)[-1]["rlsec_disturbance"]  # 0.2 · force_mag, to the right
    2.0
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control import (
    AcrobotEnv,
    CartPoleEnv,
    Continuous_MountainCarEnv,
    MountainCarEnv,
    PendulumEnv,
)

from rlsec.errors import BudgetViolation, ConfigError, InvalidBudget

__all__ = [
    "ENV_DYNAMICS",
    "DisturbanceWrapper",
    "DynamicsParameter",
    "EnvDynamics",
    "env_dynamics",
]

#: Relative slack of the run-time budget checks (floating point only).
_REL = 1e-9
#: Pendulum-v1 charges ``0.001·u²`` for the torque it integrates (gymnasium's pendulum.py).
_PENDULUM_TORQUE_COST = 0.001

_StepResult = tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]
#: ``(env, unwrapped, action, d) -> (the env's step result, the disturbance it integrated)``
_Mechanism = Callable[[gym.Env[Any, Any], Any, Any, float], tuple[_StepResult, float]]


# -- what rlsec knows of each environment's physics ---------------------------------------------
@dataclass(frozen=True)
class DynamicsParameter:
    """One physical parameter of an environment.

    Attributes:
        name: rlsec's name for it (what :class:`~rlsec.attacks.dynamics.ShiftDynamics` takes).
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
        parameters: the parameters :class:`~rlsec.attacks.dynamics.ShiftDynamics` can change.
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


class _Tally(Protocol):
    """What a disturbance wrapper tallies its work on: a dynamics attack's usage."""

    _episodes: int
    _steps: int

    def _spend(self, change: float, bound: float, what: str) -> None: ...


# -- how a bounded disturbance enters the environment's step ------------------------------------
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
        attack: _Tally | None = None,
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
