"""What operators (and the web console) read: expired claims, workers seen, cron schedules."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.clock import FakeClock


def test_a_stalled_worker_shows_as_expired_claims_and_lapsed_leases(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    release, entered = threading.Event(), threading.Semaphore(0)
    wf = sm.Workflow("slow", queue="mail")

    @wf.step()
    def work(input: dict, ctx: sm.StepContext) -> dict:
        entered.release()
        assert release.wait(30)
        return {}

    wf.transition("work", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    mesh.start("slow", {})
    mesh.start("slow", {})
    assert mesh.workers() == []
    holder = threading.Thread(
        target=mesh.execute_next, kwargs={"owner_id": "w-1", "queue": "mail", "lease": 30}
    )
    holder.start()
    try:
        assert entered.acquire(timeout=30)
        seen = mesh.workers()
        assert [(w.owner, w.queue, w.claims, w.lapsed) for w in seen] == [("w-1", "mail", 1, 0)]
        assert seen[0].lease_until == datetime.fromtimestamp(clock.now + 30, UTC)
        assert mesh.queue_stats()["mail"] == sm.QueueStats("mail", 1, 1, 0, expired=0)
        clock.advance(31)  # the worker stalls past its lease
        assert mesh.queue_stats()["mail"] == sm.QueueStats("mail", 2, 0, 0, expired=1)
        assert [(w.owner, w.lapsed) for w in mesh.workers()] == [("w-1", 1)]
    finally:
        release.set()
        holder.join(30)


def test_schedules_list_each_cron_trigger_with_its_next_fire_time(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    wf = sm.Workflow(
        "digest",
        triggers=[sm.Cron("0 * * * *", name="hourly"), sm.Cron("30 6 * * *", name="morning")],
    )

    @wf.step()
    def send(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    wf.transition("send", to=sm.COMPLETE)
    manual = sm.Workflow("manual_only")

    @manual.step()
    def only(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    manual.transition("only", to=sm.COMPLETE)
    mesh = make_mesh([wf, manual])
    now = clock.now
    before = {s.trigger: s for s in mesh.schedules()}
    assert sorted(before) == ["hourly", "morning"]
    hourly = before["hourly"]
    assert (hourly.workflow, hourly.expression, hourly.timezone) == ("digest", "0 * * * *", "UTC")
    assert hourly.last_slot is None
    next_hour = (now // 3600 + 1) * 3600
    assert hourly.next_fire == datetime.fromtimestamp(next_hour, UTC)
    mesh.cron_tick()  # the first tick records "now" as handled: no backfill
    clock.advance(next_hour - now + 5)
    assert len(mesh.cron_tick()) == 1
    after = {s.trigger: s for s in mesh.schedules()}
    assert after["hourly"].last_slot == datetime.fromtimestamp(next_hour, UTC)
    assert after["hourly"].next_fire == datetime.fromtimestamp(next_hour + 3600, UTC)
