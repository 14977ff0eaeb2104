"""The transaction logic shared by the SQL backends; each backend brings its own query catalog."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from squid_mesh.journal.facts import Entry
from squid_mesh.journal.fold import RunState
from squid_mesh.store import rows
from squid_mesh.store.base import Conflict


class Cursor(Protocol):
    """The part of a DB-API cursor the stores use."""

    @property
    def rowcount(self) -> int:
        """Rows changed by the last statement."""

    @property
    def description(self) -> Any:
        """Column descriptions of the last result, ``None`` when it had no rows."""

    def execute(self, sql: str, params: Any = ..., /) -> Any:
        """Run one statement."""

    def executemany(self, sql: str, params: Any, /) -> Any:
        """Run one statement for each parameter set."""

    def fetchall(self) -> list[Any]:
        """The rows of the last result."""


class SqlTx:
    """A transaction over a DB-API cursor and a named-query catalog."""

    def __init__(self, cursor: Cursor, queries: dict[str, str], *, wf_keys_as_json: bool) -> None:
        self._cur = cursor
        self._q = queries
        self._wf_keys_as_json = wf_keys_as_json

    def execute(self, name: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a named query and return its rows (empty for statements without rows)."""
        self._cur.execute(self._q[name], params or {})
        if self._cur.description is None:
            return []
        return [tuple(row) for row in self._cur.fetchall()]

    def run_statement(self, sql: str) -> None:
        """Run one statement that is not in the catalog (a migration file's DDL)."""
        self._cur.execute(sql)

    def _write(self, name: str, params: dict[str, Any]) -> int:
        self._cur.execute(self._q[name], params)
        return self._cur.rowcount

    def load_run(self, run_id: str, *, lock: bool) -> RunState | None:
        """See :meth:`squid_mesh.store.base.Tx.load_run`."""
        found = self.execute("load_run_for_update" if lock else "load_run", {"run_id": run_id})
        if not found:
            return None
        attempts = self.execute("load_attempts", {"run_id": run_id})
        return rows.state_from_rows(found[0], attempts)

    def run_id_for_key(self, workflow: str, idempotency_key: str) -> str | None:
        """See :meth:`squid_mesh.store.base.Tx.run_id_for_key`."""
        found = self.execute(
            "run_id_for_key", {"workflow": workflow, "idempotency_key": idempotency_key}
        )
        return str(found[0][0]) if found else None

    def next_claimable(
        self, queue: str, wf_keys: Sequence[str], now: float
    ) -> tuple[str, str] | None:
        """See :meth:`squid_mesh.store.base.Tx.next_claimable`."""
        keys: Any = json.dumps(list(wf_keys)) if self._wf_keys_as_json else list(wf_keys)
        found = self.execute("next_claimable", {"queue": queue, "wf_keys": keys, "now": now})
        return (str(found[0][0]), str(found[0][1])) if found else None

    def insert_run(self, state: RunState, entries: Sequence[Entry]) -> bool:
        """See :meth:`squid_mesh.store.base.Tx.insert_run`."""
        if self._write("insert_run", rows.run_params(state)) != 1:
            return False
        self._append(state, entries)
        self._upsert_attempts(state, list(state.attempts.values()))
        return True

    def save(self, before: RunState, after: RunState, entries: Sequence[Entry]) -> None:
        """See :meth:`squid_mesh.store.base.Tx.save`."""
        params = rows.run_params(after)
        params["expected_rev"] = before.rev
        if self._write("update_run", params) != 1:
            raise Conflict(after.run_id)
        self._append(after, entries)
        changed = [a for key, a in after.attempts.items() if before.attempts.get(key) != a]
        self._upsert_attempts(after, changed)

    def _append(self, state: RunState, entries: Sequence[Entry]) -> None:
        if entries:
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
        return [rows.entry_from_row(r) for r in self.execute("load_facts", {"run_id": run_id})]

    def run_ids_page(self, after: str, limit: int) -> list[str]:
        """See :meth:`squid_mesh.store.base.Tx.run_ids_page`."""
        return [str(r[0]) for r in self.execute("run_ids_page", {"after": after, "limit": limit})]
