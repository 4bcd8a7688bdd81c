"""Did training keep the clean return? The check ``rlsec train`` makes on every exported policy.

A robust-training defense trades clean return for robustness, and past some budget ε it can
no longer hold the task (SA-PPO on CartPole at ε = 0.2 raw exports a policy with a clean
return near 130 where vanilla training reaches 500). :func:`check_clean_return` compares the
exported policy's clean return with an *undefended reference*: the clean return vanilla
training is known to reach on the task. The return is kept when it is at most
``tolerance`` (10%) of the reference's magnitude below it:
``clean >= reference - tolerance * |reference|``, which reads the same for rewards (500 →
at least 450) and for costs (-145 → at least -159.5).

Where the reference comes from (:func:`undefended_reference`, first that applies):

1. the caller's own (``reference_return``, e.g. a vanilla run's clean return);
2. the recipe's: rlsec's tuned recipes ship the median clean return of vanilla runs of that
   recipe (``RECIPES[...]["reference_clean_return"]``, with the command that measured it);
3. the environment's registered ``reward_threshold`` (Gymnasium's "solved" score);
4. none: the check is not made, and the result says so (status ``unknown``).

A clean return that is not a finite number is never compared: it counts as not kept.

Example:
    >>> check_clean_return(131.6, 500.0, "recipe", defense="sa-reg", eps=0.2).status
    'lost'
    >>> check_clean_return(-150.0, -145.1, "recipe", defense="none", eps=0.0).status
    'kept'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from rlsec.errors import ConfigError

__all__ = ["CLEAN_TOLERANCE", "CleanReturnCheck", "check_clean_return", "undefended_reference"]

#: How far below the undefended reference (a fraction of its magnitude) a clean return may be
#: and still count as kept.
CLEAN_TOLERANCE = 0.1


@dataclass(frozen=True)
class CleanReturnCheck:
    """The verdict on one exported policy's clean return (recorded in ``training.json``).

    Attributes:
        status: ``kept`` (within the tolerance of the reference), ``lost`` (below it, or
            the clean return is not a finite number) or ``unknown`` (no reference is known).
        clean: the exported policy's mean clean return.
        reference: the undefended reference clean return, if one is known.
        source: where the reference comes from.
        tolerance: the allowed shortfall, a fraction of ``|reference|``.
        threshold: the lowest clean return that counts as kept.
        message: one sentence for people, saying what was found.
    """

    status: Literal["kept", "lost", "unknown"]
    clean: float | None
    reference: float | None
    source: str
    tolerance: float
    threshold: float | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def undefended_reference(
    recipe: Mapping[str, Any], env_id: str, reference_return: float | None = None
) -> tuple[float | None, str]:
    """The undefended reference clean return for a task and where it comes from (see the
    module's docstring for the order).

    Raises:
        ConfigError: ``reference_return`` is not a finite number.
    """
    if reference_return is not None:
        return _finite(reference_return, "reference_return"), "given by the caller"
    shipped = recipe.get("reference_clean_return")
    if shipped is not None:
        value = _finite(shipped["value"], "the recipe's reference_clean_return")
        return value, f"the recipe's vanilla runs, {shipped['source']}"
    from rlsec.envs import env_spec

    threshold = env_spec(env_id).reward_threshold
    if threshold is not None:
        value = _finite(threshold, f"{env_id}'s reward_threshold")
        return value, f"{env_id}'s registered reward_threshold, the task's solved score"
    return None, f"none known for {env_id}: no recipe reference and no reward_threshold"


def _finite(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    return v


def check_clean_return(
    clean: object,
    reference: float | None,
    source: str,
    *,
    defense: str,
    eps: float,
    tolerance: float = CLEAN_TOLERANCE,
) -> CleanReturnCheck:
    """Whether ``clean`` is within ``tolerance`` of the undefended ``reference`` (``None``:
    unknown); the message names the defense and its budget when it did not keep it. A
    ``clean`` that is not a finite number (NaN, infinite, a string, missing) is not kept."""
    value = math.nan
    if isinstance(clean, (int, float)) and not isinstance(clean, bool):
        value = float(clean)
    what = "training" if defense == "none" else f"the defense {defense} at ε = {eps:g} (raw)"
    if reference is None:
        return CleanReturnCheck(
            "unknown",
            value if math.isfinite(value) else None,
            None,
            source,
            tolerance,
            None,
            f"clean return {value:.1f}: not checked against an undefended reference "
            f"({source}). Pass one (a vanilla run's clean return) to check it.",
        )
    if not (math.isfinite(reference) and math.isfinite(tolerance) and 0 <= tolerance < 1):
        raise ConfigError(
            f"the reference must be finite and the tolerance in [0, 1); got {reference!r} "
            f"and {tolerance!r}"
        )
    threshold = reference - tolerance * abs(reference)
    if not math.isfinite(value):
        return CleanReturnCheck(
            "lost",
            None,
            reference,
            source,
            tolerance,
            threshold,
            f"{what} did not keep the clean return: it is not a finite number ({clean!r}).",
        )
    if value >= threshold:
        return CleanReturnCheck(
            "kept",
            value,
            reference,
            source,
            tolerance,
            threshold,
            f"clean return kept: {value:.1f} is within {tolerance:.0%} of the undefended "
            f"reference {reference:.1f}. Reference: {source}.",
        )
    return CleanReturnCheck(
        "lost",
        value,
        reference,
        source,
        tolerance,
        threshold,
        f"{what} did not keep the clean return: {value:.1f} is more than {tolerance:.0%} "
        f"below the undefended reference {reference:.1f} (at least {threshold:.1f} needed), "
        f"so the exported policy is degraded on the clean task. Reference: {source}.",
    )
