"""Counterexamples for violated safety properties, rendered readably.

:func:`most_probable_path` is the single most likely path of the chain from an initial state
into a bad label: a shortest path under weights ``-log p`` (Dijkstra, scipy's csgraph).
:func:`counterexample` adds the states from which the violation is likely (probability of
reaching the bad label at least ``threshold``), and :func:`render_grid` draws per-state
values, labels and a path on the model's grid.

Example:
    >>> from rlsec.verify.model import Model
    >>> m = Model.from_env("FrozenLake-v1", is_slippery=False)
    >>> pi = np.zeros((16, 4)); pi[:, 1] = 1.0  # always "down"
    >>> most_probable_path(m.chain(pi), "hole")  # (0,0) (1,0) (2,0) (3,0): a hole
    ([0, 4, 8, 12], 1.0)
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from rlsec.errors import ModelError
from rlsec.verify.model import Chain, Model

__all__ = ["counterexample", "most_probable_path", "render_grid"]


def most_probable_path(chain: Chain, bad: str) -> tuple[list[int], float]:
    """The most probable path from an initial state into a state labelled ``bad``.

    Returns ``(states, probability)``; ``([], 0.0)`` when no bad state is reachable. The
    probability is the product of the path's transition probabilities (from the initial
    state, not weighted by the initial distribution).

    Raises:
        ModelError: ``bad`` is not a label of the chain.
    """
    if bad not in chain.labels:
        raise ModelError(f"unknown label {bad!r}; the chain has {sorted(chain.labels)}")
    target = np.asarray(chain.labels[bad])
    init = np.flatnonzero(np.asarray(chain.initial) > 0)
    if target[init].any():
        s = int(init[target[init]][0])
        return [s], 1.0
    m = sp.csr_array(chain.matrix, copy=True)
    # -log p; certain steps (p = 1) weigh a negligible positive amount because csgraph
    # treats stored zeros as missing edges
    m.data = np.maximum(-np.log(m.data), 1e-300)
    dist, pred, _ = csgraph.dijkstra(
        m, directed=True, indices=init, return_predecessors=True, min_only=True
    )
    bad_states = np.flatnonzero(target)
    reach = bad_states[np.isfinite(dist[bad_states])]
    if reach.size == 0:
        return [], 0.0
    end = int(reach[np.argmin(dist[reach])])
    path = [end]
    while pred[path[-1]] >= 0:
        path.append(int(pred[path[-1]]))
    path.reverse()
    prob = 1.0
    for a, b in itertools.pairwise(path):
        prob *= float(chain.matrix[a, b])
    return path, prob


def counterexample(
    chain: Chain, bad: str, values: np.ndarray, *, threshold: float = 0.5
) -> dict[str, Any]:
    """The most probable path into ``bad`` and the states whose probability of reaching it
    (``values``, e.g. from ``P=? [F "bad"]`` for all states) is at least ``threshold``."""
    path, prob = most_probable_path(chain, bad)
    model = chain.model
    names = model.state_names if model is not None else None
    v = np.asarray(values, dtype=float)
    likely = np.flatnonzero(v >= threshold)
    return {
        "label": bad,
        "path": [
            {"state": s, "name": names[s] if names else str(s), "reach_probability": float(v[s])}
            for s in path
        ],
        "path_probability": prob,
        "likely_states": likely.tolist(),
        "threshold": threshold,
    }


def render_grid(
    model: Model,
    *,
    values: np.ndarray | None = None,
    path: list[int] | None = None,
    actions: np.ndarray | None = None,
) -> str:
    """A text picture of a grid model: one cell per state.

    Each cell shows the state's label letter (``S`` init, ``G`` goal, ``X`` unsafe/hole/cliff),
    then, if given, its value as a percentage and its action's arrow; ``*`` marks the cells of
    ``path``.

    Raises:
        ModelError: the model has no grid (``cells``).
    """
    if model.cells is None or model.grid is None:
        raise ModelError("the model has no grid cells to draw on")
    rows, cols = model.grid
    arrows = {"left": "<", "down": "v", "right": ">", "up": "^"}
    bad = np.zeros(model.n_states, dtype=bool)
    for name in ("unsafe", "hole", "cliff"):
        if name in model.labels:
            bad |= model.labels[name]
    on_path = set(path or [])
    grid = [["" for _ in range(cols)] for _ in range(rows)]
    for s in range(model.n_states):
        r, c = (int(x) for x in model.cells[s])
        if r < 0 or grid[r][c]:
            continue
        tag = (
            "X"
            if bad[s]
            else "G"
            if model.labels.get("goal", np.zeros(1, bool))[s : s + 1].any()
            else "S"
            if model.labels["init"][s]
            else "."
        )
        cell = tag + ("*" if s in on_path else " ")
        if values is not None:
            cell += f"{100 * float(values[s]):5.1f}%"
        if actions is not None and model.action_names is not None:
            cell += " " + arrows.get(model.action_names[int(actions[s])], "?")
        grid[r][c] = cell
    width = max(len(x) for row in grid for x in row) if rows and cols else 0
    return "\n".join(" ".join(x.ljust(width) for x in row) for row in grid)
