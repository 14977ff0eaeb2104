"""Seeded simulation (tests/support/simulation.py): many seeds of random operations and faults.

Process crashes, ambiguous commits and transient store errors over the real engine and store,
under a fake clock; after each seed the invariants I1-I3, I5, I6 and I8 are checked. Seeds are
spread over a few ``python -m tests.support.simulation --seeds A:B`` processes (each seed is still
single-threaded and deterministic). A failing seed is printed with the command that replays it, and
goes into REGRESSIONS once fixed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.databases import postgres_database

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SEEDS = {
    "sqlite": int(os.environ.get("SQUID_MESH_SIM_SEEDS", "2000")),
    "postgres": int(os.environ.get("SQUID_MESH_SIM_PG_SEEDS", "100")),
}
PROCESSES = {"sqlite": 2, "postgres": 3}  # Postgres seeds wait on the server more than they compute
REGRESSIONS: list[int] = []  # seeds that once failed: none so far


def _split(seeds: list[int], parts: int) -> list[list[int]]:
    return [seeds[i::parts] for i in range(parts)]


def _stores(backend: str, parts: int) -> Iterator[list[str | None]]:
    """One store per process: SQLite makes a file per seed; Postgres gets a database per process."""
    if backend == "sqlite":
        yield [None] * parts
        return
    with ExitStack() as stack:
        urls = [stack.enter_context(postgres_database()) for _ in range(parts)]
        for url in urls:
            # Commit durability is not what the simulation tests (no server crash here), and
            # waiting for the WAL flush on every commit would make each seed several times slower.
            name = url.rsplit("/", 1)[1]
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        yield list(urls)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_seeded_simulations_keep_every_invariant(backend: str) -> None:
    seeds = [*REGRESSIONS, *range(SEEDS[backend])]
    parts = PROCESSES[backend]
    for stores in _stores(backend, parts):
        procs = []
        for chunk, store in zip(_split(seeds, parts), stores, strict=True):
            args = [
                sys.executable,
                "-m",
                "tests.support.simulation",
                "--seeds",
                ",".join(map(str, chunk)),
            ]
            if store:
                args += ["--store", store]
            procs.append(subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True))
        outputs = [proc.communicate(timeout=900)[0] for proc in procs]
        for proc, out in zip(procs, outputs, strict=True):
            assert out.strip(), f"a simulation process exited {proc.returncode} without a summary"
    summaries: list[dict[str, Any]] = [json.loads(out.splitlines()[-1]) for out in outputs]
    failures = {seed: problems for s in summaries for seed, problems in s["failures"].items()}
    ops = sum(s["ops"] for s in summaries)
    hours = sum(s["hours"] for s in summaries)
    crashes = sum(s["crashes"] for s in summaries)
    injected = sum(s["injected"] for s in summaries)
    print(
        f"{backend}: {len(seeds)} seeds, {ops} operations, {hours:.1f} simulated hours, "
        f"{crashes} process crashes, {injected} injected store faults"
    )
    replay = "python -m tests.support.simulation --seed {}" + (
        " --store postgresql://..." if backend == "postgres" else ""
    )
    assert not failures, "\n".join(
        f"seed {seed}: {problems} (replay: {replay.format(seed)})"
        for seed, problems in failures.items()
    )
    assert sum(s["seeds"] for s in summaries) == len(seeds)
    assert crashes > len(seeds) and injected > len(seeds), "the faults were injected"
