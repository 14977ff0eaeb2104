"""Saga compensation: completed steps are undone in reverse completion order, durably."""

from __future__ import annotations

from typing import Any

import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.clock import FakeClock


def checkout(undone: list[tuple[str, dict[str, Any]]], *, void_fails: int = 0) -> sm.Workflow:
    """reserve -> authorize -> capture (always fails); reserve and authorize can be undone."""
    wf = sm.Workflow("checkout", version="1")
    failures = {"void": void_fails}

    def release(input: dict, ctx: sm.StepContext) -> dict:
        undone.append(("release", input))
        return {"released": input["output"]["reservation"]}

    def void(input: dict, ctx: sm.StepContext) -> dict:
        if failures["void"] > 0:
            failures["void"] -= 1
            raise RuntimeError("gateway timeout")
        undone.append(("void", input))
        return {"voided": input["output"]["authorization"]}

    @wf.step(compensate=release)
    def reserve(input: dict, ctx: sm.StepContext) -> dict:
        return {"reservation": f"res_{input['order']}"}

    @wf.step(
        compensate=void,
        compensate_retry=sm.RetryPolicy(max_attempts=2, backoff=sm.Backoff.fixed(1)),
    )
    def authorize(input: dict, ctx: sm.StepContext) -> dict:
        return {"authorization": "auth_1"}

    @wf.step(retry=sm.RetryPolicy(max_attempts=2, backoff=sm.Backoff.fixed(1)))
    def capture(input: dict, ctx: sm.StepContext) -> dict:
        raise sm.Fail("card declined", code="declined")

    wf.transition("reserve", to="authorize")
    wf.transition("authorize", to="capture")
    wf.transition("capture", to=sm.COMPLETE)
    return wf


def drain(mesh: sm.Mesh, clock: FakeClock) -> list[tuple[str, str]]:
    done = []
    for _ in range(50):
        execution = mesh.execute_next(owner_id="w")
        if execution is None:
            snap_due = clock.advance(1)
            execution = mesh.execute_next(owner_id="w", now=snap_due)
            if execution is None:
                return done
        done.append((execution.step, execution.outcome))
    raise AssertionError("the run did not settle")


def test_a_failed_run_undoes_its_completed_steps_in_reverse_order(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    undone: list[tuple[str, dict[str, Any]]] = []
    mesh = make_mesh([checkout(undone)])
    run = mesh.start("checkout", {"order": 7})
    assert drain(mesh, clock) == [
        ("reserve", "completed"),
        ("authorize", "completed"),
        ("capture", "failed"),
        ("authorize#compensate", "completed"),
        ("reserve#compensate", "completed"),
    ]
    assert [name for name, _ in undone] == ["void", "release"]
    void_input = undone[0][1]
    assert void_input["output"] == {"authorization": "auth_1"}
    assert void_input["input"]["reservation"] == "res_7"
    assert void_input["failure"]["code"] == "declined"
    snap = mesh.inspect_run(run.id, history=True)
    assert snap.status == sm.RunStatus.FAILED and snap.compensation == "completed"
    assert snap.error is not None and (snap.error["code"], snap.error["step"]) == (
        "declined",
        "capture",
    )
    undo_order = [
        h.data["key"]
        for h in snap.history or ()
        if h.kind == "attempt_completed" and "#compensate" in h.data["key"]
    ]
    assert undo_order == ["authorize#compensate:1:1", "reserve#compensate:1:1"]
    assert {s.name for s in snap.steps} >= {"authorize#compensate", "reserve#compensate"}
    kinds = [h.kind for h in snap.history or ()]
    assert kinds.count("compensation_started") == 1 and kinds[-1] == "run_failed"
    assert mesh.verify() == []


def test_a_compensation_is_retried_with_its_own_policy(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    undone: list[tuple[str, dict[str, Any]]] = []
    mesh = make_mesh([checkout(undone, void_fails=1)])
    run = mesh.start("checkout", {"order": 8})
    steps = drain(mesh, clock)
    assert steps[3:] == [
        ("authorize#compensate", "retry_scheduled"),
        ("authorize#compensate", "completed"),
        ("reserve#compensate", "completed"),
    ]
    assert mesh.inspect_run(run.id).compensation == "completed"


def test_a_compensation_out_of_retries_stops_the_chain(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    undone: list[tuple[str, dict[str, Any]]] = []
    mesh = make_mesh([checkout(undone, void_fails=5)])
    run = mesh.start("checkout", {"order": 9})
    steps = drain(mesh, clock)
    assert steps[-2:] == [
        ("authorize#compensate", "retry_scheduled"),
        ("authorize#compensate", "failed"),
    ]
    assert undone == [], "release never ran on top of a failed void"
    snap = mesh.inspect_run(run.id)
    assert snap.status == sm.RunStatus.FAILED and snap.compensation == "failed"
    assert snap.error is not None and snap.error["code"] == "declined"
    void_view = next(s for s in snap.steps if s.name == "authorize#compensate")
    assert [a.status for a in void_view.attempts] == ["failed", "failed"]
    assert mesh.verify() == []


def test_a_run_without_compensations_fails_as_before(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    wf = sm.Workflow("plain", version="1")

    @wf.step()
    def only(input: dict, ctx: sm.StepContext) -> dict:
        raise sm.Fail("nope")

    wf.transition("only", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("plain", {})
    drain(mesh, clock)
    snap = mesh.inspect_run(run.id)
    assert snap.status == sm.RunStatus.FAILED and snap.compensation is None


def test_a_dag_failure_compensates_the_completed_branches(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    undone: list[str] = []
    wf = sm.Workflow("dag_saga", version="1")

    def undo(name: str) -> Any:
        def fn(input: dict, ctx: sm.StepContext) -> dict:
            undone.append(name)
            return {}

        return fn

    @wf.step(compensate=undo("left"))
    def left(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    @wf.step(compensate=undo("right"))
    def right(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    @wf.step(after=["left", "right"])
    def join(input: dict, ctx: sm.StepContext) -> dict:
        raise sm.Fail("join failed")

    mesh = make_mesh([wf])
    run = mesh.start("dag_saga", {})
    mesh.execute_next(owner_id="w")  # left
    clock.advance(1)
    mesh.execute_next(owner_id="w")  # right
    drain(mesh, clock)
    assert undone == ["right", "left"]
    assert mesh.inspect_run(run.id).compensation == "completed"


def test_a_late_result_of_a_step_cancelled_by_compensation_is_discarded(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    undone: list[str] = []
    wf = sm.Workflow("race", version="1")

    @wf.step(compensate=lambda input, ctx: undone.append("a") or {})
    def a(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    calls: list[str] = []

    def branch(input: dict, ctx: sm.StepContext) -> dict:
        calls.append(ctx.step)
        if len(calls) == 1:
            # The first branch to run is slow: meanwhile the other branch fails the run.
            results.append(other.execute_next(owner_id="w2"))
            return {"slow": True}
        raise sm.Fail("broken")

    wf.step("b1", after=["a"])(branch)
    wf.step("b2", after=["a"])(branch)

    results: list[Any] = []
    mesh = make_mesh([wf])
    other = make_mesh([wf])
    run = mesh.start("race", {})
    first = mesh.execute_next(owner_id="w")
    assert first is not None and first.step == "a"
    late = mesh.execute_next(owner_id="w")  # one branch; inside it, the other fails the run
    assert results[0].outcome == "failed" and results[0].step == calls[1]
    assert late is not None and late.step == calls[0] and late.outcome == "discarded"
    drain(mesh, clock)
    snap = mesh.inspect_run(run.id)
    assert snap.compensation == "completed" and undone == ["a"]
    assert "slow" not in snap.context
    assert mesh.verify() == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"compensate": "not callable"}, r"compensate must be a callable"),
        ({"irreversible": True, "compensate": lambda i, c: {}}, r"irreversible step cannot"),
        ({"irreversible": "yes"}, r"irreversible must be True or False"),
        ({"compensate_retry": 3}, r"compensate_retry must be a sm.RetryPolicy"),
    ],
)
def test_bad_compensation_options_are_refused(options: dict[str, Any], message: str) -> None:
    wf = sm.Workflow("bad")
    with pytest.raises(sm.DefinitionError, match=message):
        wf.step("s", **options)(lambda input, ctx: {})


def test_a_branch_still_running_when_compensation_starts_is_told_to_stop(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    seen: dict[str, Any] = {}
    calls: list[str] = []
    wf = sm.Workflow("stop_branch", version="1")

    @wf.step(compensate=lambda input, ctx: {})
    def first(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    def branch(input: dict, ctx: sm.StepContext) -> dict:
        calls.append(ctx.step)
        if len(calls) > 1:
            raise sm.Fail("broken")
        other.execute_next(owner_id="w2")  # the other branch fails the run meanwhile
        seen["cancelled"] = ctx.cancelled
        try:
            ctx.heartbeat()
        except sm.Cancelled:
            seen["heartbeat"] = "raised"
        return {}

    wf.step("b1", after=["first"])(branch)
    wf.step("b2", after=["first"])(branch)
    mesh = make_mesh([wf])
    other = make_mesh([wf])
    run = mesh.start("stop_branch", {})
    assert mesh.execute_next(owner_id="w1") is not None  # first
    late = mesh.execute_next(owner_id="w1")  # one branch; inside it the other one fails
    assert late is not None and late.outcome == "discarded"
    assert seen == {"cancelled": True, "heartbeat": "raised"}
    assert mesh.inspect_run(run.id).compensation == "running"
