"""The public surface: ``squid_mesh.__all__`` is pinned, and every name in it is documented."""

from __future__ import annotations

import ast
import inspect
import itertools
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

import squid_mesh as sm

ROOT = Path(__file__).resolve().parents[2]

PUBLIC = sorted(
    [
        "AttemptStatus",
        "AttemptView",
        "Backoff",
        "Cancelled",
        "ChildView",
        "CommandView",
        "COMPLETE",
        "Condition",
        "Cron",
        "DefinitionDriftWarning",
        "DefinitionError",
        "Execution",
        "Explanation",
        "Fail",
        "Field",
        "GateView",
        "GraphEdge",
        "GraphNode",
        "HistoryEntry",
        "IdempotencyConflictError",
        "InputMappingError",
        "InvalidOptionError",
        "LeaseLostError",
        "Manual",
        "MigrationRefusedError",
        "Mesh",
        "MetricsServer",
        "ParentView",
        "QueueLimits",
        "QueueStats",
        "ScheduleView",
        "WorkerSeen",
        "PayloadError",
        "ReplayRefusedError",
        "Problem",
        "Reason",
        "Registry",
        "Retry",
        "RetryPolicy",
        "RunFinishedError",
        "RunGraph",
        "RunNotFoundError",
        "RunNotPausedError",
        "RunPage",
        "RunSnapshot",
        "RunStatus",
        "RunSummary",
        "SeededEntropy",
        "SpecError",
        "SquidMeshError",
        "StepContext",
        "StepView",
        "StoreError",
        "SystemEntropy",
        "UnknownWorkflowError",
        "Workflow",
        "Worker",
        "WaitTimeoutError",
        "WrongGateError",
        "__version__",
        "connect",
        "serve_metrics",
    ]
)


def test_all_is_pinned() -> None:
    assert sorted(sm.__all__) == PUBLIC, "a change to the public API must be deliberate"
    assert len(set(sm.__all__)) == len(sm.__all__), "no name is exported twice"


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_exists(name: str) -> None:
    assert hasattr(sm, name)


def own_docstring(obj: Any) -> str:
    """The object's own docstring: not inherited, not the one dataclasses generate."""
    if inspect.isclass(obj):
        doc = vars(obj).get("__doc__") or ""
        if re.match(rf"{re.escape(obj.__name__)}\(", doc):  # dataclass-generated signature
            return ""
        return str(doc).strip()
    return (inspect.getdoc(obj) or "").strip()


def attribute_docstring(module: Any, name: str) -> str:
    """The string literal right after ``name = ...`` at module level (the attribute docstring)."""
    body = ast.parse(inspect.getsource(module)).body
    for node, following in itertools.pairwise(body):
        targets = node.targets if isinstance(node, ast.Assign) else []
        named = any(isinstance(t, ast.Name) and t.id == name for t in targets)
        if named and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
            return str(following.value.value).strip()
    return ""


@pytest.mark.parametrize("name", [n for n in PUBLIC if n != "__version__"])
def test_every_public_name_has_a_docstring(name: str) -> None:
    obj = getattr(sm, name)
    if callable(obj):
        doc = own_docstring(obj)
    else:  # a constant such as COMPLETE: documented where it is defined
        from squid_mesh.definition import workflow

        doc = attribute_docstring(workflow, name)
    assert len(doc) >= 10, f"sm.{name} has no docstring"


def test_version_matches_the_package_metadata() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    assert sm.__version__ == project["version"]


PUBLIC_CLASSES = [n for n in PUBLIC if inspect.isclass(getattr(sm, n))]


@pytest.mark.parametrize("name", PUBLIC_CLASSES)
def test_public_methods_have_docstrings(name: str) -> None:
    cls = getattr(sm, name)
    undocumented = [
        attr
        for attr, value in vars(cls).items()
        if not attr.startswith("_")
        and (inspect.isfunction(value) or isinstance(value, classmethod | staticmethod | property))
        and not (inspect.getdoc(value.__func__ if hasattr(value, "__func__") else value) or "")
    ]
    assert undocumented == [], f"sm.{name} methods without docstrings: {undocumented}"


def test_errors_share_the_base_class_and_have_distinct_codes() -> None:
    errors = [getattr(sm, n) for n in PUBLIC if n.endswith("Error")]
    assert all(issubclass(e, sm.SquidMeshError) for e in errors)
    codes = [e.code for e in errors]
    assert len(set(codes)) == len(codes)
    assert all(re.fullmatch(r"[a-z_]+", c) for c in codes)
