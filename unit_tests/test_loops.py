"""Event loops that come and go: each loop's httpx.AsyncClient is closed with its loop."""

from __future__ import annotations

import asyncio
import gc
import ssl
import warnings
from typing import Any

import httpx
import pytest

from infinity_rag import InfinityClient
from infinity_rag._loops import LoopClients
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

    sync_pool = client._engine.background.submit(lambda progress: sync_calls_pool()).wait()
    pools = [sync_pool, asyncio.run(pool()), asyncio.run(pool())]
    client.close()
    assert len({id(p) for p in pools}) == 3
    assert len(built) == 1
