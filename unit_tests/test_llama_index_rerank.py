"""InfinityRerank against FakeInfinity (httpx.MockTransport, no socket)."""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload, LlamaDebugHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from infinity_rag import InfinityClient, ModelCapabilityError, ModelNotFoundError
from infinity_rag.llama_index import InfinityRerank
from unit_tests.conftest import FAKE_URL, make_client
from unit_tests.fake_infinity import FakeInfinity, score_for

SECRET = "sk-very-secret-key"
QUERY = "what do cats eat"
TEXTS = [
    "dogs chase balls in the park",
    "cats eat fish",
    "what cats eat depends on the cat",
    "the stock market fell today",
    "cats sleep",
]


@pytest.fixture
def shared(fake: FakeInfinity) -> Iterator[InfinityClient]:
    with make_client(fake) as client:
        yield client


@pytest.fixture
def nodes() -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(text=text, id_=f"n{i}"), score=1.0 - i / 10)
        for i, text in enumerate(TEXTS)
    ]


def reranker(client: InfinityClient, **kwargs: Any) -> InfinityRerank:
    kwargs.setdefault("model", "reranker")
    return InfinityRerank(client=client, **kwargs)


def expected_order(texts: list[str], query: str = QUERY) -> list[str]:
    return sorted(texts, key=lambda text: -score_for(query, text))


def snapshot(nodes: list[NodeWithScore]) -> list[dict[str, Any]]:
    return [n.model_dump() for n in nodes]


# --- reranking -----------------------------------------------------------------------------


async def test_rerank_sync_and_async_return_new_best_first_nodes(
    shared: InfinityClient, nodes: list[NodeWithScore]
) -> None:
    before = snapshot(nodes)
    rerank = reranker(shared, top_n=3)
    result = rerank.postprocess_nodes(nodes, query_str=QUERY)
    aresult = await rerank.apostprocess_nodes(nodes, query_bundle=QueryBundle(QUERY))

    assert [n.text for n in result] == expected_order(TEXTS)[:3]
    assert [n.score for n in result] == [score_for(QUERY, n.text) for n in result]
    assert [(n.node_id, n.score) for n in aresult] == [(n.node_id, n.score) for n in result]
    # New NodeWithScore objects; the caller's list and nodes are as they were.
    assert not any(r is n for r in result + aresult for n in nodes)
    assert snapshot(nodes) == before


async def test_async_rerank_never_uses_the_sync_client(
    fake: FakeInfinity, nodes: list[NodeWithScore]
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"sync HTTP call from an async path: {request.url}")

    client = InfinityClient(
        base_url=FAKE_URL,
        http_client=httpx.Client(transport=httpx.MockTransport(refuse)),
        http_async_client=httpx.AsyncClient(transport=fake.async_transport()),
    )
    result = await reranker(client).apostprocess_nodes(nodes, query_str=QUERY)
    assert [n.text for n in result] == expected_order(TEXTS)[:2]
    assert len(fake.requests) == 1


def test_default_top_n_is_two_and_none_keeps_all(
    shared: InfinityClient, nodes: list[NodeWithScore]
) -> None:
    assert len(reranker(shared).postprocess_nodes(nodes, query_str=QUERY)) == 2
    everything = reranker(shared, top_n=None).postprocess_nodes(nodes, query_str=QUERY)
    assert [n.text for n in everything] == expected_order(TEXTS)
    large = reranker(shared, top_n=50).postprocess_nodes(nodes, query_str=QUERY)
    assert len(large) == len(TEXTS)


def test_score_threshold_drops_low_scores(
    shared: InfinityClient, nodes: list[NodeWithScore]
) -> None:
    result = reranker(shared, top_n=None, score_threshold=1.0).postprocess_nodes(
        nodes, query_str=QUERY
    )
    assert result
    assert all(n.score is not None and n.score >= 1.0 for n in result)
    assert [n.text for n in result] == [
        t for t in expected_order(TEXTS) if score_for(QUERY, t) >= 1.0
    ]


def test_request_fields_are_forwarded(
    fake: FakeInfinity, shared: InfinityClient, nodes: list[NodeWithScore]
) -> None:
    rerank = reranker(shared, top_n=3, raw_scores=True, extra_body={"user": "u1"})
    rerank.postprocess_nodes(nodes, query_str=QUERY)
    assert fake.bodies == [
        {
            "model": "reranker",
            "query": QUERY,
            "documents": TEXTS,
            "top_n": 3,
            "raw_scores": True,
            "return_documents": False,
            "user": "u1",
        }
    ]


async def test_batch_size_splits_requests_and_merges_them(
    fake: FakeInfinity, shared: InfinityClient, nodes: list[NodeWithScore]
) -> None:
    rerank = reranker(shared, top_n=None, batch_size=2)
    result = rerank.postprocess_nodes(nodes, query_str=QUERY)
    # Sent concurrently, so in any order.
    assert sorted(len(body["documents"]) for body in fake.bodies) == [1, 2, 2]
    assert [n.text for n in result] == expected_order(TEXTS)
    assert [n.text for n in await rerank.apostprocess_nodes(nodes, query_str=QUERY)] == [
        n.text for n in result
    ]


def test_metadata_mode_picks_the_text_sent(fake: FakeInfinity, shared: InfinityClient) -> None:
    node = TextNode(
        text="body", metadata={"title": "T", "secret_note": "x"}, excluded_embed_metadata_keys=[]
    )
    node.excluded_llm_metadata_keys = ["secret_note"]
    nodes = [NodeWithScore(node=node, score=0.5)]
    for mode in (MetadataMode.NONE, MetadataMode.EMBED, MetadataMode.LLM):
        reranker(shared, metadata_mode=mode).postprocess_nodes(nodes, query_str=QUERY)
    sent = [body["documents"][0] for body in fake.bodies]
    assert sent == [
        "body",
        node.get_content(metadata_mode=MetadataMode.EMBED),
        node.get_content(metadata_mode=MetadataMode.LLM),
    ]
    assert "secret_note" in sent[1]
    assert "secret_note" not in sent[2]


async def test_keep_retrieval_score_annotates_copies(
    shared: InfinityClient, nodes: list[NodeWithScore]
) -> None:
    before = snapshot(nodes)
    rerank = reranker(shared, top_n=None, keep_retrieval_score=True)
    by_id = {n.node_id: n for n in nodes}
    for result in (
        rerank.postprocess_nodes(nodes, query_str=QUERY),
        await rerank.apostprocess_nodes(nodes, query_str=QUERY),
    ):
        for reranked in result:
            original = by_id[reranked.node_id]
            assert reranked.node is not original.node
            assert reranked.metadata["retrieval_score"] == original.score
            assert reranked.score == score_for(QUERY, reranked.text)
            # The score is for the application, not for the LLM's or the embedder's text.
            assert "retrieval_score" not in reranked.node.get_content(MetadataMode.LLM)
            assert "retrieval_score" not in reranked.node.get_content(MetadataMode.EMBED)
    assert snapshot(nodes) == before


def test_without_keep_retrieval_score_nodes_are_shared_not_copied(
    shared: InfinityClient, nodes: list[NodeWithScore]
) -> None:
    result = reranker(shared).postprocess_nodes(nodes, query_str=QUERY)
    originals = {id(n.node) for n in nodes}
    assert all(id(r.node) in originals for r in result)
    assert all("retrieval_score" not in r.metadata for r in result)


# --- edge cases and bad input --------------------------------------------------------------


async def test_no_nodes_is_an_empty_list_without_request_or_event(
    fake: FakeInfinity, shared: InfinityClient, events: list[BaseEvent]
) -> None:
    rerank = reranker(shared)
    assert rerank.postprocess_nodes([], query_str=QUERY) == []
    assert await rerank.apostprocess_nodes([], query_str=QUERY) == []
    assert fake.requests == []
    assert not [e for e in events if isinstance(e, ReRankStartEvent | ReRankEndEvent)]


async def test_a_missing_query_is_a_clear_error(
    fake: FakeInfinity, shared: InfinityClient, nodes: list[NodeWithScore]
) -> None:
    rerank = reranker(shared)
    with pytest.raises(ValueError, match="InfinityRerank needs a query"):
        rerank.postprocess_nodes(nodes)
    with pytest.raises(ValueError, match="InfinityRerank needs a query"):
        await rerank.apostprocess_nodes(nodes)
    with pytest.raises(ValueError, match="InfinityRerank needs a query"):
        rerank.postprocess_nodes([])
    assert fake.requests == []


def test_bad_nodes_fail_before_any_request(
    fake: FakeInfinity, shared: InfinityClient, nodes: list[NodeWithScore], events: list[BaseEvent]
) -> None:
    rerank = reranker(shared)
    with pytest.raises(TypeError, match=r"nodes\[1\] must be a NodeWithScore, got TextNode"):
        rerank.postprocess_nodes([nodes[0], TextNode(text="x")], query_str=QUERY)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="query has 200,000 characters"):
        rerank.postprocess_nodes(nodes, query_str="q" * 200_000)
    long_node = NodeWithScore(node=TextNode(text="x" * 200_000))
    with pytest.raises(ValueError, match=r"documents\[1\] has 200,000 characters"):
        rerank.postprocess_nodes([nodes[0], long_node], query_str=QUERY)
    assert fake.requests == []
    # Refused before the rerank started: no event either.
    assert not [e for e in events if isinstance(e, ReRankStartEvent)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": ""}, "model"),
        ({"top_n": 0}, "top_n"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 4096}, "batch_size"),
        ({"metadata_mode": "everything"}, "metadata_mode"),
        ({"max_concurrency": 0}, "max_concurrency"),
    ],
)
def test_bad_settings_fail_at_construction(kwargs: dict[str, Any], message: str) -> None:
    kwargs = {"model": "reranker", "api_key": SECRET, **kwargs}
    with pytest.raises(ValueError, match=message) as error:
        InfinityRerank(**kwargs)
    assert SECRET not in str(error.value)


def test_the_key_is_never_serialized_or_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    rerank = InfinityRerank(model="reranker", base_url=FAKE_URL, api_key=SECRET)
    assert InfinityRerank.class_name() == "InfinityRerank"
    for text in (repr(rerank), str(rerank), rerank.to_json(), json.dumps(rerank.to_dict())):
        assert SECRET not in text
    data = rerank.to_dict()
    assert "api_key" not in data
    assert data["class_name"] == "InfinityRerank"
    monkeypatch.setenv("INFINITY_API_KEY", "from-env")
    restored = InfinityRerank.from_json(rerank.to_json())
    assert restored.to_dict() == data
    assert restored.api_key is not None
    assert restored.api_key.get_secret_value() == "from-env"


def test_pickling_keeps_the_settings_and_builds_a_new_client(
    fake: FakeInfinity, caplog: pytest.LogCaptureFixture
) -> None:
    with make_client(fake, api_key=SECRET) as client:
        rerank = reranker(client, top_n=4, keep_retrieval_score=True)
        with caplog.at_level(logging.WARNING):
            copy = pickle.loads(pickle.dumps(rerank))
    assert caplog.records == []
    assert isinstance(copy, InfinityRerank)
    assert copy.to_dict() == rerank.to_dict()
    assert copy._client is not client
    assert copy._client.base_url == FAKE_URL
    assert copy.api_key is not None
    assert copy.api_key.get_secret_value() == SECRET


def test_server_errors_reach_the_user(shared: InfinityClient, nodes: list[NodeWithScore]) -> None:
    with pytest.raises(ModelNotFoundError, match=r"nope.*embedder"):
        reranker(shared, model="nope").postprocess_nodes(nodes, query_str=QUERY)
    with pytest.raises(ModelCapabilityError, match="does not support `rerank`"):
        reranker(shared, model="embedder").postprocess_nodes(nodes, query_str=QUERY)


# --- instrumentation -----------------------------------------------------------------------


async def test_rerank_events_spans_and_callbacks(
    shared: InfinityClient, nodes: list[NodeWithScore], events: list[BaseEvent]
) -> None:
    debug = LlamaDebugHandler()
    rerank = reranker(shared, top_n=3, callback_manager=CallbackManager([debug]))
    result = rerank.postprocess_nodes(nodes, query_str=QUERY)
    aresult = await rerank.apostprocess_nodes(nodes, query_str=QUERY)

    starts = [e for e in events if isinstance(e, ReRankStartEvent)]
    ends = [e for e in events if isinstance(e, ReRankEndEvent)]
    assert len(starts) == len(ends) == 2
    for start in starts:
        assert start.query is not None
        assert isinstance(start.query, QueryBundle)
        assert start.query.query_str == QUERY
        assert (start.top_n, start.model_name) == (3, "reranker")
        assert [n.node_id for n in start.nodes] == [n.node_id for n in nodes]
    assert [n.node_id for n in ends[0].nodes] == [n.node_id for n in result]
    assert [n.node_id for n in ends[1].nodes] == [n.node_id for n in aresult]
    # Each rerank runs inside its own dispatcher span, sync and async.
    assert starts[0].span_id is not None
    assert starts[0].span_id.startswith("InfinityRerank._postprocess_nodes-")
    assert starts[1].span_id is not None
    assert starts[1].span_id.startswith("InfinityRerank._apostprocess_nodes-")
    assert ends[1].span_id == starts[1].span_id

    pairs = debug.get_event_pairs(CBEventType.RERANKING)
    assert len(pairs) == 2
    start_payload, end_payload = pairs[1][0].payload, pairs[1][1].payload
    assert start_payload is not None
    assert end_payload is not None
    assert start_payload[EventPayload.MODEL_NAME] == "reranker"
    assert start_payload[EventPayload.QUERY_STR] == QUERY
    assert start_payload[EventPayload.TOP_K] == 3
    assert start_payload[EventPayload.NODES] == nodes
    assert end_payload[EventPayload.NODES] == aresult


def test_top_n_none_reports_every_node_in_the_start_event(
    shared: InfinityClient, nodes: list[NodeWithScore], events: list[BaseEvent]
) -> None:
    reranker(shared, top_n=None).postprocess_nodes(nodes, query_str=QUERY)
    (start,) = [e for e in events if isinstance(e, ReRankStartEvent)]
    assert start.top_n == len(nodes)


def test_a_failed_rerank_ends_no_event(
    fake: FakeInfinity, shared: InfinityClient, nodes: list[NodeWithScore], events: list[BaseEvent]
) -> None:
    debug = LlamaDebugHandler()
    rerank = reranker(shared, model="nope", callback_manager=CallbackManager([debug]))
    with pytest.raises(ModelNotFoundError):
        rerank.postprocess_nodes(nodes, query_str=QUERY)
    assert len([e for e in events if isinstance(e, ReRankStartEvent)]) == 1
    assert not [e for e in events if isinstance(e, ReRankEndEvent)]
    (pair,) = debug.get_event_pairs(CBEventType.RERANKING)
    assert pair[1].payload is not None
    assert isinstance(pair[1].payload[EventPayload.EXCEPTION], ModelNotFoundError)
