"""Run benchmark scenarios on SQLite and Postgres, print a table, write JSON.

    python -m benchmarks [--store sqlite|postgres|both] [--scenario NAME|all] [--runs N]

Scenarios:
  latency     one process: start a 3-step run, execute_next until idle, repeat (--runs runs)
  throughput  start 10 x --runs runs, then 2 worker processes drain the queue
  history     latency, inspect_run and list_runs with 1,000 and with 1,000,000 finished runs in the store
  memory      RSS of one worker process after 10,000 and after 200,000 steps (10-step loop
              runs; the stores' workers run side by side)
  wakeup      an idle sm.Worker in another process: from start() to its step beginning
  django      latency through django:// (Django's connections) on the same kind of database
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from benchmarks import django_store, scenarios, wakeup
from benchmarks.workload import drop_store, fresh_store

TARGETS = {
    ("sqlite", "latency"): "steps_per_s >= 3,300",
    ("postgres", "latency"): "steps_per_s >= 1,250",
    ("sqlite", "throughput"): "steps_per_s >= 3,000",
    ("postgres", "throughput"): "steps_per_s >= 2,500; xact_per_step <= 1.5",
    ("sqlite", "history"): "steps, inspect_run and list_runs change_pct <= 15",
    ("postgres", "history"): "steps, inspect_run and list_runs change_pct <= 15",
    ("sqlite", "memory"): "growth_pct <= 10",
    ("postgres", "memory"): "growth_pct <= 10",
    ("sqlite", "wakeup"): "none (polls: within the 1 s poll interval)",
    ("postgres", "wakeup"): "wake_p50_ms < 100",
    ("sqlite", "django"): "none (compare with latency: the cost of Django's connections)",
    ("postgres", "django"): "none (compare with latency: the cost of Django's connections)",
}


MEMORY_STEPS = 200_000


def run_scenario(store: str, scenario: str, runs: int, history_size: int) -> dict[str, float]:
    url = fresh_store(store)
    try:
        if scenario == "latency":
            return scenarios.latency(url, runs)
        if scenario == "throughput":
            return scenarios.throughput(url, runs * 10)
        if scenario == "wakeup":
            return wakeup.wakeup(url)
        if scenario == "django":
            return django_store.latency(url, runs)
        return scenarios.history(url, runs, (1_000, history_size))
    finally:
        drop_store(url)


def run_memory(stores: list[str]) -> list[tuple[str, dict[str, float]]]:
    # One worker process per store, side by side: the Postgres one mostly waits on round trips.
    urls = {store: fresh_store(store) for store in stores}
    try:
        procs = {s: scenarios.start_memory(url, MEMORY_STEPS) for s, url in urls.items()}
        return [(s, scenarios.finish_memory(p, MEMORY_STEPS)) for s, p in procs.items()]
    finally:
        for url in urls.values():
            drop_store(url)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--scenario",
        choices=["latency", "throughput", "history", "memory", "wakeup", "django", "all"],
        default="all",
    )
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--history-size", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/latest.json"))
    parser.add_argument("--drain", help=argparse.SUPPRESS)
    parser.add_argument("--owner", help=argparse.SUPPRESS)
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    parser.add_argument("--wake-worker", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drain:
        scenarios.drain(args.drain, args.owner)
        return
    if args.wake_worker:
        wakeup.wake_worker(args.wake_worker)
        return
    if args.memory_worker:
        scenarios.memory_worker(args.memory_worker, args.steps)
        return
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    names = ["latency", "throughput", "history", "wakeup", "django", "memory"]
    chosen = names if args.scenario == "all" else [args.scenario]
    results = []
    began = time.perf_counter()

    def report(store: str, scenario: str, figures: dict[str, float], took: float) -> None:
        shown = "  ".join(f"{k}={v:,.2f}" for k, v in figures.items())
        print(f"{store:9} {scenario:10} ({took:5.0f}s)  {shown}", flush=True)
        print(f"{'':9} {'':10}          target: {TARGETS[(store, scenario)]}", flush=True)
        results.append({"store": store, "scenario": scenario, "runs": args.runs, **figures})

    for store in stores:
        for scenario in (s for s in chosen if s != "memory"):
            t0 = time.perf_counter()
            figures = run_scenario(store, scenario, args.runs, args.history_size)
            report(store, scenario, figures, time.perf_counter() - t0)
    if "memory" in chosen:
        t0 = time.perf_counter()
        for store, figures in run_memory(stores):
            report(store, "memory", figures, time.perf_counter() - t0)
    print(
        f"total {time.perf_counter() - began:.0f}s on {platform.processor() or platform.machine()}"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
