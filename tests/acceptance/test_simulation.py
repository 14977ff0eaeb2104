"""Seeded simulation (tests/support/simulation.py): many seeds of random operations and faults.

Process crashes, ambiguous commits and transient store errors over the real engine and the SQLite
store, under a fake clock; after each seed the invariants I1-I3, I5, I6 and I8 are checked. A
failing seed is printed with the command that replays it, and is added to REGRESSIONS once fixed.
"""

from __future__ import annotations

import logging
import os

import pytest

from tests.support.simulation import simulate

pytestmark = pytest.mark.slow

SEEDS = int(os.environ.get("SQUID_MESH_SIM_SEEDS", "300"))
REGRESSIONS: list[int] = []  # seeds that once failed: none so far


def test_seeded_simulations_keep_every_invariant() -> None:
    logging.disable(logging.WARNING)  # retries and failures are the workload, not news
    try:
        failures, hours, crashes, injected = [], 0.0, 0, 0
        for seed in [*REGRESSIONS, *range(SEEDS)]:
            out = simulate(seed)
            hours += out.simulated_seconds / 3600
            crashes += out.crashes
            injected += sum(out.injected.values())
            if out.problems:
                failures.append(
                    f"seed {seed}: {out.problems[:3]} (replay: python -m tests.support.simulation "
                    f"--seed {seed})"
                )
    finally:
        logging.disable(logging.NOTSET)
    print(
        f"{SEEDS} seeds: {hours:.1f} simulated hours, {crashes} process crashes, "
        f"{injected} injected store faults"
    )
    assert not failures, "\n".join(failures)
    assert crashes > SEEDS and injected > SEEDS, "the faults were injected"
