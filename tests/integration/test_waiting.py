"""wait_run: a caller blocks (or awaits) until workers elsewhere move the run where it waits for."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory


def refund() -> sm.Workflow:
    wf = sm.Workflow("refund", payload={"amount": sm.Field(int)})

    @wf.step()
    def check(input: dict, ctx: sm.StepContext) -> dict:
        return {"checked": input["amount"]}

    wf.approval("manager", output="approval")

    @wf.step()
    def pay(input: dict, ctx: sm.StepContext) -> dict:
        return {"paid": True}

    wf.transition("check", to="manager")
    wf.transition("manager", to="pay")
    wf.transition("manager", to=sm.COMPLETE, on="error")
    wf.transition("pay", to=sm.COMPLETE)
    return wf


@contextmanager
def worker_after(mesh: sm.Mesh, delay: float) -> Iterator[None]:
    """A thread that starts executing steps ``delay`` seconds from now, until the block ends."""
    stop = threading.Event()

    def work() -> None:
        stop.wait(delay)
        while not stop.is_set():
            if mesh.execute_next(owner_id="waiter-test") is None:
                stop.wait(0.01)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def test_wait_run_returns_once_a_worker_elsewhere_moves_the_run(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([refund()])
    run = mesh.start("refund", {"amount": 30})
    with worker_after(mesh, 0.2):
        began = time.monotonic()
        paused = mesh.wait_run(run.id, until="paused", timeout=10)
        waited = time.monotonic() - began
        assert paused.status == "paused" and paused.gate is not None
        assert paused.context["checked"] == 30
        assert waited >= 0.2  # it really waited for the worker
        mesh.approve(run.id, actor="ops")
        done = mesh.wait_run(run.id, timeout=10, poll_interval=0.05)
    assert done.status == "completed" and done.context["paid"] is True
    assert mesh.wait_run(run.id, timeout=0.01).status == "completed"  # already there: at once


def test_wait_run_times_out_with_the_status_and_refuses_bad_input(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([refund()])
    run = mesh.start("refund", {"amount": 5})
    with pytest.raises(sm.WaitTimeoutError) as caught:
        mesh.wait_run(run.id, timeout=0.2, poll_interval=0.05)  # no worker: it stays running
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.run_id == run.id and caught.value.status == "running"
    assert "after 0.2 s (waited for: cancelled, completed, failed)" in str(caught.value)
    with pytest.raises(sm.RunNotFoundError):
        mesh.wait_run("0193f0c2-0000-7000-8000-000000000000", timeout=1)
    with pytest.raises(sm.InvalidOptionError, match="until"):
        mesh.wait_run(run.id, until=["finished"])
    with pytest.raises(sm.InvalidOptionError, match="timeout"):
        mesh.wait_run(run.id, timeout=-1)


def test_aio_wait_run_leaves_the_event_loop_free(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([refund()])
    runs = [mesh.start("refund", {"amount": i}) for i in range(5)]

    async def main() -> tuple[list[sm.RunSnapshot], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        waits = [mesh.aio.wait_run(r.id, until="paused", timeout=10) for r in runs]
        with worker_after(mesh, 0.2):
            found = await asyncio.gather(*waits)
        task.cancel()
        return list(found), ticks

    found, ticks = asyncio.run(main())
    assert [s.status for s in found] == ["paused"] * 5
    assert [s.id for s in found] == [r.id for r in runs]
    assert ticks >= 10  # the loop ran on while five waits were pending
