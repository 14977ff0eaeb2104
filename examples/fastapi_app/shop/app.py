"""The shop's web app: orders and refunds start workflow runs; the console is at /workflows.

One process serves HTTP and runs the workflows: the lifespan migrates the database and starts a
``sm.Worker`` (threads beside the event loop), and stops it gracefully at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

import squid_mesh as sm
from squid_mesh import web

from .workflows import QUEUE, WORKFLOWS

# How each refusal of squid-mesh reads over HTTP (any other squid-mesh error: 400).
_STATUS: dict[type[sm.SquidMeshError], int] = {
    sm.RunNotFoundError: 404,
    sm.InvalidOptionError: 422,
    sm.IdempotencyConflictError: 409,
    sm.StoreError: 503,
}


class OrderIn(BaseModel):
    """A new order."""

    order_id: str = Field(min_length=1, max_length=100)
    amount: int = Field(gt=0)


class RunOut(BaseModel):
    """A run, as the shop's endpoints show it."""

    run_id: str
    workflow: str
    status: str


class StepOut(BaseModel):
    """One step of a run: its last status and how many attempts it took."""

    name: str
    status: str
    attempts: int


class RunDetail(RunOut):
    """A run with squid-mesh's explanation of where it is."""

    reason: str
    summary: str
    next_actions: list[str]
    steps: list[StepOut]


def demo_user(request: Request) -> web.User | None:
    """DEMO ONLY: whoever the ``X-Demo-User`` header names. A real app uses its own session.

    A browser sends no such header: ``SHOP_DEMO_USER=maria`` signs every visitor in as maria.
    """
    name = request.headers.get("x-demo-user") or os.environ.get("SHOP_DEMO_USER")
    return web.User(name, can_act=True, can_see_payloads=True) if name else None


async def refused(request: Request, exc: Exception) -> JSONResponse:
    """A squid-mesh refusal as JSON, in the console's ``{"error": {...}}`` shape."""
    assert isinstance(exc, sm.SquidMeshError)
    status = next((s for kind, s in _STATUS.items() if isinstance(exc, kind)), 400)
    body = {"code": exc.code, "message": exc.message, "field": getattr(exc, "option", None)}
    return JSONResponse({"error": body}, status_code=status)


def mesh_of(request: Request) -> sm.Mesh:
    """The mesh the lifespan connected (a dependency of the endpoints)."""
    mesh: sm.Mesh = request.app.state.mesh
    return mesh


MeshDep = Annotated[sm.Mesh, Depends(mesh_of)]


def _run_out(run: sm.RunSnapshot) -> RunOut:
    return RunOut(run_id=run.id, workflow=run.workflow, status=run.status.value)


def create_app(database_url: str | None = None) -> FastAPI:
    """The shop on ``database_url`` (else ``$SHOP_DATABASE_URL``, else ``sqlite:///shop.db``).

    Building the app opens nothing: the lifespan connects the mesh, migrates, runs the worker,
    and closes it all at shutdown. The console finds the mesh on ``api.state`` at each request.
    """
    url = database_url or os.environ.get("SHOP_DATABASE_URL", "sqlite:///shop.db")

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        # PostgreSQL: the worker needs a connection per lane plus two, and requests some more.
        mesh = await asyncio.to_thread(sm.connect, url, workflows=WORKFLOWS, max_connections=10)
        worker = sm.Worker(mesh, queues=[QUEUE], concurrency=4, grace_period=10)
        api.state.mesh, api.state.worker = mesh, worker
        try:
            await mesh.aio.migrate()
            worker.start()
            yield
        finally:
            # Running steps may finish; claims left after the grace period go back to the queue.
            await asyncio.to_thread(worker.stop)
            api.state.mesh = None
            mesh.close()

    api = FastAPI(title="shop", lifespan=lifespan)
    api.state.mesh = None
    api.add_exception_handler(sm.SquidMeshError, refused)
    console = web.app(lambda: api.state.mesh, auth=demo_user, title="shop workflows")
    api.mount("/workflows", console)

    @api.post("/orders", status_code=202)
    async def place_order(order: OrderIn, response: Response, mesh: MeshDep) -> RunOut:
        """Start the order's fulfilment (202); the same order_id again: the same run (200)."""
        run = await mesh.aio.start(
            "order_fulfilment", order.model_dump(), idempotency_key=order.order_id
        )
        if not run.created:
            response.status_code = 200
        return _run_out(run)

    @api.get("/orders/{run_id}")
    async def order_status(
        run_id: str, mesh: MeshDep, wait: Annotated[float, Query(ge=0, le=30)] = 0
    ) -> RunDetail:
        """Where the run is, and why; ``?wait=S`` holds the answer up to S seconds for its end."""
        if wait:
            # A long poll: the request sleeps on the event loop, holding no thread.
            with contextlib.suppress(sm.WaitTimeoutError):
                await mesh.aio.wait_run(run_id, timeout=wait, poll_interval=0.2)
        run = await mesh.aio.inspect_run(run_id)
        why = await mesh.aio.explain_run(run_id)
        steps = [
            StepOut(name=s.name, status=s.status.value, attempts=len(s.attempts)) for s in run.steps
        ]
        return RunDetail(
            **_run_out(run).model_dump(),
            reason=why.reason.value,
            summary=why.summary,
            next_actions=list(why.next_actions),
            steps=steps,
        )

    @api.post("/refunds", status_code=202)
    async def request_refund(order: OrderIn, mesh: MeshDep) -> RunOut:
        """Start a refund; it waits for a manager's approval in the console."""
        run = await mesh.aio.start(
            "refund", order.model_dump(), idempotency_key=f"refund:{order.order_id}"
        )
        return _run_out(run)

    return api
