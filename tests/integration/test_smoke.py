"""The design's example flow, end to end, on both stores."""

from __future__ import annotations

import squid_mesh as sm
from tests.conftest import MeshFactory


def three_steps() -> sm.Workflow:
    wf = sm.Workflow("three", version="1")

    @wf.step()
    def a(input: dict, ctx: sm.StepContext) -> dict:
        return {"a": input["n"] + 1}

    @wf.step()
    def b(input: dict, ctx: sm.StepContext) -> dict:
        return {"b": input["a"] * 2}

    @wf.step()
    def c(input: dict, ctx: sm.StepContext) -> dict:
        return {"c": input["b"] - 1}

    wf.transition("a", to="b")
    wf.transition("b", to="c")
    wf.transition("c", to=sm.COMPLETE)
    return wf


def test_three_steps_complete_and_verify(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([three_steps()])
    run = mesh.start("three", {"n": 1})
    assert run.status == "running" and run.current_steps == ("a",)
    outcomes = []
    while (done := mesh.execute_next(owner_id="w1")) is not None:
        outcomes.append((done.step, done.outcome))
    assert outcomes == [("a", "completed"), ("b", "completed"), ("c", "completed")]
    snap = mesh.inspect_run(run.id, history=True)
    assert snap.status == sm.RunStatus.COMPLETED
    assert snap.context == {"a": 2, "b": 4, "c": 3}
    assert [s.name for s in snap.steps] == ["a", "b", "c"]
    assert snap.history is not None and snap.history[0].kind == "run_started"
    assert snap.history[-1].kind == "run_completed"
    assert mesh.verify() == []
