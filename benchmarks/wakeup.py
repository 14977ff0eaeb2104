"""Idle wake-up: how long a bundled Worker, idle in another process, takes to start a new run's step.

The worker process runs ``sm.Worker`` with its default poll interval (1 s). The bench process
starts one single-step run at a time, after a random idle pause, and reads the moment the step
began from the run's context. On Postgres the worker is woken by LISTEN/NOTIFY; on SQLite it polls
adaptively (5 ms doubling up to the poll interval), so an idle worker answers within a poll.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import time

import squid_mesh as sm

Figures = dict[str, float]


def stamped() -> sm.Workflow:
    wf = sm.Workflow("bench_stamp", version="1")

    @wf.step()
    def stamp(input: dict, ctx: sm.StepContext) -> dict:
        return {"began": time.time()}

    wf.transition("stamp", to=sm.COMPLETE)
    return wf


def wake_worker(url: str) -> None:
    """Worker process body: the bundled Worker until stdin closes."""
    with sm.connect(url, workflows=[stamped()]) as mesh:
        worker = sm.Worker(mesh, concurrency=2)
        worker.start()
        print("ready", flush=True)
        sys.stdin.read()
        worker.stop()


def wakeup(url: str, samples: int = 40) -> Figures:
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "--wake-worker", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    rng = random.Random(7)
    delays = []
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with sm.connect(url, workflows=[stamped()]) as mesh:
            for i in range(samples):
                time.sleep(rng.uniform(0.3, 0.7))  # long enough for the worker to be idle
                sent = time.time()
                run = mesh.start("bench_stamp", {"i": i})
                deadline = time.monotonic() + 10
                while (snap := mesh.inspect_run(run.id)).status != sm.RunStatus.COMPLETED:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"run {run.id} not done after 10 s")
                    time.sleep(0.002)
                delays.append(snap.context["began"] - sent)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=60)
    ordered = sorted(delays)
    return {
        "wake_p50_ms": statistics.median(delays) * 1000,
        "wake_p90_ms": ordered[int(len(ordered) * 0.9)] * 1000,
        "wake_max_ms": ordered[-1] * 1000,
    }
