"""Querying a policy on every state of a finite model, in batches.

:func:`action_probabilities` evaluates a policy on ``model.observations`` in large batches
(one forward pass per ``batch_size`` states; never one state at a time) and returns
``π(a | s)`` as an ``(n_states, n_actions)`` array: deterministic policies give their action
probability 1, stochastic ones (``stochastic=True``, a logits policy) the softmax of their
logits. :func:`induced_chain` is the policy-induced Markov chain.

Example:
    >>> from rlsec.verify.model import Model
    >>> m = Model.from_env("FrozenLake-v1", is_slippery=False)
    >>> table = np.full(16, 2)  # a tabular policy: always "right"
    >>> action_probabilities(table, m)[0].tolist()
    [0.0, 0.0, 1.0, 0.0]
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlsec.core import Policy
from rlsec.errors import ModelError, SpaceMismatch
from rlsec.policies.spaces import check_same_space, describe_space
from rlsec.verify.model import Chain, Model

__all__ = ["action_probabilities", "induced_chain"]


def _check_spaces(policy: Policy, model: Model) -> None:
    if model.observations is None or model.observation_space is None:
        raise ModelError("the model has no observation function: a policy cannot be queried on it")
    check_same_space(
        "observation space of the model vs the policy",
        model.observation_space,
        policy.observation_space,
        bounds=True,
    )
    space = policy.action_space
    if not isinstance(space, gym.spaces.Discrete) or int(space.n) != model.n_actions:
        raise SpaceMismatch(
            f"the model has Discrete({model.n_actions}) actions; the policy acts in "
            f"{describe_space(space)}"
        )


def action_probabilities(
    policy: Policy | np.ndarray,
    model: Model,
    *,
    stochastic: bool = False,
    batch_size: int = 65536,
) -> np.ndarray:
    """``π(a | s)`` for every state of ``model``, as an ``(n_states, n_actions)`` array.

    Args:
        policy: a :class:`~rlsec.core.Policy` over the model's observation and action spaces,
            or a table: ``(n_states,)`` action indices or ``(n_states, n_actions)``
            probabilities.
        model: the finite model (its ``observations`` are what the policy is queried on).
        stochastic: keep a logits policy's action distribution (softmax) instead of its
            argmax.
        batch_size: states per forward pass.

    Raises:
        SpaceMismatch: the policy's spaces are not the model's.
        ModelError: a table of the wrong shape, or ``stochastic`` for a policy without logits.
    """
    n_s, n_a = model.n_states, model.n_actions
    if isinstance(policy, np.ndarray):
        table = np.asarray(policy)
        if table.shape == (n_s,) and np.issubdtype(table.dtype, np.integer):
            if table.min() < 0 or table.max() >= n_a:
                raise ModelError(
                    f"tabular actions must be in [0, {n_a}), got {table.min()}..{table.max()}"
                )
            out = np.zeros((n_s, n_a))
            out[np.arange(n_s), table] = 1.0
            return out
        if table.shape == (n_s, n_a):
            return table.astype(np.float64)
        raise ModelError(
            f"a tabular policy must have shape ({n_s},) of action indices or ({n_s}, {n_a}) "
            f"of probabilities, got {table.shape}"
        )
    if batch_size < 1:
        raise ModelError(f"batch_size must be >= 1, got {batch_size}")
    if stochastic and getattr(policy, "output", None) != "logits":
        raise ModelError(
            "stochastic=True needs a policy whose network outputs logits (PPO, A2C); "
            f"this one outputs {getattr(policy, 'output', 'actions')!r}"
        )
    _check_spaces(policy, model)
    obs = model.observations
    assert obs is not None
    start = int(getattr(policy.action_space, "start", 0))
    out = np.zeros((n_s, n_a))
    if stochastic:
        actor: Any = policy.torch_module()  # type: ignore[attr-defined]
        with torch.no_grad():
            for i in range(0, n_s, batch_size):
                batch = policy.as_batch(obs[i : i + batch_size])  # type: ignore[attr-defined]
                logits = actor(torch.from_numpy(batch))
                out[i : i + batch_size] = torch.softmax(logits.double(), dim=-1).numpy()
        return out
    for i in range(0, n_s, batch_size):
        acts = np.asarray(policy.act(obs[i : i + batch_size])).reshape(-1) - start
        out[np.arange(i, i + len(acts)), acts] = 1.0
    return out


def induced_chain(
    model: Model, policy: Policy | np.ndarray, *, stochastic: bool = False, batch_size: int = 65536
) -> Chain:
    """The Markov chain of ``policy`` acting in ``model`` (see :func:`action_probabilities`)."""
    return model.chain(
        action_probabilities(policy, model, stochastic=stochastic, batch_size=batch_size)
    )
