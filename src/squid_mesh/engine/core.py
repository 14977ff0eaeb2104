"""The engine: each command is load -> decide (pure, ``planner``) -> write, in one transaction.

It is assembled from one module per concern, each class building on the one before:
``base`` (state, transactions, loads, writes) <- ``commands`` (start, versions, cron, replay,
cancel, gates) <- ``execution`` (execute_next, claims, queue limits, recording, heartbeats)
<- here (reads, purge, verify).
"""

from __future__ import annotations

from squid_mesh.engine.execution import Executor
from squid_mesh.engine.results import Problem, compare
from squid_mesh.journal.fold import fold
from squid_mesh.store.base import RunFilter, RunRow, iter_pages


class Engine(Executor):
    """Runs the commands of one mesh against its store, definitions, clock and entropy."""

    # -- reading ----------------------------------------------------------------------------

    def queue_counts(self, now: float) -> dict[str, tuple[int, int, int, int]]:
        """``queue -> (visible, claimed, scheduled, expired)``."""
        return self.transact(lambda tx: tx.queue_counts(now), read_only=True)

    def live_claims(self, now: float) -> list[tuple[str, str, int, float, int]]:
        """``(owner, queue, held, latest lease expiry, lapsed)`` per claim holder and queue."""
        return self.transact(lambda tx: tx.live_claims(now), read_only=True)

    def schedule_slots(self) -> dict[tuple[str, str], float]:
        """``(workflow, trigger) -> latest slot handled``."""
        return self.transact(lambda tx: tx.schedule_slots(), read_only=True)

    def purge(self, before: float, limit: int = 500) -> int:
        """Delete finished runs last changed before ``before``, ``limit`` per transaction."""
        total = 0
        while True:
            removed = self.transact(lambda tx: tx.purge(before, limit))
            total += len(removed)
            if len(removed) < limit:
                return total

    def list_runs(
        self, where: RunFilter, before: tuple[float, str] | None, limit: int
    ) -> list[RunRow]:
        """Up to ``limit`` runs matching ``where``, newest first, after the ``before`` key."""
        return self.transact(lambda tx: tx.list_runs(where, before, limit), read_only=True)

    def run_counts(self, where: RunFilter) -> dict[str, int]:
        """Runs per status among those matching ``where``."""
        return self.transact(lambda tx: tx.run_counts(where), read_only=True)

    def verify(self) -> list[Problem]:
        """Refold every journal and compare it with the projections."""
        problems: list[Problem] = []
        for page in iter_pages(self.store):
            for run_id in page:
                state, entries = self.load(run_id, history=True)
                problems.extend(compare(state, fold(run_id, entries or [])))
        return problems
