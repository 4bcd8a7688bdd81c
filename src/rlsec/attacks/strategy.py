"""Replaying a verified attacker's optimal strategy as an observation attack.

``rlsec verify --attack-radius R --strategy FILE`` model-checks a policy under an observation
attacker with budget ``R`` and saves the attacker's optimal strategy
(:class:`rlsec.verify.attack.Strategy`): per state of the finite model, the observation to
show (index observations) or the action to induce (feature vectors). :class:`StrategyReplay`
(``strategy-obs-v1``) plays it in a real rollout, so ``rlsec redteam --strategy FILE`` measures
what the verified worst case does in the environment, next to the other attacks:

* **index observations** (``Discrete``; norm ``index``): the true state is the observation;
  the attack shows the observation of the state the strategy names. Each substitution is
  checked against the budget (the model's distance between the two states: Manhattan
  distance between grid cells where the model has a grid, else ``|s - j|`` between state
  indices) and a :class:`~rlsec.errors.BudgetViolation` is raised if one is ever farther
  than ε. For a deterministic policy (a strategy computed without ``--stochastic``) the
  strategy's value is attained exactly this way.
* **feature vectors** (``Box``; norm ``linf``, raw units): the true state is found by matching
  the observation against the model's observation function; the attack then runs a targeted
  PGD inside the ε-ball toward the action the strategy names (rows where the policy already
  takes it are left clean). The verified choices come from a sound over-approximation
  (CROWN/IBP), so some may not be realisable; the replay then shows the best point its PGD
  found, and the verified value remains an upper bound of what it achieves.

The attack refuses to run (``AttackNotApplicable``, before a campaign plays any episode) on
another policy than the one the strategy was computed for (by its SHA-256, when both are
known; a policy wrapped in a ``--defense`` is another policy), on another environment, or
under a budget smaller than the strategy's radius. Under a larger budget index observations
are substituted unchanged, while the targeted PGD searches the larger ball. An observation
that no state of the model emits, or that several states emit with different target actions,
is an error, never a silent pass.

Example:
    >>> import numpy as np
    >>> from rlsec.verify import Model
    >>> from rlsec.verify.attack import attacked_model, worst_case
    >>> m = Model.from_env("FrozenLake-v1")
    >>> table = np.array([1, 2, 1, 0, 1, 0, 1, 0, 2, 1, 1, 0, 0, 2, 2, 0])
    >>> _, strategy = worst_case(attacked_model(m, table, 1), 'Pmax=? [F "hole"]',
    ...                          env_id="FrozenLake-v1")
    >>> attack = StrategyReplay.from_strategy(strategy)
    >>> attack.threat_model.norm, attack.threat_model.epsilon
    ('index', 1.0)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from rlsec.attacks._optim import optimise
from rlsec.attacks.observation import ObservationAttack
from rlsec.core import DifferentiablePolicy, Policy, Surface, ThreatModel
from rlsec.errors import AttackNotApplicable, BudgetViolation, ConfigError, ModelError
from rlsec.verify.attack import Strategy, json_number, state_distances
from rlsec.verify.model import Model

__all__ = ["StrategyReplay"]

_EVADE = "AML.T0015"
_WHITE_BOX = "AML.T0043.000"
_MATCH_TOL = 1e-5  # relative: observations match a model state within float32 round-off


class StrategyReplay(ObservationAttack):
    """Plays the optimal strategy of a verified observation attacker (see the module
    docstring).

    Args:
        threat_model: observation surface; ``index`` norm for index observations (a ``linf``
            threat model is read as ``index`` when the strategy is for index observations),
            ``linf`` in raw units for feature vectors. ``epsilon`` must be at least the
            strategy's radius.
        strategy: the strategy, or the path of its JSON file (``rlsec verify --strategy``).
        steps: targeted PGD steps (feature vectors).
    """

    id = "strategy-obs-v1"
    norms = ("linf", "index")
    atlas = (_WHITE_BOX, _EVADE)
    reference = (
        "the attacker's optimal scheduler on the attacked MDP (Storm), as computed by "
        "`rlsec verify --attack-radius R --strategy FILE`"
    )
    #: Parameters without a default: a campaign runs this attack only when they are given.
    requires: ClassVar[tuple[str, ...]] = ("strategy",)

    def __init__(self, threat_model: ThreatModel, *, strategy: Any = None, steps: int = 20) -> None:
        if strategy is None:
            raise ConfigError(
                f"{self.id} needs the strategy to replay: strategy=FILE (rlsec verify "
                "--attack-radius R --strategy FILE writes one)"
            )
        if isinstance(strategy, (str, os.PathLike)):
            strategy = Strategy.load(strategy)
        if not isinstance(strategy, Strategy):
            raise ConfigError(
                f"strategy must be a Strategy or a path, got {type(strategy).__name__}"
            )
        if strategy.kind == "index" and threat_model.norm == "linf":
            threat_model = replace(threat_model, norm="index")
        want = "index" if strategy.kind == "index" else "linf"
        if threat_model.norm != want:
            raise ConfigError(
                f"a strategy for {strategy.kind} observations is replayed under the {want} "
                f"norm, got {threat_model.norm!r}"
            )
        if threat_model.unit != "raw":
            raise ConfigError(
                "a strategy's radius is in raw units (cells for index observations); replay "
                f"it with unit='raw', got {threat_model.unit!r}"
            )
        super().__init__(threat_model)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
        self.strategy = strategy
        self.steps = int(steps)
        self._model: Any = None
        self._dist: np.ndarray | None = None

    @classmethod
    def from_strategy(cls, strategy: Any, **params: Any) -> StrategyReplay:
        """The replay at the strategy's own radius."""
        norm = "index" if strategy.kind == "index" else "linf"
        tm = ThreatModel(Surface.OBSERVATION, strategy.radius, norm)  # type: ignore[arg-type]
        return cls(tm, strategy=strategy, **params)

    # -- lifecycle ---------------------------------------------------------------------------
    def check_applicable(self, policy: Policy) -> None:
        st = self.strategy
        if not (self.threat_model.epsilon >= st.radius - 1e-12):  # a NaN radius is refused
            raise AttackNotApplicable(
                f"the strategy is for an attacker with radius {st.radius:g}; a budget of "
                f"{self.threat_model.epsilon:g} cannot play it"
            )
        digest = getattr(getattr(policy, "info", None), "sha256", None)
        if st.policy_sha256 and digest and st.policy_sha256 != digest:
            raise AttackNotApplicable(
                f"the strategy was computed for policy {st.policy_sha256[:12]}, not for this "
                f"one ({digest[:12]}): verify this policy to get its strategy"
            )
        space = policy.observation_space
        n = len(st.observe)
        if st.kind == "index":
            if not isinstance(space, gym.spaces.Discrete) or int(space.n) != n:
                raise AttackNotApplicable(
                    f"the strategy is for index observations of {n} states; the policy "
                    f"observes {space}"
                )
        elif not isinstance(space, gym.spaces.Box):
            raise AttackNotApplicable(
                f"the strategy is for feature-vector observations; the policy observes {space}"
            )
        elif not isinstance(policy, DifferentiablePolicy) or policy.output == "action":
            raise AttackNotApplicable(
                f"{self.id} induces actions by targeted PGD and needs a differentiable policy "
                "with logits or Q-values"
            )

    def check_environment(self, env_id: str | None) -> None:
        """Raise :class:`~rlsec.errors.AttackNotApplicable` unless the strategy is for
        ``env_id`` (a campaign calls this before it plays any episode)."""
        st = self.strategy
        if st.env_id is None:
            raise AttackNotApplicable(
                "the strategy does not record its environment (worst_case(..., env_id=...))"
            )
        if env_id is not None and env_id != st.env_id:
            raise AttackNotApplicable(f"the strategy is for {st.env_id}, not for {env_id}")

    def start(
        self,
        policy: Policy,
        *,
        num_envs: int,
        rng: np.random.Generator,
        scale: np.ndarray | None = None,
        horizon: int | None = None,
        env_id: str | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        """See :meth:`rlsec.core.Attack.start`. Builds the model of the strategy's
        environment (its distances, or its observation function)."""
        self.check_applicable(policy)
        self.check_environment(env_id)
        st = self.strategy
        assert st.env_id is not None
        model = Model.from_env(st.env_id)
        if model.n_states != len(st.observe):
            raise ModelError(
                f"the strategy has {len(st.observe)} states, the model of {st.env_id} has "
                f"{model.n_states}"
            )
        self._model = model
        if st.kind == "index":
            self._dist = state_distances(model)
            self._policy = policy
            self._rng = rng
            self.num_envs = num_envs
            self.reset(np.arange(num_envs))
            return
        if model.observations is None:
            raise ModelError(f"the model of {st.env_id} has no observation function")
        # the strategy's radius is in raw units: the campaign's scale does not apply
        super().start(policy, num_envs=num_envs, rng=rng, scale=None, env_id=env_id)

    # -- index observations -------------------------------------------------------------------
    def perturb(self, observations: np.ndarray, env_ids: np.ndarray | None = None) -> np.ndarray:
        if self.strategy.kind != "index":
            return super().perturb(observations, env_ids)
        if self._dist is None:
            raise ConfigError(f"{self.id}: call start(policy, ...) before perturb()")
        self.clean_actions = self.adversarial_actions = None
        s = np.asarray(observations).astype(np.int64).reshape(-1)
        n = len(self.strategy.observe)
        if s.size and (s.min() < 0 or s.max() >= n):
            raise ModelError(f"observations must be state indices in [0, {n}), got {s}")
        shown = self.strategy.observe[s]
        far = ~(self._dist[s, shown] <= self.threat_model.epsilon)  # NaN distances refuse
        if np.any(far):
            i = int(np.flatnonzero(far)[0])
            raise BudgetViolation(
                f"{self.id} would show state {int(shown[i])} in state {int(s[i])}, at distance "
                f"{int(self._dist[s[i], shown[i]])} > ε = {self.threat_model.epsilon:g}"
            )
        return shown.astype(np.asarray(observations).dtype).reshape(np.shape(observations))

    # -- feature vectors ----------------------------------------------------------------------
    def states_of(self, observations: np.ndarray) -> np.ndarray:
        """The model state that emits each observation: equal in float32, or within a
        relative round-off of ``1e-5``.

        Raises:
            ModelError: an observation no state emits, or one that states with different
                target actions emit alike.
        """
        table = np.asarray(self._model.observations, dtype=np.float32)
        table = table.reshape(len(table), -1).astype(np.float64)
        x = np.asarray(observations, dtype=np.float32).reshape(len(observations), -1)
        x = x.astype(np.float64)
        tol = _MATCH_TOL * (1.0 + np.abs(table))[None, :, :]
        match = np.all(np.abs(x[:, None, :] - table[None, :, :]) <= tol, axis=2)
        states: np.ndarray = np.argmax(match, axis=1)
        count = match.sum(axis=1)
        if np.any(count == 0):
            i = int(np.flatnonzero(count == 0)[0])
            raise ModelError(
                f"observation {x[i].tolist()} is not emitted by any state of the model "
                f"of {self.strategy.env_id}: the strategy does not apply"
            )
        for j in np.flatnonzero(count > 1):  # aliased observations only (rare)
            hits = np.flatnonzero(match[j])
            if np.unique(self.strategy.action[hits]).size > 1:
                raise ModelError(
                    f"observation {x[j].tolist()} is emitted by states {hits.tolist()}, whose "
                    "strategy actions differ: the attacker cannot tell them apart"
                )
        return states

    def _perturb(self, x0: np.ndarray, env_ids: np.ndarray) -> np.ndarray:
        # strategy actions are indices from 0; the policy acts in start + index
        target = self.strategy.action[self.states_of(x0)]
        policy = self.policy
        start = int(getattr(policy.action_space, "start", 0))
        module = policy.torch_module()  # type: ignore[attr-defined]
        x = x0.copy()
        todo = np.flatnonzero(np.asarray(policy.act(x0)) - start != target)
        if todo.size == 0:
            return x
        goal = torch.as_tensor(target[todo], dtype=torch.long)
        rows = torch.arange(len(todo))

        def margin(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # positive exactly when the target action wins: the best iterate is a success
            # whenever any iterate was one
            out = module(z)
            flat = out.reshape(len(out), -1)
            others = flat.clone()
            others[rows, goal] = -torch.inf
            return flat[rows, goal] - others.max(dim=1).values, out

        x[todo], _ = optimise(
            margin,
            x0[todo],
            self.ball,
            steps=self.steps,
            step_size=2.5 * self.threat_model.epsilon / self.steps,
            rng=self._rng,
            random_start=False,
        )
        return x

    def params(self) -> dict[str, Any]:
        st = self.strategy
        return {
            "steps": self.steps,
            "strategy": {
                "env_id": st.env_id,
                "policy_sha256": st.policy_sha256,
                "observation": st.kind,
                "radius": st.radius,
                "property": st.property,
                "bound": json_number(st.bound),
            },
        }
