"""The fold: the single definition of what a run's state is, given its facts.

``fold(entries)`` rebuilds a run from nothing; the engine uses the same ``apply`` to move a state
loaded from the projection forward, so the two can never disagree about what a fact means.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from squid_mesh.journal import facts as f


class RunStatus(StrEnum):
    """A run's status. ``completed``, ``failed`` and ``cancelled`` are final."""

    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Whether the run can never change again."""
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


class AttemptStatus(StrEnum):
    """An attempt's status: ``scheduled``, ``running``, ``waiting``, or final.

    ``scheduled``: waiting to be claimed; ``running``: claimed; ``waiting``: an await step parked
    until the run's children end.
    """

    SCHEDULED = "scheduled"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DISCARDED = "discarded"

    @property
    def live(self) -> bool:
        """Whether a worker may still claim or finish this attempt."""
        return self in (AttemptStatus.SCHEDULED, AttemptStatus.RUNNING, AttemptStatus.WAITING)


@dataclass(frozen=True)
class AttemptState:
    """One attempt as the journal says it is."""

    key: str
    step: str
    visit: int
    number: int
    queue: str
    status: AttemptStatus
    input: dict[str, Any]
    visible_at: float
    claim_hash: str | None = None
    owner: str | None = None
    lease_until: float | None = None
    claims: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    # The journal seq of the fact that finished it: completion order, even within one clock tick.
    finished_rev: int | None = None

    @property
    def due_at(self) -> float | None:
        """When a worker may claim it: visible time, or lease expiry while running; else never."""
        if self.status is AttemptStatus.SCHEDULED:
            return self.visible_at
        if self.status is AttemptStatus.RUNNING:
            return self.lease_until
        return None


@dataclass(frozen=True)
class RunState:
    """A run as the journal says it is: the thing projections store and snapshots show."""

    run_id: str
    workflow: str
    version: str
    fingerprint: str
    queue: str
    trigger: str
    payload: dict[str, Any]
    idempotency_key: str | None
    payload_hash: str
    created_at: float
    updated_at: float
    rev: int = 0
    status: RunStatus = RunStatus.RUNNING
    context: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    # The gate a paused run waits at (see GateOpened), or None.
    gate: dict[str, Any] | None = None
    # Idempotency keys of the manual commands received: key -> command.
    command_keys: dict[str, str] = field(default_factory=dict)
    # A child run's parent: {"run_id", "step", "child_key"} (see RunStarted).
    parent: dict[str, Any] | None = None
    # The finished run this one replays, if any.
    replayed_from: str | None = None
    # See RunStarted.
    priority: int = 0
    trace: dict[str, str] | None = None
    attempts: Mapping[str, AttemptState] = field(default_factory=dict)

    @property
    def view(self) -> dict[str, Any]:
        """What steps and conditions see: the payload overlaid with the accumulated context."""
        return {**self.payload, **self.context}

    def live_attempts(self) -> list[AttemptState]:
        """Attempts not yet finished, in due order."""
        live = [a for a in self.attempts.values() if a.status.live]
        return sorted(live, key=lambda a: (a.visible_at, a.key))

    def visits(self, step: str) -> int:
        """How many visits of ``step`` were planned so far."""
        return max((a.visit for a in self.attempts.values() if a.step == step), default=0)


S = TypeVar("S", "RunState", "AttemptState")


def replace(obj: S, **changes: Any) -> S:
    """A copy of a state with some fields changed.

    ``dataclasses.replace`` re-runs ``__init__``; the fold runs for every fact of every command,
    so it copies the instance dictionary instead (the states hold no derived fields to recompute).
    """
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__)
    new.__dict__.update(changes)
    return new


class FoldError(Exception):
    """A journal that cannot be folded (a fact for an unknown attempt, or no start)."""


Applier = Callable[[RunState, f.Entry], RunState]


def _attempt(state: RunState, key: str) -> AttemptState:
    try:
        return state.attempts[key]
    except KeyError:
        raise FoldError(f"run {state.run_id}: fact for unknown attempt {key!r}") from None


def _with_attempt(state: RunState, attempt: AttemptState) -> RunState:
    return replace(state, attempts={**state.attempts, attempt.key: attempt})


def _planned(state: RunState, entry: f.Entry) -> RunState:
    assert isinstance(entry.fact, f.StepsPlanned)
    attempts = dict(state.attempts)
    for p in entry.fact.attempts:
        attempts[p.key] = AttemptState(
            key=p.key,
            step=p.step,
            visit=p.visit,
            number=p.number,
            queue=state.queue,
            status=AttemptStatus.SCHEDULED,
            input=p.input,
            visible_at=p.visible_at,
        )
    return replace(state, attempts=attempts)


def _claimed(state: RunState, entry: f.Entry) -> RunState:
    fact = entry.fact
    assert isinstance(fact, f.AttemptClaimed)
    a = _attempt(state, fact.key)
    return _with_attempt(
        state,
        replace(
            a,
            status=AttemptStatus.RUNNING,
            owner=fact.owner,
            claim_hash=fact.claim_hash,
            lease_until=fact.lease_until,
            claims=a.claims + 1,
            started_at=entry.at,
        ),
    )


def _heartbeat(state: RunState, entry: f.Entry) -> RunState:
    fact = entry.fact
    assert isinstance(fact, f.AttemptHeartbeat)
    return _with_attempt(state, replace(_attempt(state, fact.key), lease_until=fact.lease_until))


def _released(state: RunState, entry: f.Entry) -> RunState:
    fact = entry.fact
    assert isinstance(fact, f.AttemptReleased)
    a = _attempt(state, fact.key)
    return _with_attempt(
        state,
        replace(
            a,
            status=AttemptStatus.SCHEDULED,
            owner=None,
            claim_hash=None,
            lease_until=None,
            started_at=None,
        ),
    )


def _parked(state: RunState, entry: f.Entry) -> RunState:
    fact = entry.fact
    assert isinstance(fact, f.AttemptParked)
    a = replace(
        _attempt(state, fact.key),
        status=AttemptStatus.WAITING,
        owner=None,
        claim_hash=None,
        lease_until=None,
    )
    return _with_attempt(state, a)


def _woken(state: RunState, entry: f.Entry) -> RunState:
    fact = entry.fact
    assert isinstance(fact, f.AttemptWoken)
    a = replace(_attempt(state, fact.key), status=AttemptStatus.SCHEDULED, visible_at=entry.at)
    return _with_attempt(state, a)


def _completed(state: RunState, entry: f.Entry) -> RunState:
    fact = entry.fact
    assert isinstance(fact, f.AttemptCompleted)
    a = replace(
        _attempt(state, fact.key),
        status=AttemptStatus.COMPLETED,
        output=fact.output,
        finished_at=entry.at,
        finished_rev=entry.seq,
    )
    return _with_attempt(state, a)


def _failed(state: RunState, entry: f.Entry) -> RunState:
    fact = entry.fact
    assert isinstance(fact, f.AttemptFailed)
    a = replace(
        _attempt(state, fact.key),
        status=AttemptStatus.FAILED,
        error=fact.error,
        finished_at=entry.at,
        finished_rev=entry.seq,
    )
    return _with_attempt(state, a)


def _applied(state: RunState, entry: f.Entry) -> RunState:
    fact = entry.fact
    assert isinstance(fact, f.ResultApplied)
    _attempt(state, fact.key)
    return replace(state, context={**state.context, **fact.output})


def _discarded(state: RunState, entry: f.Entry) -> RunState:
    fact = entry.fact
    assert isinstance(fact, f.ResultDiscarded)
    a = replace(
        _attempt(state, fact.key),
        status=AttemptStatus.DISCARDED,
        output=fact.output,
        error=fact.error,
        finished_at=entry.at,
        finished_rev=entry.seq,
    )
    return _with_attempt(state, a)


def _end_live(state: RunState, status: AttemptStatus) -> dict[str, AttemptState]:
    return {
        key: replace(a, status=status) if a.status.live else a for key, a in state.attempts.items()
    }


def _cancelled(state: RunState, entry: f.Entry) -> RunState:
    error = state.error
    if error is not None and error.get("compensation") == "running":
        # Cancelled while undoing a failure: the compensations left are not run.
        error = {**error, "compensation": "cancelled"}
    return replace(
        state,
        status=RunStatus.CANCELLED,
        gate=None,
        error=error,
        attempts=_end_live(state, AttemptStatus.CANCELLED),
    )


def _run_completed(state: RunState, entry: f.Entry) -> RunState:
    return replace(state, status=RunStatus.COMPLETED)


def _run_failed(state: RunState, entry: f.Entry) -> RunState:
    fact = entry.fact
    assert isinstance(fact, f.RunFailed)
    error = {**fact.error, "step": fact.step}
    if fact.compensation is not None:
        error["compensation"] = fact.compensation
    return replace(
        state,
        status=RunStatus.FAILED,
        error=error,
        attempts=_end_live(state, AttemptStatus.CANCELLED),
    )


def _compensation_started(state: RunState, entry: f.Entry) -> RunState:
    fact = entry.fact
    assert isinstance(fact, f.CompensationStarted)
    # Still running (compensation attempts are claimed like any others), with the failure kept.
    return replace(
        state,
        error={**fact.error, "step": fact.step, "compensation": "running"},
        attempts=_end_live(state, AttemptStatus.CANCELLED),
    )


MANUAL_COMMANDS = ("cancel", "resume", "approve", "reject")


def _receipt(state: RunState, entry: f.Entry) -> RunState:
    fact = entry.fact
    assert isinstance(fact, f.CommandReceived)
    if fact.idempotency_key is None or fact.command not in MANUAL_COMMANDS:
        return state
    return replace(state, command_keys={**state.command_keys, fact.idempotency_key: fact.command})


def _gate_opened(state: RunState, entry: f.Entry) -> RunState:
    fact = entry.fact
    assert isinstance(fact, f.GateOpened)
    _attempt(state, fact.key)
    gate = {**f.to_data(fact), "since": entry.at}
    return replace(state, status=RunStatus.PAUSED, gate=gate)


def _gate_resolved(state: RunState, entry: f.Entry) -> RunState:
    fact = entry.fact
    assert isinstance(fact, f.GateResolved)
    _attempt(state, fact.key)
    return replace(
        state,
        status=RunStatus.RUNNING,
        gate=None,
        context={**state.context, **fact.output},
    )


def _migrated(state: RunState, entry: f.Entry) -> RunState:
    fact = entry.fact
    assert isinstance(fact, f.RunMigrated)
    return replace(state, version=fact.to_version, fingerprint=fact.fingerprint)


_APPLIERS: dict[type[Any], Applier] = {
    f.CommandReceived: _receipt,
    f.StepsPlanned: _planned,
    f.AttemptClaimed: _claimed,
    f.AttemptHeartbeat: _heartbeat,
    f.AttemptReleased: _released,
    f.AttemptCompleted: _completed,
    f.AttemptFailed: _failed,
    f.ResultApplied: _applied,
    f.ResultDiscarded: _discarded,
    f.RunCancelled: _cancelled,
    f.RunCompleted: _run_completed,
    f.RunFailed: _run_failed,
    f.GateOpened: _gate_opened,
    f.GateResolved: _gate_resolved,
    f.AttemptParked: _parked,
    f.AttemptWoken: _woken,
    f.CompensationStarted: _compensation_started,
    f.RunMigrated: _migrated,
}


def start_state(run_id: str, entry: f.Entry) -> RunState:
    """The state right after a ``run_started`` fact."""
    fact = entry.fact
    if not isinstance(fact, f.RunStarted):
        raise FoldError(f"run {run_id}: the journal must begin with run_started, not {fact.kind}")
    return RunState(
        run_id=run_id,
        workflow=fact.workflow,
        version=fact.version,
        fingerprint=fact.fingerprint,
        queue=fact.queue,
        trigger=fact.trigger,
        payload=fact.payload,
        idempotency_key=fact.idempotency_key,
        payload_hash=fact.payload_hash,
        parent=fact.parent,
        replayed_from=fact.replayed_from,
        priority=fact.priority,
        trace=fact.trace,
        context=dict(fact.context or {}),
        created_at=entry.at,
        updated_at=entry.at,
        rev=entry.seq,
    )


def apply(state: RunState, entry: f.Entry) -> RunState:
    """The state after one more fact. Facts must come in ``seq`` order."""
    if entry.seq != state.rev + 1:
        raise FoldError(f"run {state.run_id}: fact seq {entry.seq} follows rev {state.rev}")
    moved = _APPLIERS[type(entry.fact)](state, entry)
    if moved is state:
        return replace(state, rev=entry.seq, updated_at=entry.at)
    moved.__dict__.update(rev=entry.seq, updated_at=entry.at)  # a fresh copy: no one else holds it
    return moved


def fold(run_id: str, entries: Iterable[f.Entry]) -> RunState:
    """Rebuild a run from its whole journal (which begins with ``run_started``)."""
    state: RunState | None = None
    for entry in entries:
        state = start_state(run_id, entry) if state is None else apply(state, entry)
    if state is None:
        raise FoldError(f"run {run_id}: empty journal")
    return state
