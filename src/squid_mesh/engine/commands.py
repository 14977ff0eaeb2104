"""The engine's commands on runs: start, versions, cron, replay, cancel, and the gates."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from squid_mesh.definition.schedule import due_slots
from squid_mesh.definition.triggers import Cron
from squid_mesh.definition.workflow import Definition
from squid_mesh.engine import crashpoints as crash
from squid_mesh.engine import planner
from squid_mesh.engine.base import EngineBase, advanced
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
from squid_mesh.engine.results import Started
from squid_mesh.errors import (
    IdempotencyConflictError,
    InvalidOptionError,
    MigrationRefusedError,
    ReplayRefusedError,
    RunFinishedError,
    RunNotPausedError,
    SquidMeshError,
    UnknownWorkflowError,
    WrongGateError,
)
from squid_mesh.journal import facts as f
from squid_mesh.journal.fold import AttemptStatus, RunState, RunStatus, start_state
from squid_mesh.store.base import Tx

logger = logging.getLogger("squid_mesh")
# Keyed replay run ids are uuid5(this, "<source run id>/<idempotency key>").
_REPLAYS = uuid.UUID("0f7d3a91-52c4-4b6e-a1d8-9e2b7c4f6a13")


class Commands(EngineBase):
    """Start, register and migrate versions, tick cron, replay, cancel, resume/approve/reject."""

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
        state = advanced(start_state(rid, entries[0]), entries[1:])

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
