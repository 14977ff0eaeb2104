"""The JSON API behind the pages: ``/api/...`` (described by ``/api/openapi.json``)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from squid_mesh.read.queues import QueueStats
from squid_mesh.web import _views as views
from squid_mesh.web._console import (
    ACTION_FIELDS,
    ACTIONS,
    Console,
    Refusal,
    call,
    read_body,
    run_action,
)
from squid_mesh.web._openapi import document
from squid_mesh.web._security import CSRF_HEADER, User

_LIST_PARAMS = {"workflow", "status", "queue", "cursor", "limit"}


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


async def _user(request: Request) -> tuple[User, bool]:
    user, header_auth = await _console(request).identify(request)
    if user is None:
        raise Refusal(401, "unauthenticated", "sign in: a bearer token or a console session")
    return user, header_auth


def _limit(raw: str | None) -> int:
    if raw is None:
        return 50
    try:
        value = int(raw)
    except ValueError:
        raise Refusal(422, "invalid_option", "limit: expected an integer", field="limit") from None
    if not 1 <= value <= 500:
        raise Refusal(422, "invalid_option", "limit: expected 1 to 500", field="limit")
    return value


async def list_runs(request: Request) -> JSONResponse:
    await _user(request)
    params = request.query_params
    unknown = sorted(set(params) - _LIST_PARAMS)
    if unknown:
        raise Refusal(
            422, "invalid_option", f"unknown query parameter {unknown[0]!r}", field=unknown[0]
        )
    mesh = _console(request).mesh
    filters = {k: params.get(k) or None for k in ("workflow", "status", "queue")}
    page = await call(
        mesh.list_runs,
        **filters,
        cursor=params.get("cursor") or None,
        limit=_limit(params.get("limit")),
    )
    counts = await call(mesh.run_counts, workflow=filters["workflow"], queue=filters["queue"])
    return JSONResponse(
        {
            "runs": [views.summary(r) for r in page.runs],
            "next_cursor": page.next_cursor,
            "counts": {status.value: n for status, n in counts.items()},
        }
    )


async def get_run(request: Request) -> JSONResponse:
    user, _ = await _user(request)
    snap = await call(_console(request).mesh.inspect_run, request.path_params["run_id"])
    return JSONResponse(views.run_detail(snap, payloads=user.can_see_payloads))


async def explain(request: Request) -> JSONResponse:
    await _user(request)
    exp = await call(_console(request).mesh.explain_run, request.path_params["run_id"])
    return JSONResponse(views.explanation(exp))


async def graph(request: Request) -> JSONResponse:
    await _user(request)
    g = await call(_console(request).mesh.run_graph, request.path_params["run_id"])
    return JSONResponse(views.graph(g))


async def _body(request: Request, action: str) -> dict[str, Any]:
    raw = await read_body(request)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise Refusal(422, "invalid_body", "the body is not JSON (or nested too deeply)") from None
    if not isinstance(body, dict):
        raise Refusal(422, "invalid_body", "the body must be a JSON object")
    allowed = ACTION_FIELDS[action]
    for name, value in body.items():
        if name not in allowed:
            raise Refusal(
                422, "invalid_option", f"{action} takes no field {name!r}", field=str(name)
            )
        if value is not None and not isinstance(value, allowed[name]):
            kind = "true or false" if allowed[name] is bool else "a string"
            raise Refusal(422, "invalid_option", f"{name}: expected {kind}", field=name)
    return body


async def act(request: Request) -> JSONResponse:
    console = _console(request)
    user, header_auth = await _user(request)
    action = request.path_params["action"]
    if action not in ACTIONS:
        raise Refusal(404, "not_found", f"no action {action!r} (actions: {', '.join(ACTIONS)})")
    console.check_action(user, header_auth, request.headers.get(CSRF_HEADER))
    fields = await _body(request, action)
    snap = await call(run_action, console, action, request.path_params["run_id"], user, fields)
    status = 201 if action == "replay" else 200
    return JSONResponse(views.run_detail(snap, payloads=user.can_see_payloads), status_code=status)


async def queues(request: Request) -> JSONResponse:
    await _user(request)
    mesh = _console(request).mesh
    stats = await call(mesh.queue_stats)
    limits = await call(mesh.queue_limits)
    workers = await call(mesh.workers)
    names = sorted(set(stats) | set(limits))
    return JSONResponse(
        {
            "queues": [
                {
                    **views.plain(stats.get(q) or QueueStats(q, 0, 0, 0)),
                    "limits": views.plain(limits[q]) if q in limits else None,
                }
                for q in names
            ],
            "workers": views.plain(workers),
        }
    )


async def schedules(request: Request) -> JSONResponse:
    await _user(request)
    found = await call(_console(request).mesh.schedules)
    return JSONResponse({"schedules": views.plain(found)})


async def session(request: Request) -> JSONResponse:
    console = _console(request)
    user, _ = await _user(request)
    return JSONResponse(
        {
            "user": views.plain(user),
            "csrf": console.csrf(user),
            "read_only": console.read_only,
        }
    )


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(document(_console(request).title))


async def not_found(request: Request) -> JSONResponse:
    raise Refusal(404, "not_found", f"no API endpoint {request.url.path}")


routes = [
    Route("/api/openapi.json", openapi),
    Route("/api/session", session),
    Route("/api/runs", list_runs),
    Route("/api/runs/{run_id}", get_run),
    Route("/api/runs/{run_id}/explain", explain),
    Route("/api/runs/{run_id}/graph", graph),
    Route("/api/runs/{run_id}/{action}", act, methods=["POST"]),
    Route("/api/queues", queues),
    Route("/api/schedules", schedules),
    Route("/api/{rest:path}", not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
]
