"""The native policy format: ``save_policy`` / ``load_native`` and ``from_torch``."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import rlsec.policies.native as native
from rlsec.errors import PolicyLoadError
from rlsec.policies import from_torch, load_native, save_policy
from rlsec.policies.base import TorchPolicy
from rlsec.policies.network import PolicyNetwork

SPEC = "spec.json"
WEIGHTS = "weights.safetensors"


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- helpers -------------------------------------------------------------------------------------

CARTPOLE_OBS = gym.spaces.Box(
    low=np.array([-4.8, -np.inf, -0.42, -np.inf], dtype=np.float32),
    high=np.array([4.8, np.inf, 0.42, np.inf], dtype=np.float32),
    dtype=np.float32,
)
INFO = {
    "env_id": "CartPole-v1",
    "algo": "ppo",
    "clean_return": {"mean": 487.5, "std": 12.25, "episodes": 20},
    "observation_stats": {"mean": [0.0, 0.1, -0.01, 0.2], "std": [0.5, 0.6, 0.05, 0.7]},
}


def discrete_policy(seed: int = 0) -> TorchPolicy:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    return from_torch(net, CARTPOLE_OBS, gym.spaces.Discrete(2))


def continuous_policy_with_heads(seed: int = 0) -> TorchPolicy:
    """A SAC-like network: squashed actor, V head and a Q(s, a) head on rescaled actions."""
    torch.manual_seed(seed)
    spec = {
        "input": {"type": "float", "dim": 3},
        "policy": [
            {"type": "linear", "in": 3, "out": 8},
            {"type": "elu"},
            {"type": "linear", "in": 8, "out": 2},
            {"type": "tanh"},
            {"type": "affine", "scale": [2.0, 0.5], "shift": [0.0, 0.5]},
        ],
        "value": [
            {"type": "linear", "in": 3, "out": 4},
            {"type": "leaky_relu", "negative_slope": 0.2},
            {"type": "linear", "in": 4, "out": 1},
        ],
        "q": [
            {"type": "linear", "in": 5, "out": 6},
            {"type": "silu"},
            {"type": "linear", "in": 6, "out": 1},
        ],
        "q_takes_action": True,
        "q_action_affine": {"scale": [0.5, 2.0], "shift": [0.0, -1.0]},
        "output": "action",
    }
    net = PolicyNetwork(spec, action_dim=2)
    obs_space = gym.spaces.Box(-8.0, 8.0, (3,), np.float32)
    act_space = gym.spaces.Box(
        np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32), dtype=np.float32
    )
    return TorchPolicy(
        obs_space,
        act_space,
        net.actor(),
        "action",
        value=net.value_head(),
        q=net.q_head(),
        network=net,
    )


def sample(space: gym.Space[Any], n: int = 128, seed: int = 0) -> np.ndarray:
    space.seed(seed)
    return np.stack([np.asarray(space.sample()) for _ in range(n)])


def saved(tmp_path: pathlib.Path, policy: TorchPolicy | None = None, **kw: Any) -> pathlib.Path:
    return save_policy(policy or discrete_policy(), tmp_path / "policy", **{**INFO, **kw})


def snapshot(d: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def edit_spec(d: pathlib.Path, edit: Callable[[dict[str, Any]], None]) -> None:
    spec = json.loads((d / SPEC).read_text())
    edit(spec)
    (d / SPEC).write_text(json.dumps(spec))


def rewrite_weights(d: pathlib.Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Change the tensors and fix the digest in spec.json, as a careful forger would."""
    tensors = safetensors.torch.load((d / WEIGHTS).read_bytes())
    edit(tensors)
    blob = safetensors.torch.save(tensors)
    (d / WEIGHTS).write_bytes(blob)
    edit_spec(d, lambda s: s["weights"].update(sha256=hashlib.sha256(blob).hexdigest()))


def load_error(d: pathlib.Path) -> str:
    with pytest.raises(PolicyLoadError) as exc_info:
        load_native(d)
    assert type(exc_info.value) is PolicyLoadError
    return str(exc_info.value)


# -- round trips ---------------------------------------------------------------------------------


def test_round_trip_preserves_actions_spaces_and_info(tmp_path: pathlib.Path) -> None:
    policy = discrete_policy()
    d = saved(tmp_path, policy, provenance={"trained_by": "test", "steps": 12})
    assert sorted(p.name for p in d.iterdir()) == [SPEC, WEIGHTS]
    loaded = load_native(d)

    obs = sample(CARTPOLE_OBS)
    np.testing.assert_array_equal(loaded.act(obs), policy.act(obs))
    assert loaded.observation_space == policy.observation_space
    assert loaded.action_space == policy.action_space
    assert loaded.output == "logits"
    assert loaded.info.env_id == INFO["env_id"]
    assert loaded.info.algo == INFO["algo"]
    assert loaded.info.clean_return == INFO["clean_return"]
    assert loaded.info.observation_stats == INFO["observation_stats"]
    assert loaded.info.provenance == {"trained_by": "test", "steps": 12}
    assert loaded.info.format == "rlsec.policy"
    assert loaded.info.source == str(d)
    assert loaded.info.sha256 == hashlib.sha256((d / SPEC).read_bytes()).hexdigest()
    spec = json.loads((d / SPEC).read_text())
    assert spec["weights"]["sha256"] == hashlib.sha256((d / WEIGHTS).read_bytes()).hexdigest()


def test_round_trip_preserves_value_and_q_heads(tmp_path: pathlib.Path) -> None:
    policy = continuous_policy_with_heads()
    loaded = load_native(save_policy(policy, tmp_path / "sac"))
    obs = sample(policy.observation_space)
    act = sample(policy.action_space, seed=1)
    np.testing.assert_array_equal(loaded.act(obs), policy.act(obs))
    assert loaded.action_space == policy.action_space
    o, a = torch.from_numpy(obs), torch.from_numpy(act)
    v0, v1 = policy.value_module(), loaded.value_module()
    q0, q1 = policy.q_module(), loaded.q_module()
    assert v0 is not None
    assert v1 is not None
    assert q0 is not None
    assert q1 is not None
    with torch.no_grad():
        assert torch.equal(v1(o), v0(o))
        assert torch.equal(q1(o, a), q0(o, a))
    assert q1(o, a).shape == (len(obs),)


def test_saving_twice_gives_the_same_digest(tmp_path: pathlib.Path) -> None:
    policy = discrete_policy()
    a = load_native(save_policy(policy, tmp_path / "a", **INFO))
    b = load_native(save_policy(policy, tmp_path / "b", **INFO))
    assert a.info.sha256 == b.info.sha256
    c = load_native(save_policy(policy, tmp_path / "c", **{**INFO, "algo": "a2c"}))
    assert c.info.sha256 != a.info.sha256


def test_loaded_policy_can_be_saved_again_identically(tmp_path: pathlib.Path) -> None:
    first = saved(tmp_path)
    second = save_policy(load_native(first), tmp_path / "again")
    assert snapshot(second) == snapshot(first)


# -- tampering -----------------------------------------------------------------------------------


def test_flipped_weight_byte_fails_the_sha256_check(tmp_path: pathlib.Path) -> None:
    d = saved(tmp_path)
    blob = bytearray((d / WEIGHTS).read_bytes())
    blob[len(blob) - 3] ^= 0x01
    (d / WEIGHTS).write_bytes(bytes(blob))
    msg = load_error(d)
    assert "SHA-256" in msg
    assert hashlib.sha256(bytes(blob)).hexdigest() in msg


def test_unknown_layer_type_is_refused(tmp_path: pathlib.Path) -> None:
    d = saved(tmp_path)
    edit_spec(d, lambda s: s["network"]["policy"].insert(1, {"type": "python_eval"}))
    msg = load_error(d)
    assert "layer type must be one of" in msg
    assert "'python_eval'" in msg


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        pytest.param(lambda t: t.pop("policy.2.bias"), "policy.2.bias", id="missing"),
        pytest.param(
            lambda t: t.update({"policy.9.backdoor": torch.zeros(3)}),
            "policy.9.backdoor",
            id="extra",
        ),
        pytest.param(
            lambda t: t.update({"policy.0.weight": torch.zeros(16, 5)}),
            "policy.0.weight",
            id="wrong-shape",
        ),
        pytest.param(
            lambda t: t.update({"policy.0.bias": torch.zeros(16, dtype=torch.int32)}),
            "policy.0.bias",
            id="integer-tensor",
        ),
    ],
)
def test_missing_extra_or_misshapen_tensor_is_named(
    tmp_path: pathlib.Path, edit: Callable[[dict[str, torch.Tensor]], None], named: str
) -> None:
    d = saved(tmp_path)
    rewrite_weights(d, edit)
    assert repr(named) in load_error(d)


def test_weights_that_are_not_safetensors_are_refused(tmp_path: pathlib.Path) -> None:
    d = saved(tmp_path)
    blob = b"\x80\x04not safetensors at all"
    (d / WEIGHTS).write_bytes(blob)
    edit_spec(d, lambda s: s["weights"].update(sha256=hashlib.sha256(blob).hexdigest()))
    assert "not a valid safetensors file" in load_error(d)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param(
            lambda s: s.update(format="pickle"),
            "expected format 'rlsec.policy', got 'pickle'",
            id="format",
        ),
        pytest.param(
            lambda s: s.update(format_version=2),
            "expected format_version 1, got 2",
            id="version",
        ),
        pytest.param(
            lambda s: s.update(format_version="1"),
            "expected format_version 1, got '1'",
            id="version-as-string",
        ),
        pytest.param(
            lambda s: s.pop("format_version"),
            "expected format_version 1, got None",
            id="no-version",
        ),
        pytest.param(
            lambda s: s.update(action_space={"type": "tuple"}),
            "space type must be box, discrete, multi_discrete or multi_binary, got 'tuple'",
            id="space-type",
        ),
        pytest.param(
            lambda s: s["network"].update(output="probabilities"),
            "network output must be one of",
            id="network-output",
        ),
    ],
)
def test_wrong_format_or_version_is_refused(
    tmp_path: pathlib.Path, edit: Callable[[dict[str, Any]], None], expected: str
) -> None:
    d = saved(tmp_path)
    edit_spec(d, edit)
    assert expected in load_error(d)


def test_missing_files_and_bad_json_are_policy_load_errors(tmp_path: pathlib.Path) -> None:
    assert "expected a policy directory" in load_error(tmp_path / "nowhere")
    d = saved(tmp_path)
    (d / SPEC).write_text("{not json")
    assert "is not valid JSON" in load_error(d)
    (d / WEIGHTS).unlink()
    assert "weights.safetensors not found" in load_error(d)
    (d / SPEC).unlink()
    assert "spec.json not found" in load_error(d)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda s: s.update(weights="sha256:abc"), id="weights-not-object"),
        pytest.param(lambda s: s["network"].update(input=[4]), id="input-not-object"),
    ],
)
def test_malformed_spec_objects_are_policy_load_errors(
    tmp_path: pathlib.Path, edit: Callable[[dict[str, Any]], None]
) -> None:
    d = saved(tmp_path)
    edit_spec(d, edit)
    load_error(d)


# -- saving ----------------------------------------------------------------------------------------


def test_save_refuses_existing_directory_and_leaves_it_alone(tmp_path: pathlib.Path) -> None:
    d = saved(tmp_path)
    (d / "notes.txt").write_text("mine")
    before = snapshot(d)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_policy(discrete_policy(seed=1), d)
    assert snapshot(d) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]


def test_save_with_overwrite_replaces_and_cleans_up(tmp_path: pathlib.Path) -> None:
    d = saved(tmp_path)
    other = discrete_policy(seed=1)
    save_policy(other, d, overwrite=True)
    obs = sample(CARTPOLE_OBS)
    np.testing.assert_array_equal(load_native(d).act(obs), other.act(obs))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]


def test_failed_serialisation_leaves_no_partial_directory(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(safetensors.torch, "save", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_policy(discrete_policy(), tmp_path / "out" / "policy")
    assert not (tmp_path / "out" / "policy").exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_failed_write_leaves_no_partial_directory(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = pathlib.Path.write_bytes

    def flaky(self: pathlib.Path, data: bytes) -> int:
        if self.name == SPEC:
            raise OSError("no space left on device")
        return real_write(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", flaky)
    with pytest.raises(OSError, match="no space left"):
        save_policy(discrete_policy(), tmp_path / "policy")
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_policy(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = saved(tmp_path)
    before = snapshot(d)
    real_replace = os.replace
    calls: list[tuple[Any, Any]] = []

    def flaky(src: Any, dst: Any) -> None:
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(native.os, "replace", flaky)
    with pytest.raises(OSError, match="rename failed"):
        save_policy(discrete_policy(seed=1), d, overwrite=True)
    monkeypatch.undo()
    assert snapshot(d) == before


# -- from_torch ------------------------------------------------------------------------------


def test_from_torch_sequential_saves_and_reloads_identically(tmp_path: pathlib.Path) -> None:
    torch.manual_seed(3)
    module = nn.Sequential(
        nn.Linear(4, 8), nn.Tanh(), nn.Sequential(nn.Linear(8, 8), nn.ReLU()), nn.Linear(8, 3)
    )
    obs_space = gym.spaces.Box(-2.0, 2.0, (4,), np.float32)
    policy = from_torch(module, obs_space, gym.spaces.Discrete(3))
    assert policy.network is not None
    obs = sample(obs_space)
    with torch.no_grad():
        expected = module(torch.from_numpy(obs)).argmax(-1).numpy()
    np.testing.assert_array_equal(policy.act(obs), expected)
    loaded = load_native(save_policy(policy, tmp_path / "p"))
    np.testing.assert_array_equal(loaded.act(obs), expected)


@pytest.mark.parametrize(
    "module",
    [
        nn.Sequential(nn.Linear(3, 8), nn.ELU(alpha=2.0), nn.Linear(8, 2)),
        nn.Sequential(nn.Linear(3, 8), nn.GELU(approximate="tanh"), nn.Linear(8, 2)),
    ],
)
def test_from_torch_never_describes_a_different_function(module: nn.Module) -> None:
    """Regression: ELU's alpha and GELU's approximation were dropped from the spec, so the
    declarative copy computed another function than the module given."""
    torch.manual_seed(5)
    obs_space = gym.spaces.Box(-3.0, 3.0, (3,), np.float32)
    policy = from_torch(module, obs_space, gym.spaces.Discrete(2), output="q_values")
    assert policy.network is None  # kept as the module itself, not a lossy description
    obs = np.random.default_rng(0).uniform(-3, 3, (64, 3)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(obs)).argmax(-1).numpy()
    np.testing.assert_array_equal(policy.act(obs), expected)


def test_from_torch_with_a_shared_linear_keeps_the_module() -> None:
    """Regression: a Linear used twice made the weight copy fail with a bare ValueError."""
    lin = nn.Linear(4, 4)
    module = nn.Sequential(lin, nn.Tanh(), lin)
    obs_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    policy = from_torch(module, obs_space, gym.spaces.Discrete(4))
    assert policy.network is None
    obs = np.random.default_rng(1).uniform(-1, 1, (16, 4)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(obs)).argmax(-1).numpy()
    np.testing.assert_array_equal(policy.act(obs), expected)


def test_from_torch_continuous_policy_round_trips(tmp_path: pathlib.Path) -> None:
    torch.manual_seed(4)
    module = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1), nn.Tanh())
    obs_space = gym.spaces.Box(-8.0, 8.0, (3,), np.float32)
    act_space = gym.spaces.Box(-0.5, 0.5, (1,), np.float32)
    policy = from_torch(module, obs_space, act_space, output="action")
    loaded = load_native(save_policy(policy, tmp_path / "p"))
    obs = sample(obs_space)
    np.testing.assert_array_equal(loaded.act(obs), policy.act(obs))
    assert np.all(np.abs(loaded.act(obs)) <= 0.5)


class _Doubler(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


@pytest.mark.parametrize(
    "odd_layer", [nn.Dropout(0.5), _Doubler(), nn.Softplus()], ids=["dropout", "custom", "softplus"]
)
def test_unsupported_layers_act_but_cannot_be_saved(
    tmp_path: pathlib.Path, odd_layer: nn.Module
) -> None:
    torch.manual_seed(5)
    module = nn.Sequential(nn.Linear(4, 6), odd_layer, nn.Linear(6, 2))
    obs_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    policy = from_torch(module, obs_space, gym.spaces.Discrete(2))
    assert policy.network is None
    obs = sample(obs_space)
    with torch.no_grad():
        expected = module.eval()(torch.from_numpy(obs)).argmax(-1).numpy()
    np.testing.assert_array_equal(policy.act(obs), expected)
    with pytest.raises(PolicyLoadError, match="no declarative network"):
        save_policy(policy, tmp_path / "p")
    assert not (tmp_path / "p").exists()


# -- property: any small allowlisted MLP survives save -> load ---------------------------------


@st.composite
def mlp_specs(draw: st.DrawFn) -> tuple[dict[str, Any], int, int]:
    obs_dim = draw(st.integers(1, 6))
    n_actions = draw(st.integers(2, 5))
    widths = draw(st.lists(st.integers(1, 16), min_size=0, max_size=3))
    activation = st.sampled_from(
        [
            {"type": "relu"},
            {"type": "tanh"},
            {"type": "elu"},
            {"type": "sigmoid"},
            {"type": "gelu"},
            {"type": "silu"},
            {"type": "identity"},
            {"type": "leaky_relu", "negative_slope": 0.1},
            {"type": "hardtanh", "min": -0.5, "max": 1.5},
        ]
    )
    layers: list[dict[str, Any]] = []
    width = obs_dim
    for out in [*widths, n_actions]:
        if layers:
            layers.append(draw(activation))
        layers.append({"type": "linear", "in": width, "out": out})
        width = out
    spec = {"input": {"type": "float", "dim": obs_dim}, "policy": layers, "output": "logits"}
    return spec, obs_dim, n_actions


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=mlp_specs(), seed=st.integers(0, 2**31 - 1))
def test_any_small_mlp_round_trips(case: tuple[dict[str, Any], int, int], seed: int) -> None:
    spec, obs_dim, n_actions = case
    torch.manual_seed(seed)
    net = PolicyNetwork(spec)
    obs_space = gym.spaces.Box(-3.0, 3.0, (obs_dim,), np.float32)
    act_space = gym.spaces.Discrete(n_actions)
    policy = TorchPolicy(obs_space, act_space, net.actor(), "logits", network=net)
    obs = np.random.default_rng(seed).uniform(-3, 3, (64, obs_dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_native(save_policy(policy, pathlib.Path(tmp) / "p"))
    np.testing.assert_array_equal(loaded.act(obs), policy.act(obs))
    with torch.no_grad():
        x = torch.from_numpy(obs)
        assert torch.equal(loaded.torch_module()(x), policy.torch_module()(x))
    assert loaded.observation_space == obs_space
    assert loaded.action_space == act_space


@pytest.mark.parametrize("name", [SPEC, WEIGHTS])
def test_a_fifo_or_link_in_a_policy_directory_is_refused_before_reading(
    tmp_path: pathlib.Path, name: str
) -> None:
    import shutil
    import threading

    from rlsec.policies import zoo_path

    d = tmp_path / "p"
    shutil.copytree(zoo_path("cartpole-ppo"), d)
    real = tmp_path / name
    (d / name).rename(real)
    os.mkfifo(d / name)
    box: dict[str, str] = {}
    t = threading.Thread(target=lambda: box.update(msg=load_error(d)), daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "loading blocked on a FIFO"
    assert f"{name} at {d / name} is a FIFO; expected a regular file" in box["msg"]
    (d / name).unlink()
    (d / name).symlink_to(real)
    assert "is a symbolic link" in load_error(d)
