"""Crash points: a process that dies (os._exit) at each named commit boundary loses nothing.

For each point of ``squid_mesh.engine.crashpoints`` and each store, ten forked processes run the
same workload, each armed to die at the point's 1st, 2nd ... 10th hit; then a fresh mesh finishes
everything and the invariants are checked:

I1 every acknowledged run ends; I2 one accepted completion per step visit; I3 the transactional
ledger holds exactly one row per completed posting and none for a posting cancelled before its
claim (I7: its step never started); I5 ``verify()`` is clean; I6 attempts stay within
``max_attempts``; I8 repeating every start with its key makes no second run, and each cron slot
one run. (I4, fencing, shows as I2: a stale claim's completion would be a second one.)
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import squid_mesh as sm
from squid_mesh.engine import crashpoints
from tests.acceptance.workflows import all_workflows

pytestmark = pytest.mark.slow

LEASE = 0.4
REPS = 10
T0 = 1_790_000_000.0  # cron: the ticks' fixed times (a minutely trigger, five slots)
POINTS = [
    "start.before_commit",
    "start.after_commit",
    "claim.after_commit",
    "step.after_side_effect",
    "record.before_commit",
    "record.after_commit",
    "retry.before_commit",
    "compensation.before_commit",
    "heartbeat.before_commit",
    "cancel.before_commit",
    "cron.after_start",
    "reclaim.before_commit",
]
# A reclaim needs a claim left behind first: those reps crash after a claim, then in the reclaim.
NEEDS = {"reclaim.before_commit": "claim.after_commit"}


def host(db_url: str, sql: str) -> list[tuple[Any, ...]]:
    if db_url.startswith("sqlite:///"):
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            return conn.execute(sql).fetchall()
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def workload(db_url: str, folder: str, tag: str, until_done: bool) -> None:
    """Start the runs (keyed), tick cron, cancel one posting, then execute until idle."""
    with sm.connect(db_url, workflows=all_workflows()) as mesh:
        for i in range(4):
            key = f"{tag}-{i}"
            mesh.start("acc_ledger", {"dir": folder}, idempotency_key=f"ledger-{key}")
            mesh.start("acc_flaky", {"log": f"{folder}/flaky.log"}, idempotency_key=f"flaky-{key}")
            mesh.start("acc_saga", {"dir": folder}, idempotency_key=f"saga-{key}")
            mesh.start("acc_beat", {}, idempotency_key=f"beat-{key}")
        doomed = mesh.start("acc_ledger", {"dir": folder}, idempotency_key=f"doomed-{tag}")
        # An earlier cancel that died before its commit was never acknowledged: the run may have
        # gone on and finished, and cancelling it now is refused.
        with contextlib.suppress(sm.RunFinishedError):
            mesh.cancel(doomed.id, reason="before any claim", idempotency_key=f"cancel-{tag}")
        mesh.cron_tick(now=T0)
        mesh.cron_tick(now=T0 + 300)
        while True:
            done = mesh.execute_next(owner_id=f"w-{os.getpid()}", lease=LEASE, prefetch=True)
            done = done or mesh.execute_next(owner_id=f"w-{os.getpid()}", queue="beat", lease=LEASE)
            if done:
                continue
            if not until_done or all(s.status.terminal for s in mesh.list_runs(limit=1000).runs):
                return
            time.sleep(0.05)  # a claim left by a dead process: its lease runs out


def crashing(db_url: str, folder: str, tag: str, point: str, hit: int) -> None:
    crashpoints.ARMED = point
    crashpoints._AT = hit
    crashpoints._hits[0] = 0
    workload(db_url, folder, tag, until_done=False)


def fork_run(*args: Any) -> int | None:
    proc = multiprocessing.get_context("fork").Process(target=crashing, args=args)
    proc.start()
    proc.join(60)
    assert not proc.is_alive()
    return proc.exitcode


@pytest.mark.parametrize("point", POINTS)
def test_a_crash_at_each_point_loses_nothing_and_records_nothing_twice(
    db_url: str, tmp_path: Path, point: str
) -> None:
    host(db_url, "CREATE TABLE acc_ledger (run_id TEXT, pid INTEGER)")
    folder = str(tmp_path)
    crashed = 0
    for rep in range(1, REPS + 1):
        tag = f"r{rep}"
        if point in NEEDS:
            fork_run(db_url, folder, tag, NEEDS[point], 1)
            time.sleep(LEASE)  # let the orphaned claim's lease run out
        code = fork_run(db_url, folder, tag, point, rep)
        assert code in (0, crashpoints.CRASH_EXIT), code
        crashed += code == crashpoints.CRASH_EXIT
    assert crashed >= 1, f"the workload never reached {point}"
    for rep in range(1, REPS + 1):
        workload(db_url, folder, f"r{rep}", until_done=True)  # every start again, same keys
    check_invariants(db_url, point)


def check_invariants(db_url: str, point: str) -> None:
    with sm.connect(db_url, workflows=all_workflows()) as mesh:
        runs = mesh.list_runs(limit=1000).runs
        assert all(r.status.terminal for r in runs), [r for r in runs if not r.status.terminal]
        by_workflow = Counter(r.workflow for r in runs)
        # I8: 4 x 4 keyed runs + 1 doomed per rep, and the five cron slots once.
        assert by_workflow["acc_ledger"] == REPS * 5, by_workflow
        assert by_workflow["acc_flaky"] == by_workflow["acc_saga"] == REPS * 4, by_workflow
        assert by_workflow["acc_scheduled"] == 5, by_workflow
        ledger = Counter(run_id for run_id, _ in host(db_url, "SELECT run_id, pid FROM acc_ledger"))
        for r in runs:
            snap = mesh.inspect_run(r.id)
            for step in snap.steps:
                done = [a for a in step.attempts if a.status == sm.AttemptStatus.COMPLETED]
                assert len(done) <= 1, (point, r.workflow, step.name)  # I2
            if r.workflow == "acc_flaky":
                assert len(snap.steps[0].attempts) <= 3, point  # I6
                assert snap.status == sm.RunStatus.COMPLETED, (point, snap.error)
            elif r.workflow == "acc_ledger":
                if snap.status == sm.RunStatus.CANCELLED:
                    assert ledger[r.id] == 0, point  # I7: the step never started
                    assert all(a.claims == 0 for s in snap.steps for a in s.attempts)
                else:
                    assert snap.status == sm.RunStatus.COMPLETED, (point, snap.error)
                    assert ledger[r.id] == 1, (point, ledger[r.id])  # I3
            elif r.workflow == "acc_saga":
                assert snap.status == sm.RunStatus.FAILED and snap.compensation == "completed"
        completed = [
            r for r in runs if r.workflow == "acc_ledger" and r.status.value == "completed"
        ]
        assert sum(ledger.values()) == len(completed) >= REPS * 4
        assert mesh.verify() == []  # I5
