"""examples/fastapi_app: the shop served by uvicorn (lifespan on) and driven over real HTTP."""

from __future__ import annotations

import importlib
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

import squid_mesh as sm

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app"
ORDER_STEPS = ["reserve_stock", "charge", "ship", "email_receipt"]
MARIA = {"X-Demo-User": "maria"}

pytestmark = pytest.mark.slow


def shop_app() -> ModuleType:
    """The example's ``shop.app`` module, imported from examples/fastapi_app."""
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    return importlib.import_module("shop.app")


def create_app(db_url: str) -> FastAPI:
    factory: Callable[[str | None], FastAPI] = shop_app().create_app
    return factory(db_url)


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port in a thread, lifespan on; yield its base URL.

    On exit the server shuts down (which runs the lifespan's shutdown: the worker stops) and its
    thread must end.
    """
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="shop-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start (see the lifespan's error above)"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
    assert not thread.is_alive(), "the server (and its worker) did not stop within 20 s"


@dataclass
class Shop:
    app: FastAPI
    http: httpx.Client

    @property
    def mesh(self) -> sm.Mesh:
        mesh: sm.Mesh = self.app.state.mesh
        return mesh


@pytest.fixture
def shop(db_url: str) -> Iterator[Shop]:
    app = create_app(db_url)
    with served(app) as base, httpx.Client(base_url=base, timeout=10) as http:
        yield Shop(app, http)


def poll(
    http: httpx.Client,
    path: str,
    until: str,
    headers: dict[str, str] | None = None,
    timeout: float = 20,
) -> dict[str, Any]:
    """GET ``path`` until its JSON ``status`` is ``until``; the last body."""
    deadline = time.monotonic() + timeout
    while True:
        reply = http.get(path, headers=headers)
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        if body["status"] == until:
            return body
        assert time.monotonic() < deadline, f"{path} still {body['status']}: {body}"
        time.sleep(0.05)


def place(http: httpx.Client, order_id: str, amount: int = 42, *, status: int = 202) -> str:
    reply = http.post("/orders", json={"order_id": order_id, "amount": amount})
    assert reply.status_code == status, reply.text
    run_id: str = reply.json()["run_id"]
    return run_id


def test_an_order_completes_with_every_step_recorded_once(shop: Shop) -> None:
    reply = shop.http.post("/orders", json={"order_id": "o-1", "amount": 1250})
    assert reply.status_code == 202, reply.text
    started = reply.json()
    assert started["workflow"] == "order_fulfilment" and started["status"] == "running"

    done = poll(shop.http, f"/orders/{started['run_id']}", until="completed")
    assert done["reason"] == "completed" and done["summary"], done
    assert [(s["name"], s["status"], s["attempts"]) for s in done["steps"]] == [
        (name, "completed", 1) for name in ORDER_STEPS
    ]

    run = shop.mesh.inspect_run(started["run_id"], history=True)
    assert run.payload == {"order_id": "o-1", "amount": 1250}
    assert [s.name for s in run.steps] == ORDER_STEPS  # one visit of each step
    assert all(len(s.attempts) == 1 for s in run.steps)
    assert run.history is not None
    kinds = Counter(entry.kind for entry in run.history)
    assert kinds["attempt_completed"] == kinds["result_applied"] == len(ORDER_STEPS), kinds
    assert kinds["attempt_failed"] == 0
    # The async step ran (on the worker's event loop) and its output reached the context.
    assert run.context["receipt_sent"] is True and run.context["charged"] == 1250


def test_a_long_poll_answers_when_the_run_has_finished(shop: Shop) -> None:
    run_id = place(shop.http, "o-long")
    reply = shop.http.get(f"/orders/{run_id}", params={"wait": 15})
    assert reply.status_code == 200 and reply.json()["status"] == "completed", reply.text
    refund = shop.http.post("/refunds", json={"order_id": "o-long", "amount": 5}).json()["run_id"]
    poll(shop.http, f"/orders/{refund}", until="paused")
    began = time.monotonic()
    held = shop.http.get(f"/orders/{refund}", params={"wait": 0.5})  # it waits at its gate
    assert held.status_code == 200 and held.json()["status"] == "paused"
    assert time.monotonic() - began >= 0.5  # the whole wait: paused is not an end
    assert shop.http.get(f"/orders/{run_id}", params={"wait": 31}).status_code == 422


def test_a_repeated_order_returns_the_same_run(shop: Shop) -> None:
    first = place(shop.http, "o-2")
    assert place(shop.http, "o-2", status=200) == first  # 200: nothing new was started
    assert place(shop.http, "o-3") != first
    # The same order id with another amount is a conflict, not a second run.
    reply = shop.http.post("/orders", json={"order_id": "o-2", "amount": 99})
    assert reply.status_code == 409, reply.text
    assert reply.json()["error"]["code"] == "idempotency_conflict"
    assert len(shop.mesh.list_runs(workflow="order_fulfilment").runs) == 2


def test_unknown_and_malformed_run_ids_are_json_errors(shop: Shop) -> None:
    missing = shop.http.get(f"/orders/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert missing.json()["error"]["code"] == "run_not_found"

    malformed = shop.http.get("/orders/not-a-run-id")
    assert malformed.status_code == 422
    assert malformed.json()["error"] == {
        "code": "invalid_option",
        "message": "invalid option 'run_id': expected a UUID string",
        "field": "run_id",
    }


def test_a_refund_waits_for_approval_in_the_console(shop: Shop) -> None:
    reply = shop.http.post("/refunds", json={"order_id": "o-4", "amount": 30})
    assert reply.status_code == 202, reply.text
    run_id = reply.json()["run_id"]
    paused = poll(shop.http, f"/orders/{run_id}", until="paused")
    assert paused["reason"] == "waiting_for_approval" and "approve" in paused["next_actions"]

    api = f"/workflows/api/runs/{run_id}"
    assert shop.http.get(api).status_code == 401  # no X-Demo-User: nobody is signed in
    session = shop.http.get("/workflows/api/session", headers=MARIA)
    assert session.status_code == 200, session.text
    csrf = session.json()["csrf"]
    refused = shop.http.post(f"{api}/approve", headers=MARIA, json={})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"

    approved = shop.http.post(
        f"{api}/approve", headers={**MARIA, "X-CSRF-Token": csrf}, json={"comment": "ok"}
    )
    assert approved.status_code == 200, approved.text

    poll(shop.http, api, until="completed", headers=MARIA)
    run = shop.mesh.inspect_run(run_id)
    assert run.context["refunded"] == 30 and run.context["approved_by"] == "maria"
    assert "closed" not in run.context
    assert [(c.command, c.actor, c.comment) for c in run.commands if c.command == "approve"] == [
        ("approve", "maria", "ok")
    ]


def lanes() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("squid-mesh-lane")}


def test_the_worker_stops_cleanly_at_shutdown(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # One more workflow on the shop's queue, whose step runs until the test lets it finish.
    entered, gate = threading.Event(), threading.Event()
    held = sm.Workflow("held", version="1", queue="shop")

    @held.step()
    def pack(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        entered.set()
        gate.wait(15)
        return {"packed": True}

    held.transition("pack", to=sm.COMPLETE)
    monkeypatch.setattr(shop_app(), "WORKFLOWS", [*shop_app().WORKFLOWS, held])

    before = lanes()  # other tests' workers' lanes, if any are still alive
    app = create_app(db_url)
    with served(app) as base, httpx.Client(base_url=base, timeout=10) as http:
        pack_run = app.state.mesh.start("held").id
        assert entered.wait(10), "the worker did not start the held step"
        order = place(http, "o-5")  # the other lanes go on working
        poll(http, f"/orders/{order}", until="completed")
        # Shut down with the step still running: the worker gives it its grace period.
        threading.Timer(1.0, gate.set).start()
    # served() joined the server's thread: the lifespan stopped the worker and closed the mesh.
    worker: sm.Worker = app.state.worker
    assert worker.in_flight == 0
    assert lanes() <= before  # every lane of its worker ended
    with sm.connect(db_url) as mesh:
        assert mesh.workers() == []  # no claim left behind, not even a prefetched one
        # The running step finished during the grace period and its result was recorded.
        assert mesh.inspect_run(pack_run).status == "completed"
