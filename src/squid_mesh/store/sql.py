"""The transaction logic shared by the SQL backends; each backend brings its own query catalog."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from squid_mesh.journal.facts import Entry
from squid_mesh.journal.fold import RunState
from squid_mesh.store import rows
from squid_mesh.store.base import ChildRow, QueueLimitRow, RunFilter, RunRow
from squid_mesh.store.queries import load_migrations

# The catalog fragment that adds each RunFilter field to a listing's WHERE clause.
_FILTERS = {
    "workflow": "filter_workflow",
    "status": "filter_status",
    "queue": "filter_queue",
    "started_after": "filter_started_after",
}


class Cursor(Protocol):
    """The part of a DB-API cursor the stores use."""

    def execute(self, sql: str, params: Any = ..., /) -> Any:
        """Run one statement."""

    def executemany(self, sql: str, params: Any, /) -> Any:
        """Run one statement for each parameter set."""

    def fetchall(self) -> list[Any]:
        """The rows of the last result."""


class SqlTx:
    """A transaction over DB-API cursors and a named-query catalog.

    The revision guard is the journal's primary key: a writer that read a stale revision appends
    a fact whose ``(run_id, seq)`` already exists, the statement fails, the transaction rolls
    back, and the store reports a :class:`Conflict` (which the engine retries).
    """

    def __init__(
        self,
        cursor: Callable[[], Cursor],
        queries: dict[str, str],
        *,
        wf_keys_as_json: bool,
    ) -> None:
        self._cur = cursor()
        self._q = queries
        self._wf_keys_as_json = wf_keys_as_json

    def query(self, name: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a named query that returns rows, and fetch them."""
        self._cur.execute(self._q[name], params or {})
        return [tuple(row) for row in self._cur.fetchall()]

    def command(self, name: str, params: dict[str, Any] | None = None) -> None:
        """Send a named statement whose result is not needed."""
        self._cur.execute(self._q[name], params or {})

    def run_statement(self, sql: str) -> None:
        """Send one statement that is not in the catalog (a migration file's DDL)."""
        self._cur.execute(sql)

    def load_run(self, run_id: str, *, lock: bool) -> RunState | None:
        """See :meth:`squid_mesh.store.base.Tx.load_run`."""
        found = self.query("load_run_for_update" if lock else "load_run", {"run_id": run_id})
        if not found:
            return None
        return rows.state_from_rows(found[0], self.query("load_attempts", {"run_id": run_id}))

    def run_id_for_key(self, workflow: str, idempotency_key: str) -> str | None:
        """See :meth:`squid_mesh.store.base.Tx.run_id_for_key`."""
        found = self.query(
            "run_id_for_key", {"workflow": workflow, "idempotency_key": idempotency_key}
        )
        return str(found[0][0]) if found else None

    def has_due(self, queue: str, wf_keys: Sequence[str], now: float) -> bool:
        """See :meth:`squid_mesh.store.base.Tx.has_due`."""
        return bool(self.query("probe_due", self._claim_params(queue, wf_keys, now)))

    def _claim_params(self, queue: str, wf_keys: Sequence[str], now: float) -> dict[str, Any]:
        keys: Any = json.dumps(list(wf_keys)) if self._wf_keys_as_json else list(wf_keys)
        return {"queue": queue, "wf_keys": keys, "now": now}

    def next_due(self, queue: str, wf_keys: Sequence[str]) -> float | None:
        """See :meth:`squid_mesh.store.base.Tx.next_due`."""
        found = self.query("next_due", self._claim_params(queue, wf_keys, 0.0))
        return None if not found or found[0][0] is None else float(found[0][0])

    def queue_limits(self) -> list[QueueLimitRow]:
        """See :meth:`squid_mesh.store.base.Tx.queue_limits`."""
        return [QueueLimitRow(*row) for row in self.query("queue_limits")]

    def lock_queue(self, queue: str) -> tuple[Any, ...] | None:
        """See :meth:`squid_mesh.store.base.Tx.lock_queue`."""
        found = self.query("lock_queue", {"queue": queue})
        return found[0] if found else None

    def peek_queue(self, queue: str) -> tuple[Any, ...] | None:
        """See :meth:`squid_mesh.store.base.Tx.peek_queue`."""
        found = self.query("peek_queue", {"queue": queue})
        return found[0] if found else None

    def count_claimed(self, queue: str, now: float) -> int:
        """See :meth:`squid_mesh.store.base.Tx.count_claimed`."""
        return int(self.query("count_claimed", {"queue": queue, "now": now})[0][0])

    def take_token(self, queue: str, tokens: float, now: float) -> None:
        """See :meth:`squid_mesh.store.base.Tx.take_token`."""
        self.command("take_token", {"queue": queue, "tokens": tokens, "now": now})

    def put_queue_limits(self, limit: QueueLimitRow, now: float) -> None:
        """See :meth:`squid_mesh.store.base.Tx.put_queue_limits`."""
        if limit.concurrency is None and limit.rate_limit is None:
            self.command("delete_queue_limits", {"queue": limit.queue})
            return
        params = {**limit._asdict(), "now": now}
        self.command("put_queue_limits", params)

    def queue_counts(self, now: float) -> dict[str, tuple[int, int, int, int]]:
        """See :meth:`squid_mesh.store.base.Tx.queue_counts`."""
        return {
            str(q): (int(v or 0), int(c or 0), int(s or 0), int(e or 0))
            for q, v, c, s, e in self.query("queue_counts", {"now": now})
        }

    def live_claims(self, now: float) -> list[tuple[str, str, int, float, int]]:
        """See :meth:`squid_mesh.store.base.Tx.live_claims`."""
        return [
            (str(o), str(q), int(n), float(until), int(lapsed or 0))
            for o, q, n, until, lapsed in self.query("live_claims", {"now": now})
        ]

    def schedule_slots(self) -> dict[tuple[str, str], float]:
        """See :meth:`squid_mesh.store.base.Tx.schedule_slots`."""
        return {(str(w), str(t)): float(slot) for w, t, slot in self.query("schedule_slots", {})}

    def next_claimable_run(
        self, queue: str, wf_keys: Sequence[str], now: float
    ) -> tuple[RunState, str] | None:
        """See :meth:`squid_mesh.store.base.Tx.next_claimable_run`."""
        found = self.query("next_claimable", self._claim_params(queue, wf_keys, now))
        if not found:
            return None
        run_id, key = found[0]
        state = self.load_run(str(run_id), lock=True)
        return None if state is None else (state, str(key))

    def insert_run(self, state: RunState, entries: Sequence[Entry]) -> bool:
        """See :meth:`squid_mesh.store.base.Tx.insert_run`."""
        if not self.query("insert_run", rows.run_params(state)):
            return False
        self._append(state, entries)
        self._upsert_attempts(state, list(state.attempts.values()))
        return True

    def save(self, before: RunState, after: RunState, entries: Sequence[Entry]) -> None:
        """See :meth:`squid_mesh.store.base.Tx.save`."""
        if not entries or entries[0].seq != before.rev + 1:
            raise ValueError("save() appends at least one fact, starting at rev + 1")
        self.command("update_run", rows.run_update_params(after, before.rev))
        self._append(after, entries)
        changed = rows.changed_attempts(before, after)
        self._upsert_attempts(after, changed)

    def _append(self, state: RunState, entries: Sequence[Entry]) -> None:
        self._cur.executemany(
            self._q["insert_fact"], [rows.fact_params(state.run_id, e) for e in entries]
        )

    def _upsert_attempts(self, state: RunState, attempts: Sequence[Any]) -> None:
        if attempts:
            self._cur.executemany(
                self._q["upsert_attempt"], [rows.attempt_params(state, a) for a in attempts]
            )

    def load_entries(self, run_id: str) -> list[Entry]:
        """See :meth:`squid_mesh.store.base.Tx.load_entries`."""
        return [rows.entry_from_row(r) for r in self.query("load_facts", {"run_id": run_id})]

    def run_ids_page(self, after: str, limit: int) -> list[str]:
        """See :meth:`squid_mesh.store.base.Tx.run_ids_page`."""
        return [str(r[0]) for r in self.query("run_ids_page", {"after": after, "limit": limit})]

    def list_runs(
        self, where: RunFilter, before: tuple[float, str] | None, limit: int
    ) -> list[RunRow]:
        """See :meth:`squid_mesh.store.base.Tx.list_runs`."""
        sql, params = self._filtered("list_runs", where)
        if before is not None:
            sql = sql.replace("/* filters */", f"{self._q['filter_before']} /* filters */")
            params["before_at"], params["before_id"] = before
        params["limit"] = limit
        self._cur.execute(sql, params)
        return [
            RunRow(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), r[6], r[7])
            for r in self._cur.fetchall()
        ]

    def host_cursor(self) -> Any:
        """See :meth:`squid_mesh.store.base.Tx.host_cursor`."""
        return self._cur

    def savepoint(self) -> None:
        """See :meth:`squid_mesh.store.base.Tx.savepoint`."""
        self.command("savepoint")

    def release_savepoint(self) -> bool:
        """See :meth:`squid_mesh.store.base.Tx.release_savepoint`."""
        self.command("release_savepoint")
        return True

    def rollback_to_savepoint(self) -> None:
        """See :meth:`squid_mesh.store.base.Tx.savepoint`."""
        self.command("rollback_to_savepoint")

    def register_definition(
        self, workflow: str, version: str, fingerprint: str, now: float
    ) -> str | None:
        """See :meth:`squid_mesh.store.base.Tx.register_definition`."""
        if not self.query("has_definitions_table"):
            return None
        key = {"workflow": workflow, "version": version}
        self.command(
            "register_definition", {**key, "fingerprint": fingerprint, "registered_at": now}
        )
        return str(self.query("recorded_fingerprint", key)[0][0])

    def last_slot(self, workflow: str, trigger: str, now: float) -> float:
        """See :meth:`squid_mesh.store.base.Tx.last_slot`."""
        key = {"workflow": workflow, "trigger": trigger}
        self.command("init_schedule", {**key, "now": now})
        return float(self.query("schedule_last_slot", key)[0][0])

    def advance_schedule(self, workflow: str, trigger: str, slot: float) -> None:
        """See :meth:`squid_mesh.store.base.Tx.advance_schedule`."""
        self.command("advance_schedule", {"workflow": workflow, "trigger": trigger, "slot": slot})

    def count_repeat(self, run_id: str, command: str, key: str, now: float) -> None:
        """See :meth:`squid_mesh.store.base.Tx.count_repeat`."""
        params = {"run_id": run_id, "command": command, "idempotency_key": key, "now": now}
        self.command("count_repeat", params)

    def commands(self, run_id: str) -> tuple[list[Entry], dict[tuple[str, str], int]]:
        """See :meth:`squid_mesh.store.base.Tx.commands`."""
        receipts = [rows.entry_from_row(r) for r in self.query("command_facts", {"run_id": run_id})]
        repeats = {
            (str(command), str(key)): int(n)
            for command, key, n in self.query("command_repeats", {"run_id": run_id})
        }
        return receipts, repeats

    def purge(self, before: float, limit: int) -> list[str]:
        """See :meth:`squid_mesh.store.base.Tx.purge`."""
        run_ids = [
            str(r[0]) for r in self.query("purgeable_runs", {"before": before, "limit": limit})
        ]
        for run_id in run_ids:
            for name in ("purge_facts", "purge_attempts", "purge_repeats", "purge_run"):
                self.command(name, {"run_id": run_id})
        return run_ids

    def replays(self, run_id: str) -> list[str]:
        """See :meth:`squid_mesh.store.base.Tx.replays`."""
        return [str(row[0]) for row in self.query("replays", {"run_id": run_id})]

    def children(self, parent_id: str) -> list[ChildRow]:
        """See :meth:`squid_mesh.store.base.Tx.children`."""
        return [
            ChildRow(
                run_id=str(run_id),
                workflow=str(workflow),
                status=str(status),
                child_key=str(json.loads(parent)["child_key"]),
                context=json.loads(context),
                error=None if error is None else json.loads(error),
            )
            for run_id, workflow, status, parent, context, error in self.query(
                "children", {"parent_id": parent_id}
            )
        ]

    def run_counts(self, where: RunFilter) -> dict[str, int]:
        """See :meth:`squid_mesh.store.base.Tx.run_counts`."""
        sql, params = self._filtered("run_counts", where)
        self._cur.execute(sql, params)
        return {str(status): int(n) for status, n in self._cur.fetchall()}

    def _filtered(self, name: str, where: RunFilter) -> tuple[str, dict[str, Any]]:
        # Only catalog text is spliced in (the filter_* fragments); every value is a parameter.
        params = {k: v for k, v in vars(where).items() if v is not None}
        fragments = " ".join(self._q[_FILTERS[k]] for k in params)
        return self._q[name].replace("/* filters */", f"{fragments} /* filters */"), params


def apply_migrations(tx: SqlTx, backend: str) -> list[str]:
    """Apply the backend's pending migrations inside ``tx``; return the versions applied now.

    The caller's transaction serialises concurrent migrators (SQLite: BEGIN IMMEDIATE;
    Postgres: the advisory lock taken by ``lock_migrations``).
    """
    tx.query("lock_migrations")
    tx.command("create_migrations_table")
    done = {row[0] for row in tx.query("applied_migrations")}
    applied_now = []
    for migration in load_migrations(backend):
        if migration.version in done:
            continue
        for statement in migration.statements():
            tx.run_statement(statement)
        tx.command("record_migration", {"version": migration.version, "applied_at": time.time()})
        applied_now.append(migration.version)
    return applied_now
