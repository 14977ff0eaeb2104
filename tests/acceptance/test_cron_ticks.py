"""Two processes tick the same cron slots at the same time: each slot yields exactly one run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import squid_mesh as sm
from tests.acceptance.procs import release_barrier, workers
from tests.acceptance.workflows import all_workflows

SLOTS = 50
BASE = 1_795_000_020.0  # 20 s past a minute: every tick below is 20 s after its slot


@pytest.mark.slow
def test_two_processes_ticking_the_same_slots_start_one_run_each(
    db_url: str, tmp_path: Path
) -> None:
    with sm.connect(db_url, workflows=all_workflows()) as mesh:
        assert mesh.cron_tick(now=BASE) == []  # the trigger is seen first: nothing is due yet
        barrier = tmp_path / "barrier"
        barrier.mkdir()
        ticks = ["--mode", "tick", "--tick-from", str(BASE + 60), "--ticks", str(SLOTS)]
        with workers(tmp_path / "logs") as pool:
            one = pool.start(db_url, "t1", "--barrier", str(barrier), *ticks)
            two = pool.start(db_url, "t2", "--barrier", str(barrier), *ticks)
            release_barrier(barrier, ["t1", "t2"], pool)
            one.finish(timeout=120)
            two.finish(timeout=120)

        page = mesh.list_runs(workflow="acc_scheduled", limit=1000)
        assert len(page) == SLOTS
        slots = Counter(mesh.inspect_run(run.id).context["schedule"]["slot"] for run in page)
        assert len(slots) == SLOTS and set(slots.values()) == {1}
        assert mesh.verify() == []
