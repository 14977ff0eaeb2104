"""Payload schemas: a pydantic model or declared fields; checked at start, before any write."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from squid_mesh.definition.paths import MISSING
from squid_mesh.errors import DefinitionError, PayloadError


@dataclass(frozen=True)
class Field:
    """One declared payload field.

    Example:
        >>> payload = {"invoice_id": Field(str), "attempts": Field(int, required=False, default=0)}
    """

    type: type = str
    required: bool = True
    default: Any = MISSING

    def __post_init__(self) -> None:
        if not isinstance(self.type, type):
            raise DefinitionError(
                f"Field type must be a type such as str or int, got {self.type!r}"
            )


class PayloadSchema:
    """Validates and normalises start payloads into a JSON object.

    Built from a pydantic model class, a ``{name: Field}`` mapping, or nothing (any JSON object).
    """

    def __init__(self, workflow: str, spec: object) -> None:
        self._workflow = workflow
        self._model: Any = None
        self._spec = spec
        self._description: object = None
        if spec is None:
            return
        if isinstance(spec, Mapping):
            for name, field in spec.items():
                if not isinstance(name, str) or not name:
                    raise DefinitionError(
                        f"workflow {workflow!r} payload: field names must be strings"
                    )
                if not isinstance(field, Field):
                    raise DefinitionError(
                        f"workflow {workflow!r} payload field {name!r}: expected sm.Field(...), "
                        f"got {type(field).__name__}"
                    )
            self._description = {
                name: {"type": f.type.__name__, "required": f.required and f.default is MISSING}
                for name, f in sorted(spec.items())
            }
        elif isinstance(spec, type) and hasattr(spec, "model_validate"):
            self._model = spec
            self._description = f"{spec.__module__}.{spec.__qualname__}"
        else:
            raise DefinitionError(
                f"workflow {workflow!r} payload: expected a pydantic model class or "
                f"{{name: sm.Field(...)}}, got {spec!r}"
            )

    def describe(self) -> object:
        """A JSON-safe description."""
        return self._description

    def _compiled(self) -> Any:
        # pydantic is imported on first use only, to keep `import squid_mesh` cheap.
        if self._model is None and isinstance(self._spec, Mapping):
            import pydantic

            fields: dict[str, Any] = {}
            for name, f in self._spec.items():
                if f.default is not MISSING:
                    fields[name] = (f.type, f.default)
                elif f.required:
                    fields[name] = (f.type, ...)
                else:
                    fields[name] = (f.type | None, None)
            self._model = pydantic.create_model(
                f"{self._workflow}_payload",
                __config__=pydantic.ConfigDict(extra="forbid", strict=True),
                **fields,
            )
        return self._model

    def validate(self, payload: object) -> dict[str, Any]:
        """The normalised payload, or a :class:`PayloadError` naming every bad field."""
        if not isinstance(payload, Mapping):
            raise PayloadError(self._workflow, {"<payload>": "must be a mapping (a JSON object)"})
        bad_keys = [k for k in payload if not isinstance(k, str)]
        if bad_keys:
            raise PayloadError(self._workflow, {repr(k): "keys must be strings" for k in bad_keys})
        model = self._compiled()
        if model is None:
            return _json_object(self._workflow, payload)
        import pydantic

        problems: dict[str, str] = {}
        known = set(model.model_fields) | {
            f.alias for f in model.model_fields.values() if f.alias is not None
        }
        for key in payload:
            if key not in known:
                problems[key] = "unknown field"
        try:
            value = model.model_validate(dict(payload))
        except RecursionError:
            raise PayloadError(self._workflow, {"<payload>": "is nested too deeply"}) from None
        except pydantic.ValidationError as exc:
            for error in exc.errors(include_url=False, include_input=False):
                name = ".".join(str(part) for part in error["loc"]) or "<payload>"
                if error["type"] == "extra_forbidden":
                    problems[name] = "unknown field"
                elif error["type"] == "missing":
                    problems[name] = "missing required field"
                else:
                    problems[name] = str(error["msg"])
        if problems:
            raise PayloadError(self._workflow, problems)
        return _json_object(self._workflow, value.model_dump(mode="json"))


def _json_object(workflow: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    try:
        loaded = dict(json.loads(json.dumps(payload, allow_nan=False)))
    except (TypeError, ValueError) as exc:
        raise PayloadError(workflow, {"<payload>": f"must be JSON-serialisable ({exc})"}) from None
    except RecursionError:
        raise PayloadError(workflow, {"<payload>": "is nested too deeply"}) from None
    if loaded != payload:
        # json.dumps turned a nested {0: ...} into {"0": ...} (or a tuple into a list): the run
        # would hold another payload than the one given. A non-string key is refused.
        where = non_string_key(payload)
        if where is not None:
            raise PayloadError(workflow, {where: "keys must be strings"})
    return loaded


def non_string_key(payload: Mapping[str, Any]) -> str | None:
    """Where the first non-string key is (a loop: no depth limit), or ``None``."""
    stack: list[tuple[tuple[Any, ...], Any]] = [((), payload)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str):
                    return ".".join(map(str, (*path, repr(key))))
                stack.append(((*path, key), item))
        elif isinstance(value, list | tuple):
            stack.extend(((*path, i), item) for i, item in enumerate(value))
    return None
