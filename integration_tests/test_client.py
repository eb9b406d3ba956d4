"""InfinityClient against a real Infinity server: every route, chunking, errors, sharing."""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor

import pytest

from infinity_rag import (
    AuthenticationError,
    InfinityClient,
    InfinityConnectionError,
    InvalidRequestError,
    ModelCapabilityError,
    ModelNotFoundError,
    NotFoundError,
)
from integration_tests.conftest import ServerInfo

TEXTS = [
    "The cat sat on the mat.",
    "Quantum computers use qubits.",
    "Paris is the capital of France.",
    "",
    "Bread is baked in an oven.",
]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embed_shapes_order_and_types(client: InfinityClient, infinity_server: ServerInfo) -> None:
    result = client.embed(TEXTS, model=infinity_server.embed_model)
    assert len(result.embeddings) == len(TEXTS)
    assert all(len(v) == infinity_server.dim for v in result.embeddings)
    assert all(type(x) is float for v in result.embeddings for x in v)
    assert result.model == infinity_server.embed_model
    assert result.usage.prompt_tokens > 0
    # Order: each vector is the one its text gets alone.
    for text, vector in zip(TEXTS[:3], result.embeddings, strict=False):
        alone = client.embed([text], model=infinity_server.embed_model).embeddings[0]
        assert cosine(alone, vector) > 0.9999


def test_base64_equals_float(client: InfinityClient, infinity_server: ServerInfo) -> None:
    via_base64 = client.embed(TEXTS, model=infinity_server.embed_model)
    via_float = client.embed(TEXTS, model=infinity_server.embed_model, encoding_format="float")
    for b, f in zip(via_base64.embeddings, via_float.embeddings, strict=True):
        assert max(abs(x - y) for x, y in zip(b, f, strict=True)) < 1e-6


def test_dimensions_truncate(client: InfinityClient, infinity_server: ServerInfo) -> None:
    full = client.embed(TEXTS[:2], model=infinity_server.embed_model).embeddings
    short = client.embed(TEXTS[:2], model=infinity_server.embed_model, dimensions=64).embeddings
    assert [len(v) for v in short] == [64, 64]
    for f, s in zip(full, short, strict=True):
        assert s == pytest.approx(f[:64], abs=1e-6)


def test_embed_past_the_server_limit_is_chunked_and_ordered(
    client: InfinityClient, infinity_server: ServerInfo
) -> None:
    texts = [f"sentence number {i}" for i in range(2100)]
    result = client.embed(texts, model=infinity_server.embed_model, batch_size=2048)
    assert len(result.embeddings) == 2100
    probes = [0, 2047, 2048, 2099]
    alone = client.embed([texts[i] for i in probes], model=infinity_server.embed_model)
    for i, vector in zip(probes, alone.embeddings, strict=True):
        assert cosine(result.embeddings[i], vector) > 0.9999


async def test_aembed_equals_embed(
    client: InfinityClient, aclient: InfinityClient, infinity_server: ServerInfo
) -> None:
    texts = [f"async sentence {i}" for i in range(600)]
    sync = client.embed(texts, model=infinity_server.embed_model)
    asynchronous = await aclient.aembed(texts, model=infinity_server.embed_model)
    for a, b in zip(sync.embeddings, asynchronous.embeddings, strict=True):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-5


def test_rerank(client: InfinityClient, infinity_server: ServerInfo) -> None:
    result = client.rerank(
        "capital of France", TEXTS, model=infinity_server.rerank_model, return_documents=True
    )
    assert sorted(r.index for r in result) == list(range(len(TEXTS)))
    scores = [r.relevance_score for r in result]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert all(r.document == TEXTS[r.index] for r in result)
    top = client.rerank("capital of France", TEXTS, model=infinity_server.rerank_model, top_n=2)
    assert [r.index for r in top] == [r.index for r in result][:2]
    assert all(r.document is None for r in top)


def test_raw_scores_are_logits(client: InfinityClient, infinity_server: ServerInfo) -> None:
    probabilities = client.rerank("cats", TEXTS, model=infinity_server.rerank_model)
    logits = client.rerank("cats", TEXTS, model=infinity_server.rerank_model, raw_scores=True)
    assert [r.index for r in logits] == [r.index for r in probabilities]
    for p, raw in zip(probabilities, logits, strict=True):
        assert p.relevance_score == pytest.approx(1 / (1 + math.exp(-raw.relevance_score)), 1e-4)


def test_rerank_past_the_server_limit_is_merged(
    client: InfinityClient, infinity_server: ServerInfo
) -> None:
    documents = [f"document {i} about topic {i % 17}" for i in range(2100)]
    merged = client.rerank("topic 3", documents, model=infinity_server.rerank_model, top_n=50)
    assert len(merged) == 50
    scores = [r.relevance_score for r in merged]
    assert scores == sorted(scores, reverse=True)
    # The merged best equal the best of scoring every chunk in full.
    first = client.rerank("topic 3", documents[:1050], model=infinity_server.rerank_model)
    second = client.rerank("topic 3", documents[1050:], model=infinity_server.rerank_model)
    everything = [(r.relevance_score, r.index) for r in first] + [
        (r.relevance_score, r.index + 1050) for r in second
    ]
    best = sorted(everything, key=lambda pair: (-pair[0], pair[1]))[:50]
    assert [r.index for r in merged] == [index for _, index in best]


def test_classify(client: InfinityClient, infinity_server: ServerInfo) -> None:
    result = client.classify(TEXTS, model=infinity_server.classify_model)
    assert len(result) == len(TEXTS)
    for labels in result:
        assert {label.label for label in labels} == {"negative", "positive"}
        assert sum(label.score for label in labels) == pytest.approx(1.0, abs=1e-4)
        assert labels[0].score >= labels[1].score


def test_models_and_health(client: InfinityClient, infinity_server: ServerInfo) -> None:
    models = {m.id: m for m in client.models()}
    assert "embed" in models[infinity_server.embed_model].capabilities
    assert "rerank" in models[infinity_server.rerank_model].capabilities
    assert "classify" in models[infinity_server.classify_model].capabilities
    assert client.health() is True
    client.wait_until_ready(timeout=5)


async def test_async_models_and_health(aclient: InfinityClient) -> None:
    assert await aclient.ahealth() is True
    assert len(await aclient.amodels()) >= 3
    await aclient.await_until_ready(timeout=5)


# --- errors as the real server produces them -------------------------------------------------


def test_wrong_key(infinity_server: ServerInfo) -> None:
    if infinity_server.api_key is None:
        pytest.fail("the test server must run with an API key")
    with InfinityClient(base_url=infinity_server.url, api_key="wrong-key-xyz") as client:
        with pytest.raises(AuthenticationError) as caught:
            client.embed(["a"], model=infinity_server.embed_model)
    assert caught.value.status_code == 401
    assert "wrong-key-xyz" not in str(caught.value)


def test_missing_key(infinity_server: ServerInfo) -> None:
    with InfinityClient(base_url=infinity_server.url) as client:
        with pytest.raises(AuthenticationError):
            client.rerank("q", ["a"], model=infinity_server.rerank_model)
        assert client.health() is True  # /health needs no key


def test_unknown_model_names_the_served_ones(
    client: InfinityClient, infinity_server: ServerInfo
) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        client.embed(["a"], model="no-such-model")
    assert caught.value.status_code == 400
    assert infinity_server.embed_model in str(caught.value)


def test_model_without_the_capability(client: InfinityClient, infinity_server: ServerInfo) -> None:
    with pytest.raises(ModelCapabilityError) as caught:
        client.rerank("q", ["a"], model=infinity_server.embed_model)
    assert caught.value.status_code == 400
    with pytest.raises(ModelCapabilityError):
        client.embed(["a"], model=infinity_server.rerank_model)


def test_too_many_items_from_the_server_is_short(
    client: InfinityClient, infinity_server: ServerInfo
) -> None:
    # The client never sends more than 2048; extra_body can override the input, so the
    # server's own 422 (which echoes all input) can be seen through the public API.
    flood = [f"item {i}" for i in range(2049)]
    with pytest.raises(InvalidRequestError) as caught:
        client.embed(["a"], model=infinity_server.embed_model, extra_body={"input": flood})
    assert caught.value.status_code == 422
    assert "item 2048" not in str(caught.value)
    assert len(str(caught.value)) < 600


def test_wrong_prefix_is_not_found(infinity_server: ServerInfo) -> None:
    with InfinityClient(
        base_url=infinity_server.url + "/v9", api_key=infinity_server.api_key
    ) as client:
        with pytest.raises(NotFoundError, match="url-prefix"):
            client.embed(["a"], model=infinity_server.embed_model)


def test_unreachable_server() -> None:
    with InfinityClient(base_url="http://127.0.0.1:9", max_retries=0) as client:
        with pytest.raises(InfinityConnectionError, match=r"127\.0\.0\.1:9"):
            client.embed(["a"])


# --- sharing ---------------------------------------------------------------------------------


def test_one_client_shared_by_many_threads(
    client: InfinityClient, infinity_server: ServerInfo
) -> None:
    reference = client.embed(TEXTS, model=infinity_server.embed_model).embeddings

    def work(n: int) -> bool:
        got = client.embed(TEXTS, model=infinity_server.embed_model).embeddings
        ranked = client.rerank("cat", TEXTS, model=infinity_server.rerank_model)
        return len(ranked) == len(TEXTS) and all(
            cosine(a, b) > 0.9999 for a, b in zip(got, reference, strict=True)
        )

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(work, range(16)))


async def test_one_client_shared_by_many_tasks(
    aclient: InfinityClient, infinity_server: ServerInfo
) -> None:
    reference = (await aclient.aembed(TEXTS, model=infinity_server.embed_model)).embeddings
    results = await asyncio.gather(
        *(aclient.aembed(TEXTS, model=infinity_server.embed_model) for _ in range(16))
    )
    for result in results:
        assert all(cosine(a, b) > 0.9999 for a, b in zip(result.embeddings, reference, strict=True))
