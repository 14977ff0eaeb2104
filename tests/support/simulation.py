"""Seeded simulation: one thread, a fake clock, the real engine and store, injected faults.

Several simulated worker processes share one store. At random points a process crashes (its mesh
and everything in memory are dropped; a new one takes its place), a commit is ambiguous (it
happened, and the caller gets an error), or a store call fails before it writes (transient). Then
faults stop, everything is drained, and the invariants are checked. Every decision comes from
``random.Random(seed)``, so a failing seed replays exactly:

    python -m tests.support.simulation --seed 1234 [--ops 300] [--store postgresql://...]

The store is a fresh SQLite file per seed, or a Postgres database emptied before each seed (the
driver is still single-threaded: the database server is the only other party). ``--seeds A:B``
runs a range (or a list) and prints one JSON summary line, which is how the CI test spreads seeds over cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import squid_mesh as sm
from squid_mesh.engine.core import Engine
from squid_mesh.store import open_store
from squid_mesh.store.faults import FaultyStore
from tests.support.clock import FakeClock

LEASE = 5.0


@dataclass
class World:
    """What steps call back into while they run: the simulation's other processes.

    ``interleave`` runs a few operations of other processes (and moves the clock) in the middle of
    a step, as real concurrency would: a claim can expire and be taken over before its step ends.
    """

    interleave: Callable[[], None] = lambda: None


def workflows(world: World) -> list[sm.Workflow]:
    three = sm.Workflow("sim_three", version="1")

    @three.step()
    def a(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        world.interleave()
        return {"a": 1}

    @three.step(transactional=True)
    def count(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        ctx.db.execute("UPDATE sim_counter SET n = n + 1")
        return {"counted": True}

    @three.step()
    def c(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"c": 1}

    three.transition("a", to="count")
    three.transition("count", to="c")
    three.transition("c", to=sm.COMPLETE)

    flaky = sm.Workflow("sim_flaky", version="1")

    @flaky.step(retry=sm.RetryPolicy(max_attempts=3, backoff=sm.Backoff.fixed(2.0)))
    def wobble(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        world.interleave()
        if ctx.attempt < 3:
            raise RuntimeError("not yet")
        return {"ok": True}

    flaky.transition("wobble", to=sm.COMPLETE)

    saga = sm.Workflow("sim_saga", version="1")

    @saga.step(compensate=lambda input, ctx: {"undone": True})
    def reserve(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        world.interleave()
        return {"r": 1}

    @saga.step()
    def capture(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        raise sm.Fail("declined", code="declined")

    saga.transition("reserve", to="capture")
    saga.transition("capture", to=sm.COMPLETE)
    return [three, flaky, saga]


@dataclass
class Outcome:
    seed: int
    ops: int
    simulated_seconds: float
    crashes: int
    injected: Counter[str]
    runs: int
    problems: list[str]


class Simulation:
    """One seed's world: the shared store, the simulated processes, the fake clock."""

    def __init__(self, seed: int, processes: int, fault_rate: float, store_url: str) -> None:
        self.rng = random.Random(seed)
        self.fault_rate = fault_rate
        self.clock = FakeClock()
        self.store = open_store(store_url)
        self.store.migrate()
        self.host = host_connection(store_url)
        self.world = World()
        self.depth = 0
        self.defs = [wf.definition() for wf in workflows(self.world)]
        self.injected: Counter[str] = Counter()
        self.simulated = 0.0
        self.crashes = 0
        self.keys: list[str] = []
        self.ops = 300
        self.procs = [self.boot() for _ in range(processes)]
        self.world.interleave = self.interleave

    def interleave(self) -> None:
        """Inside a running step: up to three operations by any process (one level deep)."""
        if self.depth or self.fault_rate == 0.0:
            return
        self.depth += 1
        try:
            if self.rng.random() < 0.25:
                # This step outlives its lease, and another process takes the attempt over.
                self.advance(LEASE + 1)
                mesh = self.rng.choice(self.procs)[0]
                with contextlib.suppress(sm.StoreError):
                    mesh.execute_next(owner_id="taker", lease=LEASE)
            for _ in range(self.rng.randrange(4)):
                self.step(self.ops)
        finally:
            self.depth -= 1

    def boot(self) -> tuple[sm.Mesh, FaultyStore]:
        """A new process: its own mesh, engine and in-memory state over the shared store."""
        faulty = FaultyStore(
            self.store, random.Random(self.rng.random()), self.fault_rate, owns=False
        )
        entropy = sm.SeededEntropy(self.rng.randrange(2**32))
        engine = Engine(faulty, self.defs, clock=self.clock, entropy=entropy)  # type: ignore[arg-type]
        return sm.Mesh(engine), faulty

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.simulated += seconds

    def step(self, ops: int) -> None:
        """One random operation by a random process."""
        self.ops = ops
        i = self.rng.randrange(len(self.procs))
        mesh, faulty = self.procs[i]
        roll = self.rng.random()
        try:
            if roll < 0.25:
                name = self.rng.choice(["sim_three", "sim_three", "sim_flaky", "sim_saga"])
                key = f"{name}:k{self.rng.randrange(ops)}"  # repeats on purpose: idempotent starts
                self.keys.append(key)  # first: an ambiguous start may exist anyway
                mesh.start(name, {}, idempotency_key=key)
            elif roll < 0.75:
                mesh.execute_next(owner_id=f"p{i}", lease=LEASE, prefetch=self.rng.random() < 0.5)
            elif roll < 0.80:
                runs = mesh.list_runs(status="running", limit=20).runs
                if runs:
                    mesh.cancel(self.rng.choice(runs).id, reason="sim")
            elif roll < 0.95:
                self.advance(self.rng.choice([0.1, 1.0, 3.0, LEASE + 1]))
            else:
                self.injected.update(faulty.injected)
                self.procs[i] = self.boot()  # a crash: this process's memory is gone
                self.crashes += 1
        except (sm.StoreError, sm.RunFinishedError):
            pass  # injected (the write may or may not have happened), or a cancel that lost a race

    def drain(self) -> sm.Mesh:
        """Faults stop: fresh processes run everything left, past every lease and backoff."""
        for _, faulty in self.procs:
            self.injected.update(faulty.injected)
        self.fault_rate = 0.0
        finals = [self.boot()[0] for _ in self.procs]
        for _ in range(200):
            if any(m.execute_next(owner_id="drain", lease=LEASE) for m in finals):
                continue
            if all(r.status.terminal for r in finals[0].list_runs(limit=1000).runs):
                break
            self.advance(LEASE + 1)
        return finals[0]


def host_connection(store_url: str) -> Any:
    """The host's own connection to the store's database, holding the transactional counter."""
    if store_url.startswith("sqlite:///"):
        conn: Any = sqlite3.connect(store_url.removeprefix("sqlite:///"), isolation_level=None)
    else:
        import psycopg

        conn = psycopg.connect(store_url, autocommit=True)
    conn.execute("CREATE TABLE IF NOT EXISTS sim_counter (n INTEGER NOT NULL)")
    conn.execute("DELETE FROM sim_counter")
    conn.execute("INSERT INTO sim_counter VALUES (0)")
    return conn


def empty_postgres(store_url: str) -> None:
    """Every squid-mesh table emptied (the migrations stay): the next seed starts from nothing."""
    import psycopg

    with psycopg.connect(store_url, autocommit=True) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename LIKE 'squid\\_mesh\\_%' AND tablename <> 'squid_mesh_migrations'"
            ).fetchall()
        ]
        if tables:
            conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")


def simulate(
    seed: int,
    ops: int = 300,
    processes: int = 3,
    fault_rate: float = 0.08,
    store_url: str | None = None,
) -> Outcome:
    """One seeded simulation; ``problems`` lists every invariant it found broken.

    ``store_url``: a Postgres database to empty and use; a fresh SQLite file when ``None``.
    """
    with contextlib.ExitStack() as stack:
        if store_url is None:
            # A RAM-backed folder where there is one: the file's fsyncs at checkpoints are not
            # what is tested here (no machine crash), and skipping them makes a seed ~25 % faster.
            ram = "/dev/shm" if Path("/dev/shm").is_dir() else None
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="sim-", dir=ram))
            store_url = f"sqlite:///{Path(folder) / 'sim.db'}"
        else:
            empty_postgres(store_url)
        return _simulate(seed, ops, processes, fault_rate, store_url)


def _simulate(seed: int, ops: int, processes: int, fault_rate: float, store_url: str) -> Outcome:
    sim = Simulation(seed, processes, fault_rate, store_url)
    count = sim.rng.randint(max(1, ops // 3), ops)  # up to ``ops``: short and long histories
    for _ in range(count):
        sim.step(ops)
    problems = check(sim.drain(), sim.host, sim.keys)
    sim.host.close()
    sim.store.close()
    return Outcome(
        seed, count, sim.simulated, sim.crashes, sim.injected, len(set(sim.keys)), problems
    )


def check(mesh: sm.Mesh, host: Any, keys: list[str]) -> list[str]:
    problems: list[str] = []
    runs = mesh.list_runs(limit=1000).runs
    if any(not r.status.terminal for r in runs):
        problems.append(f"I1: runs not ended: {[r.id for r in runs if not r.status.terminal]}")
    counted = 0
    for r in runs:
        snap = mesh.inspect_run(r.id)
        for step in snap.steps:
            done = [a for a in step.attempts if a.status == sm.AttemptStatus.COMPLETED]
            if len(done) > 1:
                problems.append(f"I2: {r.id} {step.name} completed {len(done)} times")
            if step.name == "count":
                counted += len(done)
            if r.workflow == "sim_flaky" and len(step.attempts) > 3:
                problems.append(f"I6: {r.id} has {len(step.attempts)} attempts")
    n = host.execute("SELECT n FROM sim_counter").fetchone()[0]
    if n != counted:
        problems.append(f"I3: counter {n}, completed count steps {counted}")
    # I8: each key names one run (ambiguous starts were repeated with the same key).
    if len(runs) > len(set(keys)):
        problems.append(f"I8: {len(runs)} runs for {len(set(keys))} keys")
    problems.extend(f"I5: {p}" for p in mesh.verify())
    return problems


def run_seeds(seeds: Sequence[int], ops: int, store_url: str | None) -> dict[str, Any]:
    """Many seeds; a summary with the failing seeds and their first problems."""
    summary: dict[str, Any] = {
        "seeds": len(seeds),
        "ops": 0,
        "hours": 0.0,
        "crashes": 0,
        "injected": 0,
    }
    failures: dict[str, list[str]] = {}
    for seed in seeds:
        try:
            out = simulate(seed, ops, store_url=store_url)
        except Exception as exc:  # a seed that breaks the driver itself is a failing seed too
            failures[str(seed)] = [f"raised {type(exc).__name__}: {exc}"]
            continue
        summary["ops"] += out.ops
        summary["hours"] += out.simulated_seconds / 3600
        summary["crashes"] += out.crashes
        summary["injected"] += sum(out.injected.values())
        if out.problems:
            failures[str(seed)] = out.problems[:3]
    summary["failures"] = failures
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.simulation")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--seed", type=int, help="replay one seed and print its outcome")
    which.add_argument(
        "--seeds",
        help="A:B (seeds A..B-1) or a comma-separated list: runs them, prints a JSON summary",
    )
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--store", help="a Postgres URL (emptied first); default a SQLite file")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # failed steps and retries are the workload, not news
    if args.seed is not None:
        out = simulate(args.seed, args.ops, store_url=args.store)
        print(out)
        raise SystemExit(1 if out.problems else 0)
    if ":" in args.seeds:
        start, _, stop = args.seeds.partition(":")
        seeds: Sequence[int] = range(int(start), int(stop))
    else:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    summary = run_seeds(seeds, args.ops, args.store)
    print(json.dumps(summary))
    raise SystemExit(1 if summary["failures"] else 0)


if __name__ == "__main__":
    main()
