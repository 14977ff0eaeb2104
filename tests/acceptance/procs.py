"""Starting, waiting for and cleaning up worker processes (``tests.acceptance.worker``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Worker:
    """One worker process; its stdout and stderr go to files (no pipe can fill up and block it)."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float) -> int:
        """Wait for the exit; kill the process and fail if it takes longer than ``timeout``."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"worker {self.pid} still running after {timeout} s\n{self.describe()}"
            ) from None

    def finish(self, timeout: float) -> list[str]:
        """Wait for a clean exit (status 0) and return the stdout lines."""
        code = self.wait(timeout)
        assert code == 0, f"worker {self.pid} exited with {code}\n{self.describe()}"
        return self.lines()

    def lines(self) -> list[str]:
        return self.out.read_text().splitlines()

    def executions(self) -> list[dict[str, Any]]:
        """The JSON lines the worker printed (one per execution), without the final count."""
        return [json.loads(line) for line in self.lines()[:-1]]

    def count(self) -> int:
        """The number of executions: the worker's last stdout line."""
        return int(self.lines()[-1])

    def describe(self) -> str:
        out = self.out.read_text() if self.out.exists() else ""
        err = self.err.read_text() if self.err.exists() else ""
        return f"--- stdout (last 2000 chars)\n{out[-2000:]}\n--- stderr\n{err[-4000:]}"


@dataclass
class Workers:
    """Starts workers; :func:`workers` kills whatever is still running when the test ends."""

    logs: Path
    started: list[Worker] = field(default_factory=list)

    def start(self, db_url: str, owner: str, *args: str, lease: float = 30.0) -> Worker:
        n = len(self.started)
        out = self.logs / f"{n}-{owner}.out"
        err = self.logs / f"{n}-{owner}.err"
        cmd = [sys.executable, "-m", "tests.acceptance.worker", "--db", db_url]
        cmd += ["--owner", owner, "--lease", str(lease), *args]
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=stdout, stderr=stderr)
        worker = Worker(proc, out, err)
        self.started.append(worker)
        return worker

    def kill_all(self) -> None:
        for worker in self.started:
            if worker.proc.poll() is None:
                worker.proc.kill()
            worker.proc.wait()


@contextmanager
def workers(logs: Path) -> Iterator[Workers]:
    """A worker launcher whose processes are all killed and reaped on the way out."""
    logs.mkdir(parents=True, exist_ok=True)
    pool = Workers(logs)
    try:
        yield pool
    finally:
        pool.kill_all()


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def release_barrier(folder: Path, owners: list[str], pool: Workers, timeout: float = 30.0) -> None:
    """Wait until every owner is ready at the barrier in ``folder``, then let them all go."""

    def all_ready() -> bool:
        for worker in pool.started:
            if worker.proc.poll() not in (None, 0):
                raise AssertionError(f"worker {worker.pid} died early\n{worker.describe()}")
        return all((folder / f"ready.{owner}").exists() for owner in owners)

    wait_for(f"workers {owners} at the barrier", all_ready, timeout)
    (folder / "go").write_text("")
