"""The console in headless Chromium against a live server, real runs and a real worker.

Chromium is Debian's (``/usr/bin/chromium``, installed by ``.ci/run``; ``SQUID_MESH_CHROMIUM``
points elsewhere), driven by Playwright. Without it the tests skip with a message, except under
CI=true, where they fail. The run-detail page of a DAG run is saved under ``build/`` for review.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import squid_mesh as sm
from squid_mesh import web
from tests.support.databases import unavailable
from tests.support.web import TOKEN, LiveServer, console_workflows

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("SQUID_MESH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        unavailable(
            f"Chromium not found at {CHROMIUM}: apt-get install chromium (or set "
            "SQUID_MESH_CHROMIUM) to run the browser tests"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


class Console:
    """A mesh with a worker in the background, served by the console on 127.0.0.1."""

    def __init__(self, url: str, mesh: sm.Mesh, gate: threading.Event) -> None:
        self.url, self.mesh, self.gate = url, mesh, gate

    def wait_for(self, run_id: str, status: str, timeout: float = 20.0) -> sm.RunSnapshot:
        deadline = time.monotonic() + timeout
        while True:
            snap = self.mesh.inspect_run(run_id)
            if snap.status.value == status or time.monotonic() > deadline:
                assert snap.status.value == status, f"{run_id}: {snap.status} after {timeout} s"
                return snap
            time.sleep(0.05)

    def started_step(self, run_id: str, step: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            snap = self.mesh.inspect_run(run_id)
            if any(s.name == step and s.attempts[-1].started_at for s in snap.steps):
                return
            time.sleep(0.05)
        raise AssertionError(f"{step} of {run_id} never started")


@pytest.fixture
def console(db_url: str) -> Iterator[Console]:
    gate = threading.Event()
    with sm.connect(db_url, workflows=console_workflows(gate)) as mesh:
        worker = sm.Worker(
            mesh, queues=["default", "reports"], concurrency=2, poll_interval=0.1, lease=5
        )
        worker.start()
        try:
            with LiveServer(web.app(mesh, token=TOKEN, refresh_seconds=1)) as url:
                yield Console(url, mesh, gate)
        finally:
            gate.set()
            worker.stop()


@pytest.fixture
def page(browser: Any, console: Console) -> Iterator[Any]:
    """A signed-in page (the login form filled in as an operator would)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.goto(f"{console.url}/")
    assert "/login" in tab.url
    tab.fill("input[name=token]", TOKEN)
    tab.click("button[type=submit]")
    tab.wait_for_url(f"{console.url}/")
    yield tab
    context.close()


def accept_dialogs(page: Any) -> list[str]:
    seen: list[str] = []

    def accept(dialog: Any) -> None:
        seen.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    return seen


def rows(page: Any) -> list[str]:
    return [
        str(r)
        for r in page.locator("tr[data-run]").evaluate_all("rs => rs.map(r => r.dataset.run)")
    ]


def test_filter_open_a_paused_run_approve_it_and_see_it_complete(
    page: Any, console: Console
) -> None:
    from playwright.sync_api import expect

    refund = console.mesh.start("refund", {"ticket": "T-1", "card": "4242-0000"})
    report = console.mesh.start("fanout", {})
    console.wait_for(refund.id, "paused")
    console.wait_for(report.id, "completed")
    page.reload()
    assert set(rows(page)) == {refund.id, report.id}
    expect(page.locator("[data-count=paused] b")).to_have_text("1")

    page.select_option("select[name=workflow]", "refund")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**workflow=refund**")
    assert rows(page) == [refund.id]
    page.select_option("select[name=workflow]", "")
    page.select_option("select[name=status]", "completed")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**status=completed**")
    assert rows(page) == [report.id]
    page.select_option("select[name=status]", "paused")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**status=paused**")
    assert rows(page) == [refund.id]

    page.click(f"tr[data-run='{refund.id}'] a")
    expect(page.locator("#run-status")).to_have_text("paused")
    expect(page.locator(".reason")).to_have_text("waiting_for_approval")
    assert "4242-0000" in page.content()  # the token user has the detail permission
    dialogs = accept_dialogs(page)
    page.fill(".actions input[name=comment]", "refund is fine")
    page.get_by_role("button", name="Approve", exact=True).click()
    expect(page.locator(".notice")).to_have_text("Approved.")
    assert dialogs == ["Approve this run at step manager_ok?"]
    # The page refreshes itself (every second here) until the run has finished.
    expect(page.locator("#run-status")).to_have_text("completed", timeout=20_000)
    snap = console.wait_for(refund.id, "completed")
    assert [(c.command, c.actor, c.comment) for c in snap.commands][-1] == (
        "approve",
        "operator",
        "refund is fine",
    )
    expect(page.locator("table.commands")).to_contain_text("refund is fine")


def test_cancel_a_running_run(page: Any, console: Console) -> None:
    from playwright.sync_api import expect

    run = console.mesh.start("slow", {})
    console.started_step(run.id, "hold")
    page.goto(f"{console.url}/runs/{run.id}")
    expect(page.locator("#run-status")).to_have_text("running")
    dialogs = accept_dialogs(page)
    page.fill("input[name=reason]", "customer left")
    page.get_by_role("button", name="Cancel run", exact=True).click()
    expect(page.locator(".notice")).to_have_text("Cancelled.")
    expect(page.locator("#run-status")).to_have_text("cancelled")
    assert dialogs and dialogs[0].startswith("Cancel this run?")
    console.gate.set()  # the step ends now: its result must be discarded, not applied
    time.sleep(0.5)
    assert console.mesh.inspect_run(run.id).status == sm.RunStatus.CANCELLED


def test_actions_without_confirmation_token_or_csrf_are_refused(
    page: Any, console: Console, browser: Any
) -> None:
    from playwright.sync_api import expect

    run = console.mesh.start("refund", {"ticket": "T-2", "card": "4242"})
    console.wait_for(run.id, "paused")
    page.goto(f"{console.url}/runs/{run.id}")
    answers = ["dismiss"]  # first the operator changes their mind at the confirmation
    page.on("dialog", lambda dialog: getattr(dialog, answers[0])())
    page.get_by_role("button", name="Approve", exact=True).click()
    page.wait_for_timeout(300)
    assert "/runs/" in page.url and "done=" not in page.url
    assert console.mesh.inspect_run(run.id).status == sm.RunStatus.PAUSED

    answers[0] = "accept"
    page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(e => e.remove())")
    page.get_by_role("button", name="Approve", exact=True).click()
    expect(page.locator("p.failure")).to_contain_text("CSRF")
    assert console.mesh.inspect_run(run.id).status == sm.RunStatus.PAUSED

    # The API with the browser's session cookie but no X-CSRF-Token header: refused too.
    api = page.request.post(f"{console.url}/api/runs/{run.id}/approve")
    assert api.status == 403 and api.json()["error"]["code"] == "csrf_failed"
    # Without the token at all (a fresh browser, no session): 401, and a page redirects to login.
    stranger = browser.new_context()
    try:
        response = stranger.request.get(f"{console.url}/api/runs/{run.id}")
        assert response.status == 401
        assert TOKEN not in response.text()
        posted = stranger.request.post(f"{console.url}/runs/{run.id}/approve", form={"csrf": "x"})
        assert posted.status == 401
        tab = stranger.new_page()
        tab.goto(f"{console.url}/runs/{run.id}")
        assert "/login" in tab.url
    finally:
        stranger.close()
    assert console.mesh.inspect_run(run.id).status == sm.RunStatus.PAUSED


def test_the_run_detail_of_a_dag_run_is_drawn_and_saved(
    page: Any, console: Console, backend: str
) -> None:
    from playwright.sync_api import expect

    run = console.mesh.start("fanout", {})
    console.wait_for(run.id, "completed")
    page.goto(f"{console.url}/runs/{run.id}")
    expect(page.locator("#run-status")).to_have_text("completed")
    graph = page.locator("svg.run-graph")
    expect(graph).to_be_visible()
    for step in ("fetch", "left", "right", "join"):
        expect(graph.locator(f"[data-node='{step}'] rect")).to_have_class("node node-completed")
    assert graph.locator("path.edge-selected").count() >= 4
    box = graph.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 100
    out = ROOT / "build" / f"console-run-detail-{backend}.png"
    out.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(out), full_page=True)
    assert out.stat().st_size > 20_000
    print(f"screenshot: {out}")
    page.goto(f"{console.url}/queues")
    expect(page.locator("tr[data-queue='reports']")).to_be_visible()
    page.goto(f"{console.url}/schedules")
    expect(page.locator("tr[data-schedule='nightly:night']")).to_contain_text("0 2 * * *")
