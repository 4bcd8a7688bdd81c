"""Bounds on what a request may ask for: the one place every command and library entry point
checks its counts, seeds and budgets, before anything is built or written.

Each check raises a :class:`~rlsec.errors.ConfigError` (budgets: :class:`~rlsec.errors.
InvalidBudget`) that names the limit and why it exists; the command line turns them into exit
code 2. The limits:

* counts that size memory: episodes per run (:data:`MAX_EPISODES`; each keeps its totals),
  vectorised environments (:data:`MAX_NUM_ENVS`; each is a live environment), seeds
  (:data:`MAX_SEEDS`), budgets per list (:data:`MAX_BUDGETS`), states to certify
  (:data:`MAX_STATES`; each is written to the JSON), Monte Carlo copies per state
  (:data:`MAX_SAMPLES`), training steps (:data:`MAX_STEPS`), torch threads
  (:data:`MAX_THREADS`);
* seeds in ``[0, MAX_SEED]`` (NumPy's legacy seeding, which Stable-Baselines3 uses, takes
  32-bit seeds; offsets such as one seed per environment stay in range);
* budgets (ε, a smoothing σ, an attack radius) finite, ``>= 0`` and at most
  :data:`MAX_BUDGET`, in their own unit and, once the per-feature scale is known, in raw
  observation units: the attacks compute in float32, whose largest value is 3.4e38, and an
  l2 norm squares ε, so budgets near float32's range overflow to infinity (a 1e39 budget is
  infinite in float32; 1e20 overflows the l2 norm of a perturbation).

Example:
    >>> count("episodes", 20, limit=MAX_EPISODES)
    20
    >>> try:
    ...     budget("eps", 1e39)
    ... except InvalidBudget as exc:
    ...     print(str(exc)[:33])
    eps must be at most 1e+15 (larger
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from rlsec.errors import ConfigError, InvalidBudget

__all__ = [
    "MAX_BUDGET",
    "MAX_BUDGETS",
    "MAX_EPISODES",
    "MAX_NUM_ENVS",
    "MAX_SAMPLES",
    "MAX_SEED",
    "MAX_SEEDS",
    "MAX_STATES",
    "MAX_STEPS",
    "MAX_THREADS",
    "budget",
    "budgets",
    "count",
    "fraction",
    "raw_budgets",
    "seed",
    "seed_range",
]

MAX_EPISODES = 1_000_000
MAX_NUM_ENVS = 4_096
MAX_SEEDS = 1_000
MAX_BUDGETS = 1_000
MAX_STATES = 100_000
MAX_SAMPLES = 1_000_000
MAX_STEPS = 1_000_000_000
MAX_THREADS = 1_024
MAX_SEED = 2**31 - 1
MAX_BUDGET = 1e15

_WHY = {
    "episodes": "each episode's totals are kept in memory",
    "num_envs": "each is a live environment in memory",
    "seeds": "each seed repeats every run",
    "states": "each state is kept and written to the JSON",
    "samples": "Monte Carlo copies per state",
    "steps": "training steps",
    "threads": "torch threads",
}
_BUDGET_WHY = (
    "larger budgets overflow float32 arithmetic: float32 holds at most 3.4e38 and an l2 norm "
    "squares ε"
)


def _integer(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer, got {value!r:.80}")
    return int(value)


def count(name: str, value: object, *, limit: int, minimum: int = 1) -> int:
    """``value`` as an int in ``[minimum, limit]``.

    Raises:
        ConfigError: not an integer (booleans are not), or out of range; the message gives
            the limit and why it exists.
    """
    n = _integer(name, value)
    if n < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {n}")
    if n > limit:
        why = _WHY.get(name.lstrip("-").replace("-", "_"))
        raise ConfigError(
            f"{name} must be at most {limit:,}" + (f" ({why})" if why else "") + f", got {n:,}"
        )
    return n


def seed(value: object, name: str = "seed") -> int:
    """A seed in ``[0, MAX_SEED]``."""
    n = _integer(name, value)
    if not 0 <= n <= MAX_SEED:
        raise ConfigError(f"{name} must be in [0, {MAX_SEED}] (2**31 - 1), got {n}")
    return n


def seed_range(first: object, n: object) -> list[int]:
    """``n`` consecutive seeds from ``first``, all in range (``n <= MAX_SEEDS``)."""
    k = count("seeds", n, limit=MAX_SEEDS)
    start = seed(first)
    seed(start + k - 1, f"the last seed (seed + seeds - 1 = {start} + {k} - 1)")
    return list(range(start, start + k))


def budget(name: str, value: object, *, positive: bool = False) -> float:
    """A finite budget ``>= 0`` (``> 0`` if ``positive``) and at most :data:`MAX_BUDGET`.

    Raises:
        InvalidBudget: not a real number, NaN, infinite, negative or too large.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidBudget(f"{name} must be a number, got {value!r:.80}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise InvalidBudget(
            f"{name} must be a finite number {'>' if positive else '>='} 0, got {value!r}"
        )
    if v > MAX_BUDGET:
        raise InvalidBudget(f"{name} must be at most {MAX_BUDGET:g} ({_BUDGET_WHY}), got {v:g}")
    return v


def budgets(name: str, values: Iterable[object]) -> list[float]:
    """Every value a :func:`budget`; at most :data:`MAX_BUDGETS` of them."""
    out = []
    for v in values:
        out.append(budget(name, v))
        if len(out) > MAX_BUDGETS:
            raise ConfigError(f"give at most {MAX_BUDGETS} budgets in {name}")
    return out


def fraction(name: str, value: object) -> float:
    """A number in ``[0, 1]`` (NaN is refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidBudget(f"{name} must be a number in [0, 1], got {value!r:.80}")
    v = float(value)
    if not 0.0 <= v <= 1.0:  # False for NaN
        raise InvalidBudget(f"{name} must be in [0, 1], got {value!r}")
    return v


def raw_budgets(name: str, values: Sequence[float], scale: Any) -> None:
    """Each budget times each feature's scale (``ε · scale_i``, the raw per-feature radius)
    must be finite and at most :data:`MAX_BUDGET`.

    Raises:
        InvalidBudget: naming the budget, the feature and its scale.
    """
    if scale is None or not values:
        return
    s = np.asarray(scale, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise InvalidBudget(f"the scale of {name} must be finite and >= 0, got {s.tolist()}")
    if not s.size:
        return
    i = int(np.argmax(s))
    top = max(float(v) for v in values)
    raw = top * float(s[i])
    if not math.isfinite(raw) or raw > MAX_BUDGET:
        raise InvalidBudget(
            f"{name} = {top:g} times the scale {float(s[i]):g} of feature {i} is a raw budget "
            f"of {raw:g}; it must be at most {MAX_BUDGET:g} ({_BUDGET_WHY})"
        )
