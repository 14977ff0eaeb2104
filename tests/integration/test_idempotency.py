"""Idempotent start: one run per key for the run's whole lifetime; conflicts are clear and write nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.databases import row_counts


def workflow(name: str) -> sm.Workflow:
    wf = sm.Workflow(name, version="1")

    @wf.step()
    def work(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"done": input["invoice_id"]}

    wf.transition("work", to=sm.COMPLETE)
    return wf


def drain(mesh: sm.Mesh) -> None:
    while mesh.execute_next(owner_id="w1"):
        pass


def test_same_key_returns_the_same_run_for_its_whole_life(
    make_mesh: MeshFactory, db_url: str
) -> None:
    mesh = make_mesh([workflow("pay")])
    first = mesh.start("pay", {"invoice_id": "inv_1"}, idempotency_key="inv_1")
    assert first.idempotency_key == "inv_1"
    assert first.created is True
    counts = row_counts(db_url)
    assert counts["squid_mesh_runs"] == 1

    again = mesh.start("pay", {"invoice_id": "inv_1"}, idempotency_key="inv_1")
    assert again.id == first.id
    assert again.status == "running"
    assert again.created is False  # the caller can tell a repeat (an API's 200, not 201)
    assert row_counts(db_url) == counts  # a repeat writes nothing

    drain(mesh)
    assert mesh.inspect_run(first.id).status == "completed"
    after = mesh.start("pay", {"invoice_id": "inv_1"}, idempotency_key="inv_1")
    assert after.id == first.id
    assert after.status == "completed"
    assert after.created is False
    assert mesh.inspect_run(first.id).created is None  # a read, not a start
    assert after.context == {"done": "inv_1"}
    assert row_counts(db_url)["squid_mesh_runs"] == 1
    assert mesh.execute_next(owner_id="w1") is None  # nothing new to run


def test_same_key_from_another_mesh_returns_the_same_run(
    make_mesh: MeshFactory, db_url: str
) -> None:
    wf = workflow("pay")
    one, two = make_mesh([wf]), make_mesh([wf])
    first = one.start("pay", {"invoice_id": "inv_9"}, idempotency_key="k9")
    again = two.start("pay", {"invoice_id": "inv_9"}, idempotency_key="k9")
    assert (again.id, again.created) == (first.id, False)
    assert row_counts(db_url)["squid_mesh_runs"] == 1


def test_same_key_with_a_different_payload_conflicts_and_writes_nothing(
    make_mesh: MeshFactory, db_url: str
) -> None:
    mesh = make_mesh([workflow("pay")])
    first = mesh.start("pay", {"invoice_id": "inv_1"}, idempotency_key="inv_1")
    before = row_counts(db_url)
    with pytest.raises(sm.IdempotencyConflictError) as info:
        mesh.start("pay", {"invoice_id": "inv_2"}, idempotency_key="inv_1")
    assert info.value.code == "idempotency_conflict"
    assert "idempotency_key" in str(info.value)
    assert info.value.run_id == first.id
    assert row_counts(db_url) == before

    drain(mesh)
    before = row_counts(db_url)
    with pytest.raises(sm.IdempotencyConflictError):
        mesh.start("pay", {"invoice_id": "inv_2"}, idempotency_key="inv_1")
    assert row_counts(db_url) == before


def test_explicit_run_id_is_reused(make_mesh: MeshFactory, db_url: str) -> None:
    mesh = make_mesh([workflow("pay")])
    run_id = str(uuid.UUID(int=42, version=4))
    first = mesh.start("pay", {"invoice_id": "inv_1"}, run_id=run_id)
    assert first.id == run_id
    again = mesh.start("pay", {"invoice_id": "inv_1"}, run_id=run_id.upper())
    assert again.id == run_id
    assert row_counts(db_url)["squid_mesh_runs"] == 1
    before = row_counts(db_url)
    with pytest.raises(sm.IdempotencyConflictError) as info:
        mesh.start("pay", {"invoice_id": "other"}, run_id=run_id)
    assert "run_id" in str(info.value)
    assert row_counts(db_url) == before
    assert mesh.inspect_run(run_id).payload == {"invoice_id": "inv_1"}


def test_different_workflows_may_use_the_same_key(make_mesh: MeshFactory, db_url: str) -> None:
    mesh = make_mesh([workflow("pay"), workflow("refund")])
    pay = mesh.start("pay", {"invoice_id": "inv_1"}, idempotency_key="shared")
    refund = mesh.start("refund", {"invoice_id": "inv_1"}, idempotency_key="shared")
    assert pay.id != refund.id
    assert (pay.workflow, refund.workflow) == ("pay", "refund")
    assert row_counts(db_url)["squid_mesh_runs"] == 2
    assert mesh.start("refund", {"invoice_id": "inv_1"}, idempotency_key="shared").id == refund.id
    drain(mesh)
    assert mesh.inspect_run(pay.id).status == "completed"
    assert mesh.inspect_run(refund.id).status == "completed"


def test_an_explicit_run_id_names_one_workflow_and_one_key(
    make_mesh: MeshFactory, db_url: str
) -> None:
    mesh = make_mesh([workflow("billing"), workflow("shipping")])
    run_id = str(uuid.UUID(int=7, version=4))
    mesh.start("billing", {"invoice_id": "i"}, run_id=run_id)
    before = row_counts(db_url)
    with pytest.raises(sm.IdempotencyConflictError) as other_workflow:
        mesh.start("shipping", {"invoice_id": "i"}, run_id=run_id)
    assert "billing" in str(other_workflow.value) and "run_id" in str(other_workflow.value)
    with pytest.raises(sm.IdempotencyConflictError) as other_key:
        mesh.start("billing", {"invoice_id": "i"}, run_id=run_id, idempotency_key="k2")
    assert "another key" in str(other_key.value)
    assert row_counts(db_url) == before
    fresh = mesh.start("billing", {"invoice_id": "i"}, idempotency_key="k2")
    assert fresh.id != run_id, "the key k2 was not swallowed by the earlier run"
