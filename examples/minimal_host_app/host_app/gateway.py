"""A local payment gateway stub on 127.0.0.1, run by the checks (never by the workers).

The invoice id's prefix decides what it does: ``ok-`` pays; ``flaky-`` answers 503 (with
``Retry-After``) to the first two charges of that invoice, then pays; ``pending-`` answers that the
payment is still pending; ``declined-`` answers 402. Every charge is counted per invoice and per
idempotency key, so a check can tell how many times a step really called out.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Gateway:
    """The stub server; ``url`` is where steps reach it."""

    def __init__(self, retry_after: float = 0.0) -> None:
        self.calls: Counter[str] = Counter()
        self.keys: Counter[str] = Counter()
        self._lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                invoice = str(body.get("invoice", ""))
                with gateway._lock:
                    gateway.calls[invoice] += 1
                    gateway.keys[self.headers.get("Idempotency-Key", "")] += 1
                    n = gateway.calls[invoice]
                if invoice.startswith("flaky-") and n <= 2:
                    self._reply(503, {"error": "busy"}, {"Retry-After": f"{retry_after:g}"})
                elif invoice.startswith("declined-"):
                    self._reply(402, {"error": "card declined"})
                elif invoice.startswith("pending-"):
                    self._reply(200, {"status": "pending", "charge": None})
                else:
                    self._reply(200, {"status": "paid", "charge": f"ch_{invoice}"})

            def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
