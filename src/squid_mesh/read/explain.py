"""Why a run is where it is: a typed diagnosis from its state (read-only; explaining never repairs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from squid_mesh.definition.workflow import COMPENSATION, Definition
from squid_mesh.engine.results import QueuePressure
from squid_mesh.journal.fold import AttemptState, AttemptStatus, RunState, RunStatus
from squid_mesh.read.snapshot import to_datetime
from squid_mesh.store.base import ChildRow


class Reason(StrEnum):
    """The closed set of answers to "why is this run where it is"."""

    WAITING_FOR_WORKER = "waiting_for_worker"
    QUEUE_LIMITED = "queue_limited"
    SCHEDULED_RETRY = "scheduled_retry"
    WAITING_UNTIL = "waiting_until"
    CLAIMED_BY_WORKER = "claimed_by_worker"
    LEASE_EXPIRED = "lease_expired"
    PAUSED_FOR_RESUME = "paused_for_resume"
    WAITING_FOR_APPROVAL = "waiting_for_approval"
    WAITING_FOR_CHILDREN = "waiting_for_children"
    WAITING_FOR_DEPENDENCIES = "waiting_for_dependencies"
    COMPENSATING = "compensating"
    PARKED_VERSION_MISSING = "parked_version_missing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Explanation:
    """What ``mesh.explain_run`` returns.

    ``reason`` is one of :class:`Reason`; ``summary`` is one sentence for a person; ``steps`` the
    steps concerned; ``next_actions`` what an operator can do (``approve``, ``reject``,
    ``resume``, ``cancel``, ``replay``, ``migrate_run``, ``wait``, ``run_worker``,
    ``set_queue_limits``); ``evidence`` the facts the diagnosis rests on (times as aware
    datetimes).

    Example:
        >>> why = mesh.explain_run(run_id)  # doctest: +SKIP
        >>> why.reason, why.summary  # doctest: +SKIP
        ('waiting_for_approval', "Waiting at approval step 'manager' since 10:02 UTC.")
    """

    reason: Reason
    summary: str
    steps: tuple[str, ...]
    next_actions: tuple[str, ...]
    evidence: dict[str, Any] = field(default_factory=dict)


def _when(epoch: float | None) -> str:
    moment = to_datetime(epoch)
    return "?" if moment is None else moment.isoformat(timespec="seconds")


def _attempt_evidence(a: AttemptState) -> dict[str, Any]:
    return {
        "step": a.step,
        "visit": a.visit,
        "attempt": a.number,
        "status": a.status.value,
        "visible_at": to_datetime(a.visible_at),
        "owner": a.owner,
        "lease_until": to_datetime(a.lease_until),
        "claims": a.claims,
    }


def explain(
    state: RunState,
    definition: Definition | None,
    children: list[ChildRow],
    now: float,
    commands: dict[str, int] | None = None,
    queue: QueuePressure | None = None,
) -> Explanation:
    """The diagnosis of ``state`` at ``now`` (``definition``: the run's version, if loaded here).

    ``queue``: the limits of the run's queue and what they hold back now, when it has limits.
    """
    evidence: dict[str, Any] = {"status": state.status.value, "revision": state.rev}
    if commands:
        evidence["commands"] = commands
    if state.error is not None:
        evidence["error"] = state.error
    terminal = _terminal(state, evidence)
    if terminal is not None:
        return terminal
    if definition is None:
        return Explanation(
            Reason.PARKED_VERSION_MISSING,
            f"Parked: version {state.version!r} of workflow {state.workflow!r} is not loaded here.",
            tuple(dict.fromkeys(a.step for a in state.live_attempts())),
            ("migrate_run", "cancel"),
            evidence,
        )
    if (state.error or {}).get("compensation") == "running":
        steps = tuple(a.step for a in state.live_attempts())
        return Explanation(
            Reason.COMPENSATING,
            f"The run failed at step {state.error.get('step')!r} and is undoing completed steps.",  # type: ignore[union-attr]
            steps,
            ("wait", "cancel"),
            evidence,
        )
    if state.gate is not None:
        return _gate(state, evidence)
    return _live(state, definition, children, now, evidence, queue)


def _terminal(state: RunState, evidence: dict[str, Any]) -> Explanation | None:
    if state.status is RunStatus.COMPLETED:
        return Explanation(Reason.COMPLETED, "The run completed.", (), ("replay",), evidence)
    if state.status is RunStatus.FAILED:
        error = state.error or {}
        undo = error.get("compensation")
        tail = f"; compensation {undo}" if undo else ""
        summary = (
            f"The run failed at step {error.get('step')!r}: {error.get('message', '?')}{tail}."
        )
        return Explanation(Reason.FAILED, summary, (str(error.get("step")),), ("replay",), evidence)
    if state.status is RunStatus.CANCELLED:
        return Explanation(Reason.CANCELLED, "The run was cancelled.", (), ("replay",), evidence)
    return None


def _queue_limited(a: AttemptState, q: QueuePressure, evidence: dict[str, Any]) -> Explanation:
    evidence["queue_limits"] = {
        "concurrency": q.concurrency,
        "claimed": q.claimed,
        "rate_limit": q.rate_limit,
        "per": q.per,
        "next_token_at": to_datetime(q.next_token_at),
    }
    if q.full:
        held = f"at its concurrency limit ({q.claimed} of {q.concurrency} claimed)"
        then = "it is claimed when a running step of the queue ends"
    else:
        held = f"out of its rate limit ({q.rate_limit} claims per {q.per:g} s)"
        then = f"the next claim may come at {_when(q.next_token_at)}"
    return Explanation(
        Reason.QUEUE_LIMITED,
        f"Step {a.step!r} is due since {_when(a.visible_at)}; queue {q.queue!r} is {held}: {then}.",
        (a.step,),
        ("wait", "set_queue_limits", "cancel"),
        evidence,
    )


def _gate(state: RunState, evidence: dict[str, Any]) -> Explanation:
    gate = state.gate or {}
    evidence["since"] = to_datetime(gate.get("since"))
    step = str(gate.get("step"))
    if gate.get("gate") == "approval":
        evidence["on_approve"], evidence["on_reject"] = gate.get("ok_to"), gate.get("error_to")
        return Explanation(
            Reason.WAITING_FOR_APPROVAL,
            f"Waiting at approval step {step!r} since {_when(gate.get('since'))}.",
            (step,),
            ("approve", "reject", "cancel"),
            evidence,
        )
    evidence["on_resume"] = gate.get("ok_to")
    return Explanation(
        Reason.PAUSED_FOR_RESUME,
        f"Paused at step {step!r} since {_when(gate.get('since'))}.",
        (step,),
        ("resume", "cancel"),
        evidence,
    )


def _live(
    state: RunState,
    d: Definition,
    children: list[ChildRow],
    now: float,
    evidence: dict[str, Any],
    queue: QueuePressure | None,
) -> Explanation:
    live = state.live_attempts()
    waiting = [a for a in live if a.status is AttemptStatus.WAITING]
    if waiting:
        pending = [c for c in children if not RunStatus(c.status).terminal]
        evidence["children"] = {c.child_key: c.status for c in children}
        return Explanation(
            Reason.WAITING_FOR_CHILDREN,
            f"Step {waiting[0].step!r} waits for {len(pending)} child run(s) to end.",
            tuple(a.step for a in waiting),
            ("wait", "cancel"),
            evidence,
        )
    running = [a for a in live if a.status is AttemptStatus.RUNNING]
    expired = [a for a in running if a.lease_until is not None and a.lease_until <= now]
    if expired:
        a = expired[0]
        evidence["attempt"] = _attempt_evidence(a)
        return Explanation(
            Reason.LEASE_EXPIRED,
            f"Step {a.step!r} was claimed by {a.owner!r}, whose lease ran out at "
            f"{_when(a.lease_until)}: any worker may take it over.",
            (a.step,),
            ("run_worker", "cancel"),
            evidence,
        )
    due = [a for a in live if a.status is AttemptStatus.SCHEDULED and a.visible_at <= now]
    if due:
        a = due[0]
        evidence["attempt"] = _attempt_evidence(a)
        evidence["queue"] = state.queue
        if queue is not None and (queue.full or queue.next_token_at is not None):
            return _queue_limited(a, queue, evidence)
        return Explanation(
            Reason.WAITING_FOR_WORKER,
            f"Step {a.step!r} is due since {_when(a.visible_at)}; no worker of queue "
            f"{state.queue!r} has claimed it yet.",
            (a.step,),
            ("run_worker", "cancel"),
            evidence,
        )
    if running:
        a = running[0]
        evidence["attempt"] = _attempt_evidence(a)
        blocked = _blocked(state, d)
        if blocked:
            # A DAG join waiting on branches that are running: the join is the news.
            evidence["blocked_steps"] = blocked
            return Explanation(
                Reason.WAITING_FOR_DEPENDENCIES,
                f"Step(s) {', '.join(map(repr, blocked))} wait for their dependencies; "
                f"{a.step!r} runs on worker {a.owner!r}.",
                tuple(blocked),
                ("wait", "cancel"),
                evidence,
            )
        return Explanation(
            Reason.CLAIMED_BY_WORKER,
            f"Step {a.step!r} runs on worker {a.owner!r}, leased until {_when(a.lease_until)}.",
            tuple(r.step for r in running),
            ("wait", "cancel"),
            evidence,
        )
    later = [a for a in live if a.status is AttemptStatus.SCHEDULED]
    if later:
        a = min(later, key=lambda x: x.visible_at)
        evidence["attempt"] = _attempt_evidence(a)
        if a.number > 1 and not a.step.endswith(COMPENSATION):
            previous = state.attempts.get(f"{a.step}:{a.visit}:{a.number - 1}")
            evidence["last_error"] = None if previous is None else previous.error
            return Explanation(
                Reason.SCHEDULED_RETRY,
                f"Step {a.step!r} failed; attempt {a.number} is scheduled for "
                f"{_when(a.visible_at)}.",
                (a.step,),
                ("wait", "cancel"),
                evidence,
            )
        return Explanation(
            Reason.WAITING_UNTIL,
            f"Step {a.step!r} becomes due at {_when(a.visible_at)}.",
            (a.step,),
            ("wait", "cancel"),
            evidence,
        )
    blocked = _blocked(state, d)
    evidence["blocked_steps"] = blocked
    return Explanation(
        Reason.WAITING_FOR_DEPENDENCIES,
        f"Steps {', '.join(map(repr, blocked)) or 'none'} wait for their dependencies.",
        tuple(blocked),
        ("cancel",),
        evidence,
    )


def _blocked(state: RunState, d: Definition) -> list[str]:
    """DAG steps not planned yet because a dependency has not completed."""
    if d.mode != "dag":
        return []
    done = {a.step for a in state.attempts.values() if a.status is AttemptStatus.COMPLETED}
    return [
        name
        for name, step in d.steps.items()
        if not state.visits(name) and step.after and not set(step.after) <= done
    ]
