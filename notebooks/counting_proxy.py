"""A pass-through HTTP proxy in front of one Infinity server that counts what the server got.

Used by ``04_scaling_out.ipynb`` to show, run by run, how many texts actually reached the
embedding server: every request is forwarded unchanged (stdlib only, on loopback), and each
``POST .../embeddings`` the server answered with a 200 adds its number of inputs to ``texts``.

    with CountingProxy(server.url) as proxy:
        client = InfinityClient(base_url=proxy.url, api_key=...)
        ...
        proxy.texts, proxy.requests
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

#: Request headers passed on to the server (hop-by-hop ones such as Connection are not).
FORWARDED = ("Content-Type", "Authorization", "Accept", "Accept-Encoding", "User-Agent")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that goes away mid-answer (the notebook SIGKILLs one) is expected:
        # its texts did reach the server, and there is nobody left to answer.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class CountingProxy:
    """Forwards every request to ``upstream`` (``http://host:port[/prefix]``); counts texts."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"expected http://host:port[/prefix], got {upstream!r}")
        self._host, self._port, self._prefix = parts.hostname, parts.port, parts.path.rstrip("/")
        self._lock = threading.Lock()
        self.texts = 0
        self.requests = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL to give the client instead of the server's."""
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}{self._prefix}"

    def counts(self) -> tuple[int, int]:
        """(texts, requests) so far."""
        with self._lock:
            return self.texts, self.requests

    def _record(self, path: str, status: int, body: bytes) -> None:
        if status != 200 or not path.rstrip("/").endswith("/embeddings"):
            return
        inputs = json.loads(body).get("input", [])
        with self._lock:
            self.texts += len(inputs) if isinstance(inputs, list) else 1
            self.requests += 1

    def start(self) -> Self:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive with the client

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k in FORWARDED if (v := self.headers.get(k)) is not None}
                upstream = http.client.HTTPConnection(proxy._host, proxy._port, timeout=300)
                try:
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    response = upstream.getresponse()
                    answer = response.read()
                finally:
                    upstream.close()
                if self.command == "POST":
                    proxy._record(self.path, response.status, body)
                self.send_response(response.status)
                self.send_header("Content-Type", response.getheader("Content-Type", "text/plain"))
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = _forward

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the notebook shows the counts instead

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
