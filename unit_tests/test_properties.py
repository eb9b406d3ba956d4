"""Property tests: chunking, reassembly and rerank merging over random sizes and concurrency,
with a server that answers every batch out of order and at random speeds."""

from __future__ import annotations

import asyncio
import json
import random
import time

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infinity_rag import InfinityClient
from infinity_rag._protocol import chunks
from unit_tests.conftest import FAKE_URL
from unit_tests.fake_infinity import FakeInfinity, score_for, vector_for

PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def scrambled_fake(seed: int) -> FakeInfinity:
    """A fake whose answers list items in a random order (and take a random short time)."""
    fake = FakeInfinity()
    rng = random.Random(seed)

    def scramble(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/health"):
            return None
        time.sleep(rng.random() / 2000)
        body = json.loads(request.content)
        route = request.url.path.rsplit("/", 1)[-1]
        response = fake._embed(body, "embedder") if route == "embeddings" else None
        if response is None:
            response = fake._rerank(body, "reranker")
            payload = response.json()
            rng.shuffle(payload["results"])
        else:
            payload = response.json()
            rng.shuffle(payload["data"])
        return httpx.Response(200, json=payload)

    fake.hook = scramble
    return fake


def clients(fake: FakeInfinity, batch_size: int, concurrency: int) -> InfinityClient:
    return InfinityClient(
        base_url=FAKE_URL,
        batch_size=batch_size,
        rerank_batch_size=batch_size,
        max_concurrency=concurrency,
        http_client=httpx.Client(transport=fake.transport()),
        http_async_client=httpx.AsyncClient(transport=fake.async_transport()),
    )


texts_strategy = st.lists(st.text(max_size=12), max_size=60)


@given(count=st.integers(0, 500), size=st.integers(1, 64))
def test_chunks_cover_every_item_once_in_order(count: int, size: int) -> None:
    bounds = chunks(count, size)
    covered = [i for start, stop in bounds for i in range(start, stop)]
    assert covered == list(range(count))
    assert all(0 < stop - start <= size for start, stop in bounds)


@PROPERTY_SETTINGS
@given(
    texts=texts_strategy,
    batch_size=st.integers(1, 9),
    concurrency=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_embeddings_come_back_in_input_order(
    texts: list[str], batch_size: int, concurrency: int, seed: int
) -> None:
    fake = scrambled_fake(seed)
    with clients(fake, batch_size, concurrency) as client:
        result = client.embed(texts)
    assert result.embeddings == [vector_for(t) for t in texts]
    assert sum(len(b["input"]) for b in fake.bodies) == len(texts)
    assert all(len(b["input"]) <= batch_size for b in fake.bodies)


@PROPERTY_SETTINGS
@given(
    texts=texts_strategy,
    batch_size=st.integers(1, 9),
    concurrency=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_async_embeddings_come_back_in_input_order(
    texts: list[str], batch_size: int, concurrency: int, seed: int
) -> None:
    fake = scrambled_fake(seed)
    client = clients(fake, batch_size, concurrency)
    result = asyncio.run(client.aembed(texts))
    assert result.embeddings == [vector_for(t) for t in texts]


words = st.sampled_from(["cat", "dog", "sun", "rain", "tea", "a", "b"])
documents_strategy = st.lists(st.lists(words, max_size=5).map(" ".join), max_size=40)


@PROPERTY_SETTINGS
@given(
    documents=documents_strategy,
    top_n=st.one_of(st.none(), st.integers(1, 50)),
    batch_size=st.integers(1, 9),
    concurrency=st.integers(1, 4),
    seed=st.integers(0, 10_000),
)
def test_rerank_merge_equals_ranking_everything_at_once(
    documents: list[str], top_n: int | None, batch_size: int, concurrency: int, seed: int
) -> None:
    query = "cat in the rain"
    fake = scrambled_fake(seed)
    with clients(fake, batch_size, concurrency) as client:
        result = client.rerank(query, documents, top_n=top_n, return_documents=True)
    expected = sorted(range(len(documents)), key=lambda i: (-score_for(query, documents[i]), i))
    if top_n is not None:
        expected = expected[:top_n]
    assert [r.index for r in result] == expected
    assert [r.document for r in result] == [documents[i] for i in expected]
    assert asyncio.run(client.arerank(query, documents, top_n=top_n, return_documents=True)) == (
        result
    )
