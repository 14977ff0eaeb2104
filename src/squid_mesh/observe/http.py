"""A minimal ``/metrics`` endpoint for Prometheus, for hosts without a web framework of their own."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # http.server costs ~12 ms at import: loaded when a server is asked for
    from http.server import ThreadingHTTPServer


class _HasMetrics(Protocol):
    def metrics_text(self) -> str: ...


class MetricsServer:
    """A running ``/metrics`` endpoint: its ``port``, and ``close()`` to stop it.

    Example:
        >>> server = sm.serve_metrics(mesh, port=0); server.port  # doctest: +SKIP
        41234
    """

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self.port: int = server.server_address[1]

    def close(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_metrics(mesh: _HasMetrics, *, port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``mesh.metrics_text()`` at ``http://host:port/metrics`` from a daemon thread.

    Pass ``port=0`` for any free port (``server.port`` tells which). Binds to localhost unless
    told otherwise: the metrics carry workflow and step names, nothing more, but an endpoint
    open to the network is the host's decision.

    Example:
        >>> server = sm.serve_metrics(mesh, port=9464)  # doctest: +SKIP
        >>> server.close()  # doctest: +SKIP
    """
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404)
                return
            body = mesh.metrics_text().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would flood stderr

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="squid-mesh-metrics", daemon=True).start()
    return MetricsServer(server)
