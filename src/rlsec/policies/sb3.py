"""Safe import of Stable-Baselines3 archives: nothing in the archive is ever unpickled.

An SB3 ``.zip`` holds ``data`` (JSON in which some values are base64 cloudpickle blobs under
``:serialized:``), ``policy.pth`` (a torch state dict) and optimizer state. SB3's own
``load`` unpickles the blobs, which runs any code an attacker put there. This importer:

* reads the zip in memory (never extracts it), refusing absolute paths, ``..`` components,
  backslashes, duplicate names, symlinks and oversize members;
* takes the spaces from the *readable* fields SB3 writes beside each blob (``_shape``,
  ``dtype``, ``low``, ``high``, ``n``, ``nvec``) and never touches ``:serialized:``;
* loads ``policy.pth`` with ``torch.load(weights_only=True)``, which refuses pickled objects;
* identifies the algorithm from the state-dict keys and rebuilds the MLP from their shapes,
  refusing any tensor it does not account for (a CNN extractor, say) instead of dropping it.

Supported: PPO, A2C (``ActorCriticPolicy``), DQN, SAC, TD3/DDPG with MLP policies on Box,
Discrete, MultiDiscrete and MultiBinary spaces as SB3 supports them. Observation
normalisation by ``VecNormalize`` lives in a separate pickle SB3 writes apart from the
archive; it is not read here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlsec.errors import PolicyLoadError, UnsafeArtifact
from rlsec.policies.base import PolicyInfo, TorchPolicy
from rlsec.policies.native import _load_state
from rlsec.policies.network import PolicyNetwork
from rlsec.policies.spaces import check_same_space

__all__ = ["from_sb3", "read_sb3_archive"]

_MAX_ARCHIVE_BYTES = 1 * 2**30
_MAX_MEMBER_BYTES = 512 * 2**20
_MAX_DATA_BYTES = 64 * 2**20
_MAX_MEMBERS = 64

_ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.ELU": "elu",
    "torch.nn.modules.activation.LeakyReLU": "leaky_relu",
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.activation.GELU": "gelu",
    "torch.nn.modules.activation.SiLU": "silu",
}
_FLATTEN = "stable_baselines3.common.torch_layers.FlattenExtractor"


def _check_member_name(name: str) -> None:
    path = PurePosixPath(name)
    bad = (
        not name
        or name.startswith(("/", "\\"))
        or "\\" in name
        or re.match(r"^[A-Za-z]:", name) is not None
        or any(part == ".." for part in path.parts)
        or "\x00" in name
    )
    if bad:
        raise UnsafeArtifact(
            f"archive member {name!r} has an absolute or traversing path; expected plain "
            "relative names such as 'data' and 'policy.pth'"
        )


def read_sb3_archive(raw: bytes) -> dict[str, bytes]:
    """The members of an SB3 archive as bytes, after checking every name and size.

    Raises:
        UnsafeArtifact: traversal or absolute paths, symlinks, duplicates, oversize members.
        PolicyLoadError: not a zip file.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile as exc:
        raise PolicyLoadError(f"expected a Stable-Baselines3 .zip archive: {exc}") from None
    infos = zf.infolist()
    if len(infos) > _MAX_MEMBERS:
        raise UnsafeArtifact(f"archive has {len(infos)} members; at most {_MAX_MEMBERS} allowed")
    seen: set[str] = set()
    total = 0
    for info in infos:
        _check_member_name(info.filename)
        if info.filename in seen:
            raise UnsafeArtifact(f"archive member {info.filename!r} appears twice")
        seen.add(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafeArtifact(f"archive member {info.filename!r} is a symbolic link")
        if info.file_size > _MAX_MEMBER_BYTES:
            raise UnsafeArtifact(
                f"archive member {info.filename!r} declares {info.file_size} bytes; at most "
                f"{_MAX_MEMBER_BYTES} allowed"
            )
        total += info.file_size
    if total > _MAX_ARCHIVE_BYTES:
        raise UnsafeArtifact(f"archive expands to {total} bytes; at most {_MAX_ARCHIVE_BYTES}")
    members: dict[str, bytes] = {}
    wanted = (
        ("data", _MAX_DATA_BYTES),
        ("policy.pth", _MAX_MEMBER_BYTES),
        ("_stable_baselines3_version", 256),
    )
    for name, cap in wanted:
        if name not in seen:
            if name.startswith("_"):
                continue  # optional
            if any(n.endswith("data.pkl") for n in seen):
                # zipfile found the table of contents of the torch file nested inside
                raise PolicyLoadError(
                    "the archive is truncated or corrupt: its table of contents is that of the "
                    "policy.pth nested inside it, not of a Stable-Baselines3 archive"
                )
            raise PolicyLoadError(
                f"archive has no {name!r} member; expected a Stable-Baselines3 archive with "
                f"'data' and 'policy.pth', got {sorted(seen)}"
            )
        try:
            with zf.open(name) as f:
                body = f.read(cap + 1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise PolicyLoadError(f"archive member {name!r} is corrupt: {exc}") from None
        if len(body) > cap:
            raise UnsafeArtifact(f"archive member {name!r} is larger than the {cap} bytes allowed")
        members[name] = body
    return members


# -- the readable fields of SB3's data JSON -----------------------------------------------


def _np_text(value: Any, size: int) -> np.ndarray | None:
    """Parse numpy's ``str()`` of an array (``"[-4.8 -inf 0.4]"``); None if summarised."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return np.full(size, float(value))
    if isinstance(value, list):
        flat = np.asarray(value, dtype=np.float64).reshape(-1)
        return flat if flat.size == size else None
    if not isinstance(value, str) or "..." in value:
        return None
    tokens = value.replace("[", " ").replace("]", " ").replace(",", " ").split()
    try:
        arr = np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError:
        return None
    if arr.size == 1 and size > 1:
        return np.full(size, arr[0])
    return arr if arr.size == size else None


def _int_field(entry: dict[str, Any], key: str, where: str) -> int:
    v = entry.get(key)
    try:
        if isinstance(v, bool):
            raise ValueError
        return int(str(v).strip())
    except (TypeError, ValueError):
        raise PolicyLoadError(f"{where}: field {key!r} should hold an integer, got {v!r}") from None


def _space(entry: Any, where: str, fallback: gym.Space[Any] | None) -> gym.Space[Any]:
    if not isinstance(entry, dict) or not isinstance(entry.get(":type:"), str):
        raise PolicyLoadError(f"archive data has no readable {where}; got {entry!r:.200}")
    m = re.search(r"\.(Box|Discrete|MultiDiscrete|MultiBinary)'>$", entry[":type:"])
    if m is None:
        raise PolicyLoadError(
            f"{where} of type {entry[':type:']} is not supported; expected Box, Discrete, "
            "MultiDiscrete or MultiBinary (Dict spaces need MultiInputPolicy, not supported)"
        )
    kind = m.group(1)
    if kind == "Discrete":
        start = _int_field(entry, "start", where) if entry.get("start") is not None else 0
        return gym.spaces.Discrete(_int_field(entry, "n", where), start=start)
    if kind == "MultiDiscrete":
        shape = entry.get("_shape")
        if not isinstance(shape, list) or not all(isinstance(s, int) for s in shape):
            raise PolicyLoadError(f"{where}: expected a list of ints in '_shape', got {shape!r}")
        nvec = _np_text(entry.get("nvec"), int(np.prod(shape)))
        if nvec is None or np.any(nvec < 1) or np.any(nvec != np.round(nvec)):
            raise PolicyLoadError(f"{where}: cannot read MultiDiscrete nvec {entry.get('nvec')!r}")
        return gym.spaces.MultiDiscrete(nvec.astype(np.int64).reshape(shape))
    shape_v = entry.get("_shape")
    if not isinstance(shape_v, list) or not all(isinstance(s, int) for s in shape_v):
        raise PolicyLoadError(f"{where}: expected a list of ints in '_shape', got {shape_v!r}")
    shape = tuple(shape_v)
    if kind == "MultiBinary":
        return gym.spaces.MultiBinary(list(shape) if len(shape) > 1 else int(shape[0]))
    dtype = str(entry.get("dtype"))
    if dtype not in ("float16", "float32", "float64", "uint8", "int8", "int16", "int32", "int64"):
        raise PolicyLoadError(f"{where}: unsupported Box dtype {dtype!r}")
    size = int(np.prod(shape))
    low = _np_text(entry.get("low"), size)
    high = _np_text(entry.get("high"), size)
    if low is None:
        low = _np_text(entry.get("low_repr"), size)
    if high is None:
        high = _np_text(entry.get("high_repr"), size)
    if low is None or high is None:
        if fallback is None:
            raise PolicyLoadError(
                f"{where}: the archive's Box bounds are summarised and cannot be read; pass the "
                "environment so its bounds can be used"
            )
        check_same_space(
            f"{where} of the archive vs the environment",
            fallback,
            gym.spaces.Box(-np.inf, np.inf, shape, np.dtype(dtype)),
        )
        return fallback
    return gym.spaces.Box(
        low=low.reshape(shape).astype(dtype),
        high=high.reshape(shape).astype(dtype),
        shape=shape,
        dtype=np.dtype(dtype),
    )


def _class_name(value: Any) -> str | None:
    if isinstance(value, str):
        m = re.fullmatch(r"<class '([\w.]+)'>", value.strip())
        return m.group(1) if m else None
    return None


def _policy_kwargs(data: dict[str, Any]) -> dict[str, Any]:
    kw = data.get("policy_kwargs") or {}
    if not isinstance(kw, dict):
        raise PolicyLoadError(f"archive policy_kwargs should be an object, got {kw!r:.100}")
    return {k: v for k, v in kw.items() if not k.startswith(":")}


def _activation(kw: dict[str, Any], default: str) -> dict[str, Any]:
    if "activation_fn" not in kw:
        return {"type": default}
    name = _class_name(kw["activation_fn"])
    if name not in _ACTIVATIONS:
        raise PolicyLoadError(
            f"activation_fn {kw['activation_fn']!r} is not supported; expected one of "
            f"{sorted(_ACTIVATIONS)}"
        )
    return {"type": _ACTIVATIONS[name]}


# -- rebuilding the network from state-dict keys ------------------------------------------


class _Keys:
    """The state dict, with bookkeeping of which tensors the rebuilt network consumed."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self.state = state
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.state

    def chain(self, prefix: str) -> list[str]:
        """Prefixes of the Linear layers ``prefix.0``, ``prefix.2``, ... in index order."""
        idx = sorted(
            int(m.group(1))
            for k in self.state
            if (m := re.fullmatch(re.escape(prefix) + r"\.(\d+)\.weight", k))
        )
        return [f"{prefix}.{i}" for i in idx]

    def linear(self, prefix: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        w, b = self.state.get(f"{prefix}.weight"), self.state.get(f"{prefix}.bias")
        if w is None or b is None or w.ndim != 2 or b.ndim != 1 or b.shape[0] != w.shape[0]:
            raise PolicyLoadError(f"policy.pth: expected a Linear layer at {prefix!r}")
        self.used.update((f"{prefix}.weight", f"{prefix}.bias"))
        return {"type": "linear", "in": int(w.shape[1]), "out": int(w.shape[0])}, {"w": w, "b": b}

    def ignore(self, pattern: str) -> None:
        self.used.update(k for k in self.state if re.match(pattern, k))

    def leftovers(self) -> list[str]:
        return sorted(set(self.state) - self.used)


def _block(
    keys: _Keys, prefixes: list[str], act: dict[str, Any], *, act_after_last: bool
) -> tuple[list[dict[str, Any]], list[dict[str, torch.Tensor]]]:
    layers: list[dict[str, Any]] = []
    params: list[dict[str, torch.Tensor]] = []
    for i, p in enumerate(prefixes):
        spec, t = keys.linear(p)
        layers.append(spec)
        params.append(t)
        if i < len(prefixes) - 1 or act_after_last:
            layers.append(dict(act))
    return layers, params


def _unscale(space: gym.spaces.Box) -> dict[str, Any]:
    low = space.low.astype(np.float64).reshape(-1)
    high = space.high.astype(np.float64).reshape(-1)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise PolicyLoadError("a squashed (tanh) policy needs a bounded Box action space")
    return {
        "type": "affine",
        "scale": (0.5 * (high - low)).tolist(),
        "shift": (0.5 * (high + low)).tolist(),
    }


def _scale_for_critic(space: gym.spaces.Box) -> dict[str, Any]:
    low = space.low.astype(np.float64).reshape(-1)
    high = space.high.astype(np.float64).reshape(-1)
    return {
        "scale": (2.0 / (high - low)).tolist(),
        "shift": (-(high + low) / (high - low)).tolist(),
    }


def _input_spec(space: gym.Space[Any], kw: dict[str, Any]) -> dict[str, Any]:
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "one_hot", "n": int(space.n)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "multi_one_hot", "nvec": space.nvec.reshape(-1).tolist()}
    dim = int(np.prod(space.shape or ()))
    spec: dict[str, Any] = {"type": "float", "dim": dim}
    # SB3's preprocess_obs divides image observations by 255 when normalize_images is set.
    if (
        isinstance(space, gym.spaces.Box)
        and space.dtype == np.uint8
        and len(space.shape) == 3
        and np.all(space.low == 0)
        and np.all(space.high == 255)
        and kw.get("normalize_images", True) is not False
    ):
        spec["scale"] = 1.0 / 255.0
    return spec


def _rebuild(
    state: dict[str, torch.Tensor],
    data: dict[str, Any],
    obs_space: gym.Space[Any],
    act_space: gym.Space[Any],
) -> tuple[str, dict[str, Any], list[dict[str, torch.Tensor]]]:
    """Return (algo, network spec, Linear params in the network's order)."""
    kw = _policy_kwargs(data)
    fe = kw.get("features_extractor_class")
    if fe is not None and _class_name(fe) != _FLATTEN:
        raise PolicyLoadError(
            f"features extractor {fe!r} is not supported; only MLP policies (FlattenExtractor)"
        )
    keys = _Keys(state)
    net: dict[str, Any] = {"input": _input_spec(obs_space, kw)}
    params: list[dict[str, torch.Tensor]] = []

    if keys.has("action_net.weight"):  # ActorCriticPolicy: PPO / A2C
        algo = "ppo" if "clip_range" in data else "a2c"
        act = _activation(kw, "tanh")
        pol, p1 = _block(
            keys, [*keys.chain("mlp_extractor.policy_net"), "action_net"], act, act_after_last=False
        )
        val, p2 = _block(
            keys, [*keys.chain("mlp_extractor.value_net"), "value_net"], act, act_after_last=False
        )
        if isinstance(act_space, gym.spaces.Box):
            net["output"] = "action"
            if kw.get("squash_output") is True:
                pol += [{"type": "tanh"}, _unscale(act_space)]
        else:
            net["output"] = "logits"
        net["policy"], net["value"] = pol, val
        params = p1 + p2
        keys.ignore(r"^log_std$")
    elif keys.has("q_net.q_net.0.weight"):  # DQN
        algo = "dqn"
        pol, params = _block(
            keys, keys.chain("q_net.q_net"), _activation(kw, "relu"), act_after_last=False
        )
        net["policy"], net["output"] = pol, "q_values"
        keys.ignore(r"^q_net_target\.")
    elif keys.has("actor.latent_pi.0.weight") or keys.has("actor.mu.0.weight"):  # SAC, TD3
        if not isinstance(act_space, gym.spaces.Box):
            raise PolicyLoadError(f"SAC/TD3 need a Box action space, got {act_space}")
        act = _activation(kw, "relu")
        if keys.has("actor.latent_pi.0.weight"):
            algo = "sac"
            pol, p1 = _block(keys, keys.chain("actor.latent_pi"), act, act_after_last=True)
            if keys.has("actor.mu.0.weight"):  # gSDE: Sequential(Linear, Hardtanh(clip_mean))
                spec, t = keys.linear("actor.mu.0")
                clip = float(kw.get("clip_mean", 2.0))
                pol += [spec, {"type": "hardtanh", "min": -clip, "max": clip}]
            else:
                spec, t = keys.linear("actor.mu")
                pol.append(spec)
            p1.append(t)
            pol.append({"type": "tanh"})
            keys.ignore(r"^actor\.log_std")
        else:
            chain = keys.chain("actor.mu")
            algo = "ddpg" if str(data.get("policy_delay")) == "1" else "td3"
            pol, p1 = _block(keys, chain, act, act_after_last=False)
            pol.append({"type": "tanh"})
        pol.append(_unscale(act_space))
        q_layers, p2 = _block(keys, keys.chain("critic.qf0"), act, act_after_last=False)
        net.update(
            policy=pol,
            output="action",
            q=q_layers,
            q_takes_action=True,
            q_action_affine=_scale_for_critic(act_space),
        )
        params = p1 + p2
        keys.ignore(r"^(actor_target|critic_target)\.|^critic\.qf[1-9]\d*\.")
    else:
        raise PolicyLoadError(
            "policy.pth is not an SB3 MLP policy rlsec recognises (expected keys such as "
            f"'action_net.weight', 'q_net.q_net.0.weight', 'actor.mu.weight'); got "
            f"{sorted(state)[:8]}"
        )
    left = keys.leftovers()
    if left:
        raise PolicyLoadError(
            f"policy.pth holds tensors the rebuilt {algo.upper()} MLP does not account for: "
            f"{left[:8]}; custom networks are not supported"
        )
    return algo, net, params


def _load_weights(blob: bytes) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "global" not in text.lower():  # e.g. "Unsupported operand": corrupt, not hostile
            raise PolicyLoadError(
                f"policy.pth is not a readable torch file: {text[:200]}"
            ) from None
        culprit = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln), "")
        raise UnsafeArtifact(
            "policy.pth holds pickled objects other than tensors; refused without running "
            f"them ({culprit[:200] or 'unsupported pickle content'})"
        ) from None
    except Exception as exc:  # torch raises RuntimeError, ValueError, EOFError... on bad bytes
        raise PolicyLoadError(f"policy.pth is not a readable torch state dict: {exc}") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise PolicyLoadError("policy.pth should hold a flat dict of named tensors")
    return state


def from_sb3(
    archive: str | os.PathLike[str] | bytes,
    *,
    env_id: str | None = None,
    env_spaces: tuple[gym.Space[Any], gym.Space[Any]] | None = None,
    source: str | None = None,
) -> TorchPolicy:
    """Import a Stable-Baselines3 archive without unpickling anything.

    Args:
        archive: path to the ``.zip`` or its bytes.
        env_id: the environment the policy was trained on (SB3 archives do not record it).
        env_spaces: the environment's (observation, action) spaces, used to check the archive's
            spaces and to fill in Box bounds the archive only stores summarised.

    Raises:
        UnsafeArtifact: the archive tries something unsafe; nothing in it was executed.
        PolicyLoadError: the archive is corrupt or holds an unsupported policy.
        SpaceMismatch: ``env_spaces`` disagree with the archive.
    """
    if isinstance(archive, (bytes, bytearray)):
        raw, where = bytes(archive), source or "<bytes>"
    else:
        path = Path(archive)
        where = source or str(path)
        from rlsec._files import read_regular

        try:  # a link, FIFO or device is refused before reading
            raw = read_regular(
                path,
                max_bytes=_MAX_ARCHIVE_BYTES,
                what="SB3 archive",
                error=PolicyLoadError,
                too_large=UnsafeArtifact,
            )
        except UnsafeArtifact:
            raise
        except PolicyLoadError as exc:
            raise PolicyLoadError(f"cannot read SB3 archive {path}: {exc}") from None
    members = read_sb3_archive(raw)
    try:
        data = json.loads(members["data"])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PolicyLoadError(f"archive member 'data' is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyLoadError("archive member 'data' should be a JSON object")
    obs_fb, act_fb = env_spaces if env_spaces is not None else (None, None)
    obs_space = _space(data.get("observation_space"), "observation_space", obs_fb)
    act_space = _space(data.get("action_space"), "action_space", act_fb)
    if isinstance(act_space, gym.spaces.Discrete) and int(act_space.start) != 0:
        raise PolicyLoadError("Discrete action spaces with start != 0 are not supported")
    if env_spaces is not None:
        check_same_space(
            "observation space (environment vs archive)", env_spaces[0], obs_space, bounds=True
        )
        check_same_space(
            "action space (environment vs archive)", env_spaces[1], act_space, bounds=True
        )
    state = _load_weights(members["policy.pth"])
    algo, spec, params = _rebuild(state, data, obs_space, act_space)
    act_dim = int(np.prod(act_space.shape)) if isinstance(act_space, gym.spaces.Box) else 0
    net = PolicyNetwork(spec, action_dim=act_dim)
    linears = [
        f"{name}.{i}"
        for name in ("policy", "value", "q")
        if getattr(net, name) is not None
        for i, m in enumerate(getattr(net, name))
        if isinstance(m, torch.nn.Linear)
    ]
    ours: dict[str, torch.Tensor] = {}
    for key, t in zip(linears, params, strict=True):
        ours[f"{key}.weight"], ours[f"{key}.bias"] = t["w"], t["b"]
    _load_state(net, ours, f"{where}:policy.pth")
    version = members.get("_stable_baselines3_version")
    info = PolicyInfo(
        source=where,
        sha256=hashlib.sha256(raw).hexdigest(),
        format="sb3",
        env_id=env_id,
        algo=algo,
        provenance={
            "imported_from": "stable-baselines3",
            "sb3_version": version.decode(errors="replace") if version else None,
        },
    )
    return TorchPolicy.from_network(obs_space, act_space, net, info)
