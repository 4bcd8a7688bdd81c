"""Every public module's ``__all__`` lists exactly what it defines publicly (httpx's
test_exported_members), so nothing private leaks and nothing public is forgotten."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import rlsec

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(rlsec.__path__, "rlsec.")
    if not any(part.startswith("_") for part in m.name.split(".")[1:])
)


@pytest.mark.parametrize("name", MODULES)
def test_all_matches_public_definitions(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(set(exported)) == len(exported), f"{name}.__all__ has duplicates"
    for item in exported:
        assert hasattr(module, item), f"{name}.__all__ names missing {item}"
    defined = {
        n
        for n, obj in vars(module).items()
        if not n.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", None) == name
    }
    assert defined <= set(exported), f"{name} defines public {sorted(defined - set(exported))}"
