"""Child runs: idempotent per child_key, any queue, awaited without polling, cancelled with the parent."""

from __future__ import annotations

from typing import Any

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.clock import FakeClock


def invite(fails_for: str = "") -> sm.Workflow:
    wf = sm.Workflow("invite", version="1", queue="invites")

    @wf.step()
    def send(input: dict, ctx: sm.StepContext) -> dict:
        if input["email"] == fails_for:
            raise sm.Fail("mailbox does not exist", code="bounced")
        return {"sent_to": input["email"]}

    wf.transition("send", to=sm.COMPLETE)
    return wf


def team(started: list[str]) -> sm.Workflow:
    """spawn starts one invite per email (twice, as a retried step would), then awaits them."""
    wf = sm.Workflow("team", version="1")

    @wf.step()
    def spawn(input: dict, ctx: sm.StepContext) -> dict:
        for email in input["emails"]:
            first = ctx.start_child("invite", {"email": email}, child_key=email)
            again = ctx.start_child("invite", {"email": email}, child_key=email)
            assert first == again
            started.append(first)
        return {"invited": len(input["emails"])}

    wf.await_children("wait_invites", output="invites")

    @wf.step()
    def report(input: dict, ctx: sm.StepContext) -> dict:
        return {"statuses": sorted(r["status"] for r in input["invites"].values())}

    wf.transition("spawn", to="wait_invites")
    wf.transition("wait_invites", to="report")
    wf.transition("report", to=sm.COMPLETE)
    return wf


def drain(mesh: sm.Mesh, queue: str = "default") -> list[tuple[str, str]]:
    done = []
    while (execution := mesh.execute_next(owner_id="w", queue=queue)) is not None:
        done.append((execution.step, execution.outcome))
    return done


def test_children_are_started_once_per_key_and_awaited_without_polling(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    started: list[str] = []
    mesh = make_mesh([team(started), invite()])
    parent = mesh.start("team", {"emails": ["a@x.io", "b@x.io"]})
    assert drain(mesh) == [("spawn", "completed"), ("wait_invites", "waiting")]
    waiting = mesh.inspect_run(parent.id)
    assert waiting.status == sm.RunStatus.RUNNING and waiting.current_steps == ("wait_invites",)
    assert [c.child_key for c in waiting.children] == ["a@x.io", "b@x.io"]
    assert [c.run_id for c in waiting.children] == started
    assert {c.status for c in waiting.children} == {sm.RunStatus.RUNNING}
    assert drain(mesh) == [], "a parked await step is not claimable"

    child = mesh.inspect_run(started[0])
    assert child.parent == sm.ParentView(run_id=parent.id, step="spawn", child_key="a@x.io")
    assert child.queue == "invites"

    clock.advance(5)  # the children end later than the await step parked
    assert drain(mesh, "invites") == [("send", "completed"), ("send", "completed")]
    woken = next(s for s in mesh.inspect_run(parent.id).steps if s.name == "wait_invites")
    assert woken.attempts[0].visible_at.timestamp() == clock(), "due from the wake-up on"
    assert mesh.verify() == []
    # The last child to end woke the await step: it is due again, on the parent's queue.
    assert drain(mesh) == [("wait_invites", "completed"), ("report", "completed")]
    done = mesh.inspect_run(parent.id)
    assert done.status == sm.RunStatus.COMPLETED
    assert done.context["invites"] == {
        "a@x.io": {
            "run_id": started[0],
            "workflow": "invite",
            "status": "completed",
            "context": {"sent_to": "a@x.io"},
        },
        "b@x.io": {
            "run_id": started[1],
            "workflow": "invite",
            "status": "completed",
            "context": {"sent_to": "b@x.io"},
        },
    }
    assert done.context["statuses"] == ["completed", "completed"]
    assert mesh.verify() == []


def test_a_failed_child_is_reported_with_its_error(make_mesh: MeshFactory) -> None:
    started: list[str] = []
    mesh = make_mesh([team(started), invite(fails_for="b@x.io")])
    parent = mesh.start("team", {"emails": ["a@x.io", "b@x.io"]})
    drain(mesh)
    drain(mesh, "invites")
    drain(mesh)
    results = mesh.inspect_run(parent.id).context["invites"]
    assert results["b@x.io"]["status"] == "failed"
    assert results["b@x.io"]["error"]["code"] == "bounced"
    assert "context" not in results["b@x.io"]
    assert mesh.inspect_run(parent.id).context["statuses"] == ["completed", "failed"]


def test_children_that_end_before_the_await_step_runs_are_not_waited_for(
    make_mesh: MeshFactory,
) -> None:
    started: list[str] = []
    mesh = make_mesh([team(started), invite()])
    parent = mesh.start("team", {"emails": ["a@x.io"]})
    assert mesh.execute_next(owner_id="w") is not None  # spawn
    drain(mesh, "invites")  # the child ends before the parent's await step is claimed
    assert drain(mesh) == [("wait_invites", "completed"), ("report", "completed")]
    assert mesh.inspect_run(parent.id).status == sm.RunStatus.COMPLETED


def test_an_await_step_without_children_goes_on_at_once(make_mesh: MeshFactory) -> None:
    started: list[str] = []
    mesh = make_mesh([team(started), invite()])
    parent = mesh.start("team", {"emails": []})
    assert drain(mesh) == [
        ("spawn", "completed"),
        ("wait_invites", "completed"),
        ("report", "completed"),
    ]
    assert mesh.inspect_run(parent.id).context["invites"] == {}


def nested() -> list[sm.Workflow]:
    top = sm.Workflow("top", version="1")

    @top.step()
    def fan(input: dict, ctx: sm.StepContext) -> dict:
        ctx.start_child("middle", {}, child_key="m")
        return {}

    top.await_children("join")
    top.transition("fan", to="join")
    top.transition("join", to=sm.COMPLETE)

    middle = sm.Workflow("middle", version="1")

    @middle.step()
    def fan_more(input: dict, ctx: sm.StepContext) -> dict:
        ctx.start_child("invite", {"email": "leaf@x.io"}, child_key="leaf")
        return {}

    middle.await_children("join")
    middle.transition("fan_more", to="join")
    middle.transition("join", to=sm.COMPLETE)
    return [top, middle, invite()]


def test_cancelling_a_parent_cancels_its_children_and_theirs(make_mesh: MeshFactory) -> None:
    mesh = make_mesh(nested())
    run = mesh.start("top", {})
    drain(mesh)  # fan, join parks; middle: fan_more, join parks
    (middle,) = mesh.inspect_run(run.id).children
    (leaf,) = mesh.inspect_run(middle.run_id).children
    assert leaf.status == sm.RunStatus.RUNNING
    mesh.cancel(run.id, reason="team deleted", actor="ops")
    for run_id in (run.id, middle.run_id, leaf.run_id):
        assert mesh.inspect_run(run_id).status == sm.RunStatus.CANCELLED
    history = mesh.inspect_run(leaf.run_id, history=True).history or ()
    receipt = next(
        h for h in history if h.kind == "command_received" and h.data["command"] == "cancel"
    )
    assert receipt.data["metadata"] == {"cascaded_from": middle.run_id}
    assert drain(mesh, "invites") == []
    assert mesh.verify() == []


def test_cancel_without_cascade_leaves_the_children_running(make_mesh: MeshFactory) -> None:
    mesh = make_mesh(nested())
    run = mesh.start("top", {})
    drain(mesh)
    (middle,) = mesh.inspect_run(run.id).children
    mesh.cancel(run.id, cascade=False)
    assert mesh.inspect_run(middle.run_id).status == sm.RunStatus.RUNNING
    # The middle run can still finish; its parent is gone, so nothing is woken.
    assert drain(mesh, "invites") == [("send", "completed")]
    assert drain(mesh) == [("join", "completed")]
    assert mesh.inspect_run(middle.run_id).status == sm.RunStatus.COMPLETED
    assert mesh.inspect_run(run.id).status == sm.RunStatus.CANCELLED
    assert mesh.verify() == []


def test_bad_child_starts_fail_the_step_with_a_clear_error(make_mesh: MeshFactory) -> None:
    errors: list[BaseException] = []
    wf = sm.Workflow("bad_parent", version="1")

    @wf.step()
    def spawn(input: dict, ctx: sm.StepContext) -> dict:
        attempts: list[Any] = [
            lambda: ctx.start_child("invite", {"email": "a"}, child_key=""),
            lambda: ctx.start_child("invite", {"email": "a"}, child_key="k", queue="bad queue"),
            lambda: ctx.start_child("nobody", {}, child_key="k2"),
            lambda: ctx.start_child("invite", {"email": "a"}, child_key="same"),
            lambda: ctx.start_child("invite", {"email": "b"}, child_key="same"),
        ]
        for attempt in attempts:
            try:
                attempt()
            except sm.SquidMeshError as exc:
                errors.append(exc)
        return {}

    wf.transition("spawn", to=sm.COMPLETE)
    mesh = make_mesh([wf, invite()])
    mesh.start("bad_parent", {})
    drain(mesh)
    assert [type(e) for e in errors] == [
        sm.InvalidOptionError,
        sm.InvalidOptionError,
        sm.UnknownWorkflowError,
        sm.IdempotencyConflictError,
    ]
    assert [getattr(e, "option", None) for e in errors[:2]] == ["child_key", "queue"]
    assert "different payload" in str(errors[3])


def test_a_cancelled_parent_cannot_start_children(make_mesh: MeshFactory) -> None:
    errors: list[BaseException] = []
    other: list[sm.Mesh] = []
    wf = sm.Workflow("doomed", version="1")

    @wf.step()
    def spawn(input: dict, ctx: sm.StepContext) -> dict:
        other[0].cancel(ctx.run_id)
        try:
            ctx.start_child("invite", {"email": "a"}, child_key="late")
        except sm.RunFinishedError as exc:
            errors.append(exc)
        return {}

    wf.transition("spawn", to=sm.COMPLETE)
    mesh = make_mesh([wf, invite()])
    other.append(make_mesh([wf, invite()]))
    run = mesh.start("doomed", {})
    drain(mesh)
    assert len(errors) == 1 and "cannot start a child of" in str(errors[0])
    assert mesh.inspect_run(run.id).children == ()


def test_a_retried_parent_step_gets_the_child_its_first_attempt_started(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    children: list[str] = []
    wf = sm.Workflow("flaky_parent", version="1")

    @wf.step(retry=sm.RetryPolicy(max_attempts=2, backoff=sm.Backoff.fixed(1)))
    def spawn(input: dict, ctx: sm.StepContext) -> dict:
        children.append(ctx.start_child("invite", {"email": "a@x.io"}, child_key="only"))
        if ctx.attempt == 1:
            raise RuntimeError("crashed after starting the child")
        return {"child": children[-1]}

    wf.transition("spawn", to=sm.COMPLETE)
    mesh = make_mesh([wf, invite()])
    run = mesh.start("flaky_parent", {})
    first = mesh.execute_next(owner_id="w")
    assert first is not None and first.outcome == "retry_scheduled"
    clock.advance(1)
    second = mesh.execute_next(owner_id="w")
    assert second is not None and second.outcome == "completed"
    assert len(children) == 2 and children[0] == children[1]
    snap = mesh.inspect_run(run.id)
    assert [c.run_id for c in snap.children] == [children[0]]
    assert snap.context["child"] == children[0]


def test_a_parent_that_fails_cancels_its_unfinished_children(make_mesh: MeshFactory) -> None:
    wf = sm.Workflow("doomed_parent", version="1")

    @wf.step()
    def spawn(input: dict, ctx: sm.StepContext) -> dict:
        ctx.start_child("invite", {"email": "a@x.io"}, child_key="a")
        return {}

    @wf.step()
    def explode(input: dict, ctx: sm.StepContext) -> dict:
        raise sm.Fail("no more budget")

    wf.transition("spawn", to="explode")
    wf.transition("explode", to=sm.COMPLETE)
    mesh = make_mesh([wf, invite()])
    run = mesh.start("doomed_parent", {})
    drain(mesh)
    snap = mesh.inspect_run(run.id)
    assert snap.status == sm.RunStatus.FAILED
    (child,) = snap.children
    assert child.status == sm.RunStatus.CANCELLED
    assert drain(mesh, "invites") == []
    assert mesh.verify() == []
