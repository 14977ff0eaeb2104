"""Workflow semantics across real process deaths: transactional steps, compensation, gates."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import pytest

import squid_mesh as sm
from tests.acceptance.procs import workers
from tests.acceptance.workflows import all_workflows


def host_rows(db_url: str, sql: str) -> list[tuple[object, ...]]:
    if db_url.startswith("sqlite:///"):
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            return list(conn.execute(sql))
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        return list(conn.execute(sql).fetchall())


def host_command(db_url: str, sql: str) -> None:
    if db_url.startswith("sqlite:///"):
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            conn.execute(sql)
        return
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(sql)


@pytest.mark.slow
def test_a_transactional_step_killed_before_its_commit_leaves_no_row_and_runs_again(
    db_url: str, tmp_path: Path
) -> None:
    host_command(db_url, "CREATE TABLE acc_ledger (run_id TEXT, pid INTEGER)")
    flags = tmp_path / "flags"
    flags.mkdir()
    (flags / "die").write_text("")
    with sm.connect(db_url, workflows=all_workflows()) as mesh:
        run = mesh.start("acc_ledger", {"dir": str(flags)})
        with workers(tmp_path / "logs") as pool:
            doomed = pool.start(db_url, "doomed", "--max-idle", "5", lease=1.0)
            assert doomed.wait(timeout=30) == -signal.SIGKILL
            assert host_rows(db_url, "SELECT run_id FROM acc_ledger") == [], "write rolled back"
            rescuer = pool.start(db_url, "rescuer", "--max-idle", "3", lease=30.0)
            rescuer.finish(timeout=30)
        rows = host_rows(db_url, "SELECT run_id, pid FROM acc_ledger")
        assert rows == [(run.id, rescuer.pid)], "exactly one row, from the attempt that committed"
        snap = mesh.inspect_run(run.id)
        assert snap.status == sm.RunStatus.COMPLETED
        assert snap.context == {"booked_by": rescuer.pid}
        assert snap.steps[0].attempts[0].claims == 2
        assert mesh.verify() == []


@pytest.mark.slow
def test_a_compensation_chain_killed_midway_resumes_where_it_stopped(
    db_url: str, tmp_path: Path
) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    (flags / "die_in_void").write_text("")
    with sm.connect(db_url, workflows=all_workflows()) as mesh:
        run = mesh.start("acc_saga", {"dir": str(flags)})
        with workers(tmp_path / "logs") as pool:
            doomed = pool.start(db_url, "doomed", "--max-idle", "5", lease=1.0)
            assert doomed.wait(timeout=30) == -signal.SIGKILL
            mid = mesh.inspect_run(run.id)
            assert mid.status == sm.RunStatus.RUNNING and mid.compensation == "running"
            assert mid.current_steps == ("authorize#compensate",)
            rescuer = pool.start(db_url, "rescuer", "--max-idle", "3", lease=30.0)
            rescuer.finish(timeout=30)
        log = (flags / "undo.log").read_text().split()
        assert log == ["void", "void", "release"], "void re-ran after the kill, release once"
        snap = mesh.inspect_run(run.id, history=True)
        assert snap.status == sm.RunStatus.FAILED and snap.compensation == "completed"
        assert snap.error is not None and snap.error["code"] == "declined"
        void = next(s for s in snap.steps if s.name == "authorize#compensate")
        assert len(void.attempts) == 1 and void.attempts[0].claims == 2
        assert [(e["step"], e["outcome"]) for e in rescuer.executions()] == [
            ("authorize#compensate", "completed"),
            ("reserve#compensate", "completed"),
        ]
        assert mesh.verify() == []


@pytest.mark.slow
def test_a_paused_run_is_approved_by_a_new_process_after_the_old_ones_stopped(
    db_url: str, tmp_path: Path
) -> None:
    with sm.connect(db_url, workflows=all_workflows()) as mesh:
        run = mesh.start("acc_gated", {})
    # Every process that knew the run is gone; the approval comes from a fresh one.
    with workers(tmp_path / "logs") as pool:
        first = pool.start(db_url, "first", "--max-idle", "1")
        first.finish(timeout=30)
        second = pool.start(db_url, "second", "--approve", run.id, "--max-idle", "1")
        lines = second.finish(timeout=30)
    approved = json.loads(lines[0])
    assert approved == {"approved": run.id, "status": "running"}
    with sm.connect(db_url, workflows=all_workflows()) as mesh:
        snap = mesh.inspect_run(run.id)
    assert snap.status == sm.RunStatus.COMPLETED
    assert snap.context["prepared_by"] == first.pid
    assert snap.context["shipped_by"] == second.pid
    assert snap.context["approval"]["actor"] == "second"
    assert snap.context["approval"]["comment"] == "after a restart"
