"""resilience: do runs survive worker process restarts, whatever state they are in?

Real OS processes: each phase starts a worker process (``squid-mesh worker``, which also ticks
cron: it is this host's scheduler too), drives some runs into one named state, checks that they
are in it, and kills the process with SIGKILL. At the end a fresh worker finishes everything, and
every run must reach its expected end with every step completion recorded once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

import squid_mesh as sm
from host_app import db
from host_app.gateway import Gateway
from host_app.smoke import Report, steps_named, wait_until
from host_app.workflows import all_workflows

HERE = Path(__file__).resolve().parents[1]  # examples/minimal_host_app
LEASE = "2"  # a killed worker's claims are taken over 2 s later


@dataclass
class Kill:
    """What one phase killed, and what it saw first."""

    state: str
    pid: int
    exit_code: int
    gone: bool
    evidence: str


class Workers:
    """``squid-mesh worker`` processes for this host, with the hold directory in their env."""

    def __init__(self, url: str, hold_dir: Path, logs: Path) -> None:
        self.url = url
        self.hold_dir = hold_dir
        self.logs = logs
        self.count = 0

    def start(self) -> subprocess.Popen[bytes]:
        self.count += 1
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "HOST_APP_HOLD_DIR": str(self.hold_dir),
        }
        cmd = [
            sys.executable, "-m", "squid_mesh.cli", "worker", "--db", self.url,
            "--app", "host_app.workflows:all_workflows", "--queue", "default",
            "--queue", "invites", "--concurrency", "2", "--lease", LEASE,
            "--poll-interval", "0.2", "--name", f"resilience-{self.count}",
        ]  # fmt: skip
        with (self.logs / f"worker-{self.count}.log").open("wb") as log:
            return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def kill9(proc: subprocess.Popen[bytes], state: str, evidence: str) -> Kill:
    """SIGKILL the process and prove it is gone."""
    os.kill(proc.pid, signal.SIGKILL)
    code = proc.wait(timeout=30)
    try:
        os.kill(proc.pid, 0)
        gone = False
    except ProcessLookupError:
        gone = True
    return Kill(state, proc.pid, code, gone, evidence)


def reason(mesh: sm.Mesh, run_id: str) -> str:
    return mesh.explain_run(run_id).reason.value


class Drill:
    """The phases: each drives runs into one state and kills the worker there."""

    def __init__(self, mesh: sm.Mesh, workers: Workers, gateway_url: str) -> None:
        self.mesh = mesh
        self.workers = workers
        self.pay = {"amount": 10, "gateway_url": gateway_url}
        self.tag = str(int(time.time() * 1000))
        self.runs: dict[str, str] = {}
        self.kills: list[Kill] = []

    def holding(self, name: str) -> None:
        (self.workers.hold_dir / name).touch()

    def release(self, name: str) -> None:
        (self.workers.hold_dir / name).unlink(missing_ok=True)

    def phase(self, state: str, reached: Callable[[], bool], evidence: Callable[[], str]) -> None:
        proc = self.workers.start()
        try:
            wait_until(reached, 60, f"runs to be {state}")
            self.kills.append(kill9(proc, state, evidence()))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def queued(self) -> None:
        """The worker's two lanes are held inside their first steps; the rest wait."""
        mesh = self.mesh
        self.holding("check_gateway")
        for i in range(6):
            payload = {"invoice_id": f"ok-{self.tag}-{i}", **self.pay}
            self.runs[f"queued {i}"] = mesh.start("payment_recovery", payload).id
        self.phase(
            "queued",
            lambda: mesh.queue_stats()["default"].claimed == 2,
            lambda: f"{mesh.queue_stats()['default'].visible} visible, 2 claimed mid-step",
        )
        self.release("check_gateway")

    def delayed(self) -> None:
        """A reminder inside its durable wait."""
        rid = self.runs["delayed"] = self.mesh.start("reminder", {"recipient": f"bo-{self.tag}"}).id
        self.phase(
            "delayed",
            lambda: reason(self.mesh, rid) == "waiting_until",
            lambda: reason(self.mesh, rid),
        )

    def retrying(self) -> None:
        """A charge refused once, its retry scheduled."""
        payload = {"invoice_id": f"flaky-{self.tag}", **self.pay}
        rid = self.runs["retrying"] = self.mesh.start("payment_recovery", payload).id
        self.phase(
            "retrying",
            lambda: reason(self.mesh, rid) == "scheduled_retry",
            lambda: reason(self.mesh, rid),
        )

    def paused(self) -> None:
        """A refund at its approval gate; approved while no worker runs."""
        mesh = self.mesh
        rid = self.runs["paused then resumed"] = mesh.start(
            "refund_approval", {"ticket": f"R-{self.tag}"}
        ).id
        self.phase(
            "paused",
            lambda: mesh.inspect_run(rid).status == sm.RunStatus.PAUSED,
            lambda: mesh.inspect_run(rid).status.value,
        )
        mesh.approve(rid, actor="ops", comment="while no worker ran")

    def mid_compensation(self) -> None:
        """The card refund is running when the worker dies."""
        mesh = self.mesh
        self.holding("refund_card")
        rid = self.runs["mid-compensation"] = mesh.start(
            "checkout", {"order": f"o-{self.tag}", "address": ""}
        ).id

        def refunding() -> bool:
            undo = steps_named(mesh.inspect_run(rid), "charge_card#compensate")
            return bool(undo) and undo[-1].status == sm.AttemptStatus.RUNNING

        self.phase(
            "mid-compensation",
            refunding,
            lambda: f"compensation {mesh.inspect_run(rid).compensation}",
        )
        self.release("refund_card")

    def child_runs(self) -> None:
        """The parent waits on its children, which are mid-step."""
        mesh = self.mesh
        self.holding("deliver_invite")
        emails = [f"x-{self.tag}@x.io", f"y-{self.tag}@x.io"]
        rid = self.runs["parent and children"] = mesh.start("team_invite", {"emails": emails}).id

        def children_running() -> bool:
            snap = mesh.inspect_run(rid)
            gather = steps_named(snap, "gather")
            invites = mesh.queue_stats().get("invites")
            return (
                bool(gather)
                and gather[-1].status == sm.AttemptStatus.WAITING
                and len(snap.children) == 2
                and invites is not None
                and invites.claimed == 2
            )

        self.phase(
            "child runs",
            children_running,
            lambda: f"parent {reason(mesh, rid)}, 2 children mid-step",
        )
        self.release("deliver_invite")

    def finish(self) -> None:
        """A fresh worker finishes everything; SIGTERM stops it."""
        final = self.workers.start()
        try:
            wait_until(
                lambda: all(self.mesh.inspect_run(r).terminal for r in self.runs.values()),
                120,
                "every run",
            )
        finally:
            final.send_signal(signal.SIGTERM)
            final.wait(timeout=60)


def run_resilience(url: str) -> bool:
    """The whole resilience check; prints a table, returns whether everything passed."""
    db.migrate(url)
    report = Report()
    hold_dir = Path(tempfile.mkdtemp(prefix="host-app-hold-"))
    logs = Path(tempfile.mkdtemp(prefix="host-app-logs-"))
    # Flaky charges are refused twice with Retry-After 1.5 s: a window to kill in "retrying".
    with sm.connect(url, workflows=all_workflows()) as mesh, Gateway(retry_after=1.5) as gateway:
        mesh.migrate()
        drill = Drill(mesh, Workers(url, hold_dir, logs), gateway.url)
        for phase in (
            drill.queued,
            drill.delayed,
            drill.retrying,
            drill.paused,
            drill.mid_compensation,
            drill.child_runs,
        ):
            phase()
        drill.finish()
        for kill in drill.kills:
            report.check(
                f"killed in state '{kill.state}' (pid {kill.pid})",
                kill.gone and kill.exit_code == -signal.SIGKILL,
                kill,
            )
        check_ends(mesh, url, drill.runs, report)
        problems = mesh.verify()
        report.check("verify: journals refold to the projections", problems == [], problems[:3])
    report.print(
        f"resilience on {url.split('://', 1)[0]}: {len(drill.kills)} kills, {len(drill.runs)} runs"
    )
    for kill in drill.kills:
        click.echo(f"  kill -9 pid {kill.pid} in '{kill.state}': {kill.evidence}")
    return report.ok


def check_ends(mesh: sm.Mesh, url: str, runs: dict[str, str], report: Report) -> None:
    """Expected ends, and no step completion recorded twice."""
    for name, rid in runs.items():
        snap = mesh.inspect_run(rid, history=True)
        completions = Counter(
            (e.data["key"]) for e in snap.history or () if e.kind == "attempt_completed"
        )
        twice = [k for k, n in completions.items() if n > 1]
        report.check(f"{name}: each step completion recorded once", not twice, twice)
        expected_status = "failed" if name == "mid-compensation" else "completed"
        ok = snap.status.value == expected_status
        if name.startswith("queued") or name == "retrying":
            ledger = db.query(url, "SELECT count(*) FROM host_ledger WHERE run_id = {}", (rid,))
            ok = ok and snap.context.get("recorded") is True and ledger == [(1,)]
        elif name == "delayed":
            rows = db.query(url, "SELECT count(*) FROM host_deliveries WHERE run_id = {}", (rid,))
            ok = ok and rows == [(1,)]
        elif name == "paused then resumed":
            ok = ok and snap.context.get("approved_by") == "ops"
        elif name == "mid-compensation":
            ok = ok and snap.compensation == "completed"
        elif name == "parent and children":
            ok = ok and len(snap.context.get("accepted", [])) == 2
        report.check(f"{name}: reached its expected end", ok, (snap.status.value, snap.context))
