"""Bulk loader for the history scenario: finished runs made of exactly the rows the API writes.

One template run goes through the public API; its run row, attempt rows and journal rows are then
copied inside the database (INSERT ... SELECT over a generated series), changing only the run id.
The copies get version-7 run ids from the year 1970, so they sort before every real run, as an
older history would. This is benchmark tooling, not library code: the library's SQL lives in
src/squid_mesh/store/.
"""

from __future__ import annotations

import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import squid_mesh as sm
from benchmarks.workload import three_steps

TABLES = ("squid_mesh_runs", "squid_mesh_attempts", "squid_mesh_facts")
CHUNK = 100_000


def template_run(url: str) -> str:
    with sm.connect(url, workflows=[three_steps()]) as mesh:
        run = mesh.start("bench_three", {"template": True})
        while mesh.execute_next(owner_id="seed", prefetch=True):
            pass
        assert mesh.inspect_run(run.id).status == "completed"
        return run.id


def seed(url: str, template: str, start: int, count: int) -> None:
    """Copy the template run `count` times, as runs number start .. start + count - 1.

    PostgreSQL takes the chunks on two connections at once (the machine has two cores); SQLite has
    one writer at a time, so it takes them in turn.
    """
    chunks = [(lo, min(lo + CHUNK, start + count)) for lo in range(start, start + count, CHUNK)]
    if url.startswith("sqlite:///"):
        for lo, hi in chunks:
            _sqlite_copy(url, template, lo, hi)
        return
    with ThreadPoolExecutor(max_workers=2) as pool:
        for done in [pool.submit(_postgres_copy, url, template, lo, hi) for lo, hi in chunks]:
            done.result()


def _sqlite_copy(url: str, template: str, lo: int, hi: int) -> None:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN IMMEDIATE")
        for table in TABLES:
            cols = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            others = ", ".join(c for c in cols if c != "run_id")
            conn.execute(
                f"WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) "
                f"INSERT INTO {table} (run_id, {others}) "
                f"SELECT printf('00000000-0000-7000-8000-%012x', n.i), {others} "
                f"FROM n, {table} t WHERE t.run_id = ?",
                (lo, hi, template),
            )
        conn.execute("COMMIT")
    finally:
        conn.close()


def _postgres_copy(url: str, template: str, lo: int, hi: int) -> None:
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute("SET synchronous_commit = off")
        for table in TABLES:
            cols = [
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = %s ORDER BY ordinal_position",
                    (table,),
                ).fetchall()
            ]
            others = ", ".join(c for c in cols if c != "run_id")
            conn.execute(
                f"INSERT INTO {table} (run_id, {others}) "
                f"SELECT '00000000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'), {others} "
                f"FROM generate_series(%s::bigint, %s::bigint - 1) AS i, {table} t "
                f"WHERE t.run_id = %s",
                (lo, hi, template),
            )


def settle(url: str) -> None:
    """Leave the seeded store as a long-lived one would be: analyzed, checkpointed, on disk.

    Without this the measurement right after seeding competes with the write-back of gigabytes of
    freshly written pages and measures the disk, not squid-mesh.
    """
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute("ANALYZE")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            conn.execute("CHECKPOINT")
    os.sync()


def checkpoint(url: str) -> None:
    """Write the WAL back into the database file.

    Reads of pages still in SQLite's WAL cost a WAL-index lookup each, and how many there are
    depends on when the last automatic checkpoint happened to run: without this, two read
    measurements differ by 2x in either direction for reasons unrelated to the history's size.
    """
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")


def history_ids(count: int, sample: int) -> list[str]:
    step = max(1, count // sample)
    return [f"00000000-0000-7000-8000-{i:012x}" for i in range(0, count, step)][:sample]
