"""A host application's test written with squid_mesh.testing alone: no sleeping, any store.

The first test uses only the pytest plugin's fixtures (``mesh``, ``clock``) and the
``squid_mesh_workflows`` override a host would put in its conftest; the second runs the same
scenario on a fresh SQLite file and on a fresh PostgreSQL schema through ``mesh_for_tests``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta

import pytest

import squid_mesh as sm
from squid_mesh.testing import FakeClock, drain, mesh_for_tests
from tests.support.databases import ADMIN_URL, require_postgres


def host_workflows() -> list[sm.Workflow]:
    """What a host might have: a flaky charge with backoff, a cool-off wait, a nightly report."""
    charge = sm.Workflow("charge")
    calls: list[int] = []

    @charge.step(retry=sm.RetryPolicy(max_attempts=3, backoff=sm.Backoff.fixed(300)))
    def call_gateway(input: dict, ctx: sm.StepContext) -> dict:
        calls.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError("gateway timeout")
        return {"charged": True}

    charge.wait("cool_off", timedelta(hours=24), after=None)

    @charge.step()
    def send_receipt(input: dict, ctx: sm.StepContext) -> dict:
        return {"receipt": True}

    charge.transition("call_gateway", to="cool_off")
    charge.transition("cool_off", to="send_receipt")
    charge.transition("send_receipt", to=sm.COMPLETE)

    report = sm.Workflow("nightly_report", triggers=[sm.Cron("0 2 * * *", name="nightly")])

    @report.step()
    def build(input: dict, ctx: sm.StepContext) -> dict:
        return {"built": True}

    report.transition("build", to=sm.COMPLETE)
    return [charge, report]


def scenario(mesh: sm.Mesh, clock: FakeClock) -> None:
    began = time.perf_counter()
    assert drain(mesh) == 0  # the first cron tick starts the schedule now: no backfill
    clock.set(mesh.schedules()[0].next_fire)  # 02:00 the next night
    assert drain(mesh) == 1
    (nightly,) = mesh.list_runs(workflow="nightly_report").runs
    assert nightly.status == sm.RunStatus.COMPLETED and nightly.trigger == "nightly"

    start = clock.now
    run = mesh.start("charge", {})
    assert drain(mesh, until=run.id, clock=clock, advance=True) >= 5
    snap = mesh.inspect_run(run.id)
    assert snap.status == sm.RunStatus.COMPLETED and snap.context["receipt"] is True
    assert [len(s.attempts) for s in snap.steps if s.name == "call_gateway"] == [3]
    # two 300 s backoffs, then the 24 h wait: exactly that much fake time went by
    assert clock.now - start == 2 * 300 + 24 * 3600
    # ... during which the next night's slot came due, and the drain ticked it too.
    drain(mesh)
    nights = mesh.list_runs(workflow="nightly_report").runs
    assert [r.status for r in nights] == [sm.RunStatus.COMPLETED] * 2
    print(f"two days of workflow time in {time.perf_counter() - began:.3f} s of wall time")


@pytest.fixture
def squid_mesh_workflows() -> Sequence[sm.Workflow]:
    return host_workflows()


def test_with_the_plugin_fixtures(mesh: sm.Mesh, clock: FakeClock) -> None:
    scenario(mesh, clock)


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_on_a_fresh_sqlite_file_or_postgres_schema(store: str) -> None:
    url = None
    if store == "postgres":
        require_postgres()
        url = ADMIN_URL
    clock = FakeClock()
    with mesh_for_tests(host_workflows(), url=url, clock=clock) as mesh:
        scenario(mesh, clock)
