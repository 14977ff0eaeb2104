"""A JSON API: place an order (the run starts in the same transaction), and see where it is."""

from __future__ import annotations

import json

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from orders.models import Order, Reservation
from squid_mesh.django import get_mesh


@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    try:
        body = json.loads(request.body)
        sku, quantity = str(body["sku"]), int(body["quantity"])
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": "expected {'sku': str, 'quantity': int}"}, status=422)
    if quantity < 1:
        return JsonResponse({"error": "quantity: expected at least 1"}, status=422)
    # The order row and the run commit together: no order without its run, no run for an
    # order that was never saved.
    with transaction.atomic():
        order = Order.objects.create(sku=sku, quantity=quantity)
        run = get_mesh().start(
            "fulfil_order", {"order_id": order.pk}, idempotency_key=f"order-{order.pk}"
        )
        order.run_id = run.id
        order.save(update_fields=["run_id"])
    return JsonResponse({"order_id": order.pk, "run_id": run.id}, status=202)


@require_GET
def order_status(request: HttpRequest, order_id: int) -> JsonResponse:
    order = Order.objects.filter(pk=order_id).first()
    if order is None:
        return JsonResponse({"error": "no such order"}, status=404)
    mesh = get_mesh()
    run, why = mesh.inspect_run(order.run_id), mesh.explain_run(order.run_id)
    return JsonResponse(
        {
            "order_id": order.pk,
            "status": order.status,
            "reserved": Reservation.objects.filter(order=order).exists(),
            "run": {"status": run.status, "reason": why.reason, "summary": why.summary},
        }
    )
