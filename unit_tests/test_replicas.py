"""One client, several replicas: spread, failover, 429s, every replica down, configuration."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest

from infinity_rag import InfinityClient, InfinityConnectionError, ServerError
from infinity_rag._pool import RetryPolicy
from unit_tests.conftest import make_client
from unit_tests.fake_infinity import FakeInfinity, vector_for

URLS = ["http://r0.test:7997", "http://r1.test:7997/v1", "http://r2.test:7997"]
TEXTS = [f"text {i}" for i in range(60)]


def hosts(fake: FakeInfinity, path: str = "/embeddings") -> Counter[str]:
    return Counter(r.url.host for r in fake.requests if r.url.path.endswith(path))


def refuse(*down: str) -> object:
    def hook(request: httpx.Request) -> httpx.Response | None:
        if request.url.host in down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return None

    return hook


def fleet(fake: FakeInfinity, **kwargs: object) -> InfinityClient:
    kwargs.setdefault("batch_size", 3)
    client = make_client(fake, base_url=URLS, **kwargs)
    client.retry = RetryPolicy(max_retries=2, initial_delay=0.0)
    return client


def test_requests_spread_over_every_replica(fake: FakeInfinity) -> None:
    with fleet(fake, max_concurrency=3) as client:
        result = client.embed(TEXTS)
    assert result.embeddings == [vector_for(t) for t in TEXTS]
    counts = hosts(fake)
    assert set(counts) == {"r0.test", "r1.test", "r2.test"}
    assert sum(counts.values()) == 20
    assert [s.requests for s in client.replicas()] == [
        counts["r0.test"],
        counts["r1.test"],
        counts["r2.test"],
    ]
    assert all(s.in_flight == 0 and s.available for s in client.replicas())


def test_each_replica_keeps_its_prefix(fake: FakeInfinity) -> None:
    with fleet(fake, max_concurrency=3) as client:
        client.embed(TEXTS)
        client.health()
    paths = {(r.url.host, r.url.path) for r in fake.requests}
    assert ("r1.test", "/v1/embeddings") in paths
    assert ("r0.test", "/embeddings") in paths


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_dead_replica_is_left_out_and_nothing_is_lost(fake: FakeInfinity, mode: str) -> None:
    fake.hook = refuse("r1.test")  # type: ignore[assignment]
    with fleet(fake, max_concurrency=4) as client:
        result = client.embed(TEXTS) if mode == "sync" else asyncio.run(client.aembed(TEXTS))
        states = client.replicas()
    assert result.embeddings == [vector_for(t) for t in TEXTS]
    answered = [
        r for r in fake.requests if r.url.host != "r1.test" and r.url.path.endswith("embeddings")
    ]
    assert len(answered) == 20  # every chunk answered exactly once
    dead = states[1]
    assert dead.failures >= 1
    assert dead.out_until is not None
    assert dead.requests <= 4  # out after its first failures, not chosen again meanwhile


def test_429_goes_to_another_replica_at_once_and_spares_the_first(fake: FakeInfinity) -> None:
    def hook(request: httpx.Request) -> httpx.Response | None:
        if request.url.host == "r0.test":
            return httpx.Response(
                429, json={"error": {"message": "queue full"}}, headers={"Retry-After": "30"}
            )
        return None

    fake.hook = hook  # type: ignore[assignment]
    with fleet(fake) as client:
        client.retry = RetryPolicy(max_retries=2)  # a real delay, were it waited
        # r1 and r2 each look busy with one request: the first try goes to r0, deterministically.
        held = [client._pool.acquire(avoid=[client._pool.replicas[0]]) for _ in range(2)]
        assert {client._pool.replicas.index(r) for r in held} == {1, 2}
        started = time.monotonic()
        result = client.embed(TEXTS[:9], max_concurrency=1)
        elapsed = time.monotonic() - started
        for replica in held:
            client._pool.release(replica)
        spared = client.replicas()[0]
    assert result.embeddings == [vector_for(t) for t in TEXTS[:9]]
    assert elapsed < 5  # the 30 s Retry-After was not waited for
    assert hosts(fake)["r0.test"] == 1
    assert spared.consecutive_failures == 0
    assert spared.failures == 0
    assert spared.out_until is not None
    assert spared.out_until > time.time() + 20


def test_a_retry_after_a_5xx_goes_elsewhere(fake: FakeInfinity) -> None:
    fake.failures = [(503, {"error": {"message": "busy"}})]
    with fleet(fake, max_concurrency=1) as client:
        result = client.embed(TEXTS[:3])
    assert result.embeddings == [vector_for(t) for t in TEXTS[:3]]
    first, second = (r.url.host for r in fake.requests)
    assert first != second


def test_every_replica_down_names_every_url(fake: FakeInfinity) -> None:
    fake.hook = refuse("r0.test", "r1.test", "r2.test")  # type: ignore[assignment]
    with fleet(fake) as client, pytest.raises(InfinityConnectionError) as caught:
        client.embed(TEXTS[:3])
    message = str(caught.value)
    assert set(caught.value.urls) == {
        "http://r0.test:7997",
        "http://r1.test:7997/v1",
        "http://r2.test:7997",
    }
    assert all(url in message for url in caught.value.urls)
    assert "Connection refused" in message
    assert len(fake.requests) == 3  # max_retries=2: three tries, one per replica


def test_every_replica_down_async(fake: FakeInfinity) -> None:
    fake.hook = refuse("r0.test", "r1.test", "r2.test")  # type: ignore[assignment]
    with fleet(fake) as client, pytest.raises(InfinityConnectionError) as caught:
        asyncio.run(client.aembed(TEXTS[:3]))
    assert len(caught.value.urls) == 3


def test_when_all_are_out_the_soonest_back_is_tried_after_the_delay(fake: FakeInfinity) -> None:
    with fleet(fake, max_concurrency=1) as client:
        client.retry = RetryPolicy(max_retries=1, initial_delay=0.0)
        fake.hook = refuse("r0.test", "r1.test", "r2.test")  # type: ignore[assignment]
        for _ in range(2):
            with pytest.raises(InfinityConnectionError):
                client.embed(TEXTS[:3])
        assert not any(s.available for s in client.replicas())
        fake.hook = None
        result = client.embed(TEXTS[:3])  # tried rather than refused at once
        assert result.embeddings == [vector_for(t) for t in TEXTS[:3]]
        assert sum(s.available for s in client.replicas()) == 1


def test_one_url_error_is_as_before(fake: FakeInfinity) -> None:
    fake.hook = refuse("infinity.test")  # type: ignore[assignment]
    with make_client(fake) as client:
        client.retry = RetryPolicy(max_retries=1, initial_delay=0.0)
        with pytest.raises(InfinityConnectionError) as caught:
            client.embed(["a"])
    assert "tried" not in str(caught.value)
    assert caught.value.urls == ("http://infinity.test:7997",)
    assert len(fake.requests) == 2


def test_server_errors_exhausted_name_the_urls(fake: FakeInfinity) -> None:
    fake.failures = [(500, {"error": {"message": "boom"}})] * 3
    with fleet(fake) as client, pytest.raises(ServerError) as caught:
        client.embed(TEXTS[:3])
    assert len(caught.value.urls) == 3
    assert "tried 3 URL(s)" in str(caught.value)


def test_health_is_true_while_one_replica_answers(fake: FakeInfinity) -> None:
    fake.hook = refuse("r0.test", "r1.test")  # type: ignore[assignment]
    with fleet(fake) as client:
        assert client.health() is True
        assert asyncio.run(client.ahealth()) is True
        fake.hook = refuse("r0.test", "r1.test", "r2.test")  # type: ignore[assignment]
        with pytest.raises(InfinityConnectionError) as caught:
            client.health()
    assert len(caught.value.urls) == 3
    assert "http://r1.test:7997/v1" in caught.value.urls  # shown with its prefix


def test_models_asks_a_live_replica(fake: FakeInfinity) -> None:
    fake.hook = refuse("r0.test", "r2.test")  # type: ignore[assignment]
    with fleet(fake) as client:
        assert {m.id for m in client.models()} >= {"embedder"}


def test_replica_states_hide_passwords() -> None:
    client = InfinityClient(base_url=["http://user:pw@a.test:1", "http://b.test:2"])
    assert [s.url for s in client.replicas()] == [
        "http://user:[secure]@a.test:1",
        "http://b.test:2",
    ]
    assert "pw" not in repr(client)


# --- configuration ---------------------------------------------------------------------------


def test_env_var_may_list_several_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFINITY_API_BASE", "http://a.test:1, http://b.test:2/v1/")
    client = InfinityClient()
    assert client.base_urls == ("http://a.test:1", "http://b.test:2/v1")
    assert client.base_url == "http://a.test:1"


@pytest.mark.parametrize(
    ("base_url", "error", "message"),
    [
        (["http://a:1", "http://a:1"], ValueError, "more than once"),
        ([], ValueError, "lists no URL"),
        (",", ValueError, "lists no URL"),
        (["http://a:1", 7], TypeError, "URL string"),
        (["http://a:1", "ftp://b"], ValueError, "http"),
        (42, TypeError, "URL string"),
    ],
)
def test_bad_url_lists(base_url: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        InfinityClient(base_url=base_url)  # type: ignore[arg-type]


def test_backoff_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="replica_backoff"):
        InfinityClient(replica_backoff=-1)
    client = InfinityClient(base_url=URLS, replica_backoff=0.5, max_replica_backoff=4)
    assert (client._pool.backoff, client._pool.max_backoff) == (0.5, 4)


def test_langchain_classes_take_several_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    from infinity_rag.langchain import InfinityEmbeddings, InfinityRerank

    embeddings = InfinityEmbeddings(model="m", base_url=URLS, replica_backoff=2.0)
    assert embeddings._client.base_urls == tuple(URLS)
    assert embeddings.infinity_api_base == URLS
    assert embeddings._client._pool.backoff == 2.0
    monkeypatch.setenv("INFINITY_API_BASE", ",".join(URLS))
    rerank = InfinityRerank(model="m")
    assert rerank._client.base_urls == tuple(URLS)
    single = InfinityRerank(model="m", base_url="http://one.test:1")
    assert single.infinity_api_base == "http://one.test:1"
    shared = InfinityEmbeddings(model="m", client=embeddings._client)
    assert shared.infinity_api_base == URLS
    with pytest.raises(TypeError, match="replica_backoff"):
        InfinityEmbeddings(model="m", client=embeddings._client, replica_backoff=3.0)


def test_llama_index_classes_take_several_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    from infinity_rag.llama_index import InfinityEmbedding, InfinityRerank

    embedding = InfinityEmbedding(model_name="m", base_url=URLS, max_replica_backoff=9.0)
    assert embedding._client.base_urls == tuple(URLS)
    assert embedding.base_url == URLS
    assert embedding._client._pool.max_backoff == 9.0
    monkeypatch.setenv("INFINITY_API_BASE", ",".join(URLS))
    assert InfinityRerank(model="m")._client.base_urls == tuple(URLS)
    shared = InfinityRerank(model="m", client=embedding._client)
    assert shared.base_url == URLS
    with pytest.raises(TypeError, match="max_replica_backoff"):
        InfinityRerank(model="m", client=embedding._client, max_replica_backoff=1.0)
