"""Workflows and helpers shared by the console's API and browser tests."""

from __future__ import annotations

import threading
from typing import Any

import squid_mesh as sm

TOKEN = "console-test-token-0123456789"
Input = dict[str, Any]


def console_workflows(gate: threading.Event | None = None) -> list[sm.Workflow]:
    """An approval flow, a DAG with a join, a step that holds until ``gate`` is set, a cron one."""
    refund = sm.Workflow("refund", payload={"ticket": sm.Field(str), "card": sm.Field(str)})

    @refund.step()
    def prepare(input: Input, ctx: sm.StepContext) -> Input:
        return {"prepared": input["ticket"]}

    refund.approval("manager_ok", output="approval")

    @refund.step()
    def pay(input: Input, ctx: sm.StepContext) -> Input:
        return {"paid": True}

    @refund.step()
    def close(input: Input, ctx: sm.StepContext) -> Input:
        return {"closed": True}

    refund.transition("prepare", to="manager_ok")
    refund.transition("manager_ok", to="pay")
    refund.transition("manager_ok", to="close", on="error")
    refund.transition("pay", to=sm.COMPLETE)
    refund.transition("close", to=sm.COMPLETE)

    fanout = sm.Workflow("fanout", queue="reports")

    @fanout.step()
    def fetch(input: Input, ctx: sm.StepContext) -> Input:
        return {"rows": 3}

    @fanout.step(after=["fetch"])
    def left(input: Input, ctx: sm.StepContext) -> Input:
        return {"left": 1}

    @fanout.step(after=["fetch"])
    def right(input: Input, ctx: sm.StepContext) -> Input:
        return {"right": 2}

    @fanout.step(after=["left", "right"])
    def join(input: Input, ctx: sm.StepContext) -> Input:
        return {"joined": True}

    slow = sm.Workflow("slow")

    @slow.step()
    def hold(input: Input, ctx: sm.StepContext) -> Input:
        while gate is not None and not gate.wait(0.05):
            ctx.heartbeat()
        return {}

    slow.transition("hold", to=sm.COMPLETE)

    nightly = sm.Workflow("nightly", triggers=[sm.Manual(), sm.Cron("0 2 * * *", name="night")])

    @nightly.step()
    def sweep(input: Input, ctx: sm.StepContext) -> Input:
        return {}

    nightly.transition("sweep", to=sm.COMPLETE)
    return [refund, fanout, slow, nightly]


class LiveServer:
    """A console (or any ASGI app) served by uvicorn on 127.0.0.1 in a thread of this process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                break
            threading.Event().wait(0.01)
        assert self.server.started, "uvicorn did not start"
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
