"""explain_run: every reason of the closed set, reached through the public API; nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.clock import FakeClock
from tests.support.databases import row_counts

LEASE = 10.0


class Crash(BaseException):
    """A worker dying inside a step."""


def linear(behaviour: dict[str, Any]) -> sm.Workflow:
    wf = sm.Workflow("linear", version="1")

    @wf.step(retry=sm.RetryPolicy(max_attempts=3, backoff=sm.Backoff.fixed(30)))
    def work(input: dict, ctx: sm.StepContext) -> dict:
        action = behaviour.get("work")
        if callable(action):
            action(ctx)
        if action == "raise":
            raise RuntimeError("gateway timeout")
        if action == "crash":
            raise Crash()
        if action == "fail":
            raise sm.Fail("card declined", code="declined")
        return {"worked": True}

    wf.transition("work", to=sm.COMPLETE)
    return wf


def test_a_run_waiting_for_a_worker_then_claimed_then_completed(
    make_mesh: MeshFactory, db_url: str
) -> None:
    seen: dict[str, sm.Explanation] = {}
    behaviour: dict[str, Any] = {}
    mesh = make_mesh([linear(behaviour)])
    observer = make_mesh([linear({})])
    run = mesh.start("linear", {})
    before = row_counts(db_url)
    why = mesh.explain_run(run.id)
    assert row_counts(db_url) == before, "explaining writes nothing"
    assert why.reason == sm.Reason.WAITING_FOR_WORKER and why.steps == ("work",)
    assert "run_worker" in why.next_actions and why.evidence["queue"] == "default"
    assert why.evidence["commands"] == {"start": 1}
    behaviour["work"] = lambda ctx: seen.setdefault("inside", observer.explain_run(ctx.run_id))
    mesh.execute_next(owner_id="w1", lease=LEASE)
    inside = seen["inside"]
    assert inside.reason == sm.Reason.CLAIMED_BY_WORKER
    assert inside.evidence["attempt"]["owner"] == "w1" and "w1" in inside.summary
    done = mesh.explain_run(run.id)
    assert done.reason == sm.Reason.COMPLETED and done.next_actions == ("replay",)


def test_a_lease_that_ran_out_and_a_scheduled_retry(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    behaviour: dict[str, Any] = {"work": "crash"}
    mesh = make_mesh([linear(behaviour)])
    run = mesh.start("linear", {})
    with pytest.raises(Crash):
        mesh.execute_next(owner_id="w1", lease=LEASE)
    assert mesh.explain_run(run.id).reason == sm.Reason.CLAIMED_BY_WORKER
    clock.advance(LEASE + 1)
    expired = mesh.explain_run(run.id)
    assert expired.reason == sm.Reason.LEASE_EXPIRED
    assert expired.evidence["attempt"]["owner"] == "w1"
    behaviour["work"] = "raise"
    mesh.execute_next(owner_id="w2", lease=LEASE)
    retry = mesh.explain_run(run.id)
    assert retry.reason == sm.Reason.SCHEDULED_RETRY
    assert retry.evidence["attempt"]["attempt"] == 2
    assert "gateway timeout" in retry.evidence["last_error"]["message"]
    assert retry.evidence["attempt"]["visible_at"].timestamp() == clock() + 30


def test_failed_and_cancelled_runs(make_mesh: MeshFactory, clock: FakeClock) -> None:
    mesh = make_mesh([linear({"work": "fail"})])
    failed = mesh.start("linear", {})
    mesh.execute_next(owner_id="w")
    why = mesh.explain_run(failed.id)
    assert why.reason == sm.Reason.FAILED and why.steps == ("work",)
    assert "card declined" in why.summary and why.next_actions == ("replay",)
    cancelled = mesh.start("linear", {})
    mesh.cancel(cancelled.id, actor="ops")
    assert mesh.explain_run(cancelled.id).reason == sm.Reason.CANCELLED


def test_waits_gates_and_children(make_mesh: MeshFactory, clock: FakeClock) -> None:
    wf = sm.Workflow("waits", version="1")
    wf.wait("cool", 60)
    wf.pause("hold")
    wf.approval("sign")

    @wf.step()
    def spawn(input: dict, ctx: sm.StepContext) -> dict:
        ctx.start_child("kid", {}, child_key="k")
        return {}

    wf.await_children("kids")
    wf.transition("cool", to="hold")
    wf.transition("hold", to="sign")
    wf.transition("sign", to="spawn")
    wf.transition("sign", to=sm.COMPLETE, on="error")
    wf.transition("spawn", to="kids")
    wf.transition("kids", to=sm.COMPLETE)
    kid = sm.Workflow("kid", version="1", queue="kids")

    @kid.step()
    def play(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    kid.transition("play", to=sm.COMPLETE)
    mesh = make_mesh([wf, kid])
    run = mesh.start("waits", {})
    mesh.execute_next(owner_id="w")  # the wait step
    until = mesh.explain_run(run.id)
    assert until.reason == sm.Reason.WAITING_UNTIL and until.steps == ("hold",)
    clock.advance(60)
    mesh.execute_next(owner_id="w")  # hold: paused
    paused = mesh.explain_run(run.id)
    assert paused.reason == sm.Reason.PAUSED_FOR_RESUME
    assert paused.next_actions == ("resume", "cancel") and paused.steps == ("hold",)
    mesh.resume(run.id, actor="ops")
    mesh.execute_next(owner_id="w")  # sign
    approval = mesh.explain_run(run.id)
    assert approval.reason == sm.Reason.WAITING_FOR_APPROVAL
    assert approval.next_actions == ("approve", "reject", "cancel")
    assert approval.evidence["commands"] == {"start": 1, "resume": 1}
    mesh.approve(run.id, actor="ops")
    mesh.execute_next(owner_id="w")  # spawn
    mesh.execute_next(owner_id="w")  # kids: parked
    children = mesh.explain_run(run.id)
    assert children.reason == sm.Reason.WAITING_FOR_CHILDREN
    assert children.evidence["children"] == {"k": "running"}


def test_dependencies_compensation_and_parked_versions(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    seen: dict[str, sm.Explanation] = {}
    wf = sm.Workflow("dag", version="1")

    @wf.step(compensate=lambda input, ctx: {})
    def a(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    @wf.step(after=["a"])
    def b(input: dict, ctx: sm.StepContext) -> dict:
        seen["during_b"] = observer.explain_run(ctx.run_id)
        raise sm.Fail("b broke")

    @wf.step(after=["a", "b"])
    def join(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    mesh = make_mesh([wf])
    observer = make_mesh([wf])
    run = mesh.start("dag", {})
    mesh.execute_next(owner_id="w")  # a
    mesh.execute_next(owner_id="w")  # b: explained while it runs, then fails the run
    during = seen["during_b"]
    assert during.reason == sm.Reason.WAITING_FOR_DEPENDENCIES and during.steps == ("join",)
    compensating = mesh.explain_run(run.id)
    assert compensating.reason == sm.Reason.COMPENSATING
    assert compensating.steps == ("a#compensate",)
    mesh.execute_next(owner_id="w")
    ended = mesh.explain_run(run.id)
    assert ended.reason == sm.Reason.FAILED and "compensation completed" in ended.summary

    # A process without the run's version sees it parked.
    v2 = sm.Workflow("dag", version="2")
    v2.step("a")(lambda input, ctx: {})
    v2.transition("a", to=sm.COMPLETE)
    parked_run = mesh.start("dag", {})
    other = make_mesh([v2])
    parked = other.explain_run(parked_run.id)
    assert parked.reason == sm.Reason.PARKED_VERSION_MISSING
    assert parked.next_actions == ("migrate_run", "cancel")


def test_every_reason_is_documented() -> None:
    troubleshooting = (Path(__file__).parents[2] / "docs" / "troubleshooting.md").read_text()
    for reason in sm.Reason:
        assert f"### `{reason.value}`" in troubleshooting, reason
    assert {r.value for r in sm.Reason} == {
        "waiting_for_worker",
        "queue_limited",
        "scheduled_retry",
        "waiting_until",
        "claimed_by_worker",
        "lease_expired",
        "paused_for_resume",
        "waiting_for_approval",
        "waiting_for_children",
        "waiting_for_dependencies",
        "compensating",
        "parked_version_missing",
        "completed",
        "failed",
        "cancelled",
    }


def test_a_due_step_held_back_by_its_queue_limits(
    make_mesh: MeshFactory, db_url: str, clock: FakeClock
) -> None:
    behaviour: dict[str, Any] = {"work": "crash"}
    mesh = make_mesh([linear(behaviour)])
    mesh.set_queue_limits("default", concurrency=1)
    mesh.start("linear", {})
    waiting = mesh.start("linear", {})
    with pytest.raises(Crash):  # the first run's claim stays held: the one slot is taken
        mesh.execute_next(owner_id="w1", lease=LEASE)
    before = row_counts(db_url)
    full = mesh.explain_run(waiting.id)
    assert row_counts(db_url) == before, "explaining writes nothing"
    assert full.reason == sm.Reason.QUEUE_LIMITED and full.steps == ("work",)
    assert "concurrency limit (1 of 1 claimed)" in full.summary
    assert full.evidence["queue_limits"]["claimed"] == 1
    assert full.next_actions == ("wait", "set_queue_limits", "cancel")
    clock.advance(LEASE + 1)  # the held claim lapses: the slot is free again
    assert mesh.explain_run(waiting.id).reason == sm.Reason.WAITING_FOR_WORKER

    mesh.set_queue_limits("default", rate_limit=1, per=60)  # a new bucket, one token
    behaviour["work"] = None
    assert mesh.execute_next(owner_id="w2", lease=LEASE) is not None  # takes the token
    third = mesh.start("linear", {})
    rated = mesh.explain_run(third.id)
    assert rated.reason == sm.Reason.QUEUE_LIMITED
    assert "rate limit (1 claims per 60 s)" in rated.summary
    assert rated.evidence["queue_limits"]["next_token_at"] is not None
    clock.advance(60)
    assert mesh.explain_run(third.id).reason == sm.Reason.WAITING_FOR_WORKER
    mesh.set_queue_limits("default")  # no limits: nothing to hold the step back
    assert mesh.explain_run(third.id).reason == sm.Reason.WAITING_FOR_WORKER
