"""The PostgreSQL store: psycopg 3 with a connection pool; claims with FOR UPDATE SKIP LOCKED."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from squid_mesh.errors import StoreError
from squid_mesh.journal.facts import Entry
from squid_mesh.journal.fold import RunState
from squid_mesh.store import rows
from squid_mesh.store.base import Conflict, ConstraintViolated
from squid_mesh.store.queries import load_queries
from squid_mesh.store.sql import SqlTx, apply_migrations

_REV = 12  # position of rev among the run columns of load_run_for_update


class PostgresTx(SqlTx):
    """Reads a run with its attempts, and writes a command, in one statement each (see queries.sql)."""

    def load_run(self, run_id: str, *, lock: bool) -> RunState | None:
        """See :meth:`squid_mesh.store.base.Tx.load_run`."""
        if not lock:
            found = self.query("load_run", {"run_id": run_id})
            if not found:
                return None
            *run, attempts = found[0]
            return rows.state_from_rows(run, json.loads(attempts))
        for _ in range(2):
            found = self.query("load_run_for_update", {"run_id": run_id})
            if not found:
                return None
            *run, attempts, snapshot_rev = found[0]
            if snapshot_rev == run[_REV]:
                return rows.state_from_rows(run, json.loads(attempts))
            # The row is newer than the attempts read with it (see the query): read again.
        raise StoreError(f"run {run_id}: its row and its attempts disagree while locked")

    def next_claimable_run(
        self, queue: str, wf_keys: Sequence[str], now: float
    ) -> tuple[RunState, str] | None:
        """See :meth:`squid_mesh.store.base.Tx.next_claimable_run`."""
        found = self.query("next_claimable_run", self._claim_params(queue, wf_keys, now))
        if not found:
            return None
        key, *run, attempts = found[0]
        return rows.state_from_rows(run, json.loads(attempts)), str(key)

    def insert_run(self, state: RunState, entries: Sequence[Entry]) -> bool:
        """See :meth:`squid_mesh.store.base.Tx.insert_run`."""
        params = rows.run_params(state)
        params["facts"] = _records(rows.fact_params(state.run_id, e) for e in entries)
        params["attempts"] = _records(
            rows.attempt_params(state, a) for a in state.attempts.values()
        )
        return bool(self.query("insert_run", params))

    def release_savepoint(self) -> bool:
        """See :meth:`squid_mesh.store.base.Tx.release_savepoint`."""
        if transaction_failed(cast(Any, self._cur).connection):
            # A statement of the step failed and the step went on: only a rollback to the
            # savepoint makes the transaction usable again.
            self.rollback_to_savepoint()
            return False
        return super().release_savepoint()

    def save(self, before: RunState, after: RunState, entries: Sequence[Entry]) -> None:
        """See :meth:`squid_mesh.store.base.Tx.save`."""
        if not entries or entries[0].seq != before.rev + 1:
            raise ValueError("save() appends at least one fact, starting at rev + 1")
        params = rows.run_update_params(after, before.rev)
        params["facts"] = _records(rows.fact_params(after.run_id, e) for e in entries)
        params["attempts"] = _records(
            rows.attempt_params(after, a) for a in rows.changed_attempts(before, after)
        )
        if self.query("save_run", params)[0][0] != 1:
            raise Conflict(after.run_id)  # the revision moved on: nothing was written


def transaction_failed(connection: Any) -> bool:
    """Whether a psycopg connection's transaction is in error (only a rollback helps now)."""
    from psycopg.pq import TransactionStatus

    return bool(connection.info.transaction_status == TransactionStatus.INERROR)


def _records(params: Iterable[dict[str, Any]]) -> str:
    # The run id is a statement parameter of its own; the records carry the rest.
    return json.dumps(
        [{k: v for k, v in p.items() if k != "run_id"} for p in params],
        separators=(",", ":"),
        allow_nan=False,
    )


_PLANNER = "-c enable_sort=off -c enable_bitmapscan=off"


def _options(conninfo: str) -> str:
    """Our planner settings after the URL's own ``options`` (``-csearch_path=...``, say).

    Passing ``options`` as a connection argument replaces the URL's (and ``PGOPTIONS``): those
    are kept instead.
    """
    from psycopg.conninfo import conninfo_to_dict

    try:
        given = str(conninfo_to_dict(conninfo).get("options") or "")
    except Exception:  # an unparseable URL fails at connect, with the store's own message
        given = ""
    # libpq reads PGOPTIONS only when no options are passed: keep it too.
    given = given or os.environ.get("PGOPTIONS", "")
    return f"{given} {_PLANNER}".strip()


def translated_error(psycopg: Any, exc: Exception, where: str) -> Exception:
    """A psycopg error as the engine knows it: :class:`Conflict` for a lost race.

    A stale revision (the journal's primary key), a serialization failure or a deadlock is a
    race the engine retries; anything else is a :class:`StoreError` that names ``where``.
    """
    errors = psycopg.errors
    if isinstance(exc, errors.UniqueViolation) and exc.diag.table_name == "squid_mesh_facts":
        return Conflict(str(exc))  # a stale revision: see SqlTx
    if isinstance(exc, (errors.SerializationFailure, errors.DeadlockDetected)):
        return Conflict(str(exc))
    if isinstance(exc, psycopg.IntegrityError):
        return ConstraintViolated(f"{where}: {type(exc).__name__}: {exc}")
    return StoreError(f"{where}: {type(exc).__name__}: {exc}")


def _safe_url(conninfo: str) -> str:
    """The URL with any password removed, for messages."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(conninfo)
    except Exception:
        return "postgresql://<unparseable url>"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = parts.get("host") or "localhost"
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{host}{port}/{parts.get('dbname') or ''}"


class PostgresStore:
    """A store in a PostgreSQL database, shared by any number of worker processes.

    Transactions run at READ COMMITTED; the run row is the lock that guards a run and its attempts
    (see ``postgres/queries.sql``). Serialization failures and deadlocks surface as
    :class:`~squid_mesh.store.base.Conflict`, which the engine retries.
    """

    backend = "postgres"
    borrows_connections = False
    # Recording decides on the claim's cached run, and its save goes out as one autocommit
    # statement; a changed run is refused by the revision guard and decided again under its lock.
    decides_on_cached_state = True

    def __init__(self, conninfo: str, *, max_connections: int = 4) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise StoreError(
                "the PostgreSQL store needs psycopg: pip install 'squid-mesh[postgres]'"
            ) from None
        self._psycopg = psycopg
        self.max_connections: int | None = max_connections
        self._conninfo = conninfo
        self._url = _safe_url(conninfo)
        self._queries = load_queries("postgres")
        try:
            self._pool: Any = ConnectionPool(
                conninfo,
                min_size=1,
                max_size=max_connections,
                kwargs={
                    "autocommit": True,
                    "prepare_threshold": 0,
                    # Every query of queries.sql walks an index in order. A queue table's
                    # statistics are stale by nature (it fills and empties faster than autovacuum
                    # analyzes it), and with "few rows" estimates the planner would rather sort
                    # every due attempt to pick one: 19 ms instead of 0.1 ms with 10,000 queued.
                    "options": _options(conninfo),
                },
                open=True,
                timeout=30.0,
            )
            self._pool.wait(timeout=30.0)
        except Exception as exc:
            raise StoreError(f"cannot connect to {self._url}: {type(exc).__name__}") from None

    def describe(self) -> str:
        """The store's URL without its password."""
        return self._url

    @contextmanager
    def transaction(self) -> Iterator[SqlTx]:
        """One READ COMMITTED transaction on a pooled connection."""
        with self._translated(), self._transaction(None) as tx:
            yield tx

    @contextmanager
    def read_transaction(self) -> Iterator[SqlTx]:
        """A REPEATABLE READ, READ ONLY transaction: every read sees the same snapshot."""
        setting = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"
        with self._translated(), self._transaction(setting) as tx:
            yield tx

    @contextmanager
    def single_write(self) -> Iterator[SqlTx]:
        """No BEGIN/COMMIT: each statement is its own transaction, a write one round trip."""
        with self._translated(), self._pool.connection() as conn:
            yield PostgresTx(conn.cursor, self._queries, wf_keys_as_json=False)

    def might_have_due(self, queue: str, wf_keys: Sequence[str], now: float) -> bool:
        """One autocommit SELECT that locks nothing, so idle polling stays cheap."""
        with self._translated(), self._pool.connection() as conn:
            tx = PostgresTx(conn.cursor, self._queries, wf_keys_as_json=False)
            return tx.has_due(queue, wf_keys, now)

    def next_due(self, queue: str, wf_keys: Sequence[str]) -> float | None:
        """One autocommit SELECT that locks nothing."""
        with self._translated(), self._pool.connection() as conn:
            tx = PostgresTx(conn.cursor, self._queries, wf_keys_as_json=False)
            return tx.next_due(queue, wf_keys)

    def listen(self) -> PostgresListener:
        """A connection of its own, outside the pool, that LISTENs on channel ``squid_mesh``."""
        psycopg, conninfo = self._psycopg, self._conninfo

        def connect() -> Any:
            return psycopg.connect(conninfo, autocommit=True, connect_timeout=5)

        return PostgresListener(psycopg, connect, self._url)

    @contextmanager
    def _transaction(self, setting: str | None) -> Iterator[SqlTx]:
        with self._pool.connection() as conn, conn.transaction():
            tx = PostgresTx(conn.cursor, self._queries, wf_keys_as_json=False)
            if setting is not None:
                tx.run_statement(setting)
            yield tx

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except self._psycopg.Error as exc:
            error = translated_error(self._psycopg, exc, self._url)
            raise error from (None if isinstance(error, Conflict) else exc)

    def migrate(self) -> list[str]:
        """Apply pending migrations under an advisory lock (concurrent migrators wait their turn)."""
        with self.transaction() as tx:
            return apply_migrations(tx, "postgres")

    def release_thread(self) -> None:
        """Nothing: connections are the store's, not the thread's."""

    def close(self) -> None:
        """Close the pool."""
        self._pool.close()


class PostgresListener:
    """LISTEN squid_mesh on a dedicated autocommit connection (see save_run's pg_notify).

    Used by one thread (the worker's listener). A broken connection makes :meth:`wait` return
    ``None``; :meth:`open` listens again, and the caller should then look at its queues once, for
    what was announced while nobody listened.
    """

    def __init__(self, psycopg: Any, connect: Callable[[], Any], url: str) -> None:
        self._psycopg = psycopg
        self._connect = connect
        self._url = url
        self._conn: Any = None

    def open(self) -> bool:
        """Connect and LISTEN (if not already); whether it worked."""
        if self._conn is not None and not self._conn.closed:
            return True
        try:
            self._conn = self._connect()
            self._conn.execute("LISTEN squid_mesh")
        except self._psycopg.Error:
            self.close()
            return False
        return True

    def wait(self, timeout: float) -> set[str] | None:
        """The queues announced within ``timeout`` seconds (empty if none); ``None`` when broken."""
        if not self.open():
            return None
        try:
            queues = {n.payload for n in self._conn.notifies(timeout=timeout, stop_after=1)}
            # Take whatever else already arrived, without waiting.
            queues.update(n.payload for n in self._conn.notifies(timeout=0))
            return queues
        except self._psycopg.Error:
            self.close()
            return None

    def close(self) -> None:
        """Close the connection (idempotent)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(self._psycopg.Error):
                conn.close()
