"""What queues look like to an operator: limits, unfinished attempts, workers, cron schedules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class QueueLimits:
    """A queue's limits, enforced across every worker process of the store.

    ``concurrency``: at most this many attempts of the queue claimed at once (an attempt whose
    lease expired no longer counts). ``rate_limit`` per ``per`` seconds: claims are taken from a
    token bucket of that size, refilled continuously. ``None``: no such limit.

    Example:
        >>> QueueLimits("payments", concurrency=5, rate_limit=10, per=1.0).concurrency
        5
    """

    queue: str
    concurrency: int | None = None
    rate_limit: int | None = None
    per: float | None = None


@dataclass(frozen=True)
class QueueStats:
    """Unfinished attempts of one queue at one moment.

    ``visible``: due and claimable now (expired leases included); ``claimed``: held by a worker
    under a lease; ``scheduled``: due later (retry backoff, waits); ``expired``: the part of
    ``visible`` whose lease ran out (its worker died or stalled; any worker may take it over).

    Example:
        >>> QueueStats("default", visible=3, claimed=1, scheduled=0).visible
        3
    """

    queue: str
    visible: int
    claimed: int
    scheduled: int
    expired: int = 0


@dataclass(frozen=True)
class WorkerSeen:
    """A worker seen through the claims it holds on one queue (an idle worker leaves no trace).

    ``claims``: attempts of the queue it holds now; ``lease_until``: the latest of their lease
    expiries (each heartbeat pushes it on); ``lapsed``: how many of them it let expire.

    Example:
        >>> [(w.owner, w.queue, w.claims) for w in mesh.workers()]  # doctest: +SKIP
        [('web-1:4711', 'default', 2)]
    """

    owner: str
    queue: str
    claims: int
    lease_until: datetime
    lapsed: int = 0


@dataclass(frozen=True)
class ScheduleView:
    """A cron trigger of a registered workflow and when it fires.

    ``last_slot``: the latest slot a ``cron_tick`` handled (``None`` before the first tick);
    ``next_fire``: the next slot a tick will start (in the past when a tick is overdue).

    Example:
        >>> [(s.workflow, s.expression, s.next_fire) for s in mesh.schedules()]  # doctest: +SKIP
    """

    workflow: str
    trigger: str
    expression: str
    timezone: str
    catch_up: str
    last_slot: datetime | None
    next_fire: datetime
