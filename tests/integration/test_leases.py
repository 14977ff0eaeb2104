"""Leases and fencing, driven in-process with the fake clock and a second mesh on the same database."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.clock import FakeClock

LEASE = 10.0


class Harness:
    """One workflow whose step behaviour the test sets, run by two meshes on one database."""

    def __init__(self, make_mesh: MeshFactory) -> None:
        self.calls: list[int] = []  # ctx.attempt of every invocation, on either mesh
        self.behaviour: Callable[[sm.StepContext, int], dict[str, Any]] | None = None
        wf = sm.Workflow("leased", version="1")

        @wf.step()
        def work(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
            self.calls.append(ctx.attempt)
            assert self.behaviour is not None
            return self.behaviour(ctx, len(self.calls))

        wf.transition("work", to=sm.COMPLETE)
        self.first = make_mesh([wf])
        self.second = make_mesh([wf])


def test_expired_lease_is_taken_over_and_the_first_completion_refused(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    h = Harness(make_mesh)
    inner: list[sm.Execution | None] = []

    def behaviour(ctx: sm.StepContext, call: int) -> dict[str, Any]:
        if call == 1:
            clock.advance(LEASE + 1.0)  # a long pause, no heartbeat
            inner.append(h.second.execute_next(owner_id="w2", lease=LEASE))
            return {"by": "w1"}
        return {"by": "w2"}

    h.behaviour = behaviour
    run = h.first.start("leased", {})
    outer = h.first.execute_next(owner_id="w1", lease=LEASE)

    assert len(inner) == 1 and inner[0] is not None
    assert inner[0].outcome == "completed" and inner[0].attempt == 1
    assert outer is not None
    assert outer.outcome == "lease_lost"
    assert outer.run_status == "completed"
    assert h.calls == [1, 1]  # the same attempt, run twice

    snap = h.first.inspect_run(run.id, history=True)
    assert snap.status == "completed"
    assert snap.context == {"by": "w2"}
    assert len(snap.steps) == 1 and len(snap.steps[0].attempts) == 1
    attempt = snap.steps[0].attempts[0]
    assert attempt.claims == 2
    assert attempt.owner == "w2"
    assert attempt.output == {"by": "w2"}
    assert snap.history is not None
    completions = [e for e in snap.history if e.kind == "attempt_completed"]
    assert len(completions) == 1
    assert completions[0].data["output"] == {"by": "w2"}
    assert [e.data["owner"] for e in snap.history if e.kind == "attempt_claimed"] == ["w1", "w2"]
    assert not any(e.kind == "result_discarded" for e in snap.history)
    assert h.first.verify() == []


def assert_held_by_w2_and_untouched(mesh: sm.Mesh, run_id: str) -> None:
    snap = mesh.inspect_run(run_id, history=True)
    assert snap.status == "running" and snap.context == {}
    attempt = snap.steps[0].attempts[0]
    assert attempt.status == sm.AttemptStatus.RUNNING
    assert (attempt.owner, attempt.claims) == ("w2", 2)
    assert snap.history is not None
    assert not any(e.kind in ("attempt_completed", "attempt_failed") for e in snap.history)


def test_stale_worker_is_fenced_while_the_new_claim_is_still_running(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    """The stale worker finishes (and heartbeats) while the taking-over worker still holds the
    attempt: only the claim itself can tell them apart, and the stale one is refused."""
    h = Harness(make_mesh)
    w1_started, w1_go = threading.Event(), threading.Event()
    w2_started, w2_go = threading.Event(), threading.Event()
    lost: list[BaseException] = []

    def behaviour(ctx: sm.StepContext, call: int) -> dict[str, Any]:
        if call == 1:
            w1_started.set()
            assert w1_go.wait(30)
            try:
                ctx.heartbeat()
            except sm.LeaseLostError as exc:
                lost.append(exc)
            return {"by": "w1"}
        w2_started.set()
        assert w2_go.wait(30)
        return {"by": "w2"}

    h.behaviour = behaviour
    run = h.first.start("leased", {})
    results: dict[str, sm.Execution | None] = {}

    def work(name: str, mesh: sm.Mesh) -> None:
        results[name] = mesh.execute_next(owner_id=name, lease=LEASE)

    one = threading.Thread(target=work, args=("w1", h.first))
    one.start()
    try:
        assert w1_started.wait(30)
        clock.advance(LEASE + 1.0)
        two = threading.Thread(target=work, args=("w2", h.second))
        two.start()
        try:
            assert w2_started.wait(30)
            w1_go.set()
            one.join(30)
            assert not one.is_alive()
            outcome = results["w1"]
            assert outcome is not None and outcome.outcome == "lease_lost"
            assert len(lost) == 1
            assert_held_by_w2_and_untouched(h.first, run.id)
        finally:
            w2_go.set()
            two.join(30)
    finally:
        w1_go.set()
        one.join(30)
    outcome = results["w2"]
    assert outcome is not None and outcome.outcome == "completed"
    snap = h.first.inspect_run(run.id)
    assert snap.status == "completed" and snap.context == {"by": "w2"}
    assert h.first.verify() == []


def test_heartbeat_keeps_the_lease(make_mesh: MeshFactory, clock: FakeClock) -> None:
    h = Harness(make_mesh)
    inner: list[sm.Execution | None] = []

    def behaviour(ctx: sm.StepContext, call: int) -> dict[str, Any]:
        clock.advance(LEASE * 0.6)
        ctx.heartbeat()
        clock.advance(LEASE * 0.6)  # past the original lease, within the extended one
        inner.append(h.second.execute_next(owner_id="w2", lease=LEASE))
        return {"by": "w1"}

    h.behaviour = behaviour
    run = h.first.start("leased", {})
    started = clock.now
    outer = h.first.execute_next(owner_id="w1", lease=LEASE)
    assert inner == [None]
    assert outer is not None and outer.outcome == "completed"
    assert len(h.calls) == 1
    snap = h.first.inspect_run(run.id, history=True)
    assert snap.context == {"by": "w1"}
    attempt = snap.steps[0].attempts[0]
    assert attempt.claims == 1 and attempt.owner == "w1"
    assert snap.history is not None
    beats = [e for e in snap.history if e.kind == "attempt_heartbeat"]
    assert len(beats) == 1
    assert beats[0].data["lease_until"] == pytest.approx(started + LEASE * 0.6 + LEASE)


def test_heartbeat_after_takeover_raises_lease_lost(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    h = Harness(make_mesh)
    raised: list[BaseException] = []

    def behaviour(ctx: sm.StepContext, call: int) -> dict[str, Any]:
        if call == 1:
            clock.advance(LEASE + 1.0)
            assert h.second.execute_next(owner_id="w2", lease=LEASE) is not None
            try:
                ctx.heartbeat()
            except sm.LeaseLostError as exc:
                raised.append(exc)
                raise
            return {"by": "w1"}
        return {"by": "w2"}

    h.behaviour = behaviour
    run = h.first.start("leased", {})
    outer = h.first.execute_next(owner_id="w1", lease=LEASE)
    assert len(raised) == 1
    assert isinstance(raised[0], sm.SquidMeshError)
    assert raised[0].code == "lease_lost"
    # the first worker's failure (the LeaseLostError it let escape) is refused too
    assert outer is not None and outer.outcome == "lease_lost"
    snap = h.first.inspect_run(run.id, history=True)
    assert snap.status == "completed" and snap.context == {"by": "w2"}
    assert snap.history is not None
    assert not any(e.kind == "attempt_failed" for e in snap.history)


def test_late_completion_without_takeover_is_accepted(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    h = Harness(make_mesh)

    def behaviour(ctx: sm.StepContext, call: int) -> dict[str, Any]:
        clock.advance(LEASE * 5)  # the lease expired, but nobody claimed the attempt
        return {"by": "w1", "late": True}

    h.behaviour = behaviour
    run = h.first.start("leased", {})
    outer = h.first.execute_next(owner_id="w1", lease=LEASE)
    assert outer is not None and outer.outcome == "completed" and outer.run_status == "completed"
    snap = h.first.inspect_run(run.id)
    assert snap.status == "completed"
    assert snap.context == {"by": "w1", "late": True}
    attempt = snap.steps[0].attempts[0]
    assert attempt.claims == 1
    assert attempt.status == sm.AttemptStatus.COMPLETED
    assert attempt.lease_until is not None and attempt.finished_at is not None
    assert attempt.finished_at > attempt.lease_until
    assert h.second.execute_next(owner_id="w2") is None
