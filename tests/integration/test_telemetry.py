"""Logs, OpenTelemetry spans and metrics, and the Prometheus text of a mesh at work."""

from __future__ import annotations

import logging
import time
import urllib.request
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import squid_mesh as sm
from tests.conftest import MeshFactory

SECRET = "tok_live_SECRET123"


def family() -> list[sm.Workflow]:
    child = sm.Workflow("child")

    @child.step()
    def shout(input: dict, ctx: sm.StepContext) -> dict:
        return {"loud": input["word"].upper()}

    child.transition("shout", to=sm.COMPLETE)

    parent = sm.Workflow("parent")

    @parent.step()
    def spawn(input: dict, ctx: sm.StepContext) -> dict:
        ctx.start_child("child", {"word": "hi", "api_token": input["api_token"]}, child_key="c1")
        return {}

    @parent.step()
    def finish(input: dict, ctx: sm.StepContext) -> dict:
        return {"done": True}

    parent.transition("spawn", to="finish")
    parent.transition("finish", to=sm.COMPLETE)
    return [parent, child]


def traced() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A tracer provider whose finished spans the returned exporter holds."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def drain(mesh: sm.Mesh) -> int:
    n = 0
    while mesh.execute_next(owner_id="w") is not None:
        n += 1
    return n


def by_name(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def attribute_values(spans: list[ReadableSpan]) -> list[str]:
    return [str(v) for s in spans for v in (s.attributes or {}).values()]


def test_one_span_per_attempt_under_the_start_span_children_included(
    make_mesh: MeshFactory,
) -> None:
    provider, exporter = traced()
    mesh = make_mesh(family(), tracer_provider=provider)
    host = provider.get_tracer("host")
    with host.start_as_current_span("POST /signup") as request:
        run = mesh.start("parent", {"api_token": SECRET})
    executed = drain(mesh)
    assert executed == 3
    spans = list(exporter.get_finished_spans())
    starts = by_name(spans, "squid_mesh.start")
    steps = by_name(spans, "squid_mesh.step")
    assert len(steps) == executed, "one span per attempt"
    [parent_start] = [s for s in starts if s.attributes["squid_mesh.workflow"] == "parent"]
    [child_start] = [s for s in starts if s.attributes["squid_mesh.workflow"] == "child"]
    trace_id = request.get_span_context().trace_id
    assert all(s.context.trace_id == trace_id for s in spans), "one trace, host request included"
    assert parent_start.parent is not None
    assert parent_start.parent.span_id == request.get_span_context().span_id
    by_step = {s.attributes["squid_mesh.step"]: s for s in steps}
    for name in ("spawn", "finish"):
        assert by_step[name].parent.span_id == parent_start.context.span_id
        assert by_step[name].attributes["squid_mesh.run_id"] == run.id
    # The child started inside the spawn step: its start span hangs under that step's span.
    assert child_start.parent.span_id == by_step["spawn"].context.span_id
    assert by_step["shout"].parent.span_id == child_start.context.span_id
    assert by_step["shout"].attributes["squid_mesh.outcome"] == "completed"
    assert not any(SECRET in v or v == "hi" for v in attribute_values(spans))


def test_commands_have_spans_and_a_failed_attempt_is_marked(make_mesh: MeshFactory) -> None:
    provider, exporter = traced()
    wf = sm.Workflow("boom")

    @wf.step()
    def explode(input: dict, ctx: sm.StepContext) -> dict:
        raise sm.Fail("broken", code="broken")

    wf.transition("explode", to=sm.COMPLETE)
    mesh = make_mesh([wf], tracer_provider=provider)
    failing = mesh.start("boom", {})
    drain(mesh)
    cancelled = mesh.start("boom", {})
    mesh.cancel(cancelled.id, reason="no")
    spans = list(exporter.get_finished_spans())
    assert len(by_name(spans, "squid_mesh.cancel")) == 1
    [step] = by_name(spans, "squid_mesh.step")
    assert step.attributes["squid_mesh.outcome"] == "failed"
    assert step.attributes["squid_mesh.run_id"] == failing.id
    assert step.status.status_code.name == "ERROR"


def test_metrics_reach_opentelemetry_and_prometheus_without_ids(make_mesh: MeshFactory) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    mesh = make_mesh(family(), meter_provider=provider, clock=None)
    run = mesh.start("parent", {"api_token": SECRET})
    worker = sm.Worker(mesh, poll_interval=0.1)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        # The parent may complete before its child's step is recorded: count the attempts.
        while worker.executed < 3 or mesh.inspect_run(run.id).status != sm.RunStatus.COMPLETED:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        points: dict[str, list[Any]] = {}
        for rm in reader.get_metrics_data().resource_metrics:
            for sm_ in rm.scope_metrics:
                for metric in sm_.metrics:
                    points[metric.name] = list(metric.data.data_points)
        text = mesh.metrics_text()
        with sm.serve_metrics(mesh, port=0) as server:
            url = f"http://127.0.0.1:{server.port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as resp:
                served = resp.read().decode()
                kind = resp.headers["Content-Type"]
    finally:
        worker.stop()
    completed = sum(p.value for p in points["squid_mesh.attempts"])
    assert completed == 3
    assert {p.attributes["outcome"] for p in points["squid_mesh.attempts"]} == {"completed"}
    assert sum(p.count for p in points["squid_mesh.step.duration"]) == 3
    assert sum(p.count for p in points["squid_mesh.claim.latency"]) == 3
    gauges = {
        (p.attributes["queue"], p.attributes["state"]) for p in points["squid_mesh.queue.attempts"]
    }
    assert gauges == {("default", "visible"), ("default", "claimed"), ("default", "scheduled")}
    labels = [k for pts in points.values() for p in pts for k in p.attributes]
    assert set(labels) <= {"queue", "workflow", "step", "outcome", "state"}
    assert (
        'squid_mesh_attempts_total{outcome="completed",queue="default",step="spawn",'
        'workflow="parent"} 1' in text
    )
    assert 'squid_mesh_queue_attempts{queue="default",state="visible"} 0' in text
    assert "squid_mesh_step_duration_seconds_count" in text
    assert run.id not in text and SECRET not in text
    assert "squid_mesh_attempts_total" in served and kind.startswith("text/plain")


def test_log_records_carry_the_run_metadata(
    make_mesh: MeshFactory, caplog: pytest.LogCaptureFixture
) -> None:
    wf = sm.Workflow("logged")

    @wf.step(retry=sm.RetryPolicy(max_attempts=2))
    def work(input: dict, ctx: sm.StepContext) -> dict:
        ctx.log.info("trying")
        if ctx.attempt == 1:
            raise RuntimeError(f"gateway refused https://pay.example/charge?key={SECRET}")
        return {}

    wf.transition("work", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("logged", {"api_token": SECRET})
    with caplog.at_level(logging.DEBUG, logger="squid_mesh"):
        drain(mesh)
    ours = [r for r in caplog.records if getattr(r, "run_id", None) == run.id]
    from_step = [r for r in ours if r.name == "squid_mesh.steps"]
    assert [r.getMessage() for r in from_step] == ["trying", "trying"]
    assert ours, "records carry run_id"
    for record in ours:
        assert record.workflow == "logged" and record.step == "work"  # type: ignore[attr-defined]
        assert record.attempt in (1, 2)  # type: ignore[attr-defined]
    retry = [r for r in ours if getattr(r, "outcome", None) == "retry_scheduled"]
    assert len(retry) == 1 and retry[0].levelno == logging.WARNING
    assert retry[0].error_type == "builtins.RuntimeError"  # type: ignore[attr-defined]
    assert "RuntimeError" in retry[0].getMessage()
    done = [r for r in ours if getattr(r, "outcome", None) == "completed"]
    assert len(done) == 1 and done[0].attempt == 2  # type: ignore[attr-defined]
    # The error's message (which quotes the secret) stays in the journal, out of the logs.
    assert not any(SECRET in r.getMessage() or SECRET in str(vars(r)) for r in caplog.records)


def test_a_child_started_by_an_async_step_on_a_worker_joins_the_trace(
    make_mesh: MeshFactory,
) -> None:
    provider, exporter = traced()
    child = sm.Workflow("achild")

    @child.step()
    def leaf(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    child.transition("leaf", to=sm.COMPLETE)
    parent = sm.Workflow("aparent")

    @parent.step()
    async def spawn(input: dict, ctx: sm.StepContext) -> dict:
        ctx.start_child("achild", {}, child_key="one")
        return {}

    parent.transition("spawn", to=sm.COMPLETE)
    mesh = make_mesh([parent, child], tracer_provider=provider, clock=None)
    worker = sm.Worker(mesh, poll_interval=0.1)
    worker.start()
    try:
        mesh.start("aparent", {})
        deadline = time.monotonic() + 30
        while worker.executed < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        worker.stop()
    spans = list(exporter.get_finished_spans())
    steps = {s.attributes["squid_mesh.step"]: s for s in by_name(spans, "squid_mesh.step")}
    [child_start] = [
        s
        for s in by_name(spans, "squid_mesh.start")
        if s.attributes["squid_mesh.workflow"] == "achild"
    ]
    assert child_start.parent.span_id == steps["spawn"].context.span_id
    assert steps["leaf"].parent.span_id == child_start.context.span_id
    assert len({s.context.trace_id for s in spans}) == 1
