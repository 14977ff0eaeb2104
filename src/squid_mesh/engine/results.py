"""What the engine's commands return: started runs, executions, claims, verification problems."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from squid_mesh.journal import facts as f
from squid_mesh.journal.fold import AttemptState, RunState, RunStatus

Outcome = Literal[
    "completed", "failed", "retry_scheduled", "waiting", "discarded", "released", "lease_lost"
]


@dataclass(frozen=True)
class Execution:
    """What one ``execute_next`` call did. Always truthy; ``execute_next`` returns ``None`` when idle.

    ``outcome``: ``completed`` (the step succeeded), ``retry_scheduled`` (it failed and will be tried
    again), ``failed`` (it failed for good and the run took its error route or failed),
    ``waiting`` (an await step parked until the run's child runs end), ``released`` (the run
    was moved to a version this process does not have while the step ran; the attempt went back
    to the queue),
    ``discarded`` (the run ended while the step ran; its result was kept, not applied), or
    ``lease_lost`` (another worker had taken the attempt over; nothing was recorded).
    """

    run_id: str
    step: str
    attempt: int
    outcome: Outcome
    run_status: RunStatus
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class Started:
    """What a start (or replay, cron slot, child start) found or wrote.

    ``created`` is false when an earlier start with the same idempotency key, run id, child key
    or cron slot had written the run: ``state`` is that run as it is now.
    """

    state: RunState
    created: bool


@dataclass(frozen=True)
class QueuePressure:
    """A limited queue at one moment: what holds back its due attempts, if anything.

    ``claimed`` counts the queue's claims whose lease still holds; ``next_token_at`` is when the
    rate limit's bucket next has a token (``None``: it has one now, or there is no rate limit).
    """

    queue: str
    concurrency: int | None
    claimed: int
    rate_limit: int | None
    per: float | None
    next_token_at: float | None

    @property
    def full(self) -> bool:
        """Whether the queue's concurrency limit is reached."""
        return self.concurrency is not None and self.claimed >= self.concurrency


@dataclass(frozen=True)
class Claim:
    """An attempt this process claimed: the run as of the claim and the hash that fences it."""

    state: RunState
    attempt: AttemptState
    claim_hash: str
    owner: str
    lease: float


@dataclass(frozen=True)
class Problem:
    """A run whose projection differs from the fold of its journal (reported by ``verify``)."""

    run_id: str
    field: str
    journal: Any
    projection: Any


def outcome_of(facts: Sequence[f.Fact]) -> Outcome:
    """What recording a step's result did, read from the facts it appended."""
    kinds = {type(fact) for fact in facts}
    if f.ResultDiscarded in kinds:
        return "discarded"
    if f.AttemptParked in kinds:
        return "waiting"
    if f.AttemptReleased in kinds:
        return "released"
    if f.CompensationStarted in kinds:
        return "failed"  # the steps planned are compensations, not a retry
    if f.AttemptCompleted in kinds:
        return "completed"
    if f.StepsPlanned in kinds and f.ResultApplied not in kinds:
        return "retry_scheduled"
    return "failed"


def compare(projected: RunState, folded: RunState) -> list[Problem]:
    """Every field in which the projection of a run differs from the fold of its journal."""
    problems = []
    for name in RunState.__dataclass_fields__:
        mine, theirs = getattr(folded, name), getattr(projected, name)
        if name == "attempts":
            mine, theirs = dict(mine), dict(theirs)
        if mine != theirs:
            problems.append(Problem(projected.run_id, name, mine, theirs))
    return problems
