"""Dotted paths into the accumulated context (``"invoice.amount"``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from squid_mesh.errors import DefinitionError

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()


def parse_path(path: object, *, where: str) -> tuple[str, ...]:
    """Split a dotted path (or accept a list of keys); refuse empty parts.

    Example:
        >>> parse_path("invoice.amount", where="condition")
        ('invoice', 'amount')
    """
    if isinstance(path, str):
        parts = tuple(path.split("."))
    elif isinstance(path, list | tuple) and all(isinstance(p, str) for p in path):
        parts = tuple(path)
    else:
        raise DefinitionError(f"{where}: path must be a dotted string, got {path!r}")
    if not parts or any(not part for part in parts):
        raise DefinitionError(f"{where}: path {path!r} has an empty part")
    return parts


def lookup(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path``, or ``MISSING``.

    Example:
        >>> lookup({"a": {"b": 1}}, ("a", "b"))
        1
    """
    current: Any = data
    for part in path:
        if not isinstance(current, Mapping) or part not in current:
            return MISSING
        current = current[part]
    return current
