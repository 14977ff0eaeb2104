"""The Django store (``django://ALIAS``) and the ``squid_mesh.django`` app, on SQLite and Postgres.

Django is configured once for the whole test process, with one alias per backend; each test
points its alias at a fresh database and creates the ledger table the steps write through the
ORM.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import squid_mesh as sm
from squid_mesh.testing import FakeClock, drain
from tests.support.databases import ADMIN_URL, _admin, database

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import IntegrityError, connections, transaction  # noqa: E402
from django.db.models import F  # noqa: E402
from django.test import override_settings  # noqa: E402

ALIASES = {"sqlite": "default", "postgres": "pg"}
# The alias under test: the steps' ORM calls go there (a host with one database needs no using()).
CURRENT = {"alias": "default"}
Data = dict[str, Any]


def _configure(folder: Path) -> None:
    if settings.configured:
        return
    pg = urlsplit(ADMIN_URL)
    sqlite_options = {"transaction_mode": "IMMEDIATE", "timeout": 30}
    postgres = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "unused",
        "USER": pg.username or "",
        "HOST": pg.hostname or "",
        "PORT": str(pg.port or ""),
    }
    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(folder / "unused.db"),
                "OPTIONS": sqlite_options,
            },
            "pg": postgres,
            # Django's default transaction mode: squid-mesh refuses it.
            "deferred": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(folder / "d.db")},
            # Nothing would ever commit: refused too.
            "manual": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(folder / "m.db"),
                "OPTIONS": sqlite_options,
                "AUTOCOMMIT": False,
            },
            # The pg alias's database at REPEATABLE READ (pointed there by the test that uses it).
            "pg_rr": {**postgres, "OPTIONS": {"isolation_level": 3}},
            # The pg alias's database with Django's per-request health checks.
            "pg_hc": {**postgres, "CONN_HEALTH_CHECKS": True, "CONN_MAX_AGE": None},
        },
        INSTALLED_APPS=["squid_mesh.django", "tests.support.django_ledger"],
        USE_TZ=True,
    )
    django.setup()


@pytest.fixture
def alias(backend: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The backend's alias, on a fresh migrated database with the ledger table."""
    _configure(tmp_path_factory.getbasetemp())
    from tests.support.django_ledger.models import Entry, Line

    name = ALIASES[backend]
    with database(backend, tmp_path) as url:
        conn = connections[name]
        conn.close()
        conn.settings_dict["NAME"] = (
            url.removeprefix("sqlite:///") if backend == "sqlite" else urlsplit(url).path[1:]
        )
        with conn.schema_editor() as editor:
            editor.create_model(Entry)
            editor.create_model(Line)
        CURRENT["alias"] = name
        try:
            yield name
        finally:
            connections.close_all()


def entries() -> Any:
    from tests.support.django_ledger.models import Entry

    return Entry.objects.using(CURRENT["alias"])


# Module level: SQUID_MESH["WORKFLOWS"] names it by its dotted path.
ledger = sm.Workflow("ledger", version="1", payload={"key": sm.Field(str)})


@ledger.step(transactional=True)
def book(input: Data, ctx: sm.StepContext) -> Data:
    entries().create(key=input["key"], amount=1)
    counter, _ = entries().get_or_create(key="counter")
    entries().filter(pk=counter.pk).update(amount=F("amount") + 1)
    return {"booked": input["key"]}


ledger.transition("book", to=sm.COMPLETE)


def test_a_transactional_step_commits_its_orm_writes_with_its_completion(alias: str) -> None:
    committed: list[str] = []
    wf = sm.Workflow("notify", version="1")

    @wf.step(transactional=True)
    def write(input: Data, ctx: sm.StepContext) -> Data:
        entries().create(key=ctx.run_id)
        transaction.on_commit(lambda: committed.append(ctx.run_id), using=CURRENT["alias"])
        assert committed == []
        return {}

    wf.transition("write", to=sm.COMPLETE)
    with sm.connect(f"django://{alias}", workflows=[wf]) as mesh:
        run = mesh.start("notify", {})
        assert not entries().filter(key=run.id).exists()
        assert drain(mesh, until=run.id) == 1
        assert mesh.inspect_run(run.id).status == "completed"
        assert entries().filter(key=run.id).exists()
    assert committed == [run.id]  # the step's on_commit ran once the recording committed


def test_a_step_that_fails_after_writing_leaves_none_of_its_writes(alias: str) -> None:
    wf = sm.Workflow("flaky", version="1")

    @wf.step(transactional=True, retry=sm.RetryPolicy(max_attempts=2, backoff=sm.Backoff.fixed(5)))
    def write_then_fail(input: Data, ctx: sm.StepContext) -> Data:
        entries().create(key=f"attempt-{ctx.attempt}")
        if ctx.attempt == 1:
            raise RuntimeError("the warehouse said no")
        return {}

    wf.transition("write_then_fail", to=sm.COMPLETE)
    clock = FakeClock()
    with sm.connect(f"django://{alias}", workflows=[wf], clock=clock) as mesh:
        run = mesh.start("flaky", {})
        drain(mesh, until=run.id, clock=clock, advance=True)
        (step,) = mesh.inspect_run(run.id).steps
        assert [a.status for a in step.attempts] == ["failed", "completed"]
        assert step.attempts[0].error is not None
        assert step.attempts[0].error["message"] == "the warehouse said no"
    assert sorted(entries().values_list("key", flat=True)) == ["attempt-2"]


def test_a_database_error_the_step_swallowed_fails_the_step(alias: str) -> None:
    # Django marks the transaction for rollback when an ORM write fails inside it, even if the
    # step catches the error: recording "completed" would claim writes that are undone.
    entries().create(key="taken")
    wf = sm.Workflow("swallow", version="1")

    @wf.step(transactional=True, retry=sm.RetryPolicy(max_attempts=1))
    def swallow(input: Data, ctx: sm.StepContext) -> Data:
        entries().create(key="written-before")
        with contextlib.suppress(IntegrityError):  # caught without an atomic block of its own
            entries().create(key="taken")
        return {"fine": True}

    wf.transition("swallow", to=sm.COMPLETE)
    with sm.connect(f"django://{alias}", workflows=[wf]) as mesh:
        run = mesh.start("swallow", {})
        drain(mesh, until=run.id)
        snapshot = mesh.inspect_run(run.id)
        assert snapshot.status == "failed"
        assert snapshot.error is not None
        assert snapshot.error["code"] == "step_writes_rolled_back"
        assert "swallow" in snapshot.error["message"]
    assert list(entries().values_list("key", flat=True)) == ["taken"]


def test_writes_the_commit_refuses_fail_the_attempt_under_the_retry_policy(alias: str) -> None:
    # The foreign key is deferred: the step's write goes through, and the commit that records
    # the step refuses the whole transaction. The attempt must fail (and count), not run again
    # after every lease without ever being recorded.
    from tests.support.django_ledger.models import Line

    wf = sm.Workflow("orphan", version="1")

    @wf.step(transactional=True, retry=sm.RetryPolicy(max_attempts=2, backoff=sm.Backoff.fixed(5)))
    def add_line(input: Data, ctx: sm.StepContext) -> Data:
        entries().create(key=f"attempt-{ctx.attempt}")
        Line.objects.using(CURRENT["alias"]).create(entry_id=987654)  # no such entry
        return {"added": True}

    wf.transition("add_line", to=sm.COMPLETE)
    clock = FakeClock()
    with sm.connect(f"django://{alias}", workflows=[wf], clock=clock) as mesh:
        run = mesh.start("orphan", {})
        assert drain(mesh, until=run.id, clock=clock, advance=True) == 2
        snapshot = mesh.inspect_run(run.id)
        assert snapshot.status == "failed"
        (step,) = snapshot.steps
        assert [a.status for a in step.attempts] == ["failed", "failed"]
        assert [a.claims for a in step.attempts] == [1, 1]
        error = step.attempts[-1].error
        assert error is not None and error["code"] == "step_writes_refused"
        assert "add_line" in error["message"] and "FOREIGN KEY" in error["message"].upper()
        assert mesh.verify() == []
    assert not entries().exists()
    assert not Line.objects.using(alias).exists()


def test_an_on_commit_callback_that_fails_after_the_commit_raises_as_it_is(alias: str) -> None:
    # The step is recorded (the transaction committed); the host's callback then fails on its
    # own: that error is the host's, not the database refusing the step's writes.
    wf = sm.Workflow("hooked", version="1")

    @wf.step(transactional=True)
    def write(input: Data, ctx: sm.StepContext) -> Data:
        entries().create(key=ctx.run_id)
        transaction.on_commit(lambda: entries().create(key=ctx.run_id), using=CURRENT["alias"])
        return {}

    wf.transition("write", to=sm.COMPLETE)
    with sm.connect(f"django://{alias}", workflows=[wf]) as mesh:
        run = mesh.start("hooked", {})
        with pytest.raises(IntegrityError):
            mesh.execute_next(owner_id="w")
        snapshot = mesh.inspect_run(run.id)
        assert snapshot.status == "completed"
        assert [a.status for a in snapshot.steps[0].attempts] == ["completed"]
    assert entries().filter(key=run.id).count() == 1


def test_a_durable_atomic_block_inside_a_transactional_step_fails_the_attempt(
    alias: str,
) -> None:
    # durable=True promises a commit at the end of the block; inside the recording transaction
    # Django refuses it, and the attempt fails with nothing of the step kept.
    wf = sm.Workflow("durable", version="1")

    @wf.step(transactional=True, retry=sm.RetryPolicy(max_attempts=1))
    def insist(input: Data, ctx: sm.StepContext) -> Data:
        entries().create(key="before")
        with transaction.atomic(using=CURRENT["alias"], durable=True):
            entries().create(key="inside")
        return {}

    wf.transition("insist", to=sm.COMPLETE)
    with sm.connect(f"django://{alias}", workflows=[wf]) as mesh:
        run = mesh.start("durable", {})
        drain(mesh, until=run.id)
        snapshot = mesh.inspect_run(run.id)
        assert snapshot.status == "failed"
        assert snapshot.error is not None and snapshot.error["type"] == "builtins.RuntimeError"
        assert "durable" in snapshot.error["message"]
    assert not entries().exists()


def test_a_start_inside_the_host_transaction_commits_or_rolls_back_with_it(alias: str) -> None:
    with sm.connect(f"django://{alias}", workflows=[ledger]) as mesh:
        with pytest.raises(RuntimeError), transaction.atomic(using=alias):
            entries().create(key="host-write")
            lost = mesh.start("ledger", {"key": "lost"})
            assert mesh.inspect_run(lost.id).status == "running"  # the host sees its own write
            raise RuntimeError("the host's request fails")
        with pytest.raises(sm.RunNotFoundError):
            mesh.inspect_run(lost.id)
        assert not entries().exists()
        assert mesh.list_runs().runs == ()

        with transaction.atomic(using=alias):
            kept = mesh.start("ledger", {"key": "kept"}, idempotency_key="k-1")
            entries().create(key="host-write")
        assert drain(mesh, until=kept.id) == 1
        assert mesh.start("ledger", {"key": "kept"}, idempotency_key="k-1").id == kept.id
    keys = sorted(entries().values_list("key", flat=True))
    assert keys == ["counter", "host-write", "kept"]


def test_a_start_in_a_host_transaction_marked_for_rollback_is_refused(alias: str) -> None:
    entries().create(key="taken")
    with sm.connect(f"django://{alias}", workflows=[ledger]) as mesh:
        with pytest.raises(sm.StoreError, match="host's transaction is marked for rollback"):  # noqa: SIM117
            with transaction.atomic(using=alias):
                with contextlib.suppress(IntegrityError):  # swallowed without its own atomic
                    entries().create(key="taken")
                mesh.start("ledger", {"key": "never"})
        assert mesh.list_runs().runs == ()


@pytest.mark.parametrize("backend", ["postgres"])  # a server shows its connections
def test_a_stopped_worker_leaves_no_connection_open(alias: str) -> None:
    def open_connections() -> int:
        with _admin() as admin:  # type: ignore[attr-defined]
            name = connections[alias].settings_dict["NAME"]
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
            ).fetchone()
            return int(row[0])

    # A step may also use another alias (here the same database, another DATABASES entry): the
    # worker's threads must close those connections too as they end.
    connections["pg_rr"].settings_dict["NAME"] = connections[alias].settings_dict["NAME"]
    report = sm.Workflow("report", version="1")

    @report.step()
    def look(input: Data, ctx: sm.StepContext) -> Data:
        with connections["pg_rr"].cursor() as cur:
            cur.execute("SELECT 1")
        return {}

    report.transition("look", to=sm.COMPLETE)
    with sm.connect(f"django://{alias}", workflows=[ledger, report]) as mesh:
        ids = [mesh.start("ledger", {"key": f"w{i}"}).id for i in range(3)]
        ids += [mesh.start("report", {}).id for _ in range(3)]
        before = open_connections()  # this thread's own
        worker = sm.Worker(mesh, concurrency=3, poll_interval=0.05)
        worker.start()
        try:
            deadline = time.monotonic() + 30
            while len(mesh.list_runs(status="completed", limit=6).runs) < 6:
                assert time.monotonic() < deadline, "the worker did not finish 6 runs in 30 s"
                time.sleep(0.05)
            assert open_connections() > before  # the lanes, the dispatcher, the listener
        finally:
            worker.stop()
        deadline = time.monotonic() + 5
        while open_connections() > before and time.monotonic() < deadline:
            time.sleep(0.05)  # a closed connection leaves pg_stat_activity a moment later
        assert open_connections() == before
        assert {mesh.inspect_run(i).status for i in ids} == {"completed"}


def test_worker_lanes_each_write_on_their_own_connection(alias: str) -> None:
    runs = 40
    with sm.connect(f"django://{alias}", workflows=[ledger]) as mesh:
        ids = [mesh.start("ledger", {"key": f"k{i}"}).id for i in range(runs)]
        worker = sm.Worker(mesh, concurrency=4, poll_interval=0.05)
        worker.start()
        try:
            deadline = time.monotonic() + 60
            while len(mesh.list_runs(status="completed", limit=runs).runs) < runs:
                assert time.monotonic() < deadline, "the worker did not finish 40 runs in 60 s"
                time.sleep(0.05)
        finally:
            worker.stop()
        assert {mesh.inspect_run(i).status for i in ids} == {"completed"}
    assert entries().get(key="counter").amount == runs
    assert entries().exclude(key="counter").count() == runs


def test_a_sqlite_alias_without_immediate_transactions_is_refused(alias: str) -> None:
    with pytest.raises(sm.InvalidOptionError, match=r"\['transaction_mode'\].*IMMEDIATE"):
        sm.connect("django://deferred")
    with pytest.raises(sm.InvalidOptionError, match=r"\['manual'\]\['AUTOCOMMIT'\]\": is False"):
        sm.connect("django://manual")
    with pytest.raises(sm.InvalidOptionError, match=r"django://nope: no such alias"):
        sm.connect("django://nope")
    with pytest.raises(sm.InvalidOptionError, match=r"django://ALIAS"):
        sm.connect("django://")


def test_manage_py_migrate_creates_squid_meshs_tables(backend: str, tmp_path: Path) -> None:
    _configure(tmp_path)
    name = ALIASES[backend]
    with database(backend, tmp_path, migrated=False) as url:
        conn = connections[name]
        conn.close()
        conn.settings_dict["NAME"] = (
            url.removeprefix("sqlite:///") if backend == "sqlite" else urlsplit(url).path[1:]
        )
        try:
            with override_settings(SQUID_MESH={"DATABASE": name}):
                out = io.StringIO()
                call_command("migrate", database=name, verbosity=1, stdout=out)
                assert "Applying squid-mesh 0001_initial... OK" in out.getvalue()
                again = io.StringIO()
                call_command("migrate", database=name, verbosity=1, stdout=again)
                assert "squid-mesh" not in again.getvalue()  # nothing left to apply
                with sm.connect(f"django://{name}") as mesh:
                    assert mesh.list_runs().runs == ()
        finally:
            connections.close_all()


def test_the_settings_name_what_is_wrong(alias: str) -> None:
    from squid_mesh.django import get_mesh

    cases = {
        "SQUID_MESH\\['DATABSE'\\]: unknown key": {"DATABSE": alias},
        "SQUID_MESH\\['DATABASE'\\]: 'nope' is not an alias": {"DATABASE": "nope"},
        "SQUID_MESH\\['WORKFLOWS'\\]\\[0\\]: cannot import": {"WORKFLOWS": ["tests.nope.flow"]},
        "SQUID_MESH\\['WORKFLOWS'\\]\\[0\\]: .* is not an sm.Workflow": {
            "WORKFLOWS": ["tests.integration.test_django.book"]
        },
        "SQUID_MESH\\['OPTIONS'\\]\\['url'\\]: not an option": {"OPTIONS": {"url": "x"}},
    }
    for message, setting in cases.items():
        with override_settings(SQUID_MESH=setting), pytest.raises(ImproperlyConfigured) as caught:
            get_mesh()
        assert caught.match(message), setting
    config = {"DATABASE": alias, "WORKFLOWS": ["tests.integration.test_django.ledger"]}
    with override_settings(SQUID_MESH=config):
        mesh = get_mesh()
        assert get_mesh() is mesh  # one per process
        run = mesh.start("ledger", {"key": "from-settings"})
        assert drain(mesh, until=run.id) == 1
    with override_settings(SQUID_MESH={"DATABASE": alias}), pytest.raises(sm.UnknownWorkflowError):
        get_mesh().start("ledger", {"key": "x"})  # the new setting has no workflows


def test_manage_py_check_reports_bad_settings_before_any_request(alias: str) -> None:
    from django.core.management.base import SystemCheckError

    bad = {
        "squid_mesh.E001.*SQUID_MESH\\['DATABSE'\\]: unknown key": {"DATABSE": alias},
        "squid_mesh.E002.*\\['transaction_mode'\\]": {"DATABASE": "deferred"},
        "squid_mesh.E002.*\\['AUTOCOMMIT'\\]": {"DATABASE": "manual"},
    }
    for message, setting in bad.items():
        with override_settings(SQUID_MESH=setting), pytest.raises(SystemCheckError) as caught:
            call_command("check", stdout=io.StringIO(), stderr=io.StringIO(), tags=["squid_mesh"])
        assert caught.match(f"(?s){message}"), setting
    good = {"DATABASE": alias, "WORKFLOWS": ["tests.integration.test_django.ledger"]}
    out = io.StringIO()
    with override_settings(SQUID_MESH=good):
        call_command("check", stdout=out, tags=["squid_mesh"])
    assert "no issues" in out.getvalue()


def test_the_worker_command_runs_the_configured_workflows(alias: str) -> None:
    config = {"DATABASE": alias, "WORKFLOWS": ["tests.integration.test_django.ledger"]}
    with override_settings(SQUID_MESH=config):
        from squid_mesh.django import get_mesh

        ids = [get_mesh().start("ledger", {"key": f"c{i}"}).id for i in range(3)]
        out = io.StringIO()
        call_command("squid_mesh_worker", "--max-idle", "0.3", "--concurrency", "2", stdout=out)
        assert "executed 3 step(s)" in out.getvalue()
        assert {get_mesh().inspect_run(i).status for i in ids} == {"completed"}


@pytest.mark.parametrize("backend", ["postgres"])  # SQLite has no snapshot isolation levels
def test_a_race_lost_inside_a_repeatable_read_host_transaction_is_not_retried(alias: str) -> None:
    import psycopg

    connections["pg_rr"].settings_dict["NAME"] = connections[alias].settings_dict["NAME"]
    with (
        sm.connect(f"django://{alias}", workflows=[ledger]) as mesh,
        sm.connect("django://pg_rr", workflows=[ledger]) as snapshot_mesh,
    ):
        run = mesh.start("ledger", {"key": "raced"})
        with pytest.raises(sm.StoreError) as caught, transaction.atomic(using="pg_rr"):
            assert connections["pg_rr"].isolation_level == psycopg.IsolationLevel.REPEATABLE_READ
            assert snapshot_mesh.inspect_run(run.id).status == "running"  # the snapshot begins
            assert drain(mesh, until=run.id) == 1  # another connection completes the run
            started = time.monotonic()
            snapshot_mesh.cancel(run.id)  # decided on the snapshot's run: it lost the race
        assert caught.match("retry the host's transaction")
        assert time.monotonic() - started < 1.0, "the race was retried in a snapshot"
        assert mesh.inspect_run(run.id).status == "completed"
        assert snapshot_mesh.inspect_run(run.id).status == "completed"


@pytest.mark.parametrize("backend", ["postgres"])
def test_a_step_that_heartbeats_inside_a_repeatable_read_host_transaction_completes(
    alias: str,
) -> None:
    # The heartbeat changes the run inside the host's own transaction: the record's optimistic
    # save is stale against it, and the locked path (which sees it) must still record the step.
    connections["pg_rr"].settings_dict["NAME"] = connections[alias].settings_dict["NAME"]
    wf = sm.Workflow("beating", version="1")

    @wf.step()
    def beat(input: Data, ctx: sm.StepContext) -> Data:
        ctx.heartbeat()
        return {"beat": True}

    wf.transition("beat", to=sm.COMPLETE)
    with sm.connect("django://pg_rr", workflows=[wf]) as mesh:
        run = mesh.start("beating", {})
        with transaction.atomic(using="pg_rr"):
            done = mesh.execute_next(owner_id="w")
        assert done is not None and done.outcome == "completed"
        assert mesh.inspect_run(run.id).status == "completed"


@pytest.mark.parametrize("backend", ["postgres"])  # a server can drop a connection; a file cannot
def test_a_connection_the_server_dropped_is_replaced(alias: str) -> None:
    with sm.connect(f"django://{alias}", workflows=[ledger]) as mesh:
        first = mesh.start("ledger", {"key": "before"})
        with connections[alias].cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            (pid,) = cur.fetchone()
        with _admin() as admin:  # type: ignore[attr-defined]
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(sm.StoreError, match=r"django://pg \(postgresql sm_test_"):
            mesh.inspect_run(first.id)
        # The next call checks the connection, finds it gone, and Django connects again.
        assert mesh.inspect_run(first.id).status == "running"


@pytest.mark.parametrize("backend", ["postgres"])
def test_with_health_checks_a_new_request_never_meets_a_dropped_connection(alias: str) -> None:
    from django.core.signals import request_finished, request_started

    connections["pg_hc"].settings_dict["NAME"] = connections[alias].settings_dict["NAME"]
    with sm.connect("django://pg_hc", workflows=[ledger]) as mesh:
        request_started.send(sender=None)
        run = mesh.start("ledger", {"key": "checked"})
        request_finished.send(sender=None)  # CONN_MAX_AGE None: the connection is kept
        with connections["pg_hc"].cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            (pid,) = cur.fetchone()
        with _admin() as admin:  # type: ignore[attr-defined]
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        request_started.send(sender=None)  # the next request: its first use checks the connection
        assert mesh.inspect_run(run.id).status == "running"
        with connections["pg_hc"].cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            assert cur.fetchone()[0] != pid  # a new connection
        second = mesh.start("ledger", {"key": "after"})
        assert drain(mesh, until=second.id) == 2


def listening(alias: str) -> bool:
    with connections[alias].cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query = 'LISTEN squid_mesh'"
        )
        (found,) = cur.fetchone()
    return bool(found)


@pytest.mark.parametrize("backend", ["postgres"])  # SQLite has no notifications: workers poll
def test_an_idle_worker_is_woken_by_a_start_in_another_process(alias: str) -> None:
    # Another mesh stands for another process: its start reaches the worker only by NOTIFY.
    with (
        sm.connect(f"django://{alias}", workflows=[ledger]) as mesh,
        sm.connect(f"django://{alias}", workflows=[ledger]) as web,
    ):
        # An idle poller would sleep for a minute.
        worker = sm.Worker(mesh, poll_interval=60)
        worker.start()
        try:
            # The worker listens on a connection of its own, made from the alias's settings.
            deadline = time.monotonic() + 10
            while not listening(alias):
                assert time.monotonic() < deadline, "no connection runs LISTEN squid_mesh"
                time.sleep(0.05)
            run = web.start("ledger", {"key": "wake"})
            deadline = time.monotonic() + 20
            while web.inspect_run(run.id).status != "completed":
                assert time.monotonic() < deadline, "the worker was not woken (no LISTEN?)"
                time.sleep(0.05)
        finally:
            worker.stop()


@pytest.mark.parametrize("backend", ["postgres"])  # a failed SQLite statement aborts nothing
def test_a_failed_statement_the_step_swallowed_fails_the_step(alias: str) -> None:
    # No ORM bookkeeping here: a raw cursor's failed statement leaves the transaction in error.
    wf = sm.Workflow("raw_swallow", version="1")

    @wf.step(transactional=True, retry=sm.RetryPolicy(max_attempts=1))
    def swallow(input: Data, ctx: sm.StepContext) -> Data:
        entries().create(key="written-before")
        with contextlib.suppress(Exception), connections[CURRENT["alias"]].cursor() as cur:
            cur.execute("SELECT 1 / 0")
        return {}

    wf.transition("swallow", to=sm.COMPLETE)
    with sm.connect(f"django://{alias}", workflows=[wf]) as mesh:
        run = mesh.start("raw_swallow", {})
        assert drain(mesh, until=run.id) == 1
        snapshot = mesh.inspect_run(run.id)
        assert snapshot.status == "failed"
        assert (snapshot.error or {})["code"] == "step_writes_rolled_back"
    assert not entries().exists()


class Exit(BaseException):
    """Stands for SystemExit in a step: the engine lets it through."""


def test_a_step_that_exits_leaves_no_transaction_open(alias: str) -> None:
    wf = sm.Workflow("exits", version="1")

    @wf.step(transactional=True)
    def leave(input: Data, ctx: sm.StepContext) -> Data:
        entries().create(key="half")
        raise Exit()

    wf.transition("leave", to=sm.COMPLETE)
    with sm.connect(f"django://{alias}", workflows=[ledger, wf]) as mesh:
        run = mesh.start("exits", {})
        with pytest.raises(Exit):
            mesh.execute_next(owner_id="w")
        conn = connections[alias]
        assert not conn.in_atomic_block and conn.get_autocommit()
        # What this thread writes next commits: another thread (connection) sees it.
        after = mesh.start("ledger", {"key": "after"})
        seen: list[str] = []

        def look() -> None:
            try:
                with sm.connect(f"django://{alias}", workflows=[ledger, wf]) as other:
                    seen.append(other.inspect_run(after.id).status)
                    seen.append(other.inspect_run(run.id).steps[0].attempts[0].status)
            finally:
                connections.close_all()

        looker = threading.Thread(target=look)
        looker.start()
        looker.join(30)
        assert seen == ["running", "running"]  # the attempt stays claimed until its lease ends
    assert not entries().exists()


def test_async_transactional_steps_are_refused_on_a_django_store(alias: str) -> None:
    wf = sm.Workflow("async_tx", version="1")

    @wf.step(transactional=True)
    async def write(input: Data, ctx: sm.StepContext) -> Data:
        return {}

    wf.transition("write", to=sm.COMPLETE)
    with pytest.raises(
        sm.DefinitionError, match=r"step 'write': on django://.* must be a plain def"
    ):
        sm.connect(f"django://{alias}", workflows=[wf])


def test_the_hosts_manual_transaction_is_joined_not_broken(backend: str, alias: str) -> None:
    # transaction.set_autocommit(False): the host runs its own transaction, without atomic.
    with sm.connect(f"django://{alias}", workflows=[ledger]) as mesh:
        transaction.set_autocommit(False, using=alias)
        try:
            if backend == "sqlite":
                # Django's savepoint would be SQLite's outermost: released, it commits.
                with pytest.raises(sm.StoreError, match=r"set_autocommit\(False\) on SQLite"):
                    mesh.start("ledger", {"key": "manual"})
                assert mesh.list_runs().runs == ()  # reads still work, inside the host's
                return
            run = mesh.start("ledger", {"key": "manual"})
            assert mesh.inspect_run(run.id).status == "running"
            assert [r.id for r in mesh.list_runs().runs] == [run.id]
            transaction.rollback(using=alias)
        finally:
            transaction.set_autocommit(True, using=alias)
        with pytest.raises(sm.RunNotFoundError):
            mesh.inspect_run(run.id)
