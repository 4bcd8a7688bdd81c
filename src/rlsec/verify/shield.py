"""Safe action sets for shields, computed by model checking the environment's MDP.

For each state ``s`` and action ``a``, ``risk[s, a]`` is the least probability of ever
reaching the bad label after taking ``a`` in ``s``, whatever the controller does afterwards
(Storm's ``Pmin=? [F "bad"]`` on the MDP whose nondeterminism is the controller's choice,
one step unrolled): ``risk[s, a] = sum_s' P(s' | s, a) * Pmin(s')``. An action is *safe*
when ``risk[s, a] <= delta`` (the probabilistic shields of Jansen et al. 2020). A state where
no action meets ``delta`` keeps its least risky actions and is reported in ``unshieldable``
(states already in the bad label keep every action and are not reported), so a runtime guard
never faces an empty set.

The sets are saved as JSON for the runtime guard (:meth:`SafeActions.save`).

Example:
    >>> from rlsec.verify.model import Model
    >>> m = Model.from_env("FrozenLake-v1", is_slippery=False)
    >>> shield = safe_actions(m, "hole", delta=0.0)
    >>> m.action_names[0], shield.allowed[4].tolist()  # at (1, 0), "right" enters a hole
    ('left', [True, True, False, True])
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlsec.errors import ConfigError, ModelError
from rlsec.verify.budget import Budget
from rlsec.verify.model import Model
from rlsec.verify.storm import check

__all__ = ["SafeActions", "safe_actions"]


@dataclass
class SafeActions:
    """Per state, the actions a shield allows, and the risk that decided it."""

    env_id: str | None
    label: str
    delta: float
    allowed: np.ndarray  # (n_states, n_actions) bool
    risk: np.ndarray  # (n_states, n_actions)
    unshieldable: np.ndarray  # state indices where no action meets delta

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "rlsec-safe-actions",
            "env_id": self.env_id,
            "label": self.label,
            "delta": self.delta,
            "allowed": self.allowed.astype(int).tolist(),
            "risk": self.risk.tolist(),
            "unshieldable": self.unshieldable.tolist(),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        from rlsec._files import write_atomic  # whole, never through a link

        write_atomic(path, json.dumps(self.to_dict()) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SafeActions:
        try:
            d = json.loads(Path(path).read_text())
            if d.get("kind") != "rlsec-safe-actions":
                raise ValueError(f"kind is {d.get('kind')!r}")
            allowed = np.asarray(d["allowed"], dtype=bool)
            risk = np.asarray(d["risk"], dtype=np.float64)
            if allowed.shape != risk.shape or allowed.ndim != 2 or not allowed.any(axis=1).all():
                raise ValueError("allowed and risk must be (n_states, n_actions), no empty row")
            return cls(
                d["env_id"],
                str(d["label"]),
                float(d["delta"]),
                allowed,
                risk,
                np.asarray(d["unshieldable"], dtype=np.int64),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} is not a safe-action file: {exc}") from None


def safe_actions(
    model: Model, label: str, delta: float, *, budget: Budget | None = None
) -> SafeActions:
    """The actions whose least probability of reaching ``label`` is at most ``delta``
    (``budget``: as for :func:`~rlsec.verify.storm.check`).

    Raises:
        ModelError: unknown label.
        ConfigError: ``delta`` outside [0, 1].
    """
    if not 0.0 <= delta <= 1.0:
        raise ConfigError(f"delta must be a probability in [0, 1], got {delta!r}")
    model.label(label)
    least = check(model, f'Pmin=? [F "{label}"]', budget=budget).values
    risk = (model.transitions @ least).reshape(model.n_states, model.n_actions)
    bad = np.asarray(model.labels[label])
    risk[bad] = 1.0  # already there
    allowed = risk <= delta + 1e-12
    empty = ~allowed.any(axis=1) & ~bad
    best = risk <= risk.min(axis=1, keepdims=True) + 1e-12
    allowed[empty | bad] = best[empty | bad]
    if not np.all(np.isfinite(risk)):
        raise ModelError("risk is not finite; the model is malformed")
    return SafeActions(model.env_id, label, float(delta), allowed, risk, np.flatnonzero(empty))
