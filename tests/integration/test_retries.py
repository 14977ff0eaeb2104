"""Durable retries: exact visibility times, Retry(after=), max_attempts, and restarts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.clock import FakeClock

EPSILON = 0.001


def at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def always_failing(name: str, policy: sm.RetryPolicy, calls: list[int]) -> sm.Workflow:
    wf = sm.Workflow(name, version="1")

    @wf.step(retry=policy)
    def a(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        calls.append(ctx.attempt)
        raise RuntimeError(f"boom on attempt {ctx.attempt}")

    wf.transition("a", to=sm.COMPLETE)
    return wf


def assert_due_exactly(mesh: sm.Mesh, clock: FakeClock, due: float, attempt: int) -> sm.Execution:
    """Nothing is claimable just before ``due``; the attempt is claimed exactly at ``due``."""
    clock.now = due - EPSILON
    assert mesh.execute_next(owner_id="w1") is None
    clock.now = due
    done = mesh.execute_next(owner_id="w1")
    assert done is not None and done.attempt == attempt
    return done


def test_fixed_backoff_makes_next_attempt_visible_exactly_after_delay(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    calls: list[int] = []
    policy = sm.RetryPolicy(max_attempts=3, backoff=sm.Backoff.fixed(5.0))
    mesh = make_mesh([always_failing("fixed", policy, calls)])
    run = mesh.start("fixed", {})
    t1 = clock.now
    first = mesh.execute_next(owner_id="w1")
    assert first is not None and first.outcome == "retry_scheduled" and first.attempt == 1

    snap = mesh.inspect_run(run.id)
    attempts = snap.steps[0].attempts
    assert [a.number for a in attempts] == [1, 2]
    assert attempts[0].status == sm.AttemptStatus.FAILED
    assert attempts[0].finished_at == at(t1)
    assert attempts[1].status == sm.AttemptStatus.SCHEDULED
    assert attempts[1].visible_at == at(t1 + 5.0)
    assert snap.next_visible_at == at(t1 + 5.0)

    second = assert_due_exactly(mesh, clock, t1 + 5.0, attempt=2)
    assert second.outcome == "retry_scheduled"
    t2 = clock.now
    assert mesh.inspect_run(run.id).steps[0].attempts[2].visible_at == at(t2 + 5.0)
    third = assert_due_exactly(mesh, clock, t2 + 5.0, attempt=3)
    assert third.outcome == "failed"
    assert calls == [1, 2, 3]


def test_exponential_backoff_doubles_and_caps(make_mesh: MeshFactory, clock: FakeClock) -> None:
    calls: list[int] = []
    backoff = sm.Backoff.exponential(min=1.0, max=3.0, jitter=0.0)
    mesh = make_mesh(
        [always_failing("expo", sm.RetryPolicy(max_attempts=4, backoff=backoff), calls)]
    )
    run = mesh.start("expo", {})
    done = mesh.execute_next(owner_id="w1")
    assert done is not None and done.outcome == "retry_scheduled"
    # after attempt n fails: min * 2**(n-1), capped at max -> 1, 2, 3 (not 4)
    for number, delay in ((2, 1.0), (3, 2.0), (4, 3.0)):
        failed_at = clock.now
        view = mesh.inspect_run(run.id).steps[0].attempts[number - 1]
        assert view.number == number
        assert view.visible_at == at(failed_at + delay)
        assert_due_exactly(mesh, clock, failed_at + delay, attempt=number)
    assert calls == [1, 2, 3, 4]
    assert mesh.inspect_run(run.id).status == "failed"


def test_retry_after_overrides_backoff(make_mesh: MeshFactory, clock: FakeClock) -> None:
    wf = sm.Workflow("asks", version="1")
    seen: list[int] = []

    @wf.step(retry=sm.RetryPolicy(max_attempts=3, backoff=sm.Backoff.fixed(100.0)))
    def a(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        seen.append(ctx.attempt)
        if ctx.attempt == 1:
            raise sm.Retry("gateway busy", after=7.5)
        return {"done": ctx.attempt}

    wf.transition("a", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("asks", {})
    t1 = clock.now
    first = mesh.execute_next(owner_id="w1")
    assert first is not None and first.outcome == "retry_scheduled"
    snap = mesh.inspect_run(run.id)
    assert snap.steps[0].attempts[1].visible_at == at(t1 + 7.5)
    error = snap.steps[0].attempts[0].error
    assert error is not None and error["message"] == "gateway busy"
    assert error["code"] == "retry_requested"
    done = assert_due_exactly(mesh, clock, t1 + 7.5, attempt=2)
    assert done.outcome == "completed"
    snap = mesh.inspect_run(run.id)
    assert snap.status == "completed" and snap.context == {"done": 2}
    assert seen == [1, 2]


def test_max_attempts_bounds_then_run_fails_with_the_error_kept(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    wf = sm.Workflow("bounded", version="1")
    calls: list[int] = []

    @wf.step(retry=sm.RetryPolicy(max_attempts=2, backoff=sm.Backoff.fixed(1.0)))
    def a(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        calls.append(ctx.attempt)
        raise ValueError(f"bad value {ctx.attempt}")

    wf.transition("a", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("bounded", {})
    first = mesh.execute_next(owner_id="w1")
    assert first is not None and first.outcome == "retry_scheduled"
    clock.advance(1.0)
    last = mesh.execute_next(owner_id="w1")
    assert last is not None and last.outcome == "failed" and last.run_status == "failed"
    assert last.error is not None and last.error["message"] == "bad value 2"
    clock.advance(1000.0)
    assert mesh.execute_next(owner_id="w1") is None
    assert calls == [1, 2]

    snap = mesh.inspect_run(run.id)
    assert snap.status == sm.RunStatus.FAILED
    assert len(snap.steps) == 1 and len(snap.steps[0].attempts) == 2
    assert snap.error is not None
    assert snap.error["type"] == "builtins.ValueError"
    assert snap.error["message"] == "bad value 2"
    assert snap.error["code"] == "exception"
    assert snap.error["step"] == "a"
    assert "ValueError: bad value 2" in snap.error["traceback"]
    assert snap.steps[0].attempts[0].error is not None
    assert snap.steps[0].attempts[0].error["message"] == "bad value 1"
    assert mesh.verify() == []


def test_exhausted_retries_take_the_error_route(make_mesh: MeshFactory, clock: FakeClock) -> None:
    wf = sm.Workflow("routed", version="1")
    calls: list[int] = []

    @wf.step(retry=sm.RetryPolicy(max_attempts=3, backoff=sm.Backoff.fixed(0.5)))
    def a(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        calls.append(ctx.attempt)
        raise ConnectionError("down")

    @wf.step()
    def recover(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"recovered": True}

    wf.transition("a", to=sm.COMPLETE)
    wf.transition("a", to="recover", on="error")
    wf.transition("recover", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("routed", {})
    outcomes = []
    for _ in range(10):
        done = mesh.execute_next(owner_id="w1")
        if done is None:
            clock.advance(0.5)
            done = mesh.execute_next(owner_id="w1")
            if done is None:
                break
        outcomes.append((done.step, done.attempt, done.outcome))
    assert outcomes == [
        ("a", 1, "retry_scheduled"),
        ("a", 2, "retry_scheduled"),
        ("a", 3, "failed"),
        ("recover", 1, "completed"),
    ]
    assert calls == [1, 2, 3]
    snap = mesh.inspect_run(run.id)
    assert snap.status == "completed" and snap.context == {"recovered": True}
    assert snap.error is None


def test_attempt_count_survives_a_restart(make_mesh: MeshFactory, clock: FakeClock) -> None:
    seen: list[int] = []

    def build() -> sm.Workflow:
        wf = sm.Workflow("durable", version="1")

        @wf.step(retry=sm.RetryPolicy(max_attempts=3, backoff=sm.Backoff.fixed(10.0)))
        def a(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
            seen.append(ctx.attempt)
            if ctx.attempt == 1:
                raise RuntimeError("first try fails")
            return {"attempt": ctx.attempt}

        wf.transition("a", to=sm.COMPLETE)
        return wf

    first = make_mesh([build()])
    run = first.start("durable", {})
    t1 = clock.now
    done = first.execute_next(owner_id="w1")
    assert done is not None and done.outcome == "retry_scheduled"
    first.close()

    second = make_mesh([build()])
    snap = second.inspect_run(run.id)
    assert snap.status == "running"
    assert [a.number for a in snap.steps[0].attempts] == [1, 2]
    assert snap.steps[0].attempts[1].visible_at == at(t1 + 10.0)
    clock.now = t1 + 10.0 - EPSILON
    assert second.execute_next(owner_id="w2") is None
    clock.now = t1 + 10.0
    done = second.execute_next(owner_id="w2")
    assert done is not None and done.attempt == 2 and done.outcome == "completed"
    assert seen == [1, 2]
    assert second.inspect_run(run.id).context == {"attempt": 2}
