"""Migrations that add projection columns fill them for runs written before them."""

from __future__ import annotations

import sqlite3

import pytest

import squid_mesh as sm
from squid_mesh.store.queries import load_migrations
from tests.conftest import MeshFactory


def run_sql(db_url: str, statements: list[str]) -> None:
    if db_url.startswith("sqlite:///"):
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            for statement in statements:
                conn.execute(statement)
        return
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.mark.parametrize("version", ["0003_gates", "0005_completion_order"])
def test_a_migration_backfills_its_column_from_the_journal(
    make_mesh: MeshFactory, db_url: str, backend: str, version: str
) -> None:
    wf = sm.Workflow("old", version="1")

    @wf.step()
    def only(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    wf.transition("only", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    done = mesh.start("old", {})
    mesh.execute_next(owner_id="w")
    cancelled = mesh.start("old", {})
    mesh.cancel(cancelled.id, idempotency_key="k1")
    assert mesh.verify() == []
    # What a store written before the migration looks like: the new columns at their defaults.
    run_sql(
        db_url,
        [
            "UPDATE squid_mesh_attempts SET finished_rev = NULL",
            "UPDATE squid_mesh_runs SET command_keys = '{}'",
        ],
    )
    stale = {(p.run_id, p.field) for p in mesh.verify()}
    assert stale == {(done.id, "attempts"), (cancelled.id, "command_keys")}
    (migration,) = [m for m in load_migrations(backend) if m.version == version]
    run_sql(db_url, [s for s in migration.statements() if s.upper().startswith("UPDATE")])
    fixed = {(p.run_id, p.field) for p in mesh.verify()}
    repaired = (
        (done.id, "attempts") if version.startswith("0005") else (cancelled.id, "command_keys")
    )
    assert fixed == stale - {repaired}
