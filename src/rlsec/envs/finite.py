"""Finite MDPs as dense numpy arrays, and the exact tabular tools that work on them.

A :class:`FiniteMDP` holds the transition tensor ``P[s, a, s']`` (``transitions``), the
expected reward ``R[s, a]`` (``rewards``), the initial distribution, the discount, boolean
state labels (``init``, ``goal``, ``hole``, ...) and optional state and action names. It is
validated on construction and immutable afterwards.

:meth:`FiniteMDP.from_toy_text` reads the transition tables of Gymnasium's toy-text
environments (``env.unwrapped.P``: FrozenLake, CliffWalking, Taxi). A transition the
environment flags ``terminated`` leads into a state that the model makes absorbing with
reward 0 (label ``terminal``), so the discounted values of the model are those of the
episodic environment without its time limit.

Policies are arrays: deterministic ones ``(n_states,)`` of action indices, stochastic ones
``(n_states, n_actions)`` of probabilities.

Example:
    >>> mdp = FiniteMDP.from_toy_text("FrozenLake-v1", is_slippery=False, discount=0.9)
    >>> mdp.n_states, mdp.n_actions, sorted(mdp.labels)
    (16, 4, ['goal', 'hole', 'init', 'terminal', 'unsafe'])
    >>> v, q = mdp.value_iteration()
    >>> round(float(v[0]), 5)  # six moves to the goal, reward 1 on the last: 0.9 ** 5
    0.59049
    >>> bool(np.allclose(mdp.evaluate(greedy(q)), v))
    True
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import gymnasium as gym
import numpy as np

from rlsec.envs import make
from rlsec.errors import ConfigError, ModelTooLarge

__all__ = ["MAX_DENSE_ELEMENTS", "FiniteMDP", "greedy", "q_learning"]

#: The most transition probabilities (``n_states * n_actions * n_states``) a dense
#: :class:`FiniteMDP` read from a table may hold: 2**26, 512 MiB of float64.
MAX_DENSE_ELEMENTS = 2**26

_ATOL = 1e-8
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True, eq=False)
class FiniteMDP:
    """A finite Markov decision process with dense arrays.

    Attributes:
        transitions: ``P[s, a, s']``, shape ``(n_states, n_actions, n_states)``; every
            ``P[s, a]`` is a probability distribution.
        rewards: expected reward ``R[s, a]`` of taking ``a`` in ``s``, shape
            ``(n_states, n_actions)``.
        initial: initial state distribution, shape ``(n_states,)``.
        discount: gamma in [0, 1]. Exact evaluation and value iteration need gamma < 1.
        labels: name -> boolean mask over states. Names are identifiers (``goal``,
            ``unsafe``), so they can become labels of a model checker's input.
        state_names: optional, one per state.
        action_names: optional, one per action.

    The arrays are copied to float64 (labels to bool) and made read-only; ``labels`` becomes
    a read-only mapping.

    Example:
        >>> mdp = FiniteMDP(
        ...     transitions=[[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]],
        ...     rewards=[[0.0, 1.0], [0.0, 0.0]],
        ...     initial=[1.0, 0.0],
        ...     discount=0.5,
        ... )
        >>> mdp.evaluate(np.array([1, 0])).tolist()
        [1.0, 0.0]
        >>> FiniteMDP([[[0.5, 0.4]], [[0.0, 1.0]]], [[0.0], [0.0]], [1.0, 0.0], 0.9)
        Traceback (most recent call last):
        ...
        rlsec.errors.ConfigError: transitions[0, 0] sums to 0.9, expected 1 (1 such rows)
    """

    transitions: np.ndarray
    rewards: np.ndarray
    initial: np.ndarray
    discount: float
    labels: Mapping[str, np.ndarray] = field(default_factory=dict)
    state_names: tuple[str, ...] | None = None
    action_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        p = _float_array("transitions", self.transitions)
        if p.ndim != 3 or p.shape[0] != p.shape[2] or p.shape[0] == 0 or p.shape[1] == 0:
            raise ConfigError(
                f"transitions has shape {p.shape}; expected (n_states, n_actions, n_states) "
                "with the same n_states at both ends"
            )
        n_s, n_a = p.shape[0], p.shape[1]
        if np.any(p < 0):
            s, a, t = np.argwhere(p < 0)[0]
            raise ConfigError(f"transitions[{s}, {a}, {t}] = {float(p[s, a, t])!r}, expected >= 0")
        sums = p.sum(axis=2)
        bad = np.argwhere(np.abs(sums - 1.0) > _ATOL)
        if bad.size:
            s, a = bad[0]
            raise ConfigError(
                f"transitions[{s}, {a}] sums to {float(sums[s, a])!r}, expected 1 "
                f"({len(bad)} such rows)"
            )
        r = _float_array("rewards", self.rewards)
        if r.shape != (n_s, n_a):
            raise ConfigError(
                f"rewards has shape {r.shape}; expected (n_states, n_actions) = ({n_s}, {n_a})"
            )
        mu = _float_array("initial", self.initial)
        if mu.shape != (n_s,):
            raise ConfigError(f"initial has shape {mu.shape}; expected (n_states,) = ({n_s},)")
        if np.any(mu < 0) or abs(float(mu.sum()) - 1.0) > _ATOL:
            raise ConfigError(
                f"initial must be a probability distribution (>= 0, sum 1), got sum "
                f"{float(mu.sum())!r} and minimum {float(mu.min())!r}"
            )
        gamma = self.discount
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float, np.floating)):
            raise ConfigError(f"discount must be a number in [0, 1], got {gamma!r}")
        if not 0.0 <= float(gamma) <= 1.0:
            raise ConfigError(f"discount must be in [0, 1], got {gamma!r}")
        labels: dict[str, np.ndarray] = {}
        for name, mask in dict(self.labels).items():
            if not isinstance(name, str) or not _LABEL.match(name):
                raise ConfigError(f"label names must be identifiers, got {name!r}")
            m = np.asarray(mask)
            if m.shape != (n_s,) or m.dtype != np.bool_:
                raise ConfigError(
                    f"label {name!r} must be a boolean mask of shape ({n_s},), "
                    f"got dtype {m.dtype} shape {m.shape}"
                )
            labels[name] = _frozen(m.copy())
        for what, names, n in (
            ("state_names", self.state_names, n_s),
            ("action_names", self.action_names, n_a),
        ):
            if names is not None and (
                len(names) != n or not all(isinstance(x, str) for x in names)
            ):
                raise ConfigError(f"{what} must be {n} strings, got {len(names)} items")
        object.__setattr__(self, "transitions", _frozen(p))
        object.__setattr__(self, "rewards", _frozen(r))
        object.__setattr__(self, "initial", _frozen(mu))
        object.__setattr__(self, "discount", float(gamma))
        object.__setattr__(self, "labels", MappingProxyType(labels))
        for what in ("state_names", "action_names"):
            names = getattr(self, what)
            if names is not None:
                object.__setattr__(self, what, tuple(names))

    # -- shape -------------------------------------------------------------------------------
    @property
    def n_states(self) -> int:
        return int(self.transitions.shape[0])

    @property
    def n_actions(self) -> int:
        return int(self.transitions.shape[1])

    def __repr__(self) -> str:
        return (
            f"FiniteMDP(n_states={self.n_states}, n_actions={self.n_actions}, "
            f"discount={self.discount}, labels={sorted(self.labels)})"
        )

    # -- policies ----------------------------------------------------------------------------
    def policy_matrix(self, policy: np.ndarray | Sequence[int]) -> np.ndarray:
        """``π(a | s)`` as an ``(n_states, n_actions)`` array.

        Args:
            policy: deterministic ``(n_states,)`` action indices, or stochastic
                ``(n_states, n_actions)`` rows of probabilities.
        """
        pi = np.asarray(policy)
        n_s, n_a = self.n_states, self.n_actions
        if pi.shape == (n_s,) and np.issubdtype(pi.dtype, np.integer):
            if np.any((pi < 0) | (pi >= n_a)):
                raise ConfigError(
                    f"a deterministic policy holds action indices in [0, {n_a}), "
                    f"got values in [{pi.min()}, {pi.max()}]"
                )
            out = np.zeros((n_s, n_a))
            out[np.arange(n_s), pi] = 1.0
            return out
        if pi.shape == (n_s, n_a) and np.issubdtype(pi.dtype, np.floating):
            if np.any(pi < 0) or np.any(np.abs(pi.sum(axis=1) - 1.0) > _ATOL):
                raise ConfigError("a stochastic policy's rows must be >= 0 and sum to 1")
            return pi.astype(np.float64)
        raise ConfigError(
            f"a policy is ({n_s},) integer actions or ({n_s}, {n_a}) float probabilities; "
            f"got dtype {pi.dtype} shape {pi.shape}"
        )

    # -- exact solutions ---------------------------------------------------------------------
    def backup(self, values: np.ndarray) -> np.ndarray:
        """One Bellman backup: ``Q[s, a] = R[s, a] + gamma Σ_s' P[s, a, s'] V[s']``."""
        v = np.asarray(values, dtype=np.float64)
        if v.shape != (self.n_states,):
            raise ConfigError(f"values must have shape ({self.n_states},), got {v.shape}")
        return self.rewards + self.discount * (self.transitions @ v)

    def evaluate(self, policy: np.ndarray | Sequence[int]) -> np.ndarray:
        """Exact ``V^π`` by solving ``(I - gamma P_π) V = R_π``."""
        self._need_discount_below_one("evaluate")
        pi = self.policy_matrix(policy)
        p_pi = np.einsum("sa,sat->st", pi, self.transitions)
        r_pi = (pi * self.rewards).sum(axis=1)
        return np.linalg.solve(np.eye(self.n_states) - self.discount * p_pi, r_pi)

    def q_values(self, policy: np.ndarray | Sequence[int]) -> np.ndarray:
        """Exact ``Q^π`` of a policy."""
        return self.backup(self.evaluate(policy))

    def expected_return(self, policy: np.ndarray | Sequence[int]) -> float:
        """``E[Σ_t gamma^t r_t]`` from the initial distribution."""
        return float(self.initial @ self.evaluate(policy))

    def value_iteration(
        self, *, tol: float = 1e-10, max_iter: int = 1_000_000
    ) -> tuple[np.ndarray, np.ndarray]:
        """Optimal values ``(V*, Q*)`` by value iteration, to within ``tol`` in sup norm.

        Stops once successive iterates differ by less than ``tol·(1 - gamma)/gamma``, which bounds
        the distance to ``V*`` by ``tol``.
        """
        self._need_discount_below_one("value_iteration")
        gamma = self.discount
        stop = tol * (1.0 - gamma) / gamma if gamma > 0 else np.inf
        v = np.zeros(self.n_states)
        for _ in range(max_iter):
            q = self.backup(v)
            v_next = q.max(axis=1)
            done = float(np.max(np.abs(v_next - v))) <= stop
            v = v_next
            if done:
                q = self.backup(v)
                return q.max(axis=1), q
        raise ConfigError(
            f"value iteration did not reach tol={tol} in {max_iter} iterations "
            f"(discount {gamma}); raise max_iter or tol"
        )

    def occupancy(
        self, policy: np.ndarray | Sequence[int], start: np.ndarray | None = None
    ) -> np.ndarray:
        """Discounted state-action occupancy ``μ[s, a] = Σ_t gamma^t Pr(s_t = s, a_t = a)``.

        From ``start`` (default: the initial distribution); it sums to ``1 / (1 - gamma)``, and
        ``(μ * R).sum()`` is the expected discounted return.
        """
        self._need_discount_below_one("occupancy")
        pi = self.policy_matrix(policy)
        sigma = self.initial if start is None else self._distribution("start", start)
        p_pi = np.einsum("sa,sat->st", pi, self.transitions)
        d = np.linalg.solve((np.eye(self.n_states) - self.discount * p_pi).T, sigma)
        mu: np.ndarray = d[:, None] * pi
        return mu

    def reachable(
        self, policy: np.ndarray | Sequence[int] | None = None, start: np.ndarray | None = None
    ) -> np.ndarray:
        """Boolean mask of the states reachable with positive probability.

        From the support of ``start`` (default: the initial distribution), taking the
        actions ``policy`` gives positive probability (any action if ``policy`` is None).
        """
        sigma = self.initial if start is None else self._distribution("start", start)
        allowed = (
            np.ones((self.n_states, self.n_actions), dtype=bool)
            if policy is None
            else self.policy_matrix(policy) > 0
        )
        succ = np.einsum("sa,sat->st", allowed.astype(np.float64), self.transitions) > 0
        seen = sigma > 0
        queue = deque(np.flatnonzero(seen).tolist())
        while queue:
            s = queue.popleft()
            for t in np.flatnonzero(succ[s] & ~seen):
                seen[t] = True
                queue.append(int(t))
        return seen

    def _need_discount_below_one(self, what: str) -> None:
        if self.discount >= 1.0:
            raise ConfigError(f"{what} solves the discounted problem and needs discount < 1")

    def _distribution(self, name: str, x: np.ndarray) -> np.ndarray:
        d = np.asarray(x, dtype=np.float64)
        if d.shape != (self.n_states,) or np.any(d < 0) or abs(float(d.sum()) - 1.0) > _ATOL:
            raise ConfigError(
                f"{name} must be a probability distribution over {self.n_states} states, "
                f"got shape {d.shape}"
            )
        return d

    # -- Gymnasium toy-text ------------------------------------------------------------------
    @classmethod
    def from_toy_text(cls, env_id: str, *, discount: float = 0.99, **make_kwargs: Any) -> FiniteMDP:
        """The MDP of a Gymnasium toy-text environment, read from ``env.unwrapped.P``.

        Works for ``FrozenLake-v1`` (with ``is_slippery``, ``map_name``, ``desc``...),
        ``FrozenLake8x8-v1``, ``CliffWalking-v1``, ``CliffWalkingSlippery-v1``, ``Taxi-v4``
        (``is_rainy``) and any environment whose unwrapped env has such a table. Terminal
        transitions lead into absorbing states with reward 0, labelled ``terminal``. Labels:
        ``init`` everywhere; FrozenLake ``goal``, ``hole`` and ``unsafe`` (= ``hole``);
        CliffWalking ``goal`` and ``cliff`` (cliff cells, which the agent never occupies:
        stepping onto one costs -100 and returns it to the start); Taxi ``goal`` (passenger
        delivered).

        Args:
            env_id: a registered Gymnasium id (Gymnasium 1.4 has ``Taxi-v4``, not ``Taxi-v3``).
            discount: gamma of the model; the environments themselves are episodic.
            make_kwargs: passed to ``gym.make``.

        Raises:
            UnknownEnv: the id is not registered.
            ConfigError: the environment has no transition table, or its ``step`` does
                something the table does not say (Taxi's ``fickle_passenger``).
        """
        env = make(env_id, **make_kwargs)
        try:
            return _from_table(env, env_id, discount)
        finally:
            env.close()


def _from_table(env: gym.Env[Any, Any], env_id: str, discount: float) -> FiniteMDP:
    u = env.unwrapped
    table = getattr(u, "P", None)
    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(table, dict) or not (
        isinstance(obs_space, gym.spaces.Discrete) and isinstance(act_space, gym.spaces.Discrete)
    ):
        raise ConfigError(
            f"{env_id} has no transition table env.unwrapped.P over Discrete spaces; "
            "from_toy_text reads Gymnasium toy-text tables (FrozenLake, CliffWalking, Taxi)"
        )
    if getattr(u, "fickle_passenger", False):
        raise ConfigError(
            f"{env_id} with fickle_passenger=True changes the destination inside step(), "
            "outside env.P; it is not a finite MDP on these states"
        )
    n_s, n_a = int(obs_space.n), int(act_space.n)
    if n_s * n_a * n_s > MAX_DENSE_ELEMENTS:
        raise ModelTooLarge(
            f"{env_id}: a dense model of {n_s} states and {n_a} actions holds {n_s * n_a * n_s} "
            f"transition probabilities; FiniteMDP holds at most {MAX_DENSE_ELEMENTS} (use the "
            "sparse rlsec.verify.Model for larger models)"
        )
    p = np.zeros((n_s, n_a, n_s))
    r = np.zeros((n_s, n_a))
    for s in range(n_s):
        for a in range(n_a):
            for prob, s2, rew, _ in _entries(table, s, a, n_s, env_id):
                p[s, a, s2] += prob
                r[s, a] += prob * rew
    if getattr(u, "initial_state_distrib", None) is None:
        raise ConfigError(f"{env_id} has no initial_state_distrib beside its transition table")
    initial = _float_array(
        f"{env_id}'s initial_state_distrib",
        u.initial_state_distrib,  # type: ignore[attr-defined]
    )
    # Walk the table from the initial states; a terminated transition ends the walk. States
    # entered only by terminated transitions become absorbing; states the walk never reaches
    # keep their rows (they are never visited).
    into_terminal: set[int] = set()
    live = set(np.flatnonzero(initial > 0).tolist())
    queue = deque(live)
    while queue:
        s = queue.popleft()
        for a in range(n_a):
            for prob, s2, _, term in _entries(table, s, a, n_s, env_id):
                if prob <= 0:
                    continue
                if term:
                    into_terminal.add(s2)
                elif s2 not in live:
                    live.add(s2)
                    queue.append(s2)
    conflicts = sorted(into_terminal & live)
    if conflicts:
        raise ConfigError(
            f"{env_id}: states {conflicts[:5]} are entered both with and without termination; "
            "they cannot be made absorbing"
        )
    terminal = np.zeros(n_s, dtype=bool)
    for t in into_terminal:
        terminal[t] = True
        p[t] = 0.0
        p[t, :, t] = 1.0
        r[t] = 0.0
    labels: dict[str, np.ndarray] = {"init": initial > 0, "terminal": terminal}
    names: tuple[str, ...] | None = None
    actions: tuple[str, ...] | None = None
    kind = type(u).__name__
    if kind == "FrozenLakeEnv":
        desc = np.asarray(u.desc).astype(str)  # type: ignore[attr-defined]
        flat = desc.reshape(-1)
        labels |= {"goal": flat == "G", "hole": flat == "H", "unsafe": flat == "H"}
        ncol = desc.shape[1]
        names = tuple(f"{c}({i // ncol},{i % ncol})" for i, c in enumerate(flat))
        actions = ("left", "down", "right", "up")
    elif kind == "CliffWalkingEnv":
        rows, cols = u.shape  # type: ignore[attr-defined]
        cliff = np.asarray(u._cliff, dtype=np.bool_).reshape(-1)  # type: ignore[attr-defined]
        goal = np.zeros(n_s, dtype=bool)
        goal[rows * cols - 1] = True
        labels |= {"goal": goal, "cliff": cliff}
        names = tuple(f"({i // cols},{i % cols})" for i in range(n_s))
        actions = ("up", "right", "down", "left")
    elif kind == "TaxiEnv":
        where = ("R", "G", "Y", "B", "taxi")
        decoded = [u.decode(s) for s in range(n_s)]  # type: ignore[attr-defined]
        labels["goal"] = terminal.copy()  # passenger dropped at the destination
        names = tuple(
            f"taxi=({row},{col}) passenger={where[pas]} destination={where[dest]}"
            for row, col, pas, dest in decoded
        )
        actions = ("south", "north", "east", "west", "pickup", "dropoff")
    return FiniteMDP(p, r, initial, discount, labels, names, actions)


def _entries(
    table: Any, s: int, a: int, n_s: int, env_id: str
) -> list[tuple[float, int, float, bool]]:
    """``table[s][a]`` read strictly: each entry ``(probability, next state, reward,
    terminated)`` with a finite probability in [0, 1], a state index in ``[0, n_s)`` (a
    negative index is refused, not wrapped around), a finite reward and a boolean."""
    try:
        entries = table[s][a]
        out = []
        for k, entry in enumerate(entries):
            prob, s2, rew, term = entry
            where = f"{env_id}: P[{s}][{a}][{k}]"
            if isinstance(prob, bool) or not isinstance(prob, (int, float, np.number)):
                raise ConfigError(f"{where} has probability {prob!r}, expected a number")
            if not 0.0 <= float(prob) <= 1.0:  # NaN fails too
                raise ConfigError(f"{where} has probability {prob!r}, expected one in [0, 1]")
            if isinstance(s2, bool) or not isinstance(s2, (int, np.integer)) or not 0 <= s2 < n_s:
                raise ConfigError(f"{where} leads to state {s2!r}, expected an index in [0, {n_s})")
            if isinstance(rew, bool) or not isinstance(rew, (int, float, np.number)):
                raise ConfigError(f"{where} has reward {rew!r}, expected a number")
            if not math.isfinite(float(rew)):
                raise ConfigError(f"{where} has reward {rew!r}, expected a finite number")
            if not isinstance(term, (bool, np.bool_)):
                raise ConfigError(f"{where} has terminated={term!r}, expected a boolean")
            out.append((float(prob), int(s2), float(rew), bool(term)))
        return out
    except ConfigError:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"{env_id}: the transition table P[{s}][{a}] is not a list of (probability, next "
            f"state, reward, terminated): {type(exc).__name__}: {exc}"
        ) from None


def greedy(q: np.ndarray) -> np.ndarray:
    """The deterministic greedy policy of a Q-table (the lowest action index among ties).

    Example:
        >>> greedy(np.array([[0.0, 1.0], [2.0, 2.0]])).tolist()
        [1, 0]
    """
    qa = np.asarray(q)
    if qa.ndim != 2:
        raise ConfigError(f"q must have shape (n_states, n_actions), got {qa.shape}")
    actions: np.ndarray = np.argmax(qa, axis=1)
    return actions


def q_learning(
    env: gym.Env[Any, Any],
    *,
    steps: int,
    learning_rate: float = 0.1,
    discount: float = 0.9,
    explore: float = 0.1,
    seed: int | None = None,
    q: np.ndarray | None = None,
) -> np.ndarray:
    """Tabular Q-learning with ε-greedy exploration for ``steps`` environment steps.

    ``Q[s, a] += α (r + gamma (1 - terminated) max_a' Q[s', a'] - Q[s, a])`` after every step;
    greedy ties are broken uniformly at random; episodes restart on termination or
    truncation. Deterministic given ``seed`` (it seeds the first ``env.reset`` too).

    It is written here, not taken from a library, because it is a dozen lines and because
    the adaptive reward attack (:class:`rlsec.attacks.reward.AdaptiveTargetReward`) must
    read the learner's Q-table between steps: pass the same array as ``q`` here and as
    ``q_table`` to the attack, and the learner updates it in place.

    Args:
        env: an environment with Discrete observation and action spaces.
        steps: environment steps to train for.
        learning_rate: α, constant.
        discount: gamma.
        explore: probability of a uniformly random action.
        seed: seeds the exploration and the first reset.
        q: the table to update in place (zeros if None).

    Returns:
        The Q-table (``q`` itself if given).

    Example:
        >>> env = gym.make("FrozenLake-v1", is_slippery=False)
        >>> q = q_learning(env, steps=5000, learning_rate=0.5, explore=0.2, seed=0)
        >>> greedy(q)[0] in (1, 2)  # down or right: both start a shortest path
        True
    """
    obs_space, act_space = env.observation_space, env.action_space
    if not (
        isinstance(obs_space, gym.spaces.Discrete) and isinstance(act_space, gym.spaces.Discrete)
    ):
        raise ConfigError(
            f"q_learning needs Discrete observations and actions, got {obs_space}, {act_space}"
        )
    n_s, n_a = int(obs_space.n), int(act_space.n)
    table = np.zeros((n_s, n_a)) if q is None else q
    if table.shape != (n_s, n_a):
        raise ConfigError(f"q must have shape ({n_s}, {n_a}), got {table.shape}")
    if int(steps) < 0 or not 0 < learning_rate <= 1 or not 0 <= discount <= 1:
        raise ConfigError(
            f"need steps >= 0, learning_rate in (0, 1], discount in [0, 1]; got {steps}, "
            f"{learning_rate}, {discount}"
        )
    if not 0 <= explore <= 1:
        raise ConfigError(f"explore is a probability in [0, 1], got {explore}")
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    for _ in range(int(steps)):
        s = int(obs)
        if rng.random() < explore:
            a = int(rng.integers(n_a))
        else:
            best = np.flatnonzero(table[s] == table[s].max())
            a = int(best[0]) if best.size == 1 else int(rng.choice(best))
        obs, reward, terminated, truncated, _ = env.step(a)
        bootstrap = 0.0 if terminated else discount * float(table[int(obs)].max())
        table[s, a] += learning_rate * (float(reward) + bootstrap - table[s, a])
        if terminated or truncated:
            obs, _ = env.reset()
    return table


def _float_array(name: str, x: Any) -> np.ndarray:
    try:
        a = np.array(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be an array of numbers: {exc}") from None
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"{name} must be finite, got NaN or infinity")
    return a


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a
