"""The attempt count is durable: each new process continues from the attempt the last one left."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

import squid_mesh as sm
from tests.acceptance.procs import workers
from tests.acceptance.workflows import all_workflows


@pytest.mark.slow
def test_attempt_numbers_survive_process_restarts(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "attempts.jsonl"
    with sm.connect(db_url, workflows=all_workflows()) as mesh:
        run = mesh.start("acc_flaky", {"log": str(log)})
        expected = ["retry_scheduled", "retry_scheduled", "completed"]
        pids = []
        with workers(tmp_path / "logs") as pool:
            for number, outcome in enumerate(expected, start=1):
                # One process per attempt: it executes once and exits.
                worker = pool.start(db_url, f"life{number}", "--limit", "1", "--max-idle", "10")
                worker.finish(timeout=30)
                pids.append(worker.pid)
                [execution] = worker.executions()
                assert (execution["attempt"], execution["outcome"]) == (number, outcome)
                # What this process left behind is durable: its attempt and (after a failure)
                # the next one, scheduled for whichever process comes next.
                snap = mesh.inspect_run(run.id)
                attempts = snap.steps[0].attempts
                assert [a.number for a in attempts] == list(range(1, min(number + 1, 3) + 1))
                assert attempts[number - 1].status == ("completed" if number == 3 else "failed")

        seen = [json.loads(line) for line in log.read_text().splitlines()]
        assert seen == [{"pid": pid, "attempt": n} for n, pid in enumerate(pids, start=1)]

        snap = mesh.inspect_run(run.id, history=True)
        assert snap.status == sm.RunStatus.COMPLETED
        assert snap.context == {"finished_on": 3}
        [step] = snap.steps
        assert [a.number for a in step.attempts] == [1, 2, 3]
        assert [a.status for a in step.attempts] == ["failed", "failed", "completed"]
        assert [a.owner for a in step.attempts] == ["life1", "life2", "life3"]
        for failed in step.attempts[:2]:
            assert failed.error is not None
            assert failed.error["type"] == "builtins.RuntimeError"
            assert failed.error["message"] == f"wobble failed on attempt {failed.number}"
        assert snap.history is not None
        kinds = Counter(entry.kind for entry in snap.history)
        assert kinds["attempt_failed"] == 2 and kinds["attempt_completed"] == 1
        assert mesh.verify() == []
