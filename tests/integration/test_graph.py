"""run_graph: node and edge statuses for branches, DAG failures and compensation; DOT and Mermaid."""

from __future__ import annotations

import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.clock import FakeClock


def drain(mesh: sm.Mesh) -> None:
    while mesh.execute_next(owner_id="w"):
        pass


def statuses(graph: sm.RunGraph) -> dict[str, str]:
    return {n.id: n.status for n in graph.nodes}


def edges(graph: sm.RunGraph) -> dict[tuple[str, str, str | None], str]:
    return {(e.source, e.target, e.on): e.status for e in graph.edges}


def routing() -> sm.Workflow:
    wf = sm.Workflow("routing", version="1")

    @wf.step()
    def check(input: dict, ctx: sm.StepContext) -> dict:
        return {"amount": input["amount"]}

    @wf.step()
    def escalate(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    @wf.step()
    def settle(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    @wf.step()
    def recover(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    wf.transition("check", to="escalate", when=sm.Condition("amount", greater_than=100))
    wf.transition("check", to="settle")
    wf.transition("check", to="recover", on="error")
    wf.transition("escalate", to=sm.COMPLETE)
    wf.transition("settle", to=sm.COMPLETE)
    wf.transition("recover", to=sm.COMPLETE)
    return wf


def test_a_conditional_branch_shows_the_path_taken(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([routing()])
    run = mesh.start("routing", {"amount": 250})
    pending = mesh.run_graph(run.id)
    assert statuses(pending)["check"] == "pending" and pending.current == ("check",)
    assert edges(pending)[("check", "escalate", "ok")] == "pending"
    drain(mesh)
    graph = mesh.run_graph(run.id)
    assert statuses(graph) == {
        "check": "completed",
        "escalate": "completed",
        "settle": "skipped",
        "recover": "skipped",
        "complete": "completed",
    }
    assert edges(graph) == {
        ("check", "escalate", "ok"): "selected",
        ("check", "settle", "ok"): "skipped",
        ("check", "recover", "error"): "skipped",
        ("escalate", "complete", "ok"): "selected",
        ("settle", "complete", "ok"): "blocked",
        ("recover", "complete", "ok"): "blocked",
    }
    conditional = next(e for e in graph.edges if e.target == "escalate")
    assert conditional.condition == {"path": "amount", "greater_than": 100}
    assert graph.current == ()
    dot = graph.to_dot()
    assert dot.startswith(f'digraph "{run.id}"') and '"check" -> "escalate"' in dot
    assert "style=bold" in dot and "amount greater_than 100" in dot
    mermaid = graph.to_mermaid()
    assert (
        mermaid.startswith("flowchart LR") and "==>" in mermaid and "classDef completed" in mermaid
    )


def test_a_dag_with_a_failed_branch_and_its_compensation(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    wf = sm.Workflow("dag", version="1")

    @wf.step(compensate=lambda input, ctx: {})
    def left(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    @wf.step(after=["left"])
    def right(input: dict, ctx: sm.StepContext) -> dict:
        raise sm.Fail("right broke")

    @wf.step(after=["left", "right"])
    def join(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    mesh = make_mesh([wf])
    run = mesh.start("dag", {})
    mesh.execute_next(owner_id="w")  # left
    mesh.execute_next(owner_id="w")  # right fails: compensation of left is planned
    mid = mesh.run_graph(run.id)
    assert statuses(mid) == {"left": "completed", "right": "failed", "join": "pending"}
    assert mid.current == ("left#compensate",)
    drain(mesh)
    graph = mesh.run_graph(run.id)
    assert statuses(graph) == {"left": "compensated", "right": "failed", "join": "skipped"}
    assert edges(graph) == {
        ("left", "right", None): "selected",
        ("left", "join", None): "selected",
        ("right", "join", None): "blocked",
    }
    assert all(e.kind == "dependency" for e in graph.edges)


def test_a_paused_gate_and_a_retrying_step(make_mesh: MeshFactory, clock: FakeClock) -> None:
    wf = sm.Workflow("gated", version="1")
    calls: list[int] = []

    @wf.step(retry=sm.RetryPolicy(max_attempts=2, backoff=sm.Backoff.fixed(5)))
    def flaky(input: dict, ctx: sm.StepContext) -> dict:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("once")
        return {}

    wf.pause("hold")
    wf.transition("flaky", to="hold")
    wf.transition("hold", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("gated", {})
    mesh.execute_next(owner_id="w")
    assert statuses(mesh.run_graph(run.id))["flaky"] == "retrying"
    clock.advance(5)
    drain(mesh)
    graph = mesh.run_graph(run.id)
    assert statuses(graph)["hold"] == "paused"
    assert edges(graph)[("flaky", "hold", "ok")] == "selected"
    assert edges(graph)[("hold", "complete", "ok")] == "pending"
    mesh.resume(run.id)
    assert edges(mesh.run_graph(run.id))[("hold", "complete", "ok")] == "selected"


def test_a_graph_needs_the_run_s_version(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([routing()])
    run = mesh.start("routing", {"amount": 1})
    other = make_mesh([])
    with pytest.raises(sm.UnknownWorkflowError):
        other.run_graph(run.id)
