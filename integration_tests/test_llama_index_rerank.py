"""InfinityRerank after real retrievers and inside query engines, against a real Infinity server.

The served reranker is seeded-random: its scores mean nothing, so these tests assert the
protocol (order, counts, top_n, events, sync == async, untouched inputs), not the ranking.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload, LlamaDebugHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.embedding import EmbeddingEndEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from infinity_rag import (
    AuthenticationError,
    InfinityClient,
    InfinityConnectionError,
    ModelCapabilityError,
    ModelNotFoundError,
)
from infinity_rag.llama_index import InfinityEmbedding, InfinityRerank
from integration_tests.conftest import ServerInfo

PASSAGES = [
    "The Eiffel Tower in Paris was completed in 1889.",
    "Photosynthesis turns sunlight into chemical energy in plants.",
    "Espresso is coffee brewed by forcing hot water through fine grounds.",
    "A black hole's gravity traps even light.",
    "The offside rule is one of football's most debated laws.",
    "Honeybees communicate the location of flowers with a waggle dance.",
    "Mount Everest is the highest mountain above sea level.",
    "The Great Barrier Reef is the world's largest coral reef system.",
]
QUESTION = "How do bees tell each other where flowers are?"


@pytest.fixture(scope="module")
def shared(infinity_server: ServerInfo) -> Iterator[InfinityClient]:
    """One client for the module's embedders and rerankers, as an application would hold."""
    with InfinityClient(base_url=infinity_server.url, api_key=infinity_server.api_key) as client:
        yield client


@pytest.fixture(scope="module")
def index(infinity_server: ServerInfo, shared: InfinityClient) -> VectorStoreIndex:
    # LlamaIndex's in-memory store serves both retrieve() and aretrieve() (Qdrant is tested
    # with the embedder).
    return VectorStoreIndex.from_documents(
        [Document(text=text) for text in PASSAGES],
        embed_model=InfinityEmbedding(model_name=infinity_server.embed_model, client=shared),
    )


def rerank_with(server: ServerInfo, client: InfinityClient, **kwargs: Any) -> InfinityRerank:
    return InfinityRerank(**{"model": server.rerank_model, "client": client, **kwargs})


def assert_reranked(result: list[NodeWithScore], retrieved: list[NodeWithScore], n: int) -> None:
    """Best first, ``n`` of them, each a new NodeWithScore around one of the retrieved nodes."""
    assert len(result) == n
    scores = [r.score for r in result]
    assert all(isinstance(s, float) and math.isfinite(s) for s in scores)
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    ids = {r.node_id for r in retrieved}
    assert all(r.node_id in ids for r in result)
    assert len({r.node_id for r in result}) == n
    assert not any(r is n_ for r in result for n_ in retrieved)


# --- after a retriever ---------------------------------------------------------------------


def test_retriever_then_rerank(
    infinity_server: ServerInfo, shared: InfinityClient, index: VectorStoreIndex
) -> None:
    retrieved = index.as_retriever(similarity_top_k=6).retrieve(QUESTION)
    before = [(n.node_id, n.score, dict(n.metadata)) for n in retrieved]

    result = rerank_with(infinity_server, shared, top_n=3).postprocess_nodes(
        retrieved, query_str=QUESTION
    )

    assert_reranked(result, retrieved, 3)
    assert [(n.node_id, n.score, dict(n.metadata)) for n in retrieved] == before
    # The same scores as asking the server directly.
    direct = shared.rerank(
        QUESTION,
        [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in retrieved],
        model="reranker",
    )
    assert [r.score for r in result] == pytest.approx(
        [item.relevance_score for item in direct.results[:3]]
    )


async def test_async_retriever_then_rerank_matches_sync(
    infinity_server: ServerInfo, shared: InfinityClient, index: VectorStoreIndex
) -> None:
    retriever = index.as_retriever(similarity_top_k=6)
    retrieved = await retriever.aretrieve(QUESTION)
    assert [n.node_id for n in retrieved] == [n.node_id for n in retriever.retrieve(QUESTION)]
    rerank = rerank_with(infinity_server, shared, top_n=4, keep_retrieval_score=True)

    aresult = await rerank.apostprocess_nodes(retrieved, query_bundle=QueryBundle(QUESTION))
    result = rerank.postprocess_nodes(retrieved, query_str=QUESTION)

    assert_reranked(aresult, retrieved, 4)
    assert [n.node_id for n in aresult] == [n.node_id for n in result]
    assert [n.score for n in aresult] == pytest.approx([n.score for n in result])
    by_id = {n.node_id: n.score for n in retrieved}
    assert all(n.metadata["retrieval_score"] == by_id[n.node_id] for n in aresult)
    assert all("retrieval_score" not in n.metadata for n in retrieved)


def test_raw_scores_threshold_and_small_batches(
    infinity_server: ServerInfo, shared: InfinityClient, index: VectorStoreIndex
) -> None:
    retrieved = index.as_retriever(similarity_top_k=8).retrieve(QUESTION)
    everything = rerank_with(infinity_server, shared, top_n=None, batch_size=3)
    result = everything.postprocess_nodes(retrieved, query_str=QUESTION)
    assert_reranked(result, retrieved, len(PASSAGES))
    assert all(0.0 <= (n.score or 0.0) <= 1.0 for n in result)

    one_batch = rerank_with(infinity_server, shared, top_n=None)
    assert [n.node_id for n in one_batch.postprocess_nodes(retrieved, query_str=QUESTION)] == [
        n.node_id for n in result
    ]

    # Between the 3rd and 4th scores: the best three pass (the server's batching moves
    # scores by ~1e-7, far less than the gap).
    third, fourth = result[2].score or 0.0, result[3].score or 0.0
    kept = rerank_with(infinity_server, shared, top_n=None, score_threshold=(third + fourth) / 2)
    kept_nodes = kept.postprocess_nodes(retrieved, query_str=QUESTION)
    assert [n.node_id for n in kept_nodes] == [n.node_id for n in result[:3]]

    raw = rerank_with(infinity_server, shared, top_n=None, raw_scores=True)
    raw_nodes = raw.postprocess_nodes(retrieved, query_str=QUESTION)
    assert [n.node_id for n in raw_nodes] == [n.node_id for n in result]
    # Raw logits are the inverse sigmoid of the scores.
    assert [1 / (1 + math.exp(-(n.score or 0.0))) for n in raw_nodes] == pytest.approx(
        [n.score for n in result], abs=1e-4
    )


# --- inside a query engine -----------------------------------------------------------------


async def test_query_engine_with_rerank_sync_and_async(
    infinity_server: ServerInfo,
    shared: InfinityClient,
    index: VectorStoreIndex,
    events: list[BaseEvent],
) -> None:
    rerank = rerank_with(infinity_server, shared, top_n=2)
    engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=5, node_postprocessors=[rerank])

    response = engine.query(QUESTION)
    aresponse = await engine.aquery(QUESTION)

    for answer in (response, aresponse):
        assert len(answer.source_nodes) == 2
        scores = [n.score or 0.0 for n in answer.source_nodes]
        assert scores == sorted(scores, reverse=True)
        # MockLLM echoes its prompt: the reranked passages are what the LLM was given.
        assert all(n.node.get_content() in str(answer) for n in answer.source_nodes)
    assert [n.node_id for n in aresponse.source_nodes] == [n.node_id for n in response.source_nodes]

    starts = [e for e in events if isinstance(e, ReRankStartEvent)]
    ends = [e for e in events if isinstance(e, ReRankEndEvent)]
    assert len(starts) == len(ends) == 2
    assert all(len(e.nodes) == 5 and e.top_n == 2 for e in starts)
    assert all(e.model_name == infinity_server.rerank_model for e in starts)
    assert [n.node_id for n in ends[0].nodes] == [n.node_id for n in response.source_nodes]
    assert ends[1].span_id is not None
    assert ends[1].span_id.startswith("InfinityRerank._apostprocess_nodes-")
    # The query engine embedded the question through the same instrumented embedder.
    assert any(isinstance(e, EmbeddingEndEvent) and e.chunks == [QUESTION] for e in events)


def test_query_engine_reranking_callback_events(
    infinity_server: ServerInfo, shared: InfinityClient, index: VectorStoreIndex
) -> None:
    debug = LlamaDebugHandler()
    # A query engine hands its callback manager to its postprocessors.
    engine = RetrieverQueryEngine.from_args(
        index.as_retriever(similarity_top_k=4),
        llm=MockLLM(),
        node_postprocessors=[rerank_with(infinity_server, shared, top_n=3)],
        callback_manager=CallbackManager([debug]),
    )
    response = engine.query(QUESTION)

    ((start, end),) = debug.get_event_pairs(CBEventType.RERANKING)
    assert start.payload is not None
    assert end.payload is not None
    assert start.payload[EventPayload.QUERY_STR] == QUESTION
    assert start.payload[EventPayload.TOP_K] == 3
    assert start.payload[EventPayload.MODEL_NAME] == infinity_server.rerank_model
    assert len(start.payload[EventPayload.NODES]) == 4
    assert [n.node_id for n in end.payload[EventPayload.NODES]] == [
        n.node_id for n in response.source_nodes
    ]


# --- what a user sees when something is wrong ----------------------------------------------


async def test_a_wrong_key_is_an_authentication_error(
    infinity_server: ServerInfo, index: VectorStoreIndex
) -> None:
    if infinity_server.api_key is None:
        pytest.skip("the server runs without --api-key")
    retrieved = index.as_retriever(similarity_top_k=2).retrieve(QUESTION)
    rerank = InfinityRerank(
        model=infinity_server.rerank_model,
        base_url=infinity_server.url,
        api_key="not-the-key",
        max_retries=0,
    )
    with pytest.raises(AuthenticationError, match="401") as error:
        rerank.postprocess_nodes(retrieved, query_str=QUESTION)
    with pytest.raises(AuthenticationError):
        await rerank.apostprocess_nodes(retrieved, query_str=QUESTION)
    assert "not-the-key" not in str(error.value)


async def test_unknown_or_wrong_models_are_clear_errors(
    infinity_server: ServerInfo, shared: InfinityClient, index: VectorStoreIndex
) -> None:
    retrieved = index.as_retriever(similarity_top_k=2).retrieve(QUESTION)
    with pytest.raises(ModelNotFoundError) as error:
        rerank_with(infinity_server, shared, model="no-such-reranker").postprocess_nodes(
            retrieved, query_str=QUESTION
        )
    assert infinity_server.rerank_model in str(error.value)
    engine = index.as_query_engine(
        llm=MockLLM(),
        node_postprocessors=[InfinityRerank(model=infinity_server.embed_model, client=shared)],
    )
    with pytest.raises(ModelCapabilityError, match="rerank"):
        await engine.aquery(QUESTION)


def test_an_unreachable_server_is_a_connection_error(index: VectorStoreIndex) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rerank = InfinityRerank(
        model="reranker", base_url=f"http://127.0.0.1:{port}", max_retries=0, timeout=5
    )
    retrieved = index.as_retriever(similarity_top_k=2).retrieve(QUESTION)
    with pytest.raises(InfinityConnectionError, match=f"cannot reach .*127.0.0.1:{port}"):
        rerank.postprocess_nodes(retrieved, query_str=QUESTION)
