"""Pickling for worker processes: settings and key travel, sockets and locks are rebuilt."""

from __future__ import annotations

import asyncio
import copy
import pickle
import ssl
from collections.abc import Callable
from typing import Any

import certifi
import cloudpickle
import httpx
import pytest

from infinity_rag import (
    AuthenticationError,
    InfinityClient,
    InfinityConnectionError,
    InfinityTimeoutError,
    InvalidResponseError,
    ModelNotFoundError,
    OverloadedError,
    ServerError,
)
from unit_tests.conftest import FAKE_URL, make_client
from unit_tests.fake_infinity import FakeInfinity

SECRET = "sk-pickled-0123456789"
URLS = ["http://r0.test:7997", "http://r1.test:7997/v1"]

DUMPS: dict[str, Callable[[Any], bytes]] = {
    "pickle": pickle.dumps,
    "cloudpickle": cloudpickle.dumps,
}


@pytest.fixture(params=sorted(DUMPS))
def roundtrip(request: pytest.FixtureRequest) -> Callable[[Any], Any]:
    dumps = DUMPS[request.param]
    return lambda obj: pickle.loads(dumps(obj))


def open_pools(client: InfinityClient) -> None:
    """Open the client's connection pools (the sync calls' and an event loop's), as a used
    client has them: locks and sockets that must not travel."""

    async def open_pool() -> None:
        client._engine.loop_clients.get()

    client._engine.sync_calls.submit(lambda progress: open_pool()).wait()
    asyncio.run(open_pool())


def used_client() -> InfinityClient:
    """A client that has opened its sync pool and an async pool, and has replica state."""
    client = InfinityClient(
        base_url=URLS,
        api_key=SECRET,
        headers={"X-Team": "search"},
        batch_size=64,
        rerank_batch_size=128,
        max_concurrency=3,
        max_retries=5,
        timeout=12.5,
        replica_backoff=0.5,
        max_replica_backoff=7.0,
    )
    open_pools(client)
    replica = client._pool.acquire()
    client._pool.release(replica, InfinityConnectionError("down", url=replica.shown))
    return client


def test_client_round_trip_carries_settings_and_key(roundtrip: Callable[[Any], Any]) -> None:
    client = used_client()
    copy_ = roundtrip(client)
    assert copy_ is not client
    assert copy_.base_urls == tuple(URLS)
    assert copy_.api_key is not None
    assert copy_.api_key.get_secret_value() == SECRET
    assert copy_._engine.headers["Authorization"] == f"Bearer {SECRET}"
    assert copy_._engine.headers["X-Team"] == "search"
    assert (copy_.batch_size, copy_.rerank_batch_size, copy_.max_concurrency) == (64, 128, 3)
    assert (copy_.retry.max_retries, copy_.timeout) == (5, 12.5)
    assert (copy_._pool.backoff, copy_._pool.max_backoff) == (0.5, 7.0)
    # Rebuilt lazily on the other side: no pools, no replica history.
    assert len(copy_._engine.loop_clients) == 0
    assert all(s.failures == 0 and s.available for s in copy_.replicas())
    assert SECRET not in repr(copy_)


def test_the_pickle_holds_the_key_only_where_a_worker_needs_it() -> None:
    data = pickle.dumps(InfinityClient(base_url=FAKE_URL, api_key=SECRET))
    # The key travels (the worker must authenticate) inside a SecretStr, never in a repr.
    assert SECRET.encode() in data
    assert SECRET not in repr(pickle.loads(data))


def test_a_copy_works(fake: FakeInfinity) -> None:
    client = make_client(fake)
    settings = pickle.loads(pickle.dumps(InfinityClient(base_url=FAKE_URL, batch_size=2)))
    assert settings.batch_size == 2
    # The copy builds its own httpx pool; swap in the fake to check it sends as the original.
    settings._engine.http_client = httpx.Client(transport=fake.transport())
    assert len(settings.embed(["a", "b", "c"])) == 3
    assert len(fake.requests) == 2
    client.close()


def test_deepcopy_still_shares_the_client() -> None:
    client = used_client()
    assert copy.deepcopy(client) is client
    assert copy.deepcopy({"c": client})["c"] is client


def test_an_injected_http_client_cannot_travel(fake: FakeInfinity) -> None:
    client = make_client(fake)
    with pytest.raises(TypeError, match=r"http_client=.*Pass base_url"):
        pickle.dumps(client)
    with pytest.raises(TypeError, match="cannot be pickled"):
        cloudpickle.dumps(client)


def test_an_ssl_context_cannot_travel_a_ca_path_can() -> None:
    client = InfinityClient(base_url="https://a.test", verify=ssl.create_default_context())
    with pytest.raises(TypeError, match="CA bundle path"):
        pickle.dumps(client)
    bundle = certifi.where()  # httpx's own CA bundle: a real PEM file
    copy_ = pickle.loads(pickle.dumps(InfinityClient(base_url="https://a.test", verify=bundle)))
    assert isinstance(copy_.verify, ssl.SSLContext)
    assert copy_._config.verify == bundle


def test_verify_false_travels() -> None:
    copy_ = pickle.loads(pickle.dumps(InfinityClient(base_url="https://a.test", verify=False)))
    assert copy_.verify is False


@pytest.mark.parametrize(
    "error",
    [
        InfinityConnectionError("cannot reach http://a", url="http://a"),
        InfinityTimeoutError("slow", url="http://a"),
        ServerError("boom", status_code=502, url="http://a/embeddings", code=502),
        ModelNotFoundError("no such model", status_code=400, url="http://a"),
        AuthenticationError("bad key", status_code=401),
        InvalidResponseError("not infinity"),
    ],
)
def test_errors_cross_processes_intact(error: Exception) -> None:
    error.add_urls(("http://a", "http://b"), mention=True)  # type: ignore[attr-defined]
    copy_ = pickle.loads(pickle.dumps(error))
    assert type(copy_) is type(error)
    assert str(copy_) == str(error)
    assert copy_.__dict__ == error.__dict__
    assert copy_.urls == ("http://a", "http://b")


def test_an_overloaded_error_keeps_retry_after() -> None:
    error = OverloadedError("full", status_code=429)
    error.retry_after = 2.0
    assert pickle.loads(pickle.dumps(error)).retry_after == 2.0


# --- the framework classes -------------------------------------------------------------------


def test_langchain_classes_round_trip(roundtrip: Callable[[Any], Any]) -> None:
    from infinity_rag.langchain import InfinityEmbeddings, InfinityRerank

    client = used_client()
    shared = [
        InfinityEmbeddings(model="m", client=client, document_prefix="passage: "),
        InfinityRerank(model="r", client=client, top_n=5),
    ]
    own = InfinityEmbeddings(model="m", base_url=URLS, api_key=SECRET, replica_backoff=2.0)
    copies = roundtrip([*shared, own])
    embed, rerank, own_copy = copies
    assert embed._client is rerank._client  # still one shared client after the trip
    assert embed._client is not client
    assert embed._client.base_urls == tuple(URLS)
    assert embed._client.batch_size == 64
    assert embed.document_prefix == "passage: "
    assert rerank.top_n == 5
    assert own_copy._client.api_key.get_secret_value() == SECRET
    assert own_copy._client._pool.backoff == 2.0
    for obj in copies:
        assert SECRET not in repr(obj)


def test_langchain_classes_with_http_clients_cannot_travel(fake: FakeInfinity) -> None:
    from infinity_rag.langchain import InfinityEmbeddings

    embed = InfinityEmbeddings(
        model="m", base_url=FAKE_URL, http_client=httpx.Client(transport=fake.transport())
    )
    with pytest.raises(TypeError, match="InfinityEmbeddings built with an injected httpx"):
        pickle.dumps(embed)


def test_llama_index_classes_carry_a_shared_client(roundtrip: Callable[[Any], Any]) -> None:
    from infinity_rag.llama_index import InfinityEmbedding, InfinityRerank

    client = used_client()
    embed = InfinityEmbedding(model_name="m", client=client, text_instruction="passage: ")
    rerank = InfinityRerank(model="r", client=client, top_n=4)
    embed_copy, rerank_copy = roundtrip([embed, rerank])
    assert isinstance(embed_copy.client, InfinityClient)
    assert embed_copy._client is embed_copy.client
    assert embed_copy.client is rerank_copy.client
    assert embed_copy.client.batch_size == 64  # the client's own settings, not just the URL
    assert embed_copy.client._engine.headers["X-Team"] == "search"
    assert embed_copy.base_url == URLS
    assert embed_copy.api_key.get_secret_value() == SECRET
    assert embed_copy.text_instruction == "passage: "
    assert rerank_copy.top_n == 4
    assert SECRET not in repr(embed_copy) + repr(rerank_copy)
    assert embed._client is client  # the originals are untouched


def test_llama_index_classes_with_own_settings(roundtrip: Callable[[Any], Any]) -> None:
    from infinity_rag.llama_index import InfinityEmbedding

    embed = InfinityEmbedding(
        model_name="m", base_url=URLS, api_key=SECRET, replica_backoff=3.0, max_concurrency=2
    )
    open_pools(embed._client)
    copy_ = roundtrip(embed)
    assert copy_._client.base_urls == tuple(URLS)
    assert copy_._client._pool.backoff == 3.0
    assert copy_._client.api_key.get_secret_value() == SECRET
    assert copy_.max_concurrency == 2
