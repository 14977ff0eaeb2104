"""The engine's foundation: its state, and the transaction, write and load every command uses."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from squid_mesh.definition.workflow import Definition
from squid_mesh.engine.entropy import Clock, Entropy
from squid_mesh.engine.options import check_run_id
from squid_mesh.engine.results import Claim
from squid_mesh.errors import DefinitionError, RunNotFoundError, StoreError, UnknownWorkflowError
from squid_mesh.journal import facts as f
from squid_mesh.journal.fold import AttemptStatus, RunState, RunStatus, apply
from squid_mesh.observe.telemetry import Telemetry
from squid_mesh.store.base import ChildRow, Conflict, QueueLimitRow, SnapshotConflict, Store, Tx

T = TypeVar("T")
logger = logging.getLogger("squid_mesh")
_MAX_RACES = 100


def new_entries(state: RunState, facts: Sequence[f.Fact], now: float) -> list[f.Entry]:
    """``facts`` as journal entries numbered after ``state``'s revision, all at ``now``."""
    return [f.Entry(state.rev + i + 1, now, fact) for i, fact in enumerate(facts)]


def advanced(state: RunState, entries: Sequence[f.Entry]) -> RunState:
    """``state`` with ``entries`` applied in order."""
    for entry in entries:
        state = apply(state, entry)
    return state


def gave_up(before: RunState, after: RunState) -> bool:
    """Whether this write failed the run for good, or started compensating its failure."""
    if before.status.terminal:
        return False
    if after.status is RunStatus.FAILED:
        return (before.error or {}).get("compensation") != "running"
    compensating = (after.error or {}).get("compensation") == "running"
    return compensating and (before.error or {}).get("compensation") != "running"


@dataclasses.dataclass(frozen=True)
class Lineage:
    """What surrounds a run, for inspection: children, replays, receipts and their repeats."""

    children: list[ChildRow] = dataclasses.field(default_factory=list)
    replays: list[str] = dataclasses.field(default_factory=list)
    receipts: list[f.Entry] = dataclasses.field(default_factory=list)
    repeats: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)


class EngineBase:
    """What every command of the engine shares: store, definitions, clock, entropy, telemetry."""

    """Runs the commands of one mesh against its store, definitions, clock and entropy."""

    def __init__(
        self,
        store: Store,
        definitions: Sequence[Definition],
        *,
        clock: Clock,
        entropy: Entropy,
        telemetry: Telemetry | None = None,
        max_payload_bytes: int = 1_048_576,
    ) -> None:
        self.store = store
        self.max_payload_bytes = max_payload_bytes
        self.clock = clock
        self.entropy = entropy
        self.telemetry = telemetry or Telemetry()
        self.definitions: dict[str, Definition] = {}
        self.latest: dict[str, Definition] = {}
        for d in definitions:
            known = self.definitions.get(d.key)
            if known is not None and known.fingerprint != d.fingerprint:
                raise DefinitionError(
                    f"workflow {d.name!r} version {d.version!r} is registered twice with "
                    "different definitions; give the new one its own version"
                )
            self.definitions[d.key] = d
            self.latest[d.name] = d
        self._wf_keys = sorted(self.definitions)
        # Claims taken by prefetch and not yet run, by (owner_id, queue).
        self._held: dict[tuple[str, str], Claim] = {}
        # (owner_id, queue) pairs whose last execute_next found work: they claim without a probe.
        self._busy: set[tuple[str, str]] = set()
        # Queues with limits, as last read (every _LIMITS_TTL seconds), and when each limited
        # queue may next be worth a claim.
        self._limits: dict[str, QueueLimitRow] = {}
        self._limits_read = -math.inf
        self._blocked: dict[str, float] = {}
        # Called with a queue name when this process makes an attempt of it claimable.
        self.wakers: list[Callable[[str], None]] = []

    # -- plumbing ---------------------------------------------------------------------------

    def transact(
        self, fn: Callable[[Tx], T], *, read_only: bool = False, single_write: bool = False
    ) -> T:
        """Run ``fn`` in a transaction, retrying it when a concurrent writer won the race.

        ``single_write``: ``fn`` makes one write (one store call) and its reads need no snapshot
        shared with it (see :meth:`Store.single_write`).
        """
        begin = (
            self.store.read_transaction
            if read_only
            else self.store.single_write
            if single_write
            else self.store.transaction
        )
        for attempt in range(_MAX_RACES):
            try:
                with begin() as tx:
                    return fn(tx)
            except SnapshotConflict as exc:
                raise StoreError(f"{self.store.describe()}: {exc}") from None
            except Conflict:
                time.sleep(min(0.001 * 2 ** min(attempt, 6), 0.05) * self.entropy.fraction())
        raise StoreError(f"{self.store.describe()}: gave up after {_MAX_RACES} write races")

    def _write(self, tx: Tx, state: RunState, facts: Sequence[f.Fact], now: float) -> RunState:
        entries = new_entries(state, facts, now)
        after = advanced(state, entries)
        tx.save(state, after, entries)
        self._after_save(tx, state, after, now)
        return after

    def _after_save(self, tx: Tx, before: RunState, after: RunState, now: float) -> None:
        if gave_up(before, after):
            # A run that failed for good (or started undoing its failure) has no use for the
            # results of its child runs: they are cancelled with it, as a cancel would.
            reason = f"parent run {after.run_id} failed"
            self._cancel_children(tx, after.run_id, reason, None, now, [])
        # A child run that just ended wakes its parent's parked await step, in the same
        # transaction, once all the parent's children have ended: no poll, and no window in
        # which the wake-up could be lost.
        if after.parent is None or before.status.terminal or not after.status.terminal:
            return
        parent = tx.load_run(after.parent["run_id"], lock=True)
        if parent is None or parent.status.terminal:
            return
        parked = [a for a in parent.attempts.values() if a.status is AttemptStatus.WAITING]
        if not parked:
            return
        children = tx.children(parent.run_id)
        if all(RunStatus(c.status).terminal for c in children):
            self._write(tx, parent, [f.AttemptWoken(a.key, after.run_id) for a in parked], now)

    def _load(self, tx: Tx, run_id: str, *, lock: bool) -> RunState:
        state = tx.load_run(run_id, lock=lock)
        if state is None:
            raise RunNotFoundError(run_id)
        return state

    def definition_for(self, workflow: object) -> Definition:
        """The newest registered definition of ``workflow`` (a name or a ``Workflow``)."""
        name = getattr(workflow, "name", workflow)
        if not isinstance(name, str) or name not in self.latest:
            raise UnknownWorkflowError(str(name), list(self.latest))
        return self.latest[name]

    def _cancel_children(
        self,
        tx: Tx,
        parent_id: str,
        reason: str | None,
        actor: str | None,
        now: float,
        ended: list[str],
    ) -> None:
        for child in tx.children(parent_id):
            if RunStatus(child.status).terminal:
                continue
            state = self._load(tx, child.run_id, lock=True)
            if state.status.terminal:
                continue
            receipt = f.CommandReceived(
                "cancel", actor=actor, metadata={"cascaded_from": parent_id}
            )
            self._write(tx, state, [receipt, f.RunCancelled(reason)], now)
            ended.append(child.run_id)
            self._cancel_children(tx, child.run_id, reason, actor, now, ended)

    def wf_keys(self) -> list[str]:
        """``workflow@version`` of every definition this process can run (what it may claim)."""
        return self._wf_keys

    def _wake(self, queue: str) -> None:
        for wake in list(self.wakers):
            wake(queue)

    def load(self, run_id: object, *, history: bool) -> tuple[RunState, list[f.Entry] | None]:
        """A run's projected state, and its journal when ``history`` is true."""
        state, entries, _ = self.inspect(run_id, history=history, children=False)
        return state, entries

    def inspect(
        self, run_id: object, *, history: bool, children: bool
    ) -> tuple[RunState, list[f.Entry] | None, Lineage]:
        """A run's state, with its journal (``history``) and what surrounds it (``children``).

        That is the run's child runs, the runs that replay it, its receipts and their repeats.
        """
        rid = check_run_id(run_id)

        def read(tx: Tx) -> tuple[RunState, list[f.Entry] | None, Lineage]:
            state = self._load(tx, rid, lock=False)
            around = Lineage()
            if children:
                receipts, repeats = tx.commands(rid)
                around = Lineage(tx.children(rid), tx.replays(rid), receipts, repeats)
            return state, tx.load_entries(rid) if history else None, around

        # One snapshot for the run row, its attempts and its journal: a concurrent writer can
        # never make a read mix two revisions (and so never make verify() report a false problem).
        return self.transact(read, read_only=True)
