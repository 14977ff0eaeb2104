"""The engine: each command is load -> decide (pure, ``planner``) -> write, in one transaction."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from squid_mesh.definition.schedule import due_slots
from squid_mesh.definition.triggers import Cron
from squid_mesh.definition.workflow import COMPENSATION, Definition, Step
from squid_mesh.engine import crashpoints as crash
from squid_mesh.engine import planner
from squid_mesh.engine.builtins import run_builtin
from squid_mesh.engine.context import StepContext
from squid_mesh.engine.entropy import Clock, Entropy, token_hash
from squid_mesh.engine.invoke import run_step
from squid_mesh.engine.options import (
    check_metadata,
    check_payload_size,
    check_priority,
    check_queue,
    check_run_id,
    check_text,
    payload_hash,
    to_iso,
)
from squid_mesh.engine.results import (
    Claim,
    Execution,
    Outcome,
    Problem,
    QueuePressure,
    Started,
    compare,
    outcome_of,
)
from squid_mesh.errors import (
    DefinitionError,
    IdempotencyConflictError,
    InvalidOptionError,
    LeaseLostError,
    MigrationRefusedError,
    ReplayRefusedError,
    RunFinishedError,
    RunNotFoundError,
    RunNotPausedError,
    SquidMeshError,
    StoreError,
    UnknownWorkflowError,
    WrongGateError,
)
from squid_mesh.journal import facts as f
from squid_mesh.journal.fold import (
    AttemptState,
    AttemptStatus,
    RunState,
    RunStatus,
    apply,
    fold,
    start_state,
)
from squid_mesh.observe.telemetry import Telemetry
from squid_mesh.store.base import (
    ChildRow,
    Conflict,
    QueueLimitRow,
    RunFilter,
    RunRow,
    Store,
    Tx,
    iter_pages,
)

T = TypeVar("T")
logger = logging.getLogger("squid_mesh")
_MAX_RACES = 100
# How long a process trusts its copy of the queue limits (a change reaches every worker within it).
_LIMITS_TTL = 5.0
# A queue at its concurrency limit is not worth another claim for this long (unless woken).
_FULL_BACKOFF = 0.05
# Child run ids are uuid5(this, "<parent run id>/<child_key>"): the same child for the same key
# for the parent's whole lifetime, so a retried step finds the child its first attempt started.
_CHILDREN = uuid.UUID("6c1b7c52-8f0e-4d55-9d0c-3b7e1f6a2d41")
# Keyed replay run ids are uuid5(this, "<source run id>/<idempotency key>").
_REPLAYS = uuid.UUID("0f7d3a91-52c4-4b6e-a1d8-9e2b7c4f6a13")


def _entries(state: RunState, facts: Sequence[f.Fact], now: float) -> list[f.Entry]:
    return [f.Entry(state.rev + i + 1, now, fact) for i, fact in enumerate(facts)]


def _advance(state: RunState, entries: Sequence[f.Entry]) -> RunState:
    for entry in entries:
        state = apply(state, entry)
    return state


def _runnable_step(d: Definition, name: str) -> Step | None:
    """The step an attempt runs: a declared step, or for ``S#compensate`` S's compensation."""
    if not name.endswith(COMPENSATION):
        return d.steps.get(name)
    original = d.steps.get(name.removesuffix(COMPENSATION))
    if original is None or original.compensate is None:
        return None
    undo = original.compensate
    policy = original.compensate_retry or original.retry
    return dataclasses.replace(
        original,
        name=name,
        fn=undo,
        retry=policy,
        is_async=inspect.iscoroutinefunction(undo),
        kind="task",
        output=None,
    )


def _record_crash_points(execution: Execution, entries: Sequence[f.Entry]) -> None:
    """The crash points of a record's write, before it commits (fault-injection tests)."""
    crash.reached("record.before_commit")
    if execution.outcome == "retry_scheduled":
        crash.reached("retry.before_commit")
    compensating = execution.step.endswith(COMPENSATION) or any(
        isinstance(e.fact, f.CompensationStarted) for e in entries
    )
    if compensating:
        crash.reached("compensation.before_commit")


def _gave_up(before: RunState, after: RunState) -> bool:
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


def _context(state: RunState, attempt: AttemptState, **services: Any) -> StepContext:
    """What a step sees of its run; ``services`` are the context's callbacks (and ``db``)."""
    return StepContext(
        run_id=state.run_id,
        workflow=state.workflow,
        version=state.version,
        step=attempt.step,
        attempt=attempt.number,
        visit=attempt.visit,
        state=state.view,
        **services,
    )


class Engine:
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
            except Conflict:
                time.sleep(min(0.001 * 2 ** min(attempt, 6), 0.05) * self.entropy.fraction())
        raise StoreError(f"{self.store.describe()}: gave up after {_MAX_RACES} write races")

    def _write(self, tx: Tx, state: RunState, facts: Sequence[f.Fact], now: float) -> RunState:
        entries = _entries(state, facts, now)
        after = _advance(state, entries)
        tx.save(state, after, entries)
        self._after_save(tx, state, after, now)
        return after

    def _after_save(self, tx: Tx, before: RunState, after: RunState, now: float) -> None:
        if _gave_up(before, after):
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

    # -- start ------------------------------------------------------------------------------

    def start(
        self,
        workflow: object,
        payload: object,
        *,
        trigger: str | None,
        idempotency_key: str | None,
        queue: str | None,
        run_id: str | None,
        now: float,
        parent: dict[str, Any] | None = None,
        replayed_from: str | None = None,
        receipt: f.CommandReceived | None = None,
        context: dict[str, Any] | None = None,
        priority: int | None = None,
    ) -> Started:
        """Validate everything, then write the run, its receipt and its first attempt atomically.

        ``parent`` (``run_id``, ``step``, ``child_key``) makes the run a child run; the parent must
        still be running, and its row is locked while the child is written, so a cancel of the
        parent either sees the child (and cancels it) or happens first (and the start fails).
        """
        d = self.definition_for(workflow)
        trigger_names = [t.name for t in d.triggers]
        chosen = trigger_names[0] if trigger is None else trigger
        if chosen not in trigger_names:
            raise InvalidOptionError("trigger", f"workflow {d.name!r} has triggers {trigger_names}")
        if idempotency_key is not None:
            check_text("idempotency_key", idempotency_key)
        lane = check_queue(d.queue if queue is None else queue)
        rid = self.entropy.run_id() if run_id is None else check_run_id(run_id)
        rank = 0 if priority is None else check_priority(priority)
        clean = d.payload.validate({} if payload is None else payload)
        check_payload_size(d.name, clean, self.max_payload_bytes)
        digest = payload_hash(clean)
        with self.telemetry.command("start", workflow=d.name, queue=lane):
            started = self._start(
                d,
                clean,
                digest,
                chosen,
                idempotency_key,
                lane,
                rid,
                now,
                parent,
                replayed_from,
                receipt,
                context,
                rank,
            )
        if crash.ARMED:
            crash.reached("start.after_commit")
        self._wake(lane)
        return started

    def _start(
        self,
        d: Definition,
        clean: dict[str, Any],
        digest: str,
        chosen: str,
        idempotency_key: str | None,
        lane: str,
        rid: str,
        now: float,
        parent: dict[str, Any] | None,
        replayed_from: str | None,
        receipt: f.CommandReceived | None,
        context: dict[str, Any] | None,
        rank: int,
    ) -> Started:
        facts = planner.plan_start(
            d,
            payload=clean,
            queue=lane,
            trigger=chosen,
            idempotency_key=idempotency_key,
            payload_hash=digest,
            now=now,
            parent=parent,
            replayed_from=replayed_from,
            receipt=receipt,
            context=context,
            priority=rank,
            trace=self.telemetry.trace_context(),
        )
        entries = [f.Entry(i + 1, now, fact) for i, fact in enumerate(facts)]
        state = _advance(start_state(rid, entries[0]), entries[1:])

        def write(tx: Tx) -> Started:
            if parent is not None:
                above = self._load(tx, parent["run_id"], lock=True)
                if above.status.terminal:
                    raise RunFinishedError(above.run_id, above.status.value, "start a child of")
            if idempotency_key is not None:
                existing = tx.run_id_for_key(d.name, idempotency_key)
                if existing is not None:
                    return self._same_start(
                        tx, existing, d, idempotency_key, digest, "idempotency_key", receipt
                    )
            if crash.ARMED:
                crash.reached("start.before_commit")
            if tx.insert_run(state, entries):
                return Started(state, created=True)
            if idempotency_key is not None:
                existing = tx.run_id_for_key(d.name, idempotency_key)
                if existing is not None:
                    return self._same_start(
                        tx, existing, d, idempotency_key, digest, "idempotency_key", receipt
                    )
            return self._same_start(tx, rid, d, idempotency_key, digest, "run_id", receipt)

        # insert_run is the one write, atomic on its own; the key lookups around it are safe
        # outside its transaction (a losing insert waits for the winner to commit, then reads it).
        return self.transact(write, single_write=parent is None)

    def _same_start(
        self,
        tx: Tx,
        run_id: str,
        d: Definition,
        key: str | None,
        digest: str,
        what: str,
        receipt: f.CommandReceived | None = None,
    ) -> Started:
        existing = self._load(tx, run_id, lock=False)
        if existing.workflow != d.name:
            raise IdempotencyConflictError(what, run_id, f"it is a run of {existing.workflow!r}")
        if existing.idempotency_key != key:
            raise IdempotencyConflictError(what, run_id, "it was started with another key")
        if existing.payload_hash != digest:
            raise IdempotencyConflictError(what, run_id, "it was started with a different payload")
        # A keyed start (or replay, or cron slot) that found its run is a counted repeat.
        command = "start" if receipt is None else receipt.command
        repeat_key = key if receipt is None else receipt.idempotency_key
        if repeat_key is not None:
            tx.count_repeat(existing.run_id, command, repeat_key, self.clock())
        return Started(existing, created=False)

    @staticmethod
    def start_receipt(key: object, actor: object, metadata: object) -> f.CommandReceived | None:
        """The receipt of a host's start with an actor or metadata (checked; secrets redacted)."""
        if actor is None and metadata is None:
            return None  # the plain receipt
        who = None if actor is None else check_text("actor", actor)
        details = check_metadata(metadata)
        if key is not None:
            check_text("idempotency_key", key)
        return f.CommandReceived(
            "start",
            idempotency_key=key,  # type: ignore[arg-type]  # checked above
            actor=who,
            metadata=details,
        )

    # -- versions ---------------------------------------------------------------------------

    def register_definitions(self) -> list[str]:
        """Record each registered definition's fingerprint; describe the ones that drifted.

        A definition drifted when the database recorded another fingerprint for its (workflow,
        version).
        """

        def write(tx: Tx) -> list[str]:
            drifted = []
            for d in self.definitions.values():
                recorded = tx.register_definition(d.name, d.version, d.fingerprint, self.clock())
                if recorded is not None and recorded != d.fingerprint:
                    drifted.append(
                        f"workflow {d.name!r} version {d.version!r} is registered with "
                        f"fingerprint {d.fingerprint[:12]}, but the database recorded "
                        f"{recorded[:12]} for it: the definition changed without a new version"
                    )
            return drifted

        return self.transact(write)

    def migrate_run(
        self, run_id: object, *, to_version: object, actor: object, now: float
    ) -> RunState:
        """Move an unfinished run to another registered version of its workflow.

        Refused when the target lacks a step the run is waiting on (a live attempt's step, a
        compensation's step, or where an open gate leads).
        """
        rid = check_run_id(run_id)
        target_version = check_text("to_version", to_version, limit=100)
        who = None if actor is None else check_text("actor", actor)

        def write(tx: Tx) -> RunState:
            state = self._load(tx, rid, lock=True)
            if state.status.terminal:
                raise RunFinishedError(rid, state.status.value, "migrate")
            target = self.definitions.get(f"{state.workflow}@{target_version}")
            if target is None:
                known = sorted(
                    d.version for d in self.definitions.values() if d.name == state.workflow
                )
                raise InvalidOptionError(
                    "to_version",
                    f"version {target_version!r} of workflow {state.workflow!r} is not "
                    f"registered in this process (registered: {known})",
                )
            if target_version == state.version:
                return state
            problem = planner.migration_problem(target, state)
            if problem is not None:
                raise MigrationRefusedError(rid, problem[0], problem[1])
            receipt = f.CommandReceived(
                "migrate", actor=who, metadata={"from": state.version, "to": target_version}
            )
            moved = f.RunMigrated(state.version, target_version, target.fingerprint)
            return self._write(tx, state, [receipt, moved], now)

        return self.transact(write)

    def parked(self, state: RunState) -> str | None:
        """Why this process cannot move the run on, or ``None`` (it can, or the run has ended)."""
        if state.status.terminal or f"{state.workflow}@{state.version}" in self.definitions:
            return None
        return (
            f"parked: version {state.version!r} of workflow {state.workflow!r} is not loaded "
            "here; register it, or move the run with migrate_run"
        )

    # -- cron -------------------------------------------------------------------------------

    def cron_tick(self, now: float) -> list[Started]:
        """Start the runs of every cron slot due since the last tick; return them.

        Each run's idempotency key names its trigger and slot (``cron:<trigger>:<slot>``), so any
        number of processes may tick at once: each slot yields exactly one run.
        """
        started = []
        for d in self.latest.values():
            for trigger in d.triggers:
                if not isinstance(trigger, Cron):
                    continue
                try:
                    started.extend(self._tick(d, trigger, now))
                except SquidMeshError as exc:
                    # One trigger that cannot start (a database hiccup, say) must not starve the
                    # others: it is logged, and the next tick tries it again from where it was.
                    logger.warning(
                        "cron trigger %r of workflow %r: %s", trigger.name, d.name, exc.message
                    )
        return started

    def _tick(self, d: Definition, trigger: Cron, now: float) -> list[Started]:
        def last_slot(tx: Tx) -> float:
            return tx.last_slot(d.name, trigger.name, now)

        due = due_slots(trigger, after=self.transact(last_slot), until=now)
        started = [self._start_slot(d, trigger, slot, now) for slot in due]
        if due and crash.ARMED:
            crash.reached("cron.after_start")
        if due:

            def advance(tx: Tx) -> None:
                tx.advance_schedule(d.name, trigger.name, due[-1])

            self.transact(advance)
        return started

    def _start_slot(self, d: Definition, trigger: Cron, slot: float, now: float) -> Started:
        key = f"cron:{trigger.name}:{to_iso(slot)}"
        schedule = {"trigger": trigger.name, "slot": to_iso(slot), "fired_at": to_iso(now)}
        receipt = f.CommandReceived(
            "cron", idempotency_key=key, metadata={"trigger": trigger.name, "slot": to_iso(slot)}
        )
        return self.start(
            d,
            trigger.payload,
            trigger=trigger.name,
            idempotency_key=key,
            queue=None,
            run_id=None,
            now=now,
            receipt=receipt,
            context={"schedule": schedule},
        )

    # -- replay -----------------------------------------------------------------------------

    def replay(
        self,
        run_id: object,
        *,
        allow_irreversible: object,
        idempotency_key: object,
        actor: object,
        metadata: object,
        now: float,
    ) -> Started:
        """Start a new run with a finished run's payload and trigger, on the newest definition.

        Refused (nothing written) when the source has not finished, or completed a step marked
        ``irreversible`` or ``compensatable=False`` and ``allow_irreversible`` is not set.
        """
        rid = check_run_id(run_id)
        if not isinstance(allow_irreversible, bool):
            raise InvalidOptionError("allow_irreversible", "expected True or False")
        key = None if idempotency_key is None else check_text("idempotency_key", idempotency_key)
        who = None if actor is None else check_text("actor", actor)
        details = check_metadata(metadata)
        source = self.load(rid, history=False)[0]
        if not source.status.terminal:
            raise ReplayRefusedError(rid, f"it has not finished (it is {source.status.value})")
        d = self.definitions.get(f"{source.workflow}@{source.version}")
        d = d or self.definition_for(source.workflow)
        risky = sorted(
            {
                a.step
                for a in source.attempts.values()
                if a.status is AttemptStatus.COMPLETED
                and a.step in d.steps
                and (d.steps[a.step].irreversible or not d.steps[a.step].compensatable)
            }
        )
        if risky and not allow_irreversible:
            raise ReplayRefusedError(
                rid,
                f"it completed {', '.join(map(repr, risky))}, marked irreversible or not "
                "compensatable; pass allow_irreversible=True to replay it anyway",
                risky,
            )
        receipt = f.CommandReceived(
            "replay",
            idempotency_key=key,
            actor=who,
            metadata={**details, "source": rid, "allow_irreversible": allow_irreversible},
        )
        return self.start(
            source.workflow,
            source.payload,
            trigger=source.trigger,
            idempotency_key=None,
            queue=source.queue,
            # One replay per (source, key): the same key finds the same run.
            run_id=None if key is None else str(uuid.uuid5(_REPLAYS, f"{rid}/{key}")),
            now=now,
            replayed_from=rid,
            receipt=receipt,
            priority=source.priority,
        )

    # -- cancel -----------------------------------------------------------------------------

    def cancel(
        self,
        run_id: object,
        *,
        reason: str | None,
        actor: str | None,
        idempotency_key: str | None,
        now: float,
        cascade: bool = True,
        metadata: object = None,
    ) -> RunState:
        """Cancel a running run (and, with ``cascade``, its unfinished child runs, recursively).

        A repeat on a cancelled run changes nothing.
        """
        rid = check_run_id(run_id)
        if idempotency_key is not None:
            check_text("idempotency_key", idempotency_key)
        if reason is not None:
            check_text("reason", reason, limit=2000)
        if actor is not None:
            check_text("actor", actor)
        if not isinstance(cascade, bool):
            raise InvalidOptionError("cascade", "expected True or False")
        details = check_metadata(metadata)
        ended: list[str] = []

        def write(tx: Tx) -> RunState:
            ended.clear()
            state = self._load(tx, rid, lock=True)
            if self._repeated(tx, state, "cancel", idempotency_key, now):
                return state
            if state.status is RunStatus.CANCELLED:
                return state
            if state.status.terminal:
                raise RunFinishedError(rid, state.status.value, "cancel")
            receipt = f.CommandReceived(
                "cancel",
                idempotency_key=idempotency_key,
                actor=actor,
                metadata=details,
                comment=reason,
            )
            after = self._write(tx, state, [receipt, f.RunCancelled(reason)], now)
            crash.reached("cancel.before_commit")  # not a hot path: no ARMED test needed
            ended.append(rid)
            if cascade:
                self._cancel_children(tx, rid, reason, actor, now, ended)
            return after

        cancelled = self.transact(write)
        # A claim this process prefetched for a cancelled run must not start the step now.
        for slot, held in list(self._held.items()):
            if held.state.run_id in ended:
                self._held.pop(slot, None)
        return cancelled

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

    # -- gates: resume, approve, reject --------------------------------------------------------

    def resolve(
        self,
        command: str,
        run_id: object,
        *,
        actor: object,
        comment: object,
        metadata: object,
        idempotency_key: object,
        now: float,
    ) -> RunState:
        """Resume a paused run, or approve / reject one waiting at an approval step."""
        rid = check_run_id(run_id)
        if actor is not None or command != "resume":
            check_text("actor", actor)
        if comment is not None:
            check_text("comment", comment, limit=2000)
        if idempotency_key is not None:
            check_text("idempotency_key", idempotency_key)
        details = check_metadata(metadata)
        decided_at = to_iso(now)

        def write(tx: Tx) -> RunState:
            state = self._load(tx, rid, lock=True)
            if self._repeated(tx, state, command, idempotency_key, now):  # type: ignore[arg-type]
                return state
            if state.status is not RunStatus.PAUSED or state.gate is None:
                if state.status.terminal:
                    raise RunFinishedError(rid, state.status.value, command)
                raise RunNotPausedError(rid, state.status.value, command)
            wanted = "pause" if command == "resume" else "approval"
            if state.gate["gate"] != wanted:
                raise WrongGateError(rid, state.gate["gate"], state.gate["step"], command)
            d = self.definitions.get(f"{state.workflow}@{state.version}")
            if d is None:
                raise UnknownWorkflowError(f"{state.workflow}@{state.version}", self._wf_keys)
            facts = planner.decide_resolve(
                d,
                state,
                command,
                actor=actor,  # type: ignore[arg-type]
                comment=comment,  # type: ignore[arg-type]
                metadata=details,
                idempotency_key=idempotency_key,  # type: ignore[arg-type]
                decided_at=decided_at,
                now=now,
            )
            return self._write(tx, state, facts, now)

        resolved = self.transact(write)
        self._wake(resolved.queue)
        return resolved

    @staticmethod
    def _repeated(tx: Tx, state: RunState, command: str, key: str | None, now: float) -> bool:
        """Whether this keyed command was already applied to the run.

        Then the run is not written to; the repeat is only counted (beside the journal).
        """
        if key is None or key not in state.command_keys:
            return False
        if state.command_keys[key] != command:
            raise IdempotencyConflictError(
                "idempotency_key",
                state.run_id,
                f"it was used for {state.command_keys[key]!r}, not {command!r}",
            )
        tx.count_repeat(state.run_id, command, key, now)
        return True

    # -- execute_next -----------------------------------------------------------------------

    def execute_next(
        self,
        *,
        queue: str,
        owner_id: str,
        lease: float,
        now: float | None,
        prefetch: bool,
        on_claim: Callable[[Claim], None] | None = None,
    ) -> Execution | None:
        """Claim the next due attempt of ``queue``, run it here, record what it did.

        With ``prefetch``, the transaction that records the outcome also claims the next due
        attempt for the same owner and queue; the next call runs it without a claim transaction.
        ``on_claim`` sees the claim before the step runs (a Worker's heartbeats and shutdown).
        """
        check_queue(queue)
        check_text("owner_id", owner_id)
        claim_time = self.clock() if now is None else now
        limited = queue in self.limits(claim_time)
        # A limited queue's claims each take the queue's lock; a prefetched claim would not.
        prefetch = prefetch and not limited
        slot = (owner_id, queue)
        claim = self._take_held(owner_id, queue, claim_time) or self._claim(
            queue, owner_id, lease, claim_time, probe=slot not in self._busy, limited=limited
        )
        if claim is None:
            self._busy.discard(slot)
            return None
        self._busy.add(slot)
        if crash.ARMED:
            crash.reached("claim.after_commit")
        if on_claim is not None:
            on_claim(claim)
        state, attempt = claim.state, claim.attempt
        waited = claim_time - attempt.visible_at if attempt.claims == 1 else 0.0
        with self.telemetry.attempt(
            run_id=state.run_id,
            workflow=state.workflow,
            step=attempt.step,
            attempt=attempt.number,
            queue=queue,
            trace=state.trace,
            waited=waited,
        ) as scope:
            execution, held = self._run_claim(claim, lease, now, prefetch, queue)
            if crash.ARMED:
                crash.reached("record.after_commit")
            self.telemetry.attempt_done(scope, execution.outcome, execution.error)
        if held is not None:
            self._held[slot] = held
        elif prefetch:
            # The record's own claim found nothing due: the next call probes (cheaply) first.
            self._busy.discard(slot)
        return execution

    def _run_claim(
        self, claim: Claim, lease: float, now: float | None, prefetch: bool, queue: str
    ) -> tuple[Execution, Claim | None]:
        state, attempt = claim.state, claim.attempt
        d = self.definitions[f"{state.workflow}@{state.version}"]
        step = _runnable_step(d, attempt.step)
        result: planner.StepResult
        if step is None:
            result = planner.StepResult(
                error=planner.engine_error(
                    "step_not_in_definition",
                    f"step {attempt.step!r} is not in workflow {d.name!r} version {d.version!r} "
                    "as loaded here (the definition changed without a new version)",
                )
            )
        elif step.transactional:
            # Runs later, inside the transaction that records it (see _finish).
            result = planner.StepResult()
        else:
            ctx = _context(
                state,
                attempt,
                heartbeat=lambda: self._heartbeat(
                    state.run_id, attempt.key, claim.claim_hash, lease
                ),
                run_status=lambda: self._seen_status(state.run_id, attempt.key),
                start_child=lambda workflow, payload, child_key, queue: self._start_child(
                    state, attempt.step, workflow, payload, child_key, queue
                ),
            )
            result = (
                run_step(step, attempt.input, ctx)
                if step.kind == "task"
                else run_builtin(step, ctx)
            )
            if crash.ARMED:
                crash.reached("step.after_side_effect")
        return self._finish(
            claim,
            result,
            runnable=step is not None,
            now=now,
            prefetch=prefetch,
            queue=queue,
            awaits_children=step is not None and step.kind == "children",
            inside=None if step is None or not step.transactional else step,
        )

    def _seen_status(self, run_id: str, key: str) -> str:
        """What a running step's ``ctx.cancelled`` looks at.

        The run's status, or ``cancelled`` when the step's own attempt was cancelled (the run
        is compensating).
        """
        state = self.load(run_id, history=False)[0]
        attempt = state.attempts.get(key)
        if attempt is not None and attempt.status is AttemptStatus.CANCELLED:
            return "cancelled"
        return state.status.value

    def _start_child(
        self,
        parent: RunState,
        step: str,
        workflow: object,
        payload: object,
        child_key: object,
        queue: object,
    ) -> str:
        key = check_text("child_key", child_key)
        if queue is not None:
            check_queue(queue)
        parent_id = parent.run_id
        run_id = str(uuid.uuid5(_CHILDREN, f"{parent_id}/{key}"))
        child = self.start(
            workflow,
            payload,
            trigger=None,
            idempotency_key=None,
            queue=queue,  # type: ignore[arg-type]
            run_id=run_id,
            now=self.clock(),
            parent={"run_id": parent_id, "step": step, "child_key": key},
            # A child runs at its parent's priority.
            priority=parent.priority,
        )
        return child.state.run_id

    def _take_held(self, owner_id: str, queue: str, at: float) -> Claim | None:
        held = self._held.pop((owner_id, queue), None)
        lease_until = None if held is None else held.attempt.lease_until
        # A held claim whose lease ran out may already belong to another worker: let it go.
        return held if lease_until is not None and lease_until > at else None

    def _claim(
        self, queue: str, owner_id: str, lease: float, at: float, *, probe: bool, limited: bool
    ) -> Claim | None:
        # A worker that is not known to be busy probes first (cheaply, without a write
        # transaction); a busy one goes straight to the claim, which would follow anyway.
        if probe and not self.store.might_have_due(queue, self._wf_keys, at):
            return None
        if limited:
            # _blocked is advice for a Worker's dispatcher (when to look again); a direct call
            # always asks the store, which alone knows whether a slot or a token is free now.
            return self.transact(lambda tx: self._claim_limited(tx, queue, owner_id, lease, at))
        return self.transact(lambda tx: self._claim_in(tx, queue, owner_id, lease, at, strict=True))

    def _claim_limited(
        self, tx: Tx, queue: str, owner_id: str, lease: float, at: float
    ) -> Claim | None:
        """A claim under the queue's lock: within its concurrency limit and its rate limit."""
        row = tx.lock_queue(queue)
        if row is None:  # the limits were removed meanwhile
            return self._claim_in(tx, queue, owner_id, lease, at, strict=True)
        concurrency, rate_limit, rate_period, tokens, refilled_at = row
        if concurrency is not None and tx.count_claimed(queue, at) >= concurrency:
            self._blocked[queue] = at + _FULL_BACKOFF
            return None
        if rate_limit is not None:
            tokens = planner.refill(tokens, refilled_at, at, rate_limit, rate_period)
            wait_until = planner.next_token_at(tokens, at, rate_limit, rate_period)
            if wait_until is not None:
                # Nothing is worth trying before the next token.
                self._blocked[queue] = wait_until
                return None
        claim = self._claim_in(tx, queue, owner_id, lease, at, strict=True)
        if claim is not None and rate_limit is not None:
            tx.take_token(queue, tokens - 1.0, at)
        return claim

    def limits(self, now: float) -> dict[str, QueueLimitRow]:
        """The queues with limits, as read at most ``_LIMITS_TTL`` seconds ago."""
        if now - self._limits_read >= _LIMITS_TTL or now < self._limits_read:
            self.refresh_limits(now)
        return self._limits

    def refresh_limits(self, now: float) -> None:
        """Read the queue limits again (after a change in this process, at once)."""
        rows = self.transact(lambda tx: tx.queue_limits(), read_only=True)
        self._limits = {row.queue: row for row in rows}
        self._limits_read = now
        # Lanes write _blocked meanwhile: read a copy.
        self._blocked = {q: t for q, t in dict(self._blocked).items() if q in self._limits}

    def blocked_until(self, queue: str) -> float:
        """When a limited queue may next yield a claim in this process (0 when not blocked)."""
        return self._blocked.get(queue, 0.0)

    def set_queue_limits(self, limit: QueueLimitRow, now: float) -> None:
        """Store a queue's limits (or remove them when both are ``None``)."""

        def write(tx: Tx) -> None:
            tx.put_queue_limits(limit, now)

        self.transact(write)
        self.refresh_limits(now)
        self._blocked.pop(limit.queue, None)

    def queue_pressure(self, queue: str, now: float) -> QueuePressure | None:
        """What the limits of ``queue`` hold back at ``now``; ``None`` when it has no limits."""
        if queue not in self.limits(now):
            return None

        def read(tx: Tx) -> QueuePressure | None:
            row = tx.peek_queue(queue)
            if row is None:
                return None
            concurrency, rate_limit, period, tokens, refilled_at = row
            next_token = None
            if rate_limit is not None:
                tokens = planner.refill(tokens, refilled_at, now, rate_limit, period)
                next_token = planner.next_token_at(tokens, now, rate_limit, period)
            claimed = 0 if concurrency is None else tx.count_claimed(queue, now)
            return QueuePressure(queue, concurrency, claimed, rate_limit, period, next_token)

        return self.transact(read, read_only=True)

    def queue_counts(self, now: float) -> dict[str, tuple[int, int, int, int]]:
        """``queue -> (visible, claimed, scheduled, expired)``."""
        return self.transact(lambda tx: tx.queue_counts(now), read_only=True)

    def live_claims(self, now: float) -> list[tuple[str, str, int, float, int]]:
        """``(owner, queue, held, latest lease expiry, lapsed)`` per claim holder and queue."""
        return self.transact(lambda tx: tx.live_claims(now), read_only=True)

    def schedule_slots(self) -> dict[tuple[str, str], float]:
        """``(workflow, trigger) -> latest slot handled``."""
        return self.transact(lambda tx: tx.schedule_slots(), read_only=True)

    def held_queues(self, owner_id: str) -> list[str]:
        """The queues on which ``owner_id`` holds a prefetched claim not yet run."""
        return [q for (owner, q) in list(self._held) if owner == owner_id]

    def runs_inside(self, claim: Claim) -> bool:
        """Whether the claimed step is transactional (it runs inside its recording transaction)."""
        d = self.definitions.get(f"{claim.state.workflow}@{claim.state.version}")
        step = None if d is None else d.steps.get(claim.attempt.step)
        return step is not None and step.transactional

    def wf_keys(self) -> list[str]:
        """``workflow@version`` of every definition this process can run (what it may claim)."""
        return self._wf_keys

    def _wake(self, queue: str) -> None:
        for wake in list(self.wakers):
            wake(queue)

    def release_claim(self, claim: Claim) -> bool:
        """Give a claimed attempt back to its queue now, if the claim is still current."""
        key = claim.attempt.key

        def write(tx: Tx) -> bool:
            state = tx.load_run(claim.state.run_id, lock=True)
            attempt = None if state is None else state.attempts.get(key)
            if state is None or attempt is None or attempt.status is not AttemptStatus.RUNNING:
                return False
            if not planner.claim_is_current(attempt, claim.claim_hash):
                return False
            self._write(tx, state, [f.AttemptReleased(key)], self.clock())
            return True

        released = self.transact(write)
        if released:
            self._wake(claim.attempt.queue)
        return released

    def heartbeat_claim(self, claim: Claim) -> str | None:
        """Extend a claim's lease (a Worker's automatic heartbeat); see ``ctx.heartbeat``."""
        return self._heartbeat(claim.state.run_id, claim.attempt.key, claim.claim_hash, claim.lease)

    def _claim_in(
        self,
        tx: Tx,
        queue: str,
        owner_id: str,
        lease: float,
        at: float,
        *,
        strict: bool,
    ) -> Claim | None:
        found = tx.next_claimable_run(queue, self._wf_keys, at)
        if found is None:
            return None
        state, key = found
        if not planner.can_claim(state, key, at):
            if strict:
                raise Conflict(state.run_id)  # changed since the index read: look again
            return None
        return self._claim_attempt(tx, state, key, owner_id, lease, at)

    def _claim_attempt(
        self, tx: Tx, state: RunState, key: str, owner_id: str, lease: float, at: float
    ) -> Claim:
        claim_hash = token_hash(self.entropy.token())
        claimed = f.AttemptClaimed(key, owner_id, claim_hash, at + lease)
        after = self._write(tx, state, [claimed], at)
        if crash.ARMED and state.attempts[key].claims > 0:
            crash.reached("reclaim.before_commit")
        return Claim(after, after.attempts[key], claim_hash, owner_id, lease)

    def _finish(
        self,
        claim: Claim,
        result: planner.StepResult,
        *,
        runnable: bool,
        now: float | None,
        prefetch: bool,
        queue: str,
        awaits_children: bool = False,
        inside: Step | None = None,
    ) -> tuple[Execution, Claim | None]:
        """Record what the step did (and, with ``prefetch``, claim the next attempt).

        ``inside``: a transactional step, run here, inside the recording transaction, after the
        run is locked and the claim checked; its own writes commit with its completion.
        """
        done_at = self.clock() if now is None else now
        rand = self.entropy.fraction()
        claimed = claim.attempt
        run_id = claim.state.run_id

        def decide(
            state: RunState,
            children: list[ChildRow] | None = None,
            outcome_of_step: planner.StepResult = result,
        ) -> tuple[Execution, RunState, list[f.Entry], Claim | None]:
            result = outcome_of_step
            attempt = state.attempts.get(claimed.key)
            held: Claim | None = None
            entries: list[f.Entry] = []
            if attempt is None or not planner.claim_is_current(attempt, claim.claim_hash):
                outcome: Outcome = "lease_lost"
                after = state
            else:
                d = self.definitions.get(f"{state.workflow}@{state.version}")
                facts: list[f.Fact] = (
                    # The run was moved to a version this process does not have while the step
                    # ran: its result cannot be decided here. The attempt goes back to the queue
                    # for a worker that has the version (the step runs again: at least once).
                    [f.AttemptReleased(attempt.key)]
                    if d is None
                    else planner.decide_record(
                        d, state, attempt, result, runnable, done_at, rand, children
                    )
                )
                outcome = outcome_of(facts)
                entries = _entries(state, facts, done_at)
                after = _advance(state, entries)
                sticky = planner.sticky_successor(after, queue, done_at) if prefetch else None
                if sticky is not None:
                    # Depth first: the run's own successor, due now, is claimed in this same
                    # write, so a run's next step costs no claim query and no extra transaction.
                    claim_hash = token_hash(self.entropy.token())
                    claimed_next = f.AttemptClaimed(
                        sticky, claim.owner, claim_hash, done_at + claim.lease
                    )
                    more = _entries(after, [claimed_next], done_at)
                    entries, after = [*entries, *more], _advance(after, more)
                    held = Claim(
                        after, after.attempts[sticky], claim_hash, claim.owner, claim.lease
                    )
            execution = Execution(
                run_id,
                claimed.step,
                claimed.number,
                outcome,
                after.status,
                None if outcome == "lease_lost" else result.error,
            )
            return execution, after, entries, held

        def write(
            tx: Tx,
            state: RunState,
            decided: tuple[Execution, RunState, list[f.Entry], Claim | None],
        ) -> tuple[Execution, Claim | None]:
            execution, after, entries, held = decided
            if entries:
                tx.save(state, after, entries)
                self._after_save(tx, state, after, done_at)
                if crash.ARMED:
                    _record_crash_points(execution, entries)
            # A worker whose claim was taken from it (released at shutdown, or taken over) is
            # not one to hand more work to.
            if prefetch and held is None and execution.outcome != "lease_lost":
                held = self._claim_in(tx, queue, claim.owner, claim.lease, done_at, strict=False)
            return execution, held

        # An await step decides on the run's children, and a transactional step runs, under
        # the run's lock: both always take the locked path.
        if self.store.decides_on_cached_state and not awaits_children and inside is None:
            done = self._record_optimistic(claim, decide(claim.state), write, prefetch=prefetch)
            if done is not None:
                return done

        def record(tx: Tx) -> tuple[Execution, Claim | None]:
            state = self._load(tx, run_id, lock=True)
            children = tx.children(run_id) if awaits_children else None
            attempt = state.attempts.get(claimed.key)
            runs_here = (
                inside is not None
                and attempt is not None
                and planner.claim_is_current(attempt, claim.claim_hash)
                and not state.status.terminal
                and attempt.status is AttemptStatus.RUNNING
            )
            if runs_here and inside is not None and attempt is not None:
                outcome = self._run_inside(tx, inside, state, attempt)
                return write(tx, state, decide(state, children, outcome))
            return write(tx, state, decide(state, children))

        return self.transact(record)

    def _record_optimistic(
        self,
        claim: Claim,
        decided: tuple[Execution, RunState, list[f.Entry], Claim | None],
        write: Callable[
            [Tx, RunState, tuple[Execution, RunState, list[f.Entry], Claim | None]],
            tuple[Execution, Claim | None],
        ],
        *,
        prefetch: bool,
    ) -> tuple[Execution, Claim | None] | None:
        """Record on the run as this worker's claim left it, without reading it again.

        If anything changed the run since (a heartbeat, a cancel), the save's revision guard
        refuses the write (Conflict), nothing is kept, and ``None`` sends the caller down the
        locked path, which decides again on the run as it is now.
        """
        execution, after, entries, held = decided
        try:
            # Writes with effects on other runs (waking a parent, cancelling children) need a
            # transaction of their own (see _after_save).
            wakes = after.parent is not None and after.status.terminal
            wakes = wakes or _gave_up(claim.state, after)
            if entries and (held is not None or not prefetch) and not wakes:
                if crash.ARMED:
                    _record_crash_points(execution, entries)
                # The whole write is one statement: no BEGIN/COMMIT round trips for it.
                with self.store.single_write() as tx:
                    tx.save(claim.state, after, entries)
                return execution, held
            with self.store.transaction() as tx:
                return write(tx, claim.state, decided)
        except Conflict:
            return None

    def _run_inside(
        self, tx: Tx, step: Step, state: RunState, attempt: AttemptState
    ) -> planner.StepResult:
        """Run a transactional step on the recording transaction, behind a savepoint.

        A failure rolls the step's own writes back to the savepoint, and the failure is recorded
        in the same transaction; a crash anywhere before the commit leaves nothing at all.
        """
        ctx = _context(
            state,
            attempt,
            # The run's row is locked until this transaction ends: no one can cancel it or take
            # the attempt over meanwhile, so there is nothing to extend and nothing to see.
            heartbeat=lambda: None,
            run_status=lambda: state.status.value,
            db=tx.host_cursor(),
        )
        tx.savepoint()
        try:
            outcome = run_step(step, attempt.input, ctx)
        except BaseException:
            # SystemExit, KeyboardInterrupt: the savepoint is closed before the transaction
            # rolls back, or a borrowed connection (Django's) would be left inside it.
            with contextlib.suppress(Exception):
                tx.rollback_to_savepoint()
            raise
        if not outcome.ok:
            tx.rollback_to_savepoint()
        elif not tx.release_savepoint():
            # Recording success over writes that were undone would claim work that never
            # happened: the attempt fails instead, and is retried under the step's policy.
            outcome = planner.StepResult(
                error=planner.engine_error(
                    "step_writes_rolled_back",
                    f"step {step.name!r} returned, but its database transaction had failed or "
                    "was marked for rollback (a database error inside the step was caught "
                    "outside a savepoint or atomic block of its own); its writes were undone",
                ),
                retryable=True,
            )
        return outcome

    def release_held(self, owners: Sequence[str] | None = None) -> int:
        """Give back claims prefetched and not yet run (at shutdown); return how many.

        ``owners``: only those of these owner ids (a Worker's lanes); all when ``None``.
        """
        released = 0
        for slot in list(self._held):
            if owners is not None and slot[0] not in owners:
                continue
            held = self._held.pop(slot, None)
            if held is not None:
                released += self.release_claim(held)
        return released

    def _heartbeat(self, run_id: str, key: str, claim: str, lease: float) -> str | None:
        """Extend the lease; return the run's status if it has ended (else ``None``)."""
        beat_at = self.clock()

        def write(tx: Tx) -> str | None:
            state = self._load(tx, run_id, lock=True)
            # The claim first: when another worker took the attempt over, that is the news, even
            # if its work has ended the run since.
            if not planner.claim_is_current(state.attempts.get(key), claim):
                raise LeaseLostError(
                    f"run {run_id} step attempt {key!r}: the lease expired and another worker "
                    "took the attempt over; stop, this worker's result would be refused"
                )
            if state.status.terminal:
                return state.status.value
            current = state.attempts[key]
            lapsed = current.lease_until is not None and current.lease_until <= beat_at
            if lapsed and current.queue in self._limits:
                # Its slot may have gone to another claim meanwhile: reviving the lease could
                # put the queue over its concurrency limit.
                raise LeaseLostError(
                    f"run {run_id} step attempt {key!r}: the lease expired before this "
                    "heartbeat, and its queue is limited; stop, the attempt will be claimed again"
                )
            if current.status is AttemptStatus.CANCELLED:
                return "cancelled"  # the run is undoing a failure: this branch must stop
            self._write(tx, state, [f.AttemptHeartbeat(key, beat_at + lease)], beat_at)
            if crash.ARMED:
                crash.reached("heartbeat.before_commit")
            return None

        return self.transact(write)

    # -- reading ----------------------------------------------------------------------------

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
