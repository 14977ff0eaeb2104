"""Zombie workers: a worker frozen (SIGSTOP) past twice its lease, taken over, then resumed.

Every write the resumed worker attempts for the attempt it lost is refused: its late completion
(``lease_lost``, logged by the worker) and its heartbeats. Exactly one completion is accepted per
run, the taker's. 20 cycles per store against one long-lived worker process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import squid_mesh as sm
from tests.acceptance.workflows import all_workflows

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.acceptance.workflows:all_workflows"
LEASE = 0.3
CYCLES = 20

pytestmark = pytest.mark.slow


def wait_for(predicate: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_a_resumed_zombie_worker_has_every_write_refused(db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "zombie"
    folder.mkdir()
    log = tmp_path / "zombie.log"
    cmd = [
        sys.executable, "-m", "squid_mesh.cli", "worker", "--db", db_url, "--app", APP,
        "--queue", "zombie", "--lease", str(LEASE), "--poll-interval", "0.05", "--name", "zombie",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    zpid = proc.pid
    hold = folder / f"hold.{zpid}"
    hold.touch()  # the zombie's steps wait until the test lets them go
    try:
        with sm.connect(db_url, workflows=all_workflows()) as mesh:
            for cycle in range(CYCLES):
                run = mesh.start("acc_zombie", {"dir": str(folder)})
                began = folder / f"{run.id}.began.{zpid}"
                wait_for(began.exists, f"cycle {cycle}: the zombie to start the step")
                os.kill(zpid, signal.SIGSTOP)
                time.sleep(2 * LEASE + 0.1)  # past twice the lease, heartbeats frozen with it
                taken = mesh.execute_next(owner_id="taker", queue="zombie")
                assert taken is not None and taken.outcome == "completed", (cycle, taken)
                os.kill(zpid, signal.SIGCONT)
                hold.unlink()
                returned = folder / f"{run.id}.returned.{zpid}"
                wait_for(returned.exists, f"cycle {cycle}: the zombie's step to return")
                wait_for(
                    lambda n=cycle: log.read_text().count("lease_lost") > n,
                    f"cycle {cycle}: the zombie's late completion to be refused",
                )
                hold.touch()
                snap = mesh.inspect_run(run.id, history=True)
                kinds = [e.kind for e in snap.history or ()]
                assert kinds.count("attempt_completed") == 1, kinds
                assert snap.context == {"by": os.getpid()}, "the taker's result, not the zombie's"
                claims = [i for i, k in enumerate(kinds) if k == "attempt_claimed"]
                assert len(claims) == 2, kinds
                # Nothing the zombie sent after the takeover was accepted: no heartbeat either.
                assert "attempt_heartbeat" not in kinds[claims[1] :], kinds
            assert mesh.verify() == []
        assert proc.poll() is None, "the zombie lived on and kept serving"
    finally:
        os.kill(zpid, signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=30)
    assert log.read_text().count("lease_lost") == CYCLES
