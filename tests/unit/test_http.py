"""squid_mesh.http against a real local HTTP server: outcomes mapped onto Retry / Fail."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import squid_mesh as sm
from squid_mesh import http

SECRET = "sk_live_abc123"


SEEN: list[dict[str, str]] = []


class Stub(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        SEEN.append({"path": self.path, "key": self.headers.get("Idempotency-Key", "")})
        route = self.path.split("?")[0]
        status, headers = {
            "/ok": (200, {}),
            "/busy": (503, {"Retry-After": "7"}),
            "/throttled": (429, {}),
            "/bad": (400, {}),
            "/missing": (404, {}),
            "/moved": (302, {"Location": "/ok"}),
        }[route]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    SEEN.clear()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def ctx() -> sm.StepContext:
    return sm.StepContext(
        run_id="r1",
        workflow="wf",
        version="1",
        step="charge",
        attempt=1,
        visit=1,
        state={},
        heartbeat=lambda: None,
        run_status=lambda: "running",
    )


def test_success_returns_the_response_and_sends_the_idempotency_key(server: str) -> None:
    reply = http.get(ctx(), f"{server}/ok")
    assert reply.status_code == 200
    assert SEEN == [{"path": "/ok", "key": "r1:charge:1"}]


def test_5xx_retries_after_the_servers_delay(server: str) -> None:
    with pytest.raises(sm.Retry) as caught:
        http.get(ctx(), f"{server}/busy?api_key={SECRET}")
    assert caught.value.after == 7.0
    assert "HTTP 503" in caught.value.reason and "/busy" in caught.value.reason
    assert SECRET not in caught.value.reason


def test_429_retries_with_the_policys_backoff(server: str) -> None:
    with pytest.raises(sm.Retry) as caught:
        http.get(ctx(), f"{server}/throttled")
    assert caught.value.after is None


@pytest.mark.parametrize(("path", "status"), [("/bad", 400), ("/missing", 404)])
def test_4xx_fails_with_the_status_code(server: str, path: str, status: int) -> None:
    with pytest.raises(sm.Fail) as caught:
        http.get(ctx(), f"{server}{path}?token={SECRET}")
    assert caught.value.code == f"http_{status}"
    assert caught.value.details == {"status": status}
    assert SECRET not in str(caught.value)


def test_a_redirect_is_returned_as_is(server: str) -> None:
    assert http.get(ctx(), f"{server}/moved").status_code == 302


def test_connection_refused_and_timeouts_retry() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(sm.Retry, match="ConnectError"):
        http.get(ctx(), f"http://127.0.0.1:{port}/ok")
    # A listener that never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/ok"
        with pytest.raises(sm.Retry, match="timed out"):
            http.get(ctx(), url, timeout=0.2)


def test_retry_after_reads_seconds_and_dates() -> None:
    assert http.retry_after("120") == 120.0
    assert http.retry_after("99999999") == 3600.0
    assert http.retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert http.retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert http.retry_after("-3") is None
    assert http.retry_after(None) is None
