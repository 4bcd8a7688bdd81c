"""Environment ids: one choke point (rlsec.envs) that never imports a module outside
gymnasium and rlsec unless the caller opted out of the sandbox."""

from __future__ import annotations

import ast
import contextlib
import itertools
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rlsec
from rlsec.envs import check_env_id, env_spaces, env_spec, make, make_vec, unsafe_no_sandbox
from rlsec.errors import UnknownEnv, UnsafeEnvId

SRC = Path(rlsec.__file__).parent
_names = itertools.count()


def plant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A module on sys.path that writes a marker file when imported."""
    name = f"planted_env_mod_{next(_names)}_{tmp_path.name[-8:]}".replace("-", "_")
    marker = tmp_path / f"{name}.imported"
    (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name, marker


@pytest.mark.parametrize(
    "build",
    [check_env_id, env_spec, make, env_spaces, lambda e: make_vec(e, 2)],
    ids=["check_env_id", "env_spec", "make", "env_spaces", "make_vec"],
)
def test_a_module_outside_gymnasium_and_rlsec_is_refused_and_never_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, build: object
) -> None:
    name, marker = plant(tmp_path, monkeypatch)
    with pytest.raises(UnsafeEnvId) as info:
        build(f"{name}:CartPole-v1")  # type: ignore[operator]
    message = str(info.value)
    assert f"the module {name!r}" in message
    assert str(tmp_path / f"{name}.py") in message  # says what would be imported, from where
    assert "runs that module's code" in message and "--unsafe-no-sandbox" in message
    assert not marker.exists()
    assert name not in sys.modules


def test_the_standard_librarys_this_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    already = "this" in sys.modules
    with pytest.raises(UnsafeEnvId, match="the module 'this'"):
        env_spec("this:CartPole-v1")
    assert ("this" in sys.modules) == already
    assert "Beautiful is better than ugly" not in capsys.readouterr().out


def test_private_modules_of_rlsec_are_refused_too(capsys: pytest.CaptureFixture[str]) -> None:
    # importing rlsec.__main__ would run the command line
    with pytest.raises(UnsafeEnvId, match=r"rlsec\.__main__"):
        make("rlsec.__main__:CartPole-v1")
    assert capsys.readouterr().out == ""


def test_unsafe_no_sandbox_imports_the_module_only_inside_its_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, marker = plant(tmp_path, monkeypatch)
    with unsafe_no_sandbox():
        env = make(f"{name}:CartPole-v1")
        env.close()
    assert marker.read_text() == "ran"  # the test above would see an import
    with pytest.raises(UnsafeEnvId):
        env_spec(f"{name}:CartPole-v1")
    with unsafe_no_sandbox(False), pytest.raises(UnsafeEnvId):
        env_spec(f"{name}:CartPole-v1")


def test_gymnasium_and_rlsec_modules_are_imported_without_opting_out() -> None:
    assert env_spec("rlsec.envs:rlsec/SlipperyPlant-v0").id == "rlsec/SlipperyPlant-v0"
    assert env_spec("gymnasium.envs.classic_control:CartPole-v1").id == "CartPole-v1"


@pytest.mark.parametrize(
    ("env_id", "message"),
    [
        ("no_such_module_anywhere:CartPole-v1", "there is no such module"),
        ("gymnasium.no_such_module:CartPole-v1", "cannot import the module"),
        ("a:b:CartPole-v1", "expected an environment id"),
        (":CartPole-v1", "expected an environment id"),
        ("Cart Pole-v1", "expected an environment id"),
        ("CartPole-v1\x00", "expected an environment id"),
        ("x" * 257, "at most 256 characters"),
        ("", "expected a Gymnasium environment id"),
        ("NoSuchEnv-v0", "unknown environment id 'NoSuchEnv-v0'"),
        ("gymnasium:NoSuchEnv-v0", "unknown environment id 'gymnasium:NoSuchEnv-v0'"),
    ],
)
def test_malformed_and_unknown_ids_are_unknown_envs(env_id: str, message: str) -> None:
    with pytest.raises(UnknownEnv, match=message):
        make(env_id)


def test_an_unsafe_module_that_fails_to_import_is_an_unknown_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_env_mod.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with unsafe_no_sandbox(), pytest.raises(UnknownEnv, match="RuntimeError: boom"):
        env_spec("broken_env_mod:CartPole-v1")


@settings(max_examples=60, deadline=None)
@given(module=st.from_regex(r"[a-z_][a-z0-9_]{0,12}(\.[a-z_][a-z0-9_]{0,8}){0,2}", fullmatch=True))
def test_no_id_imports_a_module_outside_gymnasium_and_rlsec(module: str) -> None:
    before = set(sys.modules)
    root = module.split(".")[0]
    with contextlib.suppress(UnknownEnv, UnsafeEnvId):
        env_spec(f"{module}:CartPole-v1")
    new = set(sys.modules) - before
    assert all(m.split(".")[0] in ("gymnasium", "rlsec") for m in new), new
    if root not in ("gymnasium", "rlsec"):
        assert module not in new


_BUILDERS = {("gym", "make"), ("gym", "make_vec"), ("gym", "spec")}
_BUILDERS |= {("gymnasium", n) for _, n in _BUILDERS}


def test_every_environment_is_built_through_rlsec_envs() -> None:
    """No module but rlsec.envs calls gymnasium's make/make_vec/spec, and SB3's make_vec_env
    only ever gets a function (rlsec.envs.make inside), never an id to resolve itself."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "envs" / "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            if (
                isinstance(f, ast.Attribute)
                and isinstance(f.value, ast.Name)
                and (f.value.id, f.attr) in _BUILDERS
            ):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} {f.value.id}.{f.attr}")
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if name == "make_vec_env" and not (node.args and isinstance(node.args[0], ast.Lambda)):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} make_vec_env(id)")
    assert offenders == []
