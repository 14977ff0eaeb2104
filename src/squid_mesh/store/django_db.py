"""The Django store: squid-mesh's tables in a Django database, on Django's own connections.

``open_store("django://default")`` gives a store that runs every statement on the calling
thread's Django connection for that alias (SQLite or PostgreSQL with psycopg 3), with the same
query catalogs as the plain stores. Write transactions are Django ``atomic`` blocks, so:

* a ``transactional=True`` step's ORM writes join the transaction that records the step: both
  commit, or neither does;
* ``mesh.start()`` inside the host's own ``transaction.atomic()`` becomes a savepoint of it: the
  run exists only if the host's transaction commits.

Django owns the connections (their settings, their lifetime, their pool); this store only
borrows the current thread's one.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from squid_mesh.errors import InvalidOptionError, StoreError
from squid_mesh.store.base import Conflict, SnapshotConflict
from squid_mesh.store.queries import load_queries
from squid_mesh.store.sql import SqlTx, apply_migrations

_VENDORS = {"sqlite": "sqlite", "postgresql": "postgres"}


class _RolledBack(Exception):
    """Handed to a savepoint's ``atomic`` block to make it roll back."""


class _AtomicSavepoints:
    """A transactional step's savepoint as a nested Django ``atomic`` block.

    Django's own bookkeeping (``needs_rollback``, ``on_commit`` callbacks of the step) stays
    right only when the savepoint is one Django knows about.
    """

    _store: DjangoStore
    _block: Any = None

    def savepoint(self) -> None:
        """See :meth:`squid_mesh.store.base.Tx.savepoint`."""
        self._block = self._store.atomic()
        self._block.__enter__()
        if self._store.backend == "postgres":
            try:
                # The step's own queries plan with the host's settings, not squid-mesh's.
                cast(SqlTx, self).command("planner_for_host")
            except BaseException as exc:
                self.rollback_to_savepoint(exc)
                raise

    def release_savepoint(self) -> bool:
        """See :meth:`squid_mesh.store.base.Tx.release_savepoint`."""
        conn = self._store.connection()
        if conn.needs_rollback or self._store.transaction_failed(conn):
            self.rollback_to_savepoint()
            return False
        block, self._block = self._block, None
        block.__exit__(None, None, None)
        return True

    def rollback_to_savepoint(self, cause: BaseException | None = None) -> None:
        """See :meth:`squid_mesh.store.base.Tx.rollback_to_savepoint`."""
        block, self._block = self._block, None
        if block is not None:  # (closed already when the step's savepoint could not be set up)
            exc = cause or _RolledBack()
            block.__exit__(type(exc), exc, None)


class _SqliteTx(_AtomicSavepoints, SqlTx):
    pass


# The queries that walk an index in order and whose plans a queue table's stale statistics can
# spoil (see PostgresStore): squid-mesh's planner settings are set before the first of them, in
# transactions squid-mesh owns; the others (load a run, save it) skip that round trip.
_PLANNED = frozenset(
    {
        "next_claimable_run",
        "probe_due",
        "next_due",
        "list_runs",
        "run_counts",
        "run_ids_page",
        "purgeable_runs",
        "queue_counts",
        "live_claims",
    }
)


def _postgres_tx() -> type[SqlTx]:
    from squid_mesh.store.postgres import PostgresTx

    class _PostgresTx(_AtomicSavepoints, PostgresTx):
        may_plan = False  # squid-mesh owns the transaction: SET LOCAL is its own business
        _planned = False

        def query(self, name: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
            self._plan(name)
            return super().query(name, params)

        def list_runs(self, where: Any, before: Any, limit: int) -> Any:
            self._plan("list_runs")
            return super().list_runs(where, before, limit)

        def run_counts(self, where: Any) -> dict[str, int]:
            self._plan("run_counts")
            return super().run_counts(where)

        def savepoint(self) -> None:
            super().savepoint()
            self._planned = False  # the step's queries put the host's settings back

        def _plan(self, name: str) -> None:
            if self.may_plan and not self._planned and name in _PLANNED:
                self._planned = True
                self.command("planner_for_squid_mesh")

    return _PostgresTx


def setup_django(url: str) -> None:
    """Make Django usable here: settings found (``DJANGO_SETTINGS_MODULE``), apps loaded."""
    try:
        import django
        from django.apps import apps
        from django.conf import settings
    except ImportError:
        raise StoreError("django:// needs Django: pip install 'squid-mesh[django]'") from None
    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        raise StoreError(
            f"{url}: Django settings are not configured "
            "(set DJANGO_SETTINGS_MODULE, or run under manage.py)"
        )
    if not apps.ready and not apps.loading:
        django.setup()


class DjangoStore:
    """A store on the Django database ``alias`` (see the module's docstring).

    SQLite needs ``DATABASES[alias]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"`` (Django >= 5.1)
    so that a write transaction takes the write lock at its start, as squid-mesh's own SQLite
    store does; PostgreSQL needs psycopg 3.
    """

    borrows_connections = True
    max_connections: int | None = None  # Django's connections: one per thread
    # As the plain stores: a write is guarded by the run's revision whatever was read before.
    decides_on_cached_state = True

    def __init__(self, alias: str) -> None:
        setup_django(f"django://{alias}")
        from django.db import connections, transaction

        if alias not in connections.settings:
            known = ", ".join(sorted(connections.settings)) or "none"
            raise InvalidOptionError(
                "url", f"django://{alias}: no such alias in settings.DATABASES (it has: {known})"
            )
        self._alias = alias
        self._connections = connections
        self._transaction = transaction
        conn = connections[alias]
        vendor = _VENDORS.get(conn.vendor)
        if vendor is None:
            raise InvalidOptionError(
                "url",
                f"django://{alias}: a {conn.vendor} database; squid-mesh needs SQLite or "
                "PostgreSQL",
            )
        self.backend = vendor
        if conn.settings_dict.get("AUTOCOMMIT") is False:
            raise InvalidOptionError(
                f"DATABASES[{alias!r}]['AUTOCOMMIT']",
                "is False; squid-mesh needs Django's default (True): every write would join a "
                "transaction that nothing commits",
            )
        options = conn.settings_dict.get("OPTIONS") or {}
        if vendor == "sqlite":
            mode = str(options.get("transaction_mode") or "DEFERRED").upper()
            if mode != "IMMEDIATE":
                raise InvalidOptionError(
                    f"DATABASES[{alias!r}]['OPTIONS']['transaction_mode']",
                    f"is {mode}; squid-mesh on SQLite needs 'IMMEDIATE' (Django >= 5.1), or a "
                    "write that follows a read may fail at once with 'database is locked'",
                )
            self._tx_class: type[SqlTx] = _SqliteTx
            self._db_errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
        else:
            from django.db.backends.postgresql.psycopg_any import is_psycopg3

            if not is_psycopg3:
                raise InvalidOptionError(
                    f"DATABASES[{alias!r}]['ENGINE']",
                    "runs on psycopg2; squid-mesh needs psycopg 3 (pip install 'psycopg[binary]')",
                )
            import psycopg

            self._psycopg = psycopg
            self._tx_class = _postgres_tx()
            self._db_errors = (psycopg.Error,)
        self._queries = load_queries(vendor)
        name = conn.settings_dict.get("NAME") or ""
        self._described = f"django://{alias} ({conn.vendor} {name})"

    def describe(self) -> str:
        """The alias, the vendor and the database name (never a password)."""
        return self._described

    def connection(self) -> Any:
        """The calling thread's Django connection for the alias."""
        return self._connections[self._alias]

    def transaction_failed(self, conn: Any) -> bool:
        """Whether ``conn``'s transaction is in error (PostgreSQL, after a failed statement)."""
        if self.backend != "postgres":
            return False  # a failed SQLite statement leaves the transaction usable
        from squid_mesh.store.postgres import transaction_failed

        return transaction_failed(conn.connection)

    def atomic(self) -> Any:
        """A Django ``atomic`` block on the alias."""
        return self._transaction.atomic(using=self._alias)

    @contextmanager
    def transaction(self) -> Iterator[SqlTx]:
        """An ``atomic`` block: a transaction, or a savepoint inside the host's transaction."""
        conn = self._usable_connection()
        outer = not self._in_host_transaction(conn)
        if self.backend == "sqlite" and not conn.in_atomic_block and not conn.get_autocommit():
            # Django's savepoint would be SQLite's outermost one, whose release commits at once.
            raise StoreError(
                f"{self.describe()}: cannot write inside a transaction begun with "
                "transaction.set_autocommit(False) on SQLite; use transaction.atomic()"
            )
        committed: list[bool] = []
        try:
            with self._translated(conn, committed), self.atomic():
                if outer:
                    # The first of the commit's callbacks: whatever fails after it is a host's
                    # callback (a step's on_commit), after the transaction committed.
                    self._transaction.on_commit(lambda: committed.append(True), using=self._alias)
                tx = self._tx(conn, owned=outer)
                yield tx
                if conn.needs_rollback:
                    # Django would roll back on leaving the block, silently: say so instead.
                    raise StoreError(
                        f"{self.describe()}: the transaction was marked for rollback by the host"
                    )
        except Conflict:
            if outer or not self._snapshot_isolated(conn):
                raise  # the engine reloads and retries: a new statement sees the winner's write
            # The host's REPEATABLE READ or SERIALIZABLE snapshot can never see the winner's
            # write: a retry inside it would lose the same race every time.
            raise SnapshotConflict(
                "another writer changed the run after the host's transaction began, and its "
                "snapshot isolation cannot see the change: retry the host's transaction"
            ) from None

    @contextmanager
    def single_write(self) -> Iterator[SqlTx]:
        """PostgreSQL, outside the host's transaction: the one write is one autocommit statement.

        As the plain PostgreSQL store does, saving the BEGIN and COMMIT round trips; on SQLite,
        or inside the host's transaction, a transaction as any other.
        """
        conn = self._usable_connection()
        if self.backend != "postgres" or self._in_host_transaction(conn):
            with self.transaction() as tx:
                yield tx
            return
        with self._translated(conn):
            conn.ensure_connection()
            yield self._tx(conn)

    @contextmanager
    def read_transaction(self) -> Iterator[SqlTx]:
        """One snapshot for every read; inside the host's transaction, what the host sees."""
        conn = self._usable_connection()
        with self._translated(conn):
            if self._in_host_transaction(conn):
                yield self._tx(conn)
                return
            conn.ensure_connection()
            # Django thinks the connection is in autocommit mode, and it is: this transaction is
            # begun and ended here, and nothing of Django's runs inside it.
            tx = self._tx(conn, owned=True)
            tx.command("begin_snapshot")
            try:
                yield tx
            except BaseException:
                tx.command("abort_snapshot")
                raise
            tx.command("end_snapshot")

    def might_have_due(self, queue: str, wf_keys: Sequence[str], now: float) -> bool:
        """A look in a read transaction: it takes no write lock."""
        with self.read_transaction() as tx:
            return tx.has_due(queue, wf_keys, now)

    def next_due(self, queue: str, wf_keys: Sequence[str]) -> float | None:
        """A read transaction: idle workers never take a write lock."""
        with self.read_transaction() as tx:
            return tx.next_due(queue, wf_keys)

    def listen(self) -> Any:
        """PostgreSQL: a LISTEN connection of its own, made from the alias's settings."""
        if self.backend != "postgres":
            return None
        from squid_mesh.store.postgres import PostgresListener

        params = dict(self.connection().get_connection_params())
        params.pop("cursor_factory", None)
        psycopg = self._psycopg

        def connect() -> Any:
            return psycopg.connect(**{**params, "autocommit": True, "connect_timeout": 5})

        return PostgresListener(psycopg, connect, self.describe())

    def migrate(self) -> list[str]:
        """Apply pending migrations in one transaction (as the plain stores do)."""
        with self.transaction() as tx:
            return apply_migrations(tx, self.backend)

    def close(self) -> None:
        """Nothing to release: Django owns the connections."""

    def release_thread(self) -> None:
        """Close the calling thread's connections (the thread is ending: nobody else can).

        Every alias's, not only this store's: the thread's steps may have used others. Whatever
        they still had open is rolled back by the database.
        """
        self._connections.close_all()

    def _tx(self, conn: Any, *, owned: bool = False) -> SqlTx:
        tx = self._tx_class(
            conn.connection.cursor, self._queries, wf_keys_as_json=self.backend == "sqlite"
        )
        tx._store = self  # type: ignore[attr-defined]
        tx.may_plan = owned  # type: ignore[attr-defined]
        return tx

    def _snapshot_isolated(self, conn: Any) -> bool:
        """Whether the connection's transactions see one snapshot (above READ COMMITTED)."""
        if self.backend != "postgres":
            return False  # SQLite: the host's transaction holds the write lock; no one races it
        level = getattr(conn, "isolation_level", None)
        return level is not None and level > self._psycopg.IsolationLevel.READ_COMMITTED

    @staticmethod
    def _in_host_transaction(conn: Any) -> bool:
        # An atomic block, or the host's own transaction.set_autocommit(False).
        return bool(conn.in_atomic_block or not conn.get_autocommit())

    def _usable_connection(self) -> Any:
        conn = self.connection()
        if conn.in_atomic_block and conn.needs_rollback:
            # Django refuses queries here; squid-mesh's own statements bypass its cursor, so it
            # says the same (on PostgreSQL the server would refuse them, less clearly).
            raise StoreError(
                f"{self.describe()}: the host's transaction is marked for rollback (a database "
                "error inside it was caught outside an atomic block of its own); nothing can be "
                "written or read in it until its atomic block ends"
            )
        if self._in_host_transaction(conn):
            return conn
        if conn.errors_occurred:
            # As Django does between requests: a connection that failed is checked, and
            # replaced when the server went away (a restart, a failover).
            conn.close_if_unusable_or_obsolete()
        # With CONN_HEALTH_CHECKS, Django checks a connection once per request, when its cursor
        # is first used; squid-mesh's statements bypass that cursor, so it asks here (a no-op
        # once checked, until the next request begins).
        conn.close_if_health_check_failed()
        return conn

    @contextmanager
    def _translated(self, conn: Any, committed: list[bool] | None = None) -> Iterator[None]:
        """Driver and Django errors as the engine knows them.

        ``committed`` is set once the transaction has committed: an error after that comes from
        a host's ``on_commit`` callback, and goes out as it is, not as the database's refusal.
        """
        from django.db import Error as DjangoError

        try:
            yield
        except Conflict:
            raise
        except (*self._db_errors, DjangoError) as exc:
            if committed:
                raise
            # Django wraps the driver's errors (at commit, say): a lost race inside is a Conflict.
            cause = exc if isinstance(exc, self._db_errors) else exc.__cause__
            error = (
                self._translate(cause)
                if isinstance(cause, self._db_errors)
                else StoreError(f"{self.describe()}: {type(exc).__name__}: {exc}")
            )
            if not isinstance(error, Conflict):
                conn.errors_occurred = True
            raise error from exc

    def _translate(self, exc: BaseException) -> Exception:
        if self.backend == "sqlite":
            from squid_mesh.store.sqlite import translated_error

            assert isinstance(exc, sqlite3.Error)
            return translated_error(exc, self.describe())
        from squid_mesh.store.postgres import translated_error as translated_pg_error

        assert isinstance(exc, Exception)
        return translated_pg_error(self._psycopg, exc, self.describe())
