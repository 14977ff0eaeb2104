"""The engine's execute_next: claim (within queue limits) -> run the step -> record, and leases."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from squid_mesh.definition.workflow import COMPENSATION, Definition, Step
from squid_mesh.engine import crashpoints as crash
from squid_mesh.engine import planner
from squid_mesh.engine.base import advanced, gave_up, new_entries
from squid_mesh.engine.builtins import run_builtin
from squid_mesh.engine.commands import Commands
from squid_mesh.engine.context import StepContext
from squid_mesh.engine.entropy import token_hash
from squid_mesh.engine.invoke import run_step
from squid_mesh.engine.options import check_queue, check_text
from squid_mesh.engine.results import Claim, Execution, Outcome, QueuePressure, outcome_of
from squid_mesh.errors import LeaseLostError
from squid_mesh.journal import facts as f
from squid_mesh.journal.fold import AttemptState, AttemptStatus, RunState
from squid_mesh.store.base import ChildRow, Conflict, ConstraintViolated, QueueLimitRow, Tx

# How long a process trusts its copy of the queue limits (a change reaches every worker within it).
_LIMITS_TTL = 5.0
# A queue at its concurrency limit is not worth another claim for this long (unless woken).
_FULL_BACKOFF = 0.05
# Child run ids are uuid5(this, "<parent run id>/<child_key>"): the same child for the same key
# for the parent's whole lifetime, so a retried step finds the child its first attempt started.
_CHILDREN = uuid.UUID("6c1b7c52-8f0e-4d55-9d0c-3b7e1f6a2d41")


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


class Executor(Commands):
    """execute_next, prefetched claims, queue limits, heartbeats and released claims."""

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
        inside = None if step is None or not step.transactional else step
        try:
            return self._finish(
                claim,
                result,
                runnable=step is not None,
                now=now,
                prefetch=prefetch,
                queue=queue,
                awaits_children=step is not None and step.kind == "children",
                inside=inside,
            )
        except ConstraintViolated as exc:
            if inside is None:
                raise
            # The commit checked a deferred constraint (a foreign key) against the step's writes
            # and refused the whole transaction: nothing of the step or its record was kept.
            # Left there, the attempt would run again after every lease, never counted; it
            # fails instead, under the step's retry policy, in a transaction of its own.
            refused = planner.StepResult(
                error=planner.engine_error(
                    "step_writes_refused",
                    f"step {inside.name!r} returned, but the database refused its writes when "
                    f"the transaction committed: {exc.message}",
                ),
                retryable=True,
            )
            return self._finish(
                claim, refused, runnable=True, now=now, prefetch=prefetch, queue=queue
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

    def held_queues(self, owner_id: str) -> list[str]:
        """The queues on which ``owner_id`` holds a prefetched claim not yet run."""
        return [q for (owner, q) in list(self._held) if owner == owner_id]

    def runs_inside(self, claim: Claim) -> bool:
        """Whether the claimed step is transactional (it runs inside its recording transaction)."""
        d = self.definitions.get(f"{claim.state.workflow}@{claim.state.version}")
        step = None if d is None else d.steps.get(claim.attempt.step)
        return step is not None and step.transactional

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
                entries = new_entries(state, facts, done_at)
                after = advanced(state, entries)
                sticky = planner.sticky_successor(after, queue, done_at) if prefetch else None
                if sticky is not None:
                    # Depth first: the run's own successor, due now, is claimed in this same
                    # write, so a run's next step costs no claim query and no extra transaction.
                    claim_hash = token_hash(self.entropy.token())
                    claimed_next = f.AttemptClaimed(
                        sticky, claim.owner, claim_hash, done_at + claim.lease
                    )
                    more = new_entries(after, [claimed_next], done_at)
                    entries, after = [*entries, *more], advanced(after, more)
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
            wakes = wakes or gave_up(claim.state, after)
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
