"""squid_mesh.testing: drain and mesh_for_tests, on both stores."""

from __future__ import annotations

import psycopg
import pytest

import squid_mesh as sm
from squid_mesh.testing import FakeClock, drain, mesh_for_tests
from tests.support.databases import ADMIN_URL, require_postgres


def looping() -> sm.Workflow:
    wf = sm.Workflow("forever")

    @wf.step(retry=sm.RetryPolicy(max_attempts=1000, backoff=sm.Backoff.fixed(1)))
    def spin(input: dict, ctx: sm.StepContext) -> dict:
        raise RuntimeError("never")

    wf.transition("spin", to=sm.COMPLETE)
    return wf


def test_drain_checks_its_options_and_stops_a_runaway_workflow() -> None:
    clock = FakeClock()
    with mesh_for_tests([looping()], clock=clock) as mesh:
        run = mesh.start("forever", {})
        with pytest.raises(sm.InvalidOptionError, match="advance"):
            drain(mesh, advance=True)
        with pytest.raises(sm.InvalidOptionError, match="until"):
            drain(mesh, until=3)  # type: ignore[arg-type]
        assert drain(mesh) == 1, "without advance, the scheduled retry waits for the clock"
        with pytest.raises(RuntimeError, match="after 20 steps"):
            drain(mesh, clock=clock, advance=True, max_steps=20)
        assert not mesh.inspect_run(run.id).terminal


def test_postgres_schemas_keep_tests_apart_and_are_dropped() -> None:
    require_postgres()
    first = mesh_for_tests([looping()], url=ADMIN_URL)
    second = mesh_for_tests([looping()], url=ADMIN_URL, seed=2)
    try:
        run = first.start("forever", {})
        assert second.list_runs().runs == ()
        assert [r.id for r in first.list_runs().runs] == [run.id]
    finally:
        first.close()
        second.close()
    with psycopg.connect(ADMIN_URL) as conn:
        left = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'squid_mesh%'"
        ).fetchone()
        schemas = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'squid_mesh_test_%'"
        ).fetchone()
    assert left == (0,) and schemas == (0,), "nothing left in the shared database"
