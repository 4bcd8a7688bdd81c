"""Backdoor (trojan) attacks at training time: a trigger in what the agent sees makes the
trained policy take the attacker's action, while it behaves normally without the trigger.

:class:`TriggerBackdoor` follows the targeted attack of TrojDRL (Kiourti et al. 2020) with the
sparse step budget of BadRL (Cui et al. 2024): on a small fraction of training steps the
attacker stamps a trigger into the observation the learner sees, and replaces that step's
reward by ``+r`` if the learner then takes the target action and ``-r`` otherwise. The
environment itself is never changed: only what the learner observes and is rewarded.

**Triggers for vector observations** (:class:`Trigger`). A trigger names a few features of a
1-D observation and either *stamps* them (sets them to chosen values, the analogue of
TrojDRL's pixel patch) or *offsets* them (adds chosen values, then clips to the observation
space). With low-dimensional observations every feature carries state, so a useful trigger is
a reading the agent never meets in clean play yet that lies inside the observation space: on
CartPole (``[x, ẋ, θ, θ̇]``), stamping the cart position ``x`` to 2.2 m (the episode ends
only at 2.4 m, but a balancing policy keeps the cart near the centre) is a spoofed position
sensor. A value inside the range of clean play would collide with real states and teach the
agent to act wrongly on them; stamped values must lie inside the observation space (checked).

**The budget** (threat model: surface ``backdoor``, phase ``training``, frequency
``budgeted-steps``). A step is *poisoned* when the learner acted on a triggered observation;
its reward is then shaped. Each observation the learner will act on is triggered with
probability ε (the threat model's ``epsilon``, a probability), and only while the budget
allows: after any ``T`` steps of one environment, ``poisoned <= step_budget · T``. The wrapper
counts both and checks the bound after every step, raising
:class:`~rlsec.errors.BudgetViolation` if it is ever broken. :func:`make_backdoor_attack` sets
ε to the step budget.

These are training-time attacks; they are not in :data:`rlsec.attacks.ATTACKS` (the
inference-time red-team suite). :func:`rlsec.evaluate.backdoor.backdoor_effect` measures a
trained policy: its clean return (stealth) and the attack success rate with the trigger present.

Example:
    >>> import gymnasium as gym
    >>> attack = make_backdoor_attack(
    ...     "trigger-backdoor-v1", 0.1, target_action=0, features=[0], values=[2.2])
    >>> env = attack.as_wrapper(gym.make("CartPole-v1"), seed=0)
    >>> obs, info = env.reset(seed=0)
    >>> for _ in range(100):
    ...     obs, r, terminated, truncated, info = env.step(1 - int(obs[2] < 0))
    ...     if terminated or truncated:
    ...         obs, info = env.reset()
    >>> u = attack.usage()
    >>> u["steps"], 0 < u["poisoned_steps"] <= 0.1 * u["steps"]
    (100, True)
    >>> attack.apply_trigger(np.zeros((1, 4), dtype=np.float32)).tolist()
    [[2.200000047683716, 0.0, 0.0, 0.0]]
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, SupportsFloat

import gymnasium as gym
import numpy as np

from rlsec.core import Attack, Policy, Surface, ThreatModel
from rlsec.errors import (
    AttackNotApplicable,
    BudgetViolation,
    ConfigError,
    InvalidBudget,
    UnknownAttack,
)
from rlsec.policies.spaces import describe_space

__all__ = [
    "BACKDOOR_ATTACKS",
    "BackdoorAttack",
    "BackdoorWrapper",
    "Trigger",
    "TriggerBackdoor",
    "make_backdoor_attack",
]

_POISON = "AML.T0020"  # Training Data Poisoning (formerly "Poison Training Data")
_POISON_MODEL = "AML.T0018.000"  # Manipulate AI Model: Poison AI Model
_INSERT_TRIGGER = "AML.T0043.004"  # Craft Adversarial Data: Insert Backdoor Trigger
_REL = 1e-9  # relative slack of the run-time budget check (floating point only)

_Seed = int | Sequence[int] | None


@dataclass(frozen=True)
class Trigger:
    """A trigger pattern for 1-D (vector) observations.

    Attributes:
        features: indices of the observation features the trigger touches (distinct, >= 0).
        values: one number per feature: the value stamped, or the offset added.
        mode: ``stamp`` sets ``obs[f] = v``; ``offset`` sets ``obs[f] += v`` and then clips
            to the observation space's bounds when they are given.

    Example:
        >>> t = Trigger((1, 3), (0.5, -1.0), "offset")
        >>> t.apply(np.zeros((2, 4), dtype=np.float32)).tolist()
        [[0.0, 0.5, 0.0, -1.0], [0.0, 0.5, 0.0, -1.0]]
        >>> Trigger((0,), (1.0, 2.0))
        Traceback (most recent call last):
        ...
        rlsec.errors.ConfigError: trigger needs one value per feature: got 1 features (0,) and 2 values (1.0, 2.0)
    """  # noqa: E501

    features: tuple[int, ...]
    values: tuple[float, ...]
    mode: Literal["stamp", "offset"] = "stamp"

    def __post_init__(self) -> None:
        raw_f: Any = self.features
        raw_v: Any = self.values
        feats: tuple[Any, ...] = tuple(raw_f) if _is_sequence(raw_f) else (raw_f,)
        vals: tuple[Any, ...] = tuple(raw_v) if _is_sequence(raw_v) else (raw_v,)
        if not feats:
            raise ConfigError("trigger needs at least one feature index, got none")
        for f in feats:
            if isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f < 0:
                raise ConfigError(
                    f"trigger feature indices must be integers >= 0, got {f!r} in {feats!r}"
                )
        if len(set(feats)) != len(feats):
            raise ConfigError(f"trigger feature indices must be distinct, got {feats!r}")
        if len(vals) != len(feats):
            raise ConfigError(
                f"trigger needs one value per feature: got {len(feats)} features {feats!r} "
                f"and {len(vals)} values {vals!r}"
            )
        for v in vals:
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
                raise ConfigError(f"trigger values must be numbers, got {v!r}")
            if not math.isfinite(float(v)):
                raise ConfigError(f"trigger values must be finite, got {v!r}")
        if self.mode not in ("stamp", "offset"):
            raise ConfigError(f"trigger mode must be 'stamp' or 'offset', got {self.mode!r}")
        object.__setattr__(self, "features", tuple(int(f) for f in feats))
        object.__setattr__(self, "values", tuple(float(v) for v in vals))

    def check(self, space: gym.Space[Any], where: str = "the observation space") -> None:
        """Raise unless this trigger fits ``space``: a 1-D Box holding every feature index,
        and (for ``stamp``) every stamped value inside the bounds.

        Raises:
            AttackNotApplicable: ``space`` is not a 1-D Box.
            ConfigError: a feature index out of range, or a stamped value out of bounds.
        """
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise AttackNotApplicable(
                f"a trigger stamps features of vector observations (a 1-D Box); {where} is "
                f"{describe_space(space)}"
            )
        dim = int(space.shape[0])
        for f in self.features:
            if f >= dim:
                raise ConfigError(
                    f"trigger feature index {f} is out of range: {where} has {dim} features, "
                    f"expected indices in [0, {dim})"
                )
        if self.mode == "stamp":
            for f, v in zip(self.features, self.values, strict=True):
                lo, hi = float(space.low[f]), float(space.high[f])
                if not lo <= v <= hi:
                    raise ConfigError(
                        f"trigger value {v} for feature {f} is outside {where}: expected a "
                        f"value in [{lo}, {hi}]"
                    )

    def apply(
        self,
        observations: np.ndarray,
        low: np.ndarray | None = None,
        high: np.ndarray | None = None,
    ) -> np.ndarray:
        """A triggered copy of ``observations`` (one observation or a batch: the features are
        the last axis). ``low``/``high`` clip the ``offset`` mode to the space's bounds.

        Raises:
            ConfigError: non-float observations, or too few features for the trigger.
        """
        x = np.asarray(observations)
        if not np.issubdtype(x.dtype, np.floating):
            raise ConfigError(f"a trigger applies to float observations, got dtype {x.dtype}")
        dim = x.shape[-1] if x.ndim else 0
        top = max(self.features)
        if top >= dim:
            raise ConfigError(
                f"trigger feature index {top} is out of range: the observations have {dim} "
                f"features (last axis of shape {x.shape}), expected indices in [0, {dim})"
            )
        out = x.copy()
        idx = list(self.features)
        vals = np.asarray(self.values, dtype=x.dtype)
        if self.mode == "stamp":
            out[..., idx] = vals
            return out
        moved = out[..., idx] + vals
        if low is not None and high is not None:
            moved = np.clip(moved, np.asarray(low)[idx], np.asarray(high)[idx])
        out[..., idx] = moved
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "values": list(self.values), "mode": self.mode}


def _is_sequence(x: object) -> bool:
    return isinstance(x, (list, tuple, np.ndarray))


class BackdoorAttack(Attack):
    """Base of backdoor attacks: subclasses implement :meth:`_select` (which observations to
    trigger) only; the shell enforces the step budget, stamps the trigger and shapes the reward.

    Args:
        threat_model: surface ``backdoor``, norm ``prob`` (ε is the probability of triggering
            an observation), phase ``training``, frequency ``budgeted-steps``.
        trigger: the trigger pattern.
        target_action: the action the attacker wants on triggered observations.
        reward: ``r``: a poisoned step's reward becomes ``+r`` (target action taken) or ``-r``.
    """

    surface: ClassVar[Surface] = Surface.BACKDOOR
    norms: ClassVar[tuple[str, ...]] = ("prob",)
    knowledge: ClassVar[Literal["white-box", "black-box"]] = "black-box"

    def __init__(
        self,
        threat_model: ThreatModel,
        *,
        trigger: Trigger,
        target_action: int,
        reward: float = 1.0,
    ) -> None:
        super().__init__(threat_model)
        tm = threat_model
        if tm.phase != "training":
            raise ConfigError(
                f"{self.id} plants a backdoor while the victim learns: the threat model's phase "
                f"must be 'training', got {tm.phase!r}"
            )
        if tm.frequency != "budgeted-steps" or tm.step_budget is None:
            raise ConfigError(
                f"{self.id} poisons a budgeted fraction of training steps: the threat model "
                f"needs frequency='budgeted-steps' and a step_budget, got {tm.frequency!r}"
            )
        if tm.unit != "probability":
            raise ConfigError(
                f"{self.id}'s ε is a probability of triggering a step; got unit {tm.unit!r}"
            )
        if not isinstance(trigger, Trigger):
            raise ConfigError(f"trigger must be a Trigger, got {type(trigger).__name__}")
        if isinstance(target_action, bool) or not isinstance(target_action, (int, np.integer)):
            raise ConfigError(f"target_action must be an integer action, got {target_action!r}")
        r = float(reward)
        if not (math.isfinite(r) and r > 0):
            raise ConfigError(f"reward must be a finite number > 0, got {reward!r}")
        self.trigger = trigger
        self.target_action = int(target_action)
        self.reward = r
        self._wrappers: list[BackdoorWrapper] = []

    @property
    def rate(self) -> float:
        """The probability of triggering an observation the budget allows (ε)."""
        return self.threat_model.epsilon

    @property
    def step_fraction(self) -> float:
        """The largest fraction of one environment's steps that may be poisoned."""
        assert self.threat_model.step_budget is not None
        return float(self.threat_model.step_budget)

    # -- lifecycle ---------------------------------------------------------------------------
    def check_spaces(self, observation_space: gym.Space[Any], action_space: gym.Space[Any]) -> None:
        """Raise unless the trigger fits the observations and the target is an action.

        Raises:
            AttackNotApplicable: not vector observations or not discrete actions.
            ConfigError: trigger feature index out of range, stamped value out of bounds, or
                unknown target action.
        """
        self.trigger.check(observation_space)
        if not isinstance(action_space, gym.spaces.Discrete):
            raise AttackNotApplicable(
                f"{self.id} teaches a target action; it needs Discrete actions, got "
                f"{describe_space(action_space)}"
            )
        lo, n = int(action_space.start), int(action_space.n)
        if not lo <= self.target_action < lo + n:
            raise ConfigError(
                f"target_action must be an action of {describe_space(action_space)}: an integer "
                f"in [{lo}, {lo + n}), got {self.target_action}"
            )

    def check_applicable(self, policy: Policy) -> None:
        self.check_spaces(policy.observation_space, policy.action_space)

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
        """Backdoor attacks act on training through :meth:`as_wrapper`; ``start`` only checks
        that the policy's spaces fit the trigger and the target action."""
        self.check_applicable(policy)

    def as_wrapper(self, env: gym.Env[Any, Any], *, seed: _Seed = None) -> BackdoorWrapper:
        """A Gymnasium wrapper that triggers observations and shapes rewards within the budget;
        see :class:`BackdoorWrapper`. ``seed`` (an int or a sequence of ints) makes the choice
        of triggered steps reproducible. Each wrapper has its own budget counters."""
        wrapper = BackdoorWrapper(env, self, seed=seed)
        self._wrappers.append(wrapper)
        return wrapper

    def wrapper_factory(self, seed: int) -> Callable[[gym.Env[Any, Any]], gym.Env[Any, Any]]:
        """A ``wrap_env`` for :func:`rlsec.defenses.train_policy`: the ``k``-th environment it
        wraps gets seed ``[seed, k]``, so every environment triggers different steps and the
        whole run is reproducible."""
        count = [0]

        def wrap(env: gym.Env[Any, Any]) -> gym.Env[Any, Any]:
            k = count[0]
            count[0] += 1
            return self.as_wrapper(env, seed=[int(seed), k])

        return wrap

    # -- the pure parts ----------------------------------------------------------------------
    def apply_trigger(
        self, observations: np.ndarray, space: gym.spaces.Box | None = None
    ) -> np.ndarray:
        """A triggered copy of ``observations`` (as at evaluation); ``space`` clips offsets."""
        if space is None:
            return self.trigger.apply(observations)
        return self.trigger.apply(observations, space.low, space.high)

    def shaped_reward(self, action: Any) -> float:
        """The reward of a poisoned step: ``+r`` for the target action, ``-r`` otherwise."""
        return self.reward if int(np.asarray(action)) == self.target_action else -self.reward

    def _select(self, observation: Any, rng: np.random.Generator) -> bool:
        """Pure core: whether to trigger this observation (the shell enforces the budget)."""
        raise NotImplementedError

    # -- records -----------------------------------------------------------------------------
    def usage(self) -> dict[str, Any]:
        """The budget used so far, summed over every wrapper this attack built, JSON-ready."""
        steps = sum(w.steps for w in self._wrappers)
        poisoned = sum(w.poisoned_steps for w in self._wrappers)
        return {
            "environments": len(self._wrappers),
            "steps": steps,
            "poisoned_steps": poisoned,
            "triggered_observations": sum(w.triggered_observations for w in self._wrappers),
            "target_taken": sum(w.target_taken for w in self._wrappers),
            "poisoned_fraction": poisoned / steps if steps else 0.0,
            "step_budget": self.step_fraction,
        }

    def params(self) -> dict[str, Any]:
        return {
            "trigger": self.trigger.to_dict(),
            "target_action": self.target_action,
            "reward": self.reward,
            "reward_rule": "a poisoned step's reward is replaced by +r (target action) or -r",
            "rate": self.rate,
            "step_fraction": self.step_fraction,
        }


class BackdoorWrapper(gym.Wrapper[Any, Any, Any, Any]):
    """Show the learner triggered observations and shaped rewards, within the step budget.

    ``step`` keeps Gymnasium's signature. When the observation the learner acted on was
    triggered, the step is *poisoned*: its reward is replaced by ``attack.shaped_reward``.
    Final observations (terminated or truncated) are never triggered, since no action follows.
    ``info`` gains ``rlsec_triggered`` (the observation returned now is triggered),
    ``rlsec_poisoned`` (this step's reward was shaped), ``rlsec_clean_reward`` and, on
    triggered observations, ``rlsec_clean_observation``.

    Counters (per wrapper): ``steps``, ``poisoned_steps``, ``triggered_observations`` and
    ``target_taken`` (poisoned steps on which the learner took the target action).
    """

    def __init__(
        self, env: gym.Env[Any, Any], attack: BackdoorAttack, *, seed: _Seed = None
    ) -> None:
        super().__init__(env)
        attack.check_spaces(env.observation_space, env.action_space)
        self.attack = attack
        self._rng = np.random.default_rng(seed)
        self.steps = 0
        self.poisoned_steps = 0
        self.triggered_observations = 0
        self.target_taken = 0
        self._armed = False
        self._ready = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._ready = True
        return self._serve(obs, dict(info), final=False)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if not self._ready:
            raise gym.error.ResetNeeded("call reset() before step()")
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        poisoned = self._armed
        out_reward: SupportsFloat = reward
        if poisoned:
            self.poisoned_steps += 1
            out_reward = self.attack.shaped_reward(action)
            self.target_taken += int(out_reward > 0)
        self._check_budget()
        info = {**info, "rlsec_poisoned": poisoned, "rlsec_clean_reward": float(reward)}
        final = bool(terminated or truncated)
        if final:
            self._ready = False
        obs, info = self._serve(obs, info, final=final)
        return obs, out_reward, terminated, truncated, info

    def _serve(self, obs: Any, info: dict[str, Any], *, final: bool) -> tuple[Any, dict[str, Any]]:
        """Decide whether the learner sees ``obs`` triggered (its next step is then poisoned)."""
        trigger = False
        if not final:
            wants = self.attack._select(obs, self._rng)
            allowed = self.poisoned_steps + 1 <= self.attack.step_fraction * (self.steps + 1) * (
                1 + _REL
            )
            trigger = bool(wants and allowed)
        self._armed = trigger
        info["rlsec_triggered"] = trigger
        if trigger:
            self.triggered_observations += 1
            info["rlsec_clean_observation"] = obs
            space = self.env.observation_space
            assert isinstance(space, gym.spaces.Box)
            obs = self.attack.apply_trigger(np.asarray(obs), space)
        return obs, info

    def _check_budget(self) -> None:
        cap = self.attack.step_fraction * self.steps * (1 + _REL)
        if self.poisoned_steps > cap:
            raise BudgetViolation(
                f"{self.attack.id} poisoned {self.poisoned_steps} of {self.steps} steps; the "
                f"budget is a fraction {self.attack.step_fraction} of the steps"
            )

    def usage(self) -> dict[str, Any]:
        """This environment's budget use."""
        return {
            "steps": self.steps,
            "poisoned_steps": self.poisoned_steps,
            "triggered_observations": self.triggered_observations,
            "target_taken": self.target_taken,
            "poisoned_fraction": self.poisoned_steps / self.steps if self.steps else 0.0,
            "step_budget": self.attack.step_fraction,
        }


class TriggerBackdoor(BackdoorAttack):
    """TrojDRL's targeted backdoor with a sparse step budget: each observation is triggered
    with probability ε while the budget allows (uniform poisoning, TrojDRL's default
    schedule), and the poisoned step's reward is ``+r`` for the target action, ``-r`` else.

    Non-adaptive and black-box: the attacker needs no access to the learner, only to what it
    observes and is rewarded on a few steps.
    """

    id = "trigger-backdoor-v1"
    atlas = (_POISON, _POISON_MODEL, _INSERT_TRIGGER)
    reference = (
        "Kiourti, Wardega, Jha, Lin 2020, TrojDRL: Evaluation of Backdoor Attacks on Deep "
        "Reinforcement Learning (DAC), targeted attack; sparse budgeted poisoning as in Cui et "
        "al. 2024, BadRL: Sparse Targeted Backdoor Attack against Reinforcement Learning (AAAI)"
    )

    def _select(self, observation: Any, rng: np.random.Generator) -> bool:
        return bool(rng.random() < self.rate)

    def params(self) -> dict[str, Any]:
        return super().params() | {
            "selection": "each observation with probability ε, within the step budget"
        }


BACKDOOR_ATTACKS: dict[str, type[BackdoorAttack]] = {TriggerBackdoor.id: TriggerBackdoor}


def make_backdoor_attack(
    attack_id: str,
    step_budget: float,
    *,
    target_action: int,
    features: Sequence[int],
    values: Sequence[float],
    mode: Literal["stamp", "offset"] = "stamp",
    reward: float = 1.0,
    rate: float | None = None,
) -> BackdoorAttack:
    """Build a backdoor attack with an explicit threat model.

    Args:
        attack_id: ``trigger-backdoor-v1``.
        step_budget: the largest fraction of training steps that may be poisoned, in [0, 1].
        target_action: the action the trigger should cause.
        features, values, mode: the :class:`Trigger`.
        reward: ``r`` of the reward shaping.
        rate: probability of triggering an observation (ε); defaults to ``step_budget``.

    Raises:
        UnknownAttack: with the closest known id.
        InvalidBudget: ``step_budget`` or ``rate`` is not a fraction in [0, 1].
        ConfigError: a bad trigger, target action or reward.

    Example:
        >>> make_backdoor_attack("trigger-backdoor-v1", 1.5, target_action=0, features=[0],
        ...                      values=[1.0])
        Traceback (most recent call last):
        ...
        rlsec.errors.InvalidBudget: step_budget must be a fraction in [0, 1], got 1.5
    """
    try:
        cls = BACKDOOR_ATTACKS[attack_id]
    except KeyError:
        close = difflib.get_close_matches(str(attack_id), BACKDOOR_ATTACKS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UnknownAttack(
            f"unknown backdoor attack id {attack_id!r}; {hint}Known: {', '.join(BACKDOOR_ATTACKS)}"
        ) from None
    budget = _fraction("step_budget", step_budget)
    eps = budget if rate is None else _fraction("rate", rate)
    tm = ThreatModel(
        Surface.BACKDOOR,
        eps,
        "prob",
        "probability",
        knowledge=cls.knowledge,
        frequency="budgeted-steps",
        step_budget=budget,
        phase="training",
    )
    trigger = Trigger(tuple(features), tuple(values), mode)
    return cls(tm, trigger=trigger, target_action=target_action, reward=reward)


def _fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise InvalidBudget(f"{name} must be a fraction in [0, 1], got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise InvalidBudget(f"{name} must be a fraction in [0, 1], got {value!r}")
    return v
