"""A worker whose lease expired and whose attempt was taken over cannot complete it late."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import squid_mesh as sm
from tests.acceptance.procs import wait_for, workers
from tests.acceptance.workflows import all_workflows


@pytest.mark.slow
def test_late_completion_after_takeover_is_refused(db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "flags"
    folder.mkdir()
    with sm.connect(db_url, workflows=all_workflows()) as mesh:
        run = mesh.start("acc_contended", {"dir": str(folder)})
        with workers(tmp_path / "logs") as pool:
            # A claims with a 1 s lease and holds the step (no heartbeat) until "release" exists.
            a = pool.start(db_url, "A", "--hold", "--limit", "1", "--max-idle", "20", lease=1.0)
            wait_for("A to start the step", (folder / "claimed.A").exists)
            # B polls until A's lease has expired, takes the attempt over and completes it.
            b = pool.start(db_url, "B", "--limit", "1", "--max-idle", "20", lease=30.0)
            b.finish(timeout=30)
            assert a.proc.poll() is None, "A must still be inside its step"
            after_b = mesh.inspect_run(run.id)
            assert after_b.status == sm.RunStatus.COMPLETED
            # Now A's step returns {"by": "A"}: too late, its claim was replaced.
            (folder / "release").write_text("")
            a.finish(timeout=30)

        assert b.executions() == [
            {
                "run_id": run.id,
                "step": "work",
                "attempt": 1,
                "outcome": "completed",
                "run_status": "completed",
            }
        ]
        assert a.executions() == [
            {
                "run_id": run.id,
                "step": "work",
                "attempt": 1,
                "outcome": "lease_lost",
                "run_status": "completed",
            }
        ]
        snap = mesh.inspect_run(run.id, history=True)
        assert snap.status == sm.RunStatus.COMPLETED
        assert snap.context == {"by": "B"}
        assert snap.revision == after_b.revision, "the refused completion wrote nothing"
        [step] = snap.steps
        [attempt] = step.attempts
        assert attempt.status == "completed" and attempt.output == {"by": "B"}
        assert attempt.claims == 2 and attempt.owner == "B"
        assert snap.history is not None
        kinds = Counter(entry.kind for entry in snap.history)
        assert kinds["attempt_claimed"] == 2
        assert kinds["attempt_completed"] == 1
        [completed] = [e for e in snap.history if e.kind == "attempt_completed"]
        assert completed.data["output"] == {"by": "B"}
        assert mesh.verify() == []
