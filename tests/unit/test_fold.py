"""The fold: a hand-built journal gives the expected run state; facts round-trip through JSON."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from squid_mesh.journal import facts as f
from squid_mesh.journal.fold import (
    AttemptState,
    AttemptStatus,
    FoldError,
    RunState,
    RunStatus,
    apply,
    fold,
    start_state,
)

RUN = "6f1c1ab0-5a54-4b4e-9a55-36f8e7f3a001"
T0 = 1_750_000_000.0


def journal(*facts: f.Fact, start: float = T0) -> list[f.Entry]:
    return [f.Entry(seq, start + seq, fact) for seq, fact in enumerate(facts, start=1)]


STARTED = f.RunStarted(
    workflow="pay",
    version="1",
    fingerprint="fp",
    queue="default",
    trigger="manual",
    payload={"invoice_id": "inv_1"},
    idempotency_key="inv_1",
    payload_hash="hash",
)


def happy_path() -> list[f.Entry]:
    return journal(
        STARTED,
        f.CommandReceived("start", idempotency_key="inv_1"),
        f.StepsPlanned((f.PlannedAttempt("load", 1, 1, {"invoice_id": "inv_1"}, T0 + 1),)),
        f.AttemptClaimed("load:1:1", "w1", "h1", T0 + 34),
        f.AttemptHeartbeat("load:1:1", T0 + 40),
        f.AttemptFailed("load:1:1", {"type": "RuntimeError", "message": "boom"}),
        f.StepsPlanned((f.PlannedAttempt("load", 1, 2, {"invoice_id": "inv_1"}, T0 + 10),)),
        f.AttemptClaimed("load:1:2", "w2", "h2", T0 + 38),
        f.AttemptCompleted("load:1:2", {"amount": 120}),
        f.ResultApplied("load:1:2", {"invoice": {"amount": 120}}, "notify"),
        f.StepsPlanned((f.PlannedAttempt("notify", 1, 1, {"x": 1}, T0 + 11),)),
        f.AttemptClaimed("notify:1:1", "w1", "h3", T0 + 42),
        f.AttemptCompleted("notify:1:1", {"notified": True}),
        f.ResultApplied("notify:1:1", {"notified": True}, "complete"),
        f.RunCompleted(),
    )


def test_fold_of_a_whole_journal() -> None:
    state = fold(RUN, happy_path())
    assert state.status is RunStatus.COMPLETED
    assert state.rev == 15
    assert state.created_at == T0 + 1 and state.updated_at == T0 + 15
    assert state.context == {"invoice": {"amount": 120}, "notified": True}
    assert list(state.context) == ["invoice", "notified"], "merge order is application order"
    assert state.view == {"invoice_id": "inv_1", "invoice": {"amount": 120}, "notified": True}
    assert (state.workflow, state.version, state.idempotency_key) == ("pay", "1", "inv_1")
    assert state.error is None
    assert state.attempts["load:1:1"] == AttemptState(
        key="load:1:1",
        step="load",
        visit=1,
        number=1,
        queue="default",
        status=AttemptStatus.FAILED,
        input={"invoice_id": "inv_1"},
        visible_at=T0 + 1,
        claim_hash="h1",
        owner="w1",
        lease_until=T0 + 40,
        claims=1,
        started_at=T0 + 4,
        finished_at=T0 + 6,
        output=None,
        error={"type": "RuntimeError", "message": "boom"},
        finished_rev=6,
    )
    second = state.attempts["load:1:2"]
    assert (second.status, second.owner, second.output) == (
        AttemptStatus.COMPLETED,
        "w2",
        {"amount": 120},
    )
    assert state.attempts["notify:1:1"].status is AttemptStatus.COMPLETED
    assert (second.finished_rev, state.attempts["notify:1:1"].finished_rev) == (9, 13)
    assert state.live_attempts() == []
    assert state.visits("load") == 1 and state.visits("notify") == 1 and state.visits("x") == 0


def test_fold_equals_start_state_plus_apply_one_by_one() -> None:
    entries = happy_path()
    state = start_state(RUN, entries[0])
    for entry in entries[1:]:
        state = apply(state, entry)
    assert state == fold(RUN, entries)


def test_a_reclaim_counts_claims_and_replaces_the_owner() -> None:
    state = fold(
        RUN,
        journal(
            STARTED,
            f.StepsPlanned((f.PlannedAttempt("load", 1, 1, {}, T0),)),
            f.AttemptClaimed("load:1:1", "w1", "h1", T0 + 5),
            f.AttemptClaimed("load:1:1", "w2", "h2", T0 + 50),
        ),
    )
    attempt = state.attempts["load:1:1"]
    assert (attempt.owner, attempt.claim_hash, attempt.claims) == ("w2", "h2", 2)
    assert attempt.status is AttemptStatus.RUNNING and attempt.due_at == T0 + 50
    assert state.live_attempts() == [attempt]


def test_cancel_ends_live_attempts_and_a_late_result_is_discarded() -> None:
    state = fold(
        RUN,
        journal(
            STARTED,
            f.StepsPlanned(
                (
                    f.PlannedAttempt("a", 1, 1, {}, T0),
                    f.PlannedAttempt("b", 1, 1, {}, T0 + 100),
                )
            ),
            f.AttemptClaimed("a:1:1", "w1", "h1", T0 + 30),
            f.CommandReceived("cancel", actor="ops"),
            f.RunCancelled("customer left"),
            f.ResultDiscarded("a:1:1", "run cancelled", output={"late": True}),
        ),
    )
    assert state.status is RunStatus.CANCELLED
    assert state.attempts["a:1:1"].status is AttemptStatus.DISCARDED
    assert state.attempts["a:1:1"].output == {"late": True}
    assert state.attempts["b:1:1"].status is AttemptStatus.CANCELLED
    assert state.attempts["b:1:1"].due_at is None
    assert state.context == {}, "a discarded result is applied nowhere"
    assert state.live_attempts() == []


def test_run_failed_keeps_the_error_and_the_step() -> None:
    state = fold(
        RUN,
        journal(
            STARTED,
            f.StepsPlanned((f.PlannedAttempt("a", 1, 1, {}, T0),)),
            f.RunFailed({"code": "max_visits_exceeded", "message": "m"}, step="a"),
        ),
    )
    assert state.status is RunStatus.FAILED
    assert state.error == {"code": "max_visits_exceeded", "message": "m", "step": "a"}
    assert state.attempts["a:1:1"].status is AttemptStatus.CANCELLED


def test_later_results_override_earlier_keys() -> None:
    state = fold(
        RUN,
        journal(
            STARTED,
            f.StepsPlanned(
                (f.PlannedAttempt("a", 1, 1, {}, T0), f.PlannedAttempt("a", 2, 1, {}, T0))
            ),
            f.ResultApplied("a:1:1", {"n": 1, "first": True}, "a"),
            f.ResultApplied("a:2:1", {"n": 2}, "complete"),
        ),
    )
    assert state.context == {"n": 2, "first": True}
    assert state.visits("a") == 2


@pytest.mark.parametrize("seq", [3, 5, 1, 10], ids=["repeat", "gap", "first", "far"])
def test_apply_refuses_out_of_order_seq(seq: int) -> None:
    entries = happy_path()
    state = fold(RUN, entries[:3])
    assert state.rev == 3
    with pytest.raises(FoldError, match=rf"fact seq {seq} follows rev 3"):
        apply(state, replace(entries[3], seq=seq))
    assert apply(state, entries[3]).rev == 4, "the next seq is accepted"


def test_fold_refuses_a_gap_in_the_journal() -> None:
    entries = happy_path()
    with pytest.raises(FoldError, match="follows rev"):
        fold(RUN, entries[:4] + entries[5:])


def test_fold_refuses_a_journal_without_its_start() -> None:
    with pytest.raises(FoldError, match="must begin with run_started, not command_received"):
        fold(RUN, happy_path()[1:])
    with pytest.raises(FoldError, match="empty journal"):
        fold(RUN, [])


def test_fold_refuses_a_fact_for_an_unknown_attempt() -> None:
    with pytest.raises(FoldError, match=r"unknown attempt 'ghost:1:1'"):
        fold(RUN, journal(STARTED, f.AttemptCompleted("ghost:1:1", {})))


def test_the_fold_never_mutates_a_previous_state() -> None:
    entries = happy_path()
    before = fold(RUN, entries[:9])
    snapshot = (dict(before.attempts), dict(before.context), before.status, before.rev)
    apply(before, entries[9])
    assert (dict(before.attempts), dict(before.context), before.status, before.rev) == snapshot


def test_a_released_attempt_is_scheduled_again_and_keeps_its_claim_count() -> None:
    state = fold(
        RUN,
        journal(
            STARTED,
            f.StepsPlanned((f.PlannedAttempt("load", 1, 1, {}, T0 + 1),)),
            f.AttemptClaimed("load:1:1", "w1", "h1", T0 + 34),
            f.AttemptReleased("load:1:1"),
        ),
    )
    attempt = state.attempts["load:1:1"]
    assert attempt.status is AttemptStatus.SCHEDULED and attempt.due_at == T0 + 1
    assert (attempt.owner, attempt.claim_hash, attempt.lease_until, attempt.started_at) == (
        None,
        None,
        None,
        None,
    )
    assert attempt.claims == 1


def test_run_state_statuses() -> None:
    assert not RunStatus.RUNNING.terminal and not RunStatus.PAUSED.terminal
    assert all(s.terminal for s in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED))
    assert {s for s in AttemptStatus if s.live} == {
        AttemptStatus.SCHEDULED,
        AttemptStatus.RUNNING,
        AttemptStatus.WAITING,
    }
    assert RunState.__dataclass_fields__["status"].default is RunStatus.RUNNING


# -- serialisation -----------------------------------------------------------------------------

ONE_OF_EACH: list[f.Fact] = [
    f.CommandReceived("cancel", idempotency_key="k", actor="ops", metadata={"ticket": 7}),
    STARTED,
    f.StepsPlanned(
        (
            f.PlannedAttempt("a", 1, 1, {"x": [1, 2]}, T0 + 0.25),
            f.PlannedAttempt("b", 2, 3, {}, T0),
        )
    ),
    f.AttemptClaimed("a:1:1", "w1", "0" * 64, T0 + 30.5),
    f.AttemptHeartbeat("a:1:1", T0 + 60.0),
    f.AttemptReleased("a:1:1"),
    f.AttemptCompleted("a:1:1", {"ü": "ünïcode", "n": None}),
    f.AttemptFailed("a:1:1", {"type": "ValueError", "message": "bad", "code": "exception"}),
    f.ResultApplied("a:1:1", {"wrapped": {"x": 1}}, "complete"),
    f.ResultApplied("a:1:1", {}, None),
    f.ResultDiscarded("a:1:1", "run cancelled", output={"late": 1}, error=None),
    f.RunCancelled("because"),
    f.RunCancelled(),
    f.RunCompleted(),
    f.RunFailed({"code": "x", "message": "y"}, step="a"),
    f.RunFailed({"code": "x"}, step="a", compensation="completed"),
    f.CompensationStarted({"code": "x", "message": "y"}, step="a"),
    f.RunMigrated("1", "2", "f" * 64),
    f.AttemptParked("a:1:1", "waiting for 2 child run(s)"),
    f.AttemptWoken("a:1:1", "0193f0c2-0000-7000-8000-000000000001"),
    f.GateOpened("a:1:1", "a", "approval", "next", "complete", "approval"),
    f.GateOpened("a:1:1", "a", "pause", "complete"),
    f.GateResolved(
        "a:1:1",
        "approved",
        "next",
        actor="ops",
        comment="ok",
        metadata={"ticket": "T-1"},
        output={"approval": {"decision": "approved"}},
    ),
]


def test_every_fact_type_is_covered() -> None:
    assert {type(fact) for fact in ONE_OF_EACH} == set(f.FACT_TYPES.values())
    assert all(cls.kind == kind for kind, cls in f.FACT_TYPES.items())


@pytest.mark.parametrize("fact", ONE_OF_EACH, ids=lambda fact: fact.kind)
def test_encode_decode_round_trip(fact: f.Fact) -> None:
    text = f.encode(fact)
    assert isinstance(json.loads(text), dict)
    assert f.decode(fact.kind, text) == fact
    assert f.decode(fact.kind, json.loads(text)) == fact, "decoded rows may arrive as dicts"


def test_encode_refuses_nan() -> None:
    with pytest.raises(ValueError):
        f.encode(f.AttemptCompleted("a:1:1", {"x": float("nan")}))


def test_planned_attempt_key() -> None:
    assert f.PlannedAttempt("load", 2, 3, {}, T0).key == "load:2:3" == f.attempt_key("load", 2, 3)
