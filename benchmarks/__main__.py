"""Run a benchmark scenario and print its figures (and write them as JSON).

Scenarios:
  latency     one process: start a 3-step run, execute_next until idle, repeat.
  throughput  start N runs, then 2 worker processes drain the queue.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import squid_mesh as sm
from benchmarks.workload import committed_transactions, fresh_store, three_steps

STEPS_PER_RUN = 3


def latency(url: str, runs: int) -> dict[str, float]:
    with sm.connect(url, workflows=[three_steps()]) as mesh:
        per_run = []
        before = committed_transactions(url)
        started = time.perf_counter()
        for i in range(runs):
            t0 = time.perf_counter()
            mesh.start("bench_three", {"i": i})
            while mesh.execute_next(owner_id="bench", prefetch=True):
                pass
            per_run.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        after = committed_transactions(url)
    per_run.sort()
    figures = {
        "steps_per_s": runs * STEPS_PER_RUN / elapsed,
        "p50_ms": statistics.median(per_run) * 1000,
        "p99_ms": per_run[int(len(per_run) * 0.99) - 1] * 1000,
    }
    if before is not None and after is not None:
        figures["transactions_per_step"] = (after - before) / (runs * STEPS_PER_RUN)
    return figures


def drain(url: str, owner: str) -> int:
    done = 0
    idle_since = None
    with sm.connect(url, workflows=[three_steps()]) as mesh:
        while True:
            if mesh.execute_next(owner_id=owner, prefetch=True):
                done += 1
                idle_since = None
                continue
            if idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > 0.5:
                return done
            time.sleep(0.05)  # an idle worker polls, as a real one would


def throughput(url: str, runs: int, workers: int = 2) -> dict[str, float]:
    with sm.connect(url, workflows=[three_steps()]) as mesh:
        for i in range(runs):
            mesh.start("bench_three", {"i": i})
    before = committed_transactions(url)
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks", "--drain", url, "--owner", f"w{n}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(workers)
    ]
    counts = [int(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    elapsed = time.perf_counter() - started - 0.5  # minus the idle wait that ends a worker
    after = committed_transactions(url)
    figures = {"steps_per_s": sum(counts) / elapsed, "steps": float(sum(counts))}
    if before is not None and after is not None:
        figures["transactions_per_step"] = (after - before) / sum(counts)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--scenario", choices=["latency", "throughput", "all"], default="all")
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/latest.json"))
    parser.add_argument("--drain", help=argparse.SUPPRESS)
    parser.add_argument("--owner", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drain:
        print(drain(args.drain, args.owner))
        return
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    scenarios = ["latency", "throughput"] if args.scenario == "all" else [args.scenario]
    results = []
    for store in stores:
        for scenario in scenarios:
            url = fresh_store(store)
            run = latency if scenario == "latency" else throughput
            figures = run(url, args.runs)
            results.append({"store": store, "scenario": scenario, "runs": args.runs, **figures})
            shown = "  ".join(f"{k}={v:,.2f}" for k, v in figures.items())
            print(f"{store:9} {scenario:11} runs={args.runs}  {shown}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
