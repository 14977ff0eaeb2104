"""Latency, throughput and memory scenarios."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import squid_mesh as sm
from benchmarks.workload import STEPS_PER_RUN, committed_transactions, ten_step_loop, three_steps

Figures = dict[str, float]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def latency(
    url: str,
    runs: int,
    *,
    stats_url: str | None = None,
    settle: Callable[[], None] = lambda: None,
) -> Figures:
    """One process: start a 3-step run, execute_next until idle, repeat.

    ``stats_url``: where to read the transaction counter (the database behind a ``django://``
    URL); ``settle``: closes connections the mesh does not own, so their counts are flushed.
    """
    per_run = []
    with sm.connect(url, workflows=[three_steps()]) as mesh:
        for i in range(20):  # warm-up: caches, the planner's statistics, the page cache
            mesh.start("bench_three", {"warm": i})
            while mesh.execute_next(owner_id="bench", prefetch=True):
                pass
    settle()
    before = committed_transactions(stats_url or url)
    with sm.connect(url, workflows=[three_steps()]) as mesh:
        started = time.perf_counter()
        for i in range(runs):
            t0 = time.perf_counter()
            mesh.start("bench_three", {"i": i})
            while mesh.execute_next(owner_id="bench", prefetch=True):
                pass
            per_run.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
    settle()
    figures = {
        "steps_per_s": runs * STEPS_PER_RUN / elapsed,
        "run_p50_ms": statistics.median(per_run) * 1000,
        "run_p99_ms": percentile(per_run, 0.99) * 1000,
    }
    after = committed_transactions(stats_url or url)
    if before is not None and after is not None:
        # Includes each run's start and the final empty poll, as a host loop pays them.
        figures["xact_per_step"] = (after - before) / (runs * STEPS_PER_RUN)
    return figures


def drain(url: str, owner: str) -> None:
    """Worker process body: drain the queue, print one JSON line with what it did and when."""
    done, first, last = 0, 0.0, 0.0
    idle_since: float | None = None
    with sm.connect(url, workflows=[three_steps()]) as mesh:
        print("ready", flush=True)
        sys.stdin.readline()  # wait for the starting gun
        while True:
            if mesh.execute_next(owner_id=owner, prefetch=True):
                now = time.perf_counter()
                first = first or now
                last, done, idle_since = now, done + 1, None
                continue
            if idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > 0.5:
                break
            time.sleep(0.02)  # an idle worker polls, as a real one would
    print(json.dumps({"steps": done, "first": first, "last": last}), flush=True)


def throughput(url: str, runs: int, workers: int = 2) -> Figures:
    """N runs started, then `workers` processes drain them; time from first to last step."""
    with sm.connect(url, workflows=[three_steps()]) as mesh:
        for i in range(runs):
            mesh.start("bench_three", {"i": i})
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks", "--drain", url, "--owner", f"w{n}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(workers)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    before = committed_transactions(url)
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    reports = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    steps = sum(r["steps"] for r in reports)
    elapsed = max(r["last"] for r in reports) - min(r["first"] for r in reports if r["first"])
    figures = {"steps_per_s": steps / elapsed, "steps": float(steps)}
    after = committed_transactions(url)
    if before is not None and after is not None:
        figures["xact_per_step"] = (after - before) / steps
    return figures


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def memory_worker(url: str, steps: int) -> None:
    """Worker process body: run `steps` steps of 10-step loop runs, print RSS at 10k and at the end."""
    done, marks = 0, {}
    with sm.connect(url, workflows=[ten_step_loop()]) as mesh:
        while done < steps:
            mesh.start("bench_loop", {"n": 0})
            while mesh.execute_next(owner_id="mem", prefetch=True):
                done += 1
                if done == 10_000:
                    marks["rss_10k_kib"] = rss_kib()
        marks[f"rss_{steps // 1000}k_kib"] = rss_kib()
    print(json.dumps(marks), flush=True)


def start_memory(url: str, steps: int) -> subprocess.Popen[str]:
    """Start a worker process that runs `steps` steps and reports its RSS (see finish_memory)."""
    if url.startswith("postgres"):
        # Client memory does not depend on commit durability; skipping the fsync wait only makes
        # the 200,000 steps fit the benchmark's time budget.
        url += "?options=-c%20synchronous_commit%3Doff"
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "--memory-worker", url, "--steps", str(steps)],
        stdout=subprocess.PIPE,
        text=True,
    )


def finish_memory(proc: subprocess.Popen[str], steps: int) -> Figures:
    """RSS of the worker after 10,000 steps and after `steps` steps, and the growth between."""
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker failed with exit code {proc.returncode}")
    marks: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    first, last = marks["rss_10k_kib"], marks[f"rss_{steps // 1000}k_kib"]
    return {**marks, "growth_pct": (last - first) / first * 100}


def inspect_p50_ms(url: str, run_ids: list[str]) -> tuple[float, float]:
    """Median inspect_run latency over `run_ids`: first pass (cold pages), second pass (warm)."""
    passes = []
    with sm.connect(url, workflows=[three_steps()]) as mesh:
        for _ in range(2):
            timings = []
            for run_id in run_ids:
                t0 = time.perf_counter()
                mesh.inspect_run(run_id)
                timings.append(time.perf_counter() - t0)
            passes.append(statistics.median(timings) * 1000)
    return passes[0], passes[1]


LISTINGS: dict[str, dict[str, str]] = {
    "all": {},
    "workflow": {"workflow": "bench_three"},
    "failed": {"status": "failed"},
    "workflow_completed": {"workflow": "bench_three", "status": "completed"},
}


def list_p50_ms(url: str, repeats: int = 100, rounds: int = 5) -> dict[str, float]:
    """List_runs' first page (50 runs) for each filter shape of LISTINGS.

    The figure is the lowest of `rounds` medians of `repeats` calls, rounds interleaved across
    shapes.

    On this virtual machine the same call's median moves between ~0.25 and ~0.5 ms from one
    batch to the next (other tenants, frequency changes); the lowest batch median is the figure
    that shows the query's cost rather than the neighbours'.
    """
    best: dict[str, float] = {}
    with sm.connect(url, workflows=[three_steps()]) as mesh:
        for _ in range(3 * repeats):  # the interpreter's own warm-up (first calls run slower)
            mesh.list_runs(limit=50)
        for _ in range(rounds):
            for name, filters in LISTINGS.items():
                timings = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    mesh.list_runs(limit=50, **filters)  # type: ignore[arg-type]
                    timings.append(time.perf_counter() - t0)
                median = statistics.median(timings) * 1000
                best[name] = min(best.get(name, median), median)
    return best


def history(url: str, runs: int, sizes: tuple[int, ...] = (1_000, 1_000_000)) -> Figures:
    """Steps/s and inspect_run latency with `sizes` finished runs already in the store."""
    from benchmarks import seed

    template = seed.template_run(url)
    figures: Figures = {}
    seeded = 0
    for size in sizes:
        t0 = time.perf_counter()
        seed.seed(url, template, seeded, size - seeded)
        seed.settle(url)
        seeded = size
        label = f"{size // 1000}k"
        figures[f"seed_{label}_s"] = time.perf_counter() - t0
        # Median of three latency runs: one short run is too noisy to compare two sizes by.
        figures[f"steps_per_s_{label}"] = statistics.median(
            latency(url, runs // 2)["steps_per_s"] for _ in range(3)
        )
        seed.checkpoint(url)
        cold, warm = inspect_p50_ms(url, seed.history_ids(size, 300))
        figures[f"inspect_cold_p50_ms_{label}"] = cold
        figures[f"inspect_p50_ms_{label}"] = warm
        for name, ms in list_p50_ms(url).items():
            figures[f"list_{name}_p50_ms_{label}"] = ms
    small, large = (f"{s // 1000}k" for s in (sizes[0], sizes[-1]))
    figures["steps_change_pct"] = (
        figures[f"steps_per_s_{large}"] / figures[f"steps_per_s_{small}"] - 1
    ) * 100
    figures["inspect_change_pct"] = (
        figures[f"inspect_p50_ms_{large}"] / figures[f"inspect_p50_ms_{small}"] - 1
    ) * 100
    # The worst filter shape's change: every listing must stay flat, not their average.
    figures["list_change_pct"] = max(
        (figures[f"list_{name}_p50_ms_{large}"] / figures[f"list_{name}_p50_ms_{small}"] - 1) * 100
        for name in LISTINGS
    )
    return figures
