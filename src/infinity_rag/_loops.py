"""One ``httpx.AsyncClient`` per event loop, closed when its loop shuts down.

An ``httpx.AsyncClient``'s connections belong to the loop that opened them, so a client used
from several loops (a notebook's, each ``asyncio.run``, a worker's loop per task) needs one
pool per loop. Kept in a plain table, each pool would also keep its loop alive and its sockets
open long after ``asyncio.run`` returned: 1,000 calls, 1,000 open sockets. So each pool is
tied to its loop's shutdown: a suspended async generator, registered with the loop through
its async-generator hooks, whose ``finally`` closes the pool when ``loop.shutdown_asyncgens()``
runs (``asyncio.run`` and ``asyncio.Runner`` call it before closing the loop). Pools of loops
closed without that step are dropped the next time a new loop's pool is made.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable

import httpx

__all__ = ["LoopClients"]


class LoopClients:
    """The per-loop ``httpx.AsyncClient`` table of one :class:`~infinity_rag.InfinityClient`."""

    def __init__(self, factory: Callable[[], httpx.AsyncClient]) -> None:
        self._factory = factory
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        # Strong references: the loop itself only keeps a WeakSet of async generators.
        self._closers: dict[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def get(self) -> httpx.AsyncClient:
        """The running loop's client, made (and tied to the loop's shutdown) on first use."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            self._forget_closed_loops()
            client = self._factory()
            self._clients[loop] = client
            self._closers[loop] = self._close_at_shutdown(loop, client)
        return client

    def pop(self) -> httpx.AsyncClient | None:
        """Take the running loop's client out of the table (the caller closes it)."""
        loop = asyncio.get_running_loop()
        self._closers.pop(loop, None)
        return self._clients.pop(loop, None)

    def _close_at_shutdown(
        self, loop: asyncio.AbstractEventLoop, client: httpx.AsyncClient
    ) -> AsyncGenerator[None, None]:
        async def closer() -> AsyncGenerator[None, None]:
            try:
                yield
            finally:
                if self._clients.get(loop) is client:
                    del self._clients[loop]
                    self._closers.pop(loop, None)
                await client.aclose()

        generator = closer()
        # Step it to its `yield` without awaiting: the first step calls the loop's firstiter
        # hook, which registers it for shutdown_asyncgens(); nothing in it awaits yet.
        step = generator.asend(None)
        with contextlib.suppress(StopIteration):
            step.send(None)
        return generator

    def _forget_closed_loops(self) -> None:
        for loop in list(self._clients):
            if loop.is_closed():  # closed without shutdown_asyncgens(): nothing left to await
                self._clients.pop(loop, None)
                self._closers.pop(loop, None)
