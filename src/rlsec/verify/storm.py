"""Model checking with Storm: sparse chains and MDPs handed to stormpy without PRISM text.

:func:`check` takes a :class:`~rlsec.verify.model.Chain` (a DTMC: the policy-induced chain),
a :class:`~rlsec.verify.model.Model` (an MDP: the environment with its own nondeterminism) or
an :class:`AttackedModel`-like pair (matrix with row groups), builds Storm's sparse model
directly from the CSR arrays, and checks a PCTL property. Values for every state are always
available; the result at the initial states is the value weighted by the initial
distribution (quantitative properties) or whether every initial state satisfies the property
(properties with a bound such as ``P>=0.9 [...]``).

Reward models: ``reward`` (the environment's expected reward per step) and ``steps`` (1 per
step), e.g. ``R{"steps"}=? [F "goal"]``.

Solvers (``precise=True``, the default): chains by Storm's Eigen backend, whose default
method (the one stormpy 2.0 leaves in place: it offers no way to choose Eigen's sparse LU) is
GMRES with an ILU preconditioner, stopping at a relative residual of 1e-6. It does not slow
down on chains that mix slowly (a random policy on slippery CliffWalking needs 3e5 expected
steps: value iteration of any kind, sound or optimistic, then runs for minutes), but it is
not exact: it matches a dense numpy solve to 1e-9 on the test models (FrozenLake,
CliffWalking), while on the slippery grids of ``benchmarks/verify.py`` the largest error
against an exact sparse solve was 1.3e-6 at 3,600 states and 1.2e-5 at 40,000 states. MDPs
are solved by Storm's sound value iteration (it brackets the value from both sides) at
precision 1e-12, absolute for probabilities and relative for expected rewards.
``check(..., precise=False)`` uses Storm's topological solver (strongly connected components
in order): fast, without a guaranteed error bound (about 1e-7 relative in the tests).

Every query runs in Storm's worker process under a :class:`~rlsec.verify.budget.Budget`
(time, memory, model size, step bounds; :mod:`rlsec.verify._worker`), so a query that runs
away or crashes Storm ends in :class:`~rlsec.errors.CheckAborted`, not in a hung or killed
process. ``seconds["build"]`` is the hand-off: everything but Storm's check itself.

Example:
    >>> from rlsec.verify.model import Model
    >>> m = Model.from_env("FrozenLake-v1", is_slippery=False)
    >>> pi = np.zeros((16, 4)); pi[:, 1] = 0.5; pi[:, 2] = 0.5  # down or right, at random
    >>> r = check(m.chain(pi), 'P=? [F "goal"]')
    >>> round(r.result, 6), r.states
    (0.125, 16)
    >>> check(m, 'Pmax=? [F "goal"]').result
    1.0
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from rlsec.errors import CheckAborted, ModelError
from rlsec.verify._worker import request
from rlsec.verify.budget import Budget, check_size, check_text
from rlsec.verify.model import Chain, Model, _csr, _distribution, _labels

__all__ = ["CheckResult", "GroupedModel", "check", "parse_property"]

_LABEL = re.compile(r'(?<![{\w])"([^"]*)"')


@dataclass(frozen=True, eq=False)
class GroupedModel:
    """An MDP whose states have varying numbers of choices: ``matrix`` has one row per
    choice, and the choices of state ``s`` are rows ``groups[s]:groups[s + 1]``.
    ``rewards`` (optional) is one expected reward per choice."""

    matrix: sp.csr_array
    groups: np.ndarray
    initial: np.ndarray
    labels: Any
    rewards: np.ndarray | None = None

    def __post_init__(self) -> None:
        m = sp.csr_array(self.matrix)
        n_rows, n_s = m.shape
        g = np.asarray(self.groups)
        if (
            g.ndim != 1
            or g.shape[0] != n_s + 1
            or not np.issubdtype(g.dtype, np.integer)
            or g[0] != 0
            or g[-1] != n_rows
            or np.any(np.diff(g) < 1)
        ):
            raise ModelError(
                f"groups must be {n_s + 1} increasing row offsets from 0 to {n_rows} (at least "
                f"one choice per state), got {np.asarray(self.groups)!r:.200}"
            )
        object.__setattr__(self, "matrix", _csr(m, (n_rows, n_s), "the MDP's matrix"))
        object.__setattr__(self, "groups", g.astype(np.int64))
        object.__setattr__(self, "initial", _distribution(self.initial, n_s))
        object.__setattr__(self, "labels", _labels(dict(self.labels), n_s))
        if self.rewards is not None:
            r = np.asarray(self.rewards, dtype=np.float64)
            if r.shape != (n_rows,) or not np.all(np.isfinite(r)):
                raise ModelError(
                    f"rewards must be {n_rows} finite numbers (one per choice), got shape {r.shape}"
                )
            object.__setattr__(self, "rewards", r)

    @property
    def n_states(self) -> int:
        return int(self.matrix.shape[1])


@dataclass
class CheckResult:
    """What :func:`check` found.

    Attributes:
        property: the property as given.
        result: at the initial states (see the module docstring).
        values: per state (floats, or booleans for bounded properties).
        states, transitions: size of the checked model.
        seconds: ``{"build": ..., "check": ...}``.
        scheduler: for MDPs, the optimal choice per state (index within the state's
            choices), when the property is an optimisation (``Pmax``, ``Rmin``, ...).
    """

    property: str
    result: float | bool
    values: np.ndarray
    states: int
    transitions: int
    seconds: dict[str, float] = field(default_factory=dict)
    scheduler: np.ndarray | None = None

    def to_dict(self, *, all_states: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "property": self.property,
            "result": self.result,
            "states": self.states,
            "transitions": self.transitions,
            "seconds": dict(self.seconds),
        }
        if all_states:
            d["values"] = self.values.tolist()
        return d


def _property_text(text: Any, budget: Budget) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ModelError(f"expected a PCTL property such as 'P=? [F \"goal\"]', got {text!r:.200}")
    check_text(text, "the property", budget)
    return text


def _check_labels(text: str, labels: Any) -> None:
    for m in _LABEL.finditer(text):
        if m.group(1) not in labels:
            raise ModelError(
                f"unknown label {m.group(1)!r} at column {m.start() + 1} of {text!r}; "
                f"the model has {sorted(labels)}"
            )


def parse_property(text: str, labels: Any = None, *, budget: Budget | None = None) -> str:
    """Parse one PCTL property with Storm; check that its labels exist and that it is
    within the budget (length, nesting, step bounds). Returns the property as Storm reads
    it (``F<=5`` becomes ``true U<=5``).

    Raises:
        ModelError: the property does not parse (with Storm's line:column and a caret), is
            not exactly one property, or names a label the model lacks (with its column).
        ModelTooLarge: it is too long, nests too deep or has a step bound above the limit.
        MissingDependency: Storm is not installed (``pip install 'rlsec[storm]'``).
    """
    b = Budget.from_env() if budget is None else budget
    _property_text(text, b)
    header, _ = request(
        {"op": "parse", "prop": text, "limits": b.limits()},
        {},
        b,
        what=f"parsing {text[:80]!r}",
        max_reply=1 << 20,
    )
    if labels is not None:
        _check_labels(text, labels)
    return str(header["canonical"])


def _payload(target: Chain | Model | GroupedModel) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sparse arrays of a model, as the worker builds Storm's model from them."""
    n = target.n_states
    arrays: dict[str, Any] = {}
    if isinstance(target, Chain):
        kind, matrix, rewards, groups = "dtmc", target.matrix, target.rewards, None
    elif isinstance(target, Model):
        kind, matrix = "mdp", target.transitions
        groups = np.arange(n + 1, dtype=np.int64) * target.n_actions
        rewards = target.rewards.reshape(-1) if target.rewards is not None else None
    else:
        kind, matrix, rewards, groups = "mdp", target.matrix, target.rewards, target.groups
    arrays["indptr"] = np.asarray(matrix.indptr, dtype=np.int64)
    arrays["indices"] = np.asarray(matrix.indices, dtype=np.int64)
    arrays["data"] = np.asarray(matrix.data, dtype=np.float64)
    if groups is not None:
        arrays["groups"] = np.asarray(groups, dtype=np.int64)
    for name, mask in target.labels.items():
        arrays["label:" + name] = np.asarray(mask, dtype=bool)
    if rewards is not None:
        arrays["rewards"] = np.asarray(rewards, dtype=np.float64)
    header = {"kind": kind, "states": n, "labels": list(target.labels)}
    return header, arrays


def check(
    target: Chain | Model | GroupedModel,
    prop: str,
    *,
    scheduler: bool = False,
    precise: bool = True,
    budget: Budget | None = None,
) -> CheckResult:
    """Check a PCTL property on a chain (DTMC) or an MDP with Storm, in its worker process.

    Args:
        target: the policy-induced :class:`Chain`, a :class:`Model` (every action a choice),
            or a :class:`GroupedModel` (e.g. the attacked policy's MDP).
        prop: e.g. ``P=? [F "goal"]``, ``P=? [F<=20 "unsafe"]``, ``P=? [G !"unsafe"]``,
            ``R{"steps"}=? [F "goal"]``, ``Pmax=? [F "unsafe"]`` (MDPs need Pmax/Pmin).
        scheduler: also extract the optimal choice per state (MDPs).
        precise: a direct sparse solve (chains) or sound value iteration at precision 1e-12
            (MDPs), the default. ``False`` uses Storm's topological solver (strongly connected
            components solved in order) with default settings: much faster on large models,
            without a guaranteed error bound (about 1e-7 relative in the tests).
        budget: the query's limits (:class:`~rlsec.verify.budget.Budget`); by default
            :meth:`Budget.from_env`.

    Raises:
        ModelError: bad property or label (with its position), or Storm refused the model
            or property (e.g. an MDP property without Pmax/Pmin).
        ModelTooLarge: the property or the model exceeds a limit of the budget; nothing was
            handed to Storm.
        CheckAborted: the query ran past its time or memory budget, or Storm crashed.
        MissingDependency: Storm is not installed (``pip install 'rlsec[storm]'``).
    """
    b = Budget.from_env() if budget is None else budget
    _property_text(prop, b)
    _check_labels(prop, target.labels)
    matrix = target.matrix if isinstance(target, (Chain, GroupedModel)) else target.transitions
    check_size(target.n_states, max(int(matrix.nnz), int(matrix.shape[0])), b)
    header, arrays = _payload(target)
    n = target.n_states
    header.update(
        op="check",
        prop=prop,
        precise=bool(precise),
        relative=prop.lstrip().startswith("R"),
        scheduler=bool(scheduler) and not isinstance(target, Chain),
        limits=b.limits(),
    )
    t0 = time.perf_counter()
    reply, out = request(
        header, arrays, b, what=f"checking {prop[:80]!r}", max_reply=16 * n + (1 << 20)
    )
    elapsed = time.perf_counter() - t0
    values = out["values"]
    if values.shape != (n,):
        raise CheckAborted(f"Storm's worker returned {values.shape} values for {n} states")
    init = np.flatnonzero(np.asarray(target.initial) > 0)
    if reply["quantitative"]:
        result: float | bool = float(np.dot(np.asarray(target.initial)[init], values[init]))
    else:
        result = bool(values[init].all())
    chosen = out.get("scheduler")
    if chosen is not None:
        chosen = np.array(chosen, dtype=np.int64)
    check_seconds = float(reply["seconds"]["check"])
    return CheckResult(
        prop,
        result,
        np.array(values),
        n,
        int(reply["transitions"]),
        {"build": elapsed - check_seconds, "check": check_seconds},
        chosen,
    )
