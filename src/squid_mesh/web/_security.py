"""Who is asking, and whether a form post really comes from the console: pure functions.

The shared-token mode accepts ``Authorization: Bearer <token>`` (API clients) or a session cookie
set by the login form (browsers). The cookie holds an HMAC of the token, never the token, so a
leaked cookie does not reveal it and changing the token logs every browser out. CSRF values are an
HMAC of the user's name under the app's secret: a page from another site cannot compute one, and
requests that carry the bearer header need none (browsers never add that header cross-site).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

SESSION_COOKIE = "squid_mesh_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class User:
    """Who uses the console, as the host's ``auth`` callable (or the shared token) says.

    ``name`` is recorded as the actor of every action; ``can_act`` allows approve, reject, resume,
    cancel and replay; ``can_see_payloads`` shows payloads, context and step inputs and outputs.

    Example:
        >>> User("maria", can_act=True, can_see_payloads=False).name
        'maria'
    """

    name: str
    can_act: bool = True
    can_see_payloads: bool = False


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def session_value(token: str) -> str:
    """The session cookie's value for a shared token (an HMAC of it, not the token)."""
    return _mac(token.encode(), "squid-mesh console session v1")


def csrf_key(token: str) -> bytes:
    """The CSRF key of a token-mode console (another label than the session cookie's)."""
    return _mac(token.encode(), "squid-mesh console csrf v1").encode()


def token_matches(given: str | None, token: str) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def session_matches(cookie: str | None, token: str) -> bool:
    """Whether a session cookie was issued for this token."""
    return cookie is not None and hmac.compare_digest(
        cookie.encode(), session_value(token).encode()
    )


def csrf_value(secret: bytes, user: User) -> str:
    """The CSRF value of a user's forms and API calls."""
    return _mac(secret, f"csrf\0{user.name}")


def csrf_matches(given: str | None, secret: bytes, user: User) -> bool:
    """Whether a posted CSRF value is the user's."""
    return given is not None and hmac.compare_digest(
        given.encode(), csrf_value(secret, user).encode()
    )


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None
