"""The one request engine: runs an operation's requests, for sync and async calls alike.

An operation (``infinity_rag._protocol``) says what to send and how to read the answers; the
engine sends. It is written once, as async code:

- :meth:`Engine.run` drives an operation: each :class:`~infinity_rag._protocol.Fanout` it
  yields runs at most ``max_concurrency`` exchanges at once (a ``TaskGroup``: the first fatal
  error cancels the others), and the parts (or that error) go back into the operation;
- :meth:`Engine._exchange` drives one exchange: each request it yields is sent with the
  retry policy (:meth:`Engine._request`), its decoded answer or its error goes back in;
- :meth:`Engine._request` is the retry loop: the replica pool (``infinity_rag._pool``)
  chooses where each try goes and how long to wait; :meth:`Engine._attempt` sends one try.

Sync calls run the same coroutine in the caller's thread, on an event loop of that thread's
own (:class:`~infinity_rag._loops.SyncCalls`): an error, a ``KeyboardInterrupt`` or the call's
deadline cancels every request still in flight, as in the async path. The policy (which
replica, when to retry) lives in the pool and the :class:`~infinity_rag._pool.RetryPolicy`;
the observer (``infinity_rag._observe``) is called at one place per call
(:meth:`Engine.run`) and one per HTTP attempt (:meth:`Engine._attempt`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import os
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar, cast
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from infinity_rag import _protocol as protocol
from infinity_rag._blocking import Interrupted, Watch, make_interruptible, watching
from infinity_rag._config import server_root
from infinity_rag._hedge import HedgePolicy
from infinity_rag._loops import LoopClients, Pending, SyncCalls, in_own_loop, sync_executor
from infinity_rag._observe import AttemptInfo, CallInfo, CallObservation, Observer
from infinity_rag._pool import Attempts, Replica, ReplicaPool, RetryPolicy
from infinity_rag.errors import (
    InfinityConnectionError,
    InfinityError,
    InfinityTimeoutError,
)

__all__ = ["CallOptions", "Engine"]

logger = logging.getLogger("infinity_rag")

R = TypeVar("R")

#: Called with the number of inputs a finished request carried (drives progress bars).
ProgressCallback = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class CallOptions:
    """How one call runs: its concurrency, progress callback, deadline and what observers see."""

    info: CallInfo
    max_concurrency: int = 1
    on_progress: ProgressCallback | None = None
    #: Seconds the whole call may take (retries and waits included); ``None``: no limit.
    deadline: float | None = None


@dataclass
class _Call:
    """One call in flight: its options, its observation, and when it must end."""

    options: CallOptions
    observation: CallObservation | None
    ends_at: float | None = None
    sync: bool = False
    #: A sync call on its thread's own loop: a request alone in flight is sent blocking.
    blocking: bool = False
    progress: ProgressCallback | None = None
    urls_tried: list[str] = field(default_factory=list)

    def remaining(self) -> float | None:
        return None if self.ends_at is None else self.ends_at - time.monotonic()


@dataclass(frozen=True, slots=True)
class _Try:
    """One try of a request: where it goes, for which call, and why (observers see it)."""

    request: protocol.Request
    replica: Replica
    call: _Call
    retry: int = 0  # 0: the first try; n: the n-th retry
    reason: str | None = None  # the error that made it a retry
    hedge: bool = False  # a copy sent because the first try was slow
    blocking: bool = False  # sent with a sync httpx client, in this thread (see Engine._send)
    watch: Watch | None = None  # what a blocking try's reads also wait for (a hedge race)


class _DeadlinePassed(Exception):
    """A blocking try's timeout, cut to the call's deadline, passed: the call ends with the
    deadline's error and the replica is not blamed (as when the deadline cancels a try)."""


class _Race:
    """A hedged try's race, in two kinds (:class:`_TaskRace`, :class:`_BlockingRace`): once the
    delay has passed, a copy is sent to another replica (if the budget holds a token and a
    replica can take it: else it looks again a delay later); if the copy answers first, it
    stops the first try's wait."""

    copy: asyncio.Task[Any] | concurrent.futures.Future[Any] | None

    def __init__(self, engine: Engine, first: _Try, delay: float) -> None:
        self._engine, self.first, self._delay = engine, first, delay
        self._settled = False
        self._won = False
        self.copy = None
        self._copy_replica: Replica | None = None
        self._copy_started = 0.0

    def _copy_try(self) -> _Try | None:
        """The copy to send now, on its replica (counted in flight), or ``None``: the budget
        is spent, or no other replica can take it."""
        engine, pool = self._engine, self._engine.pool
        target = pool.hedge_target(avoid=[self.first.replica])
        if target is None:
            return None
        with engine._hedge_lock:
            if not engine.hedge.try_spend():
                return None
        self._copy_replica = pool.take(target)
        self._copy_started = time.monotonic()
        return dataclasses.replace(
            self.first, replica=target, hedge=True, blocking=False, watch=None
        )

    def _copy_done(self, copy: asyncio.Future[Any] | concurrent.futures.Future[Any]) -> None:
        if self._settled or copy.cancelled() or copy.exception() is not None:
            return
        self._won = True
        self._stop_first()

    def _stop_first(self) -> None:
        raise NotImplementedError

    def copy_won(self, error: BaseException) -> bool:
        """Whether ``error``, ending the first try, is the copy's answer stopping it."""
        raise NotImplementedError

    def settle(self) -> None:
        """No more copies, and a copy's answer no longer stops the first try."""
        self._settled = True

    async def copy_answer(self) -> Any:
        """The copy's answer (or error), waited for: the first try failed."""
        raise NotImplementedError

    async def _wait_copy(self) -> None:
        raise NotImplementedError

    async def end(self) -> None:
        """Cancel the copy if it is still running, wait for it, and tell the pool how it
        went (abandoned, unless it answered)."""
        self.settle()
        copy = self.copy
        if copy is None:
            return
        if not copy.done():
            copy.cancel()
            await self._wait_copy()
        error = KeyboardInterrupt() if copy.cancelled() else copy.exception()
        if self._copy_replica is not None:
            seconds = time.monotonic() - self._copy_started
            self._engine.pool.release(self._copy_replica, error, seconds)


class _TaskRace(_Race):
    """The race of a first try awaited in the call's task: a loop timer sends the copy as a
    task of the same loop, which cancels the first try's wait if it answers first."""

    copy: asyncio.Task[Any] | None

    def __init__(self, engine: Engine, first: _Try, delay: float) -> None:
        super().__init__(engine, first, delay)
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._settled:
            return
        copy = self._copy_try()
        if copy is None:
            self._timer = self._loop.call_later(self._delay, self._fire)
            return
        task = self.copy = self._loop.create_task(self._engine._attempt(copy))
        task.add_done_callback(self._copy_done)

    def _stop_first(self) -> None:
        if self._task is not None:
            self._task.cancel()  # the first try's wait; see copy_won()

    def copy_won(self, error: BaseException) -> bool:
        # Ours if the copy answered and nothing else asked to cancel the task.
        if not isinstance(error, asyncio.CancelledError) or self.copy is None:
            return False
        self.settle()
        return self._won and self._task is not None and self._task.uncancel() == 0

    def settle(self) -> None:
        super().settle()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def copy_answer(self) -> Any:
        return await cast("asyncio.Task[Any]", self.copy)

    async def _wait_copy(self) -> None:
        await asyncio.wait([cast("asyncio.Task[Any]", self.copy)])


class _BlockingRace(_Race):
    """The race of a first try sent blocking in the caller's thread (a sync query): its
    reads wait on the socket and a wake-up at once (:class:`~infinity_rag._blocking.Watch`).
    At the delay, from inside the read, the copy is started on the shared loop thread; if it
    answers first, it wakes the read, which raises ``Interrupted``."""

    copy: concurrent.futures.Future[Any] | None

    def __init__(self, engine: Engine, first: _Try, delay: float) -> None:
        super().__init__(engine, first, delay)
        self.watch = Watch(time.monotonic() + delay, self._fire)
        self.first = dataclasses.replace(first, watch=self.watch)

    def _fire(self) -> float | None:
        copy = self._copy_try()
        if copy is None:
            return time.monotonic() + self._delay  # look again then
        future = self.copy = self._engine.sync_calls.start_soon(self._engine._attempt(copy))
        future.add_done_callback(self._copy_done)
        return None

    def _stop_first(self) -> None:
        self.watch.wake()

    def copy_won(self, error: BaseException) -> bool:
        self.settle()
        return isinstance(error, Interrupted) and self._won

    def settle(self) -> None:
        super().settle()
        self.watch.end()

    async def copy_answer(self) -> Any:
        # The first try failed: the caller's thread (its loop runs nothing else) waits here.
        return cast("concurrent.futures.Future[Any]", self.copy).result()

    async def _wait_copy(self) -> None:
        # Nothing to wait for: a cancelled future is done at once, and its task on the shared
        # loop ends there moments later, its request abandoned (the pool is told now).
        return


class Engine:
    """Sends operations' requests to a client's replicas, sync or async."""

    def __init__(
        self,
        *,
        pool: ReplicaPool,
        headers: Mapping[str, str],
        api_key: SecretStr | None,
        timeout: float | httpx.Timeout | None,
        retry: RetryPolicy,
        make_async_client: Callable[[], httpx.AsyncClient],
        make_sync_client: Callable[[], httpx.Client] | None = None,
        http_client: httpx.Client | None = None,
        http_async_client: httpx.AsyncClient | None = None,
        observer: Observer | None = None,
        hedge: HedgePolicy | None = None,
    ) -> None:
        self.pool = pool
        #: When to send a copy of a slow one-request call to another replica.
        self.hedge = hedge if hedge is not None else HedgePolicy.disabled()
        self._hedge_lock = threading.Lock()
        self.headers = dict(headers)
        self.api_key = api_key
        #: Per request; ``None`` leaves each request to its httpx client's own timeout.
        self.timeout = timeout
        self.retry = retry
        self.observer = observer
        self.http_client = http_client
        self.http_async_client = http_async_client
        # An httpx.AsyncClient's connections belong to the loop that opened them: one pool per
        # event loop (a notebook's, each asyncio.run, the sync calls' own loop).
        self.loop_clients = LoopClients(make_async_client)
        # Blocking sends (a sync call's request alone in flight) need a sync client: the
        # injected one, else our own if no async client was injected either (an injected
        # async client alone is used for every call, so that its settings hold).
        make_sync = make_sync_client if http_async_client is None else None
        self._sync_sender = _SyncSender(lambda: self.http_client, make_sync)
        self._targets: dict[tuple[str, str, bool], _Target] = {}
        self.sync_calls = SyncCalls(self.loop_clients)

    # --- calls ---------------------------------------------------------------------------

    def run_sync(self, operation: protocol.Operation[R], options: CallOptions) -> R:
        """Run ``operation`` to its result from sync code, in the caller's thread."""
        return self.sync_calls.run(self._sync_start(operation, options), options.on_progress)

    def submit(self, operation: protocol.Operation[R], options: CallOptions) -> Pending[R]:
        """Start ``operation`` from sync code on the shared loop thread; the caller waits for
        (or cancels) it."""
        return self.sync_calls.submit(self._sync_start(operation, options))

    def _sync_start(
        self, operation: protocol.Operation[R], options: CallOptions
    ) -> Callable[[ProgressCallback | None], Coroutine[Any, Any, R]]:
        call = self._start(operation, options, sync=True)

        def start(progress: ProgressCallback | None) -> Coroutine[Any, Any, R]:
            call.progress = progress if options.on_progress is not None else None
            return self._run(operation, call)

        return start

    async def run(self, operation: protocol.Operation[R], options: CallOptions) -> R:
        """Run ``operation`` to its result in the running event loop."""
        call = self._start(operation, options, sync=False)
        return await self._run(operation, call)

    def _start(
        self, operation: protocol.Operation[Any], options: CallOptions, *, sync: bool
    ) -> _Call:
        # In the caller's thread and context: an observer's parent span is current here.
        observation = self.observer.call(options.info) if self.observer is not None else None
        ends_at = None if options.deadline is None else time.monotonic() + options.deadline
        return _Call(options, observation, ends_at, sync, progress=options.on_progress)

    async def _run(self, operation: protocol.Operation[R], call: _Call) -> R:
        result: Any = None
        error: BaseException | None = None
        call.blocking = call.sync and in_own_loop() and self._sync_sender.available
        try:
            async with asyncio.timeout(call.remaining()):
                result = await self._drive(operation, call)
        except (TimeoutError, InfinityTimeoutError, _DeadlinePassed) as exc:
            # asyncio's at the deadline, or a request's own timeout cut to it (a blocking one)
            passed = call.ends_at is not None and time.monotonic() >= call.ends_at
            if not (passed or isinstance(exc, _DeadlinePassed)):
                raise  # not ours
            error = self._deadline_error(call)
            raise error from exc
        except BaseException as exc:
            error = exc
            raise
        finally:
            operation.close()
            if call.observation is not None:
                call.observation.finish(result, error)
        return result  # type: ignore[no-any-return]

    def _deadline_error(self, call: _Call) -> InfinityTimeoutError:
        tried = list(dict.fromkeys(call.urls_tried))
        where = f"; tried {', '.join(tried)}" if tried else "; no request was answered"
        error = InfinityTimeoutError(
            f"the call did not finish within its deadline of {call.options.deadline:g} s{where}",
            url=tried[-1] if tried else "",
        )
        error.urls = tuple(tried)
        return error

    async def _drive(self, operation: protocol.Operation[R], call: _Call) -> R:
        """Step ``operation``: run each fanout it yields, send back the parts or the error."""
        return await _pump(operation, lambda fanout: self._fanout(fanout, call))  # type: ignore[no-any-return]

    async def _fanout(self, fanout: protocol.Fanout[Any], call: _Call) -> list[Any]:
        exchanges = fanout.exchanges
        limit = min(call.options.max_concurrency, len(exchanges))
        if limit <= 1:
            alone = len(exchanges) == 1
            try:
                # One request in flight at a time: a sync call's are sent blocking.
                return [
                    await self._exchange(exchange, call, alone, call.blocking)
                    for exchange in exchanges
                ]
            finally:
                for exchange in exchanges:
                    exchange.close()
        gate = asyncio.Semaphore(limit)

        async def run_one(exchange: protocol.Exchange[Any]) -> Any:
            async with gate:
                return await self._exchange(exchange, call)

        try:
            # A TaskGroup cancels the other requests as soon as one fails.
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(run_one(exchange)) for exchange in exchanges]
        except BaseExceptionGroup as group_error:
            raise _first_of(group_error) from None
        finally:
            for exchange in exchanges:
                exchange.close()
        return [task.result() for task in tasks]

    async def _exchange(
        self,
        exchange: protocol.Exchange[Any],
        call: _Call,
        alone: bool = False,
        blocking: bool = False,
    ) -> Any:
        """Step one exchange: send each request it yields, hand back the answer or error."""
        items: list[int] = []

        def send(request: protocol.Request) -> Awaitable[Any]:
            items.append(request.items)
            return self._request(request, call, alone, blocking)

        part = await _pump(exchange, send)
        if call.progress is not None:
            call.progress(items[0] if items else 0)
        return part

    async def _request(
        self, request: protocol.Request, call: _Call, alone: bool, blocking: bool = False
    ) -> Any:
        """Send ``request``, retrying what may pass (on another replica when there is one).

        ``alone``: the request is its call's only one in flight (a query's embedding, one
        rerank request), so a copy may be hedged to another replica when it is slow.
        ``blocking``: it may be sent with a sync client in this thread (see :meth:`_send`);
        if it may be hedged, only with our own client, whose reads a copy's answer can wake.
        """
        attempts = Attempts(self.pool, self.retry, every_replica_once=request.every_replica_once)
        hedgeable = alone and request.method == "POST" and not request.every_replica_once
        hedgeable = hedgeable and self.hedge.enabled and len(self.pool) > 1
        # A hedgeable try is sent blocking only if its read can be woken (our own client).
        blocking = blocking and (not hedgeable or self._sync_sender.interruptible())
        reason: str | None = None
        while True:
            replica = attempts.start()
            started = time.monotonic()
            attempt = _Try(request, replica, call, attempts.retries, reason, blocking=blocking)
            try:
                first_won = True
                if hedgeable:
                    payload, first_won = await self._hedged(attempt)
                else:
                    payload = await self._attempt(attempt)
            except InfinityError as error:
                seconds = time.monotonic() - started
                delay = attempts.failed(error, self._log_retry(request), seconds)
                reason = type(error).__name__
            except BaseException:
                attempts.abandoned()
                raise
            else:
                if first_won:
                    attempts.succeeded(time.monotonic() - started)
                else:
                    attempts.outrun(time.monotonic() - started)
                return payload
            if delay:
                await asyncio.sleep(delay)

    async def _hedged(self, first: _Try) -> tuple[Any, bool]:
        """The ``first`` try of a request and, if no answer has come after the hedge
        delay (learned from recent latencies) and the budget allows, a copy on another
        replica: the first answer wins and the other request is cancelled. Embeddings and
        reranks are idempotent: a duplicate is safe. Returns the answer and whether the first
        try gave it.

        The first try runs in this task (a query's request costs no task of its own), or
        blocking in this thread (a sync query); a copy runs as a task, of this loop or of the
        shared loop thread, that stops the first try's wait if it answers first.
        """
        key = f"{first.request.route}:{first.request.items.bit_length()}"
        started = time.monotonic()
        with self._hedge_lock:
            delay = self.hedge.start(started, key)
        if delay is None:  # too few latencies known yet to tell what is slow
            payload = await self._attempt(first)
            self._hedge_record(started, key)
            return payload, True
        race: _Race = (_BlockingRace if first.blocking else _TaskRace)(self, first, delay)
        try:
            try:
                payload, first_won = await self._attempt(race.first), True
            except (asyncio.CancelledError, Interrupted) as stopped:
                if not race.copy_won(stopped):
                    raise
                payload, first_won = await race.copy_answer(), False
            except InfinityError as error:
                if race.copy is None:
                    raise
                race.settle()  # the first try failed with a copy in flight: its answer will do
                try:
                    payload, first_won = await race.copy_answer(), False
                except InfinityError:
                    raise error from None  # both failed: the first's error goes to the policy
        finally:
            await race.end()
        self._hedge_record(started, key)
        return payload, first_won

    def _hedge_record(self, started: float, key: str) -> None:
        now = time.monotonic()
        with self._hedge_lock:
            self.hedge.record(now - started, now, key)

    def _log_retry(self, request: protocol.Request) -> Callable[[InfinityError, int, float], None]:
        def log(error: InfinityError, retry: int, delay: float) -> None:
            logger.warning(
                "Infinity %s %s failed (%s); retry %d of %d in %.2fs",
                request.method,
                request.route,
                error,
                retry,
                self.retry.max_retries,
                delay,
            )

        return log

    # --- one HTTP request ----------------------------------------------------------------

    async def _attempt(self, attempt: _Try) -> Any:
        """Send one try of a request: its decoded answer, or its error."""
        request, replica, call = attempt.request, attempt.replica, attempt.call
        url, shown, host, port = self._target(request, replica)
        call.urls_tried.append(shown if request.outside_prefix else replica.shown)
        observation = None
        if call.observation is not None:
            observation = call.observation.attempt(
                AttemptInfo(
                    request.method,
                    request.route,
                    shown,
                    host,
                    port,
                    attempt.retry,
                    attempt.reason,
                    attempt.hedge,
                    request.items,
                )
            )
        headers = self.headers
        if observation is not None and (extra := observation.headers()):
            headers = {**headers, **extra}
        status: int | None = None
        error: BaseException | None = None
        started = time.perf_counter()
        try:
            response = await self._send(attempt, url, headers, shown)
            status = response.status_code
            _log_response(request, response, time.perf_counter() - started)
            return protocol.decode_answer(
                request,
                status,
                self._without_key(status, response.content),
                shown,
                retry_after=response.headers.get("retry-after"),
            )
        except BaseException as exc:
            # A blocking try that ran into the deadline, or lost a hedge race, was abandoned.
            abandoned = isinstance(exc, _DeadlinePassed | Interrupted)
            error = asyncio.CancelledError() if abandoned else exc
            raise
        finally:
            if observation is not None:
                observation.finish(status, error)

    def _target(self, request: protocol.Request, replica: Replica) -> _Target:
        key = (replica.base_url, request.route, request.outside_prefix)
        target = self._targets.get(key)
        if target is None:
            target = self._targets[key] = _target(request, replica)
        return target

    async def _send(
        self, attempt: _Try, url: httpx.URL, headers: Mapping[str, str], shown: str
    ) -> httpx.Response:
        """Send one try. A blocking one (a sync call's request alone in flight, on its
        thread's own loop) goes through a sync httpx client right here: nothing else of the
        call needs the loop meanwhile, and a sync client costs a query about half the CPU
        of an async one. Its timeout is cut to the call's deadline; a Ctrl-C interrupts it."""
        request, call = attempt.request, attempt.call
        timeout = self._timeout(call)
        options: dict[str, Any] = {"json": request.body, "headers": headers}
        if timeout is not None:
            options["timeout"] = timeout
        try:
            if attempt.blocking:
                with self._sync_sender.use() as sync_client, watching(attempt.watch):
                    response = sync_client.request(request.method, url, **options)
            elif call.sync and self.http_client is not None:
                response = await self._send_in_thread(self.http_client, request, url, options)
            else:
                client = self.http_async_client or self.loop_clients.get()
                response = await client.request(request.method, url, **options)
        except httpx.TransportError as exc:
            at_deadline = call.ends_at is not None and time.monotonic() >= call.ends_at - 0.01
            if attempt.blocking and isinstance(exc, httpx.TimeoutException) and at_deadline:
                raise _DeadlinePassed from exc
            raise _transport_error(shown, exc, timeout) from exc
        # The read body replaces httpx's stream, which holds the response in a reference
        # cycle: each answer is then freed at once, not by the cyclic GC (streams of a
        # million texts keep a flat memory).
        response.stream = httpx.ByteStream(response.content)
        return response

    @staticmethod
    async def _send_in_thread(
        client: httpx.Client, request: protocol.Request, url: httpx.URL, options: dict[str, Any]
    ) -> httpx.Response:
        """The caller's own sync httpx client, from the loop's worker threads. A blocking
        request cannot be interrupted: cancelled, it is waited for, so that nothing keeps
        running behind the call."""
        send = functools.partial(client.request, request.method, url, **options)
        future = asyncio.get_running_loop().run_in_executor(sync_executor(), send)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait([future])
            if not future.cancelled():
                future.exception()  # retrieved: the call is cancelled, its error is no news
            raise

    def _timeout(self, call: _Call) -> float | httpx.Timeout | None:
        """This try's timeout: the client's (or the injected httpx client's own, when the
        client's is ``None``), cut to what is left of the call's deadline."""
        remaining = call.remaining()
        if remaining is None:
            return self.timeout
        remaining = max(remaining, 0.001)
        if self.timeout is None:
            return remaining
        if isinstance(self.timeout, httpx.Timeout):
            parts = (self.timeout.connect, self.timeout.read, self.timeout.write, self.timeout.pool)
            return httpx.Timeout(*(remaining if p is None else min(p, remaining) for p in parts))
        return min(self.timeout, remaining)

    def _without_key(self, status_code: int, content: bytes) -> bytes:
        """An error body with our own key masked (a proxy may echo the request's headers)."""
        if status_code < 300 or self.api_key is None:
            return content
        return content.replace(self.api_key.get_secret_value().encode(), b"**********")

    # --- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the sync calls' connections (each pool after its calls in flight)."""
        self.sync_calls.close()
        self._sync_sender.close()

    async def aclose(self) -> None:
        """Close the running loop's connections, then the sync ones."""
        client = self.loop_clients.pop()
        if client is not None:
            await client.aclose()
        self.close()


async def _pump(flow: Generator[Any, Any, Any], send: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run a flow (an operation or an exchange) to its return value: ``send`` each thing it
    yields, and give it back the answer, or raise the ``InfinityError`` at its ``yield``."""
    done, value = _resume(flow, None, None)
    while not done:
        try:
            answer = await send(value)
        except InfinityError as error:
            done, value = _resume(flow, None, error)
        else:
            done, value = _resume(flow, answer, None)
    return value


def _resume(
    flow: Generator[Any, Any, Any], value: Any, error: BaseException | None
) -> tuple[bool, Any]:
    """Send ``value`` (or throw ``error``) into a flow: ``(False, what it yields next)`` or
    ``(True, what it returned)``. The flow's own errors propagate."""
    try:
        return False, flow.throw(error) if error is not None else flow.send(value)
    except StopIteration as stop:
        return True, stop.value


def _first_of(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a failed fanout raises: the first, with the others named in a note (a
    cancellation or an interrupt before any server error)."""
    errors = list(_leaves(group))
    for kind in (KeyboardInterrupt, SystemExit):
        for error in errors:
            if isinstance(error, kind):
                return error
    first = errors[0]
    others = [e for e in errors[1:] if not isinstance(e, asyncio.CancelledError)]
    if others:
        named = "; ".join(f"{type(e).__name__}: {e}" for e in others[:3])
        more = f" (and {len(others) - 3} more)" if len(others) > 3 else ""
        with contextlib.suppress(Exception):
            first.add_note(f"{len(others)} other request(s) of this call failed too: {named}{more}")
    return first


def _leaves(group: BaseExceptionGroup[BaseException]) -> Generator[BaseException, None, None]:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            yield from _leaves(error)
        else:
            yield error


class _Target(NamedTuple):
    """Where a request to one replica goes: the URL (parsed once), how it is shown (password
    masked), and its host and port."""

    url: httpx.URL
    shown: str
    host: str
    port: int | None


def _target(request: protocol.Request, replica: Replica) -> _Target:
    if request.outside_prefix:
        url, shown = replica.root_url + request.route, server_root(replica.shown) + request.route
    else:
        url, shown = replica.base_url + request.route, replica.shown + request.route
    parts = urlsplit(url)  # host and port (the shown URL's masked password is no port)
    return _Target(httpx.URL(url), shown, parts.hostname or "", parts.port)


def _transport_error(
    url: str, exc: httpx.TransportError, timeout: float | httpx.Timeout | None
) -> InfinityConnectionError:
    if isinstance(exc, httpx.TimeoutException):
        kind = type(exc).__name__
        limit = f" ({timeout:g} s)" if isinstance(timeout, int | float) else ""
        return InfinityTimeoutError(
            f"{kind}: no answer from {url} within the timeout{limit}", url=url
        )
    return _connection_error(url, exc)


def _cause_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _connection_error(url: str, exc: httpx.TransportError) -> InfinityConnectionError:
    chain = _cause_chain(exc)
    # httpx's async ReadError on a reset connection has an empty message: name the cause.
    cause = next((e for e in chain if str(e)), None)
    reason = str(exc) if cause is exc else f"{type(cause).__name__}: {cause}" if cause else ""
    error = InfinityConnectionError(
        f"cannot reach the Infinity server at {url}: {type(exc).__name__}: {reason}",
        url=url,
    )
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain):
        error.retryable = False  # the certificate will be refused the same way every time
    return error


def _log_response(request: protocol.Request, response: httpx.Response, seconds: float) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "Infinity %s %s -> %d (%d items, %d bytes, %.3fs)",
            request.method,
            request.route,
            response.status_code,
            request.items,
            len(response.content),
            seconds,
        )


class _SyncSender:
    """The sync httpx client of blocking sends: the injected one, or our own (made on first
    use; :meth:`close` takes it out of use, then closes it once the sends in flight end)."""

    def __init__(
        self,
        injected: Callable[[], httpx.Client | None],
        make: Callable[[], httpx.Client] | None,
    ) -> None:
        self._injected = injected
        self._make = make
        self._client: httpx.Client | None = None
        self._interruptible = False
        self._pid = os.getpid()
        self._in_flight: dict[httpx.Client, int] = {}
        self._changed = threading.Condition()

    @property
    def available(self) -> bool:
        return self._injected() is not None or self._make is not None

    def interruptible(self) -> bool:
        """Whether a blocking send's read can be woken (:mod:`infinity_rag._blocking`): only
        with our own client (made now if need be), not an injected one."""
        if self._injected() is not None or self._make is None:
            return False
        with self._changed:
            self._own()
            return self._interruptible

    def _own(self) -> httpx.Client:
        """Our own client, made on first use (under the lock)."""
        if self._pid != os.getpid():  # a forked child: the parent's connections stay its own
            self._client, self._in_flight, self._pid = None, {}, os.getpid()
        if self._client is None:
            if self._make is None:
                raise RuntimeError("no sync httpx client for a blocking send")
            self._client = self._make()
            self._interruptible = make_interruptible(self._client)
        return self._client

    @contextlib.contextmanager
    def use(self) -> Iterator[httpx.Client]:
        injected = self._injected()
        if injected is not None:
            yield injected
            return
        with self._changed:
            client = self._own()
            self._in_flight[client] = self._in_flight.get(client, 0) + 1
        try:
            yield client
        finally:
            with self._changed:
                self._in_flight[client] -= 1
                if not self._in_flight[client]:
                    del self._in_flight[client]
                    self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            client, self._client = self._client, None
            if client is None:
                return
            while client in self._in_flight:
                self._changed.wait()
        client.close()
