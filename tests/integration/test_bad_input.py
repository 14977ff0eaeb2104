"""Every bad input is refused with a typed error naming the field or option, and writes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pydantic
import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.databases import row_counts


class Invoice(pydantic.BaseModel):
    invoice_id: str
    amount: int


def workflows() -> list[sm.Workflow]:
    modelled = sm.Workflow("modelled", version="1", payload=Invoice)
    fielded = sm.Workflow(
        "fielded",
        version="1",
        payload={"n": sm.Field(int), "label": sm.Field(str, required=False)},
    )
    for wf in (modelled, fielded):

        @wf.step()
        def work(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
            return {}

        wf.transition("work", to=sm.COMPLETE)
    return [modelled, fielded]


@pytest.fixture
def mesh(make_mesh: MeshFactory) -> sm.Mesh:
    mesh = make_mesh(workflows())
    # one live run, so that a refused execute_next would have something to claim
    mesh.start("fielded", {"n": 1})
    return mesh


def refused(db_url: str, error: type[sm.SquidMeshError], call: Callable[[], Any]) -> Any:
    before = row_counts(db_url)
    with pytest.raises(error) as info:
        call()
    assert row_counts(db_url) == before
    return info.value


def test_unknown_workflow(mesh: sm.Mesh, db_url: str) -> None:
    err = refused(db_url, sm.UnknownWorkflowError, lambda: mesh.start("nope", {}))
    assert err.code == "unknown_workflow"
    assert err.workflow == "nope"
    assert "'nope'" in str(err) and "modelled" in str(err)


@pytest.mark.parametrize(
    ("workflow", "payload", "fields"),
    [
        ("modelled", {"amount": 1}, {"invoice_id"}),
        ("modelled", {"invoice_id": "i", "amount": 1, "extra": 1}, {"extra"}),
        ("modelled", {"invoice_id": "i", "amount": "lots"}, {"amount"}),
        (
            "modelled",
            {"amount": "lots", "extra": 1, "more": 2},
            {"invoice_id", "amount", "extra", "more"},
        ),
        ("fielded", {}, {"n"}),
        ("fielded", {"n": 1, "zzz": True}, {"zzz"}),
        ("fielded", {"n": "5"}, {"n"}),
        ("fielded", {"n": 1, "label": 3}, {"label"}),
        ("fielded", {"label": 3, "extra": None}, {"n", "label", "extra"}),
    ],
)
def test_payload_errors_name_each_field(
    mesh: sm.Mesh, db_url: str, workflow: str, payload: dict[str, Any], fields: set[str]
) -> None:
    err = refused(db_url, sm.PayloadError, lambda: mesh.start(workflow, payload))
    assert err.code == "invalid_payload"
    assert set(err.fields) == fields
    for name in fields:
        assert name in str(err)


def test_payload_field_problems_say_what_is_wrong(mesh: sm.Mesh, db_url: str) -> None:
    err = refused(db_url, sm.PayloadError, lambda: mesh.start("fielded", {"n": "5", "extra": 1}))
    assert err.fields["extra"] == "unknown field"
    assert "int" in err.fields["n"]
    err = refused(db_url, sm.PayloadError, lambda: mesh.start("modelled", {"amount": 1}))
    assert err.fields["invoice_id"] == "missing required field"


@pytest.mark.parametrize("payload", [[1, 2], "text", 5])
def test_payload_not_a_mapping(mesh: sm.Mesh, db_url: str, payload: object) -> None:
    err = refused(db_url, sm.PayloadError, lambda: mesh.start("fielded", payload))  # type: ignore[arg-type]
    assert list(err.fields) == ["<payload>"]


def test_valid_payloads_are_accepted(mesh: sm.Mesh) -> None:
    # the refusals above are about the values, not the workflows
    assert mesh.start("fielded", {"n": 2, "label": "x"}).payload == {"n": 2, "label": "x"}
    assert mesh.start("modelled", {"invoice_id": "i", "amount": 3}).payload == {
        "invoice_id": "i",
        "amount": 3,
    }


def option_error(db_url: str, option: str, call: Callable[[], Any]) -> sm.InvalidOptionError:
    err: sm.InvalidOptionError = refused(db_url, sm.InvalidOptionError, call)
    assert err.code == "invalid_option"
    assert err.option == option
    assert repr(option) in str(err)
    return err


@pytest.mark.parametrize("queue", ["bad queue", "", "-x", "q" * 101, 5, None])
def test_bad_queue(mesh: sm.Mesh, db_url: str, queue: Any) -> None:
    if queue is not None:
        option_error(db_url, "queue", lambda: mesh.start("fielded", {"n": 1}, queue=queue))
    option_error(db_url, "queue", lambda: mesh.execute_next(owner_id="w", queue=queue))


@pytest.mark.parametrize("lease", [0, -1, "x", float("nan"), True])
def test_bad_lease(mesh: sm.Mesh, db_url: str, lease: Any) -> None:
    option_error(db_url, "lease", lambda: mesh.execute_next(owner_id="w", lease=lease))


@pytest.mark.parametrize("owner", ["", None, 7, "o" * 201, "nul\x00", "lone\ud800"])
def test_bad_owner_id(mesh: sm.Mesh, db_url: str, owner: Any) -> None:
    option_error(db_url, "owner_id", lambda: mesh.execute_next(owner_id=owner))


@pytest.mark.parametrize("key", ["", "k" * 201, 5, b"bytes", "nul\x00", "lone\ud800"])
def test_bad_idempotency_key(mesh: sm.Mesh, db_url: str, key: Any) -> None:
    option_error(
        db_url, "idempotency_key", lambda: mesh.start("fielded", {"n": 1}, idempotency_key=key)
    )
    run_id = mesh.start("fielded", {"n": 9}).id
    option_error(db_url, "idempotency_key", lambda: mesh.cancel(run_id, idempotency_key=key))
    assert mesh.inspect_run(run_id).status == "running"


@pytest.mark.parametrize("run_id", ["not-a-uuid", "", "1234", 12345])
def test_bad_run_id(mesh: sm.Mesh, db_url: str, run_id: Any) -> None:
    option_error(db_url, "run_id", lambda: mesh.start("fielded", {"n": 1}, run_id=run_id))
    option_error(db_url, "run_id", lambda: mesh.inspect_run(run_id))
    option_error(db_url, "run_id", lambda: mesh.cancel(run_id))


def test_unknown_but_well_formed_run_id(mesh: sm.Mesh, db_url: str) -> None:
    missing = str(uuid.UUID(int=7, version=4))
    err = refused(db_url, sm.RunNotFoundError, lambda: mesh.inspect_run(missing))
    assert err.code == "run_not_found" and err.run_id == missing
    assert "run_id" in str(err)
    err = refused(db_url, sm.RunNotFoundError, lambda: mesh.cancel(missing))
    assert err.run_id == missing


@pytest.mark.parametrize("trigger", ["nope", "", 3])
def test_bad_trigger(mesh: sm.Mesh, db_url: str, trigger: Any) -> None:
    option_error(db_url, "trigger", lambda: mesh.start("fielded", {"n": 1}, trigger=trigger))


def test_naive_datetime_now(mesh: sm.Mesh, db_url: str) -> None:
    naive = datetime(2025, 1, 1, 12, 0, 0)
    run_id = mesh.start("fielded", {"n": 5}).id
    option_error(db_url, "now", lambda: mesh.start("fielded", {"n": 1}, now=naive))
    option_error(db_url, "now", lambda: mesh.execute_next(owner_id="w", now=naive))
    option_error(db_url, "now", lambda: mesh.cancel(run_id, now=naive))
    option_error(db_url, "now", lambda: mesh.start("fielded", {"n": 1}, now="yesterday"))  # type: ignore[arg-type]
    assert mesh.inspect_run(run_id).status == "running"


@pytest.mark.parametrize("history", ["yes", 1, None])
def test_bad_history_flag(mesh: sm.Mesh, db_url: str, history: Any) -> None:
    run_id = mesh.start("fielded", {"n": 5}).id
    option_error(db_url, "history", lambda: mesh.inspect_run(run_id, history=history))


def test_refusals_leave_work_claimable(mesh: sm.Mesh, db_url: str) -> None:
    option_error(db_url, "lease", lambda: mesh.execute_next(owner_id="w", lease=0))
    done = mesh.execute_next(owner_id="w")
    assert done is not None and done.outcome == "completed"
