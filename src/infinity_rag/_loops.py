"""Event loops: one ``httpx.AsyncClient`` per loop, and the loops that run sync calls.

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
import atexit
import concurrent.futures
import contextlib
import contextvars
import os
import queue
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import httpx

__all__ = ["LoopClients", "Pending", "SyncCalls", "in_own_loop", "sync_executor"]

R = TypeVar("R")


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

    def detach(
        self, loop: asyncio.AbstractEventLoop | None = None
    ) -> AsyncGenerator[None, None] | None:
        """Take ``loop``'s client (the running loop's by default) out of the table; the
        returned closer closes it (``await closer.aclose()`` in that loop), and nothing else
        will before that."""
        loop = loop or asyncio.get_running_loop()
        if self._clients.pop(loop, None) is None:
            return None
        return self._closers.pop(loop, None)

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


# --- the loops that run sync calls ---------------------------------------------------------
#
# A sync call runs its coroutine in the calling thread, on an event loop of that thread's own
# (made on its first sync call): no hand-over to another thread per call, whose two wake-ups
# cost a query's embedding more than its own I/O. A thread that is already running an event
# loop (a sync method called from async code, or from a callback of a running call) cannot run
# another: its sync calls go to one shared loop thread instead, as do sync streams, whose
# chunks must run on while the caller consumes the ones before.

_PROGRESS, _DONE = "progress", "done"

_EXECUTOR_LOCK = threading.Lock()
_EXECUTOR: tuple[int, ThreadPoolExecutor] | None = None


def sync_executor() -> ThreadPoolExecutor:
    """The threads an injected sync ``httpx.Client`` sends from (one pool per process)."""
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None or _EXECUTOR[0] != os.getpid():
            threads = ThreadPoolExecutor(64, thread_name_prefix="infinity-rag-sync")
            _EXECUTOR = (os.getpid(), threads)
        return _EXECUTOR[1]


class _ThreadLoop:
    """One thread's own event loop for its sync calls. ``lock`` is held while the loop runs,
    by its thread or by another closing a pool in it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.lock = threading.Lock()
        self.thread = threading.current_thread()
        self.pid = os.getpid()
        self._deferred: list[AsyncGenerator[None, None]] = []  # closers for after the call

    def run(self, coroutine: Coroutine[Any, Any, R]) -> R:
        """Run ``coroutine`` to its result here. An exception that stops the loop meanwhile
        (a ``KeyboardInterrupt``) cancels it, and its requests are abandoned, before it
        propagates."""
        with self.lock:
            task = self.loop.create_task(coroutine)  # in a copy of the caller's context
            try:
                return self.loop.run_until_complete(task)
            except BaseException:
                while not task.done():
                    task.cancel()
                    # It may end by raising that exception out of the loop once more.
                    with contextlib.suppress(BaseException):
                        self.loop.run_until_complete(asyncio.wait([task]))
                if not task.cancelled():
                    task.exception()  # retrieved: not logged as never retrieved
                raise
            finally:
                while self._deferred:  # pools closed from a callback of the call: it has ended
                    self.loop.run_until_complete(self._deferred.pop().aclose())

    def close_pool(self, closer: AsyncGenerator[None, None]) -> None:
        """Close one client's pool in this loop (after the call in flight in it, if any)."""
        if self.thread is threading.current_thread() and self.loop.is_running():
            self._deferred.append(closer)  # from a callback of this thread's call
        elif asyncio._get_running_loop() is not None:
            # This thread runs a loop of its own, and cannot run another.
            helper = threading.Thread(target=self._close_pool, args=(closer,))
            helper.start()
            helper.join()
        else:
            self._close_pool(closer)

    def _close_pool(self, closer: AsyncGenerator[None, None]) -> None:
        with self.lock:
            if self.pid == os.getpid() and not self.loop.is_closed():
                self.loop.run_until_complete(closer.aclose())

    def shut(self) -> None:
        """Close every pool in this loop (``shutdown_asyncgens``: see :class:`LoopClients`)
        and the loop, if no call is running in it."""
        if self.pid != os.getpid() or not self.lock.acquire(blocking=False):
            return
        try:
            if not self.loop.is_closed():
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.close()
        finally:
            self.lock.release()


class _ThreadLoops:
    """Each thread's own loop; a thread's that ended is shut when another thread makes its
    own (so its pools' sockets do not stay open), and every idle one at exit."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._loops: list[_ThreadLoop] = []
        atexit.register(self.shut_all)

    def current(self) -> _ThreadLoop | None:
        """This thread's loop; ``None`` when the thread is running an event loop already."""
        if asyncio._get_running_loop() is not None:
            return None
        own: _ThreadLoop | None = getattr(self._local, "loop", None)
        if own is None or own.pid != os.getpid() or own.loop.is_closed():
            own = self._local.loop = _ThreadLoop()
            with self._lock:
                ended = [t for t in self._loops if not t.thread.is_alive() or t.pid != own.pid]
                self._loops = [t for t in self._loops if t not in ended] + [own]
            for old in ended:
                old.shut()
        return own

    def all(self) -> list[_ThreadLoop]:
        with self._lock:
            return [t for t in self._loops if t.pid == os.getpid() and not t.loop.is_closed()]

    def shut_all(self) -> None:
        for own in self.all():
            own.shut()


_THREAD_LOOPS = _ThreadLoops()


def in_own_loop() -> bool:
    """Whether the running event loop is this thread's own, running its sync call."""
    own = getattr(_THREAD_LOOPS._local, "loop", None)
    return own is not None and asyncio._get_running_loop() is own.loop


class _SharedLoop:
    """One event loop thread per process, started on first use, that runs the sync calls made
    from threads running a loop already, and sync streams (a daemon: it never keeps the
    interpreter alive). Started again in a forked child."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(
                    target=self._serve, args=(loop, ready), name="infinity-rag-loop", daemon=True
                )
                thread.start()
                ready.wait()
                self._loop, self._thread, self._pid = loop, thread, os.getpid()
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    def in_loop_thread(self) -> bool:
        thread = self._thread
        return thread is not None and thread.ident == threading.get_ident()

    def running(self) -> asyncio.AbstractEventLoop | None:
        loop = self._loop
        return loop if loop is not None and self._pid == os.getpid() else None


_SHARED = _SharedLoop()


class Pending(Generic[R]):
    """A call running on the shared loop, seen from the thread that started it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._task: asyncio.Task[R] | None = None
        self._finished = False

    def progress(self, items: int) -> None:
        """Called in the loop: hands ``items`` to the waiting thread's progress callback."""
        self._events.put((_PROGRESS, items))

    def _started(self, task: asyncio.Task[R]) -> None:
        self._task = task
        task.add_done_callback(lambda done: self._events.put((_DONE, done)))

    def wait(self, on_progress: Callable[[int], None] | None = None) -> R:
        """The call's result (or error), running ``on_progress`` here as it reports; an
        exception meanwhile (the callback's, a ``KeyboardInterrupt``) cancels the call
        and waits until its requests are abandoned before propagating."""
        try:
            while True:
                kind, value = self._events.get()
                if kind == _DONE:
                    self._finished = True
                    return value.result()  # type: ignore[no-any-return]
                if on_progress is not None:
                    on_progress(value)
        except BaseException:
            self.cancel()
            raise

    def cancel(self) -> None:
        """Cancel the call (every request in flight) and wait until it has ended."""
        if self._finished:
            return
        self._loop.call_soon_threadsafe(self._cancel)
        while self._events.get()[0] != _DONE:
            pass
        self._finished = True

    def _cancel(self) -> None:
        if self._task is not None:  # scheduled after _started: always set by now
            self._task.cancel()


#: Makes a call's coroutine, given what it reports progress to.
Start = Callable[[Callable[[int], None] | None], Coroutine[Any, Any, R]]


class SyncCalls:
    """Runs one client's sync calls: each in its caller's thread, on that thread's own loop
    (:meth:`run`), or on the process's shared loop thread (:meth:`submit`; :meth:`run` from a
    thread running a loop already).

    Either way the call's progress callback runs in the thread that made the call, and an
    exception there, or a ``KeyboardInterrupt``, cancels the call (every request still in
    flight is abandoned) before it propagates. The call runs in a copy of the caller's context
    (``contextvars``: an OpenTelemetry span, say).
    """

    def __init__(self, clients: LoopClients) -> None:
        self._clients = clients
        self._tasks: set[asyncio.Task[Any]] = set()  # touched only in the shared loop's thread

    def run(self, start: Start[R], on_progress: Callable[[int], None] | None) -> R:
        """Run ``start(on_progress)``'s coroutine to its result."""
        own = _THREAD_LOOPS.current()
        if own is None:
            return self.submit(start).wait(on_progress)
        return own.run(start(on_progress))

    def submit(self, start: Start[R]) -> Pending[R]:
        """Start ``start(progress)``'s coroutine on the shared loop; ``progress`` reports to
        the returned :class:`Pending`'s waiter."""
        if _SHARED.in_loop_thread():
            raise RuntimeError(
                "a sync InfinityClient method was called from a callback running in the "
                "client's own event loop: use its async twin (await client.a...) there"
            )
        loop = _SHARED.get()
        pending: Pending[R] = Pending(loop)
        context = contextvars.copy_context()

        def begin() -> None:
            task = context.run(loop.create_task, start(pending.progress))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            pending._started(task)

        loop.call_soon_threadsafe(begin)
        return pending

    @staticmethod
    def start_soon(coroutine: Coroutine[Any, Any, R]) -> concurrent.futures.Future[R]:
        """Run ``coroutine`` on the shared loop thread, in a copy of the caller's context (a
        hedged copy of a try sent blocking in the caller's thread); cancelling the future
        cancels it."""
        return asyncio.run_coroutine_threadsafe(coroutine, _SHARED.get())

    def close(self) -> None:
        """Close this client's connections in every loop that runs sync calls, each once its
        calls in flight end."""
        for own in _THREAD_LOOPS.all():
            closer = self._clients.detach(own.loop)
            if closer is not None:
                own.close_pool(closer)
        loop = _SHARED.running()
        if loop is None:
            return
        if _SHARED.in_loop_thread():
            loop.create_task(self._shutdown())
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result()

    async def _shutdown(self) -> None:
        # Taken out of use first: a call that starts from now on makes a new pool rather than
        # being handed this closing one; the calls in flight finish on it, then it closes.
        closing = self._clients.detach()
        if closing is None:
            return
        if tasks := {task for task in self._tasks if not task.done()}:
            await asyncio.wait(tasks)
        await closing.aclose()  # closes the pool
