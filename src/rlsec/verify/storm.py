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

Solvers (``precise=True``, the default): chains are solved directly, by Storm's Eigen backend
(sparse LU), so the result matches a dense numpy solve to about 1e-11 however slowly the chain
mixes (a random policy on slippery CliffWalking needs 3e5 expected steps: value iteration of
any kind, sound or optimistic, then runs for minutes); MDPs by Storm's sound value iteration
(it brackets the value from both sides) at precision 1e-12, absolute for probabilities and
relative for expected rewards (a million-state grid chain solves directly in seconds,
``benchmarks/verify.py``). Where a direct solve would fill in too much memory, or an MDP's
value iteration converges slowly, ``check(..., precise=False)`` uses Storm's topological
solver (strongly connected components in order): fast, without a guaranteed error bound
(about 1e-7 relative in the tests).

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

from rlsec.errors import ModelError
from rlsec.verify.model import Chain, Model

__all__ = ["CheckResult", "GroupedModel", "check", "parse_property"]

_LABEL = re.compile(r'(?<![{\w])"([^"]*)"')
_PRECISION = "1/1000000000000"


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


def _stormpy() -> Any:
    """stormpy, with Storm's own logging to stderr silenced: its errors reach us as
    exceptions, which rlsec turns into :class:`ModelError` with the same position."""
    import stormpy
    import stormpy.developer

    stormpy.developer.set_log_level(stormpy.developer.LogLevel.FATAL)
    return stormpy


def parse_property(text: str, labels: Any = None) -> Any:
    """Parse one PCTL property with Storm; check that its labels exist.

    Raises:
        ModelError: the property does not parse (with Storm's line:column and a caret), is
            not exactly one property, or names a label the model lacks (with its column).
    """
    stormpy = _stormpy()
    if not isinstance(text, str) or not text.strip():
        raise ModelError(f"expected a PCTL property such as 'P=? [F \"goal\"]', got {text!r}")
    try:
        props = stormpy.parse_properties(text)
    except RuntimeError as exc:
        msg = str(exc).split("Note that the used API")[0].strip()
        msg = msg.replace("WrongFormatException: ", "")
        raise ModelError(f"cannot parse property {text!r}: {msg}") from None
    if len(props) != 1:
        raise ModelError(f"expected exactly one property, got {len(props)} in {text!r}")
    if labels is not None:
        for m in _LABEL.finditer(text):
            if m.group(1) not in labels:
                raise ModelError(
                    f"unknown label {m.group(1)!r} at column {m.start() + 1} of {text!r}; "
                    f"the model has {sorted(labels)}"
                )
    return props[0]


def _matrix(m: sp.csr_array, groups: np.ndarray | None) -> Any:
    from stormpy import datastructures as ds

    n_rows, n_cols = m.shape
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(m.indptr))
    if groups is not None:
        b = ds.SparseMatrixBuilder[float](
            rows=n_rows,
            columns=n_cols,
            entries=int(m.nnz),
            has_custom_row_grouping=True,
            row_groups=len(groups) - 1,
        )
        b.add_next_values(rows.tolist(), m.indices.tolist(), m.data.tolist(), groups[:-1].tolist())
    else:
        b = ds.SparseMatrixBuilder[float](rows=n_rows, columns=n_cols, entries=int(m.nnz))
        b.add_next_values(rows.tolist(), m.indices.tolist(), m.data.tolist(), [])
    return b.build()


def _labeling(labels: Any, n: int) -> Any:
    from stormpy import datastructures as ds
    from stormpy import models as md

    lab = md.StateLabeling(n)
    for name, mask in labels.items():
        lab.add_label(name)
        lab.set_states(name, ds.BitVector(n, np.flatnonzero(mask).tolist()))
    return lab


def _storm_model(target: Chain | Model | GroupedModel) -> Any:
    from stormpy import models as md

    n = target.n_states
    steps: list[float]
    if isinstance(target, Chain):
        matrix = _matrix(target.matrix, None)
        comps = md.SparseModelComponents(
            transition_matrix=matrix, state_labeling=_labeling(target.labels, n)
        )
        models = {"steps": md.SparseRewardModel(optional_state_reward_vector=[1.0] * n)}
        if target.rewards is not None:
            models["reward"] = md.SparseRewardModel(
                optional_state_reward_vector=target.rewards.tolist()
            )
        comps.reward_models = models
        return md.SparseDtmc(comps)
    if isinstance(target, Model):
        groups = np.arange(n + 1, dtype=np.int64) * target.n_actions
        matrix_csr = target.transitions
        rewards = target.rewards.reshape(-1) if target.rewards is not None else None
    else:
        groups, matrix_csr, rewards = target.groups, target.matrix, target.rewards
    matrix = _matrix(matrix_csr, groups)
    comps = md.SparseModelComponents(
        transition_matrix=matrix, state_labeling=_labeling(target.labels, n)
    )
    steps = [1.0] * int(matrix_csr.shape[0])
    models = {"steps": md.SparseRewardModel(optional_state_action_reward_vector=steps)}
    if rewards is not None:
        models["reward"] = md.SparseRewardModel(
            optional_state_action_reward_vector=np.asarray(rewards, dtype=float).tolist()
        )
    comps.reward_models = models
    return md.SparseMdp(comps)


def _values(res: Any, n: int) -> np.ndarray:
    """Every state's value of a Storm check result (floats, or booleans for bounded
    properties)."""
    if res.is_quantitative():
        return np.asarray(res.get_value_vector(), dtype=np.float64)
    values = np.zeros(n, dtype=bool)
    values[[int(i) for i in res.get_truth_values_vector()]] = True  # the set bits
    return values


def _environment(*, chain: bool, relative: bool, precise: bool) -> Any:
    """The solver settings of :func:`check`: a direct sparse solve for chains; for MDPs sound
    value iteration at precision 1e-12, absolute for probabilities (a relative criterion never
    settles on values near 0), relative for expected rewards (an absolute one never settles on
    values in the thousands); the topological solver when not ``precise``."""
    import stormpy
    import stormpy.environments as envs

    if not precise or chain:
        env = envs.Environment()
        kind = envs.EquationSolverType.EIGEN if precise else envs.EquationSolverType.TOPOLOGICAL
        env.solver().set_linear_equation_solver_type(kind)
        return env
    env = envs.sound()
    for part in (env.solver().native(), env.solver().min_max()):
        part.precision = stormpy.Rational(_PRECISION)
        part.relative_termination_criterion = relative
    return env


def check(
    target: Chain | Model | GroupedModel,
    prop: str,
    *,
    scheduler: bool = False,
    precise: bool = True,
) -> CheckResult:
    """Check a PCTL property on a chain (DTMC) or an MDP with Storm.

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

    Raises:
        ModelError: bad property or label (with its position), or Storm refused the model
            or property (e.g. an MDP property without Pmax/Pmin).
    """
    stormpy = _stormpy()
    parsed = parse_property(prop, target.labels)
    t0 = time.perf_counter()
    model = _storm_model(target)
    t1 = time.perf_counter()
    try:
        res = stormpy.model_checking(
            model,
            parsed,
            only_initial_states=False,
            extract_scheduler=scheduler and not isinstance(target, Chain),
            environment=_environment(
                chain=isinstance(target, Chain),
                relative=prop.lstrip().startswith("R"),
                precise=precise,
            ),
        )
    except RuntimeError as exc:
        raise ModelError(f"Storm cannot check {prop!r} on this model: {exc}") from None
    t2 = time.perf_counter()
    n = target.n_states
    init = np.flatnonzero(np.asarray(target.initial) > 0)
    values = _values(res, n)
    if res.is_quantitative():
        result: float | bool = float(np.dot(np.asarray(target.initial)[init], values[init]))
    else:
        result = bool(values[init].all())
    chosen = None
    if scheduler and not isinstance(target, Chain) and res.has_scheduler():
        sched = res.get_scheduler()
        chosen = np.array(
            [sched.get_choice(s).get_deterministic_choice() for s in range(n)], dtype=np.int64
        )
    return CheckResult(
        prop,
        result,
        values,
        n,
        int(model.nr_transitions),
        {"build": t1 - t0, "check": t2 - t1},
        chosen,
    )
