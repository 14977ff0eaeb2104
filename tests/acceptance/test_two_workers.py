"""Two worker processes drain one queue concurrently: every step runs to completion exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import squid_mesh as sm
from tests.acceptance.procs import release_barrier, workers
from tests.acceptance.workflows import all_workflows

RUNS = 500


@pytest.mark.slow
def test_two_processes_drain_500_runs_exactly_once(db_url: str, tmp_path: Path) -> None:
    with sm.connect(db_url, workflows=all_workflows()) as mesh:
        run_ids = [mesh.start("acc_three", {"n": i}).id for i in range(RUNS)]
        barrier = tmp_path / "barrier"
        barrier.mkdir()
        with workers(tmp_path / "logs") as pool:
            one = pool.start(db_url, "w1", "--barrier", str(barrier), "--max-idle", "1.0")
            two = pool.start(db_url, "w2", "--barrier", str(barrier), "--max-idle", "1.0")
            release_barrier(barrier, ["w1", "w2"], pool)
            one.finish(timeout=60)
            two.finish(timeout=60)

        # Both workers did part of the work, and together exactly one execution per step.
        assert one.count() > 0 and two.count() > 0, (one.count(), two.count())
        assert one.count() + two.count() == 3 * RUNS
        executed = Counter(
            (e["run_id"], e["step"], e["outcome"]) for e in one.executions() + two.executions()
        )
        assert len(executed) == 3 * RUNS and set(executed.values()) == {1}
        assert {outcome for (_, _, outcome) in executed} == {"completed"}

        for run_id, n in zip(run_ids, range(RUNS), strict=True):
            snap = mesh.inspect_run(run_id, history=True)
            assert snap.status == sm.RunStatus.COMPLETED, (run_id, snap.status, snap.error)
            assert snap.context == {"a": n + 1, "b": 2 * (n + 1), "c": 2 * (n + 1) - 1}
            assert snap.history is not None
            kinds = Counter(entry.kind for entry in snap.history)
            assert kinds["attempt_completed"] == 3, (run_id, kinds)
            assert kinds["attempt_claimed"] == 3, (run_id, kinds)
            assert [s.name for s in snap.steps] == ["a", "b", "c"]
            for step in snap.steps:
                completed = [a for a in step.attempts if a.status == "completed"]
                assert len(completed) == 1, (run_id, step)
                assert len(step.attempts) == 1 and completed[0].claims == 1, (run_id, step)
                assert completed[0].owner in ("w1", "w2")
        assert mesh.verify() == []
