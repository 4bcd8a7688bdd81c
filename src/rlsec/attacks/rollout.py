"""The attacked rollout: a fixed number of episodes over a vector env, under an attack or none.

Row ``r`` of the vector env plays episodes ``r, r + R, r + 2R, ...`` so every row plays a
fixed share decided in advance: collecting "the first N episodes to finish" instead would
over-sample short episodes and bias returns downward under attack. Attacks run on the whole
batch of active rows at once. Only per-episode totals are kept, so memory does not grow with
episode length.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from rlsec.attacks.action import ActionAttack, sample_actions
from rlsec.attacks.observation import ObservationAttack
from rlsec.core import Attack, Policy
from rlsec.errors import ConfigError
from rlsec.policies.spaces import box_span
from rlsec.stats import RunningMoments

__all__ = ["EpisodeStats", "rollout"]


@dataclass
class EpisodeStats:
    """Per-episode totals of one rollout (episode ``i`` at index ``i``)."""

    returns: np.ndarray
    lengths: np.ndarray
    changed_steps: np.ndarray
    obs_moments: RunningMoments | None = None
    #: continuous actions: per episode, the sum over steps of the largest per-dimension
    #: move of the executed action from the clean one, in units of the action range
    action_shift: np.ndarray | None = None

    @property
    def action_change_rate(self) -> float:
        steps = int(self.lengths.sum())
        return float(self.changed_steps.sum() / steps) if steps else 0.0


CHANGE_TOLERANCE = 0.05


def _shift(span: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, the largest per-dimension move from ``b`` to ``a`` in units of ``span``."""
    d = np.abs(a.reshape(len(a), -1).astype(np.float64) - b.reshape(len(b), -1)) / span
    return np.asarray(d.max(axis=1)) if d.shape[1] else np.zeros(len(a))


def _differs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows where a discrete executed action differs from the clean one."""
    d = a.reshape(len(a), -1) != b.reshape(len(b), -1)
    return np.asarray(d.any(axis=1))


def _filler(space: gym.Space[Any], n: int) -> np.ndarray:
    """A valid placeholder action batch for rows whose action the env ignores."""
    one = np.asarray(
        space.sample()
        if not isinstance(space, gym.spaces.Box)
        else np.clip(np.zeros(space.shape), space.low, space.high).astype(space.dtype)
    )
    if isinstance(space, gym.spaces.Discrete):
        one = np.asarray(space.start, dtype=np.int64)
    elif isinstance(space, (gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)):
        one = np.zeros_like(one)
    return np.repeat(one[None], n, axis=0)


def rollout(
    policy: Policy | None,
    venv: gym.vector.VectorEnv[Any, Any, Any],
    episodes: int,
    *,
    seed: int,
    attack: Attack | None = None,
    rng: np.random.Generator | None = None,
    track_observations: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> EpisodeStats:
    """Play ``episodes`` episodes; the attack (already started) acts on every active row.

    Args:
        policy: the agent; ``None`` plays uniformly random actions drawn from ``rng``.
        venv: a vector env; its ``num_envs`` rows share the episodes.
        seed: passed to ``venv.reset``, so a rollout is reproducible.
        attack: an observation or action attack, or ``None`` for a clean run.
        track_observations: accumulate per-feature moments of the clean observations.
        on_step: called after each step with the steps taken by active rows and the number
            of episodes finished so far.
    """
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    if policy is None and rng is None:
        raise ConfigError("a random-action rollout needs rng")
    n = venv.num_envs
    space = venv.single_action_space
    quota = np.array([len(range(r, episodes, n)) for r in range(n)])
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=np.int64)
    changed = np.zeros(episodes, dtype=np.int64)
    # Continuous actions count as changed when some dimension moved by more than
    # CHANGE_TOLERANCE (5%) of its range (of 1 where unbounded): any observation perturbation
    # moves a continuous action a little, so a smaller tolerance would count nearly every
    # step. action_shift reports the size of the moves.
    span = box_span(space) if isinstance(space, gym.spaces.Box) else None
    shifted = np.zeros(episodes) if span is not None else None
    cur_shift = np.zeros(n)
    cur_ret = np.zeros(n)
    cur_len = np.zeros(n, dtype=np.int64)
    cur_chg = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=np.int64)
    pending_reset = np.zeros(n, dtype=bool)
    mode = venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    moments = None
    obs, _ = venv.reset(seed=seed)
    obs_space = venv.single_observation_space
    if track_observations and isinstance(obs_space, gym.spaces.Box):
        moments = RunningMoments(int(np.prod(obs_space.shape)))
    filler = _filler(space, n)
    obs_attack = attack if isinstance(attack, ObservationAttack) else None
    # Attacks report actions decoded from the policy's network output. A policy without
    # decode() (a smoothed policy votes over noisy copies) does not act by decoding that
    # output: its actions always come from policy.act, never from the attack's report.
    trust_reported = getattr(policy, "decode", None) is not None
    act_attack = attack if isinstance(attack, ActionAttack) else None
    if attack is not None:
        attack.reset(np.arange(n))

    while (done < quota).any():
        active = (done < quota) & ~pending_reset
        rows = np.flatnonzero(active)
        actions = filler.copy()
        if rows.size:
            x = obs[rows]
            if moments is not None:
                moments.update(x)
            if policy is None:
                assert rng is not None
                a = clean = sample_actions(space, rng, rows.size)
            elif obs_attack is not None:
                x_adv = obs_attack.perturb(x, rows)
                # Gradient attacks know the actions on one or both batches on the way; the
                # rest take one forward pass (the two batches stacked when both are missing).
                known, known_adv = obs_attack.clean_actions, obs_attack.adversarial_actions
                if not trust_reported:
                    known = known_adv = None
                if known is None and known_adv is None:
                    both = policy.act(np.concatenate([x, x_adv]))
                    clean, a = both[: rows.size], both[rows.size :]
                else:
                    clean = policy.act(x) if known is None else known
                    a = policy.act(x_adv) if known_adv is None else known_adv
            else:
                a = clean = policy.act(x)
                if act_attack is not None:
                    a = act_attack.perturb_action(x, clean, rows)
            actions[rows] = a
            if attack is not None and span is not None:
                moved = _shift(span, a, clean)
                cur_chg[rows] += moved > CHANGE_TOLERANCE
                cur_shift[rows] += moved
            elif attack is not None:
                cur_chg[rows] += _differs(a, clean)
        was_pending = pending_reset.copy()
        obs, reward, term, trunc, _ = venv.step(actions)
        cur_ret[rows] += np.asarray(reward, dtype=np.float64)[rows]
        cur_len[rows] += 1
        if was_pending.any():  # NEXT_STEP: these rows were just reset by the env
            pending_reset[was_pending] = False
            if attack is not None:
                attack.reset(np.flatnonzero(was_pending))
        ended = active & (np.asarray(term) | np.asarray(trunc))
        for r in np.flatnonzero(ended):
            idx = r + done[r] * n
            returns[idx], lengths[idx], changed[idx] = cur_ret[r], cur_len[r], cur_chg[r]
            if shifted is not None:
                shifted[idx] = cur_shift[r]
            done[r] += 1
        cur_ret[ended], cur_len[ended], cur_chg[ended], cur_shift[ended] = 0.0, 0, 0, 0.0
        if on_step is not None:
            on_step(int(rows.size), int(done.sum()))
        if ended.any():
            if mode == AutoresetMode.NEXT_STEP:
                pending_reset |= ended
            elif mode == AutoresetMode.DISABLED:
                obs, _ = venv.reset(options={"reset_mask": ended})
                if attack is not None:
                    attack.reset(np.flatnonzero(ended))
            elif attack is not None:  # SAME_STEP: obs already starts the next episode
                attack.reset(np.flatnonzero(ended))
    return EpisodeStats(returns, lengths, changed, moments, shifted)
