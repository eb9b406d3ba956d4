"""Late-interaction (ColBERT) reranking by MaxSim on the client, against FakeInfinity."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload, LlamaDebugHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.schema import NodeWithScore, TextNode

from infinity_rag import InfinityClient, ModelCapabilityError, VectorKindError, VectorShape
from infinity_rag._maxsim import maxsim_scores
from infinity_rag.langchain import InfinityRerank as LangChainRerank
from infinity_rag.llama_index import InfinityRerank as LlamaIndexRerank
from unit_tests.conftest import make_client
from unit_tests.fake_infinity import FakeInfinity, matrix_for

QUERY = "what do cats eat"
TEXTS = [
    "cats eat fish",
    "a dog in the park",
    "what cats eat depends on the cat",
    "fish",
    "markets fell today",
    "cats sleep all day",
    "eat",
]


@pytest.fixture
def fake() -> FakeInfinity:
    fake = FakeInfinity()
    fake.models["colbert"] = ["embed"]
    fake.multi_vector = {"colbert"}
    fake.models["packed"] = ["embed"]
    fake.packed = {"packed": "ubinary"}
    return fake


@pytest.fixture
def client(fake: FakeInfinity) -> Iterator[InfinityClient]:
    with make_client(fake, batch_size=3, rerank_batch_size=4) as c:
        yield c


def unit(matrix: list[list[float]]) -> list[np.ndarray]:
    rows = [np.array(row, dtype=np.float64) for row in matrix]
    return [row / n if (n := np.linalg.norm(row)) else row for row in rows]  # 0 stays 0


def reference(query: str, texts: list[str]) -> list[float]:
    """ColBERT's score, written out: normalise each token vector, then sum over the query's
    tokens the best dot product with a document token."""
    q = unit(matrix_for(query))
    docs = [unit(matrix_for(text)) for text in texts]
    return [float(sum(max(float(qi @ dj) for dj in d) for qi in q)) for d in docs]


def expected(texts: list[str], *, raw: bool = False) -> list[tuple[int, float]]:
    rows = len(matrix_for(QUERY))
    scores = [s if raw else s / rows for s in reference(QUERY, texts)]
    return sorted(enumerate(scores), key=lambda item: (-item[1], item[0]))


def pairs(result: Any) -> list[tuple[int, float]]:
    return [(item.index, item.relevance_score) for item in result]


def routes(fake: FakeInfinity) -> list[str]:
    return [request.url.path for request in fake.requests]


def assert_close(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-9, rtol=0)


# --- the score ---------------------------------------------------------------------------------


def test_maxsim_is_colberts_sum_of_best_cosines() -> None:
    query = np.array([[1.0, 0.0], [0.0, 2.0]])
    documents = [
        np.array([[3.0, 0.0]]),  # q0: cos 1, q1: cos 0
        np.array([[1.0, 1.0], [0.0, -5.0]]),  # q0: 1/sqrt2, q1: max(1/sqrt2, -1)
        np.array([[-1.0, 0.0], [0.0, 0.0]]),  # a zero row scores 0, not NaN
    ]
    scores = maxsim_scores(query, documents)
    np.testing.assert_allclose(scores, [1.0, 2 / np.sqrt(2), 0.0], atol=1e-12)
    # Normalised first: scaling token vectors changes nothing.
    scaled = maxsim_scores(query * 7, [d * 0.01 for d in documents])
    np.testing.assert_allclose(scaled, scores, atol=1e-12)


def test_maxsim_refuses_matrices_of_another_width() -> None:
    with pytest.raises(Exception, match="not rows of the query's 2 values"):
        maxsim_scores(np.ones((2, 2)), [np.ones((3, 4))])


# --- the client ----------------------------------------------------------------------------


def test_scores_equal_the_reference_best_first(client: InfinityClient) -> None:
    result = client.rerank(QUERY, TEXTS, model="colbert", late_interaction=True)
    assert_close(pairs(result), expected(TEXTS))
    assert result.model == "colbert"
    assert all(-1.0 <= item.relevance_score <= 1.0 for item in result)
    raw = client.rerank(QUERY, TEXTS, model="colbert", late_interaction=True, raw_scores=True)
    assert_close(pairs(raw), expected(TEXTS, raw=True))


def test_top_n_return_documents_and_usage(client: InfinityClient, fake: FakeInfinity) -> None:
    result = client.rerank(
        QUERY, TEXTS, model="colbert", late_interaction=True, top_n=2, return_documents=True
    )
    assert_close(pairs(result), expected(TEXTS)[:2])
    assert [item.document for item in result] == [TEXTS[i] for i, _ in expected(TEXTS)[:2]]
    chars = len(QUERY) + sum(len(text) for text in TEXTS)
    assert result.usage.prompt_tokens == chars  # the query's request and every document's
    assert len(client.rerank(QUERY, TEXTS, model="colbert", top_n=50)) == len(TEXTS)


def test_equal_scores_keep_the_documents_order(client: InfinityClient) -> None:
    result = client.rerank(QUERY, ["same", "other", "same"], model="colbert", top_n=None)
    ranked = [item.index for item in result]
    assert ranked.index(0) < ranked.index(2)
    assert result[ranked.index(0)].relevance_score == result[ranked.index(2)].relevance_score


def test_the_query_goes_first_alone_then_documents_in_embedding_chunks(
    client: InfinityClient, fake: FakeInfinity
) -> None:
    client.rerank(QUERY, TEXTS, model="colbert", late_interaction=True, max_concurrency=1)
    bodies = fake.bodies
    assert routes(fake) == ["/embeddings"] * 4  # no /rerank: the model is said to be ColBERT
    assert bodies[0]["input"] == [QUERY]
    # The client's embedding batch_size (3), not rerank_batch_size (4).
    assert [b["input"] for b in bodies[1:]] == [TEXTS[0:3], TEXTS[3:6], TEXTS[6:]]
    # The first request to an unknown model is JSON floats; once known, base64.
    assert bodies[0]["encoding_format"] == "float"
    assert bodies[-1]["encoding_format"] == "base64"
    fake.requests.clear()
    client.rerank(QUERY, TEXTS, model="colbert", batch_size=5, extra_body={"user": "u"})
    assert [len(b["input"]) for b in fake.bodies] == [1, 5, 2]
    assert {b["encoding_format"] for b in fake.bodies} == {"base64"}
    assert all(b["user"] == "u" for b in fake.bodies)


def test_chunks_in_flight_at_once_keep_their_order(fake: FakeInfinity) -> None:
    texts = [f"text number {i} about cats" + " eat" * (i % 4) for i in range(40)]
    with make_client(fake, batch_size=2, max_concurrency=4) as client:
        result = client.rerank(QUERY, texts, model="colbert", late_interaction=True)
    assert_close(pairs(result), expected(texts))


def test_no_documents_no_request(client: InfinityClient, fake: FakeInfinity) -> None:
    for late in (True, None):
        assert client.rerank(QUERY, [], model="colbert", late_interaction=late).results == []
    assert fake.requests == []


# --- which path ----------------------------------------------------------------------------


def test_detected_from_the_refusal_once_then_straight_to_maxsim(
    client: InfinityClient, fake: FakeInfinity
) -> None:
    first = client.rerank(QUERY, TEXTS, model="colbert", top_n=3)
    assert_close(pairs(first), expected(TEXTS)[:3])
    # 7 documents, rerank_batch_size 4: two /rerank chunks, refused; none was retried.
    assert routes(fake).count("/rerank") in (1, 2)
    assert routes(fake)[-4:] == ["/embeddings"] * 4
    assert client.vector_shape("colbert") == VectorShape(4, multi_vector=True)
    fake.requests.clear()
    second = client.rerank(QUERY, TEXTS, model="colbert", top_n=3)
    assert pairs(second) == pairs(first)
    assert "/rerank" not in routes(fake)


def test_a_model_known_to_give_matrices_goes_straight_to_maxsim(
    client: InfinityClient, fake: FakeInfinity
) -> None:
    client.embed_multi_vector(["x"], model="colbert")
    fake.requests.clear()
    client.rerank(QUERY, TEXTS[:2], model="colbert")
    assert routes(fake) == ["/embeddings", "/embeddings"]


def test_a_cross_encoder_costs_nothing_more(client: InfinityClient, fake: FakeInfinity) -> None:
    client.rerank(QUERY, TEXTS[:3], model="reranker")
    assert routes(fake) == ["/rerank"]


def test_late_interaction_false_keeps_the_servers_refusal(
    client: InfinityClient, fake: FakeInfinity
) -> None:
    with pytest.raises(ModelCapabilityError, match="does not support `rerank`"):
        client.rerank(QUERY, TEXTS, model="colbert", late_interaction=False)
    # Its two chunks (one may be cancelled when the other fails), neither retried.
    assert routes(fake) in (["/rerank"], ["/rerank", "/rerank"])


@pytest.mark.parametrize(("model", "kind"), [("embedder", "single-vector"), ("packed", "bit")])
def test_an_embedder_that_gives_no_matrices_cannot_rerank(
    client: InfinityClient, fake: FakeInfinity, model: str, kind: str
) -> None:
    with pytest.raises(ModelCapabilityError, match="does not support `rerank`") as caught:
        client.rerank(QUERY, TEXTS, model=model)
    assert f"returns {kind}" in str(caught.value)
    assert "cannot rerank by late interaction either" in str(caught.value)
    assert "/embeddings" in routes(fake)  # one query embedding told, no document was sent
    assert all(b.get("input", [QUERY]) == [QUERY] for b in fake.bodies if "input" in b)


def test_late_interaction_true_with_an_embedder_is_a_vector_kind_error(
    client: InfinityClient, fake: FakeInfinity
) -> None:
    with pytest.raises(VectorKindError, match="needs a multi-vector \\(ColBERT\\) model"):
        client.rerank(QUERY, TEXTS, model="embedder", late_interaction=True)
    assert len(fake.requests) == 1  # the query, as floats, told
    with pytest.raises(VectorKindError, match="returns single-vector embeddings"):
        client.rerank(QUERY, TEXTS, model="embedder", late_interaction=True)
    assert len(fake.requests) == 1  # known now: refused before any request


@pytest.mark.parametrize("value", ["yes", 1, 0])
def test_late_interaction_must_be_a_bool_or_none(
    client: InfinityClient, fake: FakeInfinity, value: Any
) -> None:
    with pytest.raises(TypeError, match="late_interaction must be True, False or None"):
        client.rerank(QUERY, TEXTS, model="colbert", late_interaction=value)
    assert fake.requests == []


def test_without_numpy_a_clear_error_before_any_request(
    client: InfinityClient, fake: FakeInfinity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "numpy", None)
    with pytest.raises(
        ImportError, match=r"late-interaction reranking .* needs numpy.*infinity-rag\[numpy\]"
    ):
        client.rerank(QUERY, TEXTS, model="colbert", late_interaction=True)
    assert fake.requests == []
    # A cross-encoder does not need numpy.
    assert len(client.rerank(QUERY, TEXTS[:2], model="reranker")) == 2


async def test_async_matches_sync_and_detects_the_same_way(
    client: InfinityClient, fake: FakeInfinity
) -> None:
    result = await client.arerank(QUERY, TEXTS, model="colbert", top_n=4)
    assert "/rerank" in routes(fake)
    assert_close(pairs(result), expected(TEXTS)[:4])
    assert pairs(result) == pairs(client.rerank(QUERY, TEXTS, model="colbert", top_n=4))
    with pytest.raises(ModelCapabilityError, match="cannot rerank by late interaction"):
        await client.arerank(QUERY, TEXTS, model="embedder")


# --- the frameworks --------------------------------------------------------------------------


def test_langchain_compresses_by_maxsim(client: InfinityClient, fake: FakeInfinity) -> None:
    docs = [Document(page_content=text, metadata={"n": i}) for i, text in enumerate(TEXTS)]
    before = [doc.model_dump() for doc in docs]
    reranker = LangChainRerank(model="colbert", client=client, top_n=3)
    ranked = reranker.compress_documents(docs, QUERY)
    want = expected(TEXTS)[:3]
    assert [doc.metadata["n"] for doc in ranked] == [i for i, _ in want]
    np.testing.assert_allclose(
        [doc.metadata["relevance_score"] for doc in ranked], [s for _, s in want], atol=1e-9
    )
    assert [doc.model_dump() for doc in docs] == before
    assert [d["index"] for d in reranker.rerank(TEXTS, QUERY, top_n=None)] == [
        i for i, _ in expected(TEXTS)
    ]
    threshold = LangChainRerank(
        model="colbert", client=client, top_n=None, score_threshold=want[1][1]
    )
    assert len(threshold.compress_documents(docs, QUERY)) == 2


async def test_langchain_async_and_explicit_setting(
    client: InfinityClient, fake: FakeInfinity
) -> None:
    docs = [Document(page_content=text) for text in TEXTS]
    reranker = LangChainRerank(model="colbert", client=client, late_interaction=True)
    ranked = await reranker.acompress_documents(docs, QUERY)
    assert [doc.page_content for doc in ranked] == [TEXTS[i] for i, _ in expected(TEXTS)[:3]]
    assert "/rerank" not in routes(fake)
    scores = await reranker.arerank(TEXTS, QUERY)
    assert [s["index"] for s in scores] == [i for i, _ in expected(TEXTS)[:3]]
    assert reranker.model_dump()["late_interaction"] is True


async def test_llama_index_postprocesses_by_maxsim_with_events(
    client: InfinityClient, fake: FakeInfinity, events: list[BaseEvent]
) -> None:
    nodes = [
        NodeWithScore(node=TextNode(text=text, id_=f"n{i}"), score=0.5)
        for i, text in enumerate(TEXTS)
    ]
    debug = LlamaDebugHandler()
    rerank = LlamaIndexRerank(
        model="colbert", client=client, top_n=3, callback_manager=CallbackManager([debug])
    )
    result = rerank.postprocess_nodes(nodes, query_str=QUERY)
    aresult = await rerank.apostprocess_nodes(nodes, query_str=QUERY)
    want = expected(TEXTS)[:3]
    for got in (result, aresult):
        assert [n.node.node_id for n in got] == [f"n{i}" for i, _ in want]
        np.testing.assert_allclose([n.score for n in got], [s for _, s in want], atol=1e-9)
    assert all(n.score == 0.5 for n in nodes)  # the caller's nodes are untouched
    starts = [e for e in events if isinstance(e, ReRankStartEvent)]
    ends = [e for e in events if isinstance(e, ReRankEndEvent)]
    assert [(s.top_n, s.model_name) for s in starts] == [(3, "colbert")] * 2
    assert [[n.node.node_id for n in e.nodes] for e in ends] == [
        [n.node.node_id for n in result],
        [n.node.node_id for n in aresult],
    ]
    assert len(debug.get_event_pairs(CBEventType.RERANKING)) == 2
    end_payload = debug.get_event_pairs(CBEventType.RERANKING)[1][1].payload
    assert end_payload is not None
    assert end_payload[EventPayload.NODES] == aresult
    assert json.loads(rerank.to_json())["late_interaction"] is None
