"""Loads a backend's named-query catalog (``queries.sql``) and its migration files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$")


def load_queries(backend: str) -> dict[str, str]:
    """``{name: sql}`` from ``store/<backend>/queries.sql``; comment lines are kept out of the SQL."""
    text = resources.files("squid_mesh.store").joinpath(backend, "queries.sql").read_text("utf-8")
    queries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _NAME.match(line)
        if match:
            name = match.group(1)
            if name in queries:
                raise ValueError(f"{backend}/queries.sql defines {name!r} twice")
            current = queries[name] = []
        elif current is not None and not line.lstrip().startswith("--"):
            current.append(line)
    return {name: "\n".join(lines).strip().rstrip(";") for name, lines in queries.items()}


@dataclass(frozen=True)
class Migration:
    """One numbered ``.sql`` file of a backend."""

    version: str
    sql: str

    def statements(self) -> list[str]:
        """The file's statements, comments removed (DDL here never has ``;`` inside a literal)."""
        body = "\n".join(
            line for line in self.sql.splitlines() if not line.lstrip().startswith("--")
        )
        return [stmt.strip() for stmt in body.split(";") if stmt.strip()]


def load_migrations(backend: str) -> list[Migration]:
    """The backend's migrations in version order (``0001_initial.sql`` -> version ``0001_initial``)."""
    folder = resources.files("squid_mesh.store").joinpath(backend, "migrations")
    files = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    return [Migration(entry.name.removesuffix(".sql"), entry.read_text("utf-8")) for entry in files]
