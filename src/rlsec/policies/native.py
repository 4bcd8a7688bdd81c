"""The native policy format: a directory with ``spec.json`` and ``weights.safetensors``.

``spec.json`` holds the spaces, the declarative network (see :mod:`rlsec.policies.network`),
the environment id, the algorithm, training provenance, the clean return measured at export
and clean observation statistics, and the SHA-256 of the weights file. Loading reads each file
once, checks the weights' digest against the spec on the very bytes it then parses, and
rejects any tensor that is missing, extra or of the wrong shape. The policy's digest is the
SHA-256 of ``spec.json``, which commits to the weights through their digest.

Both files are untrusted: ``spec.json`` and the safetensors header are decoded by the bounded
reader of :mod:`rlsec.policies._untrusted`, every field (spaces, network, clean return,
observation statistics) is checked for its type and range, and the network's size is bounded
from the spec and from the header before anything is allocated. Any malformed input raises a
:class:`PolicyLoadError` naming the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from rlsec.core import Finding, Severity, Surface
from rlsec.errors import PolicyLoadError
from rlsec.policies._untrusted import (
    SPEC_LIMITS,
    integer,
    number,
    numbers,
    parse_json,
    show,
    string,
)
from rlsec.policies.base import PolicyInfo, TorchPolicy
from rlsec.policies.network import (
    MAX_PARAMS,
    MAX_TENSOR_ELEMENTS,
    MAX_WIDTH,
    PolicyNetwork,
    check_network_spec,
)
from rlsec.policies.spaces import space_from_json, space_to_json

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SPEC_FILE",
    "WEIGHTS_FILE",
    "check_clean_return",
    "check_observation_stats",
    "check_plain_tensor",
    "checked_std",
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
    spec = parse_json(spec_bytes, spec_at, SPEC_LIMITS)
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        got = spec.get("format") if isinstance(spec, dict) else type(spec).__name__
        raise PolicyLoadError(f"{spec_at}: expected format {FORMAT!r}, got {show(got)}")
    if spec.get("format_version") != FORMAT_VERSION or isinstance(spec["format_version"], bool):
        raise PolicyLoadError(
            f"{spec_at}: expected format_version {FORMAT_VERSION}, "
            f"got {show(spec.get('format_version'))}"
        )
    obs_space = space_from_json(spec.get("observation_space"), f"{spec_at}: observation_space")
    act_space = space_from_json(spec.get("action_space"), f"{spec_at}: action_space")
    info_fields = _info_fields(spec, obs_space, spec_at)
    weights_meta = spec.get("weights")
    if not isinstance(weights_meta, dict):
        raise PolicyLoadError(
            f"{spec_at}: 'weights' must be an object with a sha256, got {show(weights_meta)}"
        )
    want_sha = weights_meta.get("sha256")
    got_sha = hashlib.sha256(weights).hexdigest()
    if got_sha != want_sha:
        raise PolicyLoadError(
            f"{weights_at}: expected SHA-256 {show(want_sha)} (from {SPEC_FILE}), got {got_sha}"
        )
    # The network the spec describes is checked (and its size bounded) before anything is
    # allocated, and so are the tensors the weights file declares, from its header.
    held = _safetensors_elements(weights, weights_at)
    check_network_spec(
        spec.get("network"),
        action_dim=_action_dim(act_space),
        # the spec may not ask for far more parameters than the weights hold (with slack, so
        # that a merely missing tensor is reported by name below)
        max_params=4 * held + 2**20,
    )
    try:
        tensors = safetensors.torch.load(weights)
    except Exception as exc:  # safetensors raises its own error types for corrupt data
        raise PolicyLoadError(f"{weights_at} is not a valid safetensors file: {exc}") from None
    net = PolicyNetwork(
        spec["network"], action_dim=_action_dim(act_space), max_params=4 * held + 2**20
    )
    _load_state(net, tensors, weights_at)
    info = PolicyInfo(
        source=source or where,
        sha256=hashlib.sha256(spec_bytes).hexdigest(),
        format=FORMAT,
        **info_fields,
    )
    return TorchPolicy.from_network(obs_space, act_space, net, info)


_SAFETENSORS_DTYPES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}


def _safetensors_elements(weights: bytes, where: str) -> int:
    """Elements the weights file declares, read from its header before any tensor exists:
    floating-point tensors only, each within the network bounds, packed exactly (the data
    offsets tile the buffer with no gap, overlap or slack)."""
    if len(weights) < 8:
        raise PolicyLoadError(f"{where} is not a valid safetensors file: {len(weights)} bytes")
    n = int.from_bytes(weights[:8], "little")
    if n > min(len(weights) - 8, 2**24):
        raise PolicyLoadError(
            f"{where} is not a valid safetensors file: its header declares {n} bytes"
        )
    header = parse_json(weights[8 : 8 + n].rstrip(b" "), f"{where} header", SPEC_LIMITS)
    if not isinstance(header, dict):
        raise PolicyLoadError(f"{where} is not a valid safetensors file: header {show(header)}")
    total, spans = 0, []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        at = f"{where}: tensor {name!r}"
        if not isinstance(entry, dict) or entry.get("dtype") not in _SAFETENSORS_DTYPES:
            raise PolicyLoadError(
                f"{at}: expected a floating-point tensor ({sorted(_SAFETENSORS_DTYPES)}), got "
                f"{show(entry.get('dtype') if isinstance(entry, dict) else entry)}"
            )
        dims = entry.get("shape")
        if not isinstance(dims, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_WIDTH for d in dims
        ):
            raise PolicyLoadError(f"{at}: expected a shape of integers, got {show(dims)}")
        numel = math.prod(dims)
        if numel > MAX_TENSOR_ELEMENTS:
            raise PolicyLoadError(
                f"{at} declares {numel} elements; at most {MAX_TENSOR_ELEMENTS} allowed"
            )
        offsets = entry.get("data_offsets")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or offsets[1] - offsets[0] != numel * _SAFETENSORS_DTYPES[entry["dtype"]]
        ):
            raise PolicyLoadError(
                f"{at}: data offsets {show(offsets)} do not hold exactly {numel} elements"
            )
        spans.append((offsets[0], offsets[1]))
        total += numel
    if total > MAX_PARAMS:
        raise PolicyLoadError(f"{where} declares {total} elements; at most {MAX_PARAMS} allowed")
    end = 0
    for lo, hi in sorted(spans):
        if lo != end:
            raise PolicyLoadError(f"{where}: tensor data overlaps or leaves gaps at byte {lo}")
        end = hi
    if end != len(weights) - 8 - n:
        raise PolicyLoadError(
            f"{where}: tensors hold {end} bytes but the file carries {len(weights) - 8 - n}"
        )
    return total


def _info_fields(spec: dict[str, Any], obs_space: Any, where: str) -> dict[str, Any]:
    """The descriptive fields of a spec, each checked for its type."""
    out: dict[str, Any] = {}
    for key in ("env_id", "algo"):
        value = spec.get(key)
        out[key] = None if value is None else string(value, f"{where}: {key}", max_len=256)
    out["clean_return"] = check_clean_return(spec.get("clean_return"), f"{where}: clean_return")
    out["observation_stats"] = check_observation_stats(
        spec.get("observation_stats"), obs_space, f"{where}: observation_stats"
    )
    provenance = spec.get("provenance")
    if provenance is not None and not isinstance(provenance, dict):
        raise PolicyLoadError(f"{where}: provenance must be an object, got {show(provenance)}")
    out["provenance"] = provenance or {}
    return out


def check_clean_return(value: Any, where: str = "clean_return") -> dict[str, Any] | None:
    """``None``, or the clean return a spec records: ``mean`` a finite number (required);
    ``ci95`` null or two finite numbers, low first; ``std``, ``mean_length`` finite numbers
    >= 0; ``episodes`` an integer >= 1 and ``seed`` an integer, when present.

    Raises:
        PolicyLoadError: naming the field, what was expected and what was received.

    Example:
        >>> check_clean_return({"mean": "500"})
        Traceback (most recent call last):
        ...
        rlsec.errors.PolicyLoadError: clean_return.mean: expected a number, got '500'
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PolicyLoadError(f"{where}: expected an object or null, got {show(value)}")
    number(value.get("mean"), f"{where}.mean")
    ci = value.get("ci95")
    if ci is not None:
        lo, hi = numbers(ci, f"{where}.ci95", size=2)
        if lo > hi:
            raise PolicyLoadError(f"{where}.ci95: expected low <= high, got {show(ci)}")
    for key in ("std", "mean_length"):
        if key in value:
            number(value[key], f"{where}.{key}", lo=0.0)
    if "episodes" in value:
        integer(value["episodes"], f"{where}.episodes", lo=1)
    if "seed" in value:
        integer(value["seed"], f"{where}.seed", lo=-(2**63), hi=2**64)
    return value


def check_observation_stats(
    value: Any, observation_space: Any, where: str = "observation_stats"
) -> dict[str, Any] | None:
    """``None``, or clean observation statistics for a Box observation space: ``std`` (what
    ``--eps-unit std`` measures ε in; required) one finite number >= 0 per feature, ``mean``
    one finite number per feature when present, ``observations`` and ``episodes`` integers
    >= 1 and ``seed`` an integer when present. Whether the numbers are *true* is checked
    against a calibration rollout by the campaign (:mod:`rlsec.evaluate.campaign`).

    Raises:
        PolicyLoadError: naming the field, what was expected and what was received.
    """
    if value is None:
        return None
    import gymnasium as gym
    import numpy as np

    if not isinstance(observation_space, gym.spaces.Box):
        raise PolicyLoadError(
            f"{where}: statistics describe Box observations only; this space has none, got "
            f"{show(value)}"
        )
    if not isinstance(value, dict):
        raise PolicyLoadError(f"{where}: expected an object or null, got {show(value)}")
    dim = int(np.prod(observation_space.shape))
    numbers(value.get("std"), f"{where}.std", size=dim, lo=0.0)
    if "mean" in value:
        numbers(value["mean"], f"{where}.mean", size=dim)
    for key in ("observations", "episodes"):
        if key in value:
            integer(value[key], f"{where}.{key}", lo=1)
    if "seed" in value:
        integer(value["seed"], f"{where}.seed", lo=-(2**63), hi=2**64)
    return value


def check_plain_tensor(t: torch.Tensor, where: str) -> None:
    """Refuse a tensor that is not plain contiguous storage of exactly its elements: a
    stride-0 expansion lets a few bytes on disk stand for a 16,000 x 16,000 matrix, and a view
    into a larger or shared storage hides what the file really carries.

    Raises:
        PolicyLoadError: naming the tensor, its strides and its storage size.
    """
    storage = t.untyped_storage().nbytes()
    if not (
        t.is_contiguous() and t.storage_offset() == 0 and storage == t.numel() * t.element_size()
    ):
        raise PolicyLoadError(
            f"{where}: expected plain contiguous storage of its {t.numel()} elements "
            f"({t.numel() * t.element_size()} bytes), got shape {tuple(t.shape)} with strides "
            f"{t.stride()}, offset {t.storage_offset()} and {storage} bytes of storage "
            "(expanded, strided or shared tensors are refused)"
        )


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
        check_plain_tensor(t, f"{where}: tensor {name!r}")
        if not bool(torch.isfinite(t).all()):
            raise PolicyLoadError(f"{where}: tensor {name!r} holds NaN or infinite values")
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


def checked_std(
    stats: Any,
    observation_space: Any,
    measured: Any,
    against: str,
    *,
    instead: str,
    evidence: dict[str, Any] | None = None,
    findings: list[dict[str, Any]] | None = None,
) -> tuple[Any, str | None]:
    """The per-feature std that ``std`` units mean, given a policy's recorded ``stats`` and
    the std ``measured`` on clean episodes (``against`` names them, "the calibration rollout
    (...)"): the recorded std when it is well formed and lies within
    :data:`rlsec.stats.STD_TOLERANCE` of the measured one on every feature, else the
    measured one. The artefact under test does not choose its own yardstick.

    Returns ``(std, None)`` when the recorded std is used, else ``(measured, problem)``, what
    is wrong, and appends to ``findings`` the ``eps-scale-check`` finding (MEDIUM) whose
    message ends in ``instead`` ("ε in std units uses the rollout's std instead").
    """
    import numpy as np

    from rlsec.stats import STD_TOLERANCE, std_disagreement

    evidence = {"tolerance": STD_TOLERANCE, "measured_std": measured.tolist(), **(evidence or {})}
    try:
        check_observation_stats(stats, observation_space)
    except PolicyLoadError as exc:
        problem = f"the policy's recorded observation statistics are malformed ({exc})"
    else:
        declared = np.asarray(stats["std"], dtype=np.float64).reshape(-1)
        bad = std_disagreement(declared, measured)
        if not bad:
            return declared, None
        evidence.update(declared_std=declared.tolist(), features=bad)
        problem = (
            f"the policy's recorded clean observation std disagrees with {against} beyond a "
            f"factor of {STD_TOLERANCE:g} on features {bad[:20]}"
        )
    if findings is not None:
        findings.append(
            Finding(
                severity=Severity.MEDIUM,
                surface=Surface.OBSERVATION,
                message=f"{problem}; {instead}",
                detector="eps-scale-check",
                evidence=evidence,
            ).to_dict()
        )
    return measured, problem
