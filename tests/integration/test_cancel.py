"""Cancellation: immediate, recorded, idempotent, refused on finished runs; late results discarded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.databases import row_counts


def single_step(
    fn: Callable[[dict[str, Any], sm.StepContext], dict[str, Any] | None],
) -> sm.Workflow:
    wf = sm.Workflow("cancellable", version="1")
    wf.step("work")(fn)
    wf.transition("work", to=sm.COMPLETE)
    return wf


def test_cancel_is_immediate_and_recorded(make_mesh: MeshFactory, db_url: str) -> None:
    calls: list[str] = []

    def work(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        calls.append(ctx.run_id)
        return {"worked": True}

    mesh = make_mesh([single_step(work)])
    run = mesh.start("cancellable", {"n": 1})
    snap = mesh.cancel(run.id, reason="customer left", actor="ops")
    assert snap.status == sm.RunStatus.CANCELLED
    assert snap.current_steps == ()
    assert snap.next_visible_at is None
    assert snap.steps[0].attempts[0].status == sm.AttemptStatus.CANCELLED

    # cancel before any claim: the step never runs
    assert mesh.execute_next(owner_id="w1") is None
    assert calls == []

    seen = mesh.inspect_run(run.id, history=True)
    assert seen.status == "cancelled"
    assert seen.context == {}
    assert seen.history is not None
    receipt, cancelled = seen.history[-2], seen.history[-1]
    assert receipt.kind == "command_received"
    assert receipt.data["command"] == "cancel"
    assert receipt.data["actor"] == "ops"
    assert cancelled.kind == "run_cancelled"
    assert cancelled.data["reason"] == "customer left"
    assert mesh.verify() == []


def test_repeat_cancel_returns_the_same_snapshot_and_writes_nothing(
    make_mesh: MeshFactory, db_url: str
) -> None:
    mesh = make_mesh([single_step(lambda input, ctx: {})])
    run = mesh.start("cancellable", {})
    first = mesh.cancel(run.id)
    before = row_counts(db_url)
    again = mesh.cancel(run.id, reason="twice")
    assert again == first
    assert again.revision == first.revision
    assert row_counts(db_url) == before
    assert mesh.inspect_run(run.id).revision == first.revision


def test_cancel_of_a_finished_run_is_refused(make_mesh: MeshFactory, db_url: str) -> None:
    wf = sm.Workflow("finishing", version="1")

    @wf.step()
    def work(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        if input.get("fail"):
            raise sm.Fail("nope")
        return {}

    wf.transition("work", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    ok = mesh.start("finishing", {})
    bad = mesh.start("finishing", {"fail": True})
    while mesh.execute_next(owner_id="w1"):
        pass
    assert mesh.inspect_run(ok.id).status == "completed"
    assert mesh.inspect_run(bad.id).status == "failed"
    before = row_counts(db_url)
    for run_id, status in ((ok.id, "completed"), (bad.id, "failed")):
        with pytest.raises(sm.RunFinishedError) as info:
            mesh.cancel(run_id)
        assert info.value.code == "run_finished"
        assert info.value.status == status
        assert run_id in str(info.value)
        assert mesh.inspect_run(run_id).status == status
    assert row_counts(db_url) == before


def test_result_of_a_step_that_finishes_after_cancel_is_discarded(
    make_mesh: MeshFactory,
) -> None:
    observed: dict[str, object] = {}
    other: list[sm.Mesh] = []

    def work(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        observed["before"] = ctx.cancelled
        other[0].cancel(ctx.run_id, reason="operator")
        observed["after"] = ctx.cancelled
        return {"charged": 120}

    wf = single_step(work)
    mesh = make_mesh([wf])
    other.append(make_mesh([wf]))
    run = mesh.start("cancellable", {"n": 1})
    done = mesh.execute_next(owner_id="w1")
    assert done is not None
    assert done.outcome == "discarded"
    assert done.run_status == "cancelled"
    assert observed == {"before": False, "after": True}

    snap = mesh.inspect_run(run.id, history=True)
    assert snap.status == "cancelled"
    assert snap.context == {}
    attempt = snap.steps[0].attempts[0]
    assert attempt.status == sm.AttemptStatus.DISCARDED
    assert attempt.output == {"charged": 120}
    assert snap.history is not None
    kinds = [e.kind for e in snap.history]
    assert kinds[-1] == "result_discarded"
    assert "result_applied" not in kinds and "attempt_completed" not in kinds
    assert kinds.index("run_cancelled") < kinds.index("result_discarded")
    assert mesh.execute_next(owner_id="w1") is None
    assert mesh.verify() == []


def test_a_step_sees_the_cancel_and_its_heartbeat_raises_cancelled(
    make_mesh: MeshFactory,
) -> None:
    flags: list[bool] = []
    other: list[sm.Mesh] = []
    raised: list[sm.Cancelled] = []

    def work(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        ctx.heartbeat()
        flags.append(ctx.cancelled)
        other[0].cancel(ctx.run_id)
        flags.append(ctx.cancelled)  # read from the store: true at once
        try:
            ctx.heartbeat()
        except sm.Cancelled as exc:
            raised.append(exc)
            return {"stopped_early": True}
        return {"finished": True}

    wf = single_step(work)
    mesh = make_mesh([wf])
    other.append(make_mesh([wf]))
    run = mesh.start("cancellable", {})
    done = mesh.execute_next(owner_id="w1")
    assert flags == [False, True]
    assert len(raised) == 1 and raised[0].code == "cancelled" and raised[0].status == "cancelled"
    assert done is not None and done.outcome == "discarded"
    snap = mesh.inspect_run(run.id)
    assert snap.steps[0].attempts[0].output == {"stopped_early": True}
    assert snap.context == {}


def test_a_step_that_lets_cancelled_propagate_is_recorded_as_discarded(
    make_mesh: MeshFactory,
) -> None:
    other: list[sm.Mesh] = []

    def work(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        other[0].cancel(ctx.run_id, reason="operator")
        ctx.heartbeat()
        raise AssertionError("heartbeat raised sm.Cancelled")

    wf = single_step(work)
    mesh = make_mesh([wf])
    other.append(make_mesh([wf]))
    run = mesh.start("cancellable", {})
    done = mesh.execute_next(owner_id="w1")
    assert done is not None and done.outcome == "discarded"
    assert done.error is not None and done.error["type"] == "squid_mesh.errors.Cancelled"
    snap = mesh.inspect_run(run.id)
    assert snap.status == "cancelled"
    assert snap.steps[0].attempts[0].status == sm.AttemptStatus.DISCARDED
    assert mesh.verify() == []
