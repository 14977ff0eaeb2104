"""execute_next(prefetch=True): the recording transaction also claims the next attempt."""

from __future__ import annotations

import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.clock import FakeClock


def counted_workflow(calls: list[str]) -> sm.Workflow:
    wf = sm.Workflow("pre", version="1")

    @wf.step()
    def a(input: dict, ctx: sm.StepContext) -> dict:
        calls.append("a")
        return {"a": 1}

    @wf.step()
    def b(input: dict, ctx: sm.StepContext) -> dict:
        calls.append("b")
        return {"b": 2}

    wf.transition("a", to="b")
    wf.transition("b", to=sm.COMPLETE)
    return wf


def attempt_of(mesh: sm.Mesh, run_id: str, step: str) -> sm.AttemptView:
    [view] = [s for s in mesh.inspect_run(run_id).steps if s.name == step]
    return view.attempts[-1]


def test_the_successor_is_claimed_with_the_outcome_and_run_by_the_next_call(
    make_mesh: MeshFactory,
) -> None:
    calls: list[str] = []
    mesh = make_mesh([counted_workflow(calls)])
    other = make_mesh([counted_workflow(calls)])
    run = mesh.start("pre", {})
    first = mesh.execute_next(owner_id="w1", prefetch=True)
    assert first is not None and first.step == "a" and first.outcome == "completed"
    held = attempt_of(mesh, run.id, "b")
    assert held.status == "running" and held.owner == "w1" and held.claims == 1
    assert other.execute_next(owner_id="w2") is None, "a held claim is not visible to others"
    second = mesh.execute_next(owner_id="w1", prefetch=True)
    assert second is not None and second.step == "b" and second.outcome == "completed"
    assert mesh.execute_next(owner_id="w1", prefetch=True) is None
    assert calls == ["a", "b"]
    assert attempt_of(mesh, run.id, "b").claims == 1
    assert mesh.inspect_run(run.id).status == "completed"
    assert mesh.verify() == []


def test_close_gives_an_unrun_held_claim_back_at_once(make_mesh: MeshFactory) -> None:
    calls: list[str] = []
    mesh = make_mesh([counted_workflow(calls)])
    run = mesh.start("pre", {})
    assert mesh.execute_next(owner_id="w1", prefetch=True) is not None
    mesh.close()
    other = make_mesh([counted_workflow(calls)])
    released = attempt_of(other, run.id, "b")
    assert released.status == "scheduled" and released.owner is None
    done = other.execute_next(owner_id="w2")
    assert done is not None and done.step == "b" and done.outcome == "completed"
    history = [h.kind for h in other.inspect_run(run.id, history=True).history or ()]
    assert "attempt_released" in history
    assert attempt_of(other, run.id, "b").claims == 2
    assert other.verify() == []


def test_cancel_through_the_same_mesh_drops_its_held_claim(make_mesh: MeshFactory) -> None:
    calls: list[str] = []
    mesh = make_mesh([counted_workflow(calls)])
    run = mesh.start("pre", {})
    assert mesh.execute_next(owner_id="w1", prefetch=True) is not None
    mesh.cancel(run.id)
    assert mesh.execute_next(owner_id="w1", prefetch=True) is None
    assert calls == ["a"], "the cancelled run's next step never started"
    assert attempt_of(mesh, run.id, "b").status == "cancelled"


def test_a_held_claim_whose_lease_ran_out_is_not_run_from_the_hold(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    calls: list[str] = []
    mesh = make_mesh([counted_workflow(calls)])
    other = make_mesh([counted_workflow(calls)])
    run = mesh.start("pre", {})
    assert mesh.execute_next(owner_id="w1", prefetch=True, lease=5.0) is not None
    clock.advance(6.0)
    taken = other.execute_next(owner_id="w2")
    assert taken is not None and taken.step == "b" and taken.outcome == "completed"
    assert mesh.execute_next(owner_id="w1", prefetch=True) is None
    assert calls == ["a", "b"], "b ran once, by the worker that took the expired claim over"
    assert attempt_of(mesh, run.id, "b").owner == "w2"


def test_prefetch_must_be_a_boolean(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([counted_workflow([])])
    with pytest.raises(sm.InvalidOptionError) as caught:
        mesh.execute_next(owner_id="w1", prefetch="yes")  # type: ignore[arg-type]
    assert caught.value.option == "prefetch"
