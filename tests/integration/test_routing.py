"""State-machine routing: conditions, fallback, error routes, input/output mapping, loops, merge order."""

from __future__ import annotations

from typing import Any

import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.clock import FakeClock
from tests.support.databases import row_counts


def drain(mesh: sm.Mesh, clock: FakeClock | None = None, limit: int = 200) -> list[sm.Execution]:
    done: list[sm.Execution] = []
    for _ in range(limit):
        if clock is not None:
            clock.advance(1.0)  # distinct times, so step views sort in execution order
        execution = mesh.execute_next(owner_id="router")
        if execution is None:
            return done
        done.append(execution)
    raise AssertionError("the queue did not drain")


def conditional() -> sm.Workflow:
    wf = sm.Workflow("router", version="1")

    @wf.step()
    def check(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"checked": True}

    for target in ("gold", "high", "negative", "flagged", "colored", "plain", "mapped_in"):

        def leaf(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
            return {"route": ctx.step}

        wf.step(target)(leaf)
        wf.transition(target, to=sm.COMPLETE)

    wf.transition("check", to="gold", when=sm.Condition("tier", equals="gold"))
    wf.transition("check", to="high", when=sm.Condition("score", greater_than=100))
    wf.transition("check", to="negative", when=sm.Condition("score", less_than=0))
    wf.transition("check", to="flagged", when=sm.Condition("meta.flag", exists=True))
    wf.transition("check", to="colored", when=sm.Condition("color", in_=["red", "blue"]))
    wf.transition("check", to="mapped_in", when={"path": "size", "in": ["s", "m"]})
    wf.transition("check", to="plain")
    return wf


CASES: list[tuple[dict[str, Any], str]] = [
    ({"tier": "gold", "score": 1}, "gold"),
    ({"tier": "gold", "score": 500}, "gold"),  # both match: the first declared wins
    ({"tier": "silver", "score": 500}, "high"),
    ({"score": 100}, "plain"),  # greater_than is strict
    ({"score": -1}, "negative"),
    ({"score": 0}, "plain"),
    ({"score": "1000"}, "plain"),  # a string is not a number
    ({"meta": {"flag": None}}, "flagged"),  # exists: present, even when null
    ({"meta": {}}, "plain"),
    ({"color": "blue"}, "colored"),
    ({"color": "green"}, "plain"),
    ({"size": "m"}, "mapped_in"),
    ({"tier": True}, "plain"),
    ({}, "plain"),  # the fallback
]


def test_conditions_first_match_wins_and_fallback(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([conditional()])
    runs = [(mesh.start("router", payload).id, expected) for payload, expected in CASES]
    drain(mesh)
    for run_id, expected in runs:
        snap = mesh.inspect_run(run_id)
        assert snap.status == "completed", (snap.payload, snap.error)
        assert snap.context == {"checked": True, "route": expected}, snap.payload
        assert {s.name for s in snap.steps} == {"check", expected}
    assert mesh.verify() == []


def test_no_matching_ok_transition_fails_the_run(make_mesh: MeshFactory) -> None:
    wf = sm.Workflow("nomatch", version="1")

    @wf.step()
    def a(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"x": 1}

    @wf.step()
    def b(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {}

    wf.transition("a", to="b", when=sm.Condition("x", equals=2))
    wf.transition("b", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("nomatch", {})
    done = drain(mesh)
    assert [(d.step, d.outcome, d.run_status) for d in done] == [("a", "completed", "failed")]
    snap = mesh.inspect_run(run.id)
    assert snap.status == "failed"
    assert snap.error is not None
    assert snap.error["code"] == "no_matching_transition"
    assert snap.error["step"] == "a"
    assert "'a'" in snap.error["message"]
    assert [s.name for s in snap.steps] == ["a"]


def fail_routed(handler_to: str) -> sm.Workflow:
    wf = sm.Workflow("failing", version="1")

    @wf.step(retry=sm.RetryPolicy(max_attempts=5), entry=True)
    def charge(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        raise sm.Fail("card declined", code="card_declined", details={"last4": "4242"})

    @wf.step()
    def notify(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"notified": ctx.state.get("charged", "never")}

    wf.transition("charge", to=sm.COMPLETE)
    wf.transition("charge", to=handler_to, on="error")
    wf.transition("notify", to=sm.COMPLETE)
    return wf


def test_fail_takes_the_error_route_without_retrying(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([fail_routed("notify")])
    run = mesh.start("failing", {})
    done = drain(mesh)
    assert [(d.step, d.attempt, d.outcome) for d in done] == [
        ("charge", 1, "failed"),
        ("notify", 1, "completed"),
    ]
    snap = mesh.inspect_run(run.id)
    assert snap.status == "completed"
    assert snap.context == {"notified": "never"}
    charge = next(s for s in snap.steps if s.name == "charge")
    assert len(charge.attempts) == 1
    error = charge.attempts[0].error
    assert error is not None
    assert (error["type"], error["code"], error["message"]) == (
        "Fail",
        "card_declined",
        "card declined",
    )
    assert error["details"] == {"last4": "4242"}


def test_error_route_to_complete_ends_completed(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([fail_routed(sm.COMPLETE)])
    run = mesh.start("failing", {})
    done = drain(mesh)
    assert [(d.step, d.outcome, d.run_status) for d in done] == [("charge", "failed", "completed")]
    snap = mesh.inspect_run(run.id)
    assert snap.status == "completed"
    assert snap.error is None
    assert snap.context == {}


def test_fail_without_error_route_fails_the_run(make_mesh: MeshFactory) -> None:
    wf = sm.Workflow("no_route", version="1")

    @wf.step()
    def charge(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        raise sm.Fail("card declined", code="card_declined")

    wf.transition("charge", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("no_route", {})
    drain(mesh)
    snap = mesh.inspect_run(run.id)
    assert snap.status == "failed"
    assert snap.error is not None
    assert (snap.error["type"], snap.error["code"], snap.error["message"]) == (
        "Fail",
        "card_declined",
        "card declined",
    )


def mapping_workflow(inputs: list[dict[str, Any]]) -> sm.Workflow:
    wf = sm.Workflow("mapping", version="1")

    @wf.step(output="load")
    def load(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        inputs.append(dict(input))
        return {"account": {"id": "acc_" + input["customer"]}, "amount": 120}

    @wf.step(input=["customer", "note", "absent"])
    def pick(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        inputs.append(dict(input))
        return {"picked": sorted(input)}

    @wf.step(input={"acct": "load.account.id", "amt": "load.amount"}, output="charge")
    def charge(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        inputs.append(dict(input))
        return {"charged": input["amt"], "to": input["acct"]}

    wf.transition("load", to="pick")
    wf.transition("pick", to="charge")
    wf.transition("charge", to=sm.COMPLETE)
    return wf


def test_input_selection_nested_paths_and_output_wrapping(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    inputs: list[dict[str, Any]] = []
    mesh = make_mesh([mapping_workflow(inputs)])
    run = mesh.start("mapping", {"customer": "c1", "note": "vip", "secret_field": "x"})
    drain(mesh, clock)
    assert inputs == [
        {"customer": "c1", "note": "vip", "secret_field": "x"},
        {"customer": "c1", "note": "vip"},  # selection keeps listed keys that exist
        {"acct": "acc_c1", "amt": 120},
    ]
    snap = mesh.inspect_run(run.id)
    assert snap.status == "completed"
    assert snap.context == {
        "load": {"account": {"id": "acc_c1"}, "amount": 120},
        "picked": ["customer", "note"],
        "charge": {"charged": 120, "to": "acc_c1"},
    }
    assert [s.name for s in snap.steps] == ["load", "pick", "charge"]
    assert snap.steps[2].input == {"acct": "acc_c1", "amt": 120}
    # the attempt keeps the raw output; the context holds it wrapped
    assert snap.steps[0].attempts[0].output == {"account": {"id": "acc_c1"}, "amount": 120}


def test_missing_mapped_path_for_a_successor_fails_the_run(make_mesh: MeshFactory) -> None:
    wf = sm.Workflow("missing_path", version="1")
    ran: list[str] = []

    @wf.step()
    def a(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        ran.append("a")
        return {"load": {"id": 1}}

    @wf.step(input={"amount": "load.amount"})
    def b(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        ran.append("b")
        return {}

    wf.transition("a", to="b")
    wf.transition("b", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("missing_path", {})
    done = drain(mesh)
    assert [(d.step, d.run_status) for d in done] == [("a", "failed")]
    assert ran == ["a"]
    snap = mesh.inspect_run(run.id)
    assert snap.status == "failed"
    assert snap.error is not None
    assert snap.error["code"] == "missing_input_path"
    assert snap.error["step"] == "b"
    assert "load.amount" in snap.error["message"]
    assert snap.context == {"load": {"id": 1}}


def test_missing_mapped_path_for_the_entry_step_refuses_the_start(
    make_mesh: MeshFactory, db_url: str
) -> None:
    wf = sm.Workflow("entry_path", version="1")

    @wf.step(input={"id": "invoice.id"})
    def a(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {}

    wf.transition("a", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    before = row_counts(db_url)
    with pytest.raises(sm.InputMappingError) as info:
        mesh.start("entry_path", {"invoice": {}})
    assert info.value.code == "missing_input_path"
    assert info.value.path == "invoice.id"
    assert row_counts(db_url) == before


def looping(max_visits: int, visits: list[tuple[int, int]]) -> sm.Workflow:
    wf = sm.Workflow("loop", version="1")

    @wf.step(entry=True, max_visits=max_visits)
    def inc(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        visits.append((ctx.visit, ctx.attempt))
        return {"count": input.get("count", 0) + 1, f"visit_{ctx.visit}": True}

    wf.transition("inc", to="inc", when=sm.Condition("count", less_than=3))
    wf.transition("inc", to=sm.COMPLETE)
    return wf


def test_loop_revisits_a_step_with_a_new_visit_each_time(make_mesh: MeshFactory) -> None:
    visits: list[tuple[int, int]] = []
    mesh = make_mesh([looping(10, visits)])
    run = mesh.start("loop", {})
    done = drain(mesh)
    assert [d.outcome for d in done] == ["completed"] * 3
    assert visits == [(1, 1), (2, 1), (3, 1)]
    snap = mesh.inspect_run(run.id)
    assert snap.status == "completed"
    assert snap.context == {"count": 3, "visit_1": True, "visit_2": True, "visit_3": True}
    assert [(s.name, s.visit) for s in snap.steps] == [("inc", 1), ("inc", 2), ("inc", 3)]
    assert [s.input.get("count") for s in snap.steps] == [None, 1, 2]
    assert all(s.status == "completed" for s in snap.steps)
    assert mesh.verify() == []


def test_max_visits_exceeded_fails_the_run(make_mesh: MeshFactory) -> None:
    visits: list[tuple[int, int]] = []
    mesh = make_mesh([looping(2, visits)])
    run = mesh.start("loop", {})
    drain(mesh)
    assert visits == [(1, 1), (2, 1)]
    snap = mesh.inspect_run(run.id)
    assert snap.status == "failed"
    assert snap.error is not None
    assert snap.error["code"] == "max_visits_exceeded"
    assert snap.error["step"] == "inc"
    assert [s.visit for s in snap.steps] == [1, 2]
    assert snap.context["count"] == 2


def test_the_workflow_max_visits_bounds_a_loop_back_to_an_earlier_step(
    make_mesh: MeshFactory,
) -> None:
    wf = sm.Workflow("ping_pong", version="1", max_visits=3)

    @wf.step(entry=True)
    def ping(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"pings": input.get("pings", 0) + 1}

    @wf.step()
    def pong(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {}

    wf.transition("ping", to="pong")
    wf.transition("pong", to="ping")  # forever, but for max_visits
    mesh = make_mesh([wf])
    run = mesh.start("ping_pong", {})
    assert [(d.step, d.outcome) for d in drain(mesh)] == [
        ("ping", "completed"),
        ("pong", "completed"),
    ] * 3
    snap = mesh.inspect_run(run.id)
    assert snap.status == "failed" and snap.error is not None
    assert (snap.error["code"], snap.error["step"]) == ("max_visits_exceeded", "ping")
    assert "4 times" in snap.error["message"] and "max_visits is 3" in snap.error["message"]
    assert snap.context["pings"] == 3
    assert sorted((s.name, s.visit) for s in snap.steps) == [
        (name, visit) for name in ("ping", "pong") for visit in (1, 2, 3)
    ]


def test_context_merge_order_is_the_order_results_were_applied(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    wf = sm.Workflow("merge", version="1")

    @wf.step()
    def first(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"x": "first", "a": 1}

    @wf.step()
    def second(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        assert ctx.state["x"] == "first"
        return {"x": "second", "b": 2}

    @wf.step()
    def third(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"a": "third"}

    wf.transition("first", to="second")
    wf.transition("second", to="third")
    wf.transition("third", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("merge", {"x": "payload", "a": 0})
    drain(mesh, clock)
    snap = mesh.inspect_run(run.id, history=True)
    assert snap.context == {"x": "second", "a": "third", "b": 2}
    assert snap.payload == {"x": "payload", "a": 0}
    assert snap.history is not None
    applied = [e.data["output"] for e in snap.history if e.kind == "result_applied"]
    assert applied == [{"x": "first", "a": 1}, {"x": "second", "b": 2}, {"a": "third"}]
    merged: dict[str, Any] = {}
    for output in applied:
        merged.update(output)
    assert snap.context == merged
