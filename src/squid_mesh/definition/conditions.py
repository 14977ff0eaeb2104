"""Conditions on context paths that choose between transitions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from squid_mesh.definition.paths import MISSING, lookup, parse_path
from squid_mesh.errors import DefinitionError

_OPERATORS = ("equals", "greater_than", "less_than", "exists", "in")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(actual: object, expected: object) -> bool:
    # JSON has no 1 == true: a boolean only ever equals a boolean.
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected
    return bool(actual == expected)


@dataclass(frozen=True)
class Condition:
    """A test on one path of the accumulated context, used with ``wf.transition(..., when=...)``.

    Exactly one operator: ``equals``, ``greater_than``, ``less_than`` (numbers only), ``exists``
    (True/False) or ``in_`` (a list of values). A missing path or a value of the wrong type never
    matches (except ``exists=False``).

    Example:
        >>> Condition("invoice.amount", greater_than=100).matches({"invoice": {"amount": 120}})
        True
    """

    path: str
    equals: Any = MISSING
    greater_than: Any = MISSING
    less_than: Any = MISSING
    exists: Any = MISSING
    in_: Any = MISSING
    _parts: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"condition on {self.path!r}"
        object.__setattr__(self, "_parts", parse_path(self.path, where=where))
        given = [name for name, value in self._operands() if value is not MISSING]
        if len(given) != 1:
            raise DefinitionError(
                f"{where}: give exactly one operator of {', '.join(_OPERATORS)}; got {given or 'none'}"
            )
        op, value = self.operator
        if op in ("greater_than", "less_than") and not _is_number(value):
            raise DefinitionError(f"{where}: {op} needs a number, got {value!r}")
        if op == "exists" and not isinstance(value, bool):
            raise DefinitionError(f"{where}: exists needs True or False, got {value!r}")
        if op == "in" and not isinstance(value, list | tuple | frozenset | set):
            raise DefinitionError(f"{where}: in_ needs a list of values, got {value!r}")
        try:
            json.dumps(self.describe())
        except (TypeError, ValueError) as exc:
            raise DefinitionError(f"{where}: {op} value must be JSON-safe ({exc})") from None

    def _operands(self) -> list[tuple[str, Any]]:
        return [
            ("equals", self.equals),
            ("greater_than", self.greater_than),
            ("less_than", self.less_than),
            ("exists", self.exists),
            ("in", self.in_),
        ]

    @property
    def operator(self) -> tuple[str, Any]:
        """The ``(operator, operand)`` pair of this condition."""
        for name, value in self._operands():
            if value is not MISSING:
                return name, value
        raise AssertionError("unreachable: validated in __post_init__")

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any]) -> Condition:
        """Build a condition from ``{"path": ..., "<operator>": ...}``.

        Example:
            >>> Condition.from_mapping({"path": "risk", "in": ["low", "medium"]}).operator
            ('in', ['low', 'medium'])
        """
        unknown = set(spec) - {"path", *_OPERATORS}
        if unknown or "path" not in spec:
            raise DefinitionError(
                f"condition {dict(spec)!r}: needs 'path' and one of {', '.join(_OPERATORS)}"
                + (f"; unknown keys {sorted(unknown)}" if unknown else "")
            )
        kwargs = {("in_" if key == "in" else key): value for key, value in spec.items()}
        return cls(**kwargs)

    def matches(self, context: Mapping[str, Any]) -> bool:
        """Whether the context satisfies this condition."""
        op, expected = self.operator
        actual = lookup(context, self._parts)
        if op == "exists":
            return (actual is not MISSING) is expected
        if actual is MISSING:
            return False
        if op == "equals":
            return _same(actual, expected)
        if op == "in":
            return any(_same(actual, item) for item in expected)
        if not _is_number(actual):
            return False
        return bool(actual > expected) if op == "greater_than" else bool(actual < expected)

    def describe(self) -> dict[str, Any]:
        """A JSON-safe description, used by the fingerprint and the read model."""
        op, value = self.operator
        if op == "in":
            value = list(value)
        return {"path": self.path, op: value}
