"""Replay: a new run from a finished run's payload, guarded, idempotent, with lineage both ways."""

from __future__ import annotations

from typing import Any

import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.databases import row_counts


def payout(version: str = "1", *, notify: dict[str, Any] | None = None) -> sm.Workflow:
    wf = sm.Workflow("payout", version=version, payload={"amount": sm.Field(int)})

    @wf.step()
    def compute(input: dict, ctx: sm.StepContext) -> dict:
        return {"net": input["amount"] - 1, "version": version}

    @wf.step(**(notify or {}))
    def send(input: dict, ctx: sm.StepContext) -> dict:
        return {"sent": True}

    wf.transition("compute", to="send")
    wf.transition("send", to=sm.COMPLETE)
    return wf


def finish(mesh: sm.Mesh) -> None:
    while mesh.execute_next(owner_id="w"):
        pass


def test_a_replay_reruns_the_payload_on_the_newest_version_with_lineage(
    make_mesh: MeshFactory,
) -> None:
    old = make_mesh([payout("1")])
    source = old.start("payout", {"amount": 10})
    finish(old)
    mesh = make_mesh([payout("1"), payout("2")])
    again = mesh.replay(source.id, actor="ops", metadata={"ticket": "T-7", "password": "x"})
    assert again.id != source.id and again.replayed_from == source.id
    assert (again.workflow, again.version) == ("payout", "2")
    assert again.payload == source.payload and again.trigger == source.trigger
    finish(mesh)
    replayed = mesh.inspect_run(again.id, history=True)
    assert replayed.status == sm.RunStatus.COMPLETED and replayed.context["version"] == "2"
    receipt = next(h for h in replayed.history or () if h.kind == "command_received")
    assert receipt.data["command"] == "replay" and receipt.data["actor"] == "ops"
    assert receipt.data["metadata"] == {
        "ticket": "T-7",
        "password": "[REDACTED]",
        "source": source.id,
        "allow_irreversible": False,
    }
    assert mesh.inspect_run(source.id).replays == (again.id,)
    assert mesh.verify() == []


def test_a_replay_with_a_key_returns_the_same_run(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([payout()])
    source = mesh.start("payout", {"amount": 3})
    finish(mesh)
    first = mesh.replay(source.id, idempotency_key="ticket-42")
    second = mesh.replay(source.id, idempotency_key="ticket-42")
    other = mesh.replay(source.id, idempotency_key="ticket-43")
    unkeyed = mesh.replay(source.id)
    assert first.id == second.id
    assert (first.created, second.created, other.created) == (True, False, True)
    assert len({first.id, other.id, unkeyed.id}) == 3
    replays = mesh.inspect_run(source.id).replays
    assert len(replays) == 3 and set(replays) == {first.id, other.id, unkeyed.id}


@pytest.mark.parametrize("flag", [{"irreversible": True}, {"compensatable": False}])
def test_a_run_that_did_something_unrepeatable_is_replayed_only_when_allowed(
    make_mesh: MeshFactory, db_url: str, flag: dict[str, Any]
) -> None:
    mesh = make_mesh([payout(notify=flag)])
    source = mesh.start("payout", {"amount": 5})
    finish(mesh)
    before = row_counts(db_url)
    with pytest.raises(sm.ReplayRefusedError, match=r"'send'.*allow_irreversible=True") as refused:
        mesh.replay(source.id)
    assert refused.value.steps == ["send"] and refused.value.code == "replay_refused"
    assert row_counts(db_url) == before
    forced = mesh.replay(source.id, allow_irreversible=True)
    assert forced.replayed_from == source.id


def test_a_failed_run_that_never_reached_the_unrepeatable_step_replays_freely(
    make_mesh: MeshFactory,
) -> None:
    wf = sm.Workflow("fragile", version="1")

    @wf.step()
    def first(input: dict, ctx: sm.StepContext) -> dict:
        raise sm.Fail("upstream down")

    @wf.step(irreversible=True)
    def charge(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    wf.transition("first", to="charge")
    wf.transition("charge", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    source = mesh.start("fragile", {})
    finish(mesh)
    assert mesh.inspect_run(source.id).status == sm.RunStatus.FAILED
    assert mesh.replay(source.id).replayed_from == source.id


def test_an_unfinished_run_is_not_replayed(make_mesh: MeshFactory, db_url: str) -> None:
    mesh = make_mesh([payout()])
    source = mesh.start("payout", {"amount": 1})
    before = row_counts(db_url)
    with pytest.raises(sm.ReplayRefusedError, match=r"has not finished \(it is running\)"):
        mesh.replay(source.id)
    assert row_counts(db_url) == before


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"allow_irreversible": "yes"}, "allow_irreversible"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"actor": ""}, "actor"),
        ({"metadata": ["x"]}, "metadata"),
    ],
)
def test_bad_replay_options_are_refused_by_name(
    make_mesh: MeshFactory, db_url: str, options: dict[str, Any], named: str
) -> None:
    mesh = make_mesh([payout()])
    source = mesh.start("payout", {"amount": 1})
    finish(mesh)
    before = row_counts(db_url)
    with pytest.raises(sm.InvalidOptionError) as refused:
        mesh.replay(source.id, **options)
    assert refused.value.option == named
    assert row_counts(db_url) == before


def test_replaying_an_unknown_run_says_so(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([payout()])
    with pytest.raises(sm.RunNotFoundError):
        mesh.replay("00000000-0000-7000-8000-000000000001")
    with pytest.raises(sm.InvalidOptionError):
        mesh.replay("not-a-uuid")
