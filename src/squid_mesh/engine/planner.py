"""Pure decisions: given a run's state and what just happened, which facts to append.

Nothing here does I/O; the engine loads a state, calls one of these, and writes the facts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from squid_mesh.definition.mapping import wrap_output
from squid_mesh.definition.retry import RetryPolicy
from squid_mesh.definition.workflow import COMPENSATION, COMPLETE, GATES, Definition, Outcome
from squid_mesh.errors import InputMappingError
from squid_mesh.journal import facts as f
from squid_mesh.journal.fold import AttemptState, AttemptStatus, RunState, RunStatus, replace
from squid_mesh.store.base import ChildRow


@dataclass(frozen=True)
class StepResult:
    """What running a step produced: an output, or an error (with retry hints)."""

    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    retryable: bool = False
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        """Whether the step succeeded."""
        return self.error is None


def engine_error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """An error raised by the runtime itself (not by a step)."""
    return {"type": "SquidMeshError", "code": code, "message": message, **extra}


def plan_start(
    d: Definition,
    *,
    payload: dict[str, Any],
    queue: str,
    trigger: str,
    idempotency_key: str | None,
    payload_hash: str,
    now: float,
    parent: dict[str, Any] | None = None,
    replayed_from: str | None = None,
    receipt: f.CommandReceived | None = None,
    context: dict[str, Any] | None = None,
    priority: int = 0,
    trace: dict[str, str] | None = None,
) -> list[f.Fact]:
    """The facts of a new run: every root step (the entry step, or a DAG's roots) planned at once.

    Raises :class:`InputMappingError` if a root's input cannot be built from the payload.
    """
    planned = []
    view = {**payload, **(context or {})}
    for name in d.roots:
        root = d.steps[name]
        step_input = root.input.apply(view, step=name) if root.input else dict(view)
        planned.append(f.PlannedAttempt(name, 1, 1, step_input, now))
    return [
        f.RunStarted(
            workflow=d.name,
            version=d.version,
            fingerprint=d.fingerprint,
            queue=queue,
            trigger=trigger,
            payload=payload,
            idempotency_key=idempotency_key,
            payload_hash=payload_hash,
            parent=parent,
            replayed_from=replayed_from,
            context=context,
            priority=priority,
            trace=trace,
        ),
        receipt or f.CommandReceived("start", idempotency_key=idempotency_key),
        f.StepsPlanned(tuple(planned)),
    ]


def refill(
    tokens: float | None, refilled_at: float | None, now: float, limit: int, period: float
) -> float:
    """A rate limit's token bucket at ``now``: ``limit`` tokens per ``period``, at most ``limit``.

    >>> refill(0.0, 10.0, 10.5, limit=4, period=1.0)
    2.0
    """
    if tokens is None or refilled_at is None:
        return float(limit)
    gained = max(now - refilled_at, 0.0) * limit / period
    return min(float(limit), tokens + gained)


def next_token_at(tokens: float, now: float, limit: int, period: float) -> float | None:
    """When a bucket holding ``tokens`` at ``now`` has a whole token; ``None``: it has one now.

    >>> next_token_at(0.5, 10.0, limit=2, period=1.0)
    10.25
    """
    return None if tokens >= 1.0 else now + (1.0 - tokens) * period / limit


def can_claim(state: RunState, key: str, now: float) -> bool:
    """Whether the attempt is live, due, and its run still running."""
    attempt = state.attempts.get(key)
    if attempt is None or state.status.terminal or not attempt.status.live:
        return False
    due = attempt.due_at
    return due is not None and due <= now


def sticky_successor(state: RunState, queue: str, now: float) -> str | None:
    """The key of an attempt of this run that a worker of ``queue`` may claim now, if any."""
    if state.status.terminal or state.queue != queue:
        return None
    for attempt in state.live_attempts():
        if attempt.status is AttemptStatus.SCHEDULED and attempt.visible_at <= now:
            return attempt.key
    return None


def route(d: Definition, step: str, on: Outcome, view: Mapping[str, Any]) -> str | None:
    """The target of the first matching transition (conditions in order, then the fallback)."""
    fallback: str | None = None
    for t in d.routes(step, on):
        if t.when is None:
            fallback = t.to
        elif t.when.matches(view):
            return t.to
    return fallback


def _visit(
    d: Definition,
    state: RunState,
    target: str,
    view: Mapping[str, Any],
    visible_at: float,
    done: AttemptState | None = None,
) -> list[f.Fact]:
    step = d.steps[target]
    visit = state.visits(target) + 1
    if visit > step.max_visits:
        error = engine_error(
            "max_visits_exceeded",
            f"step {target!r} would be visited {visit} times; its max_visits is {step.max_visits}",
        )
        return fail_run(d, state, error, target, visible_at, done)
    try:
        step_input = step.input.apply(view, step=target) if step.input else dict(view)
    except InputMappingError as exc:
        error = engine_error(exc.code, exc.message, target=exc.target, path=exc.path)
        return fail_run(d, state, error, target, visible_at, done)
    return [f.StepsPlanned((f.PlannedAttempt(target, visit, 1, step_input, visible_at),))]


def fail_run(
    d: Definition,
    state: RunState,
    error: dict[str, Any],
    step: str | None,
    now: float,
    done: AttemptState | None = None,
) -> list[f.Fact]:
    """The run fails for good: at once, or first undoing its completed steps (saga).

    ``done`` is an attempt completed by the same write (not yet in ``state``).
    """
    first = _next_compensation(d, state, error, now, done=done)
    if first is None:
        return [f.RunFailed(error, step=step)]
    return [f.CompensationStarted(error, step=step), f.StepsPlanned((first,))]


def _next_compensation(
    d: Definition,
    state: RunState,
    failure: dict[str, Any],
    now: float,
    *,
    done: AttemptState | None = None,
    undone: tuple[str, int] | None = None,
) -> f.PlannedAttempt | None:
    """The compensation to run next: the latest-completed step visit not undone yet."""
    attempts = list(state.attempts.values()) + ([done] if done is not None else [])
    compensated = {
        (a.step.removesuffix(COMPENSATION), a.visit)
        for a in attempts
        if a.step.endswith(COMPENSATION) and a.status is AttemptStatus.COMPLETED
    }
    if undone is not None:
        compensated.add(undone)
    candidates = [
        a
        for a in attempts
        if a.status is AttemptStatus.COMPLETED
        and not a.step.endswith(COMPENSATION)
        and a.step in d.steps
        and d.steps[a.step].compensate is not None
        and (a.step, a.visit) not in compensated
    ]
    if not candidates:
        return None
    # The just-completed attempt (not in the journal yet) finished last of all.
    last = max(candidates, key=lambda a: (a.finished_rev or float("inf"), a.key))
    undo_input = {"input": last.input, "output": last.output or {}, "failure": failure}
    return f.PlannedAttempt(last.step + COMPENSATION, last.visit, 1, undo_input, now)


def decide_compensation(
    d: Definition,
    state: RunState,
    attempt: AttemptState,
    result: StepResult,
    now: float,
    rand: float,
) -> list[f.Fact]:
    """Record a compensation attempt: go on to the next one, retry it, or end the run failed."""
    original = attempt.step.removesuffix(COMPENSATION)
    failure = {k: v for k, v in (state.error or {}).items() if k not in ("step", "compensation")}
    failed_step = (state.error or {}).get("step")
    if result.ok:
        completed = f.AttemptCompleted(attempt.key, result.output or {})
        nxt = _next_compensation(d, state, failure, now, undone=(original, attempt.visit))
        if nxt is not None:
            return [completed, f.StepsPlanned((nxt,))]
        return [completed, f.RunFailed(failure, step=failed_step, compensation="completed")]
    error = result.error or engine_error("compensation_failed", "compensation failed")
    failed = f.AttemptFailed(attempt.key, error)
    retry = _retry(d.steps[original].compensate_retry, attempt, result, now, rand)
    if retry is not None:
        return [failed, retry]
    # A compensation that cannot succeed stops the chain: undoing earlier steps on top of a
    # half-undone later one could make things worse. The run ends failed, and says so.
    return [failed, f.RunFailed(failure, step=failed_step, compensation="failed")]


def _follow(
    d: Definition,
    state: RunState,
    attempt: AttemptState,
    on: Outcome,
    output: dict[str, Any],
    view: Mapping[str, Any],
    now: float,
    done: AttemptState | None = None,
) -> list[f.Fact]:
    """Route an outcome. ``done``: the attempt as completed by this same write (on "ok")."""
    target = route(d, attempt.step, on, view)
    if target is None:
        if on == "error":
            return fail_run(d, state, dict(attempt_error(attempt)), attempt.step, now)
        message = f"step {attempt.step!r} succeeded but no on='ok' transition matched"
        error = engine_error("no_matching_transition", message)
        return [
            f.ResultApplied(attempt.key, output, None),
            *fail_run(d, state, error, attempt.step, now, done),
        ]
    applied = f.ResultApplied(attempt.key, output, target)
    if target == COMPLETE:
        return [applied, f.RunCompleted()]
    # After a wait step, its successor becomes visible once the wait is over.
    delay = d.steps[attempt.step].wait_seconds if on == "ok" else 0.0
    return [applied, *_visit(d, state, target, view, now + delay, done)]


def attempt_error(attempt: AttemptState) -> dict[str, Any]:
    """The error recorded on a failed attempt (or a generic one)."""
    return attempt.error or engine_error("step_failed", f"step {attempt.step!r} failed")


def decide_success(
    d: Definition, state: RunState, attempt: AttemptState, output: dict[str, Any], now: float
) -> list[f.Fact]:
    """Complete the attempt, merge its (wrapped) output, and route on ``ok``."""
    wrapped = wrap_output(output, d.steps[attempt.step].output)
    view = {**state.view, **wrapped}
    completed = f.AttemptCompleted(attempt.key, output)
    step = d.steps[attempt.step]
    if step.kind in GATES:
        return [completed, _open_gate(d, attempt, step.kind, view)]
    # The attempt completes in this same write: it counts as done (for compensation).
    done = replace(attempt, status=AttemptStatus.COMPLETED, output=output, finished_at=now)
    if d.mode == "dag":
        return [completed, *_ready(d, state, attempt, wrapped, view, now, done)]
    return [completed, *_follow(d, state, attempt, "ok", wrapped, view, now, done)]


def _open_gate(d: Definition, attempt: AttemptState, kind: str, view: Mapping[str, Any]) -> f.Fact:
    # The routes are chosen now, from the context as it is when the run pauses, so that what an
    # operator approves is what runs (gates' transitions have no conditions; see _check_gates).
    ok_to = route(d, attempt.step, "ok", view)
    error_to = route(d, attempt.step, "error", view) if kind == "approval" else None
    output = d.steps[attempt.step].output if kind == "approval" else None
    return f.GateOpened(attempt.key, attempt.step, kind, ok_to or COMPLETE, error_to, output)


def decide_resolve(
    d: Definition,
    state: RunState,
    command: str,
    *,
    actor: str | None,
    comment: str | None,
    metadata: dict[str, Any],
    idempotency_key: str | None,
    decided_at: str,
    now: float,
) -> list[f.Fact]:
    """Resume, approve or reject the run's open gate (the caller checked that it is the right one).

    An approval's decision is written into the context under the step's output key, and the run
    follows the route chosen when it paused: ``ok`` for resume and approve, ``error`` for reject.
    """
    gate = state.gate or {}
    target = gate["error_to"] if command == "reject" else gate["ok_to"]
    output: dict[str, Any] = {}
    if gate["gate"] == "approval":
        decision = {
            "decision": "rejected" if command == "reject" else "approved",
            "actor": actor,
            "comment": comment,
            "metadata": metadata,
            "decided_at": decided_at,
        }
        output = {gate["output"]: decision}
    receipt = f.CommandReceived(
        command, idempotency_key=idempotency_key, actor=actor, metadata=metadata, comment=comment
    )
    resolved = f.GateResolved(
        gate["key"],
        {"resume": "resumed", "approve": "approved", "reject": "rejected"}[command],
        target,
        actor,
        comment,
        metadata,
        output,
    )
    if target == COMPLETE:
        return [receipt, resolved, f.RunCompleted()]
    view = {**state.view, **output}
    return [receipt, resolved, *_visit(d, state, target, view, now)]


def _ready(
    d: Definition,
    state: RunState,
    attempt: AttemptState,
    output: dict[str, Any],
    view: Mapping[str, Any],
    now: float,
    done: AttemptState,
) -> list[f.Fact]:
    """DAG: apply the result, then plan each dependent whose own dependencies are all complete.

    Only this step's dependents can have become ready, and a step is planned once (its first
    visit): two dependencies completing at the same time are two writes to one run, serialised
    by its revision, so exactly one of them sees the other complete and plans the join.
    """
    finished = {
        a.step: a.finished_at or now
        for a in state.attempts.values()
        if a.status is AttemptStatus.COMPLETED
    }
    finished[attempt.step] = now
    complete = set(finished)
    applied = f.ResultApplied(attempt.key, output, None)
    planned = []
    for name in d.dependents.get(attempt.step, ()):
        step = d.steps[name]
        if state.visits(name) or not all(dep in complete for dep in step.after or ()):
            continue
        try:
            step_input = step.input.apply(view, step=name) if step.input else dict(view)
        except InputMappingError as exc:
            error = engine_error(exc.code, exc.message, target=exc.target, path=exc.path)
            return [applied, *fail_run(d, state, error, name, now, done)]
        # A join after wait steps becomes visible when the last of those waits is over.
        visible_at = max(
            [now, *(finished[dep] + d.steps[dep].wait_seconds for dep in step.after or ())]
        )
        planned.append(f.PlannedAttempt(name, 1, 1, step_input, visible_at))
    if planned:
        return [applied, f.StepsPlanned(tuple(planned))]
    if complete >= set(d.steps):
        return [applied, f.RunCompleted()]
    return [applied]


def _retry(
    policy: RetryPolicy | None,
    attempt: AttemptState,
    result: StepResult,
    now: float,
    rand: float,
) -> f.StepsPlanned | None:
    """The next attempt of the same visit, when the result asks for one and the policy allows."""
    if not result.retryable or policy is None:
        return None
    delay = policy.next_delay(attempt.number, rand, result.retry_after)
    if delay is None:
        return None
    nxt = f.PlannedAttempt(
        attempt.step, attempt.visit, attempt.number + 1, attempt.input, now + delay
    )
    return f.StepsPlanned((nxt,))


def decide_failure(
    d: Definition,
    state: RunState,
    attempt: AttemptState,
    result: StepResult,
    now: float,
    rand: float,
) -> list[f.Fact]:
    """Fail the attempt; plan a retry while the policy allows, else route on ``error``."""
    error = result.error or engine_error("step_failed", "step failed")
    failed = f.AttemptFailed(attempt.key, error)
    retry = _retry(d.steps[attempt.step].retry, attempt, result, now, rand)
    if retry is not None:
        return [failed, retry]
    after_failure = AttemptState(**{**attempt.__dict__, "error": error})
    return [failed, *_follow(d, state, after_failure, "error", {}, state.view, now)]


def decide_record(
    d: Definition,
    state: RunState,
    attempt: AttemptState,
    result: StepResult,
    runnable: bool,
    now: float,
    rand: float,
    children: list[ChildRow] | None = None,
) -> list[f.Fact]:
    """The facts that record a finished attempt whose claim is still current.

    ``children`` is given for an await step: the run's child runs as they are now.
    """
    # A run that ended meanwhile (a cancel from another process) is final whatever the attempt's
    # outcome: its result is kept and applied nowhere. This is checked first.
    if state.status.terminal:
        return decide_late(attempt, result, f"run {state.status.value}")
    if attempt.status is AttemptStatus.CANCELLED:
        # The run started compensating while this step ran: its result no longer counts.
        return decide_late(attempt, result, "run compensating")
    if attempt.step.endswith(COMPENSATION):
        return decide_compensation(d, state, attempt, result, now, rand)
    if not runnable:
        return decide_unrunnable(attempt, result.error or {})
    if result.ok and children is not None:
        return decide_children(d, state, attempt, children, now)
    if result.ok:
        return decide_success(d, state, attempt, result.output or {}, now)
    return decide_failure(d, state, attempt, result, now, rand)


def decide_children(
    d: Definition,
    state: RunState,
    attempt: AttemptState,
    children: list[ChildRow],
    now: float,
) -> list[f.Fact]:
    """An await step: park while a child runs; once all have ended, complete with their results."""
    pending = [c for c in children if not RunStatus(c.status).terminal]
    if pending:
        return [f.AttemptParked(attempt.key, f"waiting for {len(pending)} child run(s)")]
    results: dict[str, Any] = {}
    for c in children:
        result: dict[str, Any] = {"run_id": c.run_id, "workflow": c.workflow, "status": c.status}
        if c.status == RunStatus.COMPLETED:
            result["context"] = c.context
        elif c.status == RunStatus.FAILED:
            result["error"] = c.error
        results[c.child_key] = result
    return decide_success(d, state, attempt, results, now)


def decide_unrunnable(attempt: AttemptState, error: dict[str, Any]) -> list[f.Fact]:
    """The attempt cannot run here at all (its step is not in the definition): fail the run."""
    return [f.AttemptFailed(attempt.key, error), f.RunFailed(error, step=attempt.step)]


def decide_late(attempt: AttemptState, result: StepResult, reason: str) -> list[f.Fact]:
    """A result that arrived after the run ended: kept in the journal, applied nowhere."""
    return [f.ResultDiscarded(attempt.key, reason, result.output, result.error)]


def migration_problem(target: Definition, state: RunState) -> tuple[str, list[str]] | None:
    """Why ``state`` cannot move to ``target`` (another version), with the steps concerned."""
    missing = missing_steps(target, state)
    if missing:
        return f"version {target.version!r} has no step {', '.join(map(repr, missing))}", missing
    live = state.live_attempts()
    if target.mode == "transitions" and len(live) > 1:
        steps = sorted({a.step for a in live})
        return f"version {target.version!r} is a state machine, and the run runs branches", steps
    if target.mode == "dag":
        done = {a.step for a in state.attempts.values() if a.status is AttemptStatus.COMPLETED}
        stranded = [
            name
            for name, step in target.steps.items()
            if not state.visits(name) and step.after and set(step.after) <= done
        ]
        if stranded:
            return (
                f"version {target.version!r} adds steps after steps this run already "
                "completed; they would never run",
                stranded,
            )
    return None


def missing_steps(target: Definition, state: RunState) -> list[str]:
    """The steps a run waits on that ``target`` (another version) does not have."""
    needed = set()
    for a in state.live_attempts():
        if a.step.endswith(COMPENSATION):
            original = target.steps.get(a.step.removesuffix(COMPENSATION))
            if original is None or original.compensate is None:
                needed.add(a.step)
        elif a.step not in target.steps:
            needed.add(a.step)
    for to in ((state.gate or {}).get("ok_to"), (state.gate or {}).get("error_to")):
        if to is not None and to != COMPLETE and to not in target.steps:
            needed.add(to)
    return sorted(needed)


def claim_is_current(attempt: AttemptState | None, claim_hash: str) -> bool:
    """Fencing: only the attempt's current claim may finish it (or extend it)."""
    return (
        attempt is not None
        and attempt.claim_hash == claim_hash
        and attempt.status in (AttemptStatus.RUNNING, AttemptStatus.CANCELLED)
    )
