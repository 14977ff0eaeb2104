"""soak: is the runtime stable under a bounded mix of traffic?

``--runs N`` runs are started at a steady pace over ``--duration S`` seconds while ``--workers K``
worker processes (``squid-mesh worker``, two lanes each) execute them: payments (most succeed,
some only after retries), refunds that are approved, reminders that are cancelled right after they start,
ledger postings that are replayed once done, and one cron slot per hundred runs. At the end every
run must have reached the end its kind expects, and ``verify()`` must find no journal that
refolds to something else than its projection. Figures: runs/s, steps/s, start-to-finish
latency percentiles, the deepest visible queue seen.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click

import squid_mesh as sm
from host_app import db
from host_app.gateway import Gateway
from host_app.workflows import all_workflows

HERE = Path(__file__).resolve().parents[1]


def _kind(i: int) -> str:
    return {5: "retry", 6: "approval", 7: "cancel", 8: "replay", 9: "dag"}.get(i % 10, "success")


EXPECTED = {
    "success": "completed",
    "retry": "completed",
    "approval": "completed",
    "cancel": "cancelled",
    "replay": "completed",
    "replayed": "completed",
    "dag": "completed",
    "cron": "completed",
}


def _workers(url: str, k: int) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable, "-m", "squid_mesh.cli", "worker", "--db", url,
        "--app", "host_app.workflows:all_workflows", "--queue", "default", "--queue", "invites",
        "--concurrency", "2", "--poll-interval", "0.2",
    ]  # fmt: skip
    logs = Path(tempfile.mkdtemp(prefix="host-app-soak-"))
    procs = []
    for n in range(k):
        with (logs / f"worker-{n}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [*cmd, "--name", f"soak-{n}"], env=env, stdout=subprocess.DEVNULL, stderr=log
                )
            )
    return procs


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


def run_soak(url: str, runs: int, workers: int, duration: float) -> bool:
    """The soak; prints its figures; returns False on a lost or unexpectedly ended run."""
    db.migrate(url)
    kinds: dict[str, str] = {}
    todo: dict[str, str] = {}  # approvals to give and replays to start
    deepest = [0]
    sampling = threading.Event()
    with sm.connect(url, workflows=all_workflows()) as mesh, Gateway() as gateway:
        mesh.migrate()
        tag = str(int(time.time() * 1000))
        pay = {"amount": 5, "gateway_url": gateway.url}

        def sample() -> None:
            with sm.connect(url, workflows=all_workflows()) as watcher:
                while not sampling.wait(0.2):
                    stats = watcher.queue_stats()
                    deepest[0] = max([deepest[0], *(s.visible for s in stats.values())])

        counts = mesh.run_counts()
        baseline = sum(counts.get(s, 0) for s in ("completed", "failed", "cancelled"))
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # Cron traffic: one daily slot per hundred runs, the last ones up to today, ticked
        # before the workers start (their own ticks then find every slot taken).
        days = max(runs // 100, 1)
        mesh.cron_tick(now=time.time() - 86_400 * days)
        for back in range(days - 1, -1, -1):
            for snap in mesh.cron_tick(now=time.time() - 86_400 * back):
                kinds[snap.id] = "cron"
        procs = _workers(url, workers)
        began = time.monotonic()
        try:
            with click.progressbar(length=runs, label="starting runs") as bar:
                for i in range(runs):
                    rid = _start_one(mesh, i, tag, pay)
                    kinds[rid] = _kind(i)
                    if kinds[rid] in ("approval", "replay"):
                        todo[rid] = kinds[rid]
                    if i % 20 == 19:
                        _drive(mesh, todo, kinds)
                    bar.update(1)
                    pause = began + duration * (i + 1) / runs - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
            _finish(mesh, todo, kinds, baseline, max(duration * 3, 120))
            elapsed = time.monotonic() - began
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=60)
            sampling.set()
            sampler.join(5)
        return _report(mesh, kinds, elapsed, deepest[0], runs, workers)


def _start_one(mesh: sm.Mesh, i: int, tag: str, pay: dict[str, object]) -> str:
    """Start run number ``i`` of the mix (a cancelled one is cancelled at once)."""
    kind = _kind(i)
    if kind in ("success", "retry"):
        invoice = f"{'flaky' if kind == 'retry' else 'ok'}-{tag}-{i}"
        return mesh.start("payment_recovery", {"invoice_id": invoice, **pay}).id
    if kind == "approval":
        return mesh.start("refund_approval", {"ticket": f"S-{tag}-{i}"}).id
    if kind == "cancel":
        rid = mesh.start("reminder", {"recipient": f"r-{tag}-{i}"}).id
        mesh.cancel(rid, reason="soak: changed our mind")
        return rid
    if kind == "replay":
        return mesh.start("ledger_posting", {"amount": 3, "memo": f"m{i}"}).id
    return mesh.start("dependency_recovery", {"service": f"s{i}"}).id


def _finish(
    mesh: sm.Mesh, todo: dict[str, str], kinds: dict[str, str], baseline: int, limit: float
) -> None:
    """Keep driving until every run has ended (or ``limit`` seconds have passed)."""
    deadline = time.monotonic() + limit
    with click.progressbar(length=len(kinds), label="finishing     ") as bar:
        done = 0
        while time.monotonic() < deadline:
            _drive(mesh, todo, kinds)
            finished = _finished(mesh, baseline)
            bar.length = len(kinds)
            bar.update(finished - done)
            done = finished
            if finished >= len(kinds) and not todo:
                return
            time.sleep(0.2)


def _drive(mesh: sm.Mesh, todo: dict[str, str], kinds: dict[str, str]) -> None:
    """What an operator does meanwhile: approve paused refunds, replay finished postings.

    ``todo`` holds the runs still waiting for that; each leaves it once handled (or ended).
    """
    for rid, kind in list(todo.items()):
        snap = mesh.inspect_run(rid)
        if kind == "approval" and snap.status == sm.RunStatus.PAUSED:
            mesh.approve(rid, actor="soak", idempotency_key=f"soak-{rid}")
            del todo[rid]
        elif kind == "replay" and snap.status == sm.RunStatus.COMPLETED:
            kinds[mesh.replay(rid, idempotency_key="soak").id] = "replayed"
            del todo[rid]
        elif snap.terminal:
            del todo[rid]


def _finished(mesh: sm.Mesh, baseline: int) -> int:
    counts = mesh.run_counts()
    ended = sum(counts.get(s, 0) for s in ("completed", "failed", "cancelled"))
    return ended - baseline


def _report(
    mesh: sm.Mesh, kinds: dict[str, str], elapsed: float, deepest: int, runs: int, workers: int
) -> bool:
    latencies: list[float] = []
    steps = 0
    wrong: list[str] = []
    lost: list[str] = []
    for rid, kind in kinds.items():
        snap = mesh.inspect_run(rid)
        steps += sum(
            1 for s in snap.steps for a in s.attempts if a.status == sm.AttemptStatus.COMPLETED
        )
        if not snap.terminal:
            lost.append(f"{rid} ({kind}, {snap.status.value})")
        elif snap.status.value != EXPECTED[kind]:
            wrong.append(f"{rid} ({kind}): {snap.status.value}, expected {EXPECTED[kind]}")
        elif kind in ("success", "retry", "dag", "replay", "replayed"):
            latencies.append((snap.updated_at - snap.created_at).total_seconds())
    problems = mesh.verify()
    counts: dict[str, int] = {}
    for kind in kinds.values():
        counts[kind] = counts.get(kind, 0) + 1
    click.echo(
        f"\nsoak: {runs} runs started ({len(kinds)} with replays and cron), {workers} workers"
    )
    click.echo("  mix: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))
    click.echo(f"  wall time       {elapsed:8.1f} s")
    click.echo(f"  runs/s          {len(kinds) / elapsed:8.1f}")
    click.echo(f"  steps/s         {steps / elapsed:8.1f}  ({steps} steps completed)")
    if latencies:
        click.echo(
            "  start->finish   "
            f"p50 {statistics.median(latencies) * 1000:.0f} ms, "
            f"p95 {percentile(latencies, 0.95) * 1000:.0f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms  (runs without a gate or a wait)"
        )
    click.echo(f"  deepest visible queue  {deepest}")
    click.echo(f"  verify          {len(problems)} anomalies")
    click.echo(f"  lost runs       {len(lost)}")
    click.echo(f"  unexpected ends {len(wrong)}")
    for line in [*lost, *wrong][:10]:
        click.echo(f"    {line}")
    return not lost and not wrong and not problems
