"""The kill storm (benchmarks/storm.py), CI-sized: 10,000 runs of three steps per store.

Workers SIGKILLed and restarted every 1-4 s; on PostgreSQL (a private cluster the storm starts
itself, never the shared server) the server crashed every 10-20 s, the first time as a dead
worker's leases run out. Nothing may be lost, completed twice, counted twice or refold wrongly.
"""

from __future__ import annotations

import pytest
from benchmarks.storm import run_storm

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_kill_storm_loses_nothing_and_records_nothing_twice(store: str) -> None:
    figures = run_storm(store, runs=10_000, seed=11, limit=600)
    print(store, figures)  # the figures, for the log
    assert figures["lost"] == 0, figures
    assert figures["duplicates"] == 0, figures
    assert figures["counter_error"] == 0, figures
    assert figures["attempts_over_max"] == 0, figures
    assert figures["verify_anomalies"] == 0, figures
    assert figures["locked_errors"] == 0, figures
    assert figures["kills"] >= 1, figures
    if store == "postgres":
        assert figures["db_crashes"] >= 1, figures
    done = figures["completed"] + figures["failed"] + figures["cancelled"]
    assert done == 10_000, figures
