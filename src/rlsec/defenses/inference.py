"""Inference-time defenses: wrappers around a policy that a red-team campaign can attack.

A defense is written ``NAME[:KEY=VALUE,...]`` (the form of ``rlsec redteam --defense``):

* ``smoothing:sigma=S[,n=N,n0=N0,alpha=A,seed=K,unit=raw|std,eot_samples=M,batch_size=B]``:
  randomized smoothing (:class:`rlsec.verify.smoothing.SmoothedPolicy`). ``sigma`` is the
  noise standard deviation in ``unit``: ``raw`` observation units or ``std``, per-feature
  clean observation standard deviations. In a campaign ``unit`` defaults to the campaign's
  ε unit and uses the same scale as ε, so certified radii and ε are comparable.

Example:
    >>> spec = parse_defense("smoothing:sigma=0.2,n=50")
    >>> spec.name, spec.params, str(spec)
    ('smoothing', {'sigma': 0.2, 'n': 50}, 'smoothing:n=50,sigma=0.2')
    >>> parse_defense("smoothing:sigma=0.2,sigam=3")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    rlsec.errors.ConfigError: unknown parameter 'sigam' for smoothing ... (did you mean sigma?)
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlsec.core import Policy
from rlsec.errors import ConfigError
from rlsec.verify.smoothing import SmoothedPolicy, check_params

__all__ = ["INFERENCE_DEFENSES", "DefenseSpec", "apply_defense", "parse_defense"]

_FLOAT, _INT, _UNIT = "a number", "an integer", "raw or std"

#: Every inference-time defense and its parameters (name -> kind of value).
INFERENCE_DEFENSES: dict[str, dict[str, str]] = {
    "smoothing": {
        "sigma": _FLOAT,
        "n": _INT,
        "n0": _INT,
        "alpha": _FLOAT,
        "seed": _INT,
        "unit": _UNIT,
        "eot_samples": _INT,
        "batch_size": _INT,
    },
}
_REQUIRED = {"smoothing": ("sigma",)}
_EXAMPLE = "smoothing:sigma=0.2"


@dataclass(frozen=True)
class DefenseSpec:
    """A parsed defense: its name and its parameters (already of the right types)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        """The canonical spec (parameters sorted), as recorded in ``config.defense``."""
        items = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.name}:{items}" if items else self.name


def _value(name: str, key: str, kind: str, text: str, spec: str) -> Any:
    t = text.strip()
    try:
        if kind == _FLOAT:
            return float(t)
        if kind == _INT:
            try:
                return int(t)
            except ValueError:
                v = float(t)  # 1e4
                if not v.is_integer():
                    raise ValueError(t) from None
                return int(v)
    except ValueError:
        raise ConfigError(f"{key} of {name} must be {kind}, got {t!r} in {spec!r}") from None
    if t not in ("raw", "std"):
        raise ConfigError(f"{key} of {name} must be {kind}, got {t!r} in {spec!r}")
    return t


def parse_defense(spec: str) -> DefenseSpec:
    """Parse ``NAME[:KEY=VALUE,...]`` and check every value's domain.

    Raises:
        ConfigError: an unknown defense or parameter, a missing or repeated parameter, or a
            value out of its domain; the message says what was expected and what was given.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"expected a defense such as {_EXAMPLE}, got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    name = name.strip()
    if name not in INFERENCE_DEFENSES:
        raise ConfigError(
            f"unknown defense {name!r} in {spec!r}; expected one of "
            f"{sorted(INFERENCE_DEFENSES)} (for example {_EXAMPLE})"
        )
    allowed = INFERENCE_DEFENSES[name]
    params: dict[str, Any] = {}
    for item in rest.split(","):
        if not item.strip():
            continue
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE items after {name}:, got {item!r} in {spec!r}")
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(
                f"unknown parameter {key!r} for {name} in {spec!r}; expected some of "
                f"{sorted(allowed)}{hint}"
            )
        if key in params:
            raise ConfigError(f"parameter {key!r} is given twice in {spec!r}")
        params[key] = _value(name, key, allowed[key], text, spec)
    missing = [k for k in _REQUIRED[name] if k not in params]
    if missing:
        raise ConfigError(f"{name} needs {', '.join(missing)} (as in {_EXAMPLE}), got {spec!r}")

    check_params(**{k: v for k, v in params.items() if k != "unit"})
    return DefenseSpec(name, params)


def apply_defense(
    policy: Policy,
    spec: str | DefenseSpec,
    *,
    std_scale: np.ndarray | None = None,
    std_source: str | None = None,
    default_unit: str = "raw",
) -> tuple[Policy, dict[str, Any]]:
    """Wrap ``policy`` in the defense; return the defended policy and its record.

    Args:
        std_scale: per-feature clean observation std, needed when the unit is ``std``.
        std_source: where ``std_scale`` came from (recorded).
        default_unit: the unit of ``sigma`` when the spec does not say.

    Returns:
        The defended policy and the ``defense`` record of ``results.json``: ``spec`` (the
        canonical spec), ``unit``, ``scale_source`` and the defense's own description (its
        parameters, ``base_sha256`` and ``sha256``, the defended policy's digest).

    Raises:
        ConfigError: a bad spec, or ``unit=std`` without ``std_scale``.
    """
    parsed = spec if isinstance(spec, DefenseSpec) else parse_defense(spec)

    params = dict(parsed.params)
    unit = str(params.pop("unit", default_unit))
    if unit not in ("raw", "std"):
        raise ConfigError(f"unit of {parsed.name} must be raw or std, got {unit!r}")
    if unit == "std" and std_scale is None:
        raise ConfigError(
            f"{parsed} has sigma in std units, which needs the clean observation std: "
            "give std_scale, or unit=raw"
        )
    scale = None if unit == "raw" else std_scale
    defended = SmoothedPolicy(policy, params.pop("sigma"), scale=scale, **params)
    record = {
        "spec": str(parsed),
        **defended.describe(),
        "sigma_unit": unit,
        "scale_source": "raw observation units" if unit == "raw" else std_source,
    }
    return defended, record
