"""Event loops that come and go: each loop's httpx.AsyncClient is closed with its loop."""

from __future__ import annotations

import asyncio
import gc
import ssl
import threading
import time
import warnings
from typing import Any

import httpx
import pytest

from infinity_rag import InfinityClient
from infinity_rag._engine import _SyncSender
from infinity_rag._loops import LoopClients, SyncCalls
from unit_tests.conftest import FAKE_URL
from unit_tests.fake_infinity import FakeInfinity, vector_for


def mock_clients(fake: FakeInfinity, made: list[httpx.AsyncClient]) -> LoopClients:
    def factory() -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=fake.async_transport())
        made.append(client)
        return client

    return LoopClients(factory)


def test_asyncio_run_closes_its_loops_client(fake: FakeInfinity) -> None:
    made: list[httpx.AsyncClient] = []
    clients = mock_clients(fake, made)

    async def use() -> None:
        first = clients.get()
        assert clients.get() is first  # one per loop
        await first.post(f"{FAKE_URL}/embeddings", json={"input": ["a"]})

    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        for _ in range(200):
            asyncio.run(use())
        gc.collect()
    assert len(clients) == 0
    assert len(made) == 200
    assert all(client.is_closed for client in made)


def test_a_runner_closes_it_too(fake: FakeInfinity) -> None:
    made: list[httpx.AsyncClient] = []
    clients = mock_clients(fake, made)

    async def use() -> None:
        clients.get()

    with asyncio.Runner() as runner:
        runner.run(use())
        runner.run(use())  # same loop: same client
        assert len(clients) == 1
    assert len(clients) == 0
    assert made[0].is_closed


def test_a_loop_closed_without_shutdown_is_forgotten_at_the_next_loop(fake: FakeInfinity) -> None:
    made: list[httpx.AsyncClient] = []
    clients = mock_clients(fake, made)

    async def use() -> None:
        clients.get()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(use())
    loop.close()  # no shutdown_asyncgens(): the client is left behind
    assert len(clients) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and forgetting it raises nothing on the dead loop
        asyncio.run(use())
        gc.collect()
    assert len(clients) == 0


def test_pop_takes_the_running_loops_client(fake: FakeInfinity) -> None:
    made: list[httpx.AsyncClient] = []
    clients = mock_clients(fake, made)

    async def use() -> httpx.AsyncClient | None:
        clients.get()
        return clients.pop()

    taken = asyncio.run(use())
    assert taken is made[0]
    assert len(clients) == 0


def test_the_client_holds_no_pool_after_many_asyncio_runs(fake: FakeInfinity) -> None:
    client = InfinityClient(base_url=FAKE_URL)
    made: list[httpx.AsyncClient] = []
    client._engine.loop_clients = mock_clients(fake, made)
    for i in range(100):
        result = asyncio.run(client.aembed([f"t{i}"]))
        assert result.embeddings == [vector_for(f"t{i}")]
    assert len(client._engine.loop_clients) == 0
    assert all(c.is_closed for c in made)


def test_aclose_closes_the_running_loops_pool(fake: FakeInfinity) -> None:
    client = InfinityClient(base_url=FAKE_URL)
    made: list[httpx.AsyncClient] = []
    client._engine.loop_clients = mock_clients(fake, made)

    async def use() -> None:
        await client.aembed(["a"])
        await client.aclose()
        assert len(client._engine.loop_clients) == 0

    asyncio.run(use())
    assert made[0].is_closed


def test_one_tls_context_serves_every_pool_of_a_client(monkeypatch: pytest.MonkeyPatch) -> None:
    # httpx would build one per pool (~50 ms each): once per event loop that uses the client.
    built: list[ssl.SSLContext] = []
    create = httpx.create_ssl_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(create(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(httpx, "create_ssl_context", counting)
    client = InfinityClient(base_url="https://infinity.example:7997")

    async def pool() -> httpx.AsyncClient:
        try:
            return client._engine.loop_clients.get()
        finally:
            await client.aclose()

    async def sync_calls_pool() -> httpx.AsyncClient:
        return client._engine.loop_clients.get()  # in the loop that runs sync calls

    sync_pool = client._engine.sync_calls.submit(lambda progress: sync_calls_pool()).wait()
    pools = [sync_pool, asyncio.run(pool()), asyncio.run(pool())]
    client.close()
    assert len({id(p) for p in pools}) == 3
    assert len(built) == 1


# --- the loops that run sync calls ----------------------------------------------------------


def pooled_client(fake: FakeInfinity, made: list[httpx.AsyncClient]) -> InfinityClient:
    """A client whose every event loop gets a pool of its own (recorded in ``made``)."""
    client = InfinityClient(base_url=FAKE_URL)
    client._engine.loop_clients = mock_clients(fake, made)
    client._engine.sync_calls = SyncCalls(client._engine.loop_clients)
    client._engine._sync_sender = _SyncSender(
        lambda: None, None
    )  # no blocking sends: the loops' pools
    return client


def test_a_sync_call_runs_in_the_callers_thread(fake: FakeInfinity) -> None:
    # No hand-over to another thread: the request is sent from the thread that made the call.
    seen: list[threading.Thread] = []
    fake.hook = lambda request: seen.append(threading.current_thread())  # type: ignore[func-returns-value]
    made: list[httpx.AsyncClient] = []
    client = pooled_client(fake, made)
    assert client.embed(["a", "b"]).embeddings == [vector_for("a"), vector_for("b")]
    worker = threading.Thread(target=client.embed, args=(["c"],))
    worker.start()
    worker.join()
    assert seen == [threading.main_thread(), worker]
    assert len(made) == 2  # one pool per thread's loop
    client.close()


def test_a_sync_call_from_async_code_runs_on_the_shared_loop(fake: FakeInfinity) -> None:
    seen: list[str] = []
    fake.hook = lambda request: seen.append(threading.current_thread().name)  # type: ignore[func-returns-value]
    client = pooled_client(fake, [])

    async def inside_a_loop() -> list[list[float]]:
        return client.embed(["a"]).embeddings  # a sync method while this loop runs

    assert asyncio.run(inside_a_loop()) == [vector_for("a")]
    assert seen == ["infinity-rag-loop"]
    client.close()


def test_close_closes_every_threads_pool_after_its_call(fake: FakeInfinity) -> None:
    made: list[httpx.AsyncClient] = []
    client = pooled_client(fake, made)
    release = threading.Event()
    in_call = threading.Event()

    def progress(items: int) -> None:
        in_call.set()
        release.wait(5)  # the worker's call is still running when close() starts

    client.embed(["main"])
    worker = threading.Thread(target=client.embed, args=(["w"],), kwargs={"on_progress": progress})
    worker.start()
    assert in_call.wait(5)
    closing = threading.Thread(target=client.close)
    closing.start()
    closing.join(0.3)
    assert closing.is_alive()  # waits for the worker's call to end
    assert made[0].is_closed  # the main thread's idle pool is closed already
    release.set()
    closing.join(5)
    worker.join(5)
    assert not closing.is_alive()
    assert len(made) == 2
    assert all(pool.is_closed for pool in made)
    assert client.embed(["again"]).embeddings == [vector_for("again")]  # a new pool
    assert not made[-1].is_closed
    client.close()


def test_a_finished_threads_pool_is_closed_when_another_thread_starts(
    fake: FakeInfinity,
) -> None:
    made: list[httpx.AsyncClient] = []
    client = pooled_client(fake, made)
    for text in ("first", "second"):
        worker = threading.Thread(target=client.embed, args=([text],))
        worker.start()
        worker.join()
    # The first thread's loop was shut (its pool closed) when the second made its own.
    assert made[0].is_closed
    assert not made[1].is_closed
    client.close()
    assert made[1].is_closed


def test_an_interrupt_in_a_sync_call_abandons_its_requests(
    fake: FakeInfinity, caplog: pytest.LogCaptureFixture
) -> None:
    # A KeyboardInterrupt raised in the caller's thread mid-call (here by the progress
    # callback, as a Ctrl-C would) cancels the requests still in flight before it propagates.
    cancelled: list[bytes] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if b"slow" in request.content:
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                cancelled.append(request.content)
                raise
        await asyncio.sleep(0.05)  # the slow request is in flight by now
        return fake.handle(request)

    client = InfinityClient(base_url=FAKE_URL)
    client._engine.loop_clients = LoopClients(
        lambda: httpx.AsyncClient(transport=httpx.MockTransport(handler))
    )
    client._engine.sync_calls = SyncCalls(client._engine.loop_clients)
    client._engine._sync_sender = _SyncSender(
        lambda: None, None
    )  # no blocking sends: the loops' pools

    reports: list[int] = []

    def interrupt(items: int) -> None:
        reports.append(items)
        if len(reports) == 2:  # the first chunk goes alone (it tells the vectors' shape)
            raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        client.embed(["a", "fast", "slow"], batch_size=1, max_concurrency=2, on_progress=interrupt)
    assert time.monotonic() - started < 2
    assert len(cancelled) == 1, cancelled
    assert b"slow" in cancelled[0]
    client.close()
    gc.collect()
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []  # all retrieved


def test_close_from_a_progress_callback_closes_the_pool_after_the_call(
    fake: FakeInfinity,
) -> None:
    made: list[httpx.AsyncClient] = []
    client = pooled_client(fake, made)
    open_during_call: list[bool] = []

    def progress(items: int) -> None:
        client.close()
        open_during_call.append(not made[0].is_closed)

    texts = [f"t{i}" for i in range(6)]
    result = client.embed(texts, batch_size=2, max_concurrency=1, on_progress=progress)
    assert result.embeddings == [vector_for(t) for t in texts]
    assert open_during_call == [True, True, True]  # not closed under the call
    assert made
    assert all(pool.is_closed for pool in made)  # once the call ended
