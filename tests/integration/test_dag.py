"""DAG mode: roots start together, a step runs once its own dependencies are done, joins run once."""

from __future__ import annotations

from typing import Any

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.clock import FakeClock


def recovery() -> sm.Workflow:
    """Roots load_account and load_invoice; the join takes named paths of both."""
    wf = sm.Workflow("dependency_recovery", version="1")

    @wf.step(output="load_account")
    def load_account(input: dict, ctx: sm.StepContext) -> dict:
        return {"id": f"acct_{input['customer']}", "tier": "standard"}

    @wf.step(output="load_invoice")
    def load_invoice(input: dict, ctx: sm.StepContext) -> dict:
        return {"id": input["invoice"], "amount": 120}

    @wf.step(
        after=["load_account", "load_invoice"],
        input={
            "account_id": "load_account.id",
            "invoice_id": "load_invoice.id",
            "account_tier": "load_account.tier",
        },
    )
    def prepare_notification(input: dict, ctx: sm.StepContext) -> dict:
        return {"notification": dict(input)}

    return wf


def run_all(mesh: sm.Mesh, owner: str = "w") -> list[tuple[str, str]]:
    done = []
    while (execution := mesh.execute_next(owner_id=owner)) is not None:
        done.append((execution.step, execution.outcome))
    return done


def test_roots_start_together_and_the_join_gets_its_named_paths(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([recovery()])
    run = mesh.start("dependency_recovery", {"customer": "c1", "invoice": "inv_1"})
    assert run.current_steps == ("load_account", "load_invoice")
    assert run_all(mesh) == [
        ("load_account", "completed"),
        ("load_invoice", "completed"),
        ("prepare_notification", "completed"),
    ]
    snap = mesh.inspect_run(run.id)
    assert snap.status == sm.RunStatus.COMPLETED
    join = next(s for s in snap.steps if s.name == "prepare_notification")
    assert join.input == {
        "account_id": "acct_c1",
        "invoice_id": "inv_1",
        "account_tier": "standard",
    }
    assert snap.context["notification"] == join.input
    assert [(s.name, len(s.attempts)) for s in snap.steps] == [
        ("load_account", 1),
        ("load_invoice", 1),
        ("prepare_notification", 1),
    ]
    assert mesh.verify() == []


def test_two_workers_run_both_roots_at_the_same_time(make_mesh: MeshFactory) -> None:
    seen: dict[str, Any] = {}
    wf = sm.Workflow("fan", version="1")

    @wf.step()
    def slow_root(input: dict, ctx: sm.StepContext) -> dict:
        # While this root runs, a second worker claims and runs the other root.
        seen["other"] = second.execute_next(owner_id="w2")
        return {"slow": True}

    @wf.step()
    def quick_root(input: dict, ctx: sm.StepContext) -> dict:
        return {"quick": True}

    @wf.step(after=["slow_root", "quick_root"])
    def join(input: dict, ctx: sm.StepContext) -> dict:
        return {"both": input["slow"] and input["quick"]}

    first = make_mesh([wf])
    second = make_mesh([wf])  # a second worker: its own connection
    run = first.start("fan", {})
    execution = first.execute_next(owner_id="w1")
    assert execution is not None and execution.step == "slow_root"
    assert seen["other"] is not None and seen["other"].step == "quick_root"
    assert seen["other"].outcome == "completed"
    # The slow root finished second, so its record is the one that saw both done: one join.
    assert first.inspect_run(run.id).current_steps == ("join",)
    assert run_all(first) == [("join", "completed")]
    assert first.inspect_run(run.id).context["both"] is True


def test_a_step_runs_when_its_own_dependencies_are_done_not_the_slow_branch(
    make_mesh: MeshFactory,
) -> None:
    # a -> c; b (unrelated, slow) ; d after [c, b]
    wf = sm.Workflow("branches", version="1")
    order = []

    def step(name: str) -> Any:
        def fn(input: dict, ctx: sm.StepContext) -> dict:
            order.append(name)
            return {name: True}

        return fn

    wf.step("a")(step("a"))
    wf.step("b")(step("b"))
    wf.step("c", after=["a"])(step("c"))
    wf.step("d", after=["c", "b"])(step("d"))
    mesh = make_mesh([wf])
    run = mesh.start("branches", {})
    mesh.execute_next(owner_id="w")  # a
    snap = mesh.inspect_run(run.id)
    # c is planned the moment a completes, while b (a root) has not even started.
    assert set(snap.current_steps) == {"b", "c"}
    b_view = next(s for s in snap.steps if s.name == "b")
    assert b_view.status == "scheduled"
    run_all(mesh)
    assert order[0] == "a" and order[-1] == "d" and sorted(order) == ["a", "b", "c", "d"]
    assert mesh.inspect_run(run.id).status == sm.RunStatus.COMPLETED


def test_a_failure_with_no_retry_left_fails_the_run_and_discards_the_other_branch(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    wf = sm.Workflow("fragile", version="1")
    results: dict[str, Any] = {}

    @wf.step(retry=sm.RetryPolicy(max_attempts=2, backoff=sm.Backoff.fixed(1)))
    def breaks(input: dict, ctx: sm.StepContext) -> dict:
        raise RuntimeError(f"broken on attempt {ctx.attempt}")

    @wf.step()
    def survives(input: dict, ctx: sm.StepContext) -> dict:
        # The other branch fails the run while this one is still running.
        clock.advance(1)
        results["breaks"] = other.execute_next(owner_id="w2")
        return {"survived": True}

    @wf.step(after=["breaks", "survives"])
    def never(input: dict, ctx: sm.StepContext) -> dict:
        raise AssertionError("a join after a failed dependency must not run")

    mesh = make_mesh([wf])
    other = make_mesh([wf])
    run = mesh.start("fragile", {})
    first = mesh.execute_next(owner_id="w1")  # breaks, attempt 1: retry in 1 s
    assert first is not None and (first.step, first.outcome) == ("breaks", "retry_scheduled")
    late = mesh.execute_next(owner_id="w1")  # survives; inside it, breaks attempt 2 fails the run
    assert results["breaks"].outcome == "failed" and results["breaks"].run_status == "failed"
    assert late is not None and late.step == "survives" and late.outcome == "discarded"
    snap = mesh.inspect_run(run.id)
    assert snap.status == sm.RunStatus.FAILED
    assert snap.error is not None and snap.error["step"] == "breaks"
    assert "never" not in {s.name for s in snap.steps}
    assert "survived" not in snap.context
    assert run_all(mesh) == []
    assert mesh.verify() == []


def test_a_join_input_path_that_is_missing_fails_the_run_naming_it(
    make_mesh: MeshFactory,
) -> None:
    wf = sm.Workflow("missing", version="1")

    @wf.step()
    def root(input: dict, ctx: sm.StepContext) -> dict:
        return {"other": 1}

    @wf.step(after=["root"], input={"account": "account.id"})
    def needs(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    mesh = make_mesh([wf])
    run = mesh.start("missing", {})
    run_all(mesh)
    snap = mesh.inspect_run(run.id)
    assert snap.status == sm.RunStatus.FAILED
    assert snap.error is not None
    assert (snap.error["step"], snap.error["path"]) == ("needs", "account.id")
