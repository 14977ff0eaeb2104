"""The shop's workflows: an order's fulfilment, and a refund that waits for a manager."""

from __future__ import annotations

import asyncio
from typing import Any

import squid_mesh as sm

Data = dict[str, Any]
QUEUE = "shop"

order_fulfilment = sm.Workflow(
    "order_fulfilment",
    version="1",
    queue=QUEUE,
    payload={"order_id": sm.Field(str), "amount": sm.Field(int)},
)


@order_fulfilment.step()
def reserve_stock(input: Data, ctx: sm.StepContext) -> Data:
    return {"reservation": f"res-{input['order_id']}"}


@order_fulfilment.step(
    retry=sm.RetryPolicy(max_attempts=3, backoff=sm.Backoff.exponential(min=0.5, max=5.0))
)
def charge(input: Data, ctx: sm.StepContext) -> Data:
    # A real shop calls its payment provider here, passing ctx.idempotency_key so that a retry
    # after a timeout cannot charge the card twice. An exception means: try again after backoff.
    return {"charge_id": f"ch-{ctx.idempotency_key}", "charged": input["amount"]}


@order_fulfilment.step()
def ship(input: Data, ctx: sm.StepContext) -> Data:
    return {"tracking": f"trk-{input['order_id']}"}


@order_fulfilment.step()
async def email_receipt(input: Data, ctx: sm.StepContext) -> Data:
    # An async step runs on the worker's own event loop (not the web server's), natively.
    await asyncio.sleep(0.01)  # stands in for an async mail client
    return {"receipt_sent": True}


order_fulfilment.transition("reserve_stock", to="charge")
order_fulfilment.transition("charge", to="ship")
order_fulfilment.transition("ship", to="email_receipt")
order_fulfilment.transition("email_receipt", to=sm.COMPLETE)

refund = sm.Workflow(
    "refund",
    version="1",
    queue=QUEUE,
    payload={"order_id": sm.Field(str), "amount": sm.Field(int)},
)


@refund.step()
def open_ticket(input: Data, ctx: sm.StepContext) -> Data:
    return {"ticket": f"refund-{input['order_id']}"}


refund.approval("manager_ok", output="approval")


@refund.step()
def pay_back(input: Data, ctx: sm.StepContext) -> Data:
    return {"refunded": input["amount"], "approved_by": input["approval"]["actor"]}


@refund.step()
def close(input: Data, ctx: sm.StepContext) -> Data:
    return {"closed": input["ticket"], "rejected_by": input["approval"]["actor"]}


refund.transition("open_ticket", to="manager_ok")
refund.transition("manager_ok", to="pay_back")  # approved
refund.transition("manager_ok", to="close", on="error")  # rejected
refund.transition("pay_back", to=sm.COMPLETE)
refund.transition("close", to=sm.COMPLETE)

WORKFLOWS = [order_fulfilment, refund]
