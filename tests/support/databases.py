"""Fresh databases for tests: a SQLite file, or a Postgres database cloned from a migrated template.

Postgres tests connect to SQUID_MESH_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/test).
When it is unreachable they skip with a message, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count
from pathlib import Path
from typing import NoReturn

import pytest

import squid_mesh as sm

ADMIN_URL = os.environ.get("SQUID_MESH_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
TABLES = ("squid_mesh_runs", "squid_mesh_attempts", "squid_mesh_facts")
_names = count()
_template: dict[str, str] = {}


def _admin() -> object:
    import psycopg

    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)


def _url_for(dbname: str) -> str:
    base, _, _ = ADMIN_URL.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{dbname}"


def unavailable(message: str) -> NoReturn:
    """Skip with ``message`` on a laptop; fail under CI=true, where nothing may be skipped."""
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_postgres() -> None:
    """Skip (or, under CI=true, fail) when Postgres is unreachable."""
    try:
        conn = _admin()
    except Exception as exc:  # any failure to connect means "not available"
        unavailable(
            f"PostgreSQL not reachable at {ADMIN_URL.split('@')[-1]} ({type(exc).__name__}); "
            "start it or set SQUID_MESH_TEST_PG_URL to run the Postgres half of the suite"
        )
    conn.close()  # type: ignore[attr-defined]


def _drop_stale(conn: object) -> None:
    rows = conn.execute(  # type: ignore[attr-defined]
        "SELECT datname FROM pg_database WHERE datname LIKE 'sm\\_test\\_%'"
    ).fetchall()
    for (name,) in rows:
        pid = int(name.split("_")[2])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[attr-defined]
        except PermissionError:
            pass


def _ensure_template() -> str:
    if "name" not in _template:
        name = f"sm_test_{os.getpid()}_template"
        with _admin() as conn:  # type: ignore[attr-defined]
            _drop_stale(conn)
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        with sm.connect(_url_for(name)) as mesh:
            mesh.migrate()
        _template["name"] = name
    return _template["name"]


@contextmanager
def postgres_database(*, migrated: bool = True) -> Iterator[str]:
    """A fresh database (cloned from a migrated template), dropped afterwards."""
    require_postgres()
    name = f"sm_test_{os.getpid()}_{next(_names)}"
    with _admin() as conn:  # type: ignore[attr-defined]
        if migrated:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_ensure_template()}"')
        else:
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _url_for(name)
    finally:
        with _admin() as conn:  # type: ignore[attr-defined]
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def sqlite_database(tmp: Path, *, migrated: bool = True) -> Iterator[str]:
    """A fresh SQLite file under ``tmp``."""
    url = f"sqlite:///{tmp / f'mesh-{next(_names)}.db'}"
    if migrated:
        with sm.connect(url) as mesh:
            mesh.migrate()
    yield url


@contextmanager
def database(backend: str, tmp: Path, *, migrated: bool = True) -> Iterator[str]:
    """A fresh database URL of the given backend."""
    if backend == "sqlite":
        with sqlite_database(tmp, migrated=migrated) as url:
            yield url
    else:
        with postgres_database(migrated=migrated) as url:
            yield url


def row_counts(url: str) -> dict[str, int]:
    """Rows per squid-mesh table: used to prove that a refused command wrote nothing."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    import psycopg

    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}  # type: ignore[index]


def drop_template() -> None:
    """Drop this process's template database (end of session)."""
    if "name" in _template:
        with _admin() as conn:  # type: ignore[attr-defined]
            conn.execute(f'DROP DATABASE IF EXISTS "{_template.pop("name")}" WITH (FORCE)')
