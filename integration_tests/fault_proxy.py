"""A fault-injecting HTTP/1.1 proxy for the integration tests: it stands between the client and
a real Infinity server on loopback and misbehaves on demand.

It runs its own asyncio loop in a background thread, so sync and async tests use it alike::

    with FaultProxy(upstream_url) as proxy:
        proxy.inject(Fault("reset"), times=2)      # the next two requests are reset
        client = InfinityClient(base_url=proxy.url)
        ...
        assert [r.fault for r in proxy.requests] == ["reset", "reset", "pass"]

Each request is read whole (headers and ``Content-Length`` body) and then handled by the next
scheduled :class:`Fault`, or by ``default`` (pass-through) when none is left. Forwarded
requests go upstream on a fresh connection with ``Connection: close``; the answer is read
whole and sent back with an exact ``Content-Length``, so the client's keep-alive connection to
the proxy survives every fault that does not break it on purpose.

Faults (``Fault.kind``):

* ``pass``: forward as is.
* ``delay``: wait ``seconds`` before answering (the request is forwarded after the wait).
* ``drip``: forward, then send the answer's body in ``chunk``-byte pieces every ``seconds``.
* ``reset``: abort the connection with a TCP RST; with ``after_upstream=True`` only once the
  server has done the work (the answer is lost, not the request).
* ``close``: close the connection (FIN) without answering, as a server dropping an idle
  keep-alive connection does.
* ``truncate``: send the answer's headers (with its true ``Content-Length``) and only the first
  ``after_bytes`` bytes of its body, then close.
* ``garble``: a complete ``200`` whose JSON body is cut after ``after_bytes`` bytes, with a
  ``Content-Length`` that matches what is sent (a broken proxy, not a broken connection).
* ``status``: answer ``status`` with ``body`` (default: a JSON error as Infinity writes it) and
  ``headers``, without contacting the server.
* ``html``: answer ``status`` (default 502) with an HTML page such as a load balancer returns.
* ``rewrite``: forward, then pass the answer's body through ``rewrite`` (bytes -> bytes) and
  send the result as a complete answer (a proxy that changes what it relays).

Only loopback addresses are used: the proxy listens on ``127.0.0.1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self
from urllib.parse import urlsplit

FaultKind = Literal[
    "pass", "delay", "drip", "reset", "close", "truncate", "garble", "status", "html", "rewrite"
]

HTML_502 = b"""<html>
<head><title>502 Bad Gateway</title></head>
<body>
<center><h1>502 Bad Gateway</h1></center>
<hr><center>nginx/1.25.3</center>
</body>
</html>
"""

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(frozen=True)
class Fault:
    """What to do with one request (see the module's docstring)."""

    kind: FaultKind = "pass"
    seconds: float = 0.0
    after_bytes: int = 0
    chunk: int = 1024
    status: int = 502
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    after_upstream: bool = False
    rewrite: Callable[[bytes], bytes] | None = None


PASS = Fault("pass")


@dataclass(frozen=True)
class Seen:
    """One request the proxy handled: what it was and which fault it got."""

    method: str
    path: str
    fault: FaultKind
    body: bytes
    at: float = 0.0  # time.monotonic() when the request had been read


class FaultProxy:
    """An HTTP/1.1 proxy on ``127.0.0.1`` in front of ``upstream`` (``http://host:port``).

    ``tls``: terminate TLS with this server-side context (the upstream stays plain HTTP).
    """

    def __init__(self, upstream: str, *, tls: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port
        self.upstream_prefix = parts.path.rstrip("/")
        self.tls = tls
        self.default = PASS
        self.requests: list[Seen] = []
        self.connections = 0
        self._schedule: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port: int | None = None

    # --- control (from any thread) ------------------------------------------------------------

    @property
    def root_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the proxy is not started")
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The proxy's URL with the upstream's path prefix: use it as ``base_url``."""
        return self.root_url + self.upstream_prefix

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Apply ``fault`` to the next ``times`` requests (after any already scheduled)."""
        with self._lock:
            self._schedule.extend([fault] * times)

    def set_default(self, fault: Fault) -> None:
        """What requests get once the schedule is empty (``PASS`` unless changed)."""
        with self._lock:
            self.default = fault

    def reset(self) -> None:
        """Back to pass-through, the schedule and the request log emptied."""
        with self._lock:
            self._schedule.clear()
            self.default = PASS
            self.requests.clear()
            self.connections = 0

    def wait_idle(self, timeout: float = 10.0, settle: float = 0.05) -> bool:
        """Wait until no client connection has been open for ``settle`` seconds (``False`` if
        that did not happen within ``timeout``).

        A test's client may have written a request just before it was closed or cancelled (an
        async call whose sibling chunk failed): the proxy reads and logs such a request later,
        on its own thread. Waiting for the connections to close before :meth:`reset` keeps it
        out of the next test's log and schedule.
        """
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        while True:
            now = time.monotonic()
            with self._lock:
                busy = bool(self._writers)
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= settle:
                return True
            if now >= deadline:
                return False
            time.sleep(0.02)

    def faults_seen(self) -> list[FaultKind]:
        with self._lock:
            return [seen.fault for seen in self.requests]

    def posts(self) -> list[Seen]:
        with self._lock:
            return [seen for seen in self.requests if seen.method == "POST"]

    def _next_fault(self) -> Fault:
        with self._lock:
            return self._schedule.popleft() if self._schedule else self.default

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # pragma: no cover - reported to start()
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def shutdown() -> None:
            server.close()
            for writer in list(self._writers):
                _abort(writer)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- the proxy ----------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
            self._writers.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                method, path, head, body = request
                fault = self._next_fault()
                with self._lock:
                    self.requests.append(Seen(method, path, fault.kind, body, time.monotonic()))
                keep_open = await self._answer(fault, head, body, writer)
                if not keep_open:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            return
        except asyncio.CancelledError:  # stop(): end quietly
            return
        finally:
            with self._lock:
                self._writers.discard(writer)
            if not writer.is_closing():
                writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(
        self, fault: Fault, head: bytes, body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        """Handle one request; ``False`` when the connection is finished."""
        kind = fault.kind
        if kind == "reset" and not fault.after_upstream:
            _abort(writer)
            return False
        if kind == "close":
            writer.close()
            return False
        if kind == "status":
            payload = fault.body
            if payload is None:
                payload = json.dumps(
                    {
                        "error": {
                            "message": f"injected {fault.status}",
                            "type": "fault_proxy",
                            "code": fault.status,
                        }
                    }
                ).encode()
            writer.write(_response(fault.status, fault.headers, payload, "application/json"))
            await writer.drain()
            return True
        if kind == "html":
            writer.write(
                _response(fault.status, fault.headers, fault.body or HTML_502, "text/html")
            )
            await writer.drain()
            return True
        if kind == "delay":
            await asyncio.sleep(fault.seconds)
        status, headers, content = await self._forward(head, body)
        if kind == "reset":  # after_upstream: the work is done, the answer is lost
            _abort(writer)
            return False
        if kind == "truncate":
            whole = _response(status, headers, content)
            cut = len(whole) - len(content) + min(fault.after_bytes, len(content) - 1)
            writer.write(whole[:cut])
            await writer.drain()
            writer.close()
            return False
        if kind == "garble":
            content = content[: fault.after_bytes]
        if kind == "rewrite" and fault.rewrite is not None:
            content = fault.rewrite(content)
        if kind == "drip":
            whole = _response(status, headers, content)
            start = len(whole) - len(content)
            writer.write(whole[:start])
            await writer.drain()
            for offset in range(0, len(content), fault.chunk):
                await asyncio.sleep(fault.seconds)
                writer.write(content[offset : offset + fault.chunk])
                await writer.drain()
            return True
        writer.write(_response(status, headers, content))
        await writer.drain()
        return True

    async def _forward(self, head: bytes, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send the request upstream (``Connection: close``) and read the whole answer."""
        lines = head.split(b"\r\n")
        kept = [lines[0]] + [
            line
            for line in lines[1:]
            if line and line.split(b":", 1)[0].strip().lower() not in (b"connection", b"host")
        ]
        kept += [
            f"Host: {self.upstream_host}:{self.upstream_port}".encode(),
            b"Connection: close",
        ]
        up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        try:
            up_writer.write(b"\r\n".join(kept) + b"\r\n\r\n" + body)
            await up_writer.drain()
            status, headers, content = await _read_response(up_reader)
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()
        return status, headers, content


# --- HTTP/1.1 framing --------------------------------------------------------------------------


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None  # the client closed an idle connection
        raise
    return head[:-4]


def _headers(head: bytes) -> list[tuple[str, str]]:
    pairs = []
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        pairs.append((name.strip(), value.strip()))
    return pairs


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name.lower() == "content-length":
            return int(value)
    return None


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes, bytes] | None:
    head = await _read_head(reader)
    if head is None:
        return None
    method, path, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
    length = _content_length(_headers(head)) or 0
    body = await reader.readexactly(length) if length else b""
    return method, path, head, body


async def _read_response(
    reader: asyncio.StreamReader,
) -> tuple[int, list[tuple[str, str]], bytes]:
    head = await _read_head(reader)
    if head is None:
        raise ConnectionError("the upstream closed without answering")
    status = int(head.split(b"\r\n", 1)[0].split(b" ", 2)[1])
    headers = _headers(head)
    length = _content_length(headers)
    chunked = any(n.lower() == "transfer-encoding" and "chunked" in v.lower() for n, v in headers)
    if length is not None:
        content = await reader.readexactly(length)
    elif chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        content = b"".join(parts)
    else:
        content = await reader.read()
    return status, headers, content


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


def _response(
    status: int,
    headers: Mapping[str, str] | list[tuple[str, str]],
    content: bytes,
    content_type: str | None = None,
) -> bytes:
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    pairs = [(n, v) for n, v in pairs if n.lower() not in _HOP_BY_HOP]
    if content_type and not any(n.lower() == "content-type" for n, _ in pairs):
        pairs.append(("Content-Type", content_type))
    pairs.append(("Content-Length", str(len(content))))
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in pairs]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + content


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport = writer.transport
    transport.abort()
