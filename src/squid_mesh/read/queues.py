"""What a queue looks like to an operator: its limits and its unfinished attempts."""

from __future__ import annotations

from dataclasses import dataclass


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
    under a lease; ``scheduled``: due later (retry backoff, waits).

    Example:
        >>> QueueStats("default", visible=3, claimed=1, scheduled=0).visible
        3
    """

    queue: str
    visible: int
    claimed: int
    scheduled: int
