"""Store: the only place with SQL. ``open_store(url)`` picks the backend from the URL."""

from __future__ import annotations

from squid_mesh.errors import InvalidOptionError
from squid_mesh.store import faults
from squid_mesh.store.base import Conflict, Store, Tx

__all__ = ["Conflict", "Store", "Tx", "open_store"]


def open_store(url: str, *, max_connections: int | None = None) -> Store:
    """A store for ``sqlite:///path.db``, ``sqlite:///:memory:``, ``postgresql://...``, ``django://ALIAS``.

    ``django://ALIAS`` is the Django database of that alias, on Django's own connections.

    ``max_connections``: the PostgreSQL pool's size (4 when ``None``); SQLite has one connection,
    and Django one per thread.
    """
    if max_connections is not None and (
        isinstance(max_connections, bool)
        or not isinstance(max_connections, int)
        or not 1 <= max_connections <= 1000
    ):
        raise InvalidOptionError("max_connections", "expected an integer from 1 to 1000")
    if not isinstance(url, str) or not url:
        raise InvalidOptionError(
            "url", "expected 'sqlite:///path.db', 'postgresql://...' or 'django://ALIAS'"
        )
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        if not path.startswith("/") or path == "/":
            raise InvalidOptionError(
                "url",
                "a SQLite URL is sqlite:///relative.db, sqlite:////abs/path.db or sqlite:///:memory:",
            )
        from squid_mesh.store.sqlite import SqliteStore

        return faults.from_environment(SqliteStore(path[1:]))
    if url.startswith(("postgresql://", "postgres://")):
        from squid_mesh.store.postgres import PostgresStore

        return faults.from_environment(PostgresStore(url, max_connections=max_connections or 4))
    if url.startswith("django://"):
        alias = url.removeprefix("django://")
        if not alias or "/" in alias:
            raise InvalidOptionError("url", "a Django URL is django://ALIAS, e.g. django://default")
        from squid_mesh.store.django_db import DjangoStore

        return faults.from_environment(DjangoStore(alias))
    scheme = url.split(":", 1)[0] if ":" in url else "<none>"
    raise InvalidOptionError(
        "url", f"unsupported scheme {scheme!r}; use sqlite:///, postgresql:// or django://"
    )
