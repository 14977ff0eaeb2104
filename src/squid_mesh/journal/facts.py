"""The facts of a run's journal: what happened, in order, as plain JSON-safe values.

A fact never changes once appended. The projection tables and every snapshot are derived from them
(see :mod:`squid_mesh.journal.fold`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class PlannedAttempt:
    """One attempt of one step visit, to be claimed once ``visible_at`` has come."""

    step: str
    visit: int
    number: int
    input: dict[str, Any]
    visible_at: float

    @property
    def key(self) -> str:
        """``step:visit:number``: unique within the run."""
        return attempt_key(self.step, self.visit, self.number)


def attempt_key(step: str, visit: int, number: int) -> str:
    """The key of an attempt within its run (step names never contain ``:``)."""
    return f"{step}:{visit}:{number}"


@dataclass(frozen=True)
class CommandReceived:
    """A receipt: a command (start, cancel, ...) reached the run."""

    kind: ClassVar[str] = "command_received"
    command: str
    idempotency_key: str | None = None
    actor: str | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    comment: str | None = None


@dataclass(frozen=True)
class RunStarted:
    """The run exists, pinned to one definition version, with its validated payload."""

    kind: ClassVar[str] = "run_started"
    workflow: str
    version: str
    fingerprint: str
    queue: str
    trigger: str
    payload: dict[str, Any]
    idempotency_key: str | None
    payload_hash: str
    # A child run's parent: {"run_id", "step", "child_key"}; None for a top-level run.
    parent: dict[str, Any] | None = None
    # The finished run this one replays (mesh.replay), if any.
    replayed_from: str | None = None
    # The context the run starts with (a scheduled run's schedule), if any.
    context: dict[str, Any] | None = None
    # Claim order among due attempts of a queue: higher first (every attempt of the run has it).
    priority: int = 0
    # W3C trace context of the start ({"traceparent": ..., "tracestate": ...}), when traced.
    trace: dict[str, str] | None = None


@dataclass(frozen=True)
class StepsPlanned:
    """New attempts were planned (first visit, successor, or retry)."""

    kind: ClassVar[str] = "steps_planned"
    attempts: tuple[PlannedAttempt, ...]


@dataclass(frozen=True)
class AttemptClaimed:
    """A worker claimed an attempt; only the hash of its claim token is kept."""

    kind: ClassVar[str] = "attempt_claimed"
    key: str
    owner: str
    claim_hash: str
    lease_until: float


@dataclass(frozen=True)
class AttemptHeartbeat:
    """The claiming worker extended its lease."""

    kind: ClassVar[str] = "attempt_heartbeat"
    key: str
    lease_until: float


@dataclass(frozen=True)
class AttemptReleased:
    """The claiming worker gave the attempt back unrun (shutdown): it is claimable again at once."""

    kind: ClassVar[str] = "attempt_released"
    key: str


@dataclass(frozen=True)
class AttemptCompleted:
    """The step returned; ``output`` is what it returned (before output wrapping)."""

    kind: ClassVar[str] = "attempt_completed"
    key: str
    output: dict[str, Any]


@dataclass(frozen=True)
class AttemptFailed:
    """The step raised; ``error`` keeps type, message, code and (redacted) details."""

    kind: ClassVar[str] = "attempt_failed"
    key: str
    error: dict[str, Any]


@dataclass(frozen=True)
class ResultApplied:
    """An attempt's outcome was merged into the context and routed (``to`` a step or complete)."""

    kind: ClassVar[str] = "result_applied"
    key: str
    output: dict[str, Any]
    to: str | None


@dataclass(frozen=True)
class ResultDiscarded:
    """A step finished after its run had ended: its result is kept here and applied nowhere."""

    kind: ClassVar[str] = "result_discarded"
    key: str
    reason: str
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class RunCancelled:
    """The run was cancelled; every live attempt is cancelled with it."""

    kind: ClassVar[str] = "run_cancelled"
    reason: str | None = None


@dataclass(frozen=True)
class RunCompleted:
    """The run reached ``complete``."""

    kind: ClassVar[str] = "run_completed"


@dataclass(frozen=True)
class AttemptParked:
    """An await step found children still running: its attempt waits, unclaimable, to be woken."""

    kind: ClassVar[str] = "attempt_parked"
    key: str
    reason: str


@dataclass(frozen=True)
class AttemptWoken:
    """A child of the run ended: the parked attempt is due again (``child`` names the child)."""

    kind: ClassVar[str] = "attempt_woken"
    key: str
    child: str


@dataclass(frozen=True)
class RunMigrated:
    """An operator moved an unfinished run to another version of its workflow."""

    kind: ClassVar[str] = "run_migrated"
    from_version: str
    to_version: str
    fingerprint: str


@dataclass(frozen=True)
class GateOpened:
    """A pause or approval step completed: the run waits for an operator.

    The routes were chosen at this moment (``ok_to``; ``error_to`` for an approval's rejection);
    ``output`` is the context key an approval's decision goes under.
    """

    kind: ClassVar[str] = "gate_opened"
    key: str
    step: str
    gate: str
    ok_to: str
    error_to: str | None = None
    output: str | None = None


@dataclass(frozen=True)
class GateResolved:
    """An operator resumed, approved or rejected the run's open gate; the run goes on ``to``."""

    kind: ClassVar[str] = "gate_resolved"
    key: str
    decision: str
    to: str
    actor: str | None = None
    comment: str | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    output: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class RunFailed:
    """The run failed; ``error`` says why and ``step`` where.

    ``compensation`` is ``completed`` or ``failed`` when compensations ran before (see
    CompensationStarted), else ``None``.
    """

    kind: ClassVar[str] = "run_failed"
    error: dict[str, Any]
    step: str | None = None
    compensation: str | None = None


@dataclass(frozen=True)
class CompensationStarted:
    """The run failed for good and has completed steps to undo: their compensations run first.

    The run is not final yet: it ends with ``run_failed`` once the compensations are done.
    """

    kind: ClassVar[str] = "compensation_started"
    error: dict[str, Any]
    step: str | None = None


Fact = (
    CommandReceived
    | RunStarted
    | StepsPlanned
    | AttemptClaimed
    | AttemptHeartbeat
    | AttemptReleased
    | AttemptCompleted
    | AttemptFailed
    | ResultApplied
    | ResultDiscarded
    | RunCancelled
    | RunCompleted
    | RunFailed
    | GateOpened
    | GateResolved
    | AttemptParked
    | AttemptWoken
    | CompensationStarted
    | RunMigrated
)

FACT_TYPES: dict[str, type[Fact]] = {
    cls.kind: cls
    for cls in (
        CommandReceived,
        RunStarted,
        StepsPlanned,
        AttemptClaimed,
        AttemptHeartbeat,
        AttemptReleased,
        AttemptCompleted,
        AttemptFailed,
        ResultApplied,
        ResultDiscarded,
        RunCancelled,
        RunCompleted,
        RunFailed,
        GateOpened,
        GateResolved,
        AttemptParked,
        AttemptWoken,
        CompensationStarted,
        RunMigrated,
    )
}


@dataclass(frozen=True)
class Entry:
    """A fact as stored: its position (``seq``, from 1) in the run's journal and its time."""

    seq: int
    at: float
    fact: Fact


def to_data(fact: Fact) -> dict[str, Any]:
    """The fact's fields as plain values (planned attempts as mappings)."""
    if isinstance(fact, StepsPlanned):
        return {"attempts": [dict(vars(a)) for a in fact.attempts]}
    return dict(vars(fact))


def encode(fact: Fact) -> str:
    """The fact's data as compact JSON (its kind is stored beside it)."""
    return json.dumps(to_data(fact), separators=(",", ":"), allow_nan=False)


def decode(kind: str, data: str | dict[str, Any]) -> Fact:
    """Rebuild a fact from its kind and JSON data. Nothing is ever executed: plain values only."""
    values = json.loads(data) if isinstance(data, str) else dict(data)
    cls = FACT_TYPES[kind]
    if cls is StepsPlanned:
        return StepsPlanned(tuple(PlannedAttempt(**a) for a in values["attempts"]))
    return cls(**values)
