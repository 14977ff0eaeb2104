"""Shared plumbing of the hypothesis state machines (tests/integration/test_*machine.py)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TypeVar

_files = itertools.count()

M = TypeVar("M", bound=type)


def example_url(backend: str, url: str, tmp: Path) -> str:
    """A clean, migrated store for one hypothesis example.

    Postgres: the test's database, emptied (one database per test, not per example: creating one
    costs more than the example). SQLite: a new file, which the caller migrates.
    """
    if backend == "postgres":
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE squid_mesh_facts, squid_mesh_attempts, squid_mesh_runs CASCADE")
        return url
    return f"sqlite:///{tmp / f'machine-{next(_files)}.db'}"


def machine_for(machine: M, backend: str, url: str, tmp: Path) -> M:
    """A subclass of ``machine`` bound to one backend and database."""
    return type(  # type: ignore[return-value]
        f"{machine.__name__}_{backend}",
        (machine,),
        {"backend": backend, "url": url, "tmp": tmp},
    )
