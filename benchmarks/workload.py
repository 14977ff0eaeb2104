"""The benchmark workflow (three trivial steps) and store set-up."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import squid_mesh as sm

PG_ADMIN = os.environ.get("SQUID_MESH_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
PG_DATABASE = "squid_mesh_bench"
STEPS_PER_RUN = 3


def three_steps() -> sm.Workflow:
    wf = sm.Workflow("bench_three", version="1")

    @wf.step()
    def one(input: dict, ctx: sm.StepContext) -> dict:
        return {"one": 1}

    @wf.step()
    def two(input: dict, ctx: sm.StepContext) -> dict:
        return {"two": 2}

    @wf.step()
    def three(input: dict, ctx: sm.StepContext) -> dict:
        return {"three": 3}

    wf.transition("one", to="two")
    wf.transition("two", to="three")
    wf.transition("three", to=sm.COMPLETE)
    return wf


LOOP_STEPS = 10


def ten_step_loop() -> sm.Workflow:
    """One step that loops back to itself until it has run LOOP_STEPS times."""
    wf = sm.Workflow("bench_loop", version="1")

    @wf.step(max_visits=LOOP_STEPS, entry=True)
    def tick(input: dict, ctx: sm.StepContext) -> dict:
        return {"n": input["n"] + 1}

    wf.transition("tick", to="tick", when=sm.Condition("n", less_than=LOOP_STEPS))
    wf.transition("tick", to=sm.COMPLETE)
    return wf


def pg_url(dbname: str = PG_DATABASE) -> str:
    return f"{PG_ADMIN.partition('?')[0].rsplit('/', 1)[0]}/{dbname}"


def fresh_store(store: str) -> str:
    """A fresh, migrated database URL for the chosen store."""
    if store == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="squid-mesh-bench-"))
        url = f"sqlite:///{folder / 'bench.db'}"
    else:
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {PG_DATABASE}")
        url = pg_url()
    with sm.connect(url) as mesh:
        mesh.migrate()
    return url


def drop_store(url: str) -> None:
    """Remove a benchmark database."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.parent.rmdir()
        return
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")


def committed_transactions(url: str) -> int | None:
    """Postgres: the database's committed-transaction counter (None on SQLite).

    Read from a fresh connection after the measured connections closed, so their counts have
    been flushed to the statistics system.
    """
    if not url.startswith("postgres"):
        return None
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else None
