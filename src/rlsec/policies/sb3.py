"""Safe import of Stable-Baselines3 archives: nothing in the archive is ever unpickled.

An SB3 ``.zip`` holds ``data`` (JSON in which some values are base64 cloudpickle blobs under
``:serialized:``), ``policy.pth`` (a torch state dict) and optimizer state. SB3's own
``load`` unpickles the blobs, which runs any code an attacker put there. This importer:

* reads the zip in memory (never extracts it), at most 1 GiB whether given a path or bytes,
  refusing absolute paths, ``..`` components, backslashes, duplicate names, symlinks,
  encrypted members, compression other than stored and deflate, and oversize members;
* parses ``data`` with the bounded reader of untrusted metadata
  (:mod:`rlsec.policies._untrusted`: size, depth, values, strings and digits bounded before
  anything is allocated);
* takes the spaces from the *readable* fields SB3 writes beside each blob (``_shape``,
  ``dtype``, ``low``, ``high``, ``n``, ``start``, ``nvec``) and never unpickles a blob;
* reads the policy class and the policy keyword arguments that decide the network's function
  as SB3 would, and never fills in a default where SB3 would read a value (see below);
* loads ``policy.pth`` with ``torch.load(weights_only=True)``, which refuses pickled objects,
  and refuses tensors that are not plain contiguous storage of exactly their elements (a
  stride-0 expansion makes a few bytes stand for a huge matrix); the network is bounded by
  :data:`rlsec.policies.network.MAX_PARAMS`;
* identifies the algorithm from the state-dict keys and rebuilds the MLP from their shapes,
  refusing any tensor it does not account for (a CNN extractor, say) instead of dropping it.

**What SB3 reads, and what rlsec reads.** ``policy_class`` and ``policy_kwargs`` are read by
SB3 from their blobs. Two such blobs hold plain data (a class reference; a dict of numbers,
strings and class references), which :func:`~rlsec.policies._untrusted.read_plain_pickle`
reads by walking the pickle's opcodes without running any. So:

* ``policy_class`` must be one of SB3's MLP policy classes (``ActorCriticPolicy``,
  ``DQNPolicy``, ``SACPolicy``, ``TD3Policy``, which ``"MlpPolicy"`` names), read from its blob,
  and agree with the state dict;
* for each keyword that decides the function (``activation_fn``, ``features_extractor_class``,
  and where they apply ``normalize_images``, ``squash_output``, ``clip_mean``): when
  ``policy_kwargs`` is plain JSON (SB3 reads it as it is) or its blob is plain data, the value
  is SB3's and a readable field that is missing, added or different from the blob is refused;
  when the blob would run code to build itself, the readable field is required (its value
  cannot be checked); a keyword that SB3 itself does not find (absent from the JSON or from
  a plain blob) takes SB3's own default for that policy class, exactly as SB3 does
  (``_SB3_DEFAULTS``, from SB3 2.9's constructors).

Supported: PPO, A2C (``ActorCriticPolicy``), DQN, SAC, TD3/DDPG with MLP policies on Box,
Discrete, MultiDiscrete and MultiBinary spaces (with ``start`` 0) as SB3 supports them.
Observation normalisation by ``VecNormalize`` lives in a separate pickle SB3 writes apart from
the archive; it is not read here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import os
import pickle
import re
import stat
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlsec.errors import PolicyLoadError, UnsafeArtifact
from rlsec.policies._untrusted import (
    MAX_CATEGORIES,
    OPAQUE,
    SB3_DATA_LIMITS,
    Global,
    integer,
    number,
    parse_json,
    read_plain_pickle,
    shape,
    show,
)
from rlsec.policies.base import PolicyInfo, TorchPolicy
from rlsec.policies.native import _load_state, check_plain_tensor
from rlsec.policies.network import MAX_PARAMS, MAX_TENSOR_ELEMENTS, PolicyNetwork
from rlsec.policies.spaces import _box, _discrete, _multi_discrete, check_same_space

__all__ = ["from_sb3", "read_sb3_archive"]

_MAX_ARCHIVE_BYTES = 1 * 2**30
_MAX_MEMBER_BYTES = 512 * 2**20
_MAX_DATA_BYTES = 64 * 2**20
_MAX_MEMBERS = 64
_COMPRESSIONS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}

_ACTIVATIONS: dict[str, dict[str, Any]] = {
    "torch.nn.modules.activation.Tanh": {"type": "tanh"},
    "torch.nn.modules.activation.ReLU": {"type": "relu"},
    "torch.nn.modules.activation.ELU": {"type": "elu"},
    # SB3 builds ``activation_fn()``: torch's default slope
    "torch.nn.modules.activation.LeakyReLU": {"type": "leaky_relu", "negative_slope": 0.01},
    "torch.nn.modules.activation.Sigmoid": {"type": "sigmoid"},
    "torch.nn.modules.activation.GELU": {"type": "gelu"},
    "torch.nn.modules.activation.SiLU": {"type": "silu"},
}
_FLATTEN = "stable_baselines3.common.torch_layers.FlattenExtractor"
_TANH, _RELU = "torch.nn.modules.activation.Tanh", "torch.nn.modules.activation.ReLU"

#: SB3's MLP policy classes (what ``"MlpPolicy"`` names for each algorithm) -> family
_POLICY_CLASSES = {
    "stable_baselines3.common.policies.ActorCriticPolicy": "actor-critic",
    "stable_baselines3.dqn.policies.DQNPolicy": "dqn",
    "stable_baselines3.sac.policies.SACPolicy": "sac",
    "stable_baselines3.td3.policies.TD3Policy": "td3",
}
#: SB3's own defaults for the keywords that decide the network, per policy class, as its
#: constructors declare them (stable_baselines3 2.9: common/policies.py ActorCriticPolicy,
#: dqn/policies.py DQNPolicy, sac/policies.py SACPolicy, td3/policies.py TD3Policy). Used only
#: where SB3 itself finds no value.
_SB3_DEFAULTS: dict[str, dict[str, Any]] = {
    "actor-critic": {
        "activation_fn": _TANH,
        "features_extractor_class": _FLATTEN,
        "normalize_images": True,
        "squash_output": False,
    },
    "dqn": {"activation_fn": _RELU, "features_extractor_class": _FLATTEN, "normalize_images": True},
    "sac": {
        "activation_fn": _RELU,
        "features_extractor_class": _FLATTEN,
        "normalize_images": True,
        "clip_mean": 2.0,
    },
    "td3": {"activation_fn": _RELU, "features_extractor_class": _FLATTEN, "normalize_images": True},
}
#: the state-dict key that marks each family's network
_FAMILY_KEYS = {
    "actor-critic": "action_net.weight",
    "dqn": "q_net.q_net.0.weight",
    "sac": "actor.latent_pi.0.weight",
    "td3": "actor.mu.0.weight",
}


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


_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    struct.error,
    UnicodeDecodeError,
    KeyError,
    IndexError,
    OverflowError,
)


def read_sb3_archive(raw: bytes) -> dict[str, bytes]:
    """The members of an SB3 archive as bytes, after checking every name and size.

    Raises:
        UnsafeArtifact: more than 1 GiB, traversal or absolute paths, symlinks, duplicates,
            oversize members.
        PolicyLoadError: not a zip file, encrypted members, compression other than stored and
            deflate, corrupt members.
    """
    if len(raw) > _MAX_ARCHIVE_BYTES:
        raise UnsafeArtifact(
            f"the archive is {len(raw)} bytes; at most {_MAX_ARCHIVE_BYTES} allowed"
        )
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
        infos = zf.infolist()
    except _ZIP_ERRORS as exc:
        raise PolicyLoadError(f"expected a Stable-Baselines3 .zip archive: {exc}") from None
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
        if info.flag_bits & 0x1:
            raise PolicyLoadError(
                f"archive member {info.filename!r} is encrypted; Stable-Baselines3 archives "
                "are not, and rlsec does not decrypt"
            )
        if info.compress_type not in _COMPRESSIONS:
            raise PolicyLoadError(
                f"archive member {info.filename!r} uses compression method "
                f"{info.compress_type}; expected stored (0) or deflate (8), as SB3 writes"
            )
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
        except _ZIP_ERRORS as exc:
            raise PolicyLoadError(f"archive member {name!r} is corrupt: {exc}") from None
        if len(body) > cap:
            raise UnsafeArtifact(f"archive member {name!r} is larger than the {cap} bytes allowed")
        members[name] = body
    return members


# -- the readable fields of SB3's data JSON -----------------------------------------------


def _np_text(value: Any, size: int, where: str) -> np.ndarray | None:
    """Parse numpy's ``str()`` of an array (``"[-4.8 -inf 0.4]"``) or a number or list;
    None when it is summarised (``...``) or not a rendering of numbers at all."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return np.full(size, float(value))
    if isinstance(value, list):
        if len(value) != size:
            return None
        try:
            return np.array([number(v, where, finite=False) for v in value], dtype=np.float64)
        except PolicyLoadError:
            return None
    if not isinstance(value, str) or "..." in value or len(value) > 64 * size + 64:
        return None
    tokens = value.replace("[", " ").replace("]", " ").replace(",", " ").split()
    try:
        arr = np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError:
        return None
    if arr.size == 1 and size > 1:
        return np.full(size, arr[0])
    return arr if arr.size == size else None


def _int_text(entry: dict[str, Any], key: str, where: str, *, lo: int, hi: int) -> int:
    """A readable integer field: SB3 writes numpy integers as their ``str()``."""
    if key not in entry:
        raise PolicyLoadError(
            f"{where}: the readable field {key!r} is missing; SB3 would read it from the "
            "serialized space, so it is refused rather than defaulted"
        )
    v = entry[key]
    if isinstance(v, str) and re.fullmatch(r"\s*-?\d{1,20}\s*", v):
        v = int(v)
    return integer(v, f"{where}.{key}", lo=lo, hi=hi)


def _space(entry: Any, where: str, fallback: gym.Space[Any] | None) -> gym.Space[Any]:
    if not isinstance(entry, dict) or not isinstance(entry.get(":type:"), str):
        raise PolicyLoadError(f"archive data has no readable {where}; got {show(entry, 200)}")
    m = re.search(r"\.(Box|Discrete|MultiDiscrete|MultiBinary)'>$", entry[":type:"])
    if m is None:
        raise PolicyLoadError(
            f"{where} of type {show(entry[':type:'])} is not supported; expected Box, Discrete, "
            "MultiDiscrete or MultiBinary (Dict spaces need MultiInputPolicy, not supported)"
        )
    kind = m.group(1)
    if kind == "Discrete":
        n = _int_text(entry, "n", where, lo=1, hi=MAX_CATEGORIES)
        start = _int_text(entry, "start", where, lo=-(2**53), hi=2**53)
        if start != 0:
            raise PolicyLoadError(
                f"{where}: Discrete spaces with start != 0 are not supported (SB3 one-hot "
                f"encodes and samples the raw index), got start {start}"
            )
        return _discrete(n, start, where)
    dims = shape(entry.get("_shape"), f"{where}._shape")
    size = math.prod(dims)
    if kind == "MultiDiscrete":
        nvec = _np_text(entry.get("nvec"), size, f"{where}.nvec")
        if nvec is None:
            raise PolicyLoadError(
                f"{where}: cannot read MultiDiscrete nvec {show(entry.get('nvec'))}"
            )
        if "start" not in entry:
            raise PolicyLoadError(
                f"{where}: the readable field 'start' is missing; SB3 would read it from the "
                "serialized space, so it is refused rather than defaulted"
            )
        starts = _np_text(entry["start"], size, f"{where}.start")
        if starts is None or np.any(starts != 0):
            raise PolicyLoadError(
                f"{where}: MultiDiscrete spaces with start != 0 are not supported, got "
                f"{show(entry['start'])}"
            )
        if not np.all(np.isfinite(nvec)) or np.any(nvec != np.round(nvec)):
            raise PolicyLoadError(f"{where}: expected integers in nvec, got {show(entry['nvec'])}")
        ints = [integer(int(v), f"{where}.nvec", lo=1, hi=MAX_CATEGORIES) for v in nvec]
        return _multi_discrete(ints, dims, where)
    if kind == "MultiBinary":
        return gym.spaces.MultiBinary(list(dims) if len(dims) > 1 else int(dims[0]))
    dtype = entry.get("dtype")
    if not isinstance(dtype, str):
        raise PolicyLoadError(f"{where}: expected a dtype name, got {show(dtype)}")
    low = _np_text(entry.get("low"), size, f"{where}.low")
    high = _np_text(entry.get("high"), size, f"{where}.high")
    if low is None:
        low = _np_text(entry.get("low_repr"), size, f"{where}.low_repr")
    if high is None:
        high = _np_text(entry.get("high_repr"), size, f"{where}.high_repr")
    if low is None or high is None:
        if fallback is None or where != "observation_space":
            raise PolicyLoadError(
                f"{where}: the archive's Box bounds are summarised and cannot be read; "
                + (
                    "pass the environment so its bounds can be used"
                    if where == "observation_space"
                    else "the bounds of an action space shape the network, so they must be readable"
                )
            )
        bare = _box(dims, dtype, np.full(size, -np.inf), np.full(size, np.inf), where)
        check_same_space(f"{where} of the archive vs the environment", fallback, bare)
        if _is_image(fallback):
            raise PolicyLoadError(
                f"{where}: the archive's bounds are summarised, so they are not all 0 and 255, "
                "but the environment's are: the archive was not trained on this space"
            )
        return fallback
    return _box(dims, dtype, low, high, where)


def _is_image(space: gym.Space[Any]) -> bool:
    """SB3's ``is_image_space`` (no channel check): uint8, three dimensions, bounds 0 and 255."""
    return (
        isinstance(space, gym.spaces.Box)
        and space.dtype == np.uint8
        and len(space.shape) == 3
        and bool(np.all(space.low == 0))
        and bool(np.all(space.high == 255))
    )


def _class_name(value: Any) -> str | None:
    if isinstance(value, Global):
        return value.path
    if isinstance(value, str):
        m = re.fullmatch(r"<class '([\w.]+)'>", value.strip())
        return m.group(1) if m else None
    return None


_NO_BLOB = object()


def _blob(entry: dict[str, Any], where: str) -> Any:
    """What the ``:serialized:`` blob of ``entry`` holds, read without unpickling:
    ``_NO_BLOB`` when there is none, :data:`OPAQUE` when building it would run code."""
    if ":serialized:" not in entry:
        return _NO_BLOB
    text = entry[":serialized:"]
    try:
        if not isinstance(text, str):
            raise ValueError("not a string")
        blob = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, binascii.Error, UnicodeEncodeError):
        # SB3's json_to_data raises on it too: this archive does not load in SB3
        raise PolicyLoadError(
            f"archive data: {where}'s :serialized: blob is not base64; SB3 cannot load it either"
        ) from None
    return read_plain_pickle(blob)


def _policy_family(data: dict[str, Any]) -> str:
    """The SB3 policy class, read from the blob SB3 unpickles (a plain class reference)."""
    entry = data.get("policy_class")
    if not isinstance(entry, dict):
        raise PolicyLoadError(
            f"archive data: expected a serialized policy_class (SB3 requires one), got "
            f"{show(entry)}"
        )
    value = _blob(entry, "policy_class")
    if value is _NO_BLOB:
        raise PolicyLoadError(
            "archive data: policy_class has no :serialized: blob; SB3 cannot load it either"
        )
    if not isinstance(value, Global) or value.path not in _POLICY_CLASSES:
        got = value.path if isinstance(value, Global) else "a pickle that builds an object"
        raise PolicyLoadError(
            f"archive data: policy_class is {got}; rlsec imports only SB3's MLP policy "
            f"classes {sorted(_POLICY_CLASSES)} (a custom policy class may compute anything)"
        )
    return _POLICY_CLASSES[value.path]


class _Kwargs:
    """The policy keyword arguments SB3 would pass, read where SB3 reads them.

    ``get(key)`` returns SB3's value for one keyword that decides the network's function, or
    SB3's own default when SB3 finds none; it raises when SB3 would read a value that rlsec
    cannot see (a readable field missing beside a blob that runs code), or when the readable
    fields disagree with a plain blob.
    """

    def __init__(self, data: dict[str, Any], family: str) -> None:
        self.family = family
        entry = data.get("policy_kwargs")
        self.readable: dict[str, Any] = {}
        self.blob: Any = _NO_BLOB
        if entry is None:  # SB3 does not require it: the algorithm's own {} is used
            return
        if not isinstance(entry, dict):
            raise PolicyLoadError(f"archive policy_kwargs should be an object, got {show(entry)}")
        self.readable = {k: v for k, v in entry.items() if not k.startswith(":")}
        self.blob = _blob(entry, "policy_kwargs")
        if self.blob is not _NO_BLOB and self.blob is not OPAQUE:
            if not isinstance(self.blob, dict) or not all(isinstance(k, str) for k in self.blob):
                raise PolicyLoadError(
                    f"archive policy_kwargs: the serialized blob holds {show(self.blob)}, not a "
                    "dict of keyword arguments; SB3 cannot use it either"
                )
            added = sorted(set(self.readable) - set(self.blob))
            if added:
                raise PolicyLoadError(
                    f"archive policy_kwargs: readable fields {added} are not in the serialized "
                    "blob SB3 reads; the readable fields were edited"
                )

    def get(self, key: str, check: Callable[[Any, str], Any]) -> Any:
        where = f"archive policy_kwargs.{key}"
        default = _SB3_DEFAULTS[self.family][key]
        if self.blob is _NO_BLOB:  # plain JSON: SB3 reads exactly this
            return check(self.readable[key], where) if key in self.readable else default
        if self.blob is OPAQUE:
            if key not in self.readable:
                raise PolicyLoadError(
                    f"{where}: the readable field is missing, and SB3 reads policy_kwargs from "
                    "its serialized blob, which would run code to build itself, so rlsec cannot "
                    f"read it; refused rather than defaulted to {default!r} (SB3 may use "
                    "another value)"
                )
            return check(self.readable[key], where)
        if key not in self.blob:
            return default  # SB3 finds no value either: its own default
        value = check(self.blob[key], f"{where} (serialized)")
        if key not in self.readable:
            raise PolicyLoadError(
                f"{where}: the readable field is missing, but the serialized blob SB3 reads "
                f"sets it to {value!r}; refused rather than defaulted to {default!r}"
            )
        shown = check(self.readable[key], where)
        if shown != value or type(shown) is not type(value):
            raise PolicyLoadError(
                f"{where}: the readable field says {shown!r} but the serialized blob SB3 reads "
                f"says {value!r}; the readable fields were edited"
            )
        return value


def _class_arg(value: Any, where: str) -> str:
    name = _class_name(value)
    if name is None:
        raise PolicyLoadError(f"{where}: expected a class, got {show(value)}")
    return name


def _bool_arg(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyLoadError(f"{where}: expected true or false, got {show(value)}")
    return value


def _float_arg(value: Any, where: str) -> float:
    return number(value, where)


def _activation(kw: _Kwargs) -> dict[str, Any]:
    name = kw.get("activation_fn", _class_arg)
    if name not in _ACTIVATIONS:
        raise PolicyLoadError(
            f"activation_fn {name!r} is not supported; expected one of {sorted(_ACTIVATIONS)}"
        )
    return dict(_ACTIVATIONS[name])


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
            if (m := re.fullmatch(re.escape(prefix) + r"\.(\d{1,6})\.weight", k))
        )
        return [f"{prefix}.{i}" for i in idx]

    def linear(self, prefix: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        w, b = self.state.get(f"{prefix}.weight"), self.state.get(f"{prefix}.bias")
        if (
            w is None
            or b is None
            or w.ndim != 2
            or b.ndim != 1
            or b.shape[0] != w.shape[0]
            or w.numel() == 0
        ):
            raise PolicyLoadError(f"policy.pth: expected a Linear layer at {prefix!r}")
        self.used.update((f"{prefix}.weight", f"{prefix}.bias"))
        return {"type": "linear", "in": int(w.shape[1]), "out": int(w.shape[0])}, {"w": w, "b": b}

    def ignore(self, pattern: str) -> None:
        self.used.update(k for k in self.state if re.match(pattern, k))

    def leftovers(self) -> list[str]:
        return sorted(set(self.state) - self.used)


def _block(
    keys: _Keys,
    prefixes: list[str],
    act: Callable[[], dict[str, Any]],
    *,
    act_after_last: bool,
) -> tuple[list[dict[str, Any]], list[dict[str, torch.Tensor]]]:
    layers: list[dict[str, Any]] = []
    params: list[dict[str, torch.Tensor]] = []
    for i, p in enumerate(prefixes):
        spec, t = keys.linear(p)
        layers.append(spec)
        params.append(t)
        if i < len(prefixes) - 1 or act_after_last:
            layers.append(act())
    return layers, params


def _unscale(space: gym.spaces.Box) -> dict[str, Any]:
    low = space.low.astype(np.float64).reshape(-1)
    high = space.high.astype(np.float64).reshape(-1)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))) or np.any(high <= low):
        raise PolicyLoadError(
            "a squashed (tanh) policy needs a bounded Box action space with low < high"
        )
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


def _input_spec(space: gym.Space[Any], kw: _Kwargs) -> dict[str, Any]:
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "one_hot", "n": int(space.n)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "multi_one_hot", "nvec": space.nvec.reshape(-1).tolist()}
    dim = int(np.prod(space.shape or ()))
    spec: dict[str, Any] = {"type": "float", "dim": dim}
    # SB3's preprocess_obs divides image observations by 255 when normalize_images is set.
    if _is_image(space) and kw.get("normalize_images", _bool_arg):
        spec["scale"] = 1.0 / 255.0
    return spec


def _rebuild(
    state: dict[str, torch.Tensor],
    data: dict[str, Any],
    obs_space: gym.Space[Any],
    act_space: gym.Space[Any],
) -> tuple[str, dict[str, Any], list[dict[str, torch.Tensor]]]:
    """Return (algo, network spec, Linear params in the network's order)."""
    family = _policy_family(data)
    kw = _Kwargs(data, family)
    fe = kw.get("features_extractor_class", _class_arg)
    if fe != _FLATTEN:
        raise PolicyLoadError(
            f"features extractor {fe!r} is not supported; only MLP policies (FlattenExtractor)"
        )
    keys = _Keys(state)
    found = next((f for f, k in _FAMILY_KEYS.items() if keys.has(k)), None)
    if found is None:
        raise PolicyLoadError(
            "policy.pth is not an SB3 MLP policy rlsec recognises (expected keys such as "
            f"'action_net.weight', 'q_net.q_net.0.weight', 'actor.mu.weight'); got "
            f"{sorted(state)[:8]}"
        )
    if found == "td3" and keys.has(_FAMILY_KEYS["sac"]):
        found = "sac"
    if found != family:
        raise PolicyLoadError(
            f"archive data names a {family} policy class, but policy.pth holds the tensors of "
            f"a {found} policy ({_FAMILY_KEYS[found]!r})"
        )
    net: dict[str, Any] = {"input": _input_spec(obs_space, kw)}
    params: list[dict[str, torch.Tensor]] = []
    activation: list[dict[str, Any]] = []

    def act() -> dict[str, Any]:  # read only where the network applies one
        if not activation:
            activation.append(_activation(kw))
        return dict(activation[0])

    if family == "actor-critic":  # PPO / A2C
        algo = "ppo" if "clip_range" in data else "a2c"
        pol, p1 = _block(
            keys, [*keys.chain("mlp_extractor.policy_net"), "action_net"], act, act_after_last=False
        )
        val, p2 = _block(
            keys, [*keys.chain("mlp_extractor.value_net"), "value_net"], act, act_after_last=False
        )
        if isinstance(act_space, gym.spaces.Box):
            net["output"] = "action"
            if kw.get("squash_output", _bool_arg):
                use_sde = data.get("use_sde", False)  # SB3's default when data has none
                if use_sde is not True:
                    raise PolicyLoadError(
                        "archive policy_kwargs.squash_output is true but use_sde is "
                        f"{show(use_sde)}; SB3 builds squashed policies only with gSDE and "
                        "refuses this archive too"
                    )
                pol += [{"type": "tanh"}, _unscale(act_space)]
        else:
            net["output"] = "logits"
        net["policy"], net["value"] = pol, val
        params = p1 + p2
        keys.ignore(r"^log_std$")
    elif family == "dqn":
        algo = "dqn"
        pol, params = _block(keys, keys.chain("q_net.q_net"), act, act_after_last=False)
        net["policy"], net["output"] = pol, "q_values"
        keys.ignore(r"^q_net_target\.")
    else:  # SAC, TD3
        if not isinstance(act_space, gym.spaces.Box):
            raise PolicyLoadError(f"SAC/TD3 need a Box action space, got {act_space}")
        if family == "sac":
            algo = "sac"
            pol, p1 = _block(keys, keys.chain("actor.latent_pi"), act, act_after_last=True)
            if keys.has("actor.mu.0.weight"):  # gSDE: Sequential(Linear, Hardtanh(clip_mean))
                spec, t = keys.linear("actor.mu.0")
                clip = kw.get("clip_mean", _float_arg)
                if not clip > 0:
                    raise PolicyLoadError(
                        f"archive policy_kwargs.clip_mean is {clip}, but policy.pth holds the "
                        "clipped mean layer SB3 builds only for clip_mean > 0"
                    )
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
    # Before any network is built from these shapes: every tensor must be backed by exactly
    # its own bytes (no stride-0 expansion, no view into a shared storage), and the whole
    # within the network bounds.
    total = 0
    for name, t in state.items():
        check_plain_tensor(t, f"policy.pth: tensor {name!r}")
        if t.numel() > MAX_TENSOR_ELEMENTS:
            raise PolicyLoadError(
                f"policy.pth: tensor {name!r} has {t.numel()} elements; at most "
                f"{MAX_TENSOR_ELEMENTS} allowed"
            )
        total += t.numel()
    if total > 4 * MAX_PARAMS:  # actor, critics and their targets
        raise PolicyLoadError(
            f"policy.pth holds {total} elements; at most {4 * MAX_PARAMS} allowed"
        )
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
        archive: path to the ``.zip`` or its bytes (at most 1 GiB either way).
        env_id: the environment the policy was trained on (SB3 archives do not record it).
        env_spaces: the environment's (observation, action) spaces, used to check the archive's
            spaces and to fill in observation Box bounds the archive only stores summarised.

    Raises:
        UnsafeArtifact: the archive tries something unsafe; nothing in it was executed.
        PolicyLoadError: the archive is corrupt, holds an unsupported policy, or lacks a
            readable field that SB3 would read from a blob.
        SpaceMismatch: ``env_spaces`` disagree with the archive.
    """
    if isinstance(archive, (bytes, bytearray, memoryview)):
        raw, where = bytes(archive), source or "<bytes>"
        if len(raw) > _MAX_ARCHIVE_BYTES:
            raise UnsafeArtifact(
                f"{where} is {len(raw)} bytes; an SB3 archive may be at most "
                f"{_MAX_ARCHIVE_BYTES} bytes"
            )
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
    data = parse_json(members["data"], "archive member 'data'", SB3_DATA_LIMITS)
    if not isinstance(data, dict):
        raise PolicyLoadError("archive member 'data' should be a JSON object")
    obs_fb, act_fb = env_spaces if env_spaces is not None else (None, None)
    obs_space = _space(data.get("observation_space"), "observation_space", obs_fb)
    act_space = _space(data.get("action_space"), "action_space", act_fb)
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
    held = sum(t["w"].numel() + t["b"].numel() for t in params)
    net = PolicyNetwork(spec, action_dim=act_dim, max_params=held)
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
