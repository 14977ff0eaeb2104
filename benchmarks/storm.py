"""Kill storm: workers SIGKILLed and restarted every 1-4 s, PostgreSQL crashed every 10-20 s.

    python -m benchmarks.storm --store sqlite|postgres [--runs N] [--seed S]

Runs of three steps (the second transactional: it adds one to a host counter) and some that
always fail are started up front; worker processes (``squid-mesh worker``, two lanes, lease 1 s)
drain them while a random worker is killed with SIGKILL and restarted every 1-4 s, 10 % of the
workers' writes fail on purpose (half before the write, half after the commit: ambiguous), some runs
are cancelled, and, on PostgreSQL, the server is stopped with ``pg_ctl stop -m immediate`` every
10-20 s and kept down 0-2 s. PostgreSQL runs as a private cluster this script starts itself
(initdb in a temporary directory, its own port): the machine's shared server is never touched.
On SQLite, four worker processes compete for the write lock, and no "database is locked" may reach
their logs.

Printed: kills, restarts, database crashes, lost runs (must be 0), duplicate completions (must be
0), the counter's error (must be 0), verify anomalies (must be 0), and the recovery time after each
fault (from the fault to the next step recorded) as p50 / p99 / max.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import squid_mesh as sm
from squid_mesh.store import faults

ROOT = Path(__file__).resolve().parents[1]
LEASE = 1.0
Figures = dict[str, float]


def storm_workflows() -> list[sm.Workflow]:
    """``storm``: three steps, the middle one transactional; ``storm_fail``: always fails."""
    wf = sm.Workflow("storm", version="1")

    @wf.step()
    def one(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"one": 1}

    @wf.step(transactional=True)
    def count(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        ctx.db.execute("UPDATE storm_counter SET n = n + 1")
        return {"counted": True}

    @wf.step()
    def three(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"three": 3}

    wf.transition("one", to="count")
    wf.transition("count", to="three")
    wf.transition("three", to=sm.COMPLETE)

    bad = sm.Workflow("storm_fail", version="1")

    @bad.step(retry=sm.RetryPolicy(max_attempts=2, backoff=sm.Backoff.fixed(0.05)))
    def always(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        raise RuntimeError("this step always fails")

    bad.transition("always", to=sm.COMPLETE)
    return [wf, bad]


class PrivateCluster:
    """A throwaway PostgreSQL cluster of our own (initdb, own port), run as the postgres user."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not bins:
            raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
        self.bin = bins[-1].parent
        self.dir = Path(tempfile.mkdtemp(prefix="squid-mesh-storm-pg-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.data = self.dir / "data"
        self._as_postgres = os.geteuid() == 0  # initdb refuses to run as root
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-N")
        self.start()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, cwd=self.dir)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=60"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start"
        )

    def crash(self) -> None:
        """Stop at once, as a power cut would: no checkpoint, recovery at the next start."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def _host(url: str, sql: str) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30) as conn:
            return conn.execute(sql).fetchall()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def _completed_steps(url: str) -> int:
    return int(
        _host(url, "SELECT count(*) FROM squid_mesh_attempts WHERE status = 'completed'")[0][0]
    )


class Workers:
    def __init__(self, url: str, n: int, logs: Path) -> None:
        self.url = url
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n
        self.started = 0
        for i in range(n):
            self.restart(i)

    def restart(self, i: int) -> None:
        self.started += 1
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            # 5 % of the workers' writes fail before the write, 5 % after the commit.
            faults.SETTING: f"0.1:{self.started}",
        }
        cmd = [
            sys.executable, "-m", "squid_mesh.cli", "worker", "--db", self.url,
            "--app", "benchmarks.storm:storm_workflows", "--concurrency", "2",
            "--lease", str(LEASE), "--poll-interval", "0.2", "--name", f"storm-{self.started}",
        ]  # fmt: skip
        # The child keeps its own copy of the file descriptor; ours closes at once.
        with (self.logs / f"worker-{self.started}.log").open("wb") as log:
            self.procs[i] = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def revive_dead(self) -> int:
        """Restart workers that exited on their own (e.g. the database was down at start)."""
        revived = 0
        for i, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is not None:
                self.restart(i)
                revived += 1
        return revived

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()


class Storm:
    """The faults, the progress they interrupt, and how long each took to recover from."""

    def __init__(self, url: str, workers: Workers, cluster: PrivateCluster | None, seed: int):
        self.url = url
        self.workers = workers
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.kills = self.crashes = 0
        self.faults: list[float] = []
        self.recoveries: list[float] = []
        self.last_done = -1
        now = time.monotonic()
        self.next_kill = now + self.rng.uniform(1, 4)
        self.next_crash = now + self.rng.uniform(10, 20)

    def observe(self) -> int:
        """Runs still open (-1 while the database is down); record recoveries on progress."""
        try:
            done = _completed_steps(self.url)
            left = _host(
                self.url,
                "SELECT count(*) FROM squid_mesh_runs WHERE status IN ('running', 'paused')",
            )[0][0]
        except Exception:
            return -1
        if done != self.last_done:
            now = time.monotonic()
            self.recoveries.extend(now - f for f in self.faults)
            self.faults.clear()
            self.last_done = done
        return int(left)

    def cancel_some(self, queue: list[str]) -> None:
        try:
            with sm.connect(self.url, workflows=storm_workflows()) as mesh:
                for rid in queue[:10]:
                    with contextlib.suppress(sm.RunFinishedError):
                        mesh.cancel(rid, reason="storm", idempotency_key="storm-cancel")
            del queue[:10]
        except sm.StoreError:
            pass  # the database is down: cancel later

    def strike(self) -> None:
        now = time.monotonic()
        if now >= self.next_kill:
            i = self.rng.randrange(len(self.workers.procs))
            self.workers.kill(i)
            self.workers.restart(i)
            self.kills += 1
            self.faults.append(now)
            self.next_kill = now + self.rng.uniform(1, 4)
            if self.kills == 1:
                # The first database crash lands as the dead worker's leases run out: in the
                # middle of the other workers taking its attempts over (the recovery path).
                self.next_crash = min(self.next_crash, now + LEASE + 0.05)
        if self.cluster is not None and now >= self.next_crash:
            self.cluster.crash()
            self.crashes += 1
            self.faults.append(now)
            time.sleep(self.rng.uniform(0, 2))
            self.cluster.start()
            self.next_crash = time.monotonic() + self.rng.uniform(10, 20)
        self.workers.revive_dead()


def run_storm(
    store: str, runs: int, seed: int = 1, limit: float = 600.0, drain_limit: float = 600.0
) -> Figures:
    """The storm; returns its figures (lost, duplicates, counter error, anomalies must be 0)."""
    cluster = PrivateCluster() if store == "postgres" else None
    folder = Path(tempfile.mkdtemp(prefix="squid-mesh-storm-"))
    url = cluster.url if cluster else f"sqlite:///{folder / 'storm.db'}"
    try:
        with sm.connect(url, workflows=storm_workflows()) as mesh:
            mesh.migrate()
            _host(url, "CREATE TABLE storm_counter (n INTEGER NOT NULL)")
            _host(url, "INSERT INTO storm_counter VALUES (0)")
            ids = [
                mesh.start(
                    "storm_fail" if i % 20 == 7 else "storm", {"i": i}, idempotency_key=f"s-{i}"
                ).id
                for i in range(runs)
            ]
        cancel_queue = random.Random(seed).sample(ids, k=max(runs // 20, 1))
        workers = Workers(url, 4 if store == "sqlite" else 2, folder)
        storm = Storm(url, workers, cluster, seed)
        began = time.monotonic()
        left = -1
        try:
            while time.monotonic() - began < limit:
                left = storm.observe()
                if left == 0:
                    break
                if cancel_queue and left > 0:
                    storm.cancel_some(cancel_queue)
                storm.strike()
                time.sleep(0.05)
            elapsed = time.monotonic() - began
            # Past the time limit the strikes stop and the workers finish what is left: a run
            # still open then is lost; one finished now was only late (a slow machine).
            unfinished = storm.observe()
            calm = time.monotonic()
            while unfinished != 0 and time.monotonic() - calm < drain_limit:
                time.sleep(0.5)
                workers.revive_dead()
                unfinished = storm.observe()
            calm_drain = time.monotonic() - calm
        finally:
            workers.stop()
        figures = _check(
            url, runs, elapsed, storm.kills, workers.started, storm.crashes, storm.recoveries
        )
        figures["unfinished_at_limit"] = float(max(left, 0)) if elapsed >= limit else 0.0
        figures["calm_drain_s"] = calm_drain
        # No "database is locked" (or any other store error) may reach a worker's log.
        logs = "".join(f.read_text(errors="replace") for f in folder.glob("worker-*.log"))
        figures["locked_errors"] = float(logs.count("database is locked"))
        # The injected faults the workers logged (those their retries absorbed leave no line).
        figures["logged_injected_faults"] = float(logs.count("injected fault"))
        return figures
    finally:
        if cluster is not None:
            cluster.destroy()
        shutil.rmtree(folder, ignore_errors=True)


def _check(
    url: str,
    runs: int,
    elapsed: float,
    kills: int,
    started: int,
    crashes: int,
    recoveries: list[float],
) -> Figures:
    with sm.connect(url, workflows=storm_workflows()) as mesh:
        statuses = dict(_host(url, "SELECT status, count(*) FROM squid_mesh_runs GROUP BY status"))
        lost = sum(n for s, n in statuses.items() if s in ("running", "paused"))
        duplicates = _host(
            url,
            "SELECT count(*) FROM (SELECT run_id, step, visit FROM squid_mesh_attempts "
            "WHERE status = 'completed' GROUP BY run_id, step, visit HAVING count(*) > 1) d",
        )[0][0]
        counted = _host(url, "SELECT n FROM storm_counter")[0][0]
        expected = _host(
            url,
            "SELECT count(*) FROM squid_mesh_attempts WHERE step = 'count' AND status = 'completed'",
        )[0][0]
        over = _host(
            url,
            "SELECT count(*) FROM (SELECT run_id FROM squid_mesh_attempts WHERE step = 'always' "
            "GROUP BY run_id HAVING max(number) > 2) o",
        )[0][0]
        anomalies = len(mesh.verify())
    ordered = sorted(recoveries) or [0.0]
    return {
        "runs": float(runs),
        "seconds": elapsed,
        "kills": float(kills),
        "worker_starts": float(started),
        "db_crashes": float(crashes),
        "completed": float(statuses.get("completed", 0)),
        "failed": float(statuses.get("failed", 0)),
        "cancelled": float(statuses.get("cancelled", 0)),
        "lost": float(lost),
        "duplicates": float(duplicates),
        "counter_error": float(counted - expected),
        "attempts_over_max": float(over),
        "verify_anomalies": float(anomalies),
        "recovery_p50_s": statistics.median(ordered),
        "recovery_p99_s": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "recovery_max_s": ordered[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.storm")
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--limit", type=float, default=3600.0, help="strike for at most this many s"
    )
    parser.add_argument(
        "--drain-limit", type=float, default=600.0, help="then let workers finish for this many s"
    )
    args = parser.parse_args()
    figures = run_storm(args.store, args.runs, args.seed, args.limit, args.drain_limit)
    for k, v in figures.items():
        print(
            f"{k:18} {v:,.3f}"
            if isinstance(v, float) and not v.is_integer()
            else f"{k:18} {v:,.0f}"
        )
    bad = figures["lost"] + figures["duplicates"] + abs(figures["counter_error"])
    bad += figures["verify_anomalies"] + figures["attempts_over_max"] + figures["locked_errors"]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
