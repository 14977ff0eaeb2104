"""The host's workflows: what a small billing application would run on squid-mesh.

Steps that the resilience check needs to catch in the middle call :func:`hold`: while the file
``$HOST_APP_HOLD_DIR/<name>`` exists, the step waits (at most a minute). Nothing else crosses
processes except the database and the gateway stub.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import squid_mesh as sm
from host_app.db import mark
from squid_mesh import http

Input = dict[str, Any]
COOL_OFF = 1.0  # seconds a reminder waits before it is delivered


def hold(name: str) -> None:
    """Wait while the hold file ``name`` exists (the resilience check's way to pause a step)."""
    folder = os.environ.get("HOST_APP_HOLD_DIR")
    if not folder:
        return
    flag, deadline = Path(folder) / name, time.monotonic() + 60
    while flag.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def payment_recovery() -> sm.Workflow:
    """Ask the gateway about an unpaid invoice; record the payment, remind, or escalate."""
    wf = sm.Workflow(
        "payment_recovery",
        version="1",
        payload={
            "invoice_id": sm.Field(str),
            "amount": sm.Field(int),
            "gateway_url": sm.Field(str),
        },
    )

    @wf.step(retry=sm.RetryPolicy(max_attempts=4, backoff=sm.Backoff.fixed(0.05)))
    def check_gateway(input: Input, ctx: sm.StepContext) -> Input:
        hold("check_gateway")
        reply = http.post(
            ctx,
            f"{input['gateway_url']}/charges",
            json={"invoice": input["invoice_id"], "amount": input["amount"]},
        )
        body = reply.json()
        return {"gateway_status": body["status"], "charge": body["charge"]}

    @wf.step(transactional=True)
    def record_payment(input: Input, ctx: sm.StepContext) -> Input:
        m = mark(ctx.db)
        ctx.db.execute(
            f"UPDATE host_invoices SET status = 'paid' WHERE id = {m}", (input["invoice_id"],)
        )
        ctx.db.execute(
            f"INSERT INTO host_ledger (run_id, entry, amount) VALUES ({m}, 'payment', {m})",
            (ctx.run_id, input["amount"]),
        )
        return {"recorded": True}

    @wf.step()
    def remind_customer(input: Input, ctx: sm.StepContext) -> Input:
        return {"reminded": input["invoice_id"]}

    @wf.step()
    def escalate(input: Input, ctx: sm.StepContext) -> Input:
        return {"escalated": input["invoice_id"]}

    wf.transition(
        "check_gateway", to="record_payment", when=sm.Condition("gateway_status", equals="paid")
    )
    wf.transition("check_gateway", to="remind_customer")
    wf.transition("check_gateway", to="escalate", on="error")
    wf.transition("record_payment", to=sm.COMPLETE)
    wf.transition("remind_customer", to=sm.COMPLETE)
    wf.transition("escalate", to=sm.COMPLETE)
    return wf


def dependency_recovery() -> sm.Workflow:
    """DAG: check the database and the cache side by side, then restart once both are known."""
    wf = sm.Workflow("dependency_recovery", version="1", payload={"service": sm.Field(str)})

    @wf.step(output="database")
    def check_database(input: Input, ctx: sm.StepContext) -> Input:
        return {"healthy": True}

    @wf.step(output="cache")
    def check_cache(input: Input, ctx: sm.StepContext) -> Input:
        return {"healthy": False}

    @wf.step(after=["check_database", "check_cache"])
    def restart_service(input: Input, ctx: sm.StepContext) -> Input:
        failing = [name for name in ("database", "cache") if not input[name]["healthy"]]
        return {"restarted": input["service"], "because": failing}

    return wf


def refund_approval() -> sm.Workflow:
    """A refund waits for a manager: approved, it is paid; rejected, the ticket is closed."""
    wf = sm.Workflow("refund_approval", version="1", payload={"ticket": sm.Field(str)})

    @wf.step()
    def prepare(input: Input, ctx: sm.StepContext) -> Input:
        return {"prepared": input["ticket"]}

    wf.approval("manager_ok", output="approval")

    @wf.step()
    def refund(input: Input, ctx: sm.StepContext) -> Input:
        hold("refund")
        return {"refunded": input["ticket"], "approved_by": input["approval"]["actor"]}

    @wf.step()
    def close_ticket(input: Input, ctx: sm.StepContext) -> Input:
        return {"closed": input["ticket"]}

    wf.transition("prepare", to="manager_ok")
    wf.transition("manager_ok", to="refund")
    wf.transition("manager_ok", to="close_ticket", on="error")
    wf.transition("refund", to=sm.COMPLETE)
    wf.transition("close_ticket", to=sm.COMPLETE)
    return wf


def daily_digest() -> sm.Workflow:
    """Started by hand or every day at 07:00 UTC: count open invoices, send the digest."""
    wf = sm.Workflow(
        "daily_digest",
        version="1",
        triggers=[sm.Manual(), sm.Cron("0 7 * * *", name="daily", timezone="UTC")],
    )

    @wf.step()
    def collect(input: Input, ctx: sm.StepContext) -> Input:
        slot = (input.get("schedule") or {}).get("slot")
        return {"for_slot": slot}

    @wf.step()
    def send_digest(input: Input, ctx: sm.StepContext) -> Input:
        return {"sent": True}

    wf.transition("collect", to="send_digest")
    wf.transition("send_digest", to=sm.COMPLETE)
    return wf


def ledger_posting() -> sm.Workflow:
    """Two ledger rows that commit with the step's completion, or not at all."""
    wf = sm.Workflow(
        "ledger_posting", version="1", payload={"amount": sm.Field(int), "memo": sm.Field(str)}
    )

    @wf.step(transactional=True)
    def post_entries(input: Input, ctx: sm.StepContext) -> Input:
        m = mark(ctx.db)
        for entry, amount in (("debit", input["amount"]), ("credit", -input["amount"])):
            ctx.db.execute(
                f"INSERT INTO host_ledger (run_id, entry, amount) VALUES ({m}, {m}, {m})",
                (ctx.run_id, entry, amount),
            )
        if input["amount"] <= 0:
            # After the inserts: the failure rolls them back with the step.
            raise sm.Fail("a posting must be positive", code="bad_amount")
        return {"posted": 2}

    wf.transition("post_entries", to=sm.COMPLETE)
    return wf


def checkout() -> sm.Workflow:
    """A saga: reserve stock, charge the card, ship; a failed shipment undoes the first two."""
    wf = sm.Workflow(
        "checkout", version="1", payload={"order": sm.Field(str), "address": sm.Field(str)}
    )

    def release_stock(input: Input, ctx: sm.StepContext) -> Input:
        return {"released": input["output"]["reservation"]}

    def refund_card(input: Input, ctx: sm.StepContext) -> Input:
        hold("refund_card")
        return {"refunded": input["output"]["charge"]}

    @wf.step(compensate=release_stock)
    def reserve_stock(input: Input, ctx: sm.StepContext) -> Input:
        return {"reservation": f"res_{input['order']}"}

    @wf.step(compensate=refund_card)
    def charge_card(input: Input, ctx: sm.StepContext) -> Input:
        return {"charge": f"ch_{input['order']}"}

    @wf.step(irreversible=True)
    def ship(input: Input, ctx: sm.StepContext) -> Input:
        if not input["address"]:
            raise sm.Fail("no shipping address", code="no_address")
        return {"shipped": input["order"]}

    wf.transition("reserve_stock", to="charge_card")
    wf.transition("charge_card", to="ship")
    wf.transition("ship", to=sm.COMPLETE)
    return wf


def team_invite() -> sm.Workflow:
    """A parent that invites each address in a child run on the ``invites`` queue, then waits."""
    wf = sm.Workflow("team_invite", version="1", payload={"emails": sm.Field(list)})

    @wf.step()
    def send_invites(input: Input, ctx: sm.StepContext) -> Input:
        for email in input["emails"]:
            ctx.start_child("invite_one", {"email": email}, child_key=email, queue="invites")
        return {"invited": len(input["emails"])}

    wf.await_children("gather", output="invites")

    @wf.step()
    def summarize(input: Input, ctx: sm.StepContext) -> Input:
        done = sorted(k for k, c in input["invites"].items() if c["status"] == "completed")
        return {"accepted": done}

    wf.transition("send_invites", to="gather")
    wf.transition("gather", to="summarize")
    wf.transition("summarize", to=sm.COMPLETE)
    return wf


def invite_one() -> sm.Workflow:
    """One invitation (a child run of team_invite)."""
    wf = sm.Workflow("invite_one", version="1", payload={"email": sm.Field(str)}, queue="invites")

    @wf.step()
    def deliver_invite(input: Input, ctx: sm.StepContext) -> Input:
        hold("deliver_invite")
        return {"delivered": input["email"]}

    wf.transition("deliver_invite", to=sm.COMPLETE)
    return wf


def reminder() -> sm.Workflow:
    """Wait a cooling-off period (durably), then deliver once: a row in host_deliveries."""
    wf = sm.Workflow("reminder", version="1", payload={"recipient": sm.Field(str)})

    @wf.step()
    def schedule(input: Input, ctx: sm.StepContext) -> Input:
        return {"scheduled": True}

    wf.wait("cool_off", COOL_OFF)

    @wf.step(transactional=True)
    def deliver(input: Input, ctx: sm.StepContext) -> Input:
        m = mark(ctx.db)
        ctx.db.execute(
            f"INSERT INTO host_deliveries (run_id, recipient) VALUES ({m}, {m})",
            (ctx.run_id, input["recipient"]),
        )
        return {"delivered": input["recipient"]}

    wf.transition("schedule", to="cool_off")
    wf.transition("cool_off", to="deliver")
    wf.transition("deliver", to=sm.COMPLETE)
    return wf


def all_workflows() -> list[sm.Workflow]:
    """Every workflow of the host (the checks and the worker processes register the same set)."""
    return [
        payment_recovery(),
        dependency_recovery(),
        refund_approval(),
        daily_digest(),
        ledger_posting(),
        checkout(),
        team_invite(),
        invite_one(),
        reminder(),
    ]


QUEUES = ("default", "invites")
