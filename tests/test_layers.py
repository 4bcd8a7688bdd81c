"""Imports point one way: the layers of docs/architecture.md, checked over the source.

Every import of an ``rlsec`` module is read from the syntax tree (at module level, inside a
function, or under ``TYPE_CHECKING``: a lazy import hides a dependency, it does not remove
it), and each must go to a lower layer or stay inside its own package. Inside a package the
modules' imports form no cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: Lowest first. A module may import modules of a lower layer, and its own package's.
#: Entries of one layer may not import each other.
LAYERS: list[set[str]] = [
    {"errors", "_version"},
    {"_files", "_inputs", "_home", "stats"},
    {"core"},
    {"policies"},
    {"envs"},
    {"verify", "registry"},
    {"attacks"},
    {"defenses"},
    {"evaluate"},
    {"report"},
    {"redteam"},
    {"poison"},
    {"_cli_registry"},
    {"cli"},
    {"__main__", "rlsec"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, src: Path) -> list[tuple[str, int]]:
    """(imported rlsec module, line) for every import in the file."""
    name = _module_name(path, src)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from rlsec.x import y``: y is a submodule (the import is of it) or a name in
            # rlsec.x (the import is of rlsec.x)
            subs = [f"{target}.{a.name}" for a in node.names]
            found += [(m, node.lineno) for m in subs if _existing(m, src)]
            if len([m for m in subs if _existing(m, src)]) < len(subs):
                found.append((target, node.lineno))
    return [(t, line) for t, line in found if t == "rlsec" or t.startswith("rlsec.")]


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "rlsec"


def _sources(src: Path) -> list[Path]:
    return sorted((src / "rlsec").rglob("*.py"))


def _existing(module: str, src: Path) -> bool:
    rel = Path(*module.split("."))
    return (src / rel).with_suffix(".py").is_file() or (src / rel / "__init__.py").is_file()


def upward_imports(src: Path) -> list[str]:
    wrong = []
    for path in _sources(src):
        me = _module_name(path, src)
        for target, line in _imports(path, src):
            if not _existing(target, src):
                continue  # ``from rlsec.x import name`` names an attribute, not a module
            a, b = _top(me), _top(target)
            if a == b or a == "rlsec":
                continue
            if RANK[b] >= RANK[a]:
                wrong.append(f"{path.relative_to(src)}:{line}: {me} imports {target}")
    return wrong


def cycles_inside_packages(src: Path) -> list[str]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in _sources(src):
        me = _module_name(path, src)
        for target, _ in _imports(path, src):
            if _existing(target, src) and target != me and _top(target) == _top(me) != "rlsec":
                graph[me].add(target)
    found: list[str] = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                path = [*trail, node]
                found.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def test_every_source_module_has_a_layer() -> None:
    tops = {_top(_module_name(p, SRC)) for p in _sources(SRC)}
    assert tops - set(RANK) == set(), "give the new module a layer in LAYERS and the docs"
    assert set(RANK) - tops == set(), "a layer names a module that no longer exists"


def test_imports_point_down_the_layers() -> None:
    assert upward_imports(SRC) == []


def test_no_import_cycle_inside_a_package() -> None:
    assert cycles_inside_packages(SRC) == []


def _fake_tree(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "src"
    for name, text in files.items():
        f = src / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return src


_PACKAGES = {
    "rlsec/__init__.py": "",
    "rlsec/attacks/__init__.py": "",
    "rlsec/evaluate/__init__.py": "",
    "rlsec/evaluate/campaign.py": "",
    "rlsec/defenses/__init__.py": "",
    "rlsec/defenses/training.py": "",
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from rlsec.evaluate.campaign import run_campaign\n", "imports rlsec.evaluate.campaign"),
        ("def f():\n    from rlsec.evaluate import rollout\n", "imports rlsec.evaluate"),
        ("import rlsec.defenses.training\n", "imports rlsec.defenses.training"),
        ("from rlsec import evaluate\n", "imports rlsec.evaluate"),
        ("if TYPE_CHECKING:\n    from ..defenses import training\n", "imports rlsec.defenses"),
    ],
)
def test_the_layer_check_sees_an_upward_import_however_it_is_written(
    source: str, expected: str, tmp_path: Path
) -> None:
    src = _fake_tree(tmp_path, {**_PACKAGES, "rlsec/attacks/bad.py": source})
    found = upward_imports(src)
    assert len(found) >= 1 and any(expected in f for f in found), found
    assert all(f.startswith("rlsec/attacks/bad.py:") for f in found)


def test_the_cycle_check_sees_a_lazy_circle(tmp_path: Path) -> None:
    src = _fake_tree(
        tmp_path,
        {
            **_PACKAGES,
            "rlsec/attacks/a.py": "from rlsec.attacks.b import x\n",
            "rlsec/attacks/b.py": "def f():\n    from rlsec.attacks import c\n",
            "rlsec/attacks/c.py": "from rlsec.attacks import a\n",
        },
    )
    assert cycles_inside_packages(src) == [
        "rlsec.attacks.a -> rlsec.attacks.b -> rlsec.attacks.c -> rlsec.attacks.a"
    ]


def test_no_source_file_is_over_a_thousand_lines() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in _sources(SRC)
        if (n := len(p.read_text().splitlines())) > 1000
    }
    assert long == {}, "split the file by concern (docs/architecture.md)"
