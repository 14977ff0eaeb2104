"""Pause and approval gates, and manual commands with idempotency keys."""

from __future__ import annotations

from typing import Any

import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.clock import FakeClock
from tests.support.databases import row_counts


def drain(mesh: sm.Mesh) -> list[tuple[str, str]]:
    done = []
    while (execution := mesh.execute_next(owner_id="w")) is not None:
        done.append((execution.step, execution.outcome))
    return done


def held() -> sm.Workflow:
    wf = sm.Workflow("held", version="1")

    @wf.step()
    def prepare(input: dict, ctx: sm.StepContext) -> dict:
        return {"prepared": True}

    wf.pause("hold")

    @wf.step()
    def ship(input: dict, ctx: sm.StepContext) -> dict:
        return {"shipped": input["prepared"]}

    wf.transition("prepare", to="hold")
    wf.transition("hold", to="ship")
    wf.transition("ship", to=sm.COMPLETE)
    return wf


def refund(gates: int = 1) -> sm.Workflow:
    """``gates`` approvals in a row (approval_1 ...), then ``pay``; any rejection -> ``deny``."""
    wf = sm.Workflow("refund", version="1")
    names = [f"approval_{i}" for i in range(1, gates + 1)]
    for name in names:
        wf.approval(name)

    @wf.step()
    def pay(input: dict, ctx: sm.StepContext) -> dict:
        return {"paid": True}

    @wf.step()
    def deny(input: dict, ctx: sm.StepContext) -> dict:
        return {"paid": False}

    for name, nxt in zip(names, [*names[1:], "pay"], strict=True):
        wf.transition(name, to=nxt)
        wf.transition(name, to="deny", on="error")
    wf.transition("pay", to=sm.COMPLETE)
    wf.transition("deny", to=sm.COMPLETE)
    return wf


def test_a_paused_run_waits_for_resume_and_goes_on(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    mesh = make_mesh([held()])
    run = mesh.start("held", {})
    assert drain(mesh) == [("prepare", "completed"), ("hold", "completed")]
    paused = mesh.inspect_run(run.id)
    assert paused.status == sm.RunStatus.PAUSED and paused.current_steps == ()
    assert paused.gate is not None
    assert (paused.gate.step, paused.gate.kind, paused.gate.on_approve) == ("hold", "pause", "ship")
    assert paused.gate.since.timestamp() == clock()
    clock.advance(3600)
    assert mesh.execute_next(owner_id="w") is None, "nothing runs while the run is paused"

    resumed = mesh.resume(run.id, actor="ops", comment="stock arrived", metadata={"ticket": 7})
    assert resumed.status == sm.RunStatus.RUNNING and resumed.gate is None
    assert resumed.current_steps == ("ship",)
    assert drain(mesh) == [("ship", "completed")]
    snap = mesh.inspect_run(run.id, history=True)
    assert snap.status == sm.RunStatus.COMPLETED and snap.context["shipped"] is True
    assert snap.history is not None
    receipt = next(h for h in snap.history if h.data.get("command") == "resume")
    assert (receipt.data["actor"], receipt.data["metadata"]) == ("ops", {"ticket": 7})
    resolved = next(h for h in snap.history if h.kind == "gate_resolved")
    assert (resolved.data["decision"], resolved.data["comment"]) == ("resumed", "stock arrived")
    assert mesh.verify() == []


@pytest.mark.parametrize(
    ("command", "route", "decision", "paid"),
    [("approve", "pay", "approved", True), ("reject", "deny", "rejected", False)],
)
def test_an_approval_follows_the_decision_and_records_it_in_the_context(
    make_mesh: MeshFactory, clock: FakeClock, command: str, route: str, decision: str, paid: bool
) -> None:
    mesh = make_mesh([refund()])
    run = mesh.start("refund", {})
    drain(mesh)
    waiting = mesh.inspect_run(run.id)
    assert waiting.gate is not None and waiting.gate.kind == "approval"
    assert (waiting.gate.on_approve, waiting.gate.on_reject) == ("pay", "deny")
    clock.advance(90)
    decide = getattr(mesh, command)
    after = decide(run.id, actor="maria", comment="checked", metadata={"ticket": "OPS-12"})
    assert after.current_steps == (route,)
    assert after.context["approval_1"] == {
        "decision": decision,
        "actor": "maria",
        "comment": "checked",
        "metadata": {"ticket": "OPS-12"},
        "decided_at": after.updated_at.isoformat(),
    }
    assert drain(mesh) == [(route, "completed")]
    snap = mesh.inspect_run(run.id)
    assert snap.status == sm.RunStatus.COMPLETED and snap.context["paid"] is paid
    assert snap.context["approval_1"]["decision"] == decision


def test_a_duplicate_approval_never_resolves_a_later_gate(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([refund(gates=2)])
    run = mesh.start("refund", {})
    drain(mesh)
    first = mesh.approve(run.id, actor="ann", idempotency_key="approve-1")
    drain(mesh)  # approval_2 runs: the run pauses again, at the second gate
    at_second = mesh.inspect_run(run.id)
    assert at_second.gate is not None and at_second.gate.step == "approval_2"

    repeat = mesh.approve(run.id, actor="ann", idempotency_key="approve-1")
    assert repeat.revision == at_second.revision, "the repeat wrote nothing"
    assert repeat.gate is not None and repeat.gate.step == "approval_2"
    assert repeat.status == sm.RunStatus.PAUSED
    assert first.context["approval_1"]["actor"] == "ann"
    assert "approval_2" not in repeat.context

    second = mesh.approve(run.id, actor="bob", idempotency_key="approve-2")
    assert second.current_steps == ("pay",)
    assert drain(mesh) == [("pay", "completed")]
    assert mesh.inspect_run(run.id).context["approval_2"]["actor"] == "bob"


def test_a_repeated_key_after_the_run_ended_returns_the_run(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([refund()])
    run = mesh.start("refund", {})
    drain(mesh)
    mesh.reject(run.id, actor="ann", idempotency_key="r-1")
    drain(mesh)
    done = mesh.inspect_run(run.id)
    assert done.status == sm.RunStatus.COMPLETED
    again = mesh.reject(run.id, actor="ann", idempotency_key="r-1")
    assert again.revision == done.revision and again.status == sm.RunStatus.COMPLETED


def test_resolving_a_run_that_is_not_paused_says_so(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([refund(), held()])
    run = mesh.start("refund", {})
    with pytest.raises(sm.RunNotPausedError, match=r"not paused \(it is running\)") as refused:
        mesh.approve(run.id, actor="ann")
    assert (refused.value.code, refused.value.status) == ("not_paused", "running")
    # An unknown key does not make the command a no-op: the run is still not paused.
    with pytest.raises(sm.RunNotPausedError):
        mesh.approve(run.id, actor="ann", idempotency_key="never-used")
    drain(mesh)
    with pytest.raises(sm.WrongGateError, match=r"approval step 'approval_1'; use approve"):
        mesh.resume(run.id, actor="ann")
    mesh.approve(run.id, actor="ann")
    drain(mesh)
    with pytest.raises(sm.RunFinishedError, match=r"already completed"):
        mesh.approve(run.id, actor="ann")

    paused = mesh.start("held", {})
    drain(mesh)
    with pytest.raises(sm.WrongGateError, match=r"pause step 'hold'; use resume"):
        mesh.approve(paused.id, actor="ann")


def test_one_key_cannot_serve_two_commands(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([refund()])
    run = mesh.start("refund", {})
    drain(mesh)
    mesh.approve(run.id, actor="ann", idempotency_key="k-1")
    with pytest.raises(sm.IdempotencyConflictError, match=r"used for 'approve', not 'cancel'"):
        mesh.cancel(run.id, idempotency_key="k-1")


def test_a_paused_run_can_be_cancelled_and_then_not_resumed(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([held()])
    run = mesh.start("held", {})
    drain(mesh)
    cancelled = mesh.cancel(run.id, reason="order withdrawn", idempotency_key="c-1")
    assert cancelled.status == sm.RunStatus.CANCELLED and cancelled.gate is None
    again = mesh.cancel(run.id, idempotency_key="c-1")
    assert again.revision == cancelled.revision
    with pytest.raises(sm.RunFinishedError, match=r"cannot resume .* already cancelled"):
        mesh.resume(run.id)
    assert mesh.verify() == []


def test_secrets_in_decision_metadata_are_redacted(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([refund()])
    run = mesh.start("refund", {})
    drain(mesh)
    after = mesh.approve(
        run.id, actor="ann", metadata={"ticket": "T-9", "api_key": "sk_live_123", "n": {"Token": 1}}
    )
    assert after.context["approval_1"]["metadata"] == {
        "ticket": "T-9",
        "api_key": "[REDACTED]",
        "n": {"Token": "[REDACTED]"},
    }
    history = mesh.inspect_run(run.id, history=True).history or ()
    assert "sk_live_123" not in repr(history)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"actor": None}, "actor"),
        ({"actor": ""}, "actor"),
        ({"actor": "a\x00b"}, "actor"),
        ({"actor": "ann", "comment": "x" * 2001}, "comment"),
        ({"actor": "ann", "metadata": ["not", "a", "dict"]}, "metadata"),
        ({"actor": "ann", "metadata": {"when": object()}}, "metadata"),
        ({"actor": "ann", "metadata": {"n": float("nan")}}, "metadata"),
        ({"actor": "ann", "metadata": {1: "int key"}}, "metadata"),
        ({"actor": "ann", "idempotency_key": ""}, "idempotency_key"),
    ],
)
def test_bad_command_options_are_refused_by_name_and_write_nothing(
    make_mesh: MeshFactory, db_url: str, options: dict[str, Any], named: str
) -> None:
    mesh = make_mesh([refund()])
    run = mesh.start("refund", {})
    drain(mesh)
    before = row_counts(db_url)
    with pytest.raises(sm.InvalidOptionError) as refused:
        mesh.approve(run.id, **options)
    assert refused.value.option == named
    assert row_counts(db_url) == before
    assert mesh.inspect_run(run.id).status == sm.RunStatus.PAUSED


def test_gate_definitions_are_checked() -> None:
    wf = sm.Workflow("no_reject_route")
    wf.approval("ok_only")
    wf.transition("ok_only", to=sm.COMPLETE)
    with pytest.raises(sm.DefinitionError, match=r"needs an on='error' transition"):
        wf.definition()

    wf = sm.Workflow("conditional_gate")
    wf.pause("hold")
    wf.transition("hold", to=sm.COMPLETE, when=sm.Condition("x", equals=1))
    wf.transition("hold", to=sm.COMPLETE)
    with pytest.raises(sm.DefinitionError, match=r"cannot have conditions"):
        wf.definition()

    wf = sm.Workflow("gate_in_dag")

    @wf.step()
    def root(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    wf.pause("hold")
    wf.step("after_root", after=["root"])(root)
    with pytest.raises(sm.DefinitionError, match=r"pause step 'hold' cannot be part of a DAG"):
        wf.definition()
