"""The host's handle on squid-mesh: ``connect(url, workflows=[...])`` returns a :class:`Mesh`."""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from squid_mesh.definition.schedule import next_slot
from squid_mesh.definition.triggers import Cron
from squid_mesh.definition.workflow import Definition, Workflow
from squid_mesh.engine.core import Engine
from squid_mesh.engine.entropy import Clock, Entropy, SystemEntropy, to_epoch, to_seconds
from squid_mesh.engine.options import check_queue
from squid_mesh.engine.results import Execution, Problem
from squid_mesh.errors import (
    DefinitionDriftWarning,
    DefinitionError,
    InvalidOptionError,
    UnknownWorkflowError,
)
from squid_mesh.journal.fold import RunStatus
from squid_mesh.observe.telemetry import Telemetry
from squid_mesh.read.explain import Explanation, explain
from squid_mesh.read.graph import RunGraph, run_graph
from squid_mesh.read.listing import (
    RunPage,
    check_limit,
    decode_cursor,
    encode_cursor,
    run_filter,
    summary,
)
from squid_mesh.read.queues import QueueLimits, QueueStats, ScheduleView, WorkerSeen
from squid_mesh.read.snapshot import RunSnapshot, commands_of, snapshot, to_datetime
from squid_mesh.read.waiting import wait_flow
from squid_mesh.store import open_store
from squid_mesh.store.base import QueueLimitRow

if TYPE_CHECKING:
    from squid_mesh.aio import AsyncMesh

Now = datetime | float | None
logger = logging.getLogger("squid_mesh")


class Mesh:
    """A connection to one store with a set of registered workflows.

    Every command is one transaction; ``now=`` overrides the clock for that call (tests).

    Example:
        >>> import squid_mesh as sm
        >>> wf = sm.Workflow("hello")
        >>> @wf.step()
        ... def greet(input, ctx):
        ...     return {"greeting": "hi " + input["name"]}
        >>> wf.transition("greet", to=sm.COMPLETE)
        >>> mesh = sm.connect("sqlite:///:memory:", workflows=[wf])
        >>> mesh.migrate()
        >>> run = mesh.start("hello", {"name": "ann"})
        >>> while mesh.execute_next(owner_id="doc"):
        ...     pass
        >>> mesh.inspect_run(run.id).context
        {'greeting': 'hi ann'}
    """

    def __init__(self, engine: Engine, *, strict_versions: bool = False) -> None:
        self._engine = engine
        self._strict_versions = strict_versions
        # Run after the store is closed (squid_mesh.testing removes its temporary database).
        self._on_close: list[Callable[[], None]] = []

    @functools.cached_property
    def aio(self) -> AsyncMesh:
        """The same commands as coroutines, for asyncio code (each runs in a worker thread).

        Example:
            >>> run = await mesh.aio.start("checkout", {"order_id": "o-1"})  # doctest: +SKIP
        """
        from squid_mesh.aio import AsyncMesh

        return AsyncMesh(self)

    def _now(self, now: Now) -> float:
        return self._engine.clock() if now is None else to_epoch("now", now)

    def migrate(self) -> None:
        """Create or upgrade squid-mesh's tables; idempotent and safe from several processes."""
        self._engine.store.migrate()
        self._check_definitions()

    def _check_definitions(self) -> None:
        drifted = self._engine.register_definitions()
        for message in drifted:
            if self._strict_versions:
                raise DefinitionError(message)
            warnings.warn(message, DefinitionDriftWarning, stacklevel=3)
            logger.warning("%s", message)

    def migrate_run(
        self, run_id: str, *, to_version: str, actor: str | None = None, now: Now = None
    ) -> RunSnapshot:
        """Move an unfinished run to another registered version of its workflow.

        For a run parked on a version no process loads any more. Refused with
        :class:`~squid_mesh.MigrationRefusedError` (naming the steps) when the target version lacks
        a step the run is waiting on.

        Example:
            >>> mesh.migrate_run(run.id, to_version="2", actor="ops")  # doctest: +SKIP
        """
        state = self._engine.migrate_run(
            run_id, to_version=to_version, actor=actor, now=self._now(now)
        )
        return snapshot(state, parked=self._engine.parked(state))

    def start(
        self,
        workflow: str | Workflow,
        payload: dict[str, Any] | None = None,
        *,
        trigger: str | None = None,
        idempotency_key: str | None = None,
        queue: str | None = None,
        run_id: str | None = None,
        actor: str | None = None,
        metadata: dict[str, Any] | None = None,
        priority: int | None = None,
        now: Now = None,
    ) -> RunSnapshot:
        """Start a run of the newest registered version of ``workflow``.

        The payload is validated against the workflow's schema before anything is written; the run,
        its receipt and its first attempt commit together. With ``idempotency_key``, every later
        start with the same key returns the same run for its whole lifetime (a different payload
        raises :class:`~squid_mesh.IdempotencyConflictError`); ``snap.created`` tells the call
        that wrote the run (``True``) from a repeat (``False``). ``actor`` and ``metadata`` go into
        the start's receipt (metadata values of secret-looking keys redacted). ``priority``: every
        attempt of the run is claimed before due attempts of lower priority on its queue (then by
        due time); 0 by default; child runs inherit it.

        Example:
            >>> run = mesh.start("payment_recovery", {"invoice_id": "inv_1"},
            ...                  idempotency_key="inv_1", priority=10)  # doctest: +SKIP
        """
        started = self._engine.start(
            workflow,
            payload,
            trigger=trigger,
            idempotency_key=idempotency_key,
            queue=queue,
            run_id=run_id,
            now=self._now(now),
            receipt=self._engine.start_receipt(idempotency_key, actor, metadata),
            priority=priority,
        )
        return snapshot(started.state, created=started.created)

    def execute_next(
        self,
        *,
        owner_id: str,
        queue: str = "default",
        lease: float | timedelta = 30.0,
        prefetch: bool = False,
        now: Now = None,
    ) -> Execution | None:
        """Claim the next visible attempt on ``queue``, run it in this thread, record the outcome.

        Returns what it did, or ``None`` when nothing is visible. ``lease`` (seconds) is how long
        the claim holds without a heartbeat; after it, another worker may take the attempt over.

        ``prefetch=True`` is for loops that call again at once: the transaction that records this
        step also claims the next visible attempt for the same owner and queue, and the next call
        runs it without a claim transaction (about one transaction per step instead of two).
        Until then no other worker can take that attempt: :meth:`close` gives unrun claims back,
        and a claim left behind by a process that stopped calling waits for its lease to expire.

        Example:
            >>> while mesh.execute_next(owner_id="worker-1"):  # doctest: +SKIP
            ...     pass
        """
        return self._engine.execute_next(
            queue=queue,
            owner_id=owner_id,
            lease=to_seconds("lease", lease),
            now=None if now is None else to_epoch("now", now),
            prefetch=_flag("prefetch", prefetch),
        )

    def cron_tick(self, *, now: Now = None) -> list[RunSnapshot]:
        """Start the runs of every cron slot that came due since the last tick.

        Call it regularly (every few seconds) from any number of processes: each slot yields
        exactly one run, whoever ticks. A trigger seen for the first time starts from now; after
        a downtime, each trigger's ``catch_up`` decides between the latest missed slot and all of
        them (at most ``max_catch_up``). Each run's context holds ``schedule``: the trigger, the
        slot and when it was fired. Returns the runs of the slots handled by this tick.

        Example:
            >>> mesh.cron_tick()  # doctest: +SKIP
            [RunSnapshot(id='0193...', workflow='daily_digest', ...)]
        """
        return [
            snapshot(s.state, created=s.created) for s in self._engine.cron_tick(self._now(now))
        ]

    def replay(
        self,
        run_id: str,
        *,
        allow_irreversible: bool = False,
        idempotency_key: str | None = None,
        actor: str | None = None,
        metadata: dict[str, Any] | None = None,
        now: Now = None,
    ) -> RunSnapshot:
        """Start a new run with a finished run's payload and trigger, on the newest definition.

        The new run records ``replayed_from``; the source lists it in ``snap.replays``. Refused
        with :class:`~squid_mesh.ReplayRefusedError` (naming the steps) when the source completed
        a step marked ``irreversible=True`` or ``compensatable=False``, unless
        ``allow_irreversible=True``; and when the source has not finished. With
        ``idempotency_key``, every replay of the same source with the same key returns the same
        run.

        Example:
            >>> again = mesh.replay(run.id, idempotency_key="ticket-42")  # doctest: +SKIP
            >>> again.replayed_from == run.id  # doctest: +SKIP
            True
        """
        with self._engine.telemetry.command("replay"):
            started = self._engine.replay(
                run_id,
                allow_irreversible=allow_irreversible,
                idempotency_key=idempotency_key,
                actor=actor,
                metadata=metadata,
                now=self._now(now),
            )
        return snapshot(started.state, created=started.created)

    def cancel(
        self,
        run_id: str,
        *,
        reason: str | None = None,
        actor: str | None = None,
        idempotency_key: str | None = None,
        cascade: bool = True,
        metadata: dict[str, Any] | None = None,
        now: Now = None,
    ) -> RunSnapshot:
        """Cancel a run at once. A step still running has its late result discarded, not applied.

        With ``cascade`` (the default), the run's unfinished child runs are cancelled in the same
        transaction, and theirs in turn.

        Cancelling a cancelled run returns it unchanged; a completed or failed run raises
        :class:`~squid_mesh.RunFinishedError`.

        Example:
            >>> mesh.cancel(run.id, reason="customer closed the account")  # doctest: +SKIP
        """
        with self._engine.telemetry.command("cancel"):
            state = self._engine.cancel(
                run_id,
                reason=reason,
                actor=actor,
                idempotency_key=idempotency_key,
                now=self._now(now),
                cascade=cascade,
                metadata=metadata,
            )
        return snapshot(state)

    def resume(
        self,
        run_id: str,
        *,
        actor: str | None = None,
        comment: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        now: Now = None,
    ) -> RunSnapshot:
        """Continue a run paused at a ``wf.pause`` step, on the route chosen when it paused.

        With ``idempotency_key``, a repeat returns the run as it is now and changes nothing, even
        when the run has paused again at a later gate. Without one, resuming a run that is not
        paused raises :class:`~squid_mesh.RunNotPausedError`. ``metadata`` is stored with the
        receipt (values of secret-looking keys redacted).

        Example:
            >>> mesh.resume(run.id, actor="ops", comment="supplier confirmed")  # doctest: +SKIP
        """
        return self._resolve("resume", run_id, actor, comment, metadata, idempotency_key, now)

    def approve(
        self,
        run_id: str,
        *,
        actor: str,
        comment: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        now: Now = None,
    ) -> RunSnapshot:
        """Approve the run's open ``wf.approval`` step: it follows its ``on="ok"`` route.

        The decision (``decision``, ``actor``, ``comment``, ``metadata``, ``decided_at``) goes into
        the context under the step's output key. Idempotency as for :meth:`resume`.

        Example:
            >>> mesh.approve(run.id, actor="maria", comment="refund ok",
            ...              metadata={"ticket": "OPS-12"})  # doctest: +SKIP
        """
        return self._resolve("approve", run_id, actor, comment, metadata, idempotency_key, now)

    def reject(
        self,
        run_id: str,
        *,
        actor: str,
        comment: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        now: Now = None,
    ) -> RunSnapshot:
        """Reject the run's open ``wf.approval`` step: it follows its ``on="error"`` route.

        Example:
            >>> mesh.reject(run.id, actor="maria", comment="duplicate request")  # doctest: +SKIP
        """
        return self._resolve("reject", run_id, actor, comment, metadata, idempotency_key, now)

    def _resolve(
        self,
        command: str,
        run_id: str,
        actor: str | None,
        comment: str | None,
        metadata: dict[str, Any] | None,
        idempotency_key: str | None,
        now: Now,
    ) -> RunSnapshot:
        with self._engine.telemetry.command(command):
            state = self._engine.resolve(
                command,
                run_id,
                actor=actor,
                comment=comment,
                metadata=metadata,
                idempotency_key=idempotency_key,
                now=self._now(now),
            )
        return snapshot(state)

    def explain_run(self, run_id: str, *, now: Now = None) -> Explanation:
        """Why the run is where it is, and what can be done about it; read-only.

        Returns an :class:`~squid_mesh.Explanation`: a ``reason`` from a closed set (see
        :class:`~squid_mesh.Reason`), a one-sentence ``summary``, the ``steps`` concerned,
        ``next_actions`` and the ``evidence`` (times, attempt, lease owner and expiry, last error,
        children, command counts).

        Example:
            >>> mesh.explain_run(run.id).reason  # doctest: +SKIP
            <Reason.SCHEDULED_RETRY: 'scheduled_retry'>
        """
        state, _, around = self._engine.inspect(run_id, history=False, children=True)
        definition = self._engine.definitions.get(f"{state.workflow}@{state.version}")
        counts: dict[str, int] = {}
        for entry in around.receipts:
            command = getattr(entry.fact, "command", "?")
            counts[command] = counts.get(command, 0) + 1
        for (command, _key), repeats in around.repeats.items():
            counts[f"{command}_repeats"] = counts.get(f"{command}_repeats", 0) + repeats
        at = self._now(now)
        # Only a run with a due step can be held back by its queue's limits: read them then.
        due = any(a.due_at is not None and a.due_at <= at for a in state.live_attempts())
        queue = self._engine.queue_pressure(state.queue, at) if due else None
        return explain(state, definition, around.children, at, counts, queue)

    def run_graph(self, run_id: str) -> RunGraph:
        """The run as a graph; ``to_dot()`` and ``to_mermaid()`` render it.

        Every declared step with its status, every edge with whether the run took it. Needs the
        run's version registered here (:class:`~squid_mesh.UnknownWorkflowError` otherwise).

        Example:
            >>> print(mesh.run_graph(run.id).to_dot())  # doctest: +SKIP
        """
        state, entries = self._engine.load(run_id, history=True)
        key = f"{state.workflow}@{state.version}"
        definition = self._engine.definitions.get(key)
        if definition is None:
            raise UnknownWorkflowError(key, sorted(self._engine.definitions))
        return run_graph(state, definition, entries or [])

    def inspect_run(self, run_id: str, *, history: bool = False) -> RunSnapshot:
        """A typed snapshot of a run; with ``history=True`` its journal facts too.

        Example:
            >>> mesh.inspect_run(run.id, history=True).history[0].kind  # doctest: +SKIP
            'run_started'
        """
        state, entries, around = self._engine.inspect(
            run_id, history=_flag("history", history), children=True
        )
        return snapshot(
            state,
            entries,
            around.children,
            around.replays,
            parked=self._engine.parked(state),
            commands=commands_of(around.receipts, around.repeats),
        )

    def wait_run(
        self,
        run_id: str,
        *,
        timeout: float | timedelta | None = None,
        until: Iterable[str] | str | None = None,
        poll_interval: float | timedelta = 0.5,
    ) -> RunSnapshot:
        """Block until the run has finished (or reached a status of ``until``); its snapshot.

        The workers run the steps; this only looks, every ``poll_interval`` seconds at most (the
        first looks come sooner). ``until``: the statuses to wait for (say ``"paused"``, to act
        on an approval gate); by default ``completed``, ``failed`` and ``cancelled``. A run that
        finishes in a status not in ``until`` ends the wait all the same: check ``snap.status``.
        ``timeout`` (seconds or a ``timedelta``; none by default) raises
        :class:`~squid_mesh.WaitTimeoutError`, which is also a :class:`TimeoutError`.
        ``mesh.aio.wait_run`` waits without holding a thread.

        Example:
            >>> run = mesh.start("payment_recovery", {"invoice_id": "inv_1"})  # doctest: +SKIP
            >>> mesh.wait_run(run.id, timeout=30).status  # doctest: +SKIP
            <RunStatus.COMPLETED: 'completed'>
        """
        flow = wait_flow(run_id, until=until, timeout=timeout, poll_interval=poll_interval)
        delay = next(flow)
        while True:
            time.sleep(delay)
            try:
                delay = flow.send(self.inspect_run(run_id))
            except StopIteration as done:
                found: RunSnapshot = done.value
                return found

    def list_runs(
        self,
        *,
        workflow: str | None = None,
        status: str | RunStatus | None = None,
        queue: str | None = None,
        started_after: datetime | float | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        """Runs newest first (by start time), filtered, a page at a time.

        Each filter is optional; ``status`` is one status. A page costs the same whatever the size
        of the history (an index walk of ``limit`` entries). Pass ``page.next_cursor`` back with
        the same filters for the next page: runs started meanwhile never shift or repeat entries.
        Summaries carry no payload, context, error or idempotency key.

        Example:
            >>> page = mesh.list_runs(workflow="checkout", status="failed", limit=20)  # doctest: +SKIP
            >>> [(r.id, r.created_at) for r in page]  # doctest: +SKIP
        """
        where = run_filter(
            workflow=workflow, status=status, queue=queue, started_after=started_after
        )
        size = check_limit(limit)
        before = None if cursor is None else decode_cursor(cursor)
        # One row more than asked tells whether another page exists without a second query.
        found = self._engine.list_runs(where, before, size + 1)
        page = found[:size]
        more = len(found) > size
        return RunPage(
            runs=tuple(summary(row) for row in page),
            next_cursor=encode_cursor(page[-1]) if more else None,
        )

    def run_counts(
        self, *, workflow: str | None = None, queue: str | None = None
    ) -> dict[RunStatus, int]:
        """How many runs there are in each status (every status present, zero included).

        With ``workflow`` it reads only that workflow's part of an index; without it, the whole
        runs table (fine for a dashboard, not for a hot loop).

        Example:
            >>> mesh.run_counts(workflow="checkout")[sm.RunStatus.FAILED]  # doctest: +SKIP
            3
        """
        where = run_filter(workflow=workflow, queue=queue)
        counts = self._engine.run_counts(where)
        return {status: counts.get(status.value, 0) for status in RunStatus}

    def purge(self, *, older_than: float | timedelta, now: Now = None) -> int:
        """Delete finished runs (completed, failed, cancelled) not changed for ``older_than``.

        Their journals, attempts and counters go with them; running and paused runs are never
        touched. Returns how many runs were deleted.

        Example:
            >>> mesh.purge(older_than=timedelta(days=30))  # doctest: +SKIP
            1200
        """
        age = to_seconds("older_than", older_than)
        return self._engine.purge(self._now(now) - age)

    def set_queue_limits(
        self,
        queue: str,
        *,
        concurrency: int | None = None,
        rate_limit: int | None = None,
        per: float | timedelta = 1.0,
    ) -> QueueLimits:
        """Limit a queue across every worker process of this store; no limits removes them.

        ``concurrency``: at most this many attempts of the queue claimed at once. ``rate_limit``
        claims per ``per`` seconds (a token bucket of ``rate_limit`` tokens). Each claim of a
        limited queue takes the queue's lock, so its claims happen one at a time and without
        prefetch. Other processes see a change within 5 seconds; this one at once.

        Example:
            >>> mesh.set_queue_limits("payments", concurrency=5, rate_limit=20, per=1.0)
            QueueLimits(queue='payments', concurrency=5, rate_limit=20, per=1.0)
        """
        check_queue(queue)
        for option, value in (("concurrency", concurrency), ("rate_limit", rate_limit)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise InvalidOptionError(option, "expected a positive integer or None")
        period = to_seconds("per", per)
        if period <= 0:
            raise InvalidOptionError("per", "expected a positive number of seconds")
        row = QueueLimitRow(queue, concurrency, rate_limit, None if rate_limit is None else period)
        self._engine.set_queue_limits(row, self._engine.clock())
        return QueueLimits(queue, concurrency, rate_limit, row.rate_period)

    def queue_limits(self) -> dict[str, QueueLimits]:
        """Every limited queue's limits, read from the store now.

        Example:
            >>> mesh.queue_limits()["payments"].concurrency  # doctest: +SKIP
            5
        """
        self._engine.refresh_limits(self._engine.clock())
        return {
            q: QueueLimits(q, r.concurrency, r.rate_limit, r.rate_period)
            for q, r in self._engine.limits(self._engine.clock()).items()
        }

    def queue_stats(self, *, now: Now = None) -> dict[str, QueueStats]:
        """Unfinished attempts per queue: visible, claimed and scheduled (reads every live attempt).

        Example:
            >>> mesh.queue_stats()["default"].visible  # doctest: +SKIP
            12
        """
        counts = self._engine.queue_counts(self._now(now))
        return {q: QueueStats(q, *c) for q, c in sorted(counts.items())}

    def workers(self, *, now: Now = None) -> list[WorkerSeen]:
        """The workers holding claims now, per queue (reads every live attempt).

        A worker is seen through its leases: one that holds nothing leaves no trace in the
        database, so an idle fleet lists empty. ``lapsed`` counts claims whose lease ran out
        (a dead or frozen worker: another one may take them over).

        Example:
            >>> [(w.owner, w.queue, w.claims) for w in mesh.workers()]  # doctest: +SKIP
            [('web-1:4711', 'default', 2)]
        """
        rows = self._engine.live_claims(self._now(now))
        return [
            WorkerSeen(owner, queue, held, to_datetime(until), lapsed)  # type: ignore[arg-type]
            for owner, queue, held, until, lapsed in rows
        ]

    def schedules(self, *, now: Now = None) -> list[ScheduleView]:
        """Every cron trigger of the newest registered versions, with its next fire time.

        Example:
            >>> [(s.workflow, s.trigger, s.next_fire) for s in mesh.schedules()]  # doctest: +SKIP
            [('daily_digest', 'cron', datetime.datetime(2026, 11, 26, 6, 0, tzinfo=...UTC))]
        """
        at = self._now(now)
        slots = self._engine.schedule_slots()
        views = []
        for d in sorted(self._engine.latest.values(), key=lambda d: d.name):
            for trigger in d.triggers:
                if not isinstance(trigger, Cron):
                    continue
                last = slots.get((d.name, trigger.name))
                views.append(
                    ScheduleView(
                        workflow=d.name,
                        trigger=trigger.name,
                        expression=trigger.expression,
                        timezone=trigger.timezone,
                        catch_up=trigger.catch_up,
                        last_slot=to_datetime(last),
                        next_fire=to_datetime(  # type: ignore[arg-type]
                            next_slot(trigger, after=at if last is None else last)
                        ),
                    )
                )
        return views

    def metrics_text(self) -> str:
        """The metrics of this process in the Prometheus text format (serve it at ``/metrics``).

        Attempts by outcome, step duration and claim latency histograms, and the per-queue
        gauges of the queues a :class:`~squid_mesh.Worker` of this mesh serves.

        Example:
            >>> print(mesh.metrics_text())  # doctest: +SKIP
            # HELP squid_mesh_attempts_total Step attempts recorded, by outcome.
        """
        return self._engine.telemetry.prometheus_text()

    def verify(self) -> list[Problem]:
        """Refold every run's journal; return the runs whose projection differs (empty when sound).

        Example:
            >>> assert mesh.verify() == []  # doctest: +SKIP
        """
        return self._engine.verify()

    def close(self) -> None:
        """Give back claims prefetched and not run, then release the store's connections."""
        try:
            self._engine.release_held()
        finally:
            self._engine.store.close()
            while self._on_close:
                try:
                    self._on_close.pop()()
                except Exception:  # one failing cleanup must not keep the others from running
                    logger.warning("a cleanup at close failed", exc_info=True)

    def __enter__(self) -> Mesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _flag(option: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidOptionError(option, "expected True or False")
    return value


def connect(
    url: str,
    *,
    workflows: Sequence[Workflow] = (),
    clock: Clock | None = None,
    entropy: Entropy | None = None,
    strict_versions: bool = False,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    max_connections: int | None = None,
    max_payload_bytes: int = 1_048_576,
) -> Mesh:
    """Open a store and register workflows (each is validated now).

    Args:
        url: ``sqlite:///app.db``, ``sqlite:///:memory:`` or ``postgresql://user@host/db``.
        workflows: the workflow definitions this process can start and execute.
        clock: returns epoch seconds; ``time.time`` by default (tests pass a fake clock).
        entropy: source of run ids, claim tokens and jitter (tests pass a seeded one).
        strict_versions: a workflow version registered with another fingerprint than the one the
            database recorded for it raises :class:`~squid_mesh.DefinitionError` instead of a
            :class:`~squid_mesh.DefinitionDriftWarning`.
        tracer_provider: the OpenTelemetry tracer provider for spans (the global one by
            default); used only when ``opentelemetry-api`` is installed (``squid-mesh[otel]``).
        meter_provider: the same for metrics.
        max_payload_bytes: the largest start payload accepted, as JSON (1 MiB by default); a
            larger one raises :class:`~squid_mesh.PayloadError` and writes nothing.
        max_connections: PostgreSQL pool size (4 by default; a Worker needs about one per
            concurrent step plus two). Ignored by SQLite.

    Example:
        >>> mesh = sm.connect("sqlite:///app.db", workflows=[wf])  # doctest: +SKIP
    """
    if (
        isinstance(max_payload_bytes, bool)
        or not isinstance(max_payload_bytes, int)
        or max_payload_bytes < 1
    ):
        raise InvalidOptionError("max_payload_bytes", "expected a positive number of bytes")
    definitions = []
    for wf in workflows:
        if not isinstance(wf, Workflow):
            raise InvalidOptionError("workflows", f"expected sm.Workflow objects, got {wf!r}")
        definitions.append(wf.definition())
    store = open_store(url, max_connections=max_connections)
    try:
        if store.borrows_connections:
            _refuse_async_transactional(definitions, store.describe())
        engine = Engine(
            store,
            definitions,
            clock=clock or time.time,
            entropy=entropy or SystemEntropy(),
            telemetry=Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider),
            max_payload_bytes=max_payload_bytes,
        )
        mesh = Mesh(engine, strict_versions=_flag("strict_versions", strict_versions))
        mesh._check_definitions()
    except BaseException:
        store.close()
        raise
    return mesh


def _refuse_async_transactional(definitions: Sequence[Definition], where: str) -> None:
    # An async step's database calls run on another thread (Django's sync_to_async, acreate),
    # on another connection: outside the transaction that records the step.
    for d in definitions:
        for step in d.steps.values():
            if step.transactional and step.is_async:
                raise DefinitionError(
                    f"workflow {d.name!r} step {step.name!r}: on {where} a transactional step "
                    "must be a plain def; an async one would write on another connection, "
                    "outside the transaction that records it"
                )
