"""Training-time replay-buffer poisoning: a Stable-Baselines3 callback that writes a data
attack's crafted transitions into an off-policy learner's replay buffer while it trains.

:class:`ReplayPoisoner` knows the attack only by what it calls on it
(:class:`CraftsTransitions`; the attacks are in :mod:`rlsec.attacks.data`, whose
:meth:`~rlsec.attacks.data.DataAttack.callback` builds one).

**What a monitor sees of each mode.**

* ``direct``: crafted transitions are *added* with the buffer's own ``add``; genuine ones are
  not modified, and a full replay buffer evicts its oldest rows sooner, as its
  first-in-first-out order dictates. The integrity monitor's ``buffer-accounting`` check
  (:class:`~rlsec.defenses.monitors.IntegrityMonitor`) sees the write position move by more
  than one row in one environment step, and stops training. It looks at each environment step
  only, so a write made when a rollout ends is found at the next step, after the update that
  used it; the top-up after the last step of training is never looked at.
* ``replace``: crafted transitions *overwrite* genuine ones in place (the source itself is
  rewritten). The buffer's size and write position do not change, so buffer accounting cannot
  see it; the monitor's reward and transition checks cannot either, since they read what the
  environment returned, not what the buffer holds. This mode is the stealthier one: only a
  check of the buffer's contents against the environment's stream (a digest per row written
  when the learner stores it) would find it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from rlsec.attacks.transitions import Mode, PoisonRecord, Transitions, _allowed
from rlsec.errors import AttackNotApplicable

__all__ = ["CraftsTransitions", "ReplayPoisoner"]


class CraftsTransitions(Protocol):
    """What :class:`ReplayPoisoner` calls on a data attack
    (:class:`~rlsec.attacks.data.DataAttack`)."""

    mode: Mode

    @property
    def id(self) -> str: ...

    @property
    def fraction(self) -> float: ...

    @property
    def action_space(self) -> gym.Space[Any]: ...

    def bind(
        self,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        to_storage: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None: ...

    def eligible(self, sources: Transitions) -> np.ndarray: ...

    def craft(
        self, sources: Transitions, rng: np.random.Generator | None = None
    ) -> Transitions: ...


class ReplayPoisoner(BaseCallback):
    """An SB3 callback that writes ``attack``'s crafted transitions into an off-policy
    learner's replay buffer (DQN, SAC, TD3, DDPG with a plain ``ReplayBuffer``).

    After every environment step and before every update, it counts the genuine transitions
    the learner stored since it last looked (from the buffer's write position) and crafts
    copies of random genuine entries until ``crafted == floor(fraction · genuine)``:
    ``direct`` mode adds them with the buffer's ``add``, ``replace`` mode overwrites the
    copied entry in place. :attr:`record` holds every one. Reusing the callback over several
    ``learn`` calls continues the same campaign.

    Raises (from ``learn``):
        AttackNotApplicable: the learner has no plain replay buffer (PPO, dict observations,
            ``optimize_memory_usage``).
        BudgetViolation: the attack left its budget (a bug; never silent).
    """

    def __init__(self, attack: CraftsTransitions, *, seed: int) -> None:
        super().__init__()
        self.attack = attack
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.record = PoisonRecord(attack.id, attack.mode, attack.fraction)
        self._crafted: np.ndarray | None = None  # (buffer_size, n_envs): crafted entries
        self._last_pos = 0
        self._buf: Any = None

    def _buffer(self) -> Any:
        from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer

        model = self.model
        buf: Any = getattr(model, "replay_buffer", None)
        name = type(model).__name__
        if buf is None:
            raise AttackNotApplicable(
                f"{self.attack.id} poisons a replay buffer; {name} keeps none (on-policy "
                "learners such as PPO learn from fresh rollouts: poison rewards instead)"
            )
        if not isinstance(buf, ReplayBuffer) or isinstance(buf, DictReplayBuffer):
            raise AttackNotApplicable(
                f"{self.attack.id} writes into a plain ReplayBuffer; {name} uses "
                f"{type(buf).__name__}"
            )
        if buf.optimize_memory_usage:
            raise AttackNotApplicable(
                f"{self.attack.id} needs next observations stored apart "
                "(optimize_memory_usage=False)"
            )
        if buf.buffer_size < 2:
            raise AttackNotApplicable(f"the replay buffer holds {buf.buffer_size} row; need 2+")
        return buf

    def _on_training_start(self) -> None:
        buf = self._buffer()
        obs_space = self.model.observation_space
        act_space = self.model.action_space
        to_storage: Callable[[np.ndarray], np.ndarray] | None = None
        storage_space = act_space
        if isinstance(act_space, gym.spaces.Box):
            # SB3's off-policy learners store Box actions rescaled to [-1, 1]
            storage_space = gym.spaces.Box(-1.0, 1.0, act_space.shape, np.float32)
            policy = self.model.policy

            def to_storage(a: np.ndarray) -> np.ndarray:
                return np.clip(np.asarray(policy.scale_action(a), np.float32), -1.0, 1.0)

        self.attack.bind(obs_space, storage_space, to_storage)
        if self._crafted is None or self._crafted.shape != (buf.buffer_size, buf.n_envs):
            self._crafted = np.zeros((buf.buffer_size, buf.n_envs), dtype=bool)
        self._last_pos = int(buf.pos)
        self._buf = buf

    def _on_step(self) -> bool:
        self._sync()
        return True

    def _on_rollout_end(self) -> None:
        self._sync()

    def _sync(self) -> None:
        buf = self._buf
        mask = self._crafted
        assert mask is not None
        size, n_envs = int(buf.buffer_size), int(buf.n_envs)
        pos = int(buf.pos)
        rows = (pos - self._last_pos) % size
        if rows:
            mask[(self._last_pos + np.arange(rows)) % size] = False  # the learner wrote them
            self.record.genuine += rows * n_envs
        self._last_pos = pos
        per_write = n_envs if self.attack.mode == "direct" else 1
        while _allowed(self.attack.fraction, self.record.genuine) - self.record.crafted >= (
            per_write
        ):
            if not self._write(buf, per_write):
                break
        self.record.check()

    def _genuine_entries(self, buf: Any, k: int) -> list[tuple[int, int]] | None:
        """``k`` distinct random genuine (row, env) entries that the attack finds eligible,
        or ``None`` if there are fewer."""
        mask = self._crafted
        assert mask is not None
        filled = int(buf.buffer_size) if buf.full else int(buf.pos)
        n_envs = int(buf.n_envs)
        picked: list[tuple[int, int]] = []
        for _ in range(64 * k):  # rejection sampling; a full scan below if it is unlucky
            r, e = int(self.rng.integers(filled)), int(self.rng.integers(n_envs))
            if mask[r, e] or (r, e) in picked:
                continue
            if self.attack.eligible(self._read(buf, [(r, e)])[0])[0]:
                picked.append((r, e))
                if len(picked) == k:
                    return picked
        free = [(int(r), int(e)) for r, e in np.argwhere(~mask[:filled])]
        if free:
            ok = self.attack.eligible(self._read(buf, free)[0])
            free = [entry for entry, good in zip(free, ok, strict=True) if good]
        if len(free) < k:
            return None
        chosen = self.rng.choice(len(free), size=k, replace=False)
        return [free[int(i)] for i in chosen]

    def _read(self, buf: Any, entries: list[tuple[int, int]]) -> tuple[Transitions, np.ndarray]:
        r = np.array([e[0] for e in entries])
        c = np.array([e[1] for e in entries])
        actions = np.asarray(buf.actions[r, c])
        if isinstance(self.attack.action_space, gym.spaces.Discrete):
            actions = actions.reshape(len(entries)).astype(np.int64)
        else:
            actions = actions.reshape(len(entries), *(self.attack.action_space.shape or ()))
        t = Transitions(
            np.array(buf.observations[r, c]),
            actions,
            np.asarray(buf.rewards[r, c], dtype=np.float64),
            np.array(buf.next_observations[r, c]),
            np.asarray(buf.dones[r, c]).astype(bool),
        )
        return t, np.asarray(buf.timeouts[r, c]).astype(bool)

    def _write(self, buf: Any, k: int) -> bool:
        entries = self._genuine_entries(buf, k)
        if entries is None:
            return False
        mask = self._crafted
        assert mask is not None
        src, timeouts = self._read(buf, entries)
        out = self.attack.craft(src, self.rng)
        actions = out.actions.reshape(k, -1)
        if self.attack.mode == "direct":
            row = int(buf.pos)
            buf.add(
                out.obs,
                out.next_obs,
                actions,
                out.rewards.astype(np.float32),
                out.dones.astype(np.float32),
                [{"TimeLimit.truncated": bool(t)} for t in timeouts],
            )
            at = [(row, e) for e in range(k)]
            self._last_pos = int(buf.pos)
        else:
            at = entries
            for i, (r, e) in enumerate(at):
                buf.observations[r, e] = out.obs[i]
                buf.next_observations[r, e] = out.next_obs[i]
                buf.actions[r, e] = actions[i]
                buf.rewards[r, e] = out.rewards[i]
                buf.dones[r, e] = out.dones[i]
        for r, e in at:
            mask[r, e] = True
        self.record._add(src, out, at, entries, int(self.num_timesteps))
        return True
