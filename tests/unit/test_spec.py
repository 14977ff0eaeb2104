"""Workflows as data: every workflow of the repo round-trips through its JSON spec."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from benchmarks.workload import ten_step_loop, three_steps

import squid_mesh as sm
from squid_mesh.definition.spec import action_name
from tests.acceptance.workflows import all_workflows

ROOT = Path(__file__).resolve().parents[2]


def demo_workflow() -> sm.Workflow:
    spec = importlib.util.spec_from_file_location("demo", ROOT / "examples" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    wf: sm.Workflow = module.wf
    return wf


def noop(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
    return {}


def undo(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
    return {}


def every_feature() -> list[sm.Workflow]:
    """One workflow per declaration form the DSL has, so the spec covers them all."""
    machine = sm.Workflow(
        "spec_machine",
        version="3",
        payload={"n": sm.Field(int), "tag": sm.Field(str, required=False, default="x")},
        triggers=[
            sm.Manual(),
            sm.Cron("0 6 * * *", timezone="Europe/Berlin", catch_up="all", payload={"n": 1}),
        ],
        queue="special",
        max_visits=7,
    )
    machine.step(
        "a",
        entry=True,
        retry=sm.RetryPolicy(max_attempts=3, backoff=sm.Backoff.exponential(min=0.5, max=4.0)),
        input=["n"],
        output="a_out",
        compensate=undo,
        compensate_retry=sm.RetryPolicy(max_attempts=5, backoff=sm.Backoff.fixed(2.0)),
    )(noop)
    machine.step("b", input={"count": "a_out.n"}, irreversible=True, max_visits=2)(noop)
    machine.step("c", transactional=True, compensatable=False)(noop)
    machine.wait("cool", 1.5)
    machine.log("say", "hello", level="warning")
    machine.pause("hold")
    machine.approval("sign", output="decision")
    machine.await_children("kids")
    machine.transition("a", to="b")
    machine.transition("a", to="c", on="error")
    machine.transition("b", to="a", when=sm.Condition("loop", equals=True))
    machine.transition("b", to="cool", when={"path": "risk", "in": ["low", "mid"]})
    machine.transition("b", to="c")
    machine.transition("c", to="cool")
    machine.transition("cool", to="say")
    machine.transition("say", to="hold")
    machine.transition("hold", to="sign")
    machine.transition("sign", to="kids")
    machine.transition("sign", to=sm.COMPLETE, on="error")
    machine.transition("kids", to=sm.COMPLETE)

    dag = sm.Workflow("spec_dag", version="1")
    dag.step("left", compensate=undo)(noop)
    dag.step("right")(noop)
    dag.wait("settle", 0.25, after=["left"])
    dag.step("join", after=["settle", "right"], input={"l": "left.x"})(noop)
    return [machine, dag]


def repo_workflows() -> list[sm.Workflow]:
    return [demo_workflow(), three_steps(), ten_step_loop(), *all_workflows(), *every_feature()]


def registry_for(wf: sm.Workflow) -> sm.Registry:
    """A registry naming each distinct function of the workflow uniquely (closures can share a
    qualified name, so a counter tells them apart)."""
    registry = sm.Registry()
    seen: dict[int, str] = {}
    for step in wf.definition().steps.values():
        for fn in (step.fn, step.compensate):
            if fn is not None and step.kind == "task" and id(fn) not in seen:
                seen[id(fn)] = f"{action_name(fn)}#{len(seen)}"
                registry.register(seen[id(fn)], fn)
    return registry


@pytest.mark.parametrize("wf", repo_workflows(), ids=lambda wf: wf.name)
def test_every_workflow_round_trips_through_json_with_the_same_fingerprint(
    wf: sm.Workflow,
) -> None:
    registry = registry_for(wf)
    spec = json.loads(json.dumps(wf.to_spec(registry)))
    back = sm.Workflow.from_spec(spec, registry)
    assert back.definition().fingerprint == wf.definition().fingerprint
    assert back.to_spec(registry) == spec
    for name, step in wf.definition().steps.items():
        assert back.definition().steps[name].fn is step.fn or step.kind != "task"


def test_a_spec_names_its_actions_and_builds_a_runnable_workflow() -> None:
    registry = sm.Registry()

    @registry.action("payment.load_invoice")
    def load_invoice(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"invoice": {"id": input["invoice_id"], "amount": 120}}

    registry.register("payment.notify", lambda input, ctx: {"notified": True})
    spec = {
        "name": "payment_recovery",
        "version": "7",
        "payload": {"invoice_id": {"type": "str"}},
        "steps": [
            {"name": "load", "action": "payment.load_invoice", "output": "loaded"},
            {"name": "notify", "action": "payment.notify"},
        ],
        "transitions": [
            {"from": "load", "to": "notify"},
            {"from": "notify", "to": "complete"},
        ],
    }
    wf = sm.Workflow.from_spec(spec, registry)
    mesh = sm.connect("sqlite:///:memory:", workflows=[wf])
    mesh.migrate()
    run = mesh.start("payment_recovery", {"invoice_id": "inv_1"})
    while mesh.execute_next(owner_id="w"):
        pass
    assert mesh.inspect_run(run.id).context == {
        "loaded": {"invoice": {"id": "inv_1", "amount": 120}},
        "notified": True,
    }
    assert registry.names() == ["payment.load_invoice", "payment.notify"]


def test_every_problem_of_a_spec_is_reported_with_its_path() -> None:
    registry = sm.Registry()
    registry.register("known", noop)
    spec = {
        "name": "broken",
        "version": 2,
        "colour": "blue",
        "payload": {"n": {"type": "decimal"}},
        "triggers": [{"type": "cron", "expression": "not cron"}, {"type": "webhook"}],
        "steps": [
            {"name": "a", "action": "missing.action"},
            {"name": "b", "action": "known", "compensate": "nope", "speed": 3},
            {"name": "c", "kind": "teleport"},
            "not a step",
        ],
        "transitions": [{"from": "a", "to": "b", "unless": {}}, 7],
    }
    with pytest.raises(sm.SpecError) as refused:
        sm.Workflow.from_spec(spec, registry)
    assert refused.value.problems == [
        "$.colour: unknown key",
        "$.version: expected a string",
        "$.steps[0].action: unknown action 'missing.action'",
        "$.steps[1].speed: unknown key",
        "$.steps[1].compensate: unknown action 'nope'",
        "$.steps[2].kind: expected task, wait, log, pause, approval or children",
        "$.steps[3]: expected an object",
        "$.transitions[0].unless: unknown key",
        "$.transitions[1]: expected an object",
        "$.payload.n.type: expected one of ['bool', 'dict', 'float', 'int', 'list', 'str']",
        "$.triggers[0]: cron trigger 'cron': invalid expression 'not cron'",
        "$.triggers[1].type: expected 'manual' or 'cron'",
    ]
    assert isinstance(refused.value, sm.DefinitionError)


def test_a_definition_problem_is_reported_where_it_was_found() -> None:
    registry = sm.Registry()
    registry.register("known", noop)
    spec = {
        "name": "w",
        "version": "1",
        "steps": [{"name": "a", "action": "known"}, {"name": "b", "action": "known"}],
        "transitions": [{"from": "a", "to": "b"}, {"from": "b", "to": "nowhere"}],
    }
    with pytest.raises(sm.SpecError, match=r"\$: .*unknown target 'nowhere'"):
        sm.Workflow.from_spec(spec, registry)
    spec["steps"] = [{"name": "a", "action": "known", "retry": {"max_attempts": 0}}]
    with pytest.raises(sm.SpecError, match=r"\$\.steps\[0\]: .*max_attempts"):
        sm.Workflow.from_spec(spec, registry)


@pytest.mark.parametrize(
    ("register", "message"),
    [
        (lambda r: r.register("", noop), r"action name ''"),
        (lambda r: r.register(" padded ", noop), r"no padding"),
        (lambda r: r.register("x", "not callable"), r"expected a callable"),
        (lambda r: (r.register("x", noop), r.register("x", undo)), r"registered twice"),
    ],
)
def test_bad_registrations_are_refused(
    register: Callable[[sm.Registry], object], message: str
) -> None:
    with pytest.raises(sm.DefinitionError, match=message):
        register(sm.Registry())


def test_a_pydantic_payload_has_no_spec_form() -> None:
    from pydantic import BaseModel

    class Invoice(BaseModel):
        invoice_id: str

    wf = sm.Workflow("typed", payload=Invoice)
    wf.step("only")(noop)
    wf.transition("only", to=sm.COMPLETE)
    with pytest.raises(sm.SpecError, match=r"\$\.payload: a pydantic model payload"):
        wf.to_spec()


def test_the_guide_s_complete_spec_is_valid() -> None:
    import re

    text = (ROOT / "docs" / "workflows-as-data.md").read_text()
    match = re.search(r"```json\n(.*?)```", text, re.S)
    assert match is not None
    spec = json.loads(match.group(1))
    registry = sm.Registry()
    for step in spec["steps"]:
        for key in ("action", "compensate"):
            if key in step:
                registry.register(step[key], noop)
    wf = sm.Workflow.from_spec(spec, registry)
    assert [s["name"] for s in spec["steps"]] == list(wf.definition().steps)
    assert wf.to_spec(registry)["triggers"][1]["expression"] == "0 3 * * *"
