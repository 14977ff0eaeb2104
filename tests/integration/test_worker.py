"""The bundled Worker in-process: concurrency, wake-ups, heartbeats, graceful stop, cron, async."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.clock import FakeClock


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def completed(mesh: sm.Mesh, *ids: str) -> Callable[[], bool]:
    return lambda: all(mesh.inspect_run(i).status == sm.RunStatus.COMPLETED for i in ids)


class Peak:
    """Counts steps inside at once; each waits until ``together`` of them are in (a barrier)."""

    def __init__(self, together: int) -> None:
        self.barrier = threading.Barrier(together, timeout=30)
        self.lock = threading.Lock()
        self.now = self.most = 0

    def run(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        self.barrier.wait()
        time.sleep(0.05)
        with self.lock:
            self.now -= 1


@pytest.fixture
def workers() -> Iterator[list[sm.Worker]]:
    started: list[sm.Worker] = []
    yield started
    for w in started:
        w.stop(grace_period=0)


def single(name: str, fn: Callable[[dict, sm.StepContext], dict], **step: object) -> sm.Workflow:
    wf = sm.Workflow(name)
    wf.step(name="work", **step)(fn)  # type: ignore[arg-type]
    wf.transition("work", to=sm.COMPLETE)
    return wf


def test_concurrency_8_runs_8_slow_steps_at_once(
    make_mesh: MeshFactory, workers: list[sm.Worker]
) -> None:
    # Each step waits until all 8 are inside at the same moment: only 8 at once can pass.
    peak = Peak(together=8)

    def slow(input: dict, ctx: sm.StepContext) -> dict:
        peak.run()
        return {"ok": True}

    mesh = make_mesh(
        [single("slow", slow, retry=sm.RetryPolicy(max_attempts=1))],
        clock=None,
        max_connections=12,
    )
    worker = sm.Worker(mesh, concurrency=8, poll_interval=0.2)
    workers.append(worker)
    worker.start()
    ids = [mesh.start("slow", {}).id for _ in range(16)]
    wait_for(completed(mesh, *ids), what="16 runs")
    assert peak.most == 8
    assert worker.executed == 16


def test_an_idle_worker_runs_a_delayed_retry_at_its_due_time_not_a_poll_later(
    make_mesh: MeshFactory, workers: list[sm.Worker]
) -> None:
    calls: list[float] = []

    def flaky(input: dict, ctx: sm.StepContext) -> dict:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise sm.Retry("not yet", after=0.3)
        return {}

    mesh = make_mesh([single("flaky", flaky, retry=sm.RetryPolicy(max_attempts=3))], clock=None)
    # A poll interval far beyond the test's patience: only the due time can wake it.
    worker = sm.Worker(mesh, poll_interval=120)
    workers.append(worker)
    worker.start()
    run = mesh.start("flaky", {})
    wait_for(completed(mesh, run.id), timeout=20, what="the retry")
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.29


def test_a_run_started_by_another_connection_wakes_an_idle_worker(
    make_mesh: MeshFactory, workers: list[sm.Worker], backend: str
) -> None:
    wf = single("hello", lambda input, ctx: {"hi": 1})
    mesh = make_mesh([wf], clock=None)
    elsewhere = make_mesh([wf], clock=None)
    # Postgres: LISTEN/NOTIFY; SQLite: adaptive polling capped at poll_interval.
    worker = sm.Worker(mesh, poll_interval=120 if backend == "postgres" else 0.2)
    workers.append(worker)
    worker.start()
    time.sleep(0.5)  # let it go idle first
    run = elsewhere.start("hello", {})
    wait_for(completed(mesh, run.id), timeout=20, what="the worker to wake")


def test_automatic_heartbeats_keep_a_long_step_leased(
    make_mesh: MeshFactory, workers: list[sm.Worker]
) -> None:
    release = threading.Event()

    def long(input: dict, ctx: sm.StepContext) -> dict:
        assert release.wait(30)
        return {}

    wf = single("long", long)
    mesh = make_mesh([wf], clock=None)
    thief = make_mesh([wf], clock=None)
    worker = sm.Worker(mesh, lease=1.0, heartbeat_every=0.2)
    workers.append(worker)
    worker.start()
    run = mesh.start("long", {})
    wait_for(lambda: worker.in_flight == 1, what="the step to start")
    time.sleep(2.0)  # two leases' worth
    assert thief.execute_next(owner_id="thief") is None, "the lease was kept alive"
    release.set()
    wait_for(completed(mesh, run.id))
    snap = mesh.inspect_run(run.id, history=True)
    assert snap.steps[0].attempts[-1].claims == 1
    assert any(e.kind == "attempt_heartbeat" for e in snap.history or ())


def test_stop_lets_running_steps_finish_within_the_grace_period(
    make_mesh: MeshFactory, workers: list[sm.Worker]
) -> None:
    entered = threading.Event()

    def brief(input: dict, ctx: sm.StepContext) -> dict:
        entered.set()
        time.sleep(0.3)
        return {"done": True}

    mesh = make_mesh([single("brief", brief)], clock=None)
    worker = sm.Worker(mesh)
    worker.start()
    run = mesh.start("brief", {})
    assert entered.wait(30)
    assert worker.stop(grace_period=30) == 0
    assert mesh.inspect_run(run.id).status == sm.RunStatus.COMPLETED


def test_stop_releases_a_step_still_running_after_the_grace_period(
    make_mesh: MeshFactory, workers: list[sm.Worker]
) -> None:
    entered, release = threading.Event(), threading.Event()
    runs: list[int] = []

    def stuck(input: dict, ctx: sm.StepContext) -> dict:
        runs.append(1)
        entered.set()
        release.wait(30)
        return {}

    wf = single("stuck", stuck)
    mesh = make_mesh([wf], clock=None)
    other = make_mesh([wf], clock=None)
    worker = sm.Worker(mesh, lease=300)
    worker.start()
    run = mesh.start("stuck", {})
    assert entered.wait(30)
    assert worker.stop(grace_period=0.2) == 1
    release.set()  # the first copy ends now; its result is refused
    # (On Postgres a claim skips a run whose row another transaction holds: let that record end.)
    wait_for(lambda: worker.executed == 1, what="the refused record")
    # Released, not left to its 300 s lease: another worker takes it over at once.
    done = other.execute_next(owner_id="next")
    assert done is not None and done.outcome == "completed"
    snap = mesh.inspect_run(run.id, history=True)
    assert snap.status == sm.RunStatus.COMPLETED
    assert [e.kind for e in snap.history or ()].count("attempt_released") == 1
    assert len(runs) == 2
    assert worker.executed == 1


def test_async_steps_share_one_event_loop(make_mesh: MeshFactory, workers: list[sm.Worker]) -> None:
    loops: list[asyncio.AbstractEventLoop] = []  # kept alive: ids of dead loops can repeat

    async def hop(input: dict, ctx: sm.StepContext) -> dict:
        loops.append(asyncio.get_running_loop())
        await asyncio.sleep(0.01)
        return {}

    mesh = make_mesh([single("hop", hop)], clock=None, max_connections=8)
    worker = sm.Worker(mesh, concurrency=4)
    workers.append(worker)
    worker.start()
    ids = [mesh.start("hop", {}).id for _ in range(6)]
    wait_for(completed(mesh, *ids))
    assert len(loops) == 6 and len({id(loop) for loop in loops}) == 1


def test_the_worker_ticks_cron_and_runs_what_it_starts(
    make_mesh: MeshFactory, workers: list[sm.Worker], clock: FakeClock
) -> None:
    wf = sm.Workflow("tick", triggers=[sm.Cron("* * * * *", name="every_minute")])

    @wf.step()
    def work(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    wf.transition("work", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    worker = sm.Worker(mesh, cron_every=0.05, poll_interval=0.05)
    workers.append(worker)
    worker.start()
    time.sleep(0.3)  # the first tick only learns the trigger
    assert mesh.list_runs().runs == ()
    clock.advance(61)
    wait_for(lambda: len(mesh.list_runs(status="completed").runs) == 1, what="the scheduled run")


def test_a_limited_queue_never_exceeds_its_concurrency_with_more_lanes(
    make_mesh: MeshFactory, workers: list[sm.Worker]
) -> None:
    peak = Peak(together=2)  # two do run together...

    def paired(input: dict, ctx: sm.StepContext) -> dict:
        peak.run()
        return {}

    wf = sm.Workflow("pay", queue="payments")
    wf.step(name="work", retry=sm.RetryPolicy(max_attempts=1))(paired)
    wf.transition("work", to=sm.COMPLETE)
    mesh = make_mesh([wf], clock=None, max_connections=10)
    mesh.set_queue_limits("payments", concurrency=2)
    worker = sm.Worker(mesh, queues=["payments"], concurrency=6, poll_interval=0.1)
    workers.append(worker)
    worker.start()
    ids = [mesh.start("pay", {}).id for _ in range(8)]
    wait_for(completed(mesh, *ids), what="8 runs")
    assert peak.most == 2  # ...and never three


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 2.5}, "concurrency"),
        ({"queues": []}, "queues"),
        ({"queues": "default"}, "queues"),
        ({"queues": ["bad queue"]}, "queue"),
        ({"lease": 0}, "lease"),
        ({"lease": 5, "heartbeat_every": 5}, "heartbeat_every"),
        ({"poll_interval": -1}, "poll_interval"),
        ({"grace_period": -1}, "grace_period"),
        ({"cron_every": 0}, "cron_every"),
    ],
)
def test_bad_worker_options_are_refused_by_name(
    make_mesh: MeshFactory, options: dict, field: str
) -> None:
    mesh = make_mesh([single("x", lambda i, c: {})])
    with pytest.raises(sm.InvalidOptionError, match=field):
        sm.Worker(mesh, **options)


def test_heartbeats_go_on_through_the_grace_period(
    make_mesh: MeshFactory, workers: list[sm.Worker]
) -> None:
    entered = threading.Event()

    def slow(input: dict, ctx: sm.StepContext) -> dict:
        entered.set()
        time.sleep(2.5)  # longer than two leases: only heartbeats keep the claim
        return {"done": True}

    wf = single("slowstop", slow)
    mesh = make_mesh([wf], clock=None)
    thief = make_mesh([wf], clock=None)
    worker = sm.Worker(mesh, lease=1.0, heartbeat_every=0.2)
    worker.start()
    run = mesh.start("slowstop", {})
    assert entered.wait(30)
    stopping = threading.Thread(target=worker.stop, kwargs={"grace_period": 10})
    stopping.start()
    time.sleep(1.5)
    assert thief.execute_next(owner_id="thief") is None, "the lease was kept during the grace"
    stopping.join(30)
    snap = mesh.inspect_run(run.id)
    assert snap.status == sm.RunStatus.COMPLETED
    assert snap.steps[0].attempts[-1].claims == 1


def test_a_claim_prefetched_on_a_later_queue_is_run_next_not_left_to_expire(
    make_mesh: MeshFactory, workers: list[sm.Worker]
) -> None:
    gate = threading.Event()
    two = sm.Workflow("two_on_b", queue="b")

    @two.step()
    def first(input: dict, ctx: sm.StepContext) -> dict:
        assert gate.wait(30)
        return {}

    @two.step()
    def second(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    two.transition("first", to="second")
    two.transition("second", to=sm.COMPLETE)
    on_a = sm.Workflow("busy_a", queue="a")

    @on_a.step()
    def chew(input: dict, ctx: sm.StepContext) -> dict:
        time.sleep(0.15)
        return {}

    on_a.transition("chew", to=sm.COMPLETE)
    mesh = make_mesh([two, on_a], clock=None)
    worker = sm.Worker(mesh, queues=["a", "b"], lease=1.0, heartbeat_every=0.3)
    workers.append(worker)
    worker.start()
    b_run = mesh.start("two_on_b", {})
    wait_for(lambda: worker.in_flight == 1, what="the b step to start")
    a_runs = [mesh.start("busy_a", {}).id for _ in range(12)]  # ~1.8 s of work on queue a
    gate.set()  # b's first step ends; its second is prefetched for this lane, on queue b
    wait_for(completed(mesh, b_run.id, *a_runs), what="all runs")
    [second_step] = [s for s in mesh.inspect_run(b_run.id).steps if s.name == "second"]
    assert second_step.attempts[-1].claims == 1, "run at once, not re-claimed after its lease"


def test_serve_runs_inside_an_asyncio_host_and_stops_when_cancelled(
    make_mesh: MeshFactory,
) -> None:
    wf = single("served", lambda input, ctx: {"ok": True})
    mesh = make_mesh([wf], clock=None)
    worker = sm.Worker(mesh, poll_interval=0.1)

    async def host() -> None:
        task = asyncio.create_task(worker.serve())
        run = mesh.start("served", {})
        for _ in range(3000):
            if mesh.inspect_run(run.id).status == sm.RunStatus.COMPLETED:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(host())
    assert worker.executed == 1
    assert worker.stop() == 0, "already stopped by the cancelled task"


def test_a_worker_with_more_lanes_than_the_pool_can_serve_says_so(
    backend: str, make_mesh: MeshFactory, caplog: pytest.LogCaptureFixture
) -> None:
    mesh = make_mesh([], clock=None)  # PostgreSQL's default pool: 4 connections
    with caplog.at_level(logging.WARNING, logger="squid_mesh.worker"):
        sm.Worker(mesh, concurrency=2)
        assert caplog.records == []  # 2 lanes, the dispatcher, the heartbeats: 4
        sm.Worker(mesh, concurrency=8)
    if backend == "sqlite":
        assert caplog.records == []  # one connection, shared in turns: nothing to size
    else:
        (record,) = caplog.records
        assert "concurrency=8 on a pool of 4 connections" in record.getMessage()
        assert "max_connections=11" in record.getMessage()
