"""Priorities, per-queue concurrency and rate limits, and queue statistics."""

from __future__ import annotations

import threading

import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.clock import FakeClock


def one_step(name: str = "job", queue: str = "default") -> sm.Workflow:
    wf = sm.Workflow(name, queue=queue)

    @wf.step()
    def work(input: dict, ctx: sm.StepContext) -> dict:
        return {"done": input.get("n")}

    wf.transition("work", to=sm.COMPLETE)
    return wf


def parent_and_child() -> list[sm.Workflow]:
    child = one_step("kid")
    parent = sm.Workflow("parent")

    @parent.step()
    def spawn(input: dict, ctx: sm.StepContext) -> dict:
        ctx.start_child("kid", {}, child_key="k")
        return {}

    parent.transition("spawn", to=sm.COMPLETE)
    return [parent, child]


def test_higher_priority_is_claimed_first_then_the_earliest_due(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    mesh = make_mesh([one_step()])
    started = []
    for n, priority in enumerate([0, 5, 1, 5, -2]):
        started.append((mesh.start("job", {"n": n}, priority=priority).id, priority))
        clock.advance(1)
    order = []
    while (done := mesh.execute_next(owner_id="w")) is not None:
        order.append(done.run_id)
    ids = [rid for rid, _ in started]
    assert order == [ids[1], ids[3], ids[2], ids[0], ids[4]]


def test_priority_is_kept_by_later_steps_children_and_replays(make_mesh: MeshFactory) -> None:
    mesh = make_mesh(parent_and_child())
    low = mesh.start("kid", {"n": 1})
    high = mesh.start("parent", {}, priority=9)
    assert high.priority == 9 and low.priority == 0
    first = mesh.execute_next(owner_id="w")
    assert first is not None and first.run_id == high.id
    [child] = mesh.inspect_run(high.id).children
    assert mesh.inspect_run(child.run_id).priority == 9
    second = mesh.execute_next(owner_id="w")
    assert second is not None and second.run_id == child.run_id, "the child outranks the old run"
    assert mesh.execute_next(owner_id="w") is not None
    again = mesh.replay(high.id)
    assert again.priority == 9
    assert mesh.verify() == []


@pytest.mark.parametrize("bad", [True, 1.5, "3", 10**7])
def test_a_bad_priority_is_refused_by_name_and_nothing_is_written(
    make_mesh: MeshFactory, bad: object
) -> None:
    mesh = make_mesh([one_step()])
    with pytest.raises(sm.InvalidOptionError, match="priority"):
        mesh.start("job", {}, priority=bad)  # type: ignore[arg-type]
    assert mesh.list_runs().runs == ()


def blocking(
    name: str, queue: str, release: threading.Event, entered: threading.Semaphore
) -> sm.Workflow:
    wf = sm.Workflow(name, queue=queue)

    @wf.step()
    def work(input: dict, ctx: sm.StepContext) -> dict:
        entered.release()
        assert release.wait(30), "the test never let the step go"
        return {}

    wf.transition("work", to=sm.COMPLETE)
    return wf


def test_a_concurrency_limit_holds_claims_and_frees_a_slot_when_one_ends(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    release, entered = threading.Event(), threading.Semaphore(0)
    wf = blocking("job", "payments", release, entered)
    mesh = make_mesh([wf])
    other = make_mesh([wf])
    limits = mesh.set_queue_limits("payments", concurrency=2)
    assert limits == sm.QueueLimits("payments", concurrency=2)
    assert other.queue_limits() == {"payments": limits}
    ids = [mesh.start("job", {"n": n}).id for n in range(4)]
    threads = [
        threading.Thread(
            target=other.execute_next, kwargs={"owner_id": f"t{i}", "queue": "payments"}
        )
        for i in range(2)
    ]
    for t in threads:
        t.start()
    for _ in threads:
        assert entered.acquire(timeout=30)
    assert other.execute_next(owner_id="third", queue="payments") is None, "the limit is 2"
    assert mesh.execute_next(owner_id="fourth", queue="payments") is None
    assert mesh.queue_stats()["payments"] == sm.QueueStats("payments", 2, 2, 0)
    release.set()
    for t in threads:
        t.join(30)
    assert mesh.execute_next(owner_id="after", queue="payments") is not None, "a slot is free"
    statuses = [mesh.inspect_run(i).status.value for i in ids]
    assert statuses.count("completed") == 3


def test_an_expired_lease_no_longer_holds_a_slot(make_mesh: MeshFactory, clock: FakeClock) -> None:
    release, entered = threading.Event(), threading.Semaphore(0)
    wf = blocking("job", "payments", release, entered)
    mesh = make_mesh([wf])
    mesh.set_queue_limits("payments", concurrency=1)
    mesh.start("job", {})
    mesh.start("job", {})
    holder = threading.Thread(
        target=mesh.execute_next, kwargs={"owner_id": "slow", "queue": "payments", "lease": 10.0}
    )
    holder.start()
    assert entered.acquire(timeout=30)
    assert mesh.execute_next(owner_id="b", queue="payments") is None
    clock.advance(11)
    thief = threading.Thread(
        target=mesh.execute_next, kwargs={"owner_id": "b", "queue": "payments"}
    )
    thief.start()
    assert entered.acquire(timeout=30), "the expired claim's slot went to another worker"
    release.set()
    holder.join(30)
    thief.join(30)


def test_a_rate_limit_hands_out_tokens_at_its_rate(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    mesh = make_mesh([one_step(queue="mail")])
    mesh.set_queue_limits("mail", rate_limit=2, per=60)
    for n in range(9):
        mesh.start("job", {"n": n})

    def drain() -> int:
        done = 0
        while mesh.execute_next(owner_id="w", queue="mail", prefetch=True) is not None:
            done += 1
        return done

    assert drain() == 2, "a full bucket of two"
    clock.advance(29)
    assert drain() == 0, "less than one token regained"
    clock.advance(1)
    assert drain() == 1, "one token per 30 s"
    clock.advance(600)
    assert drain() == 2, "the bucket never holds more than the limit"
    assert drain() == 0
    mesh.set_queue_limits("mail", rate_limit=2, per=60)  # the same again: the bucket is kept
    assert drain() == 0
    mesh.set_queue_limits("mail", rate_limit=3, per=60)  # a new rate: a new, full bucket
    assert drain() == 3
    mesh.set_queue_limits("mail")  # no limits: removed
    assert mesh.queue_limits() == {}
    assert drain() == 1
    assert mesh.queue_stats().get("mail") is None


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"rate_limit": -1}, "rate_limit"),
        ({"rate_limit": 5, "per": 0}, "per"),
        ({"rate_limit": 5, "per": "soon"}, "per"),
    ],
)
def test_bad_queue_limits_are_refused_by_name(
    make_mesh: MeshFactory, options: dict, field: str
) -> None:
    mesh = make_mesh([one_step()])
    with pytest.raises(sm.InvalidOptionError, match=field):
        mesh.set_queue_limits("default", **options)
    with pytest.raises(sm.InvalidOptionError, match="queue"):
        mesh.set_queue_limits("no spaces", concurrency=1)
    assert mesh.queue_limits() == {}


def test_queue_stats_count_visible_claimed_and_scheduled(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    release, entered = threading.Event(), threading.Semaphore(0)
    wf = sm.Workflow("flaky")
    fail_first = [True]

    @wf.step(retry=sm.RetryPolicy(max_attempts=3, backoff=sm.Backoff.fixed(60)))
    def work(input: dict, ctx: sm.StepContext) -> dict:
        if fail_first[0]:
            fail_first[0] = False
            raise RuntimeError("down")
        entered.release()
        assert release.wait(30)
        return {}

    wf.transition("work", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    for _ in range(3):
        mesh.start("flaky", {})
    assert mesh.queue_stats() == {"default": sm.QueueStats("default", 3, 0, 0)}
    failed = mesh.execute_next(owner_id="w")
    assert failed is not None and failed.outcome == "retry_scheduled"
    holder = threading.Thread(target=mesh.execute_next, kwargs={"owner_id": "h"})
    holder.start()
    assert entered.acquire(timeout=30)
    assert mesh.queue_stats() == {"default": sm.QueueStats("default", 1, 1, 1)}
    release.set()
    holder.join(30)


def test_a_heartbeat_cannot_revive_a_lapsed_lease_on_a_limited_queue(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    seen: list[str] = []
    wf = sm.Workflow("beating", queue="payments")

    @wf.step()
    def work(input: dict, ctx: sm.StepContext) -> dict:
        ctx.heartbeat()  # within the lease: fine
        clock.advance(40)  # the 30 s lease has run out meanwhile
        try:
            ctx.heartbeat()
            seen.append("extended")
        except sm.LeaseLostError:
            seen.append("lost")
            raise
        return {}

    wf.transition("work", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    mesh.start("beating", {})
    assert mesh.execute_next(owner_id="w", queue="payments") is not None
    assert seen == ["extended"], "an unlimited queue may revive its lease"
    mesh.set_queue_limits("payments", concurrency=1)
    mesh.start("beating", {})
    mesh.execute_next(owner_id="w", queue="payments")
    assert seen == ["extended", "lost"]
