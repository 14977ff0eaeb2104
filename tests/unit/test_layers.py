"""Imports point one way (definition, journal <- store <- engine <- read, mesh) and nothing unpickles."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import squid_mesh

SRC = Path(squid_mesh.__file__).resolve().parent
PACKAGE = "squid_mesh"

# layer -> the squid_mesh subpackages/modules it must never import
FORBIDDEN = {
    "definition": ("store", "engine", "read", "mesh", "worker", "cli"),
    "journal": ("store", "engine", "read", "mesh", "worker", "cli"),
    "store": ("engine", "read", "mesh", "worker", "cli"),
    "engine": ("read", "mesh", "worker", "cli"),
    # Telemetry is told things; it asks nothing of the layers that tell it.
    "observe": ("definition", "journal", "store", "engine", "read", "mesh", "worker", "cli"),
}
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "shelve", "marshal"}


def modules() -> list[Path]:
    found = sorted(SRC.rglob("*.py"))
    assert len(found) > 10, "the walk found the package's modules"
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, text: str | None = None) -> Iterator[tuple[int, str]]:
    """Every module name imported anywhere in the file (also inside functions), made absolute.

    ``from squid_mesh import store`` yields ``squid_mesh.store`` as well as ``squid_mesh``.
    ``text`` stands in for the file's content (to test the checker itself).
    """
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    source = path.read_text("utf-8") if text is None else text
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base = ".".join(base_parts[: len(base_parts) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            yield node.lineno, source
            for alias in node.names:
                yield node.lineno, f"{source}.{alias.name}"


def layer_of(path: Path) -> str | None:
    rel = path.relative_to(SRC).parts
    return rel[0] if len(rel) > 1 and rel[0] in FORBIDDEN else None


def violations(path: Path, text: str | None = None) -> list[str]:
    layer = layer_of(path)
    if layer is None:
        return []
    bad = []
    for lineno, name in imported(path, text):
        for other in FORBIDDEN[layer]:
            if name == f"{PACKAGE}.{other}" or name.startswith(f"{PACKAGE}.{other}."):
                bad.append(f"{path.relative_to(SRC)}:{lineno} imports {name} ({layer} -> {other})")
    return bad


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_one_way(path: Path) -> None:
    assert violations(path) == []


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_nothing_unpickles_or_evaluates(path: Path) -> None:
    names = {name for _, name in imported(path)}
    assert not {n.split(".")[0] for n in names} & UNSAFE_MODULES
    calls = [
        node.func.id
        for node in ast.walk(ast.parse(path.read_text("utf-8")))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    ]
    assert not {"eval", "exec"} & set(calls), "nothing read from the database is ever executed"


def test_every_layer_exists() -> None:
    assert {layer_of(p) for p in modules()} - {None} == set(FORBIDDEN)


def test_the_checker_sees_relative_lazy_and_from_package_imports() -> None:
    source = (
        "def later():\n"
        "    from ..engine import planner\n"
        "    from squid_mesh import mesh\n"
        "    import squid_mesh.read.snapshot\n"
        "from . import facts\n"
    )
    pretend = SRC / "journal" / "fold.py"
    found = {name for _, name in imported(pretend, source) if name.startswith(PACKAGE)}
    assert {
        "squid_mesh.engine",
        "squid_mesh.engine.planner",
        "squid_mesh.mesh",
        "squid_mesh.read.snapshot",
        "squid_mesh.journal.facts",
    } <= found


@pytest.mark.parametrize(
    ("where", "source", "flagged"),
    [
        ("definition/workflow.py", "from squid_mesh.store import open_store\n", True),
        ("journal/fold.py", "from ..read import snapshot\n", True),
        ("store/sql.py", "def f():\n    from squid_mesh.engine.core import Engine\n", True),
        ("engine/core.py", "import squid_mesh.mesh\n", True),
        ("engine/core.py", "from squid_mesh import read\n", True),
        ("engine/core.py", "from squid_mesh.store.base import Store\n", False),
        ("store/sql.py", "from squid_mesh.journal.fold import RunState\n", False),
        ("definition/workflow.py", "from squid_mesh.storefront import x\n", False),
        ("mesh.py", "from squid_mesh.read.snapshot import snapshot\n", False),
    ],
)
def test_the_checker_flags_wrong_way_imports(where: str, source: str, flagged: bool) -> None:
    assert bool(violations(SRC / where, source)) is flagged
