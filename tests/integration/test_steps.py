"""The step contract: sync and async, what ctx offers, output checks, redaction, queues."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.clock import FakeClock


def drain(mesh: sm.Mesh, queue: str = "default") -> list[sm.Execution]:
    done: list[sm.Execution] = []
    while (execution := mesh.execute_next(owner_id="w1", queue=queue)) is not None:
        done.append(execution)
        assert len(done) < 100
    return done


def test_async_steps_work(make_mesh: MeshFactory) -> None:
    wf = sm.Workflow("async_flow", version="1")

    @wf.step()
    async def fetch(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"fetched": input["n"] + 1}

    @wf.step()
    async def store(input: dict[str, Any], ctx: sm.StepContext) -> None:
        await asyncio.sleep(0)

    @wf.step()
    def finish(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"final": input["fetched"] * 10}

    wf.transition("fetch", to="store")
    wf.transition("store", to="finish")
    wf.transition("finish", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("async_flow", {"n": 1})
    assert [d.outcome for d in drain(mesh)] == ["completed"] * 3
    snap = mesh.inspect_run(run.id)
    assert snap.status == "completed"
    assert snap.context == {"fetched": 2, "final": 20}


def test_async_step_errors_are_recorded(make_mesh: MeshFactory) -> None:
    wf = sm.Workflow("async_fail", version="1")

    @wf.step()
    async def boom(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        await asyncio.sleep(0)
        raise KeyError("missing")

    wf.transition("boom", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("async_fail", {})
    drain(mesh)
    snap = mesh.inspect_run(run.id)
    assert snap.status == "failed"
    assert snap.error is not None and snap.error["type"] == "builtins.KeyError"


def test_ctx_fields(make_mesh: MeshFactory) -> None:
    wf = sm.Workflow("ctx_flow", version="3")
    seen: list[dict[str, Any]] = []

    def record(ctx: sm.StepContext) -> None:
        seen.append(
            {
                "run_id": ctx.run_id,
                "workflow": ctx.workflow,
                "version": ctx.version,
                "step": ctx.step,
                "attempt": ctx.attempt,
                "visit": ctx.visit,
                "key": ctx.idempotency_key,
                "state": dict(ctx.state),
                "cancelled": ctx.cancelled,
            }
        )

    @wf.step(retry=sm.RetryPolicy(max_attempts=3))
    def first(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        record(ctx)
        if ctx.attempt < 3:
            raise sm.Retry("again", after=0)
        return {"first": True}

    @wf.step()
    def second(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        record(ctx)
        return {"second": True}

    wf.transition("first", to="second")
    wf.transition("second", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("ctx_flow", {"p": 1})
    drain(mesh)
    assert mesh.inspect_run(run.id).status == "completed"

    assert [(s["step"], s["attempt"], s["visit"]) for s in seen] == [
        ("first", 1, 1),
        ("first", 2, 1),
        ("first", 3, 1),
        ("second", 1, 1),
    ]
    for s in seen:
        assert s["run_id"] == run.id
        assert s["workflow"] == "ctx_flow"
        assert s["version"] == "3"
        assert s["cancelled"] is False
        assert isinstance(s["key"], str) and s["key"]
    first_keys = {s["key"] for s in seen[:3]}
    assert len(first_keys) == 1  # stable across retries
    assert seen[3]["key"] not in first_keys  # distinct per step
    assert seen[0]["state"] == {"p": 1}
    assert seen[3]["state"] == {"p": 1, "first": True}


def test_idempotency_key_is_distinct_per_run(make_mesh: MeshFactory) -> None:
    wf = sm.Workflow("keys", version="1")
    keys: list[str] = []

    @wf.step()
    def a(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        keys.append(ctx.idempotency_key)
        return {}

    wf.transition("a", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    mesh.start("keys", {})
    mesh.start("keys", {})
    drain(mesh)
    assert len(keys) == 2 and len(set(keys)) == 2


def test_step_returning_none_merges_nothing(make_mesh: MeshFactory) -> None:
    wf = sm.Workflow("nothing", version="1")

    @wf.step()
    def a(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"a": 1}

    @wf.step()
    def b(input: dict[str, Any], ctx: sm.StepContext) -> None:
        return None

    wf.transition("a", to="b")
    wf.transition("b", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("nothing", {})
    assert [d.outcome for d in drain(mesh)] == ["completed", "completed"]
    snap = mesh.inspect_run(run.id)
    assert snap.status == "completed"
    assert snap.context == {"a": 1}
    b_view = next(s for s in snap.steps if s.name == "b")
    assert b_view.attempts[0].output == {}


@pytest.mark.parametrize(
    "returned",
    [
        [1, 2],
        "text",
        42,
        {1: "int key"},
        {"x": {2: "nested int key"}},
        {"x": object()},
        {"x": float("nan")},
        {"x": {1, 2}},
    ],
    ids=["list", "str", "int", "int-key", "nested-int-key", "object", "nan", "set"],
)
def test_invalid_output_fails_with_invalid_output(make_mesh: MeshFactory, returned: Any) -> None:
    wf = sm.Workflow("bad_output", version="1")

    @wf.step()
    def a(input: dict[str, Any], ctx: sm.StepContext) -> Any:
        return returned

    wf.transition("a", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("bad_output", {})
    done = drain(mesh)
    assert [(d.outcome, d.run_status) for d in done] == [("failed", "failed")]
    snap = mesh.inspect_run(run.id)
    assert snap.status == "failed"
    assert snap.error is not None
    assert snap.error["code"] == "invalid_output"
    assert "'a'" in snap.error["message"]
    assert snap.context == {}
    assert mesh.verify() == []


def test_fail_details_are_redacted(make_mesh: MeshFactory) -> None:
    wf = sm.Workflow("secretive", version="1")

    @wf.step()
    def login(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        raise sm.Fail(
            "login refused",
            code="auth_failed",
            details={"user": "ann", "password": "hunter2", "nested": {"token": "t0k3n"}},
        )

    wf.transition("login", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("secretive", {})
    done = drain(mesh)
    assert done[0].outcome == "failed"
    snap = mesh.inspect_run(run.id, history=True)
    assert snap.error is not None
    assert snap.error["code"] == "auth_failed"
    assert snap.error["details"] == {
        "user": "ann",
        "password": "[REDACTED]",
        "nested": {"token": "[REDACTED]"},
    }
    attempt_error = snap.steps[0].attempts[0].error
    assert attempt_error is not None and attempt_error["details"]["password"] == "[REDACTED]"
    dumped = repr(snap)
    assert "hunter2" not in dumped and "t0k3n" not in dumped
    assert done[0].error is not None and "hunter2" not in repr(done[0].error)


def test_queue_separation(make_mesh: MeshFactory) -> None:
    wf = sm.Workflow("queued", version="1")

    @wf.step()
    def a(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"ran": True}

    wf.transition("a", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("queued", {}, queue="q2")
    assert run.queue == "q2"
    assert mesh.execute_next(owner_id="w1") is None
    assert mesh.execute_next(owner_id="w1", queue="other") is None
    assert mesh.inspect_run(run.id).steps[0].attempts[0].claims == 0
    done = mesh.execute_next(owner_id="w1", queue="q2")
    assert done is not None and done.run_id == run.id and done.outcome == "completed"
    assert mesh.inspect_run(run.id).status == "completed"


def test_workflow_default_queue_is_used(make_mesh: MeshFactory) -> None:
    wf = sm.Workflow("laned", version="1", queue="lane")

    @wf.step()
    def a(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {}

    wf.transition("a", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("laned", {})
    assert run.queue == "lane"
    assert mesh.execute_next(owner_id="w1") is None
    done = mesh.execute_next(owner_id="w1", queue="lane")
    assert done is not None and done.run_id == run.id


def test_a_fail_or_retry_carrying_values_json_cannot_hold_is_still_recorded(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    wf = sm.Workflow("odd_values", version="1")

    @wf.step(retry=sm.RetryPolicy(max_attempts=2))
    def stamp(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        if ctx.attempt == 1:
            raise sm.Retry(datetime(2026, 1, 1, tzinfo=UTC))  # type: ignore[arg-type]
        raise sm.Fail("no", details={"when": datetime(2026, 1, 2, tzinfo=UTC), "ids": {1}})

    wf.transition("stamp", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("odd_values", {})
    first = mesh.execute_next(owner_id="w1")
    second = mesh.execute_next(owner_id="w1")
    assert first is not None and first.outcome == "retry_scheduled"
    assert second is not None and second.outcome == "failed"
    snap = mesh.inspect_run(run.id)
    assert snap.status == "failed"
    assert snap.error is not None and "2026, 1, 2" in snap.error["details"]["when"]
    assert snap.error["details"]["ids"] == "{1}"
    assert "2026, 1, 1" in (snap.steps[0].attempts[0].error or {})["message"]
    assert mesh.verify() == []
