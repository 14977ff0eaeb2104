"""The ``squid-mesh`` command, run as a real process against SQLite and Postgres."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import squid_mesh as sm
from tests.acceptance.workflows import all_workflows

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.acceptance.workflows:all_workflows"


def cli(db_url: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    base = [sys.executable, "-m", "squid_mesh.cli"]
    if db_url is not None:
        base += ["--db", db_url, "--app", APP]
    return subprocess.run(
        [*base, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def ok(db_url: str, *args: str) -> str:
    done = cli(db_url, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


@pytest.mark.slow
def test_operating_a_run_from_the_shell(db_url: str) -> None:
    assert ok(db_url, "migrate").strip() == "migrated"
    with sm.connect(db_url, workflows=all_workflows()) as mesh:
        run = mesh.start("acc_gated", {})
    listed = json.loads(ok(db_url, "runs", "list", "--workflow", "acc_gated", "--json"))
    assert [r["id"] for r in listed["runs"]] == [run.id] and listed["next_cursor"] is None
    why = json.loads(ok(db_url, "runs", "explain", run.id, "--json"))
    assert why["reason"] == "waiting_for_worker"
    # prepare, then the approval step itself, which pauses the run
    assert "executed 2 step(s)" in ok(db_url, "worker", "--max-idle", "0.5")
    assert ok(db_url, "runs", "explain", run.id).startswith("waiting_for_approval:")
    approved = json.loads(
        ok(
            db_url,
            "runs",
            "approve",
            run.id,
            "--actor",
            "ops",
            "--comment",
            "fine",
            "--metadata",
            '{"ticket": "T-1", "token": "x"}',
            "--idempotency-key",
            "a-1",
            "--json",
        )
    )
    assert approved["status"] == "running"
    assert approved["context"]["approval"]["metadata"] == {"ticket": "T-1", "token": "[REDACTED]"}
    ok(db_url, "worker", "--max-idle", "0.5")
    shown = json.loads(ok(db_url, "runs", "show", run.id, "--history", "--json"))
    assert shown["status"] == "completed" and shown["history"][0]["kind"] == "run_started"
    assert "==>" in ok(db_url, "runs", "graph", run.id, "--format", "mermaid")
    assert json.loads(ok(db_url, "runs", "graph", run.id, "--format", "json"))["run_id"] == run.id
    assert "0 problem(s)" in ok(db_url, "verify")
    time.sleep(1.1)
    assert ok(db_url, "purge", "--older-than", "1s").strip() == "purged 1 run(s)"
    gone = cli(db_url, "runs", "show", run.id)
    assert gone.returncode == 1 and gone.stderr.count("\n") == 1 and "no such run" in gone.stderr


@pytest.mark.slow
def test_runs_wait_blocks_until_a_worker_finishes_the_run(db_url: str) -> None:
    with sm.connect(db_url, workflows=all_workflows()) as mesh:
        mesh.migrate()
        run = mesh.start("acc_three", {"n": 1})
        dropped = mesh.start("acc_three", {"n": 2})
        mesh.cancel(dropped.id, reason="not needed")
    early = cli(db_url, "runs", "wait", run.id, "--timeout", "0.3")
    assert early.returncode == 1 and "still running after 0.3 s" in early.stderr
    base = [sys.executable, "-m", "squid_mesh.cli", "--db", db_url, "--app", APP]
    waiting = subprocess.Popen(
        [*base, "runs", "wait", run.id, "--timeout", "60", "--json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        assert waiting.poll() is None, "it returned before any worker ran the steps"
        assert "executed 3 step(s)" in ok(db_url, "worker", "--max-idle", "0.5")
        out, err = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
    assert waiting.returncode == 0, err
    done = json.loads(out)
    assert done["status"] == "completed" and done["context"]["c"] == 3
    cancelled = cli(db_url, "runs", "wait", dropped.id)
    assert cancelled.returncode == 1 and cancelled.stdout.split() == [dropped.id, "cancelled"]
    assert ok(db_url, "runs", "wait", dropped.id, "--until", "cancelled").split()[1] == "cancelled"
    never = cli(db_url, "runs", "wait", dropped.id, "--until", "paused")  # it ended: no hang
    assert never.returncode == 1 and never.stdout.split() == [dropped.id, "cancelled"]
    for endless in ("nan", "inf"):
        refused = cli(db_url, "runs", "wait", run.id, "--timeout", endless)
        assert refused.returncode == 2 and "--timeout" in refused.stderr
    bad = cli(db_url, "runs", "wait", run.id, "--until", "finished")
    assert bad.returncode == 2 and "--until" in bad.stderr


@pytest.mark.slow
def test_refusals_exit_1_and_usage_errors_exit_2(db_url: str) -> None:
    with sm.connect(db_url, workflows=all_workflows()) as mesh:
        run = mesh.start("acc_three", {"n": 1})
    refused = cli(db_url, "runs", "resume", run.id)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: ") and refused.stderr.count("\n") == 1
    assert "not paused" in refused.stderr
    for args in (
        ("runs", "approve", run.id, "--metadata", "[1, 2]"),
        ("runs", "list", "--limit", "many"),
        ("purge", "--older-than", "soon"),
        ("runs", "frobnicate", run.id),
    ):
        bad = cli(db_url, *args)
        assert bad.returncode == 2, (args, bad.stderr)
        assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1, bad.stderr
    no_db = cli(None, "runs", "list")
    assert no_db.returncode == 2 and "--db" in no_db.stderr and no_db.stderr.count("\n") == 1
    for command in ("explain", "graph"):
        bare = subprocess.run(
            [sys.executable, "-m", "squid_mesh.cli", "--db", db_url, "runs", command, run.id],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert bare.returncode == 2 and "needs --app" in bare.stderr, bare.stderr
    assert "Usage" in cli(None, "--help").stdout


@pytest.mark.slow
def test_the_web_command_serves_the_console_behind_its_token(db_url: str, tmp_path: Path) -> None:
    import os
    import socket

    import httpx

    with sm.connect(db_url, workflows=all_workflows()) as mesh:
        run = mesh.start("acc_gated", {})
    missing = cli(db_url, "web")
    assert missing.returncode == 2 and "SQUID_MESH_WEB_TOKEN" in missing.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = "cli-console-token-0123456789"
    env = {**os.environ, "SQUID_MESH_WEB_TOKEN": token}
    log = (tmp_path / "web.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "squid_mesh.cli",
            "web",
            "--db",
            db_url,
            "--app",
            APP,
            "--port",
            str(port),
            "--read-only",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{url}/api/openapi.json", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        assert httpx.get(f"{url}/api/runs").status_code == 401
        listed = httpx.get(f"{url}/api/runs", headers={"Authorization": f"Bearer {token}"})
        assert [r["id"] for r in listed.json()["runs"]] == [run.id]
        refused = httpx.post(
            f"{url}/api/runs/{run.id}/cancel", headers={"Authorization": f"Bearer {token}"}
        )
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "read_only"
    finally:
        server.terminate()
        assert server.wait(10) == 0, (tmp_path / "web.log").read_text()
    assert token not in (tmp_path / "web.log").read_text()
