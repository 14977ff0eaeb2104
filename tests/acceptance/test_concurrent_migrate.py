"""Four processes migrate one fresh database at the same instant: all succeed, each version once."""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path

import pytest

import squid_mesh as sm
from tests.acceptance.procs import release_barrier, workers
from tests.acceptance.workflows import all_workflows
from tests.support.databases import database

PROCESSES = 4


def shipped_versions(backend: str) -> list[str]:
    """The migration files in the installed package (``0001_initial.sql`` -> ``0001_initial``)."""
    folder = resources.files("squid_mesh.store").joinpath(backend, "migrations")
    return sorted(e.name.removesuffix(".sql") for e in folder.iterdir() if e.name.endswith(".sql"))


def recorded_versions(url: str) -> list[tuple[str, int]]:
    """``(version, times recorded)`` from the migrations table."""
    sql = "SELECT version, count(*) FROM squid_mesh_migrations GROUP BY version ORDER BY version"
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            rows = conn.execute(sql).fetchall()
        conn.close()
        return [(str(v), int(n)) for v, n in rows]
    import psycopg

    with psycopg.connect(url) as pg:
        return [(str(v), int(n)) for v, n in pg.execute(sql).fetchall()]


@pytest.mark.slow
def test_concurrent_migrations_from_four_processes(backend: str, tmp_path: Path) -> None:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    owners = [f"m{i}" for i in range(PROCESSES)]
    with database(backend, tmp_path, migrated=False) as url:
        with workers(tmp_path / "logs") as pool:
            # Each process connects, waits at the barrier, then migrates as soon as it is released.
            started = [
                pool.start(url, owner, "--mode", "migrate", "--barrier", str(barrier))
                for owner in owners
            ]
            release_barrier(barrier, owners, pool)
            for worker in started:
                assert worker.finish(timeout=60) == ['{"migrated": true}', "0"]

        versions = shipped_versions(backend)
        assert versions, "the package ships migrations"
        assert recorded_versions(url) == [(v, 1) for v in versions]

        with sm.connect(url, workflows=all_workflows()) as mesh:
            mesh.migrate()  # one more, after the fact: still a no-op
            run = mesh.start("acc_three", {"n": 1})
            while mesh.execute_next(owner_id="after-migrate"):
                pass
            snap = mesh.inspect_run(run.id)
            assert snap.status == sm.RunStatus.COMPLETED
            assert snap.context == {"a": 2, "b": 4, "c": 3}
            assert mesh.verify() == []
        assert recorded_versions(url) == [(v, 1) for v in versions]
