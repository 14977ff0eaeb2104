"""The Store seam: what the engine needs from a database, and nothing of any driver."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from squid_mesh.errors import StoreError
from squid_mesh.journal.facts import Entry
from squid_mesh.journal.fold import RunState


class Conflict(Exception):
    """A concurrent writer won the race; the engine reloads, decides again and retries."""


class SnapshotConflict(Conflict):
    """A race lost inside a host's transaction whose snapshot can never see the winner's write.

    A REPEATABLE READ or SERIALIZABLE transaction of the host (Django's): reloading inside it
    finds the same stale run, so the engine does not retry it; the host must retry its
    transaction. A record's optimistic save still falls back to its locked path on it (the
    change may be the host transaction's own, a heartbeat's, which the locked path sees).
    """


class ConstraintViolated(StoreError):
    """The database refused a write for a constraint of the host's tables.

    squid-mesh's own statements break none, so this comes from a transactional step's writes,
    typically when the transaction commits and checks a deferred foreign key (Django declares
    its foreign keys ``DEFERRABLE INITIALLY DEFERRED``): the attempt fails, it is not retried
    as a race.
    """


@dataclass(frozen=True)
class RunFilter:
    """Which runs a listing or a count covers; ``None`` means any."""

    workflow: str | None = None
    status: str | None = None
    queue: str | None = None
    started_after: float | None = None


@dataclass(frozen=True)
class RunRow:
    """One run as a listing shows it: no payload, context, error or key."""

    run_id: str
    workflow: str
    version: str
    status: str
    queue: str
    trigger: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class ChildRow:
    """A child run as its parent sees it."""

    run_id: str
    workflow: str
    status: str
    child_key: str
    context: dict[str, Any]
    error: dict[str, Any] | None


class QueueLimitRow(NamedTuple):
    """A queue's limits as stored (``None``: no such limit)."""

    queue: str
    concurrency: int | None
    rate_limit: int | None
    rate_period: float | None


class Listener(Protocol):
    """A subscription to wake-ups: queues that gained a claimable attempt in another process."""

    def open(self) -> bool:
        """Start listening (again, after a failure); whether it worked."""

    def wait(self, timeout: float) -> set[str] | None:
        """Block up to ``timeout`` seconds; the queues announced, or ``None`` when it broke."""

    def close(self) -> None:
        """Stop listening."""


class Tx(Protocol):
    """One database transaction. Every method runs inside it; nothing commits until it ends."""

    def load_run(self, run_id: str, *, lock: bool) -> RunState | None:
        """The run's projection (run row and its attempts); ``lock`` holds it until commit."""

    def run_id_for_key(self, workflow: str, idempotency_key: str) -> str | None:
        """The run that an idempotency key names, if any."""

    def has_due(self, queue: str, wf_keys: Sequence[str], now: float) -> bool:
        """Whether an attempt of ``queue`` is due (a plain read that locks nothing)."""

    def next_due(self, queue: str, wf_keys: Sequence[str]) -> float | None:
        """When the next attempt of ``queue`` comes due (may be in the past), or ``None``."""

    def queue_limits(self) -> list[QueueLimitRow]:
        """Every queue's stored limits."""

    def lock_queue(self, queue: str) -> tuple[Any, ...] | None:
        """Lock a limited queue's row: (concurrency, rate_limit, rate_period, tokens, refilled_at)."""

    def peek_queue(self, queue: str) -> tuple[Any, ...] | None:
        """:meth:`lock_queue`'s row without the lock (a read for ``explain_run``)."""

    def count_claimed(self, queue: str, now: float) -> int:
        """Attempts of ``queue`` claimed with a lease that still holds at ``now``."""

    def take_token(self, queue: str, tokens: float, now: float) -> None:
        """Store a rate-limited queue's bucket after a claim took one token."""

    def put_queue_limits(self, limit: QueueLimitRow, now: float) -> None:
        """Set (or, with no limit at all, remove) a queue's limits."""

    def queue_counts(self, now: float) -> dict[str, tuple[int, int, int, int]]:
        """``queue -> (visible, claimed, scheduled, expired)`` unfinished attempts."""

    def live_claims(self, now: float) -> list[tuple[str, str, int, float, int]]:
        """``(owner, queue, claims held, latest lease expiry, claims whose lease ran out)``."""

    def schedule_slots(self) -> dict[tuple[str, str], float]:
        """``(workflow, trigger) -> latest slot handled`` for every cron trigger ever ticked."""

    def next_claimable_run(
        self, queue: str, wf_keys: Sequence[str], now: float
    ) -> tuple[RunState, str] | None:
        """The next due attempt whose run no other transaction holds, or ``None``.

        Returns the run (loaded and locked until commit) and the attempt's key.
        """

    def insert_run(self, state: RunState, entries: Sequence[Entry]) -> bool:
        """Write a new run; ``False`` (and nothing written) when its id or key is taken."""

    def save(self, before: RunState, after: RunState, entries: Sequence[Entry]) -> None:
        """Append ``entries`` and move the projection from ``before`` to ``after``.

        When the run's revision is no longer ``before.rev``, the transaction fails (at once or at
        commit) with :class:`Conflict`.
        """

    def load_entries(self, run_id: str) -> list[Entry]:
        """The run's whole journal, in order."""

    def run_ids_page(self, after: str, limit: int) -> list[str]:
        """Run ids in id order after ``after`` (for whole-store scans such as verify)."""

    def list_runs(
        self, where: RunFilter, before: tuple[float, str] | None, limit: int
    ) -> list[RunRow]:
        """Up to ``limit`` runs newest first (by start time, then id), after the ``before`` key."""

    def host_cursor(self) -> Any:
        """The transaction's DB-API cursor, handed to a transactional step as ``ctx.db``."""

    def savepoint(self) -> None:
        """Mark a savepoint inside the transaction.

        ``release_savepoint`` keeps what followed it; ``rollback_to_savepoint`` undoes it and
        the transaction goes on.
        """

    def release_savepoint(self) -> bool:
        """Keep the writes made since :meth:`savepoint`; whether they were kept.

        ``False`` when the host's database layer had marked them for rollback (Django does so
        when a database error inside the step was caught outside an ``atomic`` block of its
        own): they were undone instead, and the transaction goes on.
        """

    def rollback_to_savepoint(self) -> None:
        """Undo the writes made since :meth:`savepoint`."""

    def register_definition(
        self, workflow: str, version: str, fingerprint: str, now: float
    ) -> str | None:
        """Record a definition's fingerprint unless one is recorded; return the recorded one.

        ``None`` when the definitions table does not exist yet (not migrated).
        """

    def last_slot(self, workflow: str, trigger: str, now: float) -> float:
        """The latest slot handled for a cron trigger (``now`` for a trigger seen first now)."""

    def advance_schedule(self, workflow: str, trigger: str, slot: float) -> None:
        """Record ``slot`` as handled, unless a later one already is."""

    def count_repeat(self, run_id: str, command: str, key: str, now: float) -> None:
        """Count a command repeated with a key the run already has (it changed nothing)."""

    def commands(self, run_id: str) -> tuple[list[Entry], dict[tuple[str, str], int]]:
        """The run's receipts in journal order, and the repeats per (command, key)."""

    def purge(self, before: float, limit: int) -> list[str]:
        """Delete up to ``limit`` finished runs last changed before ``before``; return their ids."""

    def replays(self, run_id: str) -> list[str]:
        """The ids of the runs that replay ``run_id``, oldest first."""

    def children(self, parent_id: str) -> list[ChildRow]:
        """The runs started by ``parent_id``'s steps, oldest first."""

    def run_counts(self, where: RunFilter) -> dict[str, int]:
        """How many runs there are per status (statuses with none are left out)."""

    def query(self, name: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a named query of the catalog and fetch its rows (store-level helpers)."""


class Store(Protocol):
    """A database that holds journals and projections."""

    backend: str
    borrows_connections: bool
    """Whether the store runs on the host's own connections (Django's), one per thread."""
    max_connections: int | None
    """The connection pool's size, or ``None`` where threads never wait for a connection."""
    decides_on_cached_state: bool
    """Whether recording a step may decide on the run as its claim left it, unread (see core)."""

    def transaction(self) -> AbstractContextManager[Tx]:
        """A write transaction (retried by the engine on :class:`Conflict`)."""

    def single_write(self) -> AbstractContextManager[Tx]:
        """For exactly one write call (``save`` or ``insert_run``), each atomic on its own.

        Reads made in it need not share a snapshot with the write. A server store may run each
        statement as its own transaction here, saving the BEGIN and COMMIT round trips.
        """

    def read_transaction(self) -> AbstractContextManager[Tx]:
        """A read-only transaction whose reads all see one snapshot (and block no writer)."""

    def might_have_due(self, queue: str, wf_keys: Sequence[str], now: float) -> bool:
        """A cheap check, taking no write lock, that may say False when no attempt is due.

        ``True`` only means "try to claim": the claim itself decides.
        """

    def next_due(self, queue: str, wf_keys: Sequence[str]) -> float | None:
        """:meth:`Tx.next_due` as one plain read outside any write transaction."""

    def listen(self) -> Listener | None:
        """A wake-up subscription (PostgreSQL LISTEN), or ``None`` where the store has none."""

    def migrate(self) -> list[str]:
        """Apply pending migrations; return the versions applied now."""

    def close(self) -> None:
        """Release connections."""

    def release_thread(self) -> None:
        """Release what the calling thread holds, as the thread ends (a Worker's threads do)."""

    def describe(self) -> str:
        """The store's URL without any password, for messages."""


def iter_pages(store: Store, page: int = 500) -> Iterator[list[str]]:
    """Every run id, ``page`` at a time, each page read in its own short transaction."""
    after = ""
    while True:
        with store.read_transaction() as tx:
            ids = tx.run_ids_page(after, page)
        if not ids:
            return
        yield ids
        after = ids[-1]
