"""Transactional steps: the step's own SQL writes commit with its completion, or not at all."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.clock import FakeClock

LEASE = 10.0


class Crash(BaseException):
    """Stands for the worker process dying inside the step (the engine does not catch it)."""


def insert_sql(cursor: Any) -> str:
    placeholder = "?" if isinstance(cursor, sqlite3.Cursor) else "%s"
    return f"INSERT INTO host_ledger (run_id, entry) VALUES ({placeholder}, {placeholder})"


@pytest.fixture
def ledger(db_url: str) -> Iterator[Any]:
    """A host table in the test database, and a function that reads its entries."""
    if db_url.startswith("sqlite:///"):
        path = db_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE host_ledger (run_id TEXT, entry TEXT)")

        def rows() -> list[str]:
            with sqlite3.connect(path) as conn:
                return [r[0] for r in conn.execute("SELECT entry FROM host_ledger ORDER BY entry")]

    else:
        import psycopg

        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE host_ledger (run_id TEXT, entry TEXT)")

        def rows() -> list[str]:
            with psycopg.connect(db_url, autocommit=True) as conn:
                found = conn.execute("SELECT entry FROM host_ledger ORDER BY entry").fetchall()
                return [r[0] for r in found]

    yield rows


def booking(behaviour: dict[str, Any]) -> sm.Workflow:
    wf = sm.Workflow("booking", version="1")

    @wf.step(transactional=True, retry=sm.RetryPolicy(max_attempts=2, backoff=sm.Backoff.fixed(1)))
    def reserve(input: dict, ctx: sm.StepContext) -> dict:
        ctx.db.execute(insert_sql(ctx.db), (ctx.run_id, f"reserve-{ctx.attempt}"))
        mode = behaviour.get(ctx.attempt, "ok")
        if mode == "raise":
            raise RuntimeError("ledger check failed after the write")
        if mode == "crash":
            raise Crash()
        return {"reserved": True}

    @wf.step()
    def notify(input: dict, ctx: sm.StepContext) -> dict:
        return {"notified": input["reserved"]}

    wf.transition("reserve", to="notify")
    wf.transition("notify", to=sm.COMPLETE)
    return wf


def test_the_step_writes_and_its_completion_commit_together(
    make_mesh: MeshFactory, ledger: Any
) -> None:
    mesh = make_mesh([booking({})])
    run = mesh.start("booking", {})
    done = mesh.execute_next(owner_id="w")
    assert done is not None and (done.step, done.outcome) == ("reserve", "completed")
    assert ledger() == ["reserve-1"]
    assert mesh.execute_next(owner_id="w") is not None
    assert mesh.inspect_run(run.id).context == {"reserved": True, "notified": True}
    assert mesh.verify() == []


def test_a_failure_after_the_write_leaves_no_row_and_a_retry_writes_once(
    make_mesh: MeshFactory, clock: FakeClock, ledger: Any
) -> None:
    mesh = make_mesh([booking({1: "raise"})])
    run = mesh.start("booking", {})
    first = mesh.execute_next(owner_id="w")
    assert first is not None and first.outcome == "retry_scheduled"
    assert ledger() == [], "the failed attempt's write was rolled back"
    clock.advance(1)
    second = mesh.execute_next(owner_id="w")
    assert second is not None and second.outcome == "completed"
    assert ledger() == ["reserve-2"]
    snap = mesh.inspect_run(run.id)
    assert [a.status for a in snap.steps[0].attempts] == ["failed", "completed"]
    assert "ledger check failed" in (snap.steps[0].attempts[0].error or {})["message"]


def test_a_failure_with_no_retry_left_fails_the_run_with_no_row(
    make_mesh: MeshFactory, clock: FakeClock, ledger: Any
) -> None:
    mesh = make_mesh([booking({1: "raise", 2: "raise"})])
    run = mesh.start("booking", {})
    mesh.execute_next(owner_id="w")
    clock.advance(1)
    mesh.execute_next(owner_id="w")
    assert mesh.inspect_run(run.id).status == sm.RunStatus.FAILED
    assert ledger() == []


def test_a_crash_before_the_commit_leaves_no_row_and_the_step_runs_again(
    make_mesh: MeshFactory, clock: FakeClock, ledger: Any
) -> None:
    behaviour: dict[str, Any] = {1: "crash"}
    mesh = make_mesh([booking(behaviour)])
    run = mesh.start("booking", {})
    with pytest.raises(Crash):
        mesh.execute_next(owner_id="w1", lease=LEASE)
    assert ledger() == []
    snap = mesh.inspect_run(run.id)
    attempt = snap.steps[0].attempts[0]
    assert attempt.status == sm.AttemptStatus.RUNNING and attempt.owner == "w1"
    # Another worker takes the attempt over once the crashed worker's lease is gone.
    other = make_mesh([booking({})])
    assert other.execute_next(owner_id="w2", lease=LEASE) is None
    clock.advance(LEASE + 1)
    again = other.execute_next(owner_id="w2", lease=LEASE)
    assert again is not None and again.outcome == "completed"
    assert ledger() == ["reserve-1"], "one row, written by the run that committed"
    assert other.inspect_run(run.id).steps[0].attempts[0].claims == 2
    assert other.verify() == []


def test_a_claimed_transactional_step_of_a_run_cancelled_meanwhile_never_runs(
    make_mesh: MeshFactory, ledger: Any
) -> None:
    wf = sm.Workflow("two_phase", version="1")

    @wf.step()
    def prepare(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    @wf.step(transactional=True)
    def book(input: dict, ctx: sm.StepContext) -> dict:
        ctx.db.execute(insert_sql(ctx.db), (ctx.run_id, "booked"))
        return {}

    wf.transition("prepare", to="book")
    wf.transition("book", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    other = make_mesh([wf])
    run = mesh.start("two_phase", {})
    # With prefetch, recording prepare also claims book for this worker...
    assert mesh.execute_next(owner_id="w", prefetch=True) is not None
    # ... and another process cancels the run before this worker gets to book.
    other.cancel(run.id)
    done = mesh.execute_next(owner_id="w", prefetch=True)
    assert done is not None and (done.step, done.outcome) == ("book", "discarded")
    assert ledger() == [], "the step body never ran"
    assert mesh.inspect_run(run.id).status == sm.RunStatus.CANCELLED
    assert mesh.verify() == []


def test_db_and_child_runs_outside_their_place_are_refused(make_mesh: MeshFactory) -> None:
    seen: list[str] = []
    wf = sm.Workflow("misuse", version="1")

    @wf.step()
    def plain(input: dict, ctx: sm.StepContext) -> dict:
        try:
            ctx.db.execute("SELECT 1")
        except RuntimeError as exc:
            seen.append(str(exc))
        return {}

    @wf.step(transactional=True)
    def inside(input: dict, ctx: sm.StepContext) -> dict:
        try:
            ctx.start_child("misuse", {}, child_key="x")
        except RuntimeError as exc:
            seen.append(str(exc))
        assert ctx.cancelled is False
        ctx.heartbeat()  # nothing to extend: the run is locked while the step runs
        return {}

    wf.transition("plain", to="inside")
    wf.transition("inside", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("misuse", {})
    while mesh.execute_next(owner_id="w"):
        pass
    assert mesh.inspect_run(run.id).status == sm.RunStatus.COMPLETED
    assert "exists only in steps declared transactional=True" in seen[0]
    assert "not available in a transactional step" in seen[1]


@pytest.mark.parametrize("backend", ["postgres"])  # a failed SQLite statement aborts nothing
def test_a_failed_statement_the_step_swallowed_fails_the_step(
    make_mesh: MeshFactory, clock: FakeClock, ledger: Any
) -> None:
    # PostgreSQL refuses every statement after a failed one until a rollback: recording the step
    # as completed is impossible, and retrying the whole recording would loop for ever.
    wf = sm.Workflow("swallow", version="1")

    @wf.step(transactional=True, retry=sm.RetryPolicy(max_attempts=2, backoff=sm.Backoff.fixed(1)))
    def swallow(input: dict, ctx: sm.StepContext) -> dict:
        ctx.db.execute(insert_sql(ctx.db), (ctx.run_id, f"swallow-{ctx.attempt}"))
        if ctx.attempt == 1:
            with contextlib.suppress(Exception):  # the step goes on as if nothing happened
                ctx.db.execute("SELECT 1 / 0")
        return {}

    wf.transition("swallow", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("swallow", {})
    first = mesh.execute_next(owner_id="w")
    assert first is not None and first.outcome == "retry_scheduled"
    assert ledger() == []
    clock.advance(1)
    second = mesh.execute_next(owner_id="w")
    assert second is not None and second.outcome == "completed"
    (step,) = mesh.inspect_run(run.id).steps
    assert [a.status for a in step.attempts] == ["failed", "completed"]
    assert (step.attempts[0].error or {})["code"] == "step_writes_rolled_back"
    assert ledger() == ["swallow-2"]


def test_a_deferred_constraint_the_commit_breaks_fails_the_attempt(
    make_mesh: MeshFactory, db_url: str, clock: FakeClock
) -> None:
    tables = [
        "CREATE TABLE host_parent (id int PRIMARY KEY)",
        "CREATE TABLE host_child (parent_id int REFERENCES host_parent (id)"
        " DEFERRABLE INITIALLY DEFERRED)",
    ]
    if db_url.startswith("sqlite:///"):  # squid-mesh's SQLite connection enforces foreign keys
        path = db_url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            for sql in tables:
                conn.execute(sql)

        def children() -> int:
            with contextlib.closing(sqlite3.connect(path)) as conn:
                return int(conn.execute("SELECT count(*) FROM host_child").fetchone()[0])

    else:
        import psycopg

        with psycopg.connect(db_url, autocommit=True) as conn:
            for sql in tables:
                conn.execute(sql)

        def children() -> int:
            with psycopg.connect(db_url, autocommit=True) as conn:
                return int(conn.execute("SELECT count(*) FROM host_child").fetchone()[0])

    wf = sm.Workflow("orphan", version="1")

    @wf.step(transactional=True, retry=sm.RetryPolicy(max_attempts=2, backoff=sm.Backoff.fixed(1)))
    def add_child(input: dict, ctx: sm.StepContext) -> dict:
        ctx.db.execute("INSERT INTO host_child (parent_id) VALUES (42)")  # checked at commit
        return {}

    wf.transition("add_child", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("orphan", {})
    first = mesh.execute_next(owner_id="w1", lease=LEASE)
    assert first is not None and first.outcome == "retry_scheduled"
    assert first.error is not None and first.error["code"] == "step_writes_refused"
    clock.advance(1)
    second = mesh.execute_next(owner_id="w1", lease=LEASE)
    assert second is not None and second.outcome == "failed"
    assert mesh.inspect_run(run.id).status == "failed"
    assert children() == 0
    assert mesh.verify() == []
