"""No poison pill: broken runs on a queue never stop healthy runs on the same queue."""

from __future__ import annotations

from typing import Any

import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory


def healthy() -> sm.Workflow:
    wf = sm.Workflow("healthy", version="1")

    @wf.step()
    def one(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"one": input["i"]}

    @wf.step()
    def two(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"two": input["one"] * 2}

    wf.transition("one", to="two")
    wf.transition("two", to=sm.COMPLETE)
    return wf


def poison(calls: list[int]) -> sm.Workflow:
    wf = sm.Workflow("poison", version="1")

    @wf.step(retry=sm.RetryPolicy(max_attempts=3, backoff=sm.Backoff.fixed(0.0)))
    def explode(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        calls.append(ctx.attempt)
        raise RuntimeError("always broken")

    wf.transition("explode", to=sm.COMPLETE)
    return wf


def shaped(step_name: str) -> sm.Workflow:
    """Workflow "w" version 1, with a single step whose name the caller picks."""
    wf = sm.Workflow("w", version="1")

    def fn(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"ran": ctx.step}

    wf.step(step_name)(fn)
    wf.transition(step_name, to=sm.COMPLETE)
    return wf


def ghost(version: str) -> sm.Workflow:
    wf = sm.Workflow("ghost", version=version)

    @wf.step()
    def haunt(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"version": ctx.version}

    wf.transition("haunt", to=sm.COMPLETE)
    return wf


def test_broken_runs_never_block_healthy_ones(make_mesh: MeshFactory) -> None:
    calls: list[int] = []
    starter = make_mesh([poison(calls), shaped("a"), ghost("2"), healthy()])
    # The worker's "w" version 1 is shaped differently: squid-mesh reports the drift, and the
    # run that reaches a step this shape lacks fails with step_not_in_definition (below).
    with pytest.warns(sm.DefinitionDriftWarning, match=r"workflow 'w' version '1'"):
        worker = make_mesh([poison(calls), shaped("b"), ghost("1"), healthy()])

    # the broken runs are enqueued first, so they are always at the head of the queue
    poisoned = [starter.start("poison", {"k": i}).id for i in range(3)]
    mismatched = starter.start("w", {}).id
    parked = starter.start("ghost", {}).id
    good = [starter.start("healthy", {"i": i}).id for i in range(5)]
    assert {starter.inspect_run(r).queue for r in [*poisoned, mismatched, parked, *good]} == {
        "default"
    }

    executions: list[sm.Execution] = []
    for _ in range(200):
        done = worker.execute_next(owner_id="worker")
        if done is None:
            break
        executions.append(done)
    else:
        raise AssertionError("the queue never drained")

    for i, run_id in enumerate(good):
        snap = worker.inspect_run(run_id)
        assert snap.status == "completed", snap.error
        assert snap.context == {"one": i, "two": 2 * i}

    for run_id in poisoned:
        snap = worker.inspect_run(run_id)
        assert snap.status == "failed"
        assert snap.error is not None and snap.error["message"] == "always broken"
        assert len(snap.steps[0].attempts) == 3
    assert sorted(calls) == [1, 1, 1, 2, 2, 2, 3, 3, 3]

    snap = worker.inspect_run(mismatched)
    assert snap.status == "failed"
    assert snap.error is not None
    assert snap.error["code"] == "step_not_in_definition"
    assert snap.error["step"] == "a"
    assert snap.context == {}
    unrunnable = [e for e in executions if e.run_id == mismatched]
    assert [(e.step, e.outcome) for e in unrunnable] == [("a", "failed")]
    assert unrunnable[0].error is not None
    assert unrunnable[0].error["code"] == "step_not_in_definition"

    snap = worker.inspect_run(parked)
    assert snap.status == "running"
    assert snap.version == "2"
    assert snap.current_steps == ("haunt",)
    assert snap.steps[0].attempts[0].claims == 0
    assert snap.steps[0].attempts[0].status == sm.AttemptStatus.SCHEDULED
    assert all(e.run_id != parked for e in executions)

    # the parked run is still there for a worker that has its version
    done = starter.execute_next(owner_id="starter")
    assert done is not None and done.run_id == parked and done.outcome == "completed"
    assert starter.inspect_run(parked).context == {"version": "2"}
    assert worker.verify() == []
