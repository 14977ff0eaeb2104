"""Input mapping (what part of the context a step receives) and output wrapping."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from squid_mesh.definition.paths import MISSING, lookup, parse_path
from squid_mesh.errors import DefinitionError, InputMappingError


@dataclass(frozen=True)
class InputMapping:
    """Either a selection of top-level keys or named nested paths.

    ``select`` keeps the listed keys that exist; ``paths`` builds ``{target: value_at_path}`` and
    refuses a missing path (the step cannot run without its input).
    """

    select: tuple[str, ...] | None = None
    paths: tuple[tuple[str, tuple[str, ...]], ...] | None = None

    @classmethod
    def parse(cls, spec: object, *, step: str) -> InputMapping | None:
        """Accept ``None``, a list of keys or a ``{target: "dotted.path"}`` mapping.

        Example:
            >>> InputMapping.parse({"account": "load.account_id"}, step="s").paths
            (('account', ('load', 'account_id')),)
        """
        if spec is None:
            return None
        where = f"step {step!r} input"
        if isinstance(spec, Mapping):
            if not spec:
                raise DefinitionError(f"{where}: the mapping is empty")
            pairs = []
            for target, path in spec.items():
                if not isinstance(target, str) or not target:
                    raise DefinitionError(f"{where}: target names must be non-empty strings")
                pairs.append((target, parse_path(path, where=f"{where} {target!r}")))
            return cls(paths=tuple(pairs))
        if isinstance(spec, Sequence) and not isinstance(spec, str):
            keys = tuple(spec)
            if not keys or not all(isinstance(k, str) and k for k in keys):
                raise DefinitionError(f"{where}: a selection must be a non-empty list of key names")
            if len(set(keys)) != len(keys):
                raise DefinitionError(f"{where}: the selection names a key twice")
            return cls(select=keys)
        raise DefinitionError(
            f"{where}: expected a list of keys or a {{target: 'dotted.path'}} mapping, got {spec!r}"
        )

    def apply(self, view: Mapping[str, Any], *, step: str) -> dict[str, Any]:
        """The step's input taken from the context view."""
        if self.select is not None:
            return {key: view[key] for key in self.select if key in view}
        result: dict[str, Any] = {}
        for target, parts in self.paths or ():
            value = lookup(view, parts)
            if value is MISSING:
                raise InputMappingError(step, target, ".".join(parts))
            result[target] = value
        return result

    def describe(self) -> object:
        """A JSON-safe description, used by the fingerprint."""
        if self.select is not None:
            return list(self.select)
        return {target: ".".join(parts) for target, parts in self.paths or ()}


def wrap_output(output: Mapping[str, Any], key: str | None) -> dict[str, Any]:
    """Put a step's output under ``key`` when one is declared.

    Example:
        >>> wrap_output({"id": 7}, "invoice")
        {'invoice': {'id': 7}}
    """
    return {key: dict(output)} if key else dict(output)
