"""``TorchPolicy``: the one concrete policy class every loader and adapter produces."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlsec.errors import SpaceMismatch
from rlsec.policies.network import PolicyNetwork, input_dim
from rlsec.policies.spaces import describe_space

__all__ = ["PolicyInfo", "TorchPolicy", "output_width"]

Output = Literal["logits", "q_values", "action"]


@dataclass
class PolicyInfo:
    """Where a policy came from and what is known about it (recorded in every result)."""

    source: str
    sha256: str
    format: str
    env_id: str | None = None
    algo: str | None = None
    clean_return: dict[str, Any] | None = None
    observation_stats: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def output_width(action_space: gym.Space[Any], output: Output) -> int:
    """How many numbers the actor must output for this action space and output kind."""
    if isinstance(action_space, gym.spaces.Discrete):
        if output == "action":
            raise SpaceMismatch("a Discrete action space needs logits or q_values, not 'action'")
        return int(action_space.n)
    if isinstance(action_space, gym.spaces.MultiDiscrete):
        if output != "logits":
            raise SpaceMismatch(f"a MultiDiscrete action space needs logits, got {output!r}")
        return int(action_space.nvec.sum())
    if isinstance(action_space, gym.spaces.MultiBinary):
        if output != "logits":
            raise SpaceMismatch(f"a MultiBinary action space needs logits, got {output!r}")
        return int(np.prod(action_space.shape))
    if isinstance(action_space, gym.spaces.Box):
        if output != "action":
            raise SpaceMismatch(f"a Box action space needs output 'action', got {output!r}")
        return int(np.prod(action_space.shape))
    raise SpaceMismatch(f"unsupported action space {action_space!r}")


def _feature_dim(space: gym.Space[Any]) -> int:
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return int(space.nvec.sum())
    if isinstance(space, gym.spaces.MultiBinary):
        return int(np.prod(space.shape))
    raise SpaceMismatch(f"unsupported observation space {space!r}")


def _check_input_reads(spec: dict[str, Any], space: gym.Space[Any]) -> None:
    """The network's input must read the observation space as it is: float features for a
    Box or MultiBinary, a one-hot of exactly ``n`` for a Discrete, one-hots of exactly
    ``nvec`` for a MultiDiscrete. Matching only the feature count is not enough: a one-hot of
    [2, 2] over a MultiDiscrete([3, 1]) has 4 features too, and would clamp value 2 to 1.

    Raises:
        SpaceMismatch: the input spec reads the space differently.
    """
    kind = spec["type"]
    want = _feature_dim(space)
    got = input_dim(spec)
    if isinstance(space, gym.spaces.Discrete):
        ok = kind == "one_hot" and got == want
        expected = f"a one_hot input of n={int(space.n)}"
    elif isinstance(space, gym.spaces.MultiDiscrete):
        nvec = space.nvec.reshape(-1).tolist()
        ok = kind == "multi_one_hot" and [int(n) for n in spec["nvec"]] == nvec
        expected = f"a multi_one_hot input of nvec={nvec}"
    else:
        ok = kind == "float" and got == want
        expected = f"a float input of dim={want}"
    if not ok:
        raise SpaceMismatch(
            f"observation space {describe_space(space)} needs {expected}; the network reads "
            f"{got} input features as {spec!r:.200}"
        )


class TorchPolicy:
    """A deterministic, batched policy backed by torch modules.

    Args:
        observation_space: what ``act`` accepts (with a leading batch dimension).
        action_space: what ``act`` returns (with a leading batch dimension).
        actor: maps a batch of observations to logits, Q-values or continuous actions.
        output: which of the three the actor returns.
        value: optional V(s) module returning shape ``(B,)``.
        q: optional Q module: ``Q(s)`` of shape ``(B, n)`` for discrete actions, or ``Q(s, a)``
            of shape ``(B,)`` for continuous ones.
        info: provenance; filled with a digest of the weights when omitted.
        network: the declarative network, when there is one (needed to save natively).
        live: the modules belong to a learner that is still training them (a view used by
            robust training): leave their mode and ``requires_grad`` alone. Otherwise the
            modules are put in eval mode and frozen.

    Example:
        >>> import gymnasium as gym, numpy as np, torch
        >>> lin = torch.nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        ...     _ = lin.bias.zero_()
        >>> p = TorchPolicy(gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2), lin, "logits")
        >>> p.act(np.array([[0.5, -0.5], [-0.5, 0.5]], dtype=np.float32)).tolist()
        [0, 1]
    """

    def __init__(
        self,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        actor: nn.Module,
        output: Output,
        *,
        value: nn.Module | None = None,
        q: nn.Module | None = None,
        info: PolicyInfo | None = None,
        network: PolicyNetwork | None = None,
        live: bool = False,
    ) -> None:
        _feature_dim(observation_space)
        self._width = output_width(action_space, output)
        self._observation_space = observation_space
        self._action_space = action_space
        self._output: Output = output
        self._actor = actor if live else actor.eval()
        self._value = value if live or value is None else value.eval()
        # A Q-network's actor *is* its critic: Q(s, ·).
        if q is None and output == "q_values":
            q = actor
        self._q = q if live or q is None else q.eval()
        self.network = network
        if network is not None:
            _check_input_reads(network.spec["input"], observation_space)
            if network.out_dim != self._width:
                raise SpaceMismatch(
                    f"network outputs {network.out_dim} numbers, action space "
                    f"{describe_space(action_space)} with output {output!r} needs {self._width}"
                )
        if not live:
            for p in self._modules():
                p.requires_grad_(False)
        self.info = info or PolicyInfo(
            source="<torch>", sha256=self._weights_digest(), format="torch"
        )

    @classmethod
    def from_network(
        cls,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        network: PolicyNetwork,
        info: PolicyInfo | None = None,
    ) -> TorchPolicy:
        """The policy a declarative network describes (actor, and its V and Q heads)."""
        return cls(
            observation_space,
            action_space,
            network.actor(),
            network.output,
            value=network.value_head(),
            q=network.q_head(),
            info=info,
            network=network,
        )

    # -- the Policy protocol ---------------------------------------------------------------
    @property
    def observation_space(self) -> gym.Space[Any]:
        return self._observation_space

    @property
    def action_space(self) -> gym.Space[Any]:
        return self._action_space

    @property
    def output(self) -> Output:
        return self._output

    def torch_module(self) -> nn.Module:
        return self._actor

    def value_module(self) -> nn.Module | None:
        return self._value

    def q_module(self) -> nn.Module | None:
        return self._q

    def act(self, observations: np.ndarray) -> np.ndarray:
        """Deterministic actions for a batch of observations."""
        x = self.as_batch(observations)
        with torch.no_grad():
            out = self._actor(torch.from_numpy(x))
        return self.decode(out)

    # -- helpers shared with attacks -------------------------------------------------------
    def as_batch(self, observations: np.ndarray) -> np.ndarray:
        """Check a batch of observations against the space; return it as a numpy array.

        Raises:
            SpaceMismatch: wrong shape (a single observation must be a batch of one).
        """
        obs = np.asarray(observations)
        space = self._observation_space
        if isinstance(space, gym.spaces.Box):
            want: tuple[int, ...] = tuple(space.shape)
        elif isinstance(space, gym.spaces.Discrete):
            want = ()
        elif isinstance(space, gym.spaces.MultiDiscrete):
            want = tuple(space.nvec.shape)
        else:
            want = tuple(space.shape or ())
        if obs.ndim != len(want) + 1 or tuple(obs.shape[1:]) != want:
            raise SpaceMismatch(
                f"expected a batch of observations of shape (B, {', '.join(map(str, want))}) "
                f"for {describe_space(space)}, got shape {obs.shape}"
            )
        if isinstance(space, gym.spaces.Box):
            return np.ascontiguousarray(obs, dtype=np.float32)
        return np.ascontiguousarray(obs, dtype=np.int64)

    def decode(self, out: torch.Tensor) -> np.ndarray:
        """Turn actor outputs into environment actions (argmax, per-segment argmax, clip)."""
        space = self._action_space
        if isinstance(space, gym.spaces.Discrete):
            return (out.argmax(dim=-1) + int(space.start)).numpy().astype(np.int64)
        if isinstance(space, gym.spaces.MultiDiscrete):
            parts = torch.split(out, space.nvec.tolist(), dim=-1)
            return torch.stack([p.argmax(dim=-1) for p in parts], dim=-1).numpy().astype(np.int64)
        if isinstance(space, gym.spaces.MultiBinary):
            return (out > 0).numpy().astype(np.int8).reshape(out.shape[0], *space.shape)
        box = cast(gym.spaces.Box, space)
        a = out.numpy().reshape(out.shape[0], *box.shape)
        clipped: np.ndarray = np.clip(a, box.low, box.high).astype(box.dtype)
        return clipped

    def _modules(self) -> list[nn.Module]:
        mods: list[nn.Module] = []
        for m in (self._actor, self._value, self._q):
            if m is not None and all(m is not o for o in mods):
                mods.append(m)
        return mods

    def _weights_digest(self) -> str:
        h = hashlib.sha256()
        for i, m in enumerate(self._modules()):
            for name, t in sorted(m.state_dict().items()):
                h.update(f"{i}:{name}:{tuple(t.shape)}:{t.dtype}\n".encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def __repr__(self) -> str:
        return (
            f"TorchPolicy({describe_space(self._observation_space)} -> "
            f"{describe_space(self._action_space)}, output={self._output!r}, "
            f"source={self.info.source!r})"
        )
