"""A deploy across real processes: old runs park under new code, then finish or migrate."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import squid_mesh as sm
from tests.acceptance.procs import workers
from tests.acceptance.workflows import all_workflows, deployed


@pytest.mark.slow
def test_runs_of_a_version_no_process_loads_park_and_are_finished_or_migrated_later(
    db_url: str, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    with sm.connect(db_url, workflows=[*all_workflows(), deployed("1")]) as v1:
        old = [v1.start("acc_deploy", {"n": i}).id for i in range(3)]
    with workers(logs) as pool:
        # The v1 process packs every run, then stops.
        first = pool.start(db_url, "v1", "--deployed", "1", "--limit", "3", "--max-idle", "2")
        first.finish(timeout=60)
    assert Counter(e["step"] for e in first.executions()) == {"pack": 3}
    with sm.connect(db_url, workflows=[*all_workflows(), deployed("2")]) as v2:
        others = [v2.start("acc_three", {"n": i}).id for i in range(2)]
        with workers(logs) as pool:
            # The next deploy only has v2: the other runs flow, the v1 runs park.
            second = pool.start(db_url, "v2", "--deployed", "2", "--max-idle", "1")
            second.finish(timeout=60)
        assert {e["run_id"] for e in second.executions()} == set(others)
        for run_id in old:
            snap = v2.inspect_run(run_id)
            assert snap.status == sm.RunStatus.RUNNING and snap.current_steps == ("ship",)
            assert snap.parked is not None and "version '1'" in snap.parked
        moved = v2.migrate_run(old[0], to_version="2", actor="ops")
        assert moved.version == "2" and moved.parked is None
    with workers(logs) as pool:
        both = pool.start(db_url, "both", "--deployed", "1,2", "--max-idle", "1")
        both.finish(timeout=60)
    assert sorted(e["run_id"] for e in both.executions()) == sorted(old)
    with sm.connect(db_url, workflows=[*all_workflows(), deployed("1"), deployed("2")]) as mesh:
        contexts = [mesh.inspect_run(run_id).context for run_id in old]
        assert contexts[0] == {"packed_on": "1", "shipped_on": "2"}
        assert contexts[1:] == [{"packed_on": "1", "shipped_on": "1"}] * 2
        assert mesh.verify() == []
