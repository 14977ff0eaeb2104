"""A worker killed with SIGKILL mid-step: after its lease expires another process takes over."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import pytest

import squid_mesh as sm
from tests.acceptance.procs import wait_for, workers
from tests.acceptance.workflows import all_workflows


@pytest.mark.slow
def test_sigkilled_worker_attempt_is_reclaimed_and_completed_once(
    db_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "flags"
    folder.mkdir()
    (folder / "slow").write_text("")  # the first execution sleeps 60 s
    with sm.connect(db_url, workflows=all_workflows()) as mesh:
        run = mesh.start("acc_sleepy", {"dir": str(folder)})
        with workers(tmp_path / "logs") as pool:
            doomed = pool.start(db_url, "doomed", "--max-idle", "20", lease=1.0)
            wait_for(
                "the first worker to start the step", (folder / f"started.{doomed.pid}").exists
            )
            os.kill(doomed.pid, signal.SIGKILL)
            assert doomed.wait(timeout=10) == -signal.SIGKILL
            (folder / "slow").unlink()

            held = mesh.inspect_run(run.id).steps[0].attempts[0]
            assert held.status == "running" and held.owner == "doomed" and held.claims == 1

            rescuer = pool.start(db_url, "rescuer", "--max-idle", "5", "--limit", "1", lease=30.0)
            rescuer.finish(timeout=30)

        assert rescuer.executions() == [
            {
                "run_id": run.id,
                "step": "nap",
                "attempt": 1,
                "outcome": "completed",
                "run_status": "completed",
            }
        ]
        snap = mesh.inspect_run(run.id, history=True)
        assert snap.status == sm.RunStatus.COMPLETED
        assert snap.context == {"pid": rescuer.pid}
        [step] = snap.steps
        [attempt] = step.attempts
        assert attempt.number == 1 and attempt.status == "completed"
        assert attempt.claims == 2 and attempt.owner == "rescuer"
        assert snap.history is not None
        kinds = Counter(entry.kind for entry in snap.history)
        assert kinds["attempt_claimed"] == 2
        assert kinds["attempt_completed"] == 1
        assert mesh.verify() == []
