"""examples/minimal_host_app: its smoke, resilience and soak checks pass on both stores."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "examples" / "minimal_host_app"

pytestmark = pytest.mark.slow


def host_app(db_url: str, *args: str, timeout: float = 300) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(APP), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "host_app", *args, "--db", db_url],
        cwd=APP,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{args}\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_smoke(db_url: str) -> None:
    out = host_app(db_url, "smoke")
    assert "FAIL" not in out and re.search(r"\b(\d+)/\1 checks passed", out), out
    # Every scenario was checked, the cron slot's run included.
    for scenario in ("payment: paid after retries", "checkout: compensated", "digest: cron  "):
        assert f"ok    {scenario}" in out, out


def test_resilience_kills_workers_in_six_states(db_url: str) -> None:
    out = host_app(db_url, "resilience")
    for state in ("queued", "delayed", "retrying", "paused", "mid-compensation", "child runs"):
        assert f"ok    killed in state '{state}'" in out, out
    assert "FAIL" not in out, out


def test_a_short_soak(db_url: str) -> None:
    out = host_app(db_url, "soak", "--runs", "300", "--workers", "2", "--duration", "8")
    assert "lost runs       0" in out and "unexpected ends 0" in out, out
    assert "verify          0 anomalies" in out, out
