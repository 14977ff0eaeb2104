"""What the API and the pages share: who is asking, what they may do, and how refusals look."""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from squid_mesh.errors import (
    IdempotencyConflictError,
    InvalidOptionError,
    PayloadError,
    ReplayRefusedError,
    RunFinishedError,
    RunNotFoundError,
    RunNotPausedError,
    SquidMeshError,
    StoreError,
    UnknownWorkflowError,
    WrongGateError,
)
from squid_mesh.mesh import Mesh
from squid_mesh.read.snapshot import RunSnapshot
from squid_mesh.web import _security as sec
from squid_mesh.web._security import User

T = TypeVar("T")
Auth = Callable[[Request], User | Awaitable[User | None] | None]

ACTIONS = ("approve", "reject", "resume", "cancel", "replay")
# Which body fields each action takes; anything else is refused with a 422 naming it.
ACTION_FIELDS: dict[str, dict[str, type]] = {
    "approve": {"comment": str, "idempotency_key": str},
    "reject": {"comment": str, "idempotency_key": str},
    "resume": {"comment": str, "idempotency_key": str},
    "cancel": {"reason": str, "idempotency_key": str},
    "replay": {"allow_irreversible": bool, "idempotency_key": str},
}

_STATUS_OF: list[tuple[type[SquidMeshError], int]] = [
    (RunNotFoundError, 404),
    (RunFinishedError, 409),
    (RunNotPausedError, 409),
    (WrongGateError, 409),
    (ReplayRefusedError, 409),
    (IdempotencyConflictError, 409),
    (UnknownWorkflowError, 409),
    (InvalidOptionError, 422),
    (PayloadError, 422),
    (StoreError, 503),
]


class Refusal(Exception):
    """A request the console refuses: an HTTP status, a stable code, a message for a person."""

    def __init__(
        self, status: int, code: str, message: str, *, field: str | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The JSON error body: ``{"error": {"code", "message", "field", ...}}``."""
        return {
            "error": {"code": self.code, "message": self.message, "field": self.field, **self.extra}
        }


def refusal_of(exc: SquidMeshError) -> Refusal:
    """The HTTP refusal for a squid-mesh error (the message never holds secrets)."""
    status = next((s for kind, s in _STATUS_OF if isinstance(exc, kind)), 400)
    extra: dict[str, Any] = {}
    if isinstance(exc, ReplayRefusedError) and exc.steps:
        extra["steps"] = exc.steps
    field = getattr(exc, "option", None)
    return Refusal(status, exc.code, exc.message, field=field, **extra)


@dataclass
class Console:
    """The console's settings and the mesh it operates (or where to find it, per request)."""

    source: Callable[[], Mesh | None]
    auth: Auth | None
    token: str | None = field(repr=False)
    read_only: bool
    secret: bytes = field(repr=False)
    title: str
    refresh_seconds: int

    @property
    def mesh(self) -> Mesh:
        """The mesh to serve this request with; a 503 while the host has none connected."""
        mesh = self.source()
        if mesh is None:
            raise Refusal(
                503,
                "mesh_unavailable",
                "the console's mesh is not connected (yet): the host's app is starting or stopping",
            )
        if not isinstance(mesh, Mesh):
            # A wrong object given to web.app(...): a host's bug, not a passing state.
            raise TypeError(
                f"web.app(mesh=...): the callable returned a {type(mesh).__name__}, "
                "not a squid_mesh.Mesh (or None while there is none)"
            )
        return mesh

    @classmethod
    def create(
        cls,
        mesh: Mesh | Callable[[], Mesh | None],
        *,
        auth: Auth | None,
        token: str | None,
        read_only: bool,
        secret: str | bytes | None,
        title: str,
        refresh_seconds: int,
    ) -> Console:
        if isinstance(mesh, Mesh):
            source: Callable[[], Mesh | None] = lambda: mesh  # noqa: E731
        elif callable(mesh):
            source = mesh
        else:
            raise InvalidOptionError(
                "mesh",
                "expected the squid_mesh.Mesh of sm.connect(...), or a callable returning it",
            )
        if (auth is None) == (token is None):
            raise InvalidOptionError(
                "auth", "give exactly one of auth= (a callable: request -> User | None) or token="
            )
        if auth is not None and not callable(auth):
            raise InvalidOptionError("auth", "expected a callable taking the request")
        if token is not None and (not isinstance(token, str) or len(token) < 16):
            raise InvalidOptionError("token", "expected a string of at least 16 characters")
        if isinstance(secret, str):
            secret = secret.encode()
        if secret is not None and len(secret) < 16:
            raise InvalidOptionError("secret", "expected at least 16 bytes")
        if secret is None:
            # The token is a shared secret already; otherwise a per-process key, which is why
            # several server processes behind one address need secret= (their CSRF values differ).
            secret = sec.csrf_key(token) if token else os.urandom(32)
        if isinstance(refresh_seconds, bool) or not isinstance(refresh_seconds, int):
            raise InvalidOptionError("refresh_seconds", "expected an integer (0: no refresh)")
        return cls(source, auth, token, bool(read_only), secret, title, max(0, refresh_seconds))

    async def identify(self, request: Request) -> tuple[User | None, bool]:
        """The user, and whether they authenticated with a bearer header (no CSRF needed then).

        The host's ``auth`` may be a plain or an ``async`` callable; a plain one runs in a thread,
        so one that queries a database does not stall the event loop.
        """
        if self.token is not None:
            given = sec.bearer(request.headers.get("authorization"))
            if given is not None:
                ok = sec.token_matches(given, self.token)
                return (User("token", can_act=True, can_see_payloads=True) if ok else None), ok
            cookie = request.cookies.get(sec.SESSION_COOKIE)
            if sec.session_matches(cookie, self.token):
                return User("operator", can_act=True, can_see_payloads=True), False
            return None, False
        assert self.auth is not None
        if inspect.iscoroutinefunction(self.auth):
            user = await self.auth(request)
        else:
            user = await run_in_threadpool(self.auth, request)
        if inspect.isawaitable(user):
            user = await user
        if user is not None and not isinstance(user, User):
            raise TypeError("the console's auth callable must return squid_mesh.web.User or None")
        return user, False

    def csrf(self, user: User) -> str:
        """The user's CSRF value."""
        return sec.csrf_value(self.secret, user)

    def check_action(self, user: User, header_auth: bool, posted_csrf: str | None) -> None:
        """Refuse an action in read-only mode, without the permission, or without CSRF value."""
        if not header_auth and not sec.csrf_matches(posted_csrf, self.secret, user):
            raise Refusal(403, "csrf_failed", "missing or wrong CSRF value: reload the page")
        if self.read_only:
            raise Refusal(403, "read_only", "this console is read-only")
        if not user.can_act:
            raise Refusal(403, "forbidden", f"user {user.name!r} may not act on runs")


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking mesh call off the event loop; squid-mesh errors become refusals."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except SquidMeshError as exc:
        raise refusal_of(exc) from None


MAX_BODY = 64 * 1024  # an action's fields or a sign-in form: anything larger is not ours


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 past ``MAX_BODY`` (checked while it streams in)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise Refusal(413, "body_too_large", f"the body is larger than {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY:
            raise Refusal(413, "body_too_large", f"the body is larger than {MAX_BODY} bytes")
    return bytes(body)


def base_path(request: Request) -> str:
    """Where the console is mounted (``""`` at the root), for links and cookies."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def run_action(
    console: Console, action: str, run_id: str, user: User, fields: dict[str, Any]
) -> RunSnapshot:
    """The mesh command of an action, with the user as its actor."""
    mesh = console.mesh
    key = fields.get("idempotency_key")
    if action in ("approve", "reject", "resume"):
        command: Callable[..., RunSnapshot] = getattr(mesh, action)
        return command(run_id, actor=user.name, comment=fields.get("comment"), idempotency_key=key)
    if action == "cancel":
        return mesh.cancel(
            run_id, actor=user.name, reason=fields.get("reason"), idempotency_key=key
        )
    return mesh.replay(
        run_id,
        actor=user.name,
        allow_irreversible=bool(fields.get("allow_irreversible", False)),
        idempotency_key=key,
    )
