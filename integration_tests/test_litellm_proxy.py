"""The client and the four framework classes through a LiteLLM proxy in front of Infinity.

``litellm --config`` (``litellm[proxy]==1.106.12``, its own venv, no database) serves each
Infinity model as ``infinity/NAME`` under the same name, behind a master key. What LiteLLM does
differently from Infinity (see docs/litellm.md), and how the client copes:

* ``/embeddings``: no ``id`` / ``created``; ``dimensions`` is renamed ``output_dimension``,
  which Infinity ignores, so the client truncates the full vectors itself.
* ``/rerank``: Cohere's shape, documents as ``{"text": ...}`` objects, no ``model`` / ``usage``;
  ``raw_scores`` is dropped silently.
* errors: Infinity's error wrapped in LiteLLM's message; a wrong key is a 400 "No connected
  db." and a missing one a plain-text 500; no ``/classify`` route (404).
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Iterator
from typing import Any

import pytest

from infinity_rag import (
    InfinityClient,
    InvalidRequestError,
    InvalidResponseError,
    ModelCapabilityError,
    ModelNotFoundError,
    NotFoundError,
    ServerError,
)
from infinity_rag._pool import RetryPolicy
from integration_tests.conftest import ServerInfo
from integration_tests.litellm_fixtures import LiteLLMProxy, LiteLLMUnavailable

TEXTS = ["The cat sat on the mat.", "Paris is the capital of France.", "", "Bread is baked."]


@pytest.fixture(scope="module")
def litellm(infinity_server: ServerInfo) -> Iterator[LiteLLMProxy]:
    proxy = LiteLLMProxy(
        infinity_server.url,
        infinity_server.api_key,
        [infinity_server.embed_model, infinity_server.rerank_model, infinity_server.classify_model],
        unreachable=["down"],
    )
    try:
        proxy.start()
    except LiteLLMUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"LiteLLM could not be installed: {exc}")
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def via(litellm: LiteLLMProxy) -> Iterator[InfinityClient]:
    """A client talking to LiteLLM with its master key (no retries: errors show at once)."""
    with InfinityClient(base_url=litellm.url, api_key=litellm.master_key, max_retries=0) as c:
        yield c


@pytest.fixture
def direct(infinity_server: ServerInfo) -> Iterator[InfinityClient]:
    with InfinityClient(base_url=infinity_server.url, api_key=infinity_server.api_key) as c:
        yield c


def close(a: list[list[float]], b: list[list[float]], tol: float = 1e-5) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and max(abs(p - q) for p, q in zip(x, y, strict=True)) <= tol
        for x, y in zip(a, b, strict=True)
    )


# --- embeddings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding_format", ["base64", "float"])
def test_embeddings_equal_infinitys_own(
    via: InfinityClient,
    direct: InfinityClient,
    infinity_server: ServerInfo,
    encoding_format: Any,
) -> None:
    model = infinity_server.embed_model
    proxied = via.embed(TEXTS, model=model, encoding_format=encoding_format)
    assert close(proxied.embeddings, direct.embed(TEXTS, model=model).embeddings)
    assert proxied.model == model
    assert proxied.usage.prompt_tokens > 0


async def test_async_embeddings_in_chunks_come_back_whole_and_in_order(
    litellm: LiteLLMProxy, direct: InfinityClient, infinity_server: ServerInfo
) -> None:
    texts = [f"proxied sentence {i}" for i in range(300)]
    async with InfinityClient(
        base_url=litellm.url, api_key=litellm.master_key, batch_size=64
    ) as client:
        proxied = await client.aembed(texts, model=infinity_server.embed_model)
    assert close(
        proxied.embeddings, direct.embed(texts, model=infinity_server.embed_model).embeddings
    )


def test_dimensions_are_applied_although_litellm_drops_them(
    via: InfinityClient, direct: InfinityClient, infinity_server: ServerInfo
) -> None:
    model = infinity_server.embed_model
    short = via.embed(TEXTS, model=model, dimensions=32).embeddings
    full = direct.embed(TEXTS, model=model).embeddings
    assert [len(v) for v in short] == [32] * len(TEXTS)
    assert close(short, [v[:32] for v in full])


def test_dimensions_past_the_model_size_are_refused_through_litellm_too(
    via: InfinityClient, infinity_server: ServerInfo
) -> None:
    with pytest.raises((InvalidRequestError, InvalidResponseError)):
        via.embed(TEXTS, model=infinity_server.embed_model, dimensions=infinity_server.dim + 1)


# --- rerank -------------------------------------------------------------------------------------


@pytest.mark.parametrize("return_documents", [False, True])
@pytest.mark.parametrize("top_n", [None, 2])
def test_rerank_equals_infinitys_own(
    via: InfinityClient,
    direct: InfinityClient,
    infinity_server: ServerInfo,
    top_n: int | None,
    return_documents: bool,
) -> None:
    model = infinity_server.rerank_model
    args: dict[str, Any] = {"model": model, "top_n": top_n, "return_documents": return_documents}
    proxied = via.rerank("capital of France", TEXTS, **args)
    own = direct.rerank("capital of France", TEXTS, **args)
    assert [r.index for r in proxied] == [r.index for r in own]
    assert [r.relevance_score for r in proxied] == pytest.approx(
        [r.relevance_score for r in own], abs=1e-5
    )
    # LiteLLM sends documents as {"text": ...}; the client reads them as strings. (An empty
    # document comes back without its text: LiteLLM drops falsy documents.)
    expected_docs = [(TEXTS[r.index] or None) if return_documents else None for r in proxied]
    assert [r.document for r in proxied] == expected_docs
    assert len(proxied) == (top_n or len(TEXTS))


def test_rerank_across_chunks_is_merged_through_litellm(
    litellm: LiteLLMProxy, direct: InfinityClient, infinity_server: ServerInfo
) -> None:
    documents = [f"document {i} about topic {i % 7}" for i in range(50)]
    model = infinity_server.rerank_model
    with InfinityClient(
        base_url=litellm.url, api_key=litellm.master_key, rerank_batch_size=16
    ) as client:
        merged = client.rerank("topic 3", documents, model=model, top_n=10)
    own = direct.rerank("topic 3", documents, model=model, top_n=10)
    assert [r.index for r in merged] == [r.index for r in own]


def test_raw_scores_are_dropped_by_litellm(
    via: InfinityClient, direct: InfinityClient, infinity_server: ServerInfo
) -> None:
    # Documented in docs/litellm.md: LiteLLM 1.106.12 does not forward raw_scores, so the
    # scores stay sigmoid probabilities. This test notices when LiteLLM starts forwarding it.
    model = infinity_server.rerank_model
    proxied = via.rerank("cats", TEXTS, model=model, raw_scores=True)
    normalised = direct.rerank("cats", TEXTS, model=model)
    logits = direct.rerank("cats", TEXTS, model=model, raw_scores=True)
    assert [r.relevance_score for r in proxied] == pytest.approx(
        [r.relevance_score for r in normalised], abs=1e-5
    )
    assert [1 / (1 + math.exp(-r.relevance_score)) for r in logits] == pytest.approx(
        [r.relevance_score for r in proxied], abs=1e-4
    )


def test_models_have_no_capabilities_through_litellm(
    via: InfinityClient, infinity_server: ServerInfo
) -> None:
    models = {m.id: m for m in via.models()}
    assert {infinity_server.embed_model, infinity_server.rerank_model} <= set(models)
    assert all(m.capabilities == frozenset() for m in models.values())


def test_health_and_a_v1_prefix_work(litellm: LiteLLMProxy, infinity_server: ServerInfo) -> None:
    with InfinityClient(base_url=f"{litellm.url}/v1", api_key=litellm.master_key) as client:
        assert client.health() is True
        assert len(client.embed(["x"], model=infinity_server.embed_model)) == 1
        assert len(client.rerank("q", ["x"], model=infinity_server.rerank_model)) == 1


# --- errors -------------------------------------------------------------------------------------


def test_an_unknown_model_is_model_not_found(via: InfinityClient) -> None:
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        via.embed(["x"], model="no-such-model")
    with pytest.raises(ModelNotFoundError):
        via.rerank("q", ["x"], model="no-such-model")


def test_a_model_without_the_capability_is_a_capability_error_with_infinitys_words(
    via: InfinityClient, infinity_server: ServerInfo
) -> None:
    with pytest.raises(ModelCapabilityError, match="does not support `rerank`") as caught:
        via.rerank("q", ["x"], model=infinity_server.embed_model)
    assert caught.value.status_code == 400
    assert len(caught.value.message) <= 400


def test_an_infinity_server_that_is_down_is_a_server_error_and_retried(
    litellm: LiteLLMProxy, caplog: pytest.LogCaptureFixture
) -> None:
    client = InfinityClient(base_url=litellm.url, api_key=litellm.master_key, max_retries=1)
    client.retry = RetryPolicy(max_retries=1, initial_delay=0.01, max_delay=0.02)
    with client, pytest.raises(ServerError, match="APIConnectionError") as caught:
        client.embed(["x"], model="down")
    assert caught.value.status_code == 500
    assert any("retry 1 of 1" in r.getMessage() for r in caplog.records)


def test_classify_has_no_route_in_litellm(via: InfinityClient, infinity_server: ServerInfo) -> None:
    with pytest.raises(NotFoundError):
        via.classify(["x"], model=infinity_server.classify_model)


def test_a_missing_key_is_litellms_plain_500(
    litellm: LiteLLMProxy, infinity_server: ServerInfo
) -> None:
    # LiteLLM 1.106.12 without a database answers a request without a key with a plain-text
    # 500 "Internal Server Error": a ServerError (retried like any 5xx), documented.
    with (
        InfinityClient(base_url=litellm.url, max_retries=0) as client,
        pytest.raises(ServerError, match="Internal Server Error"),
    ):
        client.embed(["x"], model=infinity_server.embed_model)


def test_a_wrong_key_is_litellms_no_connected_db(
    litellm: LiteLLMProxy, infinity_server: ServerInfo
) -> None:
    wrong = "sk-not-the-master-key"
    from infinity_rag import AuthenticationError

    # InvalidRequestError today; AuthenticationError once the client recognises it (below).
    with (
        InfinityClient(base_url=litellm.url, api_key=wrong, max_retries=0) as client,
        pytest.raises(
            (InvalidRequestError, AuthenticationError), match="No connected db"
        ) as caught,
    ):
        client.embed(["x"], model=infinity_server.embed_model)
    assert wrong not in str(caught.value)
    assert litellm.master_key not in str(caught.value)


def test_a_wrong_key_is_an_authentication_error(
    litellm: LiteLLMProxy, infinity_server: ServerInfo
) -> None:
    from infinity_rag import AuthenticationError

    with (
        InfinityClient(base_url=litellm.url, api_key="sk-wrong", max_retries=0) as client,
        pytest.raises(AuthenticationError),
    ):
        client.embed(["x"], model=infinity_server.embed_model)


def test_an_unsupported_parameter_is_an_invalid_request(
    via: InfinityClient, infinity_server: ServerInfo
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        via.embed(["x"], model=infinity_server.embed_model, extra_body={"user": "someone"})
    assert not isinstance(caught.value, ModelCapabilityError)


def test_an_unsupported_parameter_is_refused_with_litellms_words(
    via: InfinityClient, infinity_server: ServerInfo
) -> None:
    with pytest.raises(InvalidRequestError, match="UnsupportedParamsError"):
        via.embed(["x"], model=infinity_server.embed_model, extra_body={"user": "someone"})


# --- the framework classes through LiteLLM ------------------------------------------------------


def test_langchain_classes_through_litellm(
    litellm: LiteLLMProxy, direct: InfinityClient, infinity_server: ServerInfo
) -> None:
    from langchain_core.documents import Document

    from infinity_rag.langchain import InfinityEmbeddings, InfinityRerank

    connection = {"base_url": litellm.url, "api_key": litellm.master_key}
    embeddings = InfinityEmbeddings(model=infinity_server.embed_model, **connection)
    own = direct.embed(TEXTS, model=infinity_server.embed_model).embeddings
    assert close(embeddings.embed_documents(TEXTS), own)
    assert close([asyncio.run(embeddings.aembed_query(TEXTS[1]))], [own[1]])

    reranker = InfinityRerank(model=infinity_server.rerank_model, top_n=2, **connection)
    docs = [Document(page_content=t, metadata={"i": i}) for i, t in enumerate(TEXTS)]
    ranked = reranker.compress_documents(docs, "capital of France")
    best = direct.rerank("capital of France", TEXTS, model=infinity_server.rerank_model, top_n=2)
    assert [d.metadata["i"] for d in ranked] == [r.index for r in best]
    assert [d.metadata["relevance_score"] for d in ranked] == pytest.approx(
        [r.relevance_score for r in best], abs=1e-5
    )
    scores = asyncio.run(reranker.arerank(TEXTS, "capital of France", top_n=None))
    assert len(scores) == len(TEXTS)


def test_llama_index_classes_through_litellm(
    litellm: LiteLLMProxy, direct: InfinityClient, infinity_server: ServerInfo
) -> None:
    from llama_index.core.schema import NodeWithScore, TextNode

    from infinity_rag.llama_index import InfinityEmbedding, InfinityRerank

    connection = {"base_url": litellm.url, "api_key": litellm.master_key}
    embedding = InfinityEmbedding(model_name=infinity_server.embed_model, **connection)
    own = direct.embed(TEXTS, model=infinity_server.embed_model).embeddings
    assert close(embedding.get_text_embedding_batch(TEXTS), own)
    assert close([asyncio.run(embedding.aget_query_embedding(TEXTS[1]))], [own[1]])

    reranker = InfinityRerank(model=infinity_server.rerank_model, top_n=2, **connection)
    nodes = [
        NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.0) for i, t in enumerate(TEXTS)
    ]
    ranked = reranker.postprocess_nodes(nodes, query_str="capital of France")
    best = direct.rerank("capital of France", TEXTS, model=infinity_server.rerank_model, top_n=2)
    assert [n.node.node_id for n in ranked] == [str(r.index) for r in best]
    ranked_async = asyncio.run(reranker.apostprocess_nodes(nodes, query_str="capital of France"))
    assert [n.node.node_id for n in ranked_async] == [str(r.index) for r in best]


def test_framework_errors_through_litellm(
    litellm: LiteLLMProxy, infinity_server: ServerInfo
) -> None:
    from infinity_rag.langchain import InfinityEmbeddings
    from infinity_rag.llama_index import InfinityRerank

    connection = {"base_url": litellm.url, "api_key": litellm.master_key, "max_retries": 0}
    with pytest.raises(ModelNotFoundError):
        InfinityEmbeddings(model="no-such-model", **connection).embed_query("x")
    from llama_index.core.schema import NodeWithScore, TextNode

    with pytest.raises(ModelCapabilityError):
        InfinityRerank(model=infinity_server.embed_model, **connection).postprocess_nodes(
            [NodeWithScore(node=TextNode(text="x"))], query_str="q"
        )
