"""Building environments from ids, and checking them against a policy.

Every environment rlsec builds goes through this module (:func:`env_spec`, :func:`make`,
:func:`make_vec`), which checks the id first (:func:`check_env_id`). Gymnasium reads an id of
the form ``module:EnvId`` as "import ``module``, then look up ``EnvId``", and importing runs
the module's code: ``evilmod:CartPole-v1`` would run ``evilmod.py`` from the working
directory or ``PYTHONPATH``. Until environments run in a sandbox, rlsec imports only
gymnasium's and rlsec's own modules for an id; any other module is refused with
:class:`~rlsec.errors.UnsafeEnvId`, unless the caller opts out inside
:func:`unsafe_no_sandbox` (``--unsafe-no-sandbox`` on the command line, ``unsafe_no_sandbox=
True`` in the library calls; results record it).

Importing this module (``import rlsec`` does) registers rlsec's own environments with
Gymnasium, once: :data:`ENV_IDS`. Without importing rlsec first, ``gym.make`` finds them as
``"rlsec.envs:rlsec/SlipperyPlant-v0"``.

Example:
    >>> env_spec("CartPole-v1").max_episode_steps
    500
    >>> try:
    ...     env_spec("this:CartPole-v1")  # the standard library's ``this`` prints a poem
    ... except UnsafeEnvId as exc:
    ...     print(str(exc)[:70])
    refusing the environment id 'this:CartPole-v1': Gymnasium would import
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import logging
import re
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import gymnasium as gym

from rlsec.core import Policy
from rlsec.errors import UnknownEnv, UnsafeEnvId
from rlsec.policies.spaces import check_same_space

__all__ = [
    "ENV_IDS",
    "MAX_ENV_ID_LENGTH",
    "SAFE_ENV_MODULES",
    "check_env_id",
    "check_policy_env",
    "env_spaces",
    "env_spec",
    "make",
    "make_vec",
    "unsafe_env_imports_allowed",
    "unsafe_no_sandbox",
]

#: rlsec's own environments: id -> (entry point, keyword arguments).
ENV_IDS: dict[str, tuple[str, dict[str, Any]]] = {
    "rlsec/SlipperyPlant-v0": ("rlsec.envs.plant:SlipperyPlantEnv", {}),
    "rlsec/SlipperyPlant32x32-v0": ("rlsec.envs.plant:SlipperyPlantEnv", {"size": 32}),
}

#: The packages whose modules an id's ``module:`` part may name without opting out of the
#: sandbox (and their public submodules: no part may start with ``_``, so ``rlsec.__main__``
#: is refused).
SAFE_ENV_MODULES: tuple[str, ...] = ("gymnasium", "rlsec")
#: Longer ids are refused before anything looks at them (suggestions compare strings).
MAX_ENV_ID_LENGTH = 256

_log = logging.getLogger("rlsec")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_NAME = re.compile(r"(?:[A-Za-z0-9_-]+/)?[A-Za-z0-9_.-]+")
_unsafe: ContextVar[bool] = ContextVar("rlsec_unsafe_env_imports", default=False)


def _register() -> None:
    """Register :data:`ENV_IDS` with Gymnasium unless already there (idempotent)."""
    for env_id, (entry_point, kwargs) in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=entry_point, kwargs=dict(kwargs))


_register()


@contextlib.contextmanager
def unsafe_no_sandbox(enabled: bool = True) -> Iterator[None]:
    """Inside the block, environment ids may name any module to import (``mod:EnvId``),
    which runs that module's code in this process, unsandboxed. Logs a warning.

    ``enabled=False`` changes nothing (so callers can pass their flag straight through);
    an enclosing block that allowed imports still does.

    Example:
        >>> with unsafe_no_sandbox():
        ...     unsafe_env_imports_allowed()
        True
        >>> unsafe_env_imports_allowed()
        False
    """
    if not enabled:
        yield
        return
    _log.warning(
        "unsafe-no-sandbox: environment ids may import modules from outside gymnasium and "
        "rlsec; their code runs in this process"
    )
    token = _unsafe.set(True)
    try:
        yield
    finally:
        _unsafe.reset(token)


def unsafe_env_imports_allowed() -> bool:
    """Whether the caller is inside :func:`unsafe_no_sandbox`."""
    return _unsafe.get()


def _is_safe_module(module: str) -> bool:
    parts = module.split(".")
    return parts[0] in SAFE_ENV_MODULES and not any(p.startswith("_") for p in parts)


def _where(module: str) -> str | None:
    """Where the top-level package of ``module`` would be imported from, found without
    running any of its code (``None``: nowhere on the module path)."""
    root = module.split(".")[0]
    try:
        spec = importlib.util.find_spec(root)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    return spec.origin or ", ".join(spec.submodule_search_locations or []) or "a namespace"


def check_env_id(env_id: object) -> str:
    """Check an environment id without importing or building anything; returns it.

    An id is ``[module:][namespace/]Name[-vN]``. The module part, which Gymnasium imports,
    must belong to gymnasium or rlsec (:data:`SAFE_ENV_MODULES`) unless inside
    :func:`unsafe_no_sandbox`.

    Raises:
        UnknownEnv: not a string, empty, longer than :data:`MAX_ENV_ID_LENGTH`, malformed, or
            naming a module that does not exist.
        UnsafeEnvId: naming a module outside gymnasium and rlsec (says what would be
            imported and from where).

    Example:
        >>> check_env_id("rlsec.envs:rlsec/SlipperyPlant-v0")
        'rlsec.envs:rlsec/SlipperyPlant-v0'
        >>> with unsafe_no_sandbox():
        ...     check_env_id("this:CartPole-v1")  # allowed, not imported yet
        'this:CartPole-v1'
    """
    if not isinstance(env_id, str) or not env_id:
        raise UnknownEnv(f"expected a Gymnasium environment id, got {env_id!r:.80}")
    if len(env_id) > MAX_ENV_ID_LENGTH:
        raise UnknownEnv(
            f"expected an environment id of at most {MAX_ENV_ID_LENGTH} characters, got "
            f"{len(env_id)} ({env_id[:40]!r}...)"
        )
    module, sep, name = env_id.rpartition(":")
    if not _NAME.fullmatch(name) or (sep and not _MODULE.fullmatch(module)):
        raise UnknownEnv(
            f"expected an environment id [module:][namespace/]Name[-vN] such as CartPole-v1, "
            f"got {env_id!r}"
        )
    if not sep or _is_safe_module(module) or _unsafe.get():
        return env_id
    where = _where(module)
    if where is None:
        raise UnknownEnv(
            f"unknown environment id {env_id!r}: it names the module {module!r} to import, "
            "and there is no such module"
        )
    raise UnsafeEnvId(
        f"refusing the environment id {env_id!r}: Gymnasium would import the module "
        f"{module!r} (from {where}) to find {name!r}, which runs that module's code in this "
        f"process. Until environments run in a sandbox, rlsec imports only modules of "
        f"{' and '.join(SAFE_ENV_MODULES)} for an environment id; to import {module!r} "
        "anyway, pass --unsafe-no-sandbox (Python: unsafe_no_sandbox=True), which the results "
        "record"
    )


def _import(module: str, env_id: str) -> None:
    if not _is_safe_module(module):
        _log.warning("importing %r for the environment id %r, unsandboxed", module, env_id)
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise UnknownEnv(
            f"unknown environment id {env_id!r}: cannot import the module {module!r} ({exc})"
        ) from None
    except Exception as exc:  # the module's own code failed: still a bad id
        raise UnknownEnv(
            f"unknown environment id {env_id!r}: importing the module {module!r} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def env_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """Gymnasium's spec for ``env_id``, after :func:`check_env_id` (importing the id's module,
    if it names one and may).

    Raises:
        UnknownEnv: with the closest registered ids.
        UnsafeEnvId: see :func:`check_env_id`.
    """
    check_env_id(env_id)
    module, sep, name = env_id.rpartition(":")
    if sep:
        _import(module, env_id)
    try:
        return gym.spec(name)
    except gym.error.Error:
        close = difflib.get_close_matches(name, list(gym.registry), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownEnv(f"unknown environment id {env_id!r}{hint}") from None


def make(env_id: str, **kwargs: Any) -> gym.Env[Any, Any]:
    """One ``env_id`` environment (``kwargs`` go to its constructor), built from the spec
    :func:`env_spec` checked."""
    return gym.make(env_spec(env_id), **kwargs)


def env_spaces(env_id: str) -> tuple[gym.Space[Any], gym.Space[Any]]:
    """The (observation, action) spaces of one ``env_id`` environment."""
    env = make(env_id)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def check_policy_env(policy: Policy, env_id: str) -> None:
    """Raise :class:`~rlsec.errors.SpaceMismatch` unless the policy fits the environment."""
    obs, act = env_spaces(env_id)
    check_same_space(
        f"observation space of {env_id} vs the policy", obs, policy.observation_space, bounds=True
    )
    check_same_space(
        f"action space of {env_id} vs the policy", act, policy.action_space, bounds=True
    )


def make_vec(env_id: str, num_envs: int, **kwargs: Any) -> gym.vector.VectorEnv[Any, Any, Any]:
    """``num_envs`` copies of ``env_id`` as one Gymnasium vector env (``kwargs`` go to
    ``gym.make_vec``).

    Uses the environment's own vectorised implementation where it has one (CartPole steps all
    copies in one numpy call), else a synchronous vector of copies.
    """
    return gym.make_vec(env_spec(env_id), num_envs=num_envs, **kwargs)
