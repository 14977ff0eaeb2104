"""Test utilities for host applications: a fake clock, ``drain``, and a fresh mesh per test.

Retries, durable waits and cron slots are driven by moving a :class:`FakeClock` instead of
sleeping; :func:`drain` runs every visible attempt (and, with ``advance=True``, moves the clock to
the next due one); :func:`mesh_for_tests` connects to a fresh SQLite file or a fresh PostgreSQL
schema. The pytest plugin (loaded automatically once squid-mesh is installed) offers the same as
the ``clock`` and ``mesh`` fixtures.

Example:
    >>> from squid_mesh.testing import FakeClock, drain, mesh_for_tests
    >>> import squid_mesh as sm
    >>> wf = sm.Workflow("hello")
    >>> @wf.step(retry=sm.RetryPolicy(max_attempts=2, backoff=sm.Backoff.fixed(60)))
    ... def greet(input, ctx):
    ...     if ctx.attempt == 1:
    ...         raise RuntimeError("flaky")
    ...     return {"greeting": "hi"}
    >>> wf.transition("greet", to=sm.COMPLETE)
    >>> clock = FakeClock()
    >>> with mesh_for_tests([wf], clock=clock) as mesh:
    ...     run = mesh.start("hello", {})
    ...     steps = drain(mesh, clock=clock, advance=True)  # the 60 s backoff: no sleeping
    ...     (mesh.inspect_run(run.id).status.value, steps, clock.now - FakeClock.START)
    ('completed', 2, 60.0)
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from squid_mesh.definition.workflow import Workflow
from squid_mesh.engine.entropy import SeededEntropy
from squid_mesh.errors import InvalidOptionError
from squid_mesh.mesh import Mesh, connect

__all__ = ["FakeClock", "drain", "mesh_for_tests"]


class FakeClock:
    """A clock that only tests move: pass it to ``connect(clock=...)`` and ``advance`` it.

    Example:
        >>> clock = FakeClock()
        >>> clock.advance(seconds=30) - FakeClock.START
        30.0
        >>> clock.advance(timedelta(minutes=1)) - FakeClock.START
        90.0
    """

    START = 1_750_000_000.0  # 2025-06-15T15:06:40Z: a fixed, ordinary moment

    def __init__(self, start: float | datetime = START) -> None:
        self.now = _epoch("start", start)

    def __call__(self) -> float:
        """The current time in epoch seconds (what squid-mesh asks the clock)."""
        return self.now

    def advance(
        self,
        delta: float | timedelta = 0.0,
        *,
        seconds: float = 0.0,
        minutes: float = 0.0,
        hours: float = 0.0,
        days: float = 0.0,
    ) -> float:
        """Move forward (never back) and return the new time in epoch seconds."""
        step = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
        step += seconds + 60 * minutes + 3600 * hours + 86400 * days
        if step < 0:
            raise InvalidOptionError("seconds", "a fake clock only moves forward")
        self.now += step
        return self.now

    def set(self, when: float | datetime) -> float:
        """Jump to ``when`` (not earlier than now) and return it in epoch seconds."""
        target = _epoch("when", when)
        if target < self.now:
            raise InvalidOptionError("when", "a fake clock only moves forward")
        self.now = target
        return self.now

    @property
    def datetime(self) -> datetime:
        """The current time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now, UTC)


def _epoch(option: str, value: float | datetime) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidOptionError(option, "expected an aware datetime")
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOptionError(option, "expected epoch seconds or an aware datetime")
    return float(value)


def mesh_for_tests(
    workflows: Sequence[Workflow] = (),
    *,
    url: str | None = None,
    clock: Callable[[], float] | None = None,
    seed: int | None = 1,
    **options: Any,
) -> Mesh:
    """A migrated mesh on a fresh database, removed again by ``mesh.close()``.

    Without ``url``: a new SQLite file in a temporary folder. With a ``postgresql://`` URL: a new
    schema in that database (created here, dropped at close), so tests can share one database.
    ``seed`` makes run ids and jitter repeatable (``None``: system entropy). Other options go to
    :func:`squid_mesh.connect`.

    Example:
        >>> with mesh_for_tests() as mesh:
        ...     mesh.list_runs().runs
        ()
    """
    cleanups: list[Callable[[], None]] = []
    if url is None:
        folder = tempfile.mkdtemp(prefix="squid-mesh-test-")
        url = f"sqlite:///{os.path.join(folder, 'mesh.db')}"
        cleanups.append(lambda: shutil.rmtree(folder, ignore_errors=True))
    elif url.startswith(("postgresql://", "postgres://")):
        url, drop = _fresh_schema(url)
        cleanups.append(drop)
    entropy = None if seed is None else SeededEntropy(seed)
    try:
        mesh = connect(url, workflows=workflows, clock=clock, entropy=entropy, **options)
    except BaseException:
        for cleanup in cleanups:
            cleanup()
        raise
    mesh._on_close.extend(cleanups)
    try:
        mesh.migrate()
    except BaseException:
        mesh.close()  # drops the schema or the folder too
        raise
    return mesh


def _fresh_schema(url: str) -> tuple[str, Callable[[], None]]:
    import psycopg

    schema = f"squid_mesh_test_{secrets.token_hex(6)}"  # generated: nothing to quote
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    # The URL's own options (a statement_timeout, say) stay, with the search_path added.
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "options"]
    given = dict(parse_qsl(parts.query)).get("options", "")
    query.append(("options", f"{given} -c search_path={schema}".strip()))
    scoped = urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))

    def drop() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    return scoped, drop


def drain(
    mesh: Mesh,
    *,
    until: str | Callable[[Mesh], bool] | None = None,
    clock: FakeClock | None = None,
    advance: bool = False,
    owner_id: str = "drain",
    max_steps: int = 10_000,
) -> int:
    """Run every visible attempt on every queue, in this thread; return how many ran.

    Cron triggers are ticked first in every round, at the clock's time. With ``advance=True``
    (and a ``clock``), when nothing is visible the clock jumps to the next due attempt (a retry's
    backoff, a durable wait, an expired lease) and draining goes on, so no test sleeps. ``until``:
    stop once this run id has finished, or once ``until(mesh)`` is true. Raises ``RuntimeError``
    after ``max_steps`` (a workflow that never ends), or when attempts are due but cannot be
    claimed (another owner's claim, an exhausted queue limit). The clock must be the mesh's.

    Example:
        >>> drain(mesh, until=run.id, clock=clock, advance=True)  # doctest: +SKIP
        3
    """
    if advance and clock is None:
        raise InvalidOptionError("advance", "needs the FakeClock the mesh was connected with")
    engine = mesh._engine
    if clock is not None and engine.clock is not clock:
        raise InvalidOptionError("clock", "must be the clock the mesh was connected with")
    done = _stop_condition(until)
    ran = 0
    while not done(mesh):
        mesh.cron_tick()
        progressed = False
        for queue, stats in mesh.queue_stats().items():
            while stats.visible and mesh.execute_next(owner_id=owner_id, queue=queue):
                progressed = True
                ran += 1
                if done(mesh):
                    return ran
                if ran >= max_steps:
                    raise RuntimeError(f"drain: still running after {max_steps} steps")
        if progressed:
            continue
        if not advance or clock is None:
            break
        due = [at for queue in mesh.queue_stats() if (at := _next_claim(mesh, queue)) is not None]
        if not due:
            break  # nothing left but gates, or nothing at all
        if min(due) <= clock.now:
            raise RuntimeError(
                "drain: attempts are due but none could be claimed (a claim another owner "
                "holds, or a queue limit that time does not lift)"
            )
        # Cron slots before the next attempt fire on their own slot, as in production.
        slots = [s.next_fire.timestamp() for s in mesh.schedules()]
        clock.set(min([*due, *(t for t in slots if clock.now < t < min(due))]))
    return ran


def _next_claim(mesh: Mesh, queue: str) -> float | None:
    """When the queue may next yield a claim here: its next due attempt, or its limit's refill."""
    engine = mesh._engine
    blocked = engine.blocked_until(queue)
    if blocked > engine.clock():
        return blocked
    return engine.store.next_due(queue, engine.wf_keys())


def _stop_condition(until: str | Callable[[Mesh], bool] | None) -> Callable[[Mesh], bool]:
    if until is None:
        return lambda mesh: False
    if isinstance(until, str):
        run_id = until
        return lambda mesh: mesh.inspect_run(run_id).terminal
    if callable(until):
        return until
    raise InvalidOptionError("until", "expected a run id, a callable taking the mesh, or None")
