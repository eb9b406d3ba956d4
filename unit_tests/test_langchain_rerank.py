"""InfinityRerank against FakeInfinity (httpx.MockTransport): no socket is opened."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.load import dumpd, dumps
from langchain_core.vectorstores import InMemoryVectorStore
from pydantic import ValidationError

from infinity_rag import AuthenticationError, ModelCapabilityError, ModelNotFoundError
from infinity_rag.langchain import InfinityEmbeddings, InfinityRerank
from unit_tests.conftest import FAKE_URL, make_client
from unit_tests.fake_infinity import FakeInfinity, score_for

SECRET = "sk-very-secret-infinity-key"
QUERY = "which planet is red"
TEXTS = [
    "the sun is a star",
    "mars is the red planet",
    "a red apple",
    "which planet is the largest",
    "oceans cover the earth",
]


def _reranker(fake: FakeInfinity, **kwargs: Any) -> InfinityRerank:
    kwargs.setdefault("model", "reranker")
    kwargs.setdefault("base_url", FAKE_URL)
    return InfinityRerank(
        http_client=httpx.Client(transport=fake.transport()),
        http_async_client=httpx.AsyncClient(transport=fake.async_transport()),
        **kwargs,
    )


def _docs() -> list[Document]:
    return [
        Document(page_content=text, metadata={"source": f"s{i}", "tags": ["x"]}, id=f"id-{i}")
        for i, text in enumerate(TEXTS)
    ]


def _expected_order(texts: list[str]) -> list[int]:
    return sorted(range(len(texts)), key=lambda i: (-score_for(QUERY, texts[i]), i))


# --- compress_documents ----------------------------------------------------------------------


def test_compress_documents_returns_top_n_by_relevance_with_scores(fake: FakeInfinity) -> None:
    docs = _docs()

    ranked = _reranker(fake).compress_documents(docs, QUERY)

    order = _expected_order(TEXTS)[:3]
    assert [d.page_content for d in ranked] == [TEXTS[i] for i in order]
    assert [d.id for d in ranked] == [f"id-{i}" for i in order]
    scores = [d.metadata["relevance_score"] for d in ranked]
    assert scores == [score_for(QUERY, TEXTS[i]) for i in order]
    assert scores == sorted(scores, reverse=True)
    assert all(d.metadata["source"] == f"s{i}" for d, i in zip(ranked, order, strict=True))
    assert fake.bodies == [
        {"model": "reranker", "query": QUERY, "documents": TEXTS, "top_n": 3,
         "return_documents": False}
    ]  # fmt: skip


def test_compress_documents_does_not_mutate_the_callers_documents(fake: FakeInfinity) -> None:
    docs = _docs()
    before = copy.deepcopy(docs)

    ranked = _reranker(fake, top_n=None).compress_documents(docs, QUERY)
    for doc in ranked:
        doc.metadata["tags"].append("changed downstream")

    assert docs == before
    assert all("relevance_score" not in d.metadata for d in docs)
    assert all(r is not d for r in ranked for d in docs)


async def test_acompress_documents_is_native_and_matches_sync(fake: FakeInfinity) -> None:
    def no_sync(request: httpx.Request) -> httpx.Response:
        raise AssertionError("the async path must not fall back to the sync client")

    async_only = InfinityRerank(
        model="reranker",
        base_url=FAKE_URL,
        http_client=httpx.Client(transport=httpx.MockTransport(no_sync)),
        http_async_client=httpx.AsyncClient(transport=fake.async_transport()),
    )

    async_ranked = await async_only.acompress_documents(_docs(), QUERY)
    sync_ranked = _reranker(fake).compress_documents(_docs(), QUERY)

    assert async_ranked == sync_ranked
    assert len(async_ranked) == 3


def test_no_documents_means_no_request(fake: FakeInfinity) -> None:
    assert _reranker(fake).compress_documents([], QUERY) == []
    assert fake.requests == []


async def test_async_no_documents_means_no_request(fake: FakeInfinity) -> None:
    assert await _reranker(fake).acompress_documents([], QUERY) == []
    assert fake.requests == []


def test_top_n_none_keeps_all_and_is_not_sent(fake: FakeInfinity) -> None:
    ranked = _reranker(fake, top_n=None).compress_documents(_docs(), QUERY)

    assert [d.page_content for d in ranked] == [TEXTS[i] for i in _expected_order(TEXTS)]
    assert "top_n" not in fake.bodies[0]


def test_top_n_larger_than_the_documents_returns_them_all(fake: FakeInfinity) -> None:
    ranked = _reranker(fake, top_n=50).compress_documents(_docs()[:2], QUERY)

    assert len(ranked) == 2
    assert fake.bodies[0]["top_n"] == 2


def test_score_threshold_drops_low_scores(fake: FakeInfinity) -> None:
    # Documents sharing a word with the query score >= 1; "oceans cover the earth" does not.
    ranked = _reranker(fake, top_n=None, score_threshold=1.0).compress_documents(_docs(), QUERY)

    kept = [i for i in _expected_order(TEXTS) if score_for(QUERY, TEXTS[i]) >= 1.0]
    assert [d.page_content for d in ranked] == [TEXTS[i] for i in kept]
    assert len(ranked) == len(TEXTS) - 1
    assert all(d.metadata["relevance_score"] >= 1.0 for d in ranked)


def test_raw_scores_and_extra_body_reach_the_request(fake: FakeInfinity) -> None:
    _reranker(fake, raw_scores=True, extra_body={"custom": True}).compress_documents(_docs(), QUERY)

    assert fake.bodies[0]["raw_scores"] is True
    assert fake.bodies[0]["custom"] is True


def test_large_document_lists_are_split_and_merged(fake: FakeInfinity) -> None:
    texts = [f"planet number {i}" + " red" * (i % 3) for i in range(7)]
    docs = [Document(page_content=t) for t in texts]

    ranked = _reranker(fake, batch_size=3, top_n=4).compress_documents(docs, QUERY)

    assert [len(b["documents"]) for b in fake.bodies] == [3, 3, 1]
    assert [d.page_content for d in ranked] == [texts[i] for i in _expected_order(texts)[:4]]


def test_batch_size_default_is_the_clients(fake: FakeInfinity) -> None:
    reranker = InfinityRerank(model="reranker", client=make_client(fake, rerank_batch_size=2))

    reranker.compress_documents(_docs(), QUERY)

    assert [len(b["documents"]) for b in fake.bodies] == [2, 2, 1]


# --- rerank ----------------------------------------------------------------------------------


def test_rerank_returns_index_and_score_for_strings_and_documents(fake: FakeInfinity) -> None:
    mixed: list[str | Document] = [TEXTS[0], Document(page_content=TEXTS[1]), *TEXTS[2:]]

    results = _reranker(fake).rerank(mixed, QUERY, top_n=None)

    order = _expected_order(TEXTS)
    assert results == [{"index": i, "relevance_score": score_for(QUERY, TEXTS[i])} for i in order]


def test_rerank_top_n_defaults_to_the_instances(fake: FakeInfinity) -> None:
    reranker = _reranker(fake, top_n=2)

    assert len(reranker.rerank(TEXTS, QUERY)) == 2
    assert len(reranker.rerank(TEXTS, QUERY, top_n=4)) == 4
    assert len(reranker.rerank(TEXTS, QUERY, top_n=None)) == 5
    assert [b.get("top_n") for b in fake.bodies] == [2, 4, None]


async def test_arerank_matches_rerank(fake: FakeInfinity) -> None:
    reranker = _reranker(fake)

    assert await reranker.arerank(TEXTS, QUERY, top_n=4) == reranker.rerank(TEXTS, QUERY, top_n=4)
    assert fake.bodies[0] == fake.bodies[1]


def test_rerank_of_nothing_is_empty(fake: FakeInfinity) -> None:
    assert _reranker(fake).rerank([], QUERY) == []
    assert fake.requests == []


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda r: r.compress_documents(["a string"], QUERY), TypeError, r"documents\[0\]"),
        (lambda r: r.compress_documents(Document(page_content="x"), QUERY), TypeError, "list"),
        (lambda r: r.compress_documents(_docs(), None), TypeError, "query must be a string"),
        (lambda r: r.compress_documents(_docs(), "q" * 200_000), ValueError, "at most"),
        (lambda r: r.rerank("a string", QUERY), TypeError, "list of strings or Documents"),
        (lambda r: r.rerank(["ok", 1], QUERY), TypeError, r"documents\[1\]"),
        (lambda r: r.rerank(TEXTS, QUERY, top_n=0), ValueError, "top_n"),
        (lambda r: r.rerank(TEXTS, QUERY, top_n=-5), ValueError, "top_n"),
    ],
)
def test_bad_input_raises_before_any_request(
    fake: FakeInfinity, call: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        call(_reranker(fake))
    assert fake.requests == []


async def test_async_bad_input_raises_before_any_request(fake: FakeInfinity) -> None:
    with pytest.raises(TypeError, match=r"documents\[1\]"):
        await _reranker(fake).acompress_documents([Document(page_content="a"), 3], QUERY)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="query must be a string"):
        await _reranker(fake).arerank(TEXTS, 3)  # type: ignore[arg-type]
    assert fake.requests == []


# --- configuration ---------------------------------------------------------------------------


def test_defaults() -> None:
    reranker = InfinityRerank(model="reranker")

    assert isinstance(reranker, BaseDocumentCompressor)
    assert reranker.top_n == 3
    assert reranker.raw_scores is False
    assert reranker.score_threshold is None
    assert reranker.infinity_api_base == "http://localhost:7997"
    assert reranker.infinity_api_key is None


def test_env_configures_the_reranker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFINITY_API_BASE", "http://env.test:7997/")
    monkeypatch.setenv("INFINITY_API_KEY", "env-key")

    reranker = InfinityRerank(model="reranker")

    assert reranker.infinity_api_base == "http://env.test:7997"
    assert reranker.infinity_api_key is not None
    assert reranker.infinity_api_key.get_secret_value() == "env-key"
    assert reranker._client.base_url == "http://env.test:7997"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"unknown": 1}, "unknown"),
        ({"top_n": 0}, "top_n"),
        ({"batch_size": 4096}, "batch_size"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_retries": -1}, "max_retries"),
        ({"base_url": "ftp://host"}, "base_url"),
    ],
)
def test_bad_settings_raise_at_construction(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        InfinityRerank(model="reranker", **kwargs)


def test_shared_client_serves_embedder_and_reranker(fake: FakeInfinity) -> None:
    client = make_client(fake)
    embeddings = InfinityEmbeddings(model="embedder", client=client)
    reranker = InfinityRerank(model="reranker", client=client)

    embeddings.embed_query("x")
    reranker.compress_documents(_docs(), QUERY)

    assert embeddings._client is reranker._client is client
    assert [r.url.path for r in fake.requests] == ["/embeddings", "/rerank"]
    with pytest.raises(TypeError, match="max_retries cannot be combined with client="):
        InfinityRerank(model="reranker", client=client, max_retries=3)


# --- the key is a secret ---------------------------------------------------------------------


def test_key_never_in_repr_or_serialized() -> None:
    reranker = InfinityRerank(model="reranker", api_key=SECRET)

    data = dumpd(reranker)

    assert SECRET not in repr(reranker)
    assert SECRET not in str(reranker)
    assert SECRET not in dumps(reranker)
    assert SECRET not in json.dumps(data)
    assert data["kwargs"]["infinity_api_key"]["id"] == ["INFINITY_API_KEY"]


def test_auth_error_does_not_contain_the_key() -> None:
    fake = FakeInfinity(api_key="right-key")

    with pytest.raises(AuthenticationError) as info:
        _reranker(fake, api_key=SECRET).compress_documents(_docs(), QUERY)
    assert SECRET not in str(info.value)


# --- errors a user sees ----------------------------------------------------------------------


def test_unknown_model_raises_model_not_found(fake: FakeInfinity) -> None:
    with pytest.raises(ModelNotFoundError, match="not-served"):
        _reranker(fake, model="not-served").compress_documents(_docs(), QUERY)


async def test_embedding_model_used_as_reranker_raises_capability_error(
    fake: FakeInfinity,
) -> None:
    with pytest.raises(ModelCapabilityError, match="does not support `rerank`"):
        await _reranker(fake, model="embedder").acompress_documents(_docs(), QUERY)


# --- in a retriever --------------------------------------------------------------------------


async def test_contextual_compression_retriever_sync_and_async(fake: FakeInfinity) -> None:
    client = make_client(fake)
    store = InMemoryVectorStore(InfinityEmbeddings(model="embedder", client=client))
    store.add_documents(_docs())
    retriever = ContextualCompressionRetriever(
        base_compressor=InfinityRerank(model="reranker", client=client, top_n=2),
        base_retriever=store.as_retriever(search_kwargs={"k": 5}),
    )

    sync_docs = retriever.invoke(QUERY)
    async_docs = await retriever.ainvoke(QUERY)

    assert [d.page_content for d in sync_docs] == [TEXTS[i] for i in _expected_order(TEXTS)[:2]]
    assert async_docs == sync_docs
    assert all("relevance_score" in d.metadata for d in sync_docs)
