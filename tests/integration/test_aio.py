"""``mesh.aio``: the commands as coroutines that leave the event loop free."""

from __future__ import annotations

import asyncio
import time

import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory


def slow_workflow() -> sm.Workflow:
    wf = sm.Workflow("slow_sync")

    @wf.step()
    def block(input: dict, ctx: sm.StepContext) -> dict:
        time.sleep(0.4)  # a blocking step: it must not block the caller's event loop
        return {"done": True}

    wf.transition("block", to=sm.COMPLETE)
    return wf


def test_commands_are_awaitable_and_the_loop_keeps_running(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([slow_workflow()])

    async def main() -> tuple[int, sm.RunSnapshot]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        runs = await asyncio.gather(
            *(mesh.aio.start("slow_sync", {}, idempotency_key=f"k{i}") for i in range(3))
        )
        assert len({r.id for r in runs}) == 3
        executed = await mesh.aio.execute_next(owner_id="aio")
        assert executed is not None and executed.outcome == "completed"
        stop.set()
        await task
        return ticks, await mesh.aio.inspect_run(executed.run_id)

    ticks, snap = asyncio.run(main())
    assert snap.status == sm.RunStatus.COMPLETED and snap.context["done"] is True
    assert ticks >= 15, f"the loop ran only {ticks} ticks during a 0.4 s step"


def test_errors_and_reads_are_the_synchronous_ones(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([slow_workflow()])

    async def main() -> None:
        with pytest.raises(sm.RunNotFoundError):
            await mesh.aio.inspect_run("01a210b8-e475-77cb-856e-90a303eea023")
        with pytest.raises(sm.UnknownWorkflowError):
            await mesh.aio.start("nope", {})
        run = await mesh.aio.start("slow_sync", {})
        page = await mesh.aio.list_runs()
        assert [r.id for r in page.runs] == [run.id]
        assert (await mesh.aio.explain_run(run.id)).reason == sm.Reason.WAITING_FOR_WORKER
        cancelled = await mesh.aio.cancel(run.id, reason="test")
        assert cancelled.status == sm.RunStatus.CANCELLED
        assert await mesh.aio.verify() == []

    asyncio.run(main())
    assert mesh.aio is mesh.aio
