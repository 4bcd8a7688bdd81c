"""A slippery plant floor: an operational gridworld with an exact finite model.

A maintenance robot leaves its charging dock and must reach a valve on a foundry floor.
Furnaces and a coolant spill are hazards; the floor around the spill is wet and the robot
slides on it; shelving racks block the way. The environment is an ordinary Gymnasium env
(registered as ``rlsec/SlipperyPlant-v0`` when :mod:`rlsec.envs` is imported, which
``import rlsec`` does), and :meth:`SlipperyPlantEnv.finite_mdp` gives its exact
:class:`~rlsec.envs.finite.FiniteMDP`, so verification results on the model hold for the
environment.

Tiles of a map (one string per row):

* ``S`` charging dock: where episodes start (uniformly if there are several).
* ``G`` valve: the goal. Entering it ends the episode with reward ``+1``.
* ``F`` furnace, ``C`` coolant spill: hazards (label ``unsafe``). Entering one ends the
  episode with reward ``-hazard_penalty``.
* ``~`` wet floor: moving off it, the robot goes where it meant to with probability
  ``1 - slip`` and slides to either side of that direction with ``slip / 2`` each.
* ``.`` dry floor: moves are deterministic.
* ``#`` shelving: not a state; moving into it (or off the map) leaves the robot in place.

Any other step costs ``step_cost``. Actions are FrozenLake's: 0 left, 1 down, 2 right, 3 up.
The episode is truncated after ``max_steps`` steps (default ``8 * (rows + cols)``); the
finite model has no time limit, as with :meth:`FiniteMDP.from_toy_text`.

States are the non-shelving cells in row-major order; :meth:`SlipperyPlantEnv.state_cells`
gives each state's ``(row, col)``. Observation modes (``obs_mode``), each a pure function of
the state (:meth:`SlipperyPlantEnv.state_observations`):

* ``"features"`` (default): ``Box`` of 13 float32 features (:data:`FEATURE_NAMES`): the
  position scaled to [0, 1], the offset to the nearest goal scaled to [-1, 1], whether the
  floor is wet, and for each action direction whether the next cell is a hazard and whether
  it is blocked (shelving or the edge of the map). For MLP policies and L-inf attacks.
* ``"onehot"``: ``Box`` of ``n_states`` float32, one-hot.
* ``"index"``: ``Discrete(n_states)``, the state index.

``render_mode="ansi"`` draws the floor as text, ``"rgb_array"`` as an image.

Larger layouts: ``size=N`` builds an ``N x N`` floor with :func:`generate_plant`,
deterministically from ``map_seed``; ``rlsec/SlipperyPlant32x32-v0`` is ``size=32``.

Example:
    >>> import gymnasium as gym
    >>> import rlsec.envs
    >>> env = gym.make("rlsec/SlipperyPlant-v0", obs_mode="index", slip=0.2)
    >>> obs, info = env.reset(seed=0)
    >>> obs, env.unwrapped.state_cells()[obs].tolist()
    (0, [0, 0])
    >>> mdp = env.unwrapped.finite_mdp(discount=0.99)
    >>> mdp.n_states, mdp.n_actions, int(mdp.labels["unsafe"].sum())
    (54, 4, 6)
    >>> v, q = mdp.value_iteration()
    >>> bool(v[obs] > 0.5)
    True
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from rlsec.envs.finite import FiniteMDP
from rlsec.errors import ConfigError

__all__ = [
    "ACTION_NAMES",
    "CELL_PIXELS",
    "FEATURE_NAMES",
    "MAPS",
    "OBS_MODES",
    "TILES",
    "SlipperyPlantEnv",
    "generate_plant",
]

#: Action ``a`` moves by ``_MOVES[a]`` (row, col); FrozenLake's order.
ACTION_NAMES = ("left", "down", "right", "up")
_MOVES = np.array([[0, -1], [1, 0], [0, 1], [-1, 0]])
OBS_MODES = ("features", "onehot", "index")
TILES = {
    "S": "charging dock (start)",
    "G": "valve (goal)",
    "F": "furnace (hazard)",
    "C": "coolant spill (hazard)",
    "~": "wet floor (slippery)",
    ".": "dry floor",
    "#": "shelving (blocked, not a state)",
}
_HAZARDS = "FC"
#: Pixels per cell side of ``render_mode="rgb_array"`` images, and each tile's colour.
CELL_PIXELS = 16
_COLOURS = {
    "S": (240, 220, 120),
    "G": (60, 170, 80),
    "F": (220, 60, 30),
    "C": (160, 60, 200),
    "~": (120, 170, 230),
    ".": (210, 210, 210),
    "#": (90, 70, 50),
}
FEATURE_NAMES = (
    "row",
    "col",
    "goal_drow",
    "goal_dcol",
    "wet",
    *(f"hazard_{a}" for a in ACTION_NAMES),
    *(f"blocked_{a}" for a in ACTION_NAMES),
)

#: Built-in layouts. ``8x8``: the short ways to the valve cross wet floor next to furnaces
#: and spills; the dry ways round are longer.
MAPS: dict[str, tuple[str, ...]] = {
    "4x4": (
        "S..#",
        ".~F.",
        ".~..",
        "#C.G",
    ),
    "8x8": (
        "S...#...",
        ".##.#.F.",
        "..~~~~F.",
        "#.~CC~..",
        "...~~.#.",
        ".##...#.",
        ".F..~~~.",
        "...#~C~G",
    ),
}


def generate_plant(size: int, *, seed: int = 0) -> tuple[str, ...]:
    """A ``size x size`` plant floor, the same for the same ``(size, seed)``.

    The dock is in the top-left corner and the valve in the bottom-right one. Rows of
    shelving racks with gaps form aisles; 2x2 furnaces, coolant spills ringed by wet floor
    and loose wet patches are scattered over the floor. Layouts are redrawn until the valve
    is reachable from the dock without entering a hazard.

    Args:
        size: rows and columns, at least 4.
        seed: seeds the layout (``np.random.default_rng(seed)``).

    Returns:
        The map, one string per row (tiles as in :data:`TILES`).

    Raises:
        ConfigError: ``size`` below 4 or not an integer.

    Example:
        >>> plant = generate_plant(6, seed=1)
        >>> len(plant), {len(row) for row in plant}, plant[0][0], plant[-1][-1]
        (6, {6}, 'S', 'G')
        >>> plant == generate_plant(6, seed=1)
        True
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 4:
        raise ConfigError(f"size must be an integer >= 4, got {size!r}")
    n = int(size)
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        g = np.full((n, n), ".", dtype="<U1")
        for r in range(2, n - 2, 4):  # shelving racks with gaps between them
            c = int(rng.integers(0, 3))
            while c < n:
                length = int(rng.integers(2, max(3, n // 4) + 1))
                g[r, c : c + length] = "#"
                c += length + int(rng.integers(1, 4))
        for _ in range(max(1, n * n // 48)):  # furnaces, 2x2 (1x1 on small floors)
            k = 2 if n >= 8 else 1
            r, c = (int(x) for x in rng.integers(0, n - k + 1, size=2))
            g[r : r + k, c : c + k] = "F"
        for _ in range(max(1, n * n // 64)):  # coolant spills with a wet ring
            r, c = (int(x) for x in rng.integers(0, n, size=2))
            ring = g[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2]
            ring[ring == "."] = "~"
            g[r, c] = "C"
        for _ in range(n * n // 32):  # loose wet patches
            r, c = (int(x) for x in rng.integers(0, n, size=2))
            if g[r, c] == ".":
                g[r, c] = "~"
        for r0, c0 in ((0, 0), (n - 1, n - 1)):  # dry, open corners
            g[max(r0 - 1, 0) : r0 + 2, max(c0 - 1, 0) : c0 + 2] = "."
        g[0, 0], g[n - 1, n - 1] = "S", "G"
        desc = tuple("".join(row) for row in g)
        if _reachable_goal(desc):
            return desc
    raise ConfigError(f"no layout with a safe path found for size {n}, seed {seed}")


def _reachable_goal(desc: Sequence[str]) -> bool:
    """Whether some goal is reachable from some start through non-hazard cells."""
    rows, cols = len(desc), len(desc[0])
    start = [(r, c) for r in range(rows) for c in range(cols) if desc[r][c] == "S"]
    seen = set(start)
    queue = deque(start)
    while queue:
        r, c = queue.popleft()
        if desc[r][c] == "G":
            return True
        for dr, dc in _MOVES.tolist():
            r2, c2 = r + dr, c + dc
            if (
                0 <= r2 < rows
                and 0 <= c2 < cols
                and (r2, c2) not in seen
                and desc[r2][c2] not in "#" + _HAZARDS
            ):
                seen.add((r2, c2))
                queue.append((r2, c2))
    return False


def _check_desc(desc: Any) -> tuple[str, ...]:
    if isinstance(desc, str) or not isinstance(desc, Sequence) or not desc:
        raise ConfigError(
            f"desc must be a non-empty sequence of equal-length strings, got {desc!r}"
        )
    rows = tuple(desc)
    if not all(isinstance(row, str) for row in rows) or len({len(row) for row in rows}) != 1:
        raise ConfigError(f"desc rows must be strings of equal length, got {rows!r}")
    if not rows[0]:
        raise ConfigError("desc rows must not be empty")
    bad = sorted({ch for row in rows for ch in row} - set(TILES))
    if bad:
        raise ConfigError(f"desc holds unknown tiles {bad}; expected tiles from {list(TILES)}")
    for tile, what in (("S", "start"), ("G", "goal")):
        if not any(tile in row for row in rows):
            raise ConfigError(f"desc needs at least one {tile!r} ({what}) tile, got {rows!r}")
    return rows


def _probability(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:  # NaN fails too
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _nonnegative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    if not (math.isfinite(float(value)) and float(value) >= 0):
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class SlipperyPlantEnv(gym.Env[Any, Any]):
    """The slippery plant floor (see the module docstring for tiles and rewards).

    Args:
        map_name: a built-in layout of :data:`MAPS` (default ``"8x8"``).
        desc: a custom layout, one string per row (tiles as in :data:`TILES`).
        size: build an ``size x size`` layout with :func:`generate_plant`.
        map_seed: the seed of the generated layout (only with ``size``).
        slip: probability of sliding sideways when moving off wet floor, in [0, 1].
        obs_mode: ``"features"``, ``"onehot"`` or ``"index"``.
        step_cost: reward ``-step_cost`` on every step that does not end the episode.
        hazard_penalty: reward ``-hazard_penalty`` on entering a hazard.
        max_steps: truncate after this many steps (default ``8 * (rows + cols)``).
        render_mode: ``None``, ``"ansi"`` (text) or ``"rgb_array"`` (an image).

    At most one of ``map_name``, ``desc`` and ``size`` may be given.

    ``reset(options={"state": s})`` starts in state ``s`` instead of a dock (any state,
    for testing and analysis). Stepping from a goal or hazard state (possible only after
    such a reset) stays there with reward 0 and ``terminated=True``, as in the model.

    Raises:
        ConfigError: an unknown map or observation mode, a bad layout, a probability
            outside [0, 1], a negative cost.

    Example:
        >>> env = SlipperyPlantEnv(map_name="4x4", slip=0.5)
        >>> env.grid_shape, env.n_states, env.observation_space.shape
        ((4, 4), 14, (13,))
        >>> obs, info = env.reset(seed=0, options={"state": 4})  # the wet cell (1, 1)
        >>> bool((obs == env.state_observations()[4]).all()), env.state_cells()[4].tolist()
        (True, [1, 1])
        >>> env.finite_mdp().transitions[4, 2].round(2).tolist()  # right: 0.5, or slide
        [0.0, 0.25, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0]
    """

    # Gymnasium declares ``metadata`` as a plain class attribute; ClassVar would not type-check
    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}  # noqa: RUF012

    def __init__(
        self,
        *,
        map_name: str | None = None,
        desc: Sequence[str] | None = None,
        size: int | None = None,
        map_seed: int = 0,
        slip: float = 0.2,
        obs_mode: str = "features",
        step_cost: float = 0.01,
        hazard_penalty: float = 1.0,
        max_steps: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        chosen = (("map_name", map_name), ("desc", desc), ("size", size))
        given = [k for k, v in chosen if v is not None]
        if len(given) > 1:
            raise ConfigError(f"give at most one of map_name, desc and size; got {given}")
        if desc is not None:
            layout = _check_desc(desc)
        elif size is not None:
            layout = generate_plant(size, seed=map_seed)
        else:
            name = "8x8" if map_name is None else map_name
            if name not in MAPS:
                raise ConfigError(
                    f"unknown map_name {name!r}; expected one of {sorted(MAPS)} "
                    "(or desc=[...] for a custom layout, size=N for a generated one)"
                )
            layout = MAPS[name]
        if obs_mode not in OBS_MODES:
            raise ConfigError(f"obs_mode must be one of {list(OBS_MODES)}, got {obs_mode!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(
                f"render_mode must be None or one of {self.metadata['render_modes']}, "
                f"got {render_mode!r}"
            )
        rows, cols = len(layout), len(layout[0])
        if max_steps is None:
            max_steps = 8 * (rows + cols)
        if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)):
            raise ConfigError(f"max_steps must be a positive integer, got {max_steps!r}")
        if max_steps < 1:
            raise ConfigError(f"max_steps must be a positive integer, got {max_steps!r}")
        self.slip = _probability("slip", slip)
        self.step_cost = _nonnegative("step_cost", step_cost)
        self.hazard_penalty = _nonnegative("hazard_penalty", hazard_penalty)
        self.max_steps = int(max_steps)
        self.obs_mode = obs_mode
        self.render_mode = render_mode
        self._desc = layout
        self._grid = np.array([list(row) for row in layout], dtype="<U1")

        cells = np.argwhere(self._grid != "#")  # row-major
        n = len(cells)
        self._cells = cells
        self._tiles = self._grid[cells[:, 0], cells[:, 1]]
        self._index = np.full((rows, cols), -1, dtype=np.int64)
        self._index[cells[:, 0], cells[:, 1]] = np.arange(n)
        # _next[s, d]: the state reached by moving in direction d (staying put when blocked)
        target = cells[:, None, :] + _MOVES[None, :, :]
        inside = (
            (target[..., 0] >= 0)
            & (target[..., 0] < rows)
            & (target[..., 1] >= 0)
            & (target[..., 1] < cols)
        )
        clipped = np.where(inside[..., None], target, 0)
        neighbour = np.where(inside, self._index[clipped[..., 0], clipped[..., 1]], -1)
        self._blocked = neighbour < 0
        self._next = np.where(self._blocked, np.arange(n)[:, None], neighbour)
        self._goal = self._tiles == "G"
        self._hazard = np.isin(self._tiles, list(_HAZARDS))
        self._terminal = self._goal | self._hazard
        self._wet = self._tiles == "~"
        self._start = np.flatnonzero(self._tiles == "S")
        self._arrive = np.where(
            self._goal, 1.0, np.where(self._hazard, -self.hazard_penalty, -self.step_cost)
        )

        self.action_space = gym.spaces.Discrete(4)
        self.observation_space: gym.Space[Any]
        self._obs_table: np.ndarray
        if obs_mode == "index":
            self.observation_space = gym.spaces.Discrete(n)
            self._obs_table = np.arange(n, dtype=np.int64)
        elif obs_mode == "onehot":
            self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(n,), dtype=np.float32)
            self._obs_table = np.eye(n, dtype=np.float32)
        else:
            low = np.zeros(len(FEATURE_NAMES), dtype=np.float32)
            low[2:4] = -1.0
            self.observation_space = gym.spaces.Box(
                low, np.ones(len(FEATURE_NAMES), dtype=np.float32), dtype=np.float32
            )
            self._obs_table = self._features()
        self._obs_table.flags.writeable = False
        self._state: int | None = None
        self._steps = 0
        self._last_action: int | None = None

    # -- the layout ---------------------------------------------------------------------------
    @property
    def desc(self) -> tuple[str, ...]:
        """The layout, one string per row."""
        return self._desc

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the floor."""
        return int(self._grid.shape[0]), int(self._grid.shape[1])

    @property
    def n_states(self) -> int:
        """Number of states: the cells that are not shelving."""
        return len(self._cells)

    @property
    def state(self) -> int | None:
        """The current state index (None before the first reset)."""
        return self._state

    def state_cells(self) -> np.ndarray:
        """``(row, col)`` of every state, shape ``(n_states, 2)``; every state is a cell."""
        return self._cells.copy()

    def state_observations(self) -> np.ndarray:
        """The observation the env emits in each state, shape
        ``(n_states, *observation_space.shape)`` in the space's dtype (``(n_states,)`` int64
        indices in ``"index"`` mode)."""
        return self._obs_table.copy()

    def _features(self) -> np.ndarray:
        rows, cols = self.grid_shape
        scale = np.array([max(rows - 1, 1), max(cols - 1, 1)], dtype=np.float64)
        goals = self._cells[self._goal]
        dist = np.abs(self._cells[:, None, :] - goals[None, :, :]).sum(axis=2)
        nearest = goals[np.argmin(dist, axis=1)]  # first in row-major order among ties
        hazard_next = self._hazard[self._next] & ~self._blocked
        x = np.concatenate(
            [
                self._cells / scale,
                (nearest - self._cells) / scale,
                self._wet[:, None],
                hazard_next,
                self._blocked,
            ],
            axis=1,
        )
        return x.astype(np.float32)

    # -- the exact model ----------------------------------------------------------------------
    def finite_mdp(self, discount: float = 0.99) -> FiniteMDP:
        """The exact model of this environment (without its time limit).

        Goal and hazard states are absorbing with reward 0 (label ``terminal``), as in
        :meth:`FiniteMDP.from_toy_text`. ``R[s, a]`` is the expected reward of the step.
        Labels: ``init`` (docks), ``goal``, ``unsafe`` (= ``furnace | spill``),
        ``furnace``, ``spill``, ``slippery`` (wet floor), ``terminal``.

        Args:
            discount: gamma of the model; the environment itself is episodic.
        """
        n = self.n_states
        p = np.zeros((n, 4, n))
        states = np.arange(n)
        for a in range(4):
            for turn, prob in ((0, 1.0 - self.slip), (-1, self.slip / 2), (1, self.slip / 2)):
                d = (a + turn) % 4
                weight = np.where(self._wet, prob, 1.0 if turn == 0 else 0.0)
                p[states, a, self._next[:, d]] += weight  # one entry per state: no repeats
        r = p @ self._arrive
        p[self._terminal] = 0.0
        p[self._terminal, :, self._terminal] = 1.0
        r[self._terminal] = 0.0
        initial = np.zeros(n)
        initial[self._start] = 1.0 / len(self._start)
        labels = {
            "init": initial > 0,
            "goal": self._goal.copy(),
            "unsafe": self._hazard.copy(),
            "furnace": self._tiles == "F",
            "spill": self._tiles == "C",
            "slippery": self._wet.copy(),
            "terminal": self._terminal.copy(),
        }
        names = tuple(f"{t}({r},{c})" for t, (r, c) in zip(self._tiles, self._cells, strict=True))
        return FiniteMDP(p, r, initial, discount, labels, names, ACTION_NAMES)

    # -- Gymnasium ----------------------------------------------------------------------------
    def _observe(self, s: int) -> Any:
        if self.obs_mode == "index":
            return int(s)
        return self._obs_table[s].copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        opts = options or {}
        if "state" in opts:
            s = opts["state"]
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
                raise ConfigError(f"options['state'] must be a state index, got {s!r}")
            if not 0 <= s < self.n_states:
                raise ConfigError(f"options['state'] must be in [0, {self.n_states}), got {int(s)}")
            self._state = int(s)
        else:
            self._state = int(self.np_random.choice(self._start))
        self._steps = 0
        self._last_action = None
        return self._observe(self._state), {"state": self._state}

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._state is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        a = int(action)
        if not 0 <= a < 4:
            raise ConfigError(f"action must be in [0, 4), got {action!r}")
        s = self._state
        self._steps += 1
        self._last_action = a
        slipped = False
        if self._terminal[s]:
            reward = 0.0
        else:
            d = a
            if self._wet[s]:
                u = float(self.np_random.random())
                if u < self.slip:
                    d = (a - 1) % 4 if u < self.slip / 2 else (a + 1) % 4
                    slipped = True
            s = int(self._next[s, d])
            reward = float(self._arrive[s])
            self._state = s
        terminated = bool(self._terminal[s])
        truncated = not terminated and self._steps >= self.max_steps
        return self._observe(s), reward, terminated, truncated, {"state": s, "slipped": slipped}

    def render(self) -> str | np.ndarray | None:
        """The floor as text (``"ansi"``, the robot drawn as ``@``) or as an RGB image
        (``"rgb_array"``, :data:`CELL_PIXELS` pixels a cell, the robot a dark square)."""
        if self.render_mode is None:
            gym.logger.warn(
                "render() called without a render_mode; "
                'make the env with render_mode="ansi" or "rgb_array"'
            )
            return None
        if self.render_mode == "rgb_array":
            return self._image()
        grid = self._grid.copy()
        if self._state is not None:
            r, c = self._cells[self._state]
            grid[r, c] = "@"
        head = f"step {self._steps}"
        if self._last_action is not None:
            head += f" ({ACTION_NAMES[self._last_action]})"
        return head + "\n" + "\n".join(" ".join(row) for row in grid) + "\n"

    def _image(self) -> np.ndarray:
        k = CELL_PIXELS
        colours = np.array([_COLOURS[t] for t in self._grid.reshape(-1)], dtype=np.uint8)
        img = colours.reshape(*self.grid_shape, 3).repeat(k, axis=0).repeat(k, axis=1)
        img[::k], img[:, ::k] = 255, 255  # grid lines
        if self._state is not None:
            r, c = (int(x) for x in self._cells[self._state])
            img[r * k + k // 4 : (r + 1) * k - k // 4, c * k + k // 4 : (c + 1) * k - k // 4] = 30
        return img
