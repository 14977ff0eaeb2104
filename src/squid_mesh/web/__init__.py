"""Operator web console (``pip install 'squid-mesh[web]'``): an ASGI app to mount in the host.

Pages for runs (filters, counts, paging, auto-refresh), a run's detail (explanation, graph,
attempts, commands, lineage), queues and workers, and cron schedules; actions (approve, reject,
resume, cancel, replay) with confirmation and CSRF protection; a JSON API under ``/api`` with an
OpenAPI description at ``/api/openapi.json``. Every asset ships in the package.

Example:
    >>> from starlette.applications import Starlette  # doctest: +SKIP
    >>> from starlette.routing import Mount  # doctest: +SKIP
    >>> import squid_mesh.web  # doctest: +SKIP
    >>> host = Starlette(routes=[
    ...     Mount("/workflows", squid_mesh.web.app(mesh, auth=current_user)),
    ... ])  # doctest: +SKIP

``auth`` is the host's: a callable taking the Starlette request and returning a
:class:`User` (or ``None``: not signed in). ``token=`` instead is a shared secret for the CLI
server (``squid-mesh web``): API clients send ``Authorization: Bearer <token>``, browsers sign in
once with it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from squid_mesh.mesh import Mesh
from squid_mesh.web import _api, _pages
from squid_mesh.web._console import Auth, Console, Refusal
from squid_mesh.web._security import User

__all__ = ["User", "app"]

_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class _SecurityHeaders:
    """Every response forbids framing, inline scripts and assets from elsewhere."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.inner(scope, receive, with_headers)


def _is_api(request: Request) -> bool:
    path = request.url.path
    root = str(request.scope.get("root_path", "")).rstrip("/")
    inside = path.removeprefix(root)
    return inside == "/api" or inside.startswith("/api/")


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refusal)
    if _is_api(request):
        headers = {"www-authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)
    return await _pages.error_page(request, exc.status, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "Not found.", 405: "Method not allowed."}.get(exc.status_code, str(exc.detail))
    if _is_api(request):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            Refusal(exc.status_code, code, message).body(), status_code=exc.status_code
        )
    return await _pages.error_page(request, exc.status_code, message)


async def _crashed(request: Request, exc: Exception) -> Response:
    # Starlette re-raises it afterwards, so the server logs the traceback; the client gets no
    # detail that could hold data.
    if _is_api(request):
        body = Refusal(500, "internal_error", "the console failed; see the server's log").body()
        return JSONResponse(body, status_code=500)
    return await _pages.error_page(request, 500, "The console failed; see the server's log.")


def app(
    mesh: Mesh | Callable[[], Mesh | None],
    *,
    auth: Auth | None = None,
    token: str | None = None,
    read_only: bool = False,
    secret: str | bytes | None = None,
    title: str = "squid-mesh",
    refresh_seconds: int = 5,
) -> Starlette:
    """The console as an ASGI app, to mount in the host's app or serve on its own.

    ``mesh``: the mesh, or a callable that returns it at each request (``lambda:
    api.state.mesh``), for a host that connects it in its lifespan, after the app is built; while
    it returns ``None`` the console answers 503 ``mesh_unavailable``.

    Exactly one of ``auth`` (the host's: ``request -> User | None``) and ``token`` (a shared
    secret of at least 16 characters). ``read_only`` refuses every action and hides its buttons.
    ``secret`` keys the CSRF values: give the same one to every server process behind one address
    (by default: derived from ``token``, or random per process). ``refresh_seconds``: how often
    the runs page and an unfinished run's page reload themselves (0: never).

    Example:
        >>> console = squid_mesh.web.app(mesh, token=os.environ["CONSOLE_TOKEN"])  # doctest: +SKIP
        >>> uvicorn.run(console, host="127.0.0.1", port=8080)  # doctest: +SKIP
    """
    console = Console.create(
        mesh,
        auth=auth,
        token=token,
        read_only=read_only,
        secret=secret,
        title=title,
        refresh_seconds=refresh_seconds,
    )
    static = StaticFiles(directory=Path(__file__).parent / "static")
    web = Starlette(
        routes=[*_api.routes, Mount("/static", static, name="static"), *_pages.routes],
        exception_handlers={Refusal: _refused, HTTPException: _http_error, Exception: _crashed},
        middleware=[Middleware(_SecurityHeaders)],
    )
    web.state.console = console
    return web
