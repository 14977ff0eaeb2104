"""list_runs and run_counts: newest first, filters, stable cursors, no payloads, clear errors."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime

import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.clock import FakeClock


def one_step(name: str, *, fails: bool = False) -> sm.Workflow:
    wf = sm.Workflow(name, version="1")

    @wf.step(retry=sm.RetryPolicy(max_attempts=1))
    def only(input: dict, ctx: sm.StepContext) -> dict:
        if fails:
            raise RuntimeError("card declined")
        return {"done": True}

    wf.transition("only", to=sm.COMPLETE)
    return wf


def all_pages(mesh: sm.Mesh, limit: int, **filters: object) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = mesh.list_runs(limit=limit, cursor=cursor, **filters)  # type: ignore[arg-type]
        pages.append([r.id for r in page])
        cursor = page.next_cursor
        if cursor is None:
            return pages


def test_newest_first_and_every_run_once_across_pages(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    mesh = make_mesh([one_step("a")])
    started = []
    for i in range(7):
        started.append(mesh.start("a", {"i": i}).id)
        clock.advance(1)
    pages = all_pages(mesh, 3)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [run for page in pages for run in page] == started[::-1]


def test_runs_started_in_the_same_instant_page_by_id_without_gaps_or_repeats(
    make_mesh: MeshFactory,
) -> None:
    mesh = make_mesh([one_step("a")])  # the fake clock stands still: every run has one start time
    started = {mesh.start("a", {"i": i}).id for i in range(9)}
    flat = [run for page in all_pages(mesh, 2) for run in page]
    assert sorted(flat, reverse=True) == flat
    assert set(flat) == started and len(flat) == 9


def test_a_cursor_is_stable_while_new_runs_start(make_mesh: MeshFactory, clock: FakeClock) -> None:
    mesh = make_mesh([one_step("a")])
    old = []
    for i in range(4):
        old.append(mesh.start("a", {"i": i}).id)
        clock.advance(1)
    first = mesh.list_runs(limit=2)
    for i in range(3):
        mesh.start("a", {"new": i})
        clock.advance(1)
    rest = mesh.list_runs(limit=10, cursor=first.next_cursor)
    assert [r.id for r in first] + [r.id for r in rest] == old[::-1]
    assert rest.next_cursor is None


def test_filters_by_workflow_status_queue_and_start_time(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    mesh = make_mesh([one_step("good"), one_step("bad", fails=True)])
    early = mesh.start("good", {"i": 0}).id
    clock.advance(10)
    cutoff = datetime.fromtimestamp(clock(), UTC)
    clock.advance(1)
    late_good = mesh.start("good", {"i": 1}).id
    late_bad = mesh.start("bad", {"i": 2}).id
    other_queue = mesh.start("good", {"i": 3}, queue="slow").id
    while mesh.execute_next(owner_id="w"):
        pass

    def ids(**filters: object) -> set[str]:
        return {r.id for r in mesh.list_runs(**filters)}  # type: ignore[arg-type]

    assert ids() == {early, late_good, late_bad, other_queue}
    assert ids(workflow="good") == {early, late_good, other_queue}
    assert ids(status="failed") == {late_bad}
    assert ids(status=sm.RunStatus.COMPLETED) == {early, late_good}
    assert ids(status="running") == {other_queue}
    assert ids(queue="slow") == {other_queue}
    assert ids(started_after=cutoff) == {late_good, late_bad, other_queue}
    assert ids(started_after=cutoff.timestamp(), workflow="good", status="completed") == {late_good}
    assert ids(workflow="nobody") == set()


def test_summaries_name_the_run_but_hold_no_payload_context_or_error(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    mesh = make_mesh([one_step("bad", fails=True)])
    run = mesh.start("bad", {"card": "4111 1111 1111 1111"}, idempotency_key="order-9")
    clock.advance(5)
    mesh.execute_next(owner_id="w")
    (summary,) = mesh.list_runs()
    assert (summary.id, summary.workflow, summary.version) == (run.id, "bad", "1")
    assert (summary.status, summary.queue, summary.trigger) == ("failed", "default", "manual")
    assert summary.created_at == run.created_at
    assert (summary.updated_at - summary.created_at).total_seconds() == 5
    names = {f.name for f in fields(summary)}
    assert not names & {"payload", "context", "error", "idempotency_key", "steps"}
    assert "4111" not in repr(summary) and "declined" not in repr(summary)


def test_run_counts_per_status(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([one_step("good"), one_step("bad", fails=True)])
    for i in range(3):
        mesh.start("good", {"i": i})
    mesh.start("bad", {"i": 9})
    cancelled = mesh.start("good", {"i": 10}, queue="slow")
    mesh.cancel(cancelled.id)
    assert mesh.run_counts()[sm.RunStatus.RUNNING] == 4
    while mesh.execute_next(owner_id="w"):
        pass
    assert mesh.run_counts() == {
        sm.RunStatus.RUNNING: 0,
        sm.RunStatus.PAUSED: 0,
        sm.RunStatus.COMPLETED: 3,
        sm.RunStatus.FAILED: 1,
        sm.RunStatus.CANCELLED: 1,
    }
    good = mesh.run_counts(workflow="good")
    assert (good["completed"], good["failed"], good["cancelled"]) == (3, 0, 1)
    assert mesh.run_counts(queue="slow")["cancelled"] == 1
    assert sum(mesh.run_counts(workflow="nobody").values()) == 0


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "10"}, "limit"),
        ({"limit": True}, "limit"),
        ({"status": "done"}, "status"),
        ({"status": 3}, "status"),
        ({"workflow": ""}, "workflow"),
        ({"workflow": "a\x00b"}, "workflow"),
        ({"queue": "no spaces"}, "queue"),
        ({"started_after": datetime(2026, 1, 1)}, "started_after"),
        ({"started_after": "yesterday"}, "started_after"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": ""}, "cursor"),
        ({"cursor": "WzEsMl0"}, "cursor"),  # valid base64 and JSON, wrong shape: [1, 2]
        ({"cursor": 12}, "cursor"),
    ],
)
def test_bad_listing_options_are_refused_by_name(
    make_mesh: MeshFactory, options: dict[str, object], named: str
) -> None:
    mesh = make_mesh([one_step("a")])
    mesh.start("a", {})
    with pytest.raises(sm.InvalidOptionError) as refused:
        mesh.list_runs(**options)  # type: ignore[arg-type]
    assert refused.value.option == named


def test_bad_count_options_are_refused_by_name(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([])
    with pytest.raises(sm.InvalidOptionError) as refused:
        mesh.run_counts(queue="")
    assert refused.value.option == "queue"
