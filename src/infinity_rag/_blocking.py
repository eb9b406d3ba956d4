"""Blocking sends that another thread can interrupt, for hedged sync queries.

A sync query sent with a sync httpx client costs about half the CPU of one sent through
httpx's async stack, but a blocking read cannot wait for two answers at once: hedging needs
the first try's wait to end when a copy answers first. So our own sync client's reads wait on
two things, here: the socket, and a wake-up channel (a socket pair of the calling thread).

- :class:`Watch`: what the calling thread's reads wait for besides their socket: a
  :meth:`Watch.wake` from another thread (the read raises :class:`Interrupted`: httpcore
  closes that connection, as a cancelled async request does), and a moment ``at`` when
  ``on_time()`` runs in this thread, from inside the read (the hedge delay: it sends the
  copy, on the shared loop thread, and returns when to look again or ``None``).
- :func:`watching`: a blocking send with a watch: ``with watching(watch): client.request()``.
- :func:`make_interruptible`: wraps the network backend of each of an ``httpx.Client``'s
  connection pools (proxies' included) so that their reads consult the thread's watch. Without
  a watch, a read is httpcore's own.

A stream that cannot be watched (TLS inside a TLS proxy tunnel) reads as httpcore does: the
hedge then never fires for that try, as if the client had one replica.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpcore
import httpx

__all__ = ["Interrupted", "Watch", "make_interruptible", "watching"]

try:  # where httpcore keeps its plain socket stream (not TLS-in-TLS)
    from httpcore._backends.sync import SyncStream as _PlainStream
except ImportError:  # pragma: no cover - another httpcore layout: nothing is watched
    _PlainStream = None  # type: ignore[assignment,misc]


class Interrupted(Exception):
    """A blocking read was woken by :meth:`Watch.wake`: another copy answered first."""


class _Channel:
    """A thread's wake-up channel: a non-blocking socket pair (``select``-able everywhere)."""

    def __init__(self) -> None:
        self.receiver, self._sender = socket.socketpair()
        self.receiver.setblocking(False)
        self._sender.setblocking(False)
        self.pid = os.getpid()
        self.rung = False

    def ring(self) -> None:
        self.rung = True
        with contextlib.suppress(BlockingIOError):  # full: it rings already
            self._sender.send(b"\0")

    def drain(self) -> None:
        self.rung = False
        with contextlib.suppress(BlockingIOError):
            while self.receiver.recv(4096):
                pass


_local = threading.local()


def _channel() -> _Channel:
    channel: _Channel | None = getattr(_local, "channel", None)
    if channel is None or channel.pid != os.getpid():  # a forked child makes its own
        channel = _local.channel = _Channel()
    return channel


#: The shortest wait a read is cut to before the watch's moment (a zero timeout would make
#: the socket non-blocking: an error, not a timeout).
_SHORTEST = 0.0002


class Watch:
    """What one blocking try's reads wait for besides their socket (see the module doc).

    Made in the thread that sends the try; :meth:`wake` may be called from any thread, and
    does nothing once :meth:`end` was called.

    Until the moment ``at``, nothing can wake the read (what wakes it, a copy, is sent then):
    a read is httpcore's own, its timeout cut to ``at``, so an answer that comes in time costs
    no more than without a watch. After it, the read waits on the socket and the wake-up
    channel at once."""

    def __init__(self, at: float | None, on_time: Callable[[], float | None]) -> None:
        self.at = at
        self._on_time = on_time
        self._channel = _channel()
        if self._channel.rung:
            self._channel.drain()  # a wake-up left by an earlier try that ended first
        self._lock = threading.Lock()
        self._active = True
        self._woken = False

    def wake(self) -> None:
        with self._lock:
            if self._active and not self._woken:
                self._woken = True
                self._channel.ring()

    def end(self) -> None:
        with self._lock:
            self._active = False

    def read(self, stream: httpcore.NetworkStream, max_bytes: int, timeout: float | None) -> bytes:
        """``stream.read(max_bytes, timeout)``, or :class:`Interrupted` once woken."""
        ends = None if timeout is None else time.monotonic() + timeout
        while self.at is not None and not self._woken:
            now = time.monotonic()
            if ends is not None and ends <= self.at:
                break  # the read's own timeout comes first
            try:
                return stream.read(max_bytes, max(self.at - now, _SHORTEST))
            except httpcore.ReadTimeout:  # the moment, not the read's timeout: nothing was read
                if time.monotonic() >= self.at:
                    self.at = self._on_time()
        left = None if ends is None else max(ends - time.monotonic(), 0.0)
        sock = stream.get_extra_info("socket")
        if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):  # TLS bytes at hand
            left = self._wait(sock, ends)
        return stream.read(max_bytes, left)

    def _wait(self, sock: socket.socket, ends: float | None) -> float | None:
        """Wait until ``sock`` is readable; returns what is left until ``ends`` for the read.
        Raises :class:`Interrupted` once woken, ``httpcore.ReadTimeout`` at ``ends``."""
        receiver = self._channel.receiver
        while True:
            if self._woken:
                raise Interrupted
            now = time.monotonic()
            until = min((t for t in (ends, self.at) if t is not None), default=None)
            ready = _readable((sock, receiver), None if until is None else max(until - now, 0.0))
            if receiver in ready:
                self._channel.drain()
                continue  # _woken tells whether it was this try's wake-up
            if sock in ready:
                return None if ends is None else max(ends - time.monotonic(), 0.0)
            now = time.monotonic()
            if self.at is not None and now >= self.at:
                self.at = self._on_time()
            elif ends is not None and now >= ends:
                raise httpcore.ReadTimeout("timed out")


def _readable(socks: tuple[socket.socket, ...], timeout: float | None) -> Iterable[socket.socket]:
    if hasattr(select, "poll"):  # no FD_SETSIZE limit
        poller = select.poll()
        for sock in socks:
            poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        ms = None if timeout is None else timeout * 1000.0
        ready = {fd for fd, _ in poller.poll(ms)}
        return [sock for sock in socks if sock.fileno() in ready]
    readable, _, _ = select.select(socks, [], [], timeout)  # pragma: no cover - Windows
    return readable  # pragma: no cover


@contextlib.contextmanager
def watching(watch: Watch | None) -> Iterator[None]:
    """The calling thread's reads consult ``watch`` (``None``: none) until the block ends."""
    _local.watch = watch
    try:
        yield
    finally:
        _local.watch = None
        if watch is not None:
            watch.end()


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        watch: Watch | None = getattr(_local, "watch", None)
        if watch is not None and _PlainStream is not None and isinstance(self._inner, _PlainStream):
            return watch.read(self._inner, max_bytes, timeout)
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def make_interruptible(client: httpx.Client) -> bool:
    """Wrap the network backend of each of ``client``'s connection pools (its own transport's
    and each proxy mount's); ``False`` (nothing changed) if one of them is not httpx's."""
    transports = [client._transport, *client._mounts.values()]
    pools: list[Any] = []
    for transport in transports:
        if transport is None:  # a mount that turns a proxy off
            continue
        pool = getattr(transport, "_pool", None)
        if not isinstance(transport, httpx.HTTPTransport) or not hasattr(pool, "_network_backend"):
            return False
        pools.append(pool)
    for pool in pools:
        if not isinstance(pool._network_backend, _Backend):
            pool._network_backend = _Backend(pool._network_backend)
    return True
