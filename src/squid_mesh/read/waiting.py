"""Waiting for a run to reach a status: the decisions, shared by the sync and async drivers.

``wait_flow`` is a generator that never does I/O: it yields how long to sleep before the next
look, is sent the snapshot each look found, and returns the snapshot that ends the wait (or
raises :class:`~squid_mesh.WaitTimeoutError`). ``Mesh.wait_run`` drives it with ``time.sleep``
and ``inspect_run``; ``mesh.aio.wait_run`` with ``asyncio.sleep`` and an awaited ``inspect_run``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable
from datetime import timedelta

from squid_mesh.engine.entropy import to_seconds
from squid_mesh.errors import InvalidOptionError, WaitTimeoutError
from squid_mesh.journal.fold import RunStatus
from squid_mesh.read.snapshot import RunSnapshot

# The first looks come quickly (a step often ends within milliseconds); later ones slow down
# to the poll interval, so a long wait costs a query every ``poll_interval`` seconds at most.
_FIRST_DELAY = 0.01

WaitFlow = Generator[float, RunSnapshot, RunSnapshot]


def awaited_statuses(until: Iterable[str] | str | None) -> frozenset[RunStatus]:
    """The statuses that end a wait: ``until``'s, or the terminal ones when it is ``None``."""
    if until is None:
        return frozenset(s for s in RunStatus if s.terminal)
    names = [until] if isinstance(until, str) else until
    try:
        wanted = frozenset(RunStatus(name) for name in names)
    except (TypeError, ValueError):
        known = ", ".join(s.value for s in RunStatus)
        raise InvalidOptionError("until", f"expected run statuses among: {known}") from None
    if not wanted:
        raise InvalidOptionError("until", "expected at least one run status")
    return wanted


def wait_flow(
    run_id: str,
    *,
    until: Iterable[str] | str | None,
    timeout: float | timedelta | None,
    poll_interval: float | timedelta,
    clock: Callable[[], float] = time.monotonic,
) -> WaitFlow:
    """Check the options, then yield sleeps and take snapshots until one has an awaited status.

    A run that finished in a status not awaited ends the wait too: the snapshot says how.

    The first yield is 0 (look at once); the options are checked before it, so a bad one is
    refused before anything is read.
    """
    wanted = awaited_statuses(until)
    limit = None if timeout is None else to_seconds("timeout", timeout)
    ceiling = to_seconds("poll_interval", poll_interval)
    deadline = None if limit is None else clock() + limit
    delay, following = 0.0, min(_FIRST_DELAY, ceiling)
    while True:
        snap = yield delay
        # A finished run never moves again: its end ends the wait, awaited or not.
        if snap.status in wanted or snap.status.terminal:
            return snap
        left = None if deadline is None else deadline - clock()
        if left is not None and left <= 0:
            assert limit is not None
            awaited = sorted(s.value for s in wanted)
            raise WaitTimeoutError(run_id, snap.status.value, limit, awaited)
        delay = following if left is None else min(following, left)
        following = min(following * 2, ceiling)
