"""list_runs at scale: 10,000 runs paged while new ones start; Postgres walks an index, no sort."""

from __future__ import annotations

from pathlib import Path

import pytest

import squid_mesh as sm
from squid_mesh.store.queries import load_queries
from tests.conftest import MeshFactory
from tests.support.clock import FakeClock
from tests.support.databases import database

RUNS = 10_000


def tiny() -> sm.Workflow:
    wf = sm.Workflow("tiny", version="1")

    @wf.step()
    def only(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    wf.transition("only", to=sm.COMPLETE)
    return wf


@pytest.mark.slow
def test_ten_thousand_runs_page_newest_first_once_each_while_runs_start(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    mesh = make_mesh([tiny()])
    started = []
    for i in range(RUNS):
        if i % 7 == 0:
            clock.advance(0.001)  # some runs share a start time: ties are ordered by id
        started.append(mesh.start("tiny", {}).id)
    seen: list[tuple[float, str]] = []
    cursor = None
    pages = 0
    while True:
        page = mesh.list_runs(workflow="tiny", limit=100, cursor=cursor)
        seen.extend((r.created_at.timestamp(), r.id) for r in page)
        pages += 1
        for _ in range(3):  # newer runs start between pages; they never enter later pages
            clock.advance(0.001)
            mesh.start("tiny", {})
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == RUNS // 100
    ids = [run_id for _, run_id in seen]
    assert len(ids) == RUNS and set(ids) == set(started), "every run exactly once"
    # Newest first: start times never increase down the listing; ties go by descending id.
    assert seen == sorted(seen, reverse=True)


@pytest.mark.parametrize(
    "filters",
    [
        (),
        ("filter_workflow",),
        ("filter_status",),
        ("filter_queue",),
        ("filter_workflow", "filter_status"),
        ("filter_workflow", "filter_before"),
    ],
)
def test_postgres_pages_through_an_index_without_sorting(
    tmp_path: Path, filters: tuple[str, ...]
) -> None:

    with database("postgres", tmp_path) as db_url, sm.connect(db_url, workflows=[tiny()]) as mesh:
        for _ in range(200):
            mesh.start("tiny", {})
        plan = _plan(db_url, filters)
    assert "Index" in plan, plan
    assert "Sort" not in plan, plan


def _plan(db_url: str, filters: tuple[str, ...]) -> str:
    import psycopg

    queries = load_queries("postgres")
    sql = queries["list_runs"].replace("/* filters */", " ".join(queries[name] for name in filters))
    params = {
        "workflow": "tiny",
        "status": "running",
        "queue": "default",
        "before_at": 1e12,
        "before_id": "z",
        "limit": 51,
    }
    # The same session settings as the store's connections (see PostgresStore).
    options = "-c enable_sort=off -c enable_bitmapscan=off"
    with psycopg.connect(db_url, autocommit=True, options=options) as conn:
        conn.execute("ANALYZE squid_mesh_runs")
        return "\n".join(row[0] for row in conn.execute("EXPLAIN " + sql, params).fetchall())
