"""The bundled worker: concurrent lanes over ``execute_next``, wake-ups, heartbeats, graceful stop.

A :class:`Worker` runs ``concurrency`` lanes (threads). One dispatcher thread watches the queues
and hands work to idle lanes; a lane that gets work keeps claiming (with prefetch: one
transaction per step) until its queues are empty, then goes idle again. Idle, the dispatcher
sleeps until the earliest of: the next attempt's due time (a retry's backoff, a wait, a lease
that runs out), a PostgreSQL notification that a queue gained work, a run started by this
process, or the poll interval. On SQLite, without notifications, it polls adaptively: again at
once while work keeps coming, then backing off up to ``poll_interval``.
"""

from __future__ import annotations

import logging
import os
import queue as queue_mod
import signal
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

from squid_mesh.definition.triggers import Cron
from squid_mesh.engine.entropy import to_seconds
from squid_mesh.engine.invoke import step_loop
from squid_mesh.engine.options import check_queue, check_text
from squid_mesh.engine.results import Claim
from squid_mesh.errors import InvalidOptionError, SquidMeshError
from squid_mesh.mesh import Mesh

if TYPE_CHECKING:
    import asyncio

logger = logging.getLogger("squid_mesh.worker")

_FIRST_POLL = 0.005  # an idle SQLite worker's first pause; doubled up to poll_interval
_STOP = object()  # a lane's hand-off that means "exit"


class _Abandoned(Exception):
    """A claim taken after stop() chose what to release: given back, not run."""


class Worker:
    """Runs the steps of ``queues`` with ``concurrency`` lanes until stopped.

    Args:
        mesh: the connected :class:`~squid_mesh.Mesh` (its workflows are what this worker runs).
        queues: the queues served, in order of preference (an earlier queue's work first).
        concurrency: steps run at once (one thread each; async steps share one event loop).
        lease: seconds a claim holds without a heartbeat.
        heartbeat_every: seconds between automatic heartbeats of a running step
            (``lease / 3`` by default).
        poll_interval: the longest an idle worker sleeps before looking again.
        grace_period: at :meth:`stop`, how long running steps may take to finish before their
            claims are given back to the queue for another worker.
        cron_every: seconds between cron ticks (``None``: this worker does not tick; workflows
            without cron triggers are never ticked).
        name: this worker's owner id prefix (host:pid:random by default).

    Example:
        >>> worker = sm.Worker(mesh, queues=["default"], concurrency=8)  # doctest: +SKIP
        >>> worker.run()   # until SIGINT/SIGTERM   # doctest: +SKIP
    """

    def __init__(
        self,
        mesh: Mesh,
        *,
        queues: Sequence[str] = ("default",),
        concurrency: int = 1,
        lease: float | timedelta = 30.0,
        heartbeat_every: float | timedelta | None = None,
        poll_interval: float | timedelta = 1.0,
        grace_period: float | timedelta = 30.0,
        cron_every: float | timedelta | None = 5.0,
        name: str | None = None,
    ) -> None:
        if not isinstance(mesh, Mesh):
            raise InvalidOptionError("mesh", "expected a squid_mesh.Mesh (sm.connect(...))")
        if isinstance(queues, str) or not queues:
            raise InvalidOptionError("queues", "expected a non-empty list of queue names")
        self.queues = [check_queue(q) for q in queues]
        if isinstance(concurrency, bool) or not isinstance(concurrency, int):
            raise InvalidOptionError("concurrency", "expected an integer from 1 to 1000")
        if not 1 <= concurrency <= 1000:
            raise InvalidOptionError("concurrency", "expected an integer from 1 to 1000")
        self.concurrency = concurrency
        self.lease = _positive("lease", lease)
        self.heartbeat_every = (
            self.lease / 3
            if heartbeat_every is None
            else _positive("heartbeat_every", heartbeat_every)
        )
        if self.heartbeat_every >= self.lease:
            raise InvalidOptionError("heartbeat_every", "must be shorter than the lease")
        self.poll_interval = _positive("poll_interval", poll_interval)
        self.grace_period = to_seconds("grace_period", grace_period)
        if self.grace_period < 0:
            raise InvalidOptionError("grace_period", "expected zero or more seconds")
        self.cron_every = None if cron_every is None else _positive("cron_every", cron_every)
        default_name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.name = check_text("name", default_name if name is None else name)
        self._mesh = mesh
        self._engine = mesh._engine
        pool = self._engine.store.max_connections
        if pool is not None and pool < concurrency + 2:
            # Each lane holds a connection while it claims and records; the dispatcher and the
            # heartbeats need one each. Short of that, lanes queue for connections (slower, and
            # a pool timeout after 30 s is a failed claim or record).
            logger.warning(
                "worker %s: concurrency=%d on a pool of %d connections; lanes will wait for "
                "connections: connect(..., max_connections=%d) or more",
                self.name,
                concurrency,
                pool,
                concurrency + 3,
            )
        self._owners = [f"{self.name}/{i}" for i in range(concurrency)]
        self._has_cron = any(
            isinstance(t, Cron) for d in self._engine.latest.values() for t in d.triggers
        )
        self._has_async = any(
            s.is_async for d in self._engine.definitions.values() for s in d.steps.values()
        )
        self.executed = 0
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._stopping = threading.Event()
        self._stop_requested = threading.Event()
        self._hurry = threading.Event()
        self._handoffs: queue_mod.SimpleQueue[object] = queue_mod.SimpleQueue()
        self._idle = concurrency
        # Claims taken, and whether the last hand-off came back without one (see _dispatch).
        self._claims = 0
        self._fruitless = False
        # Set in stop() once the claims to release are chosen: a claim taken later is given
        # back at once instead of run.
        self._closing = False
        self._beats_done = threading.Event()
        self._current: dict[str, tuple[Claim, float]] = {}
        self._threads: list[threading.Thread] = []
        self._lanes: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: Any = None
        self._listen_thread: threading.Thread | None = None
        self._started = False
        self._stopped = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the lanes and the dispatcher in background threads; returns at once.

        Example:
            >>> worker.start(); ...; worker.stop()  # doctest: +SKIP
        """
        if self._started:
            raise RuntimeError("this Worker was started already; create a new one")
        self._started = True
        if self._has_async:
            import asyncio  # only a worker with async steps needs it (import time)

            self._loop = asyncio.new_event_loop()
            self._spawn("loop", self._loop.run_forever)
        for i, owner in enumerate(self._owners):
            lane = self._spawn(f"lane-{i}", self._lane, owner)
            self._lanes.append(lane)
        self._listener = self._engine.store.listen()
        if self._listener is not None:
            # LISTEN before the first look at the queues: nothing announced after it is missed.
            self._listener.open()
            self._listen_thread = self._spawn("listen", self._listen)
        self._engine.wakers.append(self._woken)
        self._engine.telemetry.watch_queues(self._queue_counts)
        self._spawn("heartbeat", self._heartbeats)
        self._spawn("dispatch", self._dispatch)
        logger.info(
            "worker %s started: queues %s, concurrency %d", self.name, self.queues, self.concurrency
        )

    def stop(self, grace_period: float | None = None) -> int:
        """Stop claiming; give running steps ``grace_period`` seconds; release what is left.

        Claims prefetched and not run, and those of steps still running when the grace period
        ends, go back to their queue at once (another worker takes them without waiting for a
        lease to expire; a step still running then has its late result refused). Returns how
        many claims were released. Idempotent.

        Example:
            >>> worker.stop(grace_period=10)  # doctest: +SKIP
            0
        """
        if self._stopped or not self._started:
            self._stopped = True
            return 0
        self._stopped = True
        grace = self.grace_period if grace_period is None else max(grace_period, 0.0)
        self._stopping.set()
        self._stop_requested.set()
        self._changed.set()
        for _ in self._lanes:
            self._handoffs.put(_STOP)
        deadline = time.monotonic() + grace
        for lane in self._lanes:
            while lane.is_alive() and not self._hurry.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                lane.join(min(left, 0.1))
        released = 0
        with self._lock:
            self._closing = True
            stuck = [claim for claim, _ in self._current.values()]
        # Heartbeats went on through the grace period; the claims left now are given back.
        self._beats_done.set()
        for claim in stuck:
            released += self._release(claim)
        released += self._engine.release_held(self._owners)
        if self._engine.wakers.count(self._woken):
            self._engine.wakers.remove(self._woken)
        if self._listen_thread is not None:
            self._listen_thread.join(5)  # it closes its own connection
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        logger.info(
            "worker %s stopped: %d step(s) executed, %d claim(s) released",
            self.name,
            self.executed,
            released,
        )
        return released

    def run(self, *, handle_signals: bool = True) -> None:
        """Start, block until SIGINT/SIGTERM (or :meth:`stop` from another thread), then stop.

        A second signal during the grace period cuts it short.

        Example:
            >>> sm.Worker(mesh, concurrency=8).run()  # doctest: +SKIP
        """
        previous: dict[signal.Signals, Any] = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            self.start()
            while not self._stop_requested.wait(0.2):
                pass
        finally:
            try:
                self.stop()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    async def serve(self) -> None:
        """Run inside an asyncio host until cancelled (then stop gracefully, off the loop).

        Example:
            >>> task = asyncio.create_task(worker.serve())  # doctest: +SKIP
        """
        import asyncio

        self.start()
        try:
            await asyncio.to_thread(self._stop_requested.wait)
        finally:
            await asyncio.to_thread(self.stop)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_requested.is_set():
            self._hurry.set()  # a second signal: no more grace
        logger.info("worker %s: signal %d, stopping", self.name, signum)
        self._stop_requested.set()

    @property
    def in_flight(self) -> int:
        """How many steps are running right now."""
        with self._lock:
            return len(self._current)

    # -- threads --------------------------------------------------------------------------------

    def _spawn(self, role: str, target: Any, *args: Any) -> threading.Thread:
        # Daemon threads: a step that never returns must not keep the process alive after stop.
        store = self._engine.store

        def body() -> None:
            try:
                target(*args)
            finally:
                store.release_thread()  # the Django store: this thread's connection

        thread = threading.Thread(target=body, name=f"squid-mesh-{role}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def _lane(self, owner: str) -> None:
        if self._loop is not None:
            step_loop.set(self._loop)
        while True:
            if self._handoffs.get() is _STOP:
                break
            ran = 0
            try:
                while not self._stopping.is_set() and self._step(owner):
                    ran += 1
            except _Abandoned:
                pass
            except Exception:
                logger.exception("worker %s: lane %s failed; it continues", self.name, owner)
            with self._lock:
                self._idle += 1
                if ran == 0:
                    self._fruitless = True
            self._changed.set()
        self._engine.release_held([owner])

    def _step(self, owner: str) -> bool:
        """One execute_next over the queues in order; whether any ran a step."""

        def track(claim: Claim) -> None:
            with self._lock:
                closing = self._closing
                if not closing:
                    self._current[owner] = (claim, time.monotonic())
                    self._claims += 1
                    self._fruitless = False
            if closing:
                # stop() has already chosen what to release: give this one back unrun.
                self._release(claim)
                raise _Abandoned
            # A claim may mean there is more: the dispatcher looks again (for an idle lane).
            self._changed.set()

        # A claim prefetched on a queue goes first: left behind, nobody could take it until
        # its lease ran out.
        held = self._engine.held_queues(owner)
        for q in [*held, *(q for q in self.queues if q not in held)]:
            try:
                execution = self._engine.execute_next(
                    queue=q,
                    owner_id=owner,
                    lease=self.lease,
                    now=None,
                    # No new claim for later once stopping: it would only have to be given back.
                    prefetch=not self._stopping.is_set(),
                    on_claim=track,
                )
            finally:
                with self._lock:
                    self._current.pop(owner, None)
            if execution is not None:
                with self._lock:
                    self.executed += 1
                return True
        return False

    def _dispatch(self) -> None:
        pause = _FIRST_POLL
        next_tick = 0.0
        seen_claims = 0
        while not self._stopping.is_set():
            try:
                if self._has_cron and self.cron_every is not None and time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.cron_every
                    self._engine.cron_tick(self._engine.clock())
                with self._lock:
                    free = self._idle > 0
                    fruitless, self._fruitless = self._fruitless, False
                    if self._claims != seen_claims:
                        seen_claims, pause = self._claims, _FIRST_POLL
                if not free:
                    self._sleep(self.poll_interval)
                    continue
                wake_at = self._next_due()
                now = self._engine.clock()
                if wake_at is not None and wake_at <= now:
                    if fruitless:
                        # Due, yet the last lane sent found nothing to claim (its run was held
                        # by another transaction, say): wait a little, longer each time.
                        self._sleep(pause)
                        pause = min(pause * 2, self.poll_interval)
                        continue
                    with self._lock:
                        self._idle -= 1
                    self._handoffs.put(True)
                    # Until that lane reports (claimed, or found nothing), do not offer the same
                    # attempt to a second lane.
                    self._sleep(self.poll_interval)
                    continue
                limit = pause if self._listener is None else self.poll_interval
                pause = min(pause * 2, self.poll_interval)
                if self._has_cron and self.cron_every is not None:
                    limit = min(limit, max(next_tick - time.monotonic(), 0.0))
                if wake_at is not None:
                    limit = min(limit, max(wake_at - now, 0.0))
                self._sleep(limit)
            except SquidMeshError as exc:
                logger.warning(
                    "worker %s: %s; retrying in %.1fs", self.name, exc, self.poll_interval
                )
                self._stopping.wait(self.poll_interval)
            except Exception:
                logger.exception("worker %s: dispatcher error", self.name)
                self._stopping.wait(self.poll_interval)

    def _next_due(self) -> float | None:
        """The earliest moment any of the queues has something to claim (may be past)."""
        now = self._engine.clock()
        earliest: float | None = None
        for q in self.queues:
            blocked = self._engine.blocked_until(q)
            if blocked > now:
                candidate: float | None = blocked
            else:
                candidate = self._engine.store.next_due(q, self._engine.wf_keys())
            if candidate is not None and (earliest is None or candidate < earliest):
                earliest = candidate
        return earliest

    def _sleep(self, seconds: float) -> None:
        self._changed.wait(seconds)
        self._changed.clear()

    def _woken(self, queue: str) -> None:
        if queue in self.queues:
            self._changed.set()

    def _listen(self) -> None:
        try:
            while not self._stopping.is_set():
                announced = self._listener.wait(0.25)
                if announced is None:
                    # The connection broke: poll meanwhile, then listen again and look once,
                    # for whatever was announced while nobody listened.
                    self._stopping.wait(self.poll_interval)
                    if self._listener.open():
                        self._changed.set()
                elif announced.intersection(self.queues):
                    self._changed.set()
        finally:
            self._listener.close()

    def _heartbeats(self) -> None:
        # Runs until stop() has released what is left, grace period included.
        while not self._beats_done.wait(min(self.heartbeat_every / 2, 1.0)):
            now = time.monotonic()
            with self._lock:
                due = [
                    (owner, claim)
                    for owner, (claim, since) in self._current.items()
                    if now - since >= self.heartbeat_every
                ]
            for owner, claim in due:
                if self._engine.runs_inside(claim):
                    continue  # a transactional step holds its run's lock: nobody can take it
                try:
                    self._engine.heartbeat_claim(claim)
                except SquidMeshError as exc:
                    logger.warning(
                        "worker %s: heartbeat of %s in run %s: %s",
                        self.name,
                        claim.attempt.step,
                        claim.state.run_id,
                        exc,
                    )
                except Exception:
                    logger.exception("worker %s: heartbeat failed", self.name)
                with self._lock:
                    if owner in self._current and self._current[owner][0] is claim:
                        self._current[owner] = (claim, now)

    def _release(self, claim: Claim) -> int:
        if self._engine.runs_inside(claim):
            # Its step runs inside the transaction that records it: that commits or, if the
            # process ends first, rolls back and leaves the claim to its lease. Releasing would
            # wait for the run's lock until the step ends.
            return 0
        try:
            released = self._engine.release_claim(claim)
        except SquidMeshError as exc:
            logger.warning("worker %s: could not release a claim: %s", self.name, exc)
            return 0
        if released:
            logger.warning(
                "worker %s: %s of run %s still running after the grace period; released",
                self.name,
                claim.attempt.step,
                claim.state.run_id,
                extra={
                    "run_id": claim.state.run_id,
                    "workflow": claim.state.workflow,
                    "step": claim.attempt.step,
                    "attempt": claim.attempt.number,
                },
            )
        return int(released)

    def _queue_counts(self) -> dict[tuple[str, str], int]:
        counts = self._engine.queue_counts(self._engine.clock())
        out: dict[tuple[str, str], int] = {}
        for q in self.queues:
            visible, claimed, scheduled, _expired = counts.get(q, (0, 0, 0, 0))
            out[(q, "visible")] = visible
            out[(q, "claimed")] = claimed
            out[(q, "scheduled")] = scheduled
        return out


def _positive(option: str, value: float | timedelta) -> float:
    seconds = to_seconds(option, value)
    if seconds <= 0:
        raise InvalidOptionError(option, "expected a positive number of seconds")
    return seconds
