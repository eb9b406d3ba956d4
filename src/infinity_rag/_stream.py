"""Streaming: any iterable of texts, embedded chunk by chunk with a bounded window in flight.

Written once for both I/O paths: reading the source in chunks of ``batch_size`` (each item
checked with its position in the whole stream, before its chunk is sent) and the window (at
most ``limit`` chunks between being read and being handed out, oldest first). :func:`stream`
(sync code, each chunk's call running on the engine's loop) and :func:`astream` (tasks) differ
only in how they start a chunk's call and wait for it.

Early exit (``break``, an exception, ``close()`` / ``aclose()``) cancels every call in flight
and leaves no thread or task behind. A source
that fails (a bad item, or its own exception) stops the reading: the chunks read before it are
still handed out, in order, and then its error is raised.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
)
from typing import Any, Generic, TypeVar

from infinity_rag._inputs import check_text
from infinity_rag._loops import Pending

T = TypeVar("T")
R = TypeVar("R")
H = TypeVar("H")


def check_source(texts: object, *, allow_async: bool) -> None:
    """Refuse what is not an iterable of texts (a string would be read character by character)."""
    iterable = isinstance(texts, Iterable) or (allow_async and isinstance(texts, AsyncIterable))
    if isinstance(texts, str | bytes) or not iterable:
        kind = "an iterable (or async iterable)" if allow_async else "an iterable"
        raise TypeError(f"texts must be {kind} of strings, got {type(texts).__name__}")


class _Chunker:
    """Cuts a stream of items into checked chunks, counting positions over the whole stream."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.position = 0
        self.chunk: list[str] = []

    def add(self, item: object) -> list[str] | None:
        """Take one item; a full chunk when this one completes it."""
        self.chunk.append(check_text(item, self.position))
        self.position += 1
        if len(self.chunk) < self.size:
            return None
        chunk, self.chunk = self.chunk, []
        return chunk

    def rest(self) -> list[str] | None:
        """The last, shorter chunk (``None`` if there is none)."""
        chunk, self.chunk = self.chunk, []
        return chunk or None


def _chunks(source: Iterable[object], size: int) -> Generator[list[str], None, None]:
    chunker = _Chunker(size)
    for item in source:
        if (chunk := chunker.add(item)) is not None:
            yield chunk
    if (chunk := chunker.rest()) is not None:
        yield chunk


async def _achunks(
    source: Iterable[object] | AsyncIterable[object], size: int
) -> AsyncGenerator[list[str], None]:
    chunker = _Chunker(size)
    if isinstance(source, AsyncIterable):
        async for item in source:
            if (chunk := chunker.add(item)) is not None:
                yield chunk
    else:
        for item in source:
            if (chunk := chunker.add(item)) is not None:
                yield chunk
    if (chunk := chunker.rest()) is not None:
        yield chunk


class _Window(Generic[H]):
    """The chunks in flight, oldest first, and why the source stopped (if it failed)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending: deque[H] = deque()
        self.source_done = False
        self.source_error: Exception | None = None

    @property
    def wants_chunk(self) -> bool:
        return not self.source_done and len(self.pending) < self.limit

    def read(self, chunks: Iterator[list[str]]) -> list[str] | None:
        """The source's next chunk, or ``None`` once it has ended (or failed: its error is
        kept for :meth:`finish`)."""
        try:
            chunk = next(chunks, None)
        except Exception as error:
            self.end_source(error)
            return None
        if chunk is None:
            self.end_source()
        return chunk

    def end_source(self, error: Exception | None = None) -> None:
        self.source_done = True
        self.source_error = error

    def finish(self) -> None:
        """Everything read was handed out: raise the source's error, if it had one."""
        if self.source_error is not None:
            error, self.source_error = self.source_error, None
            raise error


def stream(
    submit: Callable[[list[str]], Pending[R]],
    source: Iterable[object],
    size: int,
    limit: int,
) -> Generator[R, None, None]:
    """One result per chunk, in order; ``submit`` starts one chunk's call on the engine."""
    window: _Window[Pending[R]] = _Window(limit)
    chunks = _chunks(source, size)

    def refill() -> None:
        while window.wants_chunk and (chunk := window.read(chunks)) is not None:
            window.pending.append(submit(chunk))

    def take() -> R:
        pending = window.pending[0]
        result = pending.wait()  # left in the window until done, so that an exit cancels it
        window.pending.popleft()
        refill()  # the next request goes out before the consumer gets this result
        return result

    try:
        refill()
        while window.pending:
            yield take()
        window.finish()
    finally:
        for pending in window.pending:  # every request in flight is abandoned
            pending.cancel()
        chunks.close()


async def astream(
    start: Callable[[list[str]], Coroutine[Any, Any, R]],
    source: Iterable[object] | AsyncIterable[object],
    size: int,
    limit: int,
) -> AsyncGenerator[R, None]:
    """Async :func:`stream`: one task per chunk in flight, cancelled on early exit."""
    window: _Window[asyncio.Task[R]] = _Window(limit)
    chunks = _achunks(source, size)

    async def refill() -> None:
        while window.wants_chunk:
            try:
                chunk = await anext(chunks, None)
            except Exception as error:
                window.end_source(error)
                return
            if chunk is None:
                window.end_source()
                return
            window.pending.append(asyncio.ensure_future(start(chunk)))

    async def take() -> R:
        task = window.pending[0]
        result = await task  # left in the window until done, so that an exit cancels it
        window.pending.popleft()
        await refill()
        return result

    try:
        await refill()
        while window.pending:
            yield await take()
        window.finish()
    finally:
        tasks = list(window.pending)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await chunks.aclose()
