"""Real overload: an Infinity server with a tiny queue, flooded through one shared client.

Infinity answers ``429`` ("model ... is currently overloaded") while more inputs wait in its
queue than ``INFINITY_QUEUE_SIZE``. The server here allows 8: a single request of 48 texts
fills it, so a flood of concurrent requests is mostly refused at first. With retries the
client backs off (exponential, with jitter) until every request is served, and each vector is
the one the text gets on a quiet server; with retries off the 429 surfaces as
``OverloadedError`` and the requests that did pass are complete and correct.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from infinity_rag import EmbeddingResult, InfinityClient, OverloadedError
from infinity_rag._pool import RetryPolicy

pytestmark = pytest.mark.slow

QUEUE_SIZE = 8
TASKS = 24
PER_TASK = 48
FLOOD = [
    [f"flood {task}: sentence {i} on subject {(task * 7 + i) % 31}" for i in range(PER_TASK)]
    for task in range(TASKS)
]
#: Patient enough for a flood (pauses from 0.05 s up to 1 s, 200 tries), quick to react.
FLOOD_RETRY = RetryPolicy(max_retries=200, initial_delay=0.1, max_delay=1.0)


class StatusCounter:
    """Counts the HTTP statuses the server answered (an httpx response hook)."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self._lock = threading.Lock()

    def __call__(self, response: httpx.Response) -> None:
        with self._lock:
            self.counts[response.status_code] += 1

    async def hook(self, response: httpx.Response) -> None:
        self(response)


@pytest.fixture(scope="module")
def busy_server() -> Iterator[Any]:
    from infinity_rag.testing import LocalInfinityServer

    with LocalInfinityServer(["minilm"], extra_env={"INFINITY_QUEUE_SIZE": str(QUEUE_SIZE)}) as s:
        yield s


@pytest.fixture(scope="module")
def reference(busy_server: Any) -> list[list[list[float]]]:
    # One request at a time never overloads the server.
    with InfinityClient(
        base_url=busy_server.url, api_key=busy_server.api_key, max_concurrency=1
    ) as client:
        return [client.embed(texts).embeddings for texts in FLOOD]


def flood_client(server: Any, counter: StatusCounter, *, retries: bool) -> InfinityClient:
    client = InfinityClient(
        base_url=server.url,
        api_key=server.api_key,
        timeout=60,
        http_client=httpx.Client(event_hooks={"response": [counter]}),
        http_async_client=httpx.AsyncClient(
            event_hooks={"response": [counter.hook]},
            limits=httpx.Limits(max_connections=TASKS),
        ),
    )
    client.retry = FLOOD_RETRY if retries else RetryPolicy(max_retries=0)
    return client


def same(a: list[list[float]], b: list[list[float]], tol: float = 1e-5) -> bool:
    return len(a) == len(b) and all(
        max(abs(p - q) for p, q in zip(x, y, strict=True)) <= tol for x, y in zip(a, b, strict=True)
    )


async def test_an_async_flood_is_retried_until_every_request_is_served(
    busy_server: Any, reference: list[list[list[float]]]
) -> None:
    counter = StatusCounter()
    client = flood_client(busy_server, counter, retries=True)
    results = await asyncio.gather(*(client.aembed(texts) for texts in FLOOD))
    await client.aclose()
    print(f"async flood: statuses {dict(counter.counts)}")  # noqa: T201 (-s shows it)
    assert counter.counts[429] > 0, "the flood never overloaded the server"
    assert set(counter.counts) <= {200, 429}
    assert counter.counts[200] == TASKS
    for result, expected in zip(results, reference, strict=True):
        assert same(result.embeddings, expected)


def test_a_threaded_flood_is_retried_until_every_request_is_served(
    busy_server: Any, reference: list[list[list[float]]]
) -> None:
    counter = StatusCounter()
    with (
        flood_client(busy_server, counter, retries=True) as client,
        ThreadPoolExecutor(TASKS // 2) as pool,
    ):
        results = list(pool.map(client.embed, FLOOD))
    print(f"threaded flood: statuses {dict(counter.counts)}")  # noqa: T201
    assert counter.counts[429] > 0
    assert counter.counts[200] == TASKS
    for result, expected in zip(results, reference, strict=True):
        assert same(result.embeddings, expected)


def test_one_call_whose_own_chunks_overload_the_server_completes_in_order(
    busy_server: Any, reference: list[list[list[float]]]
) -> None:
    counter = StatusCounter()
    texts = [text for task in FLOOD for text in task]
    with flood_client(busy_server, counter, retries=True) as client:
        result = client.embed(texts, batch_size=PER_TASK, max_concurrency=8)
    print(f"one chunked call: statuses {dict(counter.counts)}")  # noqa: T201
    assert counter.counts[429] > 0
    assert same(result.embeddings, [vector for task in reference for vector in task])


async def test_with_retries_off_the_flood_gets_overloaded_errors_and_no_partial_results(
    busy_server: Any, reference: list[list[list[float]]]
) -> None:
    counter = StatusCounter()
    client = flood_client(busy_server, counter, retries=False)
    outcomes: list[EmbeddingResult | BaseException] = await asyncio.gather(
        *(client.aembed(texts) for texts in FLOOD), return_exceptions=True
    )
    await client.aclose()
    print(f"flood without retries: statuses {dict(counter.counts)}")  # noqa: T201
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert errors, "the flood never overloaded the server"
    for error in errors:
        assert isinstance(error, OverloadedError), repr(error)
        assert error.status_code == 429
        assert "overloaded" in str(error)
        assert busy_server.url in str(error)
    for outcome, expected in zip(outcomes, reference, strict=True):
        if isinstance(outcome, EmbeddingResult):
            assert same(outcome.embeddings, expected)
    assert counter.counts[429] == len(errors)
