"""Command receipts: every command's receipt is in the run's history, and repeats are counted."""

from __future__ import annotations

import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory


def approvable() -> sm.Workflow:
    wf = sm.Workflow("approvable", version="1", payload={"n": sm.Field(int)})
    wf.approval("sign")

    @wf.step()
    def done(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    wf.transition("sign", to="done")
    wf.transition("sign", to=sm.COMPLETE, on="error")
    wf.transition("done", to=sm.COMPLETE)
    return wf


def test_inspect_run_lists_the_commands_with_their_repeats(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([approvable()])
    run = mesh.start("approvable", {"n": 1}, idempotency_key="order-1")
    for _ in range(2):
        assert mesh.start("approvable", {"n": 1}, idempotency_key="order-1").id == run.id
    mesh.execute_next(owner_id="w")
    metadata = {"ticket": "OPS-1", "auth": {"api_key": "sk_live_1"}}
    mesh.approve(
        run.id, actor="maria", comment="looks right", metadata=metadata, idempotency_key="ok-1"
    )
    for _ in range(3):
        mesh.approve(run.id, actor="maria", idempotency_key="ok-1")
    snap = mesh.inspect_run(run.id)
    assert [(c.command, c.idempotency_key, c.repeats) for c in snap.commands] == [
        ("start", "order-1", 2),
        ("approve", "ok-1", 3),
    ]
    approve = snap.commands[1]
    assert approve.actor == "maria" and approve.comment == "looks right"
    assert approve.metadata == {"ticket": "OPS-1", "auth": {"api_key": "[REDACTED]"}}
    assert approve.at == snap.updated_at
    assert mesh.verify() == [], "repeats are counted beside the journal, not in it"


def test_a_keyed_replay_counts_its_repeats(make_mesh: MeshFactory) -> None:
    wf = sm.Workflow("nightly", version="1")

    @wf.step()
    def only(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    wf.transition("only", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    source = mesh.start("nightly", {})
    mesh.execute_next(owner_id="w")
    again = mesh.replay(source.id, idempotency_key="t-9")
    mesh.replay(source.id, idempotency_key="t-9")
    (replay_receipt,) = mesh.inspect_run(again.id).commands
    assert (replay_receipt.command, replay_receipt.repeats) == ("replay", 1)


def test_a_cancel_repeated_with_its_key_is_counted(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([approvable()])
    run = mesh.start("approvable", {"n": 2})
    mesh.cancel(
        run.id,
        actor="ops",
        reason="customer left",
        metadata={"Token": "t0k"},
        idempotency_key="c-1",
    )
    mesh.cancel(run.id, actor="ops", idempotency_key="c-1")
    commands = mesh.inspect_run(run.id).commands
    assert [(c.command, c.actor, c.comment, c.repeats) for c in commands] == [
        ("start", None, None, 0),
        ("cancel", "ops", "customer left", 1),
    ]
    assert commands[1].metadata == {"Token": "[REDACTED]"}


def test_a_start_records_its_actor_and_redacted_metadata(
    make_mesh: MeshFactory, db_url: str
) -> None:
    from tests.support.databases import row_counts

    mesh = make_mesh([approvable()])
    run = mesh.start(
        "approvable", {"n": 3}, actor="api", metadata={"request": "r-1", "secret": "s3"}
    )
    (start,) = mesh.inspect_run(run.id).commands
    assert (start.command, start.actor) == ("start", "api")
    assert start.metadata == {"request": "r-1", "secret": "[REDACTED]"}
    before = row_counts(db_url)
    for bad in ({"actor": ""}, {"metadata": "not a dict"}):
        with pytest.raises(sm.InvalidOptionError):
            mesh.start("approvable", {"n": 4}, **bad)  # type: ignore[arg-type]
    assert row_counts(db_url) == before
