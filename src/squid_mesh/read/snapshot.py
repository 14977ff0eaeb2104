"""Typed, read-only snapshots of a run, built from its state (and optionally its journal)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from squid_mesh.journal.facts import CommandReceived, Entry, to_data
from squid_mesh.journal.fold import AttemptState, AttemptStatus, RunState, RunStatus
from squid_mesh.store.base import ChildRow


@dataclass(frozen=True)
class AttemptView:
    """One attempt of one step visit."""

    number: int
    status: AttemptStatus
    visible_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    owner: str | None
    lease_until: datetime | None
    claims: int
    error: dict[str, Any] | None
    output: dict[str, Any] | None


@dataclass(frozen=True)
class StepView:
    """One visit of one step, with its attempts in order."""

    name: str
    visit: int
    status: AttemptStatus
    input: dict[str, Any]
    attempts: tuple[AttemptView, ...]


@dataclass(frozen=True)
class HistoryEntry:
    """One journal fact, as shown by ``inspect_run(..., history=True)``."""

    seq: int
    at: datetime
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True)
class GateView:
    """The gate a paused run waits at: which step, which kind, since when, and where it goes next.

    ``kind`` is ``"pause"`` (continue with ``resume``) or ``"approval"`` (``approve`` follows
    ``on_approve``, ``reject`` follows ``on_reject``).
    """

    step: str
    kind: str
    since: datetime
    on_approve: str
    on_reject: str | None


@dataclass(frozen=True)
class ParentView:
    """The run that started this one: its id, the step that started it, and the child key."""

    run_id: str
    step: str
    child_key: str


@dataclass(frozen=True)
class ChildView:
    """A run started by one of this run's steps (``ctx.start_child``)."""

    run_id: str
    workflow: str
    status: RunStatus
    child_key: str


@dataclass(frozen=True)
class CommandView:
    """One command the run received (its receipt), and how often it was repeated since.

    ``repeats`` counts the later calls with the same idempotency key, which changed nothing.
    Metadata values of secret-looking keys are stored redacted.
    """

    command: str
    at: datetime
    actor: str | None
    idempotency_key: str | None
    metadata: dict[str, Any]
    repeats: int
    comment: str | None = None


@dataclass(frozen=True)
class RunSnapshot:
    """Where a run is: what ``start`` and ``inspect_run`` return.

    ``created`` tells a start that wrote the run (``True``) from one that found the run an earlier
    start with the same idempotency key had written (``False``); reads leave it ``None``.

    Example:
        >>> snap = mesh.inspect_run(run_id)  # doctest: +SKIP
        >>> snap.status, snap.current_steps, snap.context  # doctest: +SKIP
        ('running', ('notify',), {'invoice': {'id': 'inv_1'}})
    """

    id: str
    workflow: str
    version: str
    status: RunStatus
    queue: str
    trigger: str
    payload: dict[str, Any]
    context: dict[str, Any]
    idempotency_key: str | None
    current_steps: tuple[str, ...]
    next_visible_at: datetime | None
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    revision: int
    steps: tuple[StepView, ...]
    history: tuple[HistoryEntry, ...] | None = None
    gate: GateView | None = None
    parent: ParentView | None = None
    children: tuple[ChildView, ...] = ()
    replayed_from: str | None = None
    replays: tuple[str, ...] = ()
    parked: str | None = None
    commands: tuple[CommandView, ...] = ()
    # Claim order on its queue: higher first (see Mesh.start).
    priority: int = 0
    # From start, replay and cron_tick: whether this call wrote the run (False: an earlier call
    # with the same idempotency key had, and this is that run as it is now). None from reads.
    created: bool | None = None

    @property
    def compensation(self) -> str | None:
        """Where undoing a failure stands: ``running``, ``completed``, ``failed`` or ``cancelled``.

        ``None`` when no compensation ever started.
        """
        value = (self.error or {}).get("compensation")
        return None if value is None else str(value)

    @property
    def terminal(self) -> bool:
        """Whether the run has finished (completed, failed or cancelled)."""
        return self.status.terminal


def _attempt_view(a: AttemptState) -> AttemptView:
    return AttemptView(
        number=a.number,
        status=a.status,
        visible_at=to_datetime(a.visible_at),  # type: ignore[arg-type]
        started_at=to_datetime(a.started_at),
        finished_at=to_datetime(a.finished_at),
        owner=a.owner,
        lease_until=to_datetime(a.lease_until),
        claims=a.claims,
        error=a.error,
        output=a.output,
    )


def _steps(state: RunState) -> tuple[StepView, ...]:
    visits: dict[tuple[str, int], list[AttemptState]] = {}
    for a in state.attempts.values():
        visits.setdefault((a.step, a.visit), []).append(a)
    views = []
    for (name, visit), attempts in visits.items():
        attempts.sort(key=lambda a: a.number)
        views.append(
            StepView(
                name=name,
                visit=visit,
                status=attempts[-1].status,
                input=attempts[0].input,
                attempts=tuple(_attempt_view(a) for a in attempts),
            )
        )
    views.sort(key=lambda v: (v.attempts[0].visible_at, v.name, v.visit))
    return tuple(views)


def snapshot(
    state: RunState,
    entries: list[Entry] | None = None,
    children: list[ChildRow] | None = None,
    replays: list[str] | None = None,
    *,
    parked: str | None = None,
    commands: tuple[CommandView, ...] = (),
    created: bool | None = None,
) -> RunSnapshot:
    """The snapshot of a run state; with ``entries`` its history, and its lineage when given."""
    live = state.live_attempts()
    scheduled = [a.visible_at for a in live if a.status is AttemptStatus.SCHEDULED]
    history = None
    if entries is not None:
        history = tuple(
            HistoryEntry(
                seq=e.seq,
                at=to_datetime(e.at),  # type: ignore[arg-type]
                kind=e.fact.kind,
                data=_redact_claim(to_data(e.fact)),
            )
            for e in entries
        )
    return RunSnapshot(
        id=state.run_id,
        workflow=state.workflow,
        version=state.version,
        status=state.status,
        queue=state.queue,
        trigger=state.trigger,
        payload=state.payload,
        context=state.context,
        idempotency_key=state.idempotency_key,
        current_steps=tuple(dict.fromkeys(a.step for a in live)),
        next_visible_at=to_datetime(min(scheduled)) if scheduled else None,
        error=state.error,
        created_at=to_datetime(state.created_at),  # type: ignore[arg-type]
        updated_at=to_datetime(state.updated_at),  # type: ignore[arg-type]
        revision=state.rev,
        steps=_steps(state),
        history=history,
        gate=_gate(state.gate),
        parent=None if state.parent is None else ParentView(**state.parent),
        children=tuple(
            ChildView(c.run_id, c.workflow, RunStatus(c.status), c.child_key)
            for c in children or ()
        ),
        replayed_from=state.replayed_from,
        priority=state.priority,
        replays=tuple(replays or ()),
        parked=parked,
        commands=commands,
        created=created,
    )


def commands_of(
    receipts: list[Entry], repeats: dict[tuple[str, str], int]
) -> tuple[CommandView, ...]:
    """The command history of a run from its receipts and the repeat counts."""
    views = []
    for entry in receipts:
        fact = entry.fact
        assert isinstance(fact, CommandReceived)
        key = fact.idempotency_key
        views.append(
            CommandView(
                command=fact.command,
                at=to_datetime(entry.at),  # type: ignore[arg-type]
                actor=fact.actor,
                idempotency_key=key,
                metadata=fact.metadata,
                repeats=0 if key is None else repeats.get((fact.command, key), 0),
                comment=fact.comment,
            )
        )
    return tuple(views)


def _gate(gate: dict[str, Any] | None) -> GateView | None:
    if gate is None:
        return None
    return GateView(
        step=gate["step"],
        kind=gate["gate"],
        since=to_datetime(gate["since"]),  # type: ignore[arg-type]
        on_approve=gate["ok_to"],
        on_reject=gate["error_to"],
    )


def _redact_claim(data: dict[str, Any]) -> dict[str, Any]:
    # The claim hash is not the token, but it is an internal fencing value: keep it out of reads.
    return {key: value for key, value in data.items() if key != "claim_hash"}


def to_datetime(epoch: float | None) -> datetime | None:
    """An aware UTC datetime from stored epoch seconds."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)
