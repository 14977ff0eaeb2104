"""``squid-mesh worker`` as real processes: SIGTERM mid-step, and a queue limit across processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import squid_mesh as sm
from tests.acceptance.workflows import all_workflows

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.acceptance.workflows:all_workflows"

pytestmark = pytest.mark.slow


class Cli:
    """``squid-mesh worker`` processes; any still running at the end are killed."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def worker(self, db_url: str, *args: str) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        # The form: `squid-mesh worker --app module:registry --queue default ...`.
        cmd = [sys.executable, "-m", "squid_mesh.cli", "worker", "--db", db_url, "--app", APP]
        with (
            (self.logs / f"w{n}.out").open("wb") as out,
            (self.logs / f"w{n}.err").open("wb") as err,
        ):
            proc = subprocess.Popen([*cmd, *args], cwd=ROOT, stdout=out, stderr=err)
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        n = self.procs.index(proc)
        out = (self.logs / f"w{n}.out").read_text()
        err = (self.logs / f"w{n}.err").read_text()
        return f"--- stdout\n{out}\n--- stderr\n{err[-4000:]}"

    def finish(self, proc: subprocess.Popen[bytes], timeout: float) -> str:
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(
                f"worker still running after {timeout} s\n{self.output(proc)}"
            ) from None
        assert code == 0, f"worker exited with {code}\n{self.output(proc)}"
        return self.output(proc)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    logs = tmp_path / "logs"
    logs.mkdir()
    c = Cli(logs)
    yield c
    for proc in c.procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def started_naps(
    mesh: sm.Mesh, folder: Path, n: int, seconds: float, queue: str = "default"
) -> list[str]:
    return [
        mesh.start("acc_nap", {"dir": str(folder), "seconds": seconds}, queue=queue).id
        for _ in range(n)
    ]


def statuses(mesh: sm.Mesh, ids: list[str]) -> list[str]:
    return [mesh.inspect_run(i).status.value for i in ids]


@pytest.mark.parametrize("ending", ["finish", "release"])
def test_sigterm_mid_step_loses_nothing_and_a_second_worker_completes_the_rest(
    db_url: str, tmp_path: Path, cli: Cli, ending: str
) -> None:
    folder = tmp_path / "naps"
    folder.mkdir()
    with sm.connect(db_url, workflows=all_workflows()) as mesh:
        if ending == "release":
            (folder / "slow").touch()  # the first worker's steps outlive its grace period
        # Long enough that SIGTERM lands while the first four still run.
        ids = started_naps(mesh, folder, 8, seconds=3.0 if ending == "finish" else 1.0)
        grace = "30" if ending == "finish" else "0.5"
        first = cli.worker(
            db_url, "--queue", "default", "--concurrency", "4", "--lease", "120",
            "--grace-period", grace,
        )  # fmt: skip
        wait_until(lambda: mesh.queue_stats()["default"].claimed == 4, 30, "4 steps running")
        os.kill(first.pid, signal.SIGTERM)
        out = cli.finish(first, timeout=60)
        done_by_first = statuses(mesh, ids).count("completed")
        if ending == "finish":
            assert done_by_first == 4, out  # the four running steps finished, nothing new started
            assert "executed 4 step(s)" in out
        else:
            assert done_by_first == 0, out
            assert mesh.queue_stats()["default"].claimed == 0, "released, not left to the lease"
            (folder / "slow").unlink()
        second = cli.worker(db_url, "--concurrency", "8", "--max-idle", "1.5")
        cli.finish(second, timeout=60)
        assert statuses(mesh, ids) == ["completed"] * 8
        history = [e.kind for i in ids for e in mesh.inspect_run(i, history=True).history or ()]
        # "release": the four running steps; "finish": the four next steps, claimed (prefetched)
        # as the four running ones were recorded, and given back at exit instead of run.
        assert history.count("attempt_released") == 4
        # Every step ran once to completion (a released one ran again, once).
        lines = (folder / "intervals").read_text().splitlines()
        assert len(lines) == 8
        assert mesh.verify() == []


def test_a_concurrency_limit_of_3_holds_across_two_worker_processes(
    db_url: str, tmp_path: Path, cli: Cli
) -> None:
    folder = tmp_path / "naps"
    folder.mkdir()
    with sm.connect(db_url, workflows=all_workflows()) as mesh:
        mesh.set_queue_limits("limited", concurrency=3)
        ids = started_naps(mesh, folder, 18, seconds=0.25, queue="limited")
        peak = [0]
        watching = threading.Event()

        def watch() -> None:
            while not watching.wait(0.005):
                stats = mesh.queue_stats().get("limited")
                peak[0] = max(peak[0], 0 if stats is None else stats.claimed)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            # Four lanes for three slots, and neither process can fill all three alone.
            args = ("--queue", "limited", "--concurrency", "2", "--max-idle", "1.5")
            workers = [cli.worker(db_url, *args) for _ in range(2)]
            for w in workers:
                cli.finish(w, timeout=120)
        finally:
            watching.set()
            watcher.join()
        assert statuses(mesh, ids) == ["completed"] * 18
        intervals = [
            tuple(map(float, line.split()[:2]))
            for line in (folder / "intervals").read_text().splitlines()
        ]
        pids = {line.split()[2] for line in (folder / "intervals").read_text().splitlines()}
        events = sorted(
            [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals]
        )
        running = overlap = 0
        for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
            running += delta
            overlap = max(overlap, running)
        assert overlap <= 3 and peak[0] <= 3, (overlap, peak)
        assert overlap >= 2, "the steps did run side by side"
        assert len(pids) == 2, "both processes took part"
