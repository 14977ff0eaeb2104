"""The planner's pure decisions, on a Definition built from a Workflow and a folded RunState."""

from __future__ import annotations

from typing import Any

import pytest

import squid_mesh as sm
from squid_mesh.definition.workflow import Definition
from squid_mesh.engine import planner
from squid_mesh.engine.planner import StepResult
from squid_mesh.journal import facts as f
from squid_mesh.journal.fold import AttemptState, RunState, apply, fold

RUN = "2b1c1ab0-5a54-4b4e-9a55-36f8e7f3a002"
NOW = 1_750_000_000.0


def noop(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
    return {}


def payment() -> Definition:
    wf = sm.Workflow("payment")
    wf.step(
        "charge",
        retry=sm.RetryPolicy(
            max_attempts=3, backoff=sm.Backoff.exponential(min=1.0, max=8.0, jitter=0.5)
        ),
        output="charge",
    )(noop)
    wf.step("escalate", input={"amount": "charge.amount"})(noop)
    wf.step("notify", input=["charge"], max_visits=2)(noop)
    wf.step("refund")(noop)
    wf.transition("charge", to="escalate", when=sm.Condition("charge.amount", greater_than=100))
    wf.transition("charge", to="refund", when=sm.Condition("charge.amount", less_than=0))
    wf.transition("charge", to="notify")
    wf.transition("charge", to="refund", on="error")
    wf.transition("escalate", to=sm.COMPLETE)
    wf.transition("notify", to="notify", when={"path": "again", "equals": True})
    wf.transition("notify", to=sm.COMPLETE)
    wf.transition("refund", to=sm.COMPLETE, when=sm.Condition("refunded", exists=True))
    return wf.definition()


D = payment()


def started(payload: dict[str, Any] | None = None) -> RunState:
    facts = planner.plan_start(
        D,
        payload=payload or {"invoice": "inv_1"},
        queue="default",
        trigger="manual",
        idempotency_key=None,
        payload_hash="h",
        now=NOW,
    )
    return fold(RUN, [f.Entry(i, NOW, fact) for i, fact in enumerate(facts, start=1)])


def advance(state: RunState, facts: list[f.Fact], at: float = NOW) -> RunState:
    for fact in facts:
        state = apply(state, f.Entry(state.rev + 1, at, fact))
    return state


def claimed(state: RunState, key: str) -> tuple[RunState, AttemptState]:
    state = advance(state, [f.AttemptClaimed(key, "w1", "hash", NOW + 30)])
    return state, state.attempts[key]


def test_plan_start() -> None:
    state = started({"invoice": "inv_1"})
    assert list(state.attempts) == ["charge:1:1"]
    first = state.attempts["charge:1:1"]
    assert (first.input, first.visible_at, first.status) == ({"invoice": "inv_1"}, NOW, "scheduled")
    assert planner.can_claim(state, "charge:1:1", NOW)
    assert not planner.can_claim(state, "charge:1:1", NOW - 0.001)
    assert not planner.can_claim(state, "nope:1:1", NOW)


@pytest.mark.parametrize(
    ("view", "target"),
    [
        ({"charge": {"amount": 150}}, "escalate"),
        ({"charge": {"amount": -5}}, "refund"),
        ({"charge": {"amount": 50}}, "notify"),
        ({"charge": {"amount": "150"}}, "notify"),
        ({}, "notify"),
    ],
)
def test_route_first_match_then_fallback(view: dict[str, Any], target: str) -> None:
    assert planner.route(D, "charge", "ok", view) == target


def test_route_without_fallback_or_route() -> None:
    assert planner.route(D, "refund", "ok", {"refunded": 1}) == sm.COMPLETE
    assert planner.route(D, "refund", "ok", {}) is None
    assert planner.route(D, "notify", "error", {}) is None
    assert planner.route(D, "charge", "error", {}) == "refund"


def test_first_matching_condition_wins_in_declaration_order() -> None:
    wf = sm.Workflow("order")
    wf.step("a")(noop)
    wf.step("b")(noop)
    wf.step("c")(noop)
    wf.transition("a", to="b", when=sm.Condition("x", greater_than=1))
    wf.transition("a", to="c", when=sm.Condition("x", greater_than=0))
    wf.transition("a", to=sm.COMPLETE)
    wf.transition("b", to=sm.COMPLETE)
    wf.transition("c", to=sm.COMPLETE)
    d = wf.definition()
    assert planner.route(d, "a", "ok", {"x": 5}) == "b"
    assert planner.route(d, "a", "ok", {"x": 0.5}) == "c"
    assert planner.route(d, "a", "ok", {"x": 0}) == sm.COMPLETE


def test_success_wraps_output_applies_it_and_plans_the_next_step() -> None:
    state, attempt = claimed(started(), "charge:1:1")
    facts = planner.decide_success(D, state, attempt, {"amount": 250}, NOW + 5)
    assert facts == [
        f.AttemptCompleted("charge:1:1", {"amount": 250}),
        f.ResultApplied("charge:1:1", {"charge": {"amount": 250}}, "escalate"),
        f.StepsPlanned((f.PlannedAttempt("escalate", 1, 1, {"amount": 250}, NOW + 5),)),
    ]


def test_success_routes_to_complete() -> None:
    state, attempt = claimed(started(), "charge:1:1")
    state = advance(state, planner.decide_success(D, state, attempt, {"amount": 250}, NOW))
    state, attempt = claimed(state, "escalate:1:1")
    facts = planner.decide_success(D, state, attempt, {"done": True}, NOW + 9)
    assert facts == [
        f.AttemptCompleted("escalate:1:1", {"done": True}),
        f.ResultApplied("escalate:1:1", {"done": True}, sm.COMPLETE),
        f.RunCompleted(),
    ]
    assert advance(state, facts).status == sm.RunStatus.COMPLETED


def test_selection_input_takes_listed_keys_of_the_view() -> None:
    state, attempt = claimed(started({"invoice": "i", "charge": "old"}), "charge:1:1")
    facts = planner.decide_success(D, state, attempt, {"amount": 5}, NOW)
    assert facts[-1] == f.StepsPlanned(
        (f.PlannedAttempt("notify", 1, 1, {"charge": {"amount": 5}}, NOW),)
    )


def test_missing_input_path_fails_the_run_naming_it() -> None:
    wf = sm.Workflow("mapping")
    wf.step("a")(noop)
    wf.step("b", input={"who": "user.id"})(noop)
    wf.transition("a", to="b")
    wf.transition("b", to=sm.COMPLETE)
    d = wf.definition()
    facts = planner.plan_start(
        d, payload={}, queue="q", trigger="manual", idempotency_key=None, payload_hash="h", now=NOW
    )
    state = fold(RUN, [f.Entry(i, NOW, fact) for i, fact in enumerate(facts, start=1)])
    state, attempt = claimed(state, "a:1:1")
    decided = planner.decide_success(d, state, attempt, {"user": {}}, NOW)
    assert decided[:2] == [
        f.AttemptCompleted("a:1:1", {"user": {}}),
        f.ResultApplied("a:1:1", {"user": {}}, "b"),
    ]
    failed = decided[2]
    assert isinstance(failed, f.RunFailed) and failed.step == "b"
    assert failed.error["code"] == "missing_input_path"
    assert (failed.error["target"], failed.error["path"]) == ("who", "user.id")


def test_no_matching_ok_transition_fails_the_run_but_keeps_the_result() -> None:
    state, attempt = claimed(started(), "charge:1:1")
    state = advance(
        state, planner.decide_failure(D, state, attempt, StepResult(error={"m": 1}), NOW, 0)
    )
    state, attempt = claimed(state, "refund:1:1")
    facts = planner.decide_success(D, state, attempt, {"other": 1}, NOW)
    assert facts[:2] == [
        f.AttemptCompleted("refund:1:1", {"other": 1}),
        f.ResultApplied("refund:1:1", {"other": 1}, None),
    ]
    assert isinstance(facts[2], f.RunFailed)
    assert facts[2].error["code"] == "no_matching_transition" and facts[2].step == "refund"


@pytest.mark.parametrize(
    ("rand", "delay"),
    [(0.0, 1.0), (0.5, 0.75), (0.999, 1.0 * (1 - 0.5 * 0.999))],
)
def test_retryable_failure_plans_a_retry_after_the_backoff(rand: float, delay: float) -> None:
    state, attempt = claimed(started(), "charge:1:1")
    error = {"type": "RuntimeError", "message": "boom"}
    facts = planner.decide_failure(
        D, state, attempt, StepResult(error=error, retryable=True), NOW + 2, rand
    )
    assert facts[0] == f.AttemptFailed("charge:1:1", error)
    assert isinstance(facts[1], f.StepsPlanned) and len(facts) == 2
    (retry,) = facts[1].attempts
    assert (retry.step, retry.visit, retry.number, retry.input) == (
        "charge",
        1,
        2,
        {"invoice": "inv_1"},
    )
    assert retry.visible_at == pytest.approx(NOW + 2 + delay)


def test_second_failure_backs_off_exponentially_and_retry_after_overrides() -> None:
    state, attempt = claimed(started(), "charge:1:1")
    boom = StepResult(error={"m": "x"}, retryable=True)
    state = advance(state, planner.decide_failure(D, state, attempt, boom, NOW, 0.0))
    state, attempt = claimed(state, "charge:1:2")
    facts = planner.decide_failure(D, state, attempt, boom, NOW + 10, 0.0)
    assert facts[1] == f.StepsPlanned(
        (f.PlannedAttempt("charge", 1, 3, {"invoice": "inv_1"}, NOW + 12),)
    )
    later = StepResult(error={"m": "x"}, retryable=True, retry_after=30.0)
    facts = planner.decide_failure(D, state, attempt, later, NOW + 10, 0.9)
    assert facts[1] == f.StepsPlanned(
        (f.PlannedAttempt("charge", 1, 3, {"invoice": "inv_1"}, NOW + 40),)
    )


def exhaust(state: RunState) -> tuple[RunState, AttemptState]:
    boom = StepResult(error={"m": "x"}, retryable=True)
    for number in (1, 2):
        state, attempt = claimed(state, f"charge:1:{number}")
        state = advance(state, planner.decide_failure(D, state, attempt, boom, NOW, 0.0))
    return claimed(state, "charge:1:3")


def test_exhausted_retries_take_the_error_route() -> None:
    state, attempt = exhaust(started())
    error = {"type": "RuntimeError", "message": "third"}
    facts = planner.decide_failure(
        D, state, attempt, StepResult(error=error, retryable=True), NOW + 1, 0.0
    )
    assert facts == [
        f.AttemptFailed("charge:1:3", error),
        f.ResultApplied("charge:1:3", {}, "refund"),
        f.StepsPlanned((f.PlannedAttempt("refund", 1, 1, {"invoice": "inv_1"}, NOW + 1),)),
    ]


def test_non_retryable_failure_takes_the_error_route_at_once() -> None:
    state, attempt = claimed(started(), "charge:1:1")
    error = {"type": "Fail", "code": "card_declined", "message": "no"}
    facts = planner.decide_failure(D, state, attempt, StepResult(error=error), NOW, 0.0)
    assert [type(x) for x in facts] == [f.AttemptFailed, f.ResultApplied, f.StepsPlanned]
    assert facts[1] == f.ResultApplied("charge:1:1", {}, "refund")


def test_failure_without_error_route_fails_the_run_with_the_step_error() -> None:
    state, attempt = claimed(started(), "charge:1:1")
    state = advance(state, planner.decide_success(D, state, attempt, {"amount": 1}, NOW))
    state, attempt = claimed(state, "notify:1:1")
    error = {"type": "Fail", "code": "nope", "message": "no"}
    facts = planner.decide_failure(D, state, attempt, StepResult(error=error), NOW, 0.0)
    assert facts == [f.AttemptFailed("notify:1:1", error), f.RunFailed(error, step="notify")]
    after = advance(state, facts)
    assert after.status == sm.RunStatus.FAILED
    assert after.error == {**error, "step": "notify"}


def test_max_visits_stops_a_loop() -> None:
    state, attempt = claimed(started(), "charge:1:1")
    state = advance(state, planner.decide_success(D, state, attempt, {"amount": 1}, NOW))
    state, attempt = claimed(state, "notify:1:1")
    facts = planner.decide_success(D, state, attempt, {"again": True}, NOW)
    assert facts[-1] == f.StepsPlanned(
        (f.PlannedAttempt("notify", 2, 1, {"charge": {"amount": 1}}, NOW),)
    )
    state = advance(state, facts)
    state, attempt = claimed(state, "notify:2:1")
    facts = planner.decide_success(D, state, attempt, {"again": True}, NOW)
    assert facts[1] == f.ResultApplied("notify:2:1", {"again": True}, "notify")
    assert isinstance(facts[2], f.RunFailed) and facts[2].step == "notify"
    assert facts[2].error["code"] == "max_visits_exceeded"
    assert "max_visits is 2" in facts[2].error["message"]


def test_late_results_are_discarded_and_fencing_checks_the_claim() -> None:
    state, attempt = claimed(started(), "charge:1:1")
    result = StepResult(output={"amount": 1})
    assert planner.decide_late(attempt, result, "run cancelled") == [
        f.ResultDiscarded("charge:1:1", "run cancelled", {"amount": 1}, None)
    ]
    assert planner.claim_is_current(attempt, "hash")
    assert not planner.claim_is_current(attempt, "other")
    assert not planner.claim_is_current(None, "hash")
    cancelled = advance(state, [f.RunCancelled()])
    assert planner.claim_is_current(cancelled.attempts["charge:1:1"], "hash")
    assert not planner.can_claim(cancelled, "charge:1:1", NOW + 100)
    done = advance(state, [f.AttemptCompleted("charge:1:1", {})])
    assert not planner.claim_is_current(done.attempts["charge:1:1"], "hash")


def test_an_expired_lease_makes_a_running_attempt_claimable() -> None:
    state, _ = claimed(started(), "charge:1:1")
    assert not planner.can_claim(state, "charge:1:1", NOW + 29.9)
    assert planner.can_claim(state, "charge:1:1", NOW + 30)


def test_a_run_that_ended_meanwhile_discards_even_an_unrunnable_attempt() -> None:
    state, attempt = claimed(started(), "charge:1:1")
    state = advance(state, [f.RunCancelled("ops")])
    error = planner.engine_error("step_not_in_definition", "gone")
    facts = planner.decide_record(
        D, state, state.attempts[attempt.key], StepResult(error=error), False, NOW, 0.0
    )
    assert [type(fact) for fact in facts] == [f.ResultDiscarded]
    assert advance(state, facts).status == "cancelled"


def test_record_dispatches_success_and_failure() -> None:
    state, attempt = claimed(started(), "charge:1:1")
    ok = planner.decide_record(D, state, attempt, StepResult(output={"amount": 5}), True, NOW, 0)
    assert isinstance(ok[0], f.AttemptCompleted)
    failed = planner.decide_record(
        D, state, attempt, StepResult(error={"code": "x"}, retryable=False), True, NOW, 0
    )
    assert isinstance(failed[0], f.AttemptFailed)
