"""Listing runs: filters checked up front, summaries without payloads, opaque stable cursors."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from squid_mesh.engine.entropy import to_epoch
from squid_mesh.engine.options import check_queue, check_text
from squid_mesh.errors import InvalidOptionError
from squid_mesh.journal.fold import RunStatus
from squid_mesh.read.snapshot import to_datetime
from squid_mesh.store.base import RunFilter, RunRow

MAX_LIMIT = 1000


@dataclass(frozen=True)
class RunSummary:
    """One run in a listing.

    Deliberately without payload, context, error or idempotency key: listings are shown to
    operators and shipped to consoles, and those may hold personal data.

    Example:
        >>> [s.id for s in mesh.list_runs(status="failed")]  # doctest: +SKIP
        ['0193f0c2-...']
    """

    id: str
    workflow: str
    version: str
    status: RunStatus
    queue: str
    trigger: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class RunPage:
    """A page of :class:`RunSummary`, newest first; ``next_cursor`` is ``None`` on the last page.

    Iterating a page iterates its runs.

    Example:
        >>> page = mesh.list_runs(workflow="checkout", limit=20)  # doctest: +SKIP
        >>> while page.next_cursor:  # doctest: +SKIP
        ...     page = mesh.list_runs(workflow="checkout", limit=20, cursor=page.next_cursor)
    """

    runs: tuple[RunSummary, ...]
    next_cursor: str | None

    def __iter__(self) -> Iterator[RunSummary]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)


def run_filter(
    *,
    workflow: object = None,
    status: object = None,
    queue: object = None,
    started_after: object = None,
) -> RunFilter:
    """Check listing filters; raise :class:`InvalidOptionError` naming the first bad one."""
    if status is not None:
        statuses = [s.value for s in RunStatus]
        if not isinstance(status, str) or status not in statuses:
            raise InvalidOptionError("status", f"expected one of {statuses}, got {status!r}")
    return RunFilter(
        workflow=None if workflow is None else check_text("workflow", workflow),
        status=None if status is None else RunStatus(status).value,
        queue=None if queue is None else check_queue(queue),
        started_after=None if started_after is None else to_epoch("started_after", started_after),
    )


def check_limit(limit: object) -> int:
    """A page size between 1 and 1,000."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidOptionError("limit", f"expected a whole number from 1 to {MAX_LIMIT}")
    return limit


def encode_cursor(row: RunRow) -> str:
    """The cursor that continues a listing after ``row``."""
    raw = json.dumps([row.created_at, row.run_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: object) -> tuple[float, str]:
    """The ``(created_at, run_id)`` a cursor names; a cursor this module did not make is refused."""
    refused = InvalidOptionError("cursor", "not a cursor returned by list_runs")
    if not isinstance(cursor, str) or not cursor or len(cursor) > 400:
        raise refused
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, run_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise refused from None
    if (
        isinstance(at, bool)
        or not isinstance(at, int | float)
        or not math.isfinite(at)
        or not isinstance(run_id, str)
        or not run_id
    ):
        raise refused
    return float(at), run_id


def summary(row: RunRow) -> RunSummary:
    """The public summary of a listed row."""
    return RunSummary(
        id=row.run_id,
        workflow=row.workflow,
        version=row.version,
        status=RunStatus(row.status),
        queue=row.queue,
        trigger=row.trigger,
        created_at=to_datetime(row.created_at),  # type: ignore[arg-type]
        updated_at=to_datetime(row.updated_at),  # type: ignore[arg-type]
    )
