"""Attacks, one module per surface. Build one with :func:`make_attack`.

Example:
    >>> attack = make_attack("pgd-obs-v1", 0.1, unit="std")
    >>> attack.threat_model.norm, attack.threat_model.unit
    ('linf', 'std')
    >>> make_attack("pgd-obs-v9", 0.1)
    Traceback (most recent call last):
    ...
    rlsec.errors.UnknownAttack: unknown attack id 'pgd-obs-v9'; did you mean pgd-obs-v1? Known: ...
"""

from __future__ import annotations

import difflib
from typing import Any

from rlsec.attacks.action import (
    ActionAttack,
    NRAdversarialAction,
    NRRandomAction,
    PRAdversarialAction,
    PRRandomAction,
)
from rlsec.attacks.observation import (
    CriticObservation,
    FGSMObservation,
    GaussianNoiseObservation,
    LearnedObservation,
    MADObservation,
    ObservationAttack,
    PGDL2Observation,
    PGDObservation,
    TimedObservation,
    UniformNoiseObservation,
)
from rlsec.attacks.strategy import StrategyReplay
from rlsec.core import Attack, Surface, ThreatModel
from rlsec.errors import UnknownAttack

__all__ = [
    "ATTACKS",
    "ActionAttack",
    "CriticObservation",
    "FGSMObservation",
    "GaussianNoiseObservation",
    "LearnedObservation",
    "MADObservation",
    "NRAdversarialAction",
    "NRRandomAction",
    "ObservationAttack",
    "PGDL2Observation",
    "PGDObservation",
    "PRAdversarialAction",
    "PRRandomAction",
    "StrategyReplay",
    "TimedObservation",
    "UniformNoiseObservation",
    "attack_class",
    "make_attack",
]

ATTACKS: dict[str, type[Attack]] = {
    cls.id: cls
    for cls in (
        UniformNoiseObservation,
        GaussianNoiseObservation,
        FGSMObservation,
        PGDObservation,
        PGDL2Observation,
        MADObservation,
        CriticObservation,
        TimedObservation,
        LearnedObservation,
        StrategyReplay,
        PRRandomAction,
        PRAdversarialAction,
        NRRandomAction,
        NRAdversarialAction,
    )
}


def attack_class(attack_id: str) -> type[Attack]:
    """The class registered under ``attack_id``.

    Raises:
        UnknownAttack: with the closest known ids.
    """
    try:
        return ATTACKS[attack_id]
    except KeyError:
        close = difflib.get_close_matches(attack_id, ATTACKS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UnknownAttack(
            f"unknown attack id {attack_id!r}; {hint}Known: {', '.join(ATTACKS)}"
        ) from None


def make_attack(
    attack_id: str,
    epsilon: float,
    *,
    unit: str = "raw",
    norm: str | None = None,
    step_budget: float | None = None,
    **params: Any,
) -> Attack:
    """Build an attack with an explicit threat model.

    Args:
        attack_id: a registered id such as ``pgd-obs-v1``.
        epsilon: the budget: ε-ball radius for observation attacks (in ``unit``), probability
            or mixing weight for action attacks.
        unit: ``raw`` or ``std`` for observation attacks (action attacks use ``probability``).
        norm: defaults to the attack's first supported norm.
        step_budget: fraction of steps a step-budgeted attack may touch.
        params: the method's own parameters (``steps``, ``timesteps``...).
    """
    cls = attack_class(attack_id)
    chosen = norm or cls.norms[0]
    if cls.surface is Surface.ACTION:
        unit = "probability"
    budgeted = step_budget is not None
    tm = ThreatModel(
        cls.surface,
        epsilon,
        chosen,  # type: ignore[arg-type]  # ThreatModel validates it
        unit,  # type: ignore[arg-type]
        knowledge=cls.knowledge,
        frequency="budgeted-steps" if budgeted else "every-step",
        step_budget=step_budget,
    )
    return cls(tm, **params)
