"""The host's own tables, in the same database as squid-mesh's, and how to reach them."""

from __future__ import annotations

import sqlite3
from typing import Any

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS host_invoices (
    id TEXT PRIMARY KEY, amount INTEGER NOT NULL, status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS host_ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, entry TEXT NOT NULL,
    amount INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS host_deliveries (
    run_id TEXT PRIMARY KEY, recipient TEXT NOT NULL
);
"""

POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS host_invoices (
    id TEXT PRIMARY KEY, amount INTEGER NOT NULL, status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS host_ledger (
    id BIGSERIAL PRIMARY KEY, run_id TEXT NOT NULL, entry TEXT NOT NULL, amount INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS host_deliveries (
    run_id TEXT PRIMARY KEY, recipient TEXT NOT NULL
);
"""


def connect(url: str) -> Any:
    """A DB-API connection (autocommit) to the database a squid-mesh URL names."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, timeout=30)
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn
    import psycopg

    return psycopg.connect(url, autocommit=True)


def mark(cursor: Any) -> str:
    """The parameter placeholder of a cursor's driver: ``?`` for sqlite3, ``%s`` for psycopg."""
    return "?" if isinstance(cursor, sqlite3.Cursor) else "%s"


def migrate(url: str) -> None:
    """Create the host's tables (idempotent)."""
    conn = connect(url)
    try:
        if isinstance(conn, sqlite3.Connection):
            conn.executescript(SQLITE_SCHEMA)
        else:
            conn.execute(POSTGRES_SCHEMA)
    finally:
        conn.close()


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of one query; write ``{}`` where a placeholder goes."""
    conn = connect(url)
    try:
        cur = conn.cursor()
        cur.execute(sql.format(*[mark(cur)] * sql.count("{}")), params)
        return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def execute(url: str, sql: str, params: tuple[Any, ...] = ()) -> None:
    """One statement, committed."""
    conn = connect(url)
    try:
        cur = conn.cursor()
        cur.execute(sql.format(*[mark(cur)] * sql.count("{}")), params)
    finally:
        conn.close()
