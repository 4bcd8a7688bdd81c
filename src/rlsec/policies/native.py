"""The native policy format: a directory with ``spec.json`` and ``weights.safetensors``.

``spec.json`` holds the spaces, the declarative network (see :mod:`rlsec.policies.network`),
the environment id, the algorithm, training provenance, the clean return measured at export
and clean observation statistics, and the SHA-256 of the weights file. Loading reads each file
once, checks the weights' digest against the spec on the very bytes it then parses, and
rejects any tensor that is missing, extra or of the wrong shape. The policy's digest is the
SHA-256 of ``spec.json``, which commits to the weights through their digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from rlsec.errors import PolicyLoadError
from rlsec.policies.base import PolicyInfo, TorchPolicy
from rlsec.policies.network import PolicyNetwork
from rlsec.policies.spaces import space_from_json, space_to_json

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SPEC_FILE",
    "WEIGHTS_FILE",
    "load_native",
    "load_native_bytes",
    "save_policy",
    "write_policy_dir",
]

FORMAT = "rlsec.policy"
FORMAT_VERSION = 1
SPEC_FILE = "spec.json"
WEIGHTS_FILE = "weights.safetensors"
_MAX_SPEC_BYTES = 16 * 2**20
_MAX_WEIGHTS_BYTES = 2 * 2**30


def _read_capped(path: Path, cap: int, what: str) -> bytes:
    """A regular file's bytes (no link, FIFO or device: refused before reading), capped."""
    from rlsec._files import read_regular

    return read_regular(path, max_bytes=cap, what=what, error=PolicyLoadError)


def _action_dim(space: Any) -> int:
    import numpy as np

    return int(np.prod(space.shape)) if space.shape else 1


def load_native(directory: str | os.PathLike[str], *, source: str | None = None) -> TorchPolicy:
    """Load a policy directory written by :func:`save_policy`.

    Raises:
        PolicyLoadError: a file is missing, malformed, of the wrong digest or shape.
    """
    d = Path(directory)
    if not d.is_dir():
        raise PolicyLoadError(f"expected a policy directory with {SPEC_FILE}, got {d}")
    spec_bytes = _read_capped(d / SPEC_FILE, _MAX_SPEC_BYTES, SPEC_FILE)
    weights = _read_capped(d / WEIGHTS_FILE, _MAX_WEIGHTS_BYTES, WEIGHTS_FILE)
    return load_native_bytes(spec_bytes, weights, where=str(d), source=source)


def load_native_bytes(
    spec_bytes: bytes, weights: bytes, *, where: str, source: str | None = None
) -> TorchPolicy:
    """Build a policy from the two files of a policy directory, already read into memory
    (the registry loads exactly the bytes whose digests it verified). ``where`` names them
    in errors.

    Raises:
        PolicyLoadError: a file is oversize, malformed, of the wrong digest or shape.
    """
    if len(spec_bytes) > _MAX_SPEC_BYTES or len(weights) > _MAX_WEIGHTS_BYTES:
        raise PolicyLoadError(
            f"{where}: {SPEC_FILE} may be {_MAX_SPEC_BYTES} bytes and {WEIGHTS_FILE} "
            f"{_MAX_WEIGHTS_BYTES}; got {len(spec_bytes)} and {len(weights)}"
        )
    spec_at, weights_at = f"{where}/{SPEC_FILE}", f"{where}/{WEIGHTS_FILE}"
    try:
        spec = json.loads(spec_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PolicyLoadError(f"{spec_at} is not valid JSON: {exc}") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        got = spec.get("format") if isinstance(spec, dict) else type(spec).__name__
        raise PolicyLoadError(f"{spec_at}: expected format {FORMAT!r}, got {got!r}")
    if spec.get("format_version") != FORMAT_VERSION:
        raise PolicyLoadError(
            f"{spec_at}: expected format_version {FORMAT_VERSION}, "
            f"got {spec.get('format_version')!r}"
        )
    obs_space = space_from_json(spec.get("observation_space"))
    act_space = space_from_json(spec.get("action_space"))
    weights_meta = spec.get("weights")
    if not isinstance(weights_meta, dict):
        raise PolicyLoadError(
            f"{spec_at}: 'weights' must be an object with a sha256, got {weights_meta!r:.80}"
        )
    want_sha = weights_meta.get("sha256")
    got_sha = hashlib.sha256(weights).hexdigest()
    if got_sha != want_sha:
        raise PolicyLoadError(
            f"{weights_at}: expected SHA-256 {want_sha} (from {SPEC_FILE}), got {got_sha}"
        )
    try:
        tensors = safetensors.torch.load(weights)
    except Exception as exc:  # safetensors raises its own error types for corrupt data
        raise PolicyLoadError(f"{weights_at} is not a valid safetensors file: {exc}") from None
    # The spec may not ask for far more parameters than the weights hold, so a hostile spec
    # cannot make us allocate terabytes before the shapes are compared (with slack, so that a
    # merely missing tensor is reported by name below).
    held = sum(t.numel() for t in tensors.values())
    net = PolicyNetwork(
        spec.get("network"),  # type: ignore[arg-type]  # PolicyNetwork checks it
        action_dim=_action_dim(act_space),
        max_params=4 * held + 2**20,
    )
    _load_state(net, tensors, weights_at)
    info = PolicyInfo(
        source=source or where,
        sha256=hashlib.sha256(spec_bytes).hexdigest(),
        format=FORMAT,
        env_id=spec.get("env_id"),
        algo=spec.get("algo"),
        clean_return=spec.get("clean_return"),
        observation_stats=spec.get("observation_stats"),
        provenance=spec.get("provenance") or {},
    )
    return TorchPolicy.from_network(obs_space, act_space, net, info)


def _load_state(net: PolicyNetwork, tensors: dict[str, torch.Tensor], where: str) -> None:
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise PolicyLoadError(
            f"{where}: tensors do not match the network spec; missing {missing}, unexpected {extra}"
        )
    for name, t in tensors.items():
        if tuple(t.shape) != tuple(expected[name].shape):
            raise PolicyLoadError(
                f"{where}: tensor {name!r} expected shape {tuple(expected[name].shape)}, "
                f"got {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise PolicyLoadError(f"{where}: tensor {name!r} must be floating point, got {t.dtype}")
    net.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()}, strict=True)


def _network_of(policy: TorchPolicy) -> PolicyNetwork:
    if policy.network is None:
        raise PolicyLoadError(
            "this policy has no declarative network, so it cannot be saved natively; adapt an "
            "nn.Sequential of Linear layers and activations with from_torch, or build it from a "
            "network spec (rlsec.policies.network)"
        )
    return policy.network


def write_policy_dir(target: Path, weights: bytes, spec_bytes: bytes) -> None:
    """Write a policy directory whole or not at all: into a temporary sibling, then renamed
    into place (an existing directory is swapped out and removed only after the rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a policy dir is ordinary data
        (tmp / WEIGHTS_FILE).write_bytes(weights)
        (tmp / SPEC_FILE).write_bytes(spec_bytes)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)  # put the previous version back
                raise
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_policy(
    policy: TorchPolicy,
    directory: str | os.PathLike[str],
    *,
    env_id: str | None = None,
    algo: str | None = None,
    provenance: dict[str, Any] | None = None,
    clean_return: dict[str, Any] | None = None,
    observation_stats: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``policy`` as a native policy directory; nothing is half-written on failure.

    The files are written to a temporary sibling directory and renamed into place.

    Raises:
        PolicyLoadError: the policy's network cannot be described by a spec.
        FileExistsError: ``directory`` exists and ``overwrite`` is false.
    """
    target = Path(directory)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
    net = _network_of(policy)
    tensors = {k: v.detach().contiguous().to(torch.float32) for k, v in net.state_dict().items()}
    weights = safetensors.torch.save(tensors)
    spec = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "observation_space": space_to_json(policy.observation_space),
        "action_space": space_to_json(policy.action_space),
        "network": net.spec,
        "env_id": env_id if env_id is not None else policy.info.env_id,
        "algo": algo if algo is not None else policy.info.algo,
        "clean_return": clean_return if clean_return is not None else policy.info.clean_return,
        "observation_stats": (
            observation_stats if observation_stats is not None else policy.info.observation_stats
        ),
        "provenance": provenance if provenance is not None else policy.info.provenance,
        "weights": {"file": WEIGHTS_FILE, "sha256": hashlib.sha256(weights).hexdigest()},
    }
    spec_bytes = (json.dumps(spec, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
    write_policy_dir(target, weights, spec_bytes)
    return target
