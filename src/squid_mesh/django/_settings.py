"""``settings.SQUID_MESH``, read and checked: each mistake is named by its key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from squid_mesh.definition.workflow import Workflow

_KEYS = {"DATABASE", "WORKFLOWS", "OPTIONS"}
# sm.connect's own: the URL and the workflows come from the other keys.
_OPTIONS = {
    "strict_versions",
    "max_payload_bytes",
    "tracer_provider",
    "meter_provider",
}


@dataclass(frozen=True)
class Config:
    """The checked setting."""

    database: str = "default"
    workflows: tuple[Workflow, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


def load() -> Config:
    """Read ``settings.SQUID_MESH`` (every key optional)."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.db import connections
    from django.utils.module_loading import import_string

    raw = getattr(settings, "SQUID_MESH", {})
    if not isinstance(raw, dict):
        raise ImproperlyConfigured("SQUID_MESH: expected a dict")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ImproperlyConfigured(
            f"SQUID_MESH[{unknown[0]!r}]: unknown key (known: {', '.join(sorted(_KEYS))})"
        )
    database = raw.get("DATABASE", "default")
    if not isinstance(database, str) or database not in connections.settings:
        raise ImproperlyConfigured(
            f"SQUID_MESH['DATABASE']: {database!r} is not an alias of settings.DATABASES"
        )
    paths = raw.get("WORKFLOWS", [])
    if isinstance(paths, str) or not isinstance(paths, list | tuple):
        raise ImproperlyConfigured("SQUID_MESH['WORKFLOWS']: expected a list of dotted paths")
    workflows: list[Workflow] = []
    for i, path in enumerate(paths):
        where = f"SQUID_MESH['WORKFLOWS'][{i}]"
        try:
            found = import_string(path) if isinstance(path, str) else path
        except ImportError as exc:
            raise ImproperlyConfigured(f"{where}: cannot import {path!r}: {exc}") from None
        items = found if isinstance(found, list | tuple) else [found]
        for item in items:
            if not isinstance(item, Workflow):
                raise ImproperlyConfigured(f"{where}: {path!r} is not an sm.Workflow")
            workflows.append(item)
    options = raw.get("OPTIONS", {})
    if not isinstance(options, dict):
        raise ImproperlyConfigured("SQUID_MESH['OPTIONS']: expected a dict")
    for key in options:
        if key not in _OPTIONS:
            raise ImproperlyConfigured(
                f"SQUID_MESH['OPTIONS'][{key!r}]: not an option (known: {', '.join(sorted(_OPTIONS))})"
            )
    return Config(database, tuple(workflows), dict(options))
