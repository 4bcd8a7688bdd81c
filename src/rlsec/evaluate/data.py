"""Damage of data poisoning: how much worse a policy learned from poisoned transitions does.

* :func:`fitted_q`: the offline learner that stands in for the victim of offline-dataset
  poisoning (learn once from the clean dataset, once from the poisoned one).
* :func:`data_damage`: both policies play the same environment seeds; the poisoned one's
  return with its confidence interval next to the clean one's, how often its actions differ
  from the clean policy's, and how often it takes the attacker's target action.

The attacks are in :mod:`rlsec.attacks.data`; the drivers that apply them in
:mod:`rlsec.attacks.replay` (replay buffers) and :mod:`rlsec.attacks.offline` (datasets).
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import gymnasium as gym
import numpy as np
import torch

from rlsec.attacks.data import DataAttack, TargetActionData
from rlsec.attacks.transitions import PoisonRecord, TransitionDataset
from rlsec.core import Policy, Surface
from rlsec.errors import AttackNotApplicable, ConfigError
from rlsec.policies.spaces import box_span, describe_space

if TYPE_CHECKING:
    from rlsec.policies import TorchPolicy

__all__ = ["data_damage", "fitted_q"]


def fitted_q(
    dataset: TransitionDataset,
    *,
    steps: int = 5000,
    gamma: float = 0.99,
    learning_rate: float = 1e-3,
    batch_size: int = 256,
    hidden: Sequence[int] = (64, 64),
    target_every: int = 100,
    conservative: float = 1.0,
    loss: Literal["huber", "mse"] = "huber",
    seed: int = 0,
) -> TorchPolicy:
    """A greedy policy learned offline from ``dataset`` alone (discrete actions).

    Neural fitted Q-iteration (Riedmiller 2005) run as offline double DQN: minibatch
    Huber-loss regression of ``Q(s, a)`` on ``r + gamma (1 - done) Q⁻(s', argmax_a' Q(s', a'))``
    with a target network ``Q⁻`` copied every ``target_every`` steps (Mnih et al. 2015;
    van Hasselt et al. 2016), plus ``conservative`` times the CQL(H) penalty
    ``logsumexp_a Q(s, a) - Q(s, a_data)`` (Kumar et al. 2020), which keeps the values of
    actions the data does not show from running away: without it (``conservative=0``) the
    values diverged on a CartPole dataset at gamma 0.95 and 0.99. It learns from rewards, so
    reward poisoning reaches it (behaviour cloning would ignore rewards); the penalty also
    pulls it toward the dataset's actions, as behaviour cloning does.

    rlsec carries these few lines rather than a dependency: the offline-RL library d3rlpy
    (2.8.1) requires gymnasium 1.0.0 and ``imitation`` (1.0.1) requires stable-baselines3
    2.2.1 and gymnasium 0.29, both older than rlsec's (installing either would downgrade them).

    Example:
        >>> from rlsec.attacks.offline import collect_dataset
        >>> ds = collect_dataset(None, "CartPole-v1", 64, seed=0)
        >>> fitted_q(ds, steps=5, batch_size=8).act(ds.obs[:3]).shape
        (3,)
    """
    from rlsec.policies import from_torch

    space = dataset.action_space
    if not isinstance(space, gym.spaces.Discrete):
        raise AttackNotApplicable(
            f"fitted_q learns discrete actions; the dataset acts in {describe_space(space)}"
        )
    for name, v in (("steps", steps), ("batch_size", batch_size), ("target_every", target_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
    if not 0.0 <= gamma < 1.0:
        raise ConfigError(f"gamma must be in [0, 1), got {gamma!r}")
    if not (math.isfinite(conservative) and conservative >= 0):
        raise ConfigError(f"conservative must be a finite number >= 0, got {conservative!r}")
    if loss not in ("huber", "mse"):
        raise ConfigError(f"loss must be 'huber' or 'mse', got {loss!r}")
    if len(dataset) == 0:
        raise ConfigError("the dataset is empty")
    dim, n_actions = int(np.prod(dataset.obs.shape[1:])), int(space.n)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        sizes = [dim, *(int(h) for h in hidden)]
        layers: list[torch.nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        q = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], n_actions))
    q_target = copy.deepcopy(q)
    obs = torch.as_tensor(dataset.obs.reshape(len(dataset), -1), dtype=torch.float32)
    nxt = torch.as_tensor(dataset.next_obs.reshape(len(dataset), -1), dtype=torch.float32)
    act = torch.as_tensor(dataset.actions - int(space.start), dtype=torch.int64)
    rew = torch.as_tensor(dataset.rewards, dtype=torch.float32)
    live = torch.as_tensor(~dataset.dones, dtype=torch.float32)
    optimizer = torch.optim.Adam(q.parameters(), lr=learning_rate)
    rng = np.random.default_rng(seed)
    for step in range(steps):
        i = torch.from_numpy(rng.integers(0, len(dataset), batch_size))
        with torch.no_grad():
            best = q(nxt[i]).argmax(dim=1, keepdim=True)
            y = rew[i] + gamma * live[i] * q_target(nxt[i]).gather(1, best).squeeze(1)
        q_all = q(obs[i])
        pred = q_all.gather(1, act[i, None]).squeeze(1)
        fit = (
            torch.nn.functional.smooth_l1_loss if loss == "huber" else torch.nn.functional.mse_loss
        )
        objective = fit(pred, y)
        if conservative > 0:
            objective = objective + conservative * (torch.logsumexp(q_all, dim=1) - pred).mean()
        optimizer.zero_grad()
        torch.autograd.backward(objective)
        optimizer.step()
        if (step + 1) % target_every == 0:
            q_target.load_state_dict(q.state_dict())
    return from_torch(q, dataset.observation_space, space, output="q_values")


class _Watch:
    """A policy that counts, over an evaluation, the steps on which its actions hit the target
    and differ from a reference policy's on the same observations."""

    def __init__(
        self,
        policy: Policy,
        target: Callable[[np.ndarray], np.ndarray] | None,
        reference: Policy | None,
    ) -> None:
        self.policy, self.target, self.reference = policy, target, reference
        self.steps = self.hits = self.changed = 0
        space = policy.action_space
        self._span = box_span(space) if isinstance(space, gym.spaces.Box) else None

    @property
    def observation_space(self) -> gym.Space[Any]:
        return self.policy.observation_space

    @property
    def action_space(self) -> gym.Space[Any]:
        return self.policy.action_space

    def _same(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a2 = a.reshape(len(a), -1).astype(np.float64)
        b2 = b.reshape(len(b), -1).astype(np.float64)
        if self._span is None:
            return np.asarray((a2 == b2).all(axis=1))
        from rlsec.attacks.rollout import CHANGE_TOLERANCE

        return np.asarray((np.abs(a2 - b2) / self._span).max(axis=1) <= CHANGE_TOLERANCE)

    def act(self, observations: np.ndarray) -> np.ndarray:
        a = np.asarray(self.policy.act(observations))
        self.steps += len(a)
        if self.target is not None:
            self.hits += int(self._same(a, self.target(observations)).sum())
        if self.reference is not None:
            ref = np.asarray(self.reference.act(observations))
            self.changed += int((~self._same(a, ref)).sum())
        return a


def data_damage(
    clean: Policy,
    poisoned: Policy,
    env_id: str,
    attack: DataAttack,
    *,
    record: PoisonRecord | None = None,
    episodes: int = 50,
    seed: int = 0,
    num_envs: int | None = None,
    target_action: int | Sequence[float] | np.ndarray | Policy | None = None,
) -> dict[str, Any]:
    """Compare a policy learned from poisoned data with one learned from clean data.

    Both play ``episodes`` episodes on the same environment seeds. Returned in the row shape
    of ``results.json`` (docs/results.md) with ``surface: "data"``; ``epsilon`` is the reward
    bound ε and ``fraction`` the crafted-to-genuine budget:

    * ``mean_return``, ``ci95``, ``std_return``, ``mean_length``: the poisoned policy;
      ``clean_return`` holds the same keys for the clean one.
    * ``action_change_rate``: fraction of the poisoned policy's steps on which its action
      differs from the clean policy's on the same observation (continuous actions: by more
      than 5% of the range in some dimension).
    * ``target_action_rate`` (targeted attacks, or when ``target_action`` is given, else
      ``None``): fraction of the poisoned policy's steps on which it takes the target action
      (``target_action``, by default the attack's); ``clean_target_rate``: the same for the
      clean policy (the rate without poisoning).
    * ``budget``: the record's counts (:meth:`PoisonRecord.summary`) when given.

    Raises:
        ConfigError: bad ``episodes`` or ``num_envs``.
        SpaceMismatch: a policy does not fit the environment.

    Example:
        >>> from rlsec.attacks.data import make_data_attack
        >>> from rlsec.attacks.offline import collect_dataset, poison_dataset
        >>> ds = collect_dataset(None, "CartPole-v1", 64, seed=0)
        >>> attack = make_data_attack("target-action-data-v1", 1.0, fraction=0.5,
        ...                           target_action=0)
        >>> bad, rec = poison_dataset(ds, attack, np.random.default_rng(0))
        >>> row = data_damage(fitted_q(ds, steps=5), fitted_q(bad, steps=5), "CartPole-v1",
        ...                   attack, record=rec, episodes=2)
        >>> row["surface"], row["fraction"], 0.0 <= row["target_action_rate"] <= 1.0
        ('data', 0.5, True)
    """
    from rlsec.attacks.rollout import rollout
    from rlsec.envs import check_policy_env, make_vec
    from rlsec.stats import mean_ci

    t0 = time.perf_counter()
    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ConfigError(f"episodes must be an integer >= 1, got {episodes!r}")
    n = min(int(episodes), 16) if num_envs is None else num_envs
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    check_policy_env(clean, env_id)
    check_policy_env(poisoned, env_id)
    target: Callable[[np.ndarray], np.ndarray] | None = None
    target_json: Any = None
    if target_action is None and isinstance(attack, TargetActionData):
        target_action = attack.target_action
    if target_action is not None:
        probe = TargetActionData(attack.threat_model, target_action=target_action)
        probe.bind(clean.observation_space, clean.action_space)
        target = probe.targets
        target_json = probe.params()["target_action"]  # the action, or the policy's source

    def play(policy: Policy, reference: Policy | None) -> tuple[Any, _Watch]:
        watch = _Watch(policy, target, reference)
        venv = make_vec(env_id, n)
        try:
            stats = rollout(watch, venv, int(episodes), seed=seed)
        finally:
            venv.close()
        return stats, watch

    clean_stats, clean_watch = play(clean, None)
    bad_stats, bad_watch = play(poisoned, clean)

    def summary(returns: np.ndarray, lengths: np.ndarray) -> dict[str, Any]:
        mean, ci = mean_ci(returns)
        return {
            "mean_return": mean,
            "ci95": ci,
            "episodes": int(episodes),
            "mean_length": float(lengths.mean()),
            "std_return": float(returns.std(ddof=1)) if returns.size > 1 else 0.0,
        }

    def rate(w: _Watch) -> float | None:
        return w.hits / w.steps if target is not None and w.steps else None

    tm = attack.threat_model
    return {
        "attack": attack.id,
        "surface": Surface.DATA.value,
        "epsilon": tm.epsilon,
        "norm": tm.norm,
        "unit": tm.unit,
        **summary(bad_stats.returns, bad_stats.lengths),
        "action_change_rate": bad_watch.changed / bad_watch.steps if bad_watch.steps else 0.0,
        "mean_action_shift": None,
        "per_seed": [{"seed": seed, "mean_return": float(bad_stats.returns.mean())}],
        "threat_model": tm.to_dict(),
        "atlas": list(attack.atlas),
        "reference": attack.reference,
        "params": attack.params(),
        "seconds": time.perf_counter() - t0,
        "fraction": attack.fraction,
        "mode": attack.mode,
        "clean_return": summary(clean_stats.returns, clean_stats.lengths),
        "target_action": target_json,
        "target_action_rate": rate(bad_watch),
        "clean_target_rate": rate(clean_watch),
        "budget": record.summary() if record is not None else None,
    }
