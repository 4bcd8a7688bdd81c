"""``rlsec.policies.from_sb3``: exact round trips against Stable-Baselines3, hostile archives.

Every model here is built untrained (random weights are enough to compare two forward passes)
with tiny networks, so the whole module runs in seconds.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import pathlib
import pickle
import stat
import struct
import warnings
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm

from rlsec.errors import PolicyLoadError, RLSecError, SpaceMismatch, UnsafeArtifact
from rlsec.policies import from_sb3
from rlsec.policies.base import TorchPolicy

N_OBS = 256
SMALL = [16, 16]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- a tiny environment for action spaces no classic-control env has -----------------------


class _TinyEnv(gym.Env[Any, Any]):
    """Box(3) observations (unless told otherwise) and whatever action space the test needs."""

    def __init__(
        self, action_space: gym.Space[Any], observation_space: gym.Space[Any] | None = None
    ) -> None:
        self.observation_space = observation_space or gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = action_space

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        return self.observation_space.sample(), 0.0, False, True, {}


# -- the models ------------------------------------------------------------------------------

_ON_POLICY = {"n_steps": 32, "device": "cpu", "seed": 0}
_OFF_POLICY = {"buffer_size": 64, "learning_starts": 0, "device": "cpu", "seed": 0}


def _ppo(env: Any, **kw: Any) -> BaseAlgorithm:
    kw.setdefault("policy_kwargs", {"net_arch": SMALL})
    return PPO("MlpPolicy", env, batch_size=32, **_ON_POLICY, **kw)


def _a2c(env: Any, **kw: Any) -> BaseAlgorithm:
    return A2C("MlpPolicy", env, policy_kwargs={"net_arch": SMALL}, **_ON_POLICY, **kw)


def _off(cls: type[BaseAlgorithm], env: str, **kw: Any) -> BaseAlgorithm:
    kw.setdefault("policy_kwargs", {"net_arch": SMALL})
    return cls("MlpPolicy", env, **_OFF_POLICY, **kw)


MULTI_DISCRETE = gym.spaces.MultiDiscrete([3, 2, 4])
MULTI_BINARY = gym.spaces.MultiBinary(4)

# name -> (builder, expected algo)
CASES: dict[str, tuple[Callable[[], BaseAlgorithm], str]] = {
    "ppo-cartpole": (lambda: _ppo("CartPole-v1"), "ppo"),
    "ppo-pendulum": (lambda: _ppo("Pendulum-v1"), "ppo"),
    "ppo-multidiscrete": (lambda: _ppo(_TinyEnv(MULTI_DISCRETE)), "ppo"),
    "ppo-multibinary": (lambda: _ppo(_TinyEnv(MULTI_BINARY)), "ppo"),
    "ppo-frozenlake": (lambda: _ppo("FrozenLake-v1"), "ppo"),
    "ppo-relu-split": (
        lambda: _ppo(
            "CartPole-v1",
            policy_kwargs={"net_arch": {"pi": [16, 8], "vf": [12]}, "activation_fn": torch.nn.ReLU},
        ),
        "ppo",
    ),
    "ppo-sde-pendulum": (lambda: _ppo("Pendulum-v1", use_sde=True), "ppo"),
    "ppo-sde-squash": (
        lambda: _ppo(
            _TinyEnv(gym.spaces.Box(-2.0, 3.0, (2,), np.float32)),
            use_sde=True,
            policy_kwargs={"net_arch": SMALL, "squash_output": True},
        ),
        "ppo",
    ),
    "ppo-multidiscrete-obs": (
        lambda: _ppo(_TinyEnv(gym.spaces.Discrete(3), gym.spaces.MultiDiscrete([3, 4]))),
        "ppo",
    ),
    "ppo-multibinary-obs": (
        lambda: _ppo(_TinyEnv(gym.spaces.Discrete(3), gym.spaces.MultiBinary(5))),
        "ppo",
    ),
    "ppo-uint8-image-mlp": (
        lambda: _ppo(_TinyEnv(gym.spaces.Discrete(3), gym.spaces.Box(0, 255, (4, 4, 1), np.uint8))),
        "ppo",
    ),
    "a2c-cartpole": (lambda: _a2c("CartPole-v1"), "a2c"),
    "a2c-pendulum": (lambda: _a2c("Pendulum-v1"), "a2c"),
    "a2c-multidiscrete": (lambda: _a2c(_TinyEnv(MULTI_DISCRETE)), "a2c"),
    "a2c-multibinary": (lambda: _a2c(_TinyEnv(MULTI_BINARY)), "a2c"),
    "a2c-frozenlake": (lambda: _a2c("FrozenLake-v1"), "a2c"),
    "dqn-cartpole": (lambda: _off(DQN, "CartPole-v1"), "dqn"),
    "dqn-frozenlake": (lambda: _off(DQN, "FrozenLake-v1"), "dqn"),
    "sac-pendulum": (lambda: _off(SAC, "Pendulum-v1"), "sac"),
    "sac-sde-pendulum": (lambda: _off(SAC, "Pendulum-v1", use_sde=True), "sac"),
    "td3-pendulum": (lambda: _off(TD3, "Pendulum-v1"), "td3"),
    "ddpg-pendulum": (lambda: _off(DDPG, "Pendulum-v1"), "ddpg"),
}

_BUILT: dict[str, tuple[BaseAlgorithm, bytes]] = {}


def sb3_model(name: str) -> tuple[BaseAlgorithm, bytes]:
    """The (untrained) model of a case and its saved archive, built once per session."""
    if name not in _BUILT:
        model = CASES[name][0]()
        buf = io.BytesIO()
        model.save(buf)
        _BUILT[name] = (model, buf.getvalue())
    return _BUILT[name]


def sample_obs(space: gym.Space[Any], n: int = N_OBS, seed: int = 0) -> np.ndarray:
    space.seed(seed)
    return np.stack([np.asarray(space.sample()) for _ in range(n)])


# -- archive surgery ---------------------------------------------------------------------------


def archive_members(raw: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        return [(info.filename, zf.read(info)) for info in zf.infolist()]


def build_archive(members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    """A zip with exactly these members, in order (duplicates allowed)."""
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name"
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, body in members:
                zf.writestr(name, body)
    return out.getvalue()


def replace_member(raw: bytes, name: str, body: bytes | None) -> bytes:
    """Copy of a real archive with one member replaced (or dropped, when ``body`` is None)."""
    members = archive_members(raw)
    assert name in {n for n, _ in members}, f"{name} not in the source archive"
    out: list[tuple[str | zipfile.ZipInfo, bytes]] = []
    for n, b in members:
        if n != name:
            out.append((n, b))
        elif body is not None:
            out.append((n, body))
    return build_archive(out)


def add_member(raw: bytes, name: str | zipfile.ZipInfo, body: bytes) -> bytes:
    return build_archive([*archive_members(raw), (name, body)])


def edit_data(raw: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    data = json.loads(dict(archive_members(raw))["data"])
    edit(data)
    return replace_member(raw, "data", json.dumps(data).encode())


def edit_state(raw: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    state = torch.load(
        io.BytesIO(dict(archive_members(raw))["policy.pth"]), map_location="cpu", weights_only=True
    )
    edit(state)
    buf = io.BytesIO()
    torch.save(state, buf)
    return replace_member(raw, "policy.pth", buf.getvalue())


def declare_size(raw: bytes, name: str, size: int) -> bytes:
    """Patch the central directory so ``name`` declares ``size`` uncompressed bytes."""
    out = bytearray(raw)
    pos = out.find(b"PK\x01\x02")
    while pos != -1:
        (name_len,) = struct.unpack_from("<H", out, pos + 28)
        if out[pos + 46 : pos + 46 + name_len] == name.encode():
            struct.pack_into("<I", out, pos + 24, size)
            return bytes(out)
        pos = out.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(f"{name} not in the central directory")


class _TouchOnUnpickle:
    """Unpickling this creates ``path``: stands for any code an attacker would run."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.path,))


def _files_under(root: pathlib.Path) -> set[pathlib.Path]:
    return set(root.rglob("*"))


# == 1. round trips against SB3 ================================================================


@pytest.mark.parametrize("case", list(CASES))
def test_actions_match_sb3_predict(case: str) -> None:
    model, raw = sb3_model(case)
    policy = from_sb3(raw, env_id="whatever-v0")
    obs = sample_obs(model.observation_space)

    ours = policy.act(obs)
    theirs, _ = model.predict(obs, deterministic=True)

    assert isinstance(policy, TorchPolicy)
    assert policy.info.algo == CASES[case][1]
    assert policy.info.format == "sb3"
    assert policy.info.env_id == "whatever-v0"
    assert policy.info.sha256 == hashlib.sha256(raw).hexdigest()
    assert policy.observation_space == model.observation_space
    assert policy.action_space == model.action_space
    assert ours.shape == np.asarray(theirs).shape
    if isinstance(model.action_space, gym.spaces.Box):
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
        # random weights should not make every action saturate: the comparison means something
        assert np.unique(np.round(ours, 4)).size > 10
    else:
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith(("ppo", "a2c"))])
def test_value_head_matches_sb3_predict_values(case: str) -> None:
    model, raw = sb3_model(case)
    policy = from_sb3(raw)
    obs = sample_obs(model.observation_space, seed=1)
    value = policy.value_module()
    assert value is not None
    with torch.no_grad():
        ours = value(torch.from_numpy(policy.as_batch(obs)))
        theirs = model.policy.predict_values(model.policy.obs_to_tensor(obs)[0])
    assert ours.shape == (N_OBS,)
    np.testing.assert_allclose(ours.numpy(), theirs.squeeze(-1).numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "case", ["sac-pendulum", "sac-sde-pendulum", "td3-pendulum", "ddpg-pendulum"]
)
def test_q_head_matches_sb3_critic(case: str) -> None:
    model, raw = sb3_model(case)
    policy = from_sb3(raw)
    obs = sample_obs(model.observation_space, seed=2)
    actions = sample_obs(model.action_space, seed=3)
    q = policy.q_module()
    assert q is not None
    with torch.no_grad():
        ours = q(torch.from_numpy(obs), torch.from_numpy(actions))
        theirs = model.critic(
            torch.from_numpy(obs), torch.as_tensor(model.policy.scale_action(actions))
        )[0]
    assert ours.shape == (N_OBS,)
    np.testing.assert_allclose(ours.numpy(), theirs.squeeze(-1).numpy(), atol=1e-5, rtol=0)


def test_dqn_q_head_matches_sb3_q_net() -> None:
    model, raw = sb3_model("dqn-cartpole")
    policy = from_sb3(raw)
    obs = sample_obs(model.observation_space, seed=4)
    q = policy.q_module()
    assert q is not None
    assert policy.output == "q_values"
    with torch.no_grad():
        ours = q(torch.from_numpy(obs))
        theirs = model.q_net(torch.from_numpy(obs))
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-5, rtol=0)


def test_import_from_a_file_path_and_matching_env_spaces(tmp_path: pathlib.Path) -> None:
    model, raw = sb3_model("ppo-pendulum")
    path = tmp_path / "model.zip"
    path.write_bytes(raw)
    env = gym.make("Pendulum-v1")
    policy = from_sb3(path, env_spaces=(env.observation_space, env.action_space))
    assert policy.info.source == str(path)
    obs = sample_obs(model.observation_space)
    np.testing.assert_allclose(
        policy.act(obs), model.predict(obs, deterministic=True)[0], atol=1e-5
    )


# == 2. hostile archives ======================================================================


@pytest.mark.parametrize(
    ("case", "field", "refused"),
    [
        ("ppo-cartpole", "observation_space", None),
        ("ppo-cartpole", "action_space", None),
        ("sac-pendulum", "action_space", None),
        # SB3 builds the policy from these two blobs; rlsec reads them as data, and a blob
        # that would run code to build itself leaves the network unknown: refused
        ("ppo-cartpole", "policy_class", "policy_class is a pickle that builds an object"),
        (
            "ppo-relu-split",
            "policy_kwargs",
            "policy_kwargs.features_extractor_class: the readable field is missing",
        ),
    ],
)
def test_pickled_code_in_data_never_runs(
    case: str,
    field: str,
    refused: str | None,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, raw = sb3_model(case)
    marker = tmp_path / "pwned"
    blob = base64.b64encode(pickle.dumps(_TouchOnUnpickle(marker))).decode()

    def plant(data: dict[str, Any]) -> None:
        data[field][":serialized:"] = blob

    hostile = edit_data(raw, plant)

    def no_unpickling(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the importer unpickled something")

    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "Unpickler", no_unpickling)
    monkeypatch.setattr(cloudpickle, "loads", no_unpickling)
    if refused is not None:
        with pytest.raises(PolicyLoadError) as exc_info:
            from_sb3(hostile)
        monkeypatch.undo()
        assert type(exc_info.value) is PolicyLoadError
        assert refused in str(exc_info.value)
        assert not marker.exists()
        return
    policy = from_sb3(hostile)
    monkeypatch.undo()

    assert not marker.exists()
    # the readable fields still give the real policy
    obs = sample_obs(model.observation_space)
    np.testing.assert_allclose(
        policy.act(obs), model.predict(obs, deterministic=True)[0], atol=1e-5, rtol=0
    )


def test_sb3_own_loader_does_run_the_pickled_code(tmp_path: pathlib.Path) -> None:
    """Why the safe importer matters: the same archive makes ``PPO.load`` run the payload."""
    _, raw = sb3_model("ppo-cartpole")
    marker = tmp_path / "pwned-by-sb3"
    blob = base64.b64encode(pickle.dumps(_TouchOnUnpickle(marker))).decode()

    def plant(data: dict[str, Any]) -> None:
        data["observation_space"][":serialized:"] = blob

    hostile = edit_data(raw, plant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the payload replaced the space with None, so SB3 may fail after running it
        with contextlib.suppress(Exception):
            PPO.load(io.BytesIO(hostile), device="cpu")
    # No skip: if a Stable-Baselines3 release stops unpickling data, this fails and the
    # README's account of why the safe importer exists must be revisited.
    assert marker.exists(), "PPO.load did not run the payload planted in the archive's data"


def test_pickled_code_in_policy_pth_is_refused(tmp_path: pathlib.Path) -> None:
    _, raw = sb3_model("ppo-cartpole")
    marker = tmp_path / "pwned"

    def plant(state: dict[str, Any]) -> None:
        state["evil"] = _TouchOnUnpickle(marker)

    hostile = edit_state(raw, plant)
    with pytest.raises(UnsafeArtifact) as exc_info:
        from_sb3(hostile)
    assert type(exc_info.value) is UnsafeArtifact
    msg = str(exc_info.value)
    assert "policy.pth" in msg
    assert "pickled objects" in msg
    assert "tensors" in msg
    assert not marker.exists()
    # control: the payload is live, an unsafe torch.load does run it
    pth = dict(archive_members(hostile))["policy.pth"]
    torch.load(io.BytesIO(pth), map_location="cpu", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    "evil_name", ["../evil", "/abs/evil", "a/../../evil", "C:\\evil", "dir\\..\\evil"]
)
def test_traversing_member_names_are_refused_and_nothing_is_written(
    evil_name: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, raw = sb3_model("ppo-cartpole")
    hostile = add_member(raw, evil_name, b"pwned")
    assert evil_name in [n for n, _ in archive_members(hostile)]  # zipfile kept the name
    src = tmp_path / "in" / "model.zip"
    src.parent.mkdir()
    src.write_bytes(hostile)
    cwd = tmp_path / "cwd" / "deeper"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    before = _files_under(tmp_path)

    with pytest.raises(UnsafeArtifact) as exc_info:
        from_sb3(src)

    assert type(exc_info.value) is UnsafeArtifact
    msg = str(exc_info.value)
    assert repr(evil_name) in msg
    assert "expected plain relative names" in msg
    assert _files_under(tmp_path) == before
    assert list(cwd.iterdir()) == []
    assert not pathlib.Path("/abs/evil").exists()


def _symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _dup_data(raw: bytes) -> bytes:
    return add_member(raw, "data", b"{}")


def _symlink_data(raw: bytes) -> bytes:
    members: list[tuple[str | zipfile.ZipInfo, bytes]] = [
        (n, b) for n, b in archive_members(raw) if n != "data"
    ]
    return build_archive([(_symlink_info("data"), b"/etc/passwd"), *members])


def _huge_member(raw: bytes) -> bytes:
    return declare_size(add_member(raw, "huge.bin", b"x" * 16), "huge.bin", 0xF000_0000)


def _huge_total(raw: bytes) -> bytes:
    # each member stays under the per-member cap; together they pass the archive cap
    raw = build_archive([*archive_members(raw), *((f"part{i}", b"x") for i in range(3))])
    for i in range(3):
        raw = declare_size(raw, f"part{i}", 400 * 2**20)
    return raw


def _many_members(raw: bytes) -> bytes:
    return build_archive([*archive_members(raw), *((f"m{i}", b"") for i in range(64))])


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(_dup_data, "appears twice", id="duplicate-names"),
        pytest.param(_symlink_data, "symbolic link", id="symlink"),
        pytest.param(_huge_member, "declares 4026531840 bytes; at most", id="huge-member"),
        pytest.param(_huge_total, "archive expands to", id="huge-total"),
        pytest.param(_many_members, "members; at most 64", id="too-many-members"),
    ],
)
def test_zip_bombs_duplicates_and_symlinks_are_refused(
    make: Callable[[bytes], bytes], expected: str
) -> None:
    _, raw = sb3_model("ppo-cartpole")
    with pytest.raises(UnsafeArtifact) as exc_info:
        from_sb3(make(raw))
    assert type(exc_info.value) is UnsafeArtifact
    assert expected in str(exc_info.value)


def _garbage_pth(raw: bytes) -> bytes:
    return replace_member(raw, "policy.pth", b"this is not a torch file\n" * 8)


def _truncated_pth(raw: bytes) -> bytes:
    return replace_member(raw, "policy.pth", dict(archive_members(raw))["policy.pth"][:300])


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(
            lambda raw: os.urandom(64) + b"not a zip" * 10,
            "expected a Stable-Baselines3 .zip archive",
            id="random-bytes",
        ),
        pytest.param(
            lambda raw: raw[: len(raw) // 2],
            "expected a Stable-Baselines3 .zip archive",
            id="truncated-zip",
        ),
        pytest.param(
            lambda raw: replace_member(raw, "data", b"{not json"),
            "'data' is not valid JSON",
            id="data-not-json",
        ),
        pytest.param(
            lambda raw: replace_member(raw, "data", b"[1, 2]"),
            "'data' should be a JSON object",
            id="data-not-object",
        ),
        pytest.param(
            lambda raw: replace_member(raw, "data", b"\xff\xfe\x00garbage"),
            "'data' is not valid JSON",
            id="data-not-utf8",
        ),
        pytest.param(_garbage_pth, "policy.pth is not a readable torch state dict", id="pth-text"),
        pytest.param(_truncated_pth, "policy.pth is not a readable torch state dict", id="pth-cut"),
        pytest.param(
            lambda raw: replace_member(raw, "policy.pth", None),
            "archive has no 'policy.pth' member",
            id="missing-policy-pth",
        ),
        pytest.param(
            lambda raw: replace_member(raw, "data", None),
            "archive has no 'data' member",
            id="missing-data",
        ),
        pytest.param(
            lambda raw: edit_state(raw, lambda s: s.clear()),
            "not an SB3 MLP policy rlsec recognises",
            id="empty-state-dict",
        ),
        pytest.param(
            lambda raw: edit_data(raw, lambda d: d.pop("observation_space")),
            "no readable observation_space",
            id="no-observation-space",
        ),
    ],
)
def test_corrupt_archives_raise_policy_load_error(
    make: Callable[[bytes], bytes], expected: str
) -> None:
    _, raw = sb3_model("ppo-cartpole")
    with pytest.raises(PolicyLoadError) as exc_info:
        from_sb3(make(raw))
    assert type(exc_info.value) is PolicyLoadError
    assert expected in str(exc_info.value)


def test_random_bytes_policy_pth_is_corrupt_not_unsafe() -> None:
    _, raw = sb3_model("ppo-cartpole")
    hostile = replace_member(raw, "policy.pth", b"garbage bytes")
    with pytest.raises(PolicyLoadError) as exc_info:
        from_sb3(hostile)
    assert type(exc_info.value) is PolicyLoadError


def test_multidiscrete_with_mixed_width_nvec_imports() -> None:
    model = _ppo(_TinyEnv(gym.spaces.MultiDiscrete([3, 10])))
    buf = io.BytesIO()
    model.save(buf)
    policy = from_sb3(buf.getvalue())
    obs = sample_obs(model.observation_space)
    np.testing.assert_array_equal(policy.act(obs), model.predict(obs, deterministic=True)[0])


def test_unexplained_tensor_is_refused_not_dropped() -> None:
    _, raw = sb3_model("ppo-cartpole")

    def plant(state: dict[str, Any]) -> None:
        state["features_extractor.cnn.0.weight"] = torch.zeros(8, 4)

    with pytest.raises(PolicyLoadError) as exc_info:
        from_sb3(edit_state(raw, plant))
    assert type(exc_info.value) is PolicyLoadError
    msg = str(exc_info.value)
    assert "features_extractor.cnn.0.weight" in msg
    assert "does not account for" in msg


def test_unexplained_critic_tensor_in_sac_is_refused() -> None:
    _, raw = sb3_model("sac-pendulum")

    def plant(state: dict[str, Any]) -> None:
        state["critic.features_extractor.extra.weight"] = torch.zeros(2, 2)

    with pytest.raises(PolicyLoadError, match=r"critic\.features_extractor\.extra\.weight"):
        from_sb3(edit_state(raw, plant))


def test_custom_features_extractor_is_refused() -> None:
    _, raw = sb3_model("ppo-cartpole")

    def plant(data: dict[str, Any]) -> None:
        data["policy_kwargs"] = {
            "features_extractor_class": "<class 'evil.module.CNN'>",
        }

    with pytest.raises(PolicyLoadError, match=r"features extractor .*evil\.module\.CNN"):
        from_sb3(edit_data(raw, plant))


def test_env_spaces_mismatch_raises_space_mismatch() -> None:
    _, raw = sb3_model("ppo-cartpole")
    pendulum = gym.make("Pendulum-v1")
    with pytest.raises(SpaceMismatch) as exc_info:
        from_sb3(raw, env_spaces=(pendulum.observation_space, pendulum.action_space))
    msg = str(exc_info.value)
    assert "expected Box(shape=(3,)" in msg
    assert "got Box(shape=(4,)" in msg


def test_env_action_space_mismatch_raises_space_mismatch() -> None:
    _, raw = sb3_model("ppo-cartpole")
    env = gym.make("CartPole-v1")
    with pytest.raises(SpaceMismatch, match=r"expected Discrete\(3\), got Discrete\(2\)"):
        from_sb3(raw, env_spaces=(env.observation_space, gym.spaces.Discrete(3)))


def test_missing_archive_file_is_a_policy_load_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(PolicyLoadError, match="cannot read SB3 archive"):
        from_sb3(tmp_path / "nope.zip")


# == 3. SB3 reads it, so rlsec never defaults it ================================================


def _blob_of(value: Any) -> str:
    return base64.b64encode(cloudpickle.dumps(value)).decode()


def test_missing_activation_fn_is_refused_not_defaulted() -> None:
    """The readable activation_fn deleted beside a blob that says ReLU: rlsec imported Tanh
    and disagreed with PPO.load on 42% of observations."""
    _, raw = sb3_model("ppo-relu-split")
    hostile = edit_data(raw, lambda d: d["policy_kwargs"].pop("activation_fn"))
    with pytest.raises(PolicyLoadError) as exc_info:
        from_sb3(hostile)
    msg = str(exc_info.value)
    assert "policy_kwargs.activation_fn: the readable field is missing" in msg
    assert "torch.nn.modules.activation.ReLU" in msg  # what the blob SB3 reads says
    # and SB3 does read ReLU from the blob: a default would have imported another network
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert PPO.load(io.BytesIO(hostile), device="cpu").policy.activation_fn is torch.nn.ReLU


def test_edited_readable_activation_fn_is_refused() -> None:
    _, raw = sb3_model("ppo-relu-split")

    def lie(d: dict[str, Any]) -> None:
        d["policy_kwargs"]["activation_fn"] = "<class 'torch.nn.modules.activation.Tanh'>"

    with pytest.raises(
        PolicyLoadError, match=r"readable field says 'torch\.nn\.modules\.activation\.Tanh' but"
    ):
        from_sb3(edit_data(raw, lie))


def test_readable_field_absent_from_a_plain_blob_is_refused() -> None:
    _, raw = sb3_model("ppo-relu-split")
    hostile = edit_data(raw, lambda d: d["policy_kwargs"].update(squash_output=True))
    with pytest.raises(PolicyLoadError, match=r"readable fields \['squash_output'\] are not in"):
        from_sb3(hostile)


def test_keyword_sb3_does_not_find_takes_sb3_own_default() -> None:
    """A blob without activation_fn (optimizer_class made it a blob): SB3 uses the policy
    class's own default (Tanh for ActorCriticPolicy), and so does rlsec."""
    model = _ppo(
        "CartPole-v1", policy_kwargs={"net_arch": SMALL, "optimizer_class": torch.optim.SGD}
    )
    buf = io.BytesIO()
    model.save(buf)
    data = json.loads(dict(archive_members(buf.getvalue()))["data"])
    assert ":serialized:" in data["policy_kwargs"]
    assert "activation_fn" not in data["policy_kwargs"]
    policy = from_sb3(buf.getvalue())
    assert isinstance(policy.network.policy[1], torch.nn.Tanh)  # type: ignore[union-attr]
    obs = sample_obs(model.observation_space)
    np.testing.assert_array_equal(policy.act(obs), model.predict(obs, deterministic=True)[0])


def test_plain_json_keyword_removed_matches_what_sb3_then_builds() -> None:
    """Plain JSON policy_kwargs are read by SB3 as they are: without squash_output, SB3 does
    not squash either, and the two still agree."""
    _, raw = sb3_model("ppo-sde-squash")
    assert ":serialized:" not in json.loads(dict(archive_members(raw))["data"])["policy_kwargs"]
    edited = edit_data(raw, lambda d: d["policy_kwargs"].pop("squash_output"))
    policy = from_sb3(edited)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = PPO.load(io.BytesIO(edited), device="cpu")
    obs = sample_obs(theirs.observation_space)
    np.testing.assert_allclose(
        policy.act(obs), theirs.predict(obs, deterministic=True)[0], atol=1e-5, rtol=0
    )


@pytest.mark.parametrize(
    ("case", "edit", "expected"),
    [
        pytest.param(
            "ppo-cartpole",
            lambda d: d.pop("policy_class"),
            "expected a serialized policy_class (SB3 requires one)",
            id="policy-class-missing",
        ),
        pytest.param(
            "ppo-cartpole",
            lambda d: d["policy_class"].pop(":serialized:"),
            "policy_class has no :serialized: blob",
            id="policy-class-not-serialized",
        ),
        pytest.param(
            "ppo-cartpole",
            lambda d: d["policy_class"].update(
                {":serialized:": _blob_of(PPO.policy_aliases["CnnPolicy"])}
            ),
            "policy_class is stable_baselines3.common.policies.ActorCriticCnnPolicy",
            id="policy-class-cnn",
        ),
        pytest.param(
            "ppo-cartpole",
            lambda d: d["policy_class"].update(
                {":serialized:": _blob_of(DQN.policy_aliases["MlpPolicy"])}
            ),
            "names a dqn policy class, but policy.pth holds the tensors of a actor-critic",
            id="policy-class-mismatch",
        ),
        pytest.param(
            "ppo-cartpole",
            lambda d: d["policy_class"].update({":serialized:": "not base64!"}),
            "is not base64",
            id="policy-class-not-base64",
        ),
        pytest.param(
            "ppo-cartpole",
            lambda d: d["action_space"].pop("start"),
            "action_space: the readable field 'start' is missing",
            id="discrete-start-missing",
        ),
        pytest.param(
            "ppo-cartpole",
            lambda d: d["action_space"].pop("n"),
            "action_space: the readable field 'n' is missing",
            id="discrete-n-missing",
        ),
        pytest.param(
            "ppo-cartpole",
            lambda d: d["action_space"].update(n=str(2**63)),
            "action_space.n: expected an integer in [1, 1048576], got 9223372036854775808",
            id="discrete-n-2^63",
        ),
        pytest.param(
            "ppo-cartpole",
            lambda d: d["action_space"].update(n="-3"),
            "action_space.n: expected an integer in [1, 1048576], got -3",
            id="discrete-n-negative",
        ),
        pytest.param(
            "ppo-cartpole",
            lambda d: d["action_space"].update(start="1"),
            "Discrete spaces with start != 0 are not supported",
            id="discrete-start-1",
        ),
        pytest.param(
            "ppo-multidiscrete-obs",
            lambda d: d["observation_space"].pop("start"),
            "observation_space: the readable field 'start' is missing",
            id="multidiscrete-start-missing",
        ),
        pytest.param(
            "ppo-multidiscrete-obs",
            lambda d: d["observation_space"].update(nvec="[ 3 -1]"),
            "observation_space.nvec: expected an integer in [1, 1048576], got -1",
            id="multidiscrete-nvec-minus-one",
        ),
        pytest.param(
            "ppo-cartpole",
            lambda d: d["observation_space"].update(low="[nan -inf -0.4 -inf]"),
            "observation_space.low: expected numbers or infinities, got NaN",
            id="nan-bound",
        ),
        pytest.param(
            "ppo-cartpole",
            lambda d: d["observation_space"].update(_shape=[True, 4]),
            "observation_space._shape[0]: expected an integer, got True",
            id="boolean-shape",
        ),
        pytest.param(
            "ppo-cartpole",
            lambda d: d["observation_space"].update(_shape=[1_000_000, 1_000_000], low=-1, high=1),
            "declares 1000000000000 elements; at most 1048576",
            id="shape-1e12",
        ),
        pytest.param(
            "ppo-cartpole",
            lambda d: d["observation_space"].update(_shape=[500_000_000], low=-1, high=1),
            "declares 500000000 elements; at most 1048576",
            id="shape-5e8",
        ),
        pytest.param(
            "sac-sde-pendulum",
            lambda d: d["policy_kwargs"].update(clip_mean=-1.0),
            "clip_mean is -1.0, but policy.pth holds the clipped mean layer",
            id="hardtanh-min-above-max",
        ),
        pytest.param(
            "ppo-sde-squash",
            lambda d: d.update(use_sde=False),
            "squash_output is true but use_sde is False",
            id="squash-without-sde",
        ),
        pytest.param(
            "ppo-uint8-image-mlp",
            lambda d: d["policy_kwargs"].update(normalize_images=1),
            "normalize_images: expected true or false, got 1",
            id="normalize-images-not-bool",
        ),
        pytest.param(
            "ppo-cartpole",
            lambda d: d.update(
                deep=[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
            ),
            "nests 35 levels deep; at most 32",
            id="deep-nesting",
        ),
    ],
)
def test_malformed_readable_field_is_a_documented_error(
    case: str, edit: Callable[[dict[str, Any]], None], expected: str
) -> None:
    _, raw = sb3_model(case)
    with pytest.raises(PolicyLoadError) as exc_info:
        from_sb3(edit_data(raw, edit))
    assert expected in str(exc_info.value)


def test_5000_digit_integer_in_data_is_refused() -> None:
    _, raw = sb3_model("ppo-cartpole")
    data = dict(archive_members(raw))["data"]
    hostile = replace_member(
        raw, "data", data.replace(b'"verbose": 0', b'"verbose": ' + b"9" * 5000)
    )
    with pytest.raises(UnsafeArtifact, match="integer of 5000 digits"):
        from_sb3(hostile)


def test_summarised_bounds_come_from_the_env_for_observations_only() -> None:
    low = np.linspace(-1.0, 0.0, 1001, dtype=np.float32)
    obs = gym.spaces.Box(low, low + 1.0, dtype=np.float32)
    model = _ppo(_TinyEnv(gym.spaces.Discrete(2), obs))
    buf = io.BytesIO()
    model.save(buf)
    raw = buf.getvalue()
    assert "..." in json.loads(dict(archive_members(raw))["data"])["observation_space"]["low"]
    with pytest.raises(PolicyLoadError, match="pass the environment so its bounds can be used"):
        from_sb3(raw)
    policy = from_sb3(raw, env_spaces=(obs, gym.spaces.Discrete(2)))
    x = sample_obs(obs, n=16)
    np.testing.assert_array_equal(policy.act(x), model.predict(x, deterministic=True)[0])

    act = gym.spaces.Box(low, low + 1.0, dtype=np.float32)
    hostile = edit_data(raw, lambda d: d.update(action_space={**d["observation_space"]}))
    with pytest.raises(PolicyLoadError, match="bounds of an action space shape the network"):
        from_sb3(hostile, env_spaces=(obs, act))


# == 4. tensors, members and sizes ================================================================


def test_stride_0_expanded_tensors_are_refused_before_building_a_network() -> None:
    """A tiny policy.pth whose expanded tensors stand for a 16,000 x 16,000 network."""
    _, raw = sb3_model("ppo-cartpole")

    def expand(state: dict[str, Any]) -> None:
        big = 16_000
        state["mlp_extractor.policy_net.0.weight"] = torch.zeros(1).expand(big, 4)
        state["mlp_extractor.policy_net.0.bias"] = torch.zeros(1).expand(big)
        state["mlp_extractor.policy_net.2.weight"] = torch.zeros(1).expand(big, big)
        state["mlp_extractor.policy_net.2.bias"] = torch.zeros(1).expand(big)
        state["action_net.weight"] = torch.zeros(1).expand(2, big)

    hostile = edit_state(raw, expand)
    assert len(dict(archive_members(hostile))["policy.pth"]) < 30_000
    with pytest.raises(PolicyLoadError) as exc_info:
        from_sb3(hostile)
    msg = str(exc_info.value)
    assert "expected plain contiguous storage of its" in msg
    assert "strides (0" in msg


def test_tensor_viewing_a_shared_storage_is_refused() -> None:
    _, raw = sb3_model("ppo-cartpole")

    def share(state: dict[str, Any]) -> None:
        w = state["action_net.weight"]
        whole = torch.cat([w.reshape(-1), torch.zeros(100)])
        state["action_net.weight"] = whole[: w.numel()].view(w.shape)

    with pytest.raises(PolicyLoadError, match=r"'action_net.weight': expected plain contiguous"):
        from_sb3(edit_state(raw, share))


def _set_flag(raw: bytes, name: str, bit: int) -> bytes:
    """Set a general-purpose flag bit of ``name`` in its local header and central directory."""
    out = bytearray(raw)
    for sig, flags_at, name_len_at, name_at in (
        (b"PK\x03\x04", 6, 26, 30),
        (b"PK\x01\x02", 8, 28, 46),
    ):
        pos = out.find(sig)
        while pos != -1:
            (n,) = struct.unpack_from("<H", out, pos + name_len_at)
            if out[pos + name_at : pos + name_at + n] == name.encode():
                (flags,) = struct.unpack_from("<H", out, pos + flags_at)
                struct.pack_into("<H", out, pos + flags_at, flags | bit)
            pos = out.find(sig, pos + 4)
    return bytes(out)


def test_encrypted_member_is_refused() -> None:
    _, raw = sb3_model("ppo-cartpole")
    hostile = _set_flag(raw, "data", 0x1)
    assert zipfile.ZipFile(io.BytesIO(hostile)).getinfo("data").flag_bits & 0x1
    with pytest.raises(
        PolicyLoadError, match="'data' is encrypted; Stable-Baselines3 archives are not"
    ):
        from_sb3(hostile)


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_unsupported_compression_is_refused(method: int) -> None:
    _, raw = sb3_model("ppo-cartpole")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, body in archive_members(raw):
            zf.writestr(name, body, compress_type=method if name == "data" else zipfile.ZIP_STORED)
    with pytest.raises(PolicyLoadError, match=f"compression method {method}; expected stored"):
        from_sb3(out.getvalue())


def test_archive_read_size_cap_bounds_what_is_read_from_a_path_and_bytes(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    import rlsec._files as files
    import rlsec.policies.sb3 as sb3

    _, raw = sb3_model("ppo-cartpole")
    path = tmp_path / "model.zip"
    path.write_bytes(raw + b"\0" * 100_000)  # a zip with trailing bytes still opens
    cap = len(raw) + 1000
    monkeypatch.setattr(sb3, "_MAX_ARCHIVE_BYTES", cap)
    reads: list[int] = []
    real_read, real_fstat = os.read, os.fstat

    def spy(fd: int, n: int) -> bytes:
        got = real_read(fd, n)
        reads.append(len(got))
        return got

    monkeypatch.setattr(files.os, "read", spy)
    with pytest.raises(UnsafeArtifact, match=f"{path} is larger than the {cap} bytes allowed"):
        from_sb3(path)
    assert reads == []  # refused on its size before a byte is read
    # a file that grows after its size was taken (here: a size that lies) is read only up to
    # one byte past the cap, then refused
    monkeypatch.setattr(
        files.os,
        "fstat",
        lambda fd: os.stat_result((*real_fstat(fd)[:6], 10, *real_fstat(fd)[7:])),
    )
    with pytest.raises(UnsafeArtifact, match=f"{path} is larger than the {cap} bytes allowed"):
        from_sb3(path)
    assert sum(reads) == cap + 1
    monkeypatch.undo()
    monkeypatch.setattr(sb3, "_MAX_ARCHIVE_BYTES", cap)
    with pytest.raises(UnsafeArtifact, match=f"at most {cap} bytes"):
        from_sb3(raw + b"\0" * 100_000)
    # at the cap exactly, both load
    path.write_bytes(raw + b"\0" * 1000)
    assert from_sb3(path).info.algo == "ppo"
    assert from_sb3(raw + b"\0" * 1000).info.algo == "ppo"


# == 5. fuzz: any data JSON either loads or raises an RLSecError ===============================

_FUZZ_CASES = [
    "ppo-cartpole",
    "ppo-relu-split",
    "ppo-sde-squash",
    "ppo-multidiscrete-obs",
    "ppo-uint8-image-mlp",
    "dqn-frozenlake",
    "sac-sde-pendulum",
    "td3-pendulum",
]
_PLAIN_PICKLED = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=8,
).map(lambda v: base64.b64encode(pickle.dumps(v)).decode())
_GLOBALS = st.sampled_from(
    [
        torch.nn.ReLU,
        torch.nn.Tanh,
        torch.nn.Softmax,
        PPO.policy_aliases["MlpPolicy"],
        DQN.policy_aliases["MlpPolicy"],
        SAC.policy_aliases["MlpPolicy"],
        TD3.policy_aliases["MlpPolicy"],
        PPO.policy_aliases["CnnPolicy"],
    ]
).map(lambda g: base64.b64encode(pickle.dumps(g)).decode())
_ANY = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, -1, 2, 2**63, "0", "2", "-3", "9" * 30, "[3 2]", "[nan 1.]"])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(
        [
            "<class 'torch.nn.modules.activation.ReLU'>",
            "<class 'torch.nn.modules.activation.Tanh'>",
            "<class 'stable_baselines3.common.torch_layers.FlattenExtractor'>",
            "<class 'gymnasium.spaces.box.Box'>",
            "<class 'gymnasium.spaces.discrete.Discrete'>",
            "[-1. -1.]",
            "[1. inf]",
        ]
    )
    | _PLAIN_PICKLED
    | _GLOBALS
    | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4)
    ),
    max_leaves=12,
)
_KEYS = st.sampled_from(
    [
        "observation_space",
        "action_space",
        "policy_kwargs",
        "policy_class",
        "use_sde",
        "clip_range",
        "policy_delay",
    ]
)


def _fuzz_edit(value: Any, data: st.DataObject, depth: int = 0) -> Any:
    if not isinstance(value, dict) or not value or depth > 3:
        return data.draw(_ANY)
    key = data.draw(st.sampled_from([*sorted(value), ":serialized:", "activation_fn", "start"]))
    out = dict(value)
    action = data.draw(st.sampled_from(["replace", "drop", "descend"]))
    if action == "drop":
        out.pop(key, None)
    elif action == "replace" or key not in value:
        out[key] = data.draw(_ANY)
    else:
        out[key] = _fuzz_edit(value[key], data, depth + 1)
    return out


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_sb3_data_loads_or_raises_an_rlsec_error(data: st.DataObject) -> None:
    case = data.draw(st.sampled_from(_FUZZ_CASES))
    _, raw = sb3_model(case)
    doc = json.loads(dict(archive_members(raw))["data"])
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(_KEYS)
        if data.draw(st.integers(0, 5)) == 5:
            doc.pop(key, None)
        else:
            doc[key] = _fuzz_edit(doc.get(key), data)
    if data.draw(st.integers(0, 20)) == 20:
        doc = data.draw(_ANY)
    body = json.dumps(doc).encode()
    if data.draw(st.integers(0, 10)) == 10:
        body = body[: data.draw(st.integers(0, len(body)))]
    try:
        policy = from_sb3(replace_member(raw, "data", body))
    except RLSecError:
        return
    obs = sample_obs(policy.observation_space, n=4)
    assert policy.act(obs).shape[0] == 4


@settings(max_examples=150, deadline=None)
@given(
    case=st.sampled_from(_FUZZ_CASES[:3]),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=4),
    cut=st.none() | st.floats(0, 1),
)
def test_damaged_archive_bytes_load_or_raise_an_rlsec_error(
    case: str, flips: list[tuple[float, int]], cut: float | None
) -> None:
    _, raw = sb3_model(case)
    out = bytearray(raw)
    for where, xor in flips:
        out[int(where * len(out))] ^= xor
    if cut is not None:
        out = out[: int(cut * len(out))]
    with contextlib.suppress(RLSecError):
        from_sb3(bytes(out))
