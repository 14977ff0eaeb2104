"""A DAG join whose two dependencies complete at the same time in two processes runs exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import squid_mesh as sm
from tests.acceptance.procs import wait_for, workers
from tests.acceptance.workflows import all_workflows

RUNS = 20


@pytest.mark.slow
def test_a_join_runs_once_when_both_dependencies_finish_together(
    db_url: str, tmp_path: Path
) -> None:
    files = tmp_path / "meet"
    files.mkdir()
    with sm.connect(db_url, workflows=all_workflows()) as mesh:
        run_ids: list[str] = []
        with workers(tmp_path / "logs") as pool:
            one = pool.start(db_url, "w1", "--max-idle", "3")
            two = pool.start(db_url, "w2", "--max-idle", "3")
            # One run at a time: both workers poll, one claims a root and waits in it for the
            # other root to start, which only the other worker can claim. So the two roots of
            # every run run, and complete, at the same time in two processes.
            for _ in range(RUNS):
                run_ids.append(mesh.start("acc_join", {"dir": str(files)}).id)
                wait_for(
                    "the run to complete",
                    lambda: mesh.inspect_run(run_ids[-1]).terminal,
                    timeout=30,
                )
            one.finish(timeout=60)
            two.finish(timeout=60)

        executions = one.executions() + two.executions()
        per_step = Counter((e["run_id"], e["step"]) for e in executions)
        missing = {
            run_id: mesh.inspect_run(run_id, history=True)
            for run_id in run_ids
            if (run_id, "both") not in per_step
        }
        assert not missing, [
            (s.id, s.status, [(h.seq, h.kind, h.data.get("key")) for h in s.history or ()])
            for s in missing.values()
        ]
        assert set(per_step.values()) == {1}, "no step of any run executed twice"

        for run_id in run_ids:
            snap = mesh.inspect_run(run_id, history=True)
            assert snap.status == sm.RunStatus.COMPLETED, (run_id, snap.error)
            assert snap.history is not None
            joins_planned = [
                h
                for h in snap.history
                if h.kind == "steps_planned"
                and any(a["step"] == "both" for a in h.data["attempts"])
            ]
            assert len(joins_planned) == 1, (run_id, joins_planned)
            (join_step,) = [s for s in snap.steps if s.name == "both"]
            assert len(join_step.attempts) == 1
            left, right = snap.context["left"]["by"], snap.context["right"]["by"]
            assert snap.context["joined"] == [left, right]
            assert left != right, f"run {run_id}: both roots ran in {left}"
        assert mesh.verify() == []
