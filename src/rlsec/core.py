"""The small contracts everything else in rlsec implements.

* :class:`Policy` / :class:`DifferentiablePolicy`: what an attack or a guard may ask of a policy.
* :class:`ThreatModel`: who attacks which surface, with what budget and knowledge.
* :class:`Attack`: a configured attack, built from a threat model, with a stable versioned id.
* :class:`Finding` / :class:`Severity`: what detectors and checks report.
* :class:`Evidence`: a hashed record of an evaluation that later stages can bind to a policy.

Everything is batched: a single observation is a batch of one.

Example:
    >>> tm = ThreatModel(Surface.OBSERVATION, epsilon=0.1, norm="linf", unit="std")
    >>> tm.epsilon, tm.surface.value
    (0.1, 'observation')
    >>> ThreatModel(Surface.OBSERVATION, epsilon=-1.0)
    Traceback (most recent call last):
    ...
    rlsec.errors.InvalidBudget: epsilon must be a finite number >= 0, got -1.0
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

from rlsec.errors import ConfigError, InvalidBudget

if TYPE_CHECKING:
    import gymnasium as gym
    from torch import nn

__all__ = [
    "Attack",
    "DifferentiablePolicy",
    "Evidence",
    "Finding",
    "Policy",
    "Severity",
    "Surface",
    "ThreatModel",
]


class Surface(StrEnum):
    """The parts of the RL loop an adversary can reach."""

    OBSERVATION = "observation"
    ACTION = "action"
    REWARD = "reward"
    DYNAMICS = "dynamics"
    DATA = "data"
    BACKDOOR = "backdoor"
    PARAMETERS = "parameters"
    INTERFACE = "interface"


Norm = Literal["linf", "l2", "l0", "index", "prob", "mix"]
Unit = Literal["raw", "std", "probability"]
_NORMS = ("linf", "l2", "l0", "index", "prob", "mix")
_UNITS = ("raw", "std", "probability")
_KNOWLEDGE = ("white-box", "black-box")
_FREQUENCY = ("every-step", "budgeted-steps")
_PHASE = ("deployment", "training")


@dataclass(frozen=True)
class ThreatModel:
    """An explicit statement of the adversary an attack plays.

    Attributes:
        surface: which part of the loop the adversary touches.
        epsilon: the budget. For observation attacks, the radius of the ε-ball in ``unit``;
            for action attacks, the probability (``prob``) or mixing weight (``mix``).
        norm: ``linf``/``l2``/``l0`` for perturbations, ``index`` for index observations
            replaced by the observation of a state within distance ε (grid cells),
            ``prob``/``mix`` for action takeover.
        unit: ``raw`` observation units, ``std`` per-feature standard deviations of clean
            observations, or ``probability``.
        knowledge: ``white-box`` (weights and gradients) or ``black-box`` (queries only).
        frequency: ``every-step`` or ``budgeted-steps`` (at most ``step_budget`` of the steps).
        step_budget: fraction of steps the adversary may touch when ``budgeted-steps``.
        phase: ``deployment`` (inference time) or ``training``.
    """

    surface: Surface
    epsilon: float
    norm: Norm = "linf"
    unit: Unit = "raw"
    knowledge: Literal["white-box", "black-box"] = "white-box"
    frequency: Literal["every-step", "budgeted-steps"] = "every-step"
    step_budget: float | None = None
    phase: Literal["deployment", "training"] = "deployment"

    def __post_init__(self) -> None:
        surface: object = self.surface
        if not isinstance(surface, Surface):
            object.__setattr__(self, "surface", _choice("surface", surface, Surface))
        eps = self.epsilon
        if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating, np.integer)):
            raise InvalidBudget(f"epsilon must be a number, got {type(eps).__name__} {eps!r}")
        if not math.isfinite(float(eps)) or float(eps) < 0:
            raise InvalidBudget(f"epsilon must be a finite number >= 0, got {eps!r}")
        object.__setattr__(self, "epsilon", float(eps))
        for name, allowed in (
            ("norm", _NORMS),
            ("unit", _UNITS),
            ("knowledge", _KNOWLEDGE),
            ("frequency", _FREQUENCY),
            ("phase", _PHASE),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {list(allowed)}, got {value!r}")
        if self.norm in ("prob", "mix") and not self.epsilon <= 1:
            raise InvalidBudget(
                f"a {self.norm} budget is a probability in [0, 1], got {self.epsilon!r}"
            )
        if self.frequency == "budgeted-steps":
            sb = self.step_budget
            if (
                sb is None
                or isinstance(sb, bool)
                or not isinstance(sb, (int, float, np.floating, np.integer))
                or not (0.0 <= float(sb) <= 1.0)
            ):
                raise InvalidBudget(
                    f"budgeted-steps needs step_budget, a fraction in [0, 1], got {sb!r}"
                )
            object.__setattr__(self, "step_budget", float(sb))
        elif self.step_budget is not None:
            raise ConfigError("step_budget is only meaningful with frequency='budgeted-steps'")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as recorded in every result."""
        d = asdict(self)
        d["surface"] = self.surface.value
        return d


def _choice(name: str, value: object, enum: type[Surface]) -> Surface:
    try:
        return enum(str(value)) if isinstance(value, str) else enum(value)  # type: ignore[arg-type]
    except ValueError:
        allowed = [m.value for m in enum]
        raise ConfigError(f"{name} must be one of {allowed}, got {value!r}") from None


@runtime_checkable
class Policy(Protocol):
    """A deterministic, batched policy: ``act`` maps a batch of observations to actions."""

    @property
    def observation_space(self) -> gym.Space[Any]: ...

    @property
    def action_space(self) -> gym.Space[Any]: ...

    def act(self, observations: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class DifferentiablePolicy(Policy, Protocol):
    """A policy that exposes its network so white-box attacks can take gradients.

    ``output`` says what ``torch_module()`` returns on a float batch of observations:
    ``logits`` (discrete or multi-discrete actions), ``q_values`` (one per discrete action),
    or ``action`` (continuous actions in environment units, before clipping to the bounds).
    ``value_module()`` gives V(s) where a state-value critic exists, ``q_module()`` gives
    Q(s, ·) for discrete actions or Q(s, a) (called with two tensors) for continuous ones.
    """

    @property
    def output(self) -> Literal["logits", "q_values", "action"]: ...

    def torch_module(self) -> nn.Module: ...

    def value_module(self) -> nn.Module | None: ...

    def q_module(self) -> nn.Module | None: ...


class Attack(ABC):
    """A configured attack: a threat model plus the method's own parameters.

    Subclasses set ``id`` (stable, versioned: bump it when the numbers it produces would
    change), ``surface``, ``norms`` (the norms it can work in) and ``atlas`` (MITRE ATLAS
    technique ids). An attack instance runs one campaign at a time: ``start`` binds it to a
    victim and a batch of environments, ``reset`` tells it which environments begin an episode.
    """

    id: ClassVar[str]
    surface: ClassVar[Surface]
    norms: ClassVar[tuple[str, ...]]
    atlas: ClassVar[tuple[str, ...]]
    knowledge: ClassVar[Literal["white-box", "black-box"]] = "white-box"
    reference: ClassVar[str] = ""

    def __init__(self, threat_model: ThreatModel) -> None:
        if threat_model.surface is not self.surface:
            raise ConfigError(
                f"{self.id} attacks the {self.surface.value} surface, "
                f"got a threat model for {threat_model.surface.value}"
            )
        if threat_model.norm not in self.norms:
            raise ConfigError(
                f"{self.id} supports norms {list(self.norms)}, got {threat_model.norm!r}"
            )
        self.threat_model = threat_model

    @abstractmethod
    def check_applicable(self, policy: Policy) -> None:
        """Raise :class:`~rlsec.errors.AttackNotApplicable` if this policy cannot be attacked."""

    def check_environment(self, env_id: str | None) -> None:  # noqa: B027 (a hook)
        """Raise :class:`~rlsec.errors.AttackNotApplicable` if the attack cannot run in
        ``env_id``; campaigns call it before any episode. Most attacks run anywhere."""

    @abstractmethod
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
        """Bind to a victim and a batch of ``num_envs`` environments before a run.

        Args:
            scale: per-feature scale of ε (ones for raw units, clean std for ``std`` units).
            horizon: the environment's episode step limit, for step-budgeted attacks.
            env_id: the environment, for attacks that train against it.
            progress: called with the fraction done during long preparation (training).
        """

    def reset(self, env_ids: np.ndarray) -> None:  # noqa: B027 (a hook, empty by default)
        """The environments ``env_ids`` begin a new episode."""

    def params(self) -> dict[str, Any]:
        """The method's own parameters (steps, step size, ...), recorded in results."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Everything needed to rebuild this attack, as recorded in results."""
        return {
            "id": self.id,
            "surface": self.surface.value,
            "atlas": list(self.atlas),
            "reference": self.reference,
            "threat_model": self.threat_model.to_dict(),
            "params": self.params(),
        }


class Severity(IntEnum):
    """How bad a finding is; ordered so ``max(findings)`` picks the worst."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


@dataclass(frozen=True, order=False)
class Finding:
    """What a detector, verifier or check reports. Findings are data, not log lines."""

    severity: Severity
    surface: Surface
    message: str
    detector: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_exception(cls, detector: str, surface: Surface, exc: BaseException) -> Finding:
        """A check that crashed is a high-severity finding, never a pass."""
        return cls(
            severity=Severity.HIGH,
            surface=surface,
            message=f"check {detector} failed to run: {type(exc).__name__}: {exc}",
            detector=detector,
            evidence={"exception": type(exc).__name__},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity.name.lower(),
            "surface": self.surface.value,
            "message": self.message,
            "detector": self.detector,
            "evidence": dict(self.evidence),
        }


@dataclass(frozen=True)
class Evidence:
    """A record of an evaluation bound to the policy it evaluated, by digest.

    ``digest()`` hashes a canonical JSON form (sorted keys, no whitespace), so any change to
    the payload or subject changes it.

    Example:
        >>> e = Evidence("redteam", "ab" * 32, {"worst": 1.0})
        >>> e.digest() == Evidence("redteam", "ab" * 32, {"worst": 1.0}).digest()
        True
        >>> e.digest() == Evidence("redteam", "ab" * 32, {"worst": 2.0}).digest()
        False
    """

    kind: str
    subject_sha256: str
    payload: Mapping[str, Any]

    def canonical_bytes(self) -> bytes:
        body = {"kind": self.kind, "subject_sha256": self.subject_sha256, "payload": self.payload}
        return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()

    def digest(self) -> str:
        return hashlib.sha256(self.canonical_bytes()).hexdigest()
