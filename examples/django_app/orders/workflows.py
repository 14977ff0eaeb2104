"""An order's fulfilment: reserve stock, charge, confirm; an order that cannot be served is rejected.

``reserve_stock``, ``confirm`` and ``reject`` are transactional steps: they write the shop's own
tables through the Django ORM, inside the transaction that records the step, so the writes and
the step's completion commit together or not at all. A worker killed in the middle leaves
neither, and the attempt runs again elsewhere: the stock is taken exactly once.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from django.db.models import F

import squid_mesh as sm
from orders.models import Order, Product, Reservation

Data = dict[str, Any]
logger = logging.getLogger("orders")

fulfil_order = sm.Workflow(
    "fulfil_order",
    version="1",
    payload={"order_id": sm.Field(int)},
)


@fulfil_order.step(transactional=True)
def reserve_stock(input: Data, ctx: sm.StepContext) -> Data:
    order = Order.objects.get(pk=input["order_id"])
    # Locks the product row (PostgreSQL) until the step's transaction ends.
    product = Product.objects.select_for_update().get(sku=order.sku)
    if product.stock < order.quantity:
        raise sm.Fail(f"{product.stock} x {order.sku} left", code="out_of_stock")
    Product.objects.filter(pk=product.pk).update(stock=F("stock") - order.quantity)
    Reservation.objects.create(order=order, quantity=order.quantity)
    logger.info("order %s: reserved %d x %s", order.pk, order.quantity, order.sku)
    # A stand-in for a slow call made before the step returns (the warehouse's own system):
    # the crash test kills the worker here, after the ORM writes and before the commit.
    time.sleep(float(os.environ.get("SHOP_WAREHOUSE_DELAY", "0")))
    return {"reserved": order.quantity}


@fulfil_order.step(
    retry=sm.RetryPolicy(max_attempts=5, backoff=sm.Backoff.exponential(min=1.0, max=30.0))
)
def charge(input: Data, ctx: sm.StepContext) -> Data:
    # A real shop calls its payment provider here with ctx.idempotency_key, so that a retry
    # after a timeout cannot charge twice. It is not transactional: it talks to the outside.
    return {"charge_id": f"ch-{ctx.idempotency_key}"}


@fulfil_order.step(transactional=True)
def confirm(input: Data, ctx: sm.StepContext) -> Data:
    Order.objects.filter(pk=input["order_id"]).update(status="confirmed")
    return {"confirmed": True}


@fulfil_order.step(transactional=True)
def reject(input: Data, ctx: sm.StepContext) -> Data:
    Order.objects.filter(pk=input["order_id"]).update(status="rejected")
    return {"rejected": True}


fulfil_order.transition("reserve_stock", to="charge")
fulfil_order.transition("reserve_stock", to="reject", on="error")
fulfil_order.transition("charge", to="confirm")
fulfil_order.transition("confirm", to=sm.COMPLETE)
fulfil_order.transition("reject", to=sm.COMPLETE)
