"""A local HTTP endpoint for the call push (gateway/runtime/push.py): a real http.server.

It records every request (path, headers, body), answers from a script of statuses (then
200), and can be stopped and started again on the same port to play an endpoint that is
down (connection refused) and then back. Bound to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    status: int  # what the receiver answered

    @property
    def key(self) -> str:
        return self.headers.get("idempotency-key", "")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """`answers`: (status, extra headers) for the next requests, in order; then `default`."""

    port: int = 0
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    default: int = 200
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.port == 0:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/calls"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver.changed:
                    status, extra = receiver.answers.pop(0) if receiver.answers \
                        else (receiver.default, {})
                    receiver.requests.append(Request(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                        status))
                    receiver.changed.notify_all()
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def keys(self) -> Counter[str]:
        """How many POSTs each Idempotency-Key had (retries included)."""
        with self.lock:
            return Counter(r.key for r in self.requests)

    def accepted(self) -> Counter[str]:
        """How many times each key was answered 2xx (a deduplicating receiver keeps one)."""
        with self.lock:
            return Counter(r.key for r in self.requests if 200 <= r.status < 300)

    def bodies(self) -> dict[str, Any]:
        """The JSON body of each key's 2xx-answered POST."""
        with self.lock:
            return {r.key: r.json() for r in self.requests if 200 <= r.status < 300}

    def wait_for(self, count: int, timeout: float) -> bool:
        """Until `count` distinct keys were answered 2xx (True) or `timeout` s passed."""
        with self.changed:
            return self.changed.wait_for(lambda: len({
                r.key for r in self.requests if 200 <= r.status < 300}) >= count, timeout)
