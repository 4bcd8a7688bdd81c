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
from rlsec.errors import PolicyLoadError, RLSecError, SpaceMismatch
from rlsec.policies import from_torch, load_native, save_policy, zoo_path
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


# -- hostile spec.json: every malformed field is a documented error -----------------------------


def _spec_of(d: pathlib.Path) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads((d / SPEC).read_text())
    return spec


def _load_spec(d: pathlib.Path, spec_bytes: bytes) -> TorchPolicy:
    return native.load_native_bytes(spec_bytes, (d / WEIGHTS).read_bytes(), where=str(d))


def test_deeply_nested_spec_is_a_policy_load_error_not_a_recursion_error(
    tmp_path: pathlib.Path,
) -> None:
    d = saved(tmp_path)
    spec = (d / SPEC).read_bytes()
    deep = spec.replace(b'"provenance": {}', b'"provenance": ' + b"[" * 50_000 + b"]" * 50_000)
    assert deep != spec
    with pytest.raises(PolicyLoadError, match="nests 50001 levels deep; at most 32"):
        _load_spec(d, deep)


def test_5000_digit_integer_in_spec_is_refused(tmp_path: pathlib.Path) -> None:
    d = saved(tmp_path)
    spec = (d / SPEC).read_bytes().replace(b'"episodes": 20', b'"episodes": ' + b"7" * 5000)
    with pytest.raises(PolicyLoadError, match="integer of 5000 digits"):
        _load_spec(d, spec)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param(
            lambda s: s["action_space"].update(n=2**63),
            "action_space.n: expected an integer in [1, 1048576], got 9223372036854775808",
            id="discrete-n-2^63",
        ),
        pytest.param(
            lambda s: s["action_space"].update(n=-3),
            "action_space.n: expected an integer in [1, 1048576], got -3",
            id="discrete-n-negative",
        ),
        pytest.param(
            lambda s: s["action_space"].update(n=2.0),
            "action_space.n: expected an integer, got 2.0",
            id="discrete-n-float",
        ),
        pytest.param(
            lambda s: s["action_space"].pop("start"),
            "action_space.start: expected an integer",
            id="discrete-start-missing",
        ),
        pytest.param(
            lambda s: s["observation_space"]["low"].__setitem__(0, "nan"),
            "observation_space.low[0]: expected a number, got 'nan'",
            id="nan-bound",
        ),
        pytest.param(
            lambda s: s["observation_space"].update(shape=[True, 4]),
            "observation_space.shape[0]: expected an integer, got True",
            id="boolean-shape",
        ),
        pytest.param(
            lambda s: s["observation_space"].update(shape=[1_000_000, 1_000_000]),
            "declares 1000000000000 elements; at most 1048576",
            id="shape-1e12",
        ),
        pytest.param(
            lambda s: s["observation_space"].update(shape=[500_000_000]),
            "declares 500000000 elements; at most 1048576",
            id="shape-5e8",
        ),
        pytest.param(
            lambda s: s["observation_space"].update(low=[5.0, 0.0, 0.0, 0.0]),
            "expected low <= high",
            id="low-above-high",
        ),
        pytest.param(
            lambda s: s["observation_space"].update(low=[1e300, 0.0, 0.0, 0.0]),
            "a finite bound overflows float32",
            id="bound-overflows-float32",
        ),
        pytest.param(
            lambda s: s["network"]["policy"].insert(1, {"type": "hardtanh", "min": 1, "max": -1}),
            "policy[1]: hardtanh needs min < max, got min 1.0, max -1.0",
            id="hardtanh-min-above-max",
        ),
        pytest.param(
            lambda s: s["network"]["policy"][0].update({"bias": False}),
            "policy[0]: unexpected fields ['bias']",
            id="unknown-layer-field",
        ),
        pytest.param(
            lambda s: s["network"]["policy"][0].update({"in": "4"}),
            "policy[0].in: expected an integer, got '4'",
            id="width-as-string",
        ),
        pytest.param(
            lambda s: s["network"].update(q_takes_action="false"),
            "q_takes_action: expected true or false, got 'false'",
            id="q-takes-action-string",
        ),
        pytest.param(
            lambda s: s["network"]["input"].update(scale=float("nan")),
            "non-standard literal 'NaN'",
            id="nan-literal",
        ),
        pytest.param(
            lambda s: (
                s["network"]["policy"][0].update(out=2**20),
                s["network"]["policy"][2].update({"in": 2**20}),
            ),
            "network spec asks for 13631514 parameters; at most 1049512",
            id="parameter-bound",
        ),
        pytest.param(
            lambda s: s["network"]["policy"][0].update(out=2**21),
            "policy[0].out: expected an integer in [1, 1048576], got 2097152",
            id="width-bound",
        ),
        pytest.param(
            lambda s: s["network"]["policy"].extend([{"type": "relu"}] * 300),
            "has 305 layers; at most 256",
            id="layer-count-bound",
        ),
        pytest.param(
            lambda s: s.update(clean_return={"mean": "500"}),
            "clean_return.mean: expected a number, got '500'",
            id="clean-return-string",
        ),
        pytest.param(
            lambda s: s.update(clean_return=float("nan")),
            "non-standard literal 'NaN'",
            id="clean-return-nan",
        ),
        pytest.param(
            lambda s: s.update(clean_return={"mean": 1.0, "ci95": [2.0, 1.0]}),
            "clean_return.ci95: expected low <= high",
            id="clean-return-ci-reversed",
        ),
        pytest.param(
            lambda s: s["observation_stats"].update(std=[1e-30, 1e-30, "x", 1e-30]),
            "observation_stats.std[2]: expected a number, got 'x'",
            id="std-string",
        ),
        pytest.param(
            lambda s: s["observation_stats"].update(std=[0.5, -0.6, 0.05, 0.7]),
            "observation_stats.std[1]: expected a number in [0.0, inf), got -0.6",
            id="std-negative",
        ),
        pytest.param(
            lambda s: s["observation_stats"].update(std=[0.5, 0.6]),
            "observation_stats.std: expected 4 numbers, got 2",
            id="std-wrong-length",
        ),
        pytest.param(
            lambda s: s["observation_stats"].pop("std"),
            "observation_stats.std: expected a list of numbers, got None",
            id="std-missing",
        ),
        pytest.param(
            lambda s: s.update(env_id=["CartPole-v1"]),
            "env_id: expected a string",
            id="env-id-list",
        ),
    ],
)
def test_malformed_spec_field_is_a_documented_error(
    tmp_path: pathlib.Path, edit: Callable[[dict[str, Any]], None], expected: str
) -> None:
    d = saved(tmp_path)
    spec = _spec_of(d)
    edit(spec)
    raw = json.dumps(spec).encode()  # NaN literals stay as json.dumps writes them
    with pytest.raises(PolicyLoadError) as exc_info:
        _load_spec(d, raw)
    assert expected in str(exc_info.value)


def _multi_discrete_policy_dir(tmp_path: pathlib.Path, nvec: list[int]) -> pathlib.Path:
    spec = {
        "input": {"type": "multi_one_hot", "nvec": nvec},
        "policy": [{"type": "linear", "in": sum(nvec), "out": 2}],
        "output": "logits",
    }
    net = PolicyNetwork(spec)
    space = gym.spaces.MultiDiscrete(nvec)
    policy = TorchPolicy(space, gym.spaces.Discrete(2), net.actor(), "logits", network=net)
    return save_policy(policy, tmp_path / "md")


def test_multi_one_hot_nvec_holding_minus_one_is_refused_at_load(tmp_path: pathlib.Path) -> None:
    d = _multi_discrete_policy_dir(tmp_path, [3, 2])
    spec = _spec_of(d)
    spec["network"]["input"]["nvec"] = [-1, 6]  # same feature count, a negative category
    with pytest.raises(PolicyLoadError, match=r"input.nvec\[0\]: expected an integer in \[1, "):
        _load_spec(d, json.dumps(spec).encode())


def test_network_input_that_reads_the_space_differently_is_refused(tmp_path: pathlib.Path) -> None:
    d = _multi_discrete_policy_dir(tmp_path, [3, 2])
    spec = _spec_of(d)
    spec["network"]["input"]["nvec"] = [2, 3]  # 5 features either way, read differently
    with pytest.raises(SpaceMismatch, match=r"needs a multi_one_hot input of nvec=\[3, 2\]"):
        _load_spec(d, json.dumps(spec).encode())
    loaded = load_native(d)
    assert loaded.act(np.array([[2, 1], [0, 0]])).shape == (2,)


def test_16000_by_16000_network_is_refused_from_its_shapes(tmp_path: pathlib.Path) -> None:
    d = saved(tmp_path)
    spec = _spec_of(d)
    policy = spec["network"]["policy"]
    policy[0]["out"] = policy[2]["in"] = policy[2]["out"] = policy[4]["in"] = 16_000
    with pytest.raises(
        PolicyLoadError,
        match=r"policy\[2\]: a 16000 x 16000 weight has 256000000 elements; at most 33554432",
    ):
        _load_spec(d, json.dumps(spec).encode())


def _forged_safetensors(header: dict[str, Any], body: bytes) -> bytes:
    head = json.dumps(header).encode()
    return len(head).to_bytes(8, "little") + head + body


@pytest.mark.parametrize(
    ("header", "body", "expected"),
    [
        pytest.param(
            {"policy.0.weight": {"dtype": "F32", "shape": [16000, 16000], "data_offsets": [0, 4]}},
            b"\0" * 4,
            "declares 256000000 elements; at most 33554432",
            id="16000x16000-declared",
        ),
        pytest.param(
            {"w": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}},
            b"\0" * 16,
            "expected a floating-point tensor",
            id="integer-dtype",
        ),
        pytest.param(
            {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 4]}},
            b"\0" * 4,
            "do not hold exactly 4 elements",
            id="short-data",
        ),
        pytest.param(
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            },
            b"\0" * 8,
            "overlaps or leaves gaps",
            id="aliased-data",
        ),
        pytest.param(
            {"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}},
            b"\0" * 4,
            "expected a shape of integers",
            id="boolean-shape",
        ),
    ],
)
def test_forged_safetensors_headers_are_refused_before_loading(
    tmp_path: pathlib.Path, header: dict[str, Any], body: bytes, expected: str
) -> None:
    d = saved(tmp_path)
    blob = _forged_safetensors(header, body)
    spec = _spec_of(d)
    spec["weights"]["sha256"] = hashlib.sha256(blob).hexdigest()
    with pytest.raises(PolicyLoadError, match=expected):
        native.load_native_bytes(json.dumps(spec).encode(), blob, where=str(d))


def test_non_finite_weights_are_refused(tmp_path: pathlib.Path) -> None:
    d = saved(tmp_path)
    rewrite_weights(d, lambda t: t["policy.0.bias"].__setitem__(3, float("nan")))
    assert "'policy.0.bias' holds NaN or infinite values" in load_error(d)


# -- fuzz: any spec.json either loads or raises an RLSecError -----------------------------------

_ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, -1, 2, 4, 2**31, 2**63, 10**30])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["inf", "-inf", "nan", "float32", "box", "discrete", "linear", "relu"])
    | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=6), kids, max_size=4)
    ),
    max_leaves=20,
)


def _mutate(value: Any, data: st.DataObject, depth: int = 0) -> Any:
    """Replace, drop or keep one random part of ``value``."""
    if not isinstance(value, (dict, list)) or not value or depth > 6:
        return data.draw(_ANY_JSON)
    keys = list(value) if isinstance(value, dict) else list(range(len(value)))
    key = data.draw(st.sampled_from(keys))
    action = data.draw(st.sampled_from(["descend", "descend", "replace", "drop"]))
    out = dict(value) if isinstance(value, dict) else list(value)
    if action == "drop":
        del out[key]
    elif action == "replace":
        out[key] = data.draw(_ANY_JSON)
    else:
        out[key] = _mutate(value[key], data, depth + 1)
    return out


@pytest.fixture(scope="module")
def fuzz_seeds(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[dict[str, Any], bytes]]:
    """Valid (spec, weights) pairs of every input and head kind."""
    root = tmp_path_factory.mktemp("seeds")
    dirs = [
        save_policy(discrete_policy(), root / "discrete", **INFO),
        save_policy(continuous_policy_with_heads(), root / "continuous"),
        _multi_discrete_policy_dir(root, [3, 2]),
        zoo_path("frozenlake-ppo"),
        zoo_path("pendulum-sac"),
    ]
    return [(json.loads((d / SPEC).read_text()), (d / WEIGHTS).read_bytes()) for d in dirs]


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_spec_json_loads_or_raises_an_rlsec_error(
    fuzz_seeds: list[tuple[dict[str, Any], bytes]], data: st.DataObject
) -> None:
    spec, weights = fuzz_seeds[data.draw(st.integers(0, len(fuzz_seeds) - 1), label="seed")]
    weights_meta = spec["weights"]
    mutated = _mutate({k: v for k, v in spec.items() if k != "weights"}, data)
    if isinstance(mutated, dict) and data.draw(st.booleans()):
        mutated["weights"] = weights_meta  # keep the digest right, so deeper checks run
    raw = json.dumps(mutated).encode()
    if data.draw(st.integers(0, 9)) == 9:
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    try:
        policy = native.load_native_bytes(raw, weights, where="fuzz")
    except RLSecError:
        return
    # whatever loads is usable: acting on its own space cannot crash
    obs = sample(policy.observation_space, n=4)
    actions = policy.act(obs)
    assert actions.shape[0] == 4


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
