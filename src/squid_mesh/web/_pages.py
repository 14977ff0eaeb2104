"""The server-rendered pages: runs, run detail, queues, schedules, sign-in."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from squid_mesh.journal.fold import RunStatus
from squid_mesh.web import _security as sec
from squid_mesh.web import _views as views
from squid_mesh.web._console import (
    ACTIONS,
    Console,
    Refusal,
    base_path,
    call,
    read_body,
    run_action,
)
from squid_mesh.web._security import User
from squid_mesh.web._svg import graph_svg

_env = Environment(
    loader=PackageLoader("squid_mesh.web", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)

_DONE = {
    "approve": "Approved.",
    "reject": "Rejected.",
    "resume": "Resumed.",
    "cancel": "Cancelled.",
    "replay": "Replay started: this is the new run.",
}


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def render(
    request: Request, template: str, status: int = 200, user: User | None = None, **ctx: Any
) -> HTMLResponse:
    """A page, with what every page needs (title, links, user, CSRF value)."""
    console = _console(request)
    html = _env.get_template(template).render(
        base=base_path(request),
        title=console.title,
        user=user,
        csrf=console.csrf(user) if user else "",
        read_only=console.read_only,
        token_mode=console.token is not None,
        can_act=bool(user and user.can_act and not console.read_only),
        **ctx,
    )
    return HTMLResponse(html, status_code=status)


async def _signed_in(request: Request) -> User | Response:
    user, _ = await _console(request).identify(request)
    if user is not None:
        return user
    if _console(request).token is not None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        query = urlencode({"next": target})
        return RedirectResponse(f"{base_path(request)}/login?{query}", status_code=303)
    return render(
        request, "error.html", 401, message="Sign in to the host application first.", code=401
    )


async def runs_page(request: Request) -> Response:
    user = await _signed_in(request)
    if isinstance(user, Response):
        return user
    mesh = _console(request).mesh
    params = request.query_params
    filters = {k: params.get(k) or None for k in ("workflow", "status", "queue")}
    error = None
    try:
        page = await call(mesh.list_runs, **filters, cursor=params.get("cursor") or None)
    except Refusal as refusal:
        error, page = refusal.message, None
    counts = await call(mesh.run_counts, workflow=filters["workflow"], queue=filters["queue"])
    stats = await call(mesh.queue_stats)
    queues = sorted(set(stats) | {d.queue for d in mesh._engine.latest.values()})
    chosen = {k: v for k, v in filters.items() if v}
    older = None
    if page is not None and page.next_cursor:
        older = urlencode({**chosen, "cursor": page.next_cursor})
    status_links = {
        s.value: urlencode(
            {**{k: v for k, v in chosen.items() if k != "status"}, "status": s.value}
        )
        for s in RunStatus
    }
    return render(
        request,
        "runs.html",
        422 if error else 200,
        user,
        runs=[views.summary(r) for r in page.runs] if page else [],
        filters={k: v or "" for k, v in filters.items()},
        statuses=[s.value for s in RunStatus],
        workflows=sorted(mesh._engine.latest),
        queues=queues,
        counts={s.value: n for s, n in counts.items()},
        older=older,
        newest=urlencode(chosen),
        status_links=status_links,
        paged=bool(params.get("cursor")),
        error=error,
        refresh=_console(request).refresh_seconds,
    )


async def _detail(
    request: Request, user: User, run_id: str, *, status: int = 200, **extra: Any
) -> Response:
    mesh = _console(request).mesh
    try:
        snap = await call(mesh.inspect_run, run_id)
    except Refusal as refusal:
        return render(
            request,
            "error.html",
            refusal.status,
            user,
            message=refusal.message,
            code=refusal.status,
        )
    explanation = await call(mesh.explain_run, run_id)
    try:
        svg: Markup | None = Markup(graph_svg(await call(mesh.run_graph, run_id)))
        graph_error = None
    except Refusal as refusal:
        svg, graph_error = None, refusal.message
    run = views.run_detail(snap, payloads=user.can_see_payloads)
    return render(
        request,
        "run.html",
        status,
        user,
        run=run,
        gate=run["gate"],
        explanation=views.explanation(explanation),
        svg=svg,
        graph_error=graph_error,
        # A refusal is the answer to a POST: reloading it would post the action again.
        refresh=0 if snap.terminal or "failure" in extra else _console(request).refresh_seconds,
        **extra,
    )


async def run_page(request: Request) -> Response:
    user = await _signed_in(request)
    if isinstance(user, Response):
        return user
    done = request.query_params.get("done")
    return await _detail(request, user, request.path_params["run_id"], notice=_DONE.get(done or ""))


async def _form(request: Request) -> dict[str, str]:
    # urlencoded only: parsed here rather than pulling in a multipart parser for four fields.
    body = (await read_body(request)).decode("utf-8", "replace")
    fields = parse_qs(body, keep_blank_values=True, max_num_fields=20)
    return {k: v[0] for k, v in fields.items()}


async def action_post(request: Request) -> Response:
    console = _console(request)
    user, header_auth = await console.identify(request)
    if user is None:
        return render(request, "error.html", 401, message="Sign in first.", code=401)
    run_id, action = request.path_params["run_id"], request.path_params["action"]
    if action not in ACTIONS:
        return render(request, "error.html", 404, user, message="No such action.", code=404)
    form = await _form(request)
    fields: dict[str, Any] = {
        "comment": form.get("comment") or None,
        "reason": form.get("reason") or None,
        "allow_irreversible": form.get("allow_irreversible") == "yes",
    }
    try:
        console.check_action(user, header_auth, form.get(sec.CSRF_FIELD))
        snap = await call(run_action, console, action, run_id, user, fields)
    except Refusal as refusal:
        return await _detail(request, user, run_id, status=refusal.status, failure=refusal.message)
    return RedirectResponse(f"{base_path(request)}/runs/{snap.id}?done={action}", status_code=303)


async def queues_page(request: Request) -> Response:
    user = await _signed_in(request)
    if isinstance(user, Response):
        return user
    mesh = _console(request).mesh
    stats = await call(mesh.queue_stats)
    limits = await call(mesh.queue_limits)
    names = sorted(set(stats) | set(limits) | {d.queue for d in mesh._engine.latest.values()})
    rows = [
        {
            "queue": q,
            "stats": views.plain(stats[q]) if q in stats else None,
            "limits": views.plain(limits[q]) if q in limits else None,
        }
        for q in names
    ]
    workers = views.plain(await call(mesh.workers))
    return render(request, "queues.html", 200, user, rows=rows, workers=workers)


async def schedules_page(request: Request) -> Response:
    user = await _signed_in(request)
    if isinstance(user, Response):
        return user
    found = views.plain(await call(_console(request).mesh.schedules))
    return render(request, "schedules.html", 200, user, schedules=found)


def _safe_next(request: Request, target: str | None) -> str:
    """Only a path inside the console: never an open redirect to another site."""
    base = base_path(request)
    if target and target.startswith(f"{base}/") and not target.startswith("//"):
        return target
    return f"{base}/"


async def login_page(request: Request) -> Response:
    if _console(request).token is None:
        return render(request, "error.html", 404, message="No sign-in here.", code=404)
    return render(request, "login.html", next=_safe_next(request, request.query_params.get("next")))


async def login_post(request: Request) -> Response:
    console = _console(request)
    if console.token is None:
        return render(request, "error.html", 404, message="No sign-in here.", code=404)
    form = await _form(request)
    target = _safe_next(request, form.get("next"))
    if not sec.token_matches(form.get("token"), console.token):
        return render(request, "login.html", 401, next=target, failed=True)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        sec.SESSION_COOKIE,
        sec.session_value(console.token),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=f"{base_path(request)}/",
    )
    return response


async def logout_post(request: Request) -> Response:
    console = _console(request)
    user, _ = await console.identify(request)
    form = await _form(request)
    if user is not None and not sec.csrf_matches(form.get(sec.CSRF_FIELD), console.secret, user):
        return render(request, "error.html", 403, user, message="Wrong CSRF value.", code=403)
    response = RedirectResponse(f"{base_path(request)}/login", status_code=303)
    response.delete_cookie(sec.SESSION_COOKIE, path=f"{base_path(request)}/")
    return response


async def error_page(request: Request, status: int, message: str) -> Response:
    """An HTML error page (unknown page, wrong method, a refusal)."""
    try:
        user, _ = await _console(request).identify(request)
    except Exception:  # the page explains the first problem; a failing auth must not hide it
        user = None
    return render(request, "error.html", status, user, message=message, code=status)


routes = [
    Route("/", runs_page),
    Route("/runs/{run_id}", run_page),
    Route("/runs/{run_id}/{action}", action_post, methods=["POST"]),
    Route("/queues", queues_page),
    Route("/schedules", schedules_page),
    Route("/login", login_page),
    Route("/login", login_post, methods=["POST"]),
    Route("/logout", logout_post, methods=["POST"]),
]
