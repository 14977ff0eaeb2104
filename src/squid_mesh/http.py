"""HTTP calls from steps, with outcomes mapped onto the step contract (``pip install 'squid-mesh[http]'``).

:func:`request` sends the step's stable idempotency key as the ``Idempotency-Key`` header, so a
step that runs again (a retry, a re-claim after a crash) asks the remote side for the same effect,
not a second one. What comes back decides the step's outcome:

- a response 2xx or 3xx is returned;
- a timeout, a connection error, 408, 429 or any 5xx raises :class:`~squid_mesh.Retry`, honouring a
  ``Retry-After`` header (seconds or an HTTP date) as the delay;
- any other 4xx raises :class:`~squid_mesh.Fail` with code ``http_<status>`` (the request itself is
  wrong: trying again cannot help), and the step takes its error route.

Error messages name the method, host and path, never the query string (where API keys tend to
travel) nor the body.
"""

from __future__ import annotations

import email.utils
import math
import threading
import time
from typing import Any

from squid_mesh.definition.outcomes import Fail, Retry
from squid_mesh.engine.context import StepContext

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("squid_mesh.http needs httpx: pip install 'squid-mesh[http]'") from exc

_RETRYABLE = frozenset({408, 429})
# A Retry-After further out than this is capped: the retry policy's max_attempts still bounds it.
_LONGEST_WAIT = 3600.0


def request(
    ctx: StepContext,
    method: str,
    url: str,
    *,
    client: httpx.Client | None = None,
    timeout: float = 10.0,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request for a step; return the response, or raise ``Retry`` / ``Fail``.

    ``client``: an ``httpx.Client`` of the host's (base URL, auth, proxies); by default one
    client shared by the whole process (thread-safe, pooled connections: making a client loads the
    TLS certificates, ~20 ms, too much for every call). Other keyword arguments (``json=``,
    ``params=``, ``content=``...) go to ``httpx``.

    Example:
        >>> from squid_mesh import http
        >>> def check_gateway(input, ctx):
        ...     reply = http.request(ctx, "POST", "http://127.0.0.1:8700/charges",
        ...                          json={"invoice": input["invoice_id"]})
        ...     return {"charge": reply.json()["id"]}
    """
    sent = {"Idempotency-Key": ctx.idempotency_key, **(headers or {})}
    where = _describe(method, url)
    try:
        response = (client or _shared()).request(
            method, url, headers=sent, timeout=timeout, **kwargs
        )
    except httpx.TimeoutException:
        raise Retry(f"{where}: timed out after {timeout:g} s") from None
    except httpx.TransportError as exc:
        raise Retry(f"{where}: {type(exc).__name__}") from None
    status = response.status_code
    if status < 400:
        return response
    if status >= 500 or status in _RETRYABLE:
        raise Retry(
            f"{where}: HTTP {status}", after=retry_after(response.headers.get("Retry-After"))
        )
    raise Fail(f"{where}: HTTP {status}", code=f"http_{status}", details={"status": status})


class _Shared:
    """One client for the process, made on first use."""

    client: httpx.Client | None = None
    lock = threading.Lock()


def _shared() -> httpx.Client:
    if _Shared.client is None:
        with _Shared.lock:
            if _Shared.client is None:
                _Shared.client = httpx.Client(follow_redirects=False)
    return _Shared.client


def get(ctx: StepContext, url: str, **kwargs: Any) -> httpx.Response:
    """:func:`request` with ``GET``."""
    return request(ctx, "GET", url, **kwargs)


def post(ctx: StepContext, url: str, **kwargs: Any) -> httpx.Response:
    """:func:`request` with ``POST``."""
    return request(ctx, "POST", url, **kwargs)


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date), or ``None``.

    >>> retry_after("7")
    7.0
    >>> retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
    10.0
    >>> retry_after("soon") is None
    True
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), _LONGEST_WAIT)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    wait = when.timestamp() - (time.time() if now is None else now)
    return min(max(wait, 0.0), _LONGEST_WAIT) if math.isfinite(wait) else None


def _describe(method: str, url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return f"{method.upper()} <invalid url>"
    return f"{method.upper()} {parsed.scheme}://{parsed.host}{parsed.path}"
