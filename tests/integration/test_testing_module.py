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


def test_drain_refuses_another_clock_and_waits_out_queue_limits_and_held_claims() -> None:
    quick = sm.Workflow("quick")

    @quick.step()
    def one(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    quick.transition("one", to=sm.COMPLETE)
    clock = FakeClock()
    with mesh_for_tests([quick], clock=clock) as mesh:
        with pytest.raises(sm.InvalidOptionError, match="clock"):
            drain(mesh, clock=FakeClock(), advance=True)
        for _ in range(3):
            mesh.start("quick", {})
        # Another owner runs the first and holds the second (prefetched); one at a time allowed:
        # the third waits until that claim's lease runs out, then both are taken over and run.
        assert mesh.execute_next(owner_id="elsewhere", prefetch=True, lease=30) is not None
        mesh.set_queue_limits("default", concurrency=1, rate_limit=1, per=60)
        start = clock.now
        assert drain(mesh, clock=clock, advance=True, max_steps=50) == 2
        assert all(r.status == sm.RunStatus.COMPLETED for r in mesh.list_runs().runs)
        assert clock.now - start >= 30, "the held claim was waited out, not stolen"


def test_drain_fires_every_cron_slot_it_jumps_over() -> None:
    hourly = sm.Workflow("hourly", triggers=[sm.Cron("0 * * * *", name="tick")])

    @hourly.step()
    def beat(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    hourly.transition("beat", to=sm.COMPLETE)
    day = sm.Workflow("day")
    day.wait("nap", 24 * 3600, after=None)

    @day.step()
    def wake(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    day.transition("nap", to="wake")
    day.transition("wake", to=sm.COMPLETE)
    clock = FakeClock()
    with mesh_for_tests([hourly, day], clock=clock) as mesh:
        drain(mesh)  # the first tick starts the schedule
        run = mesh.start("day", {})
        drain(mesh, until=run.id, clock=clock, advance=True)
        assert len(mesh.list_runs(workflow="hourly", limit=100).runs) == 24


def test_a_payload_that_contains_itself_is_refused() -> None:
    with mesh_for_tests([looping()]) as mesh:
        payload: dict = {"a": 1}
        payload["self"] = payload
        with pytest.raises(sm.PayloadError):
            mesh.start("forever", payload)
