"""InfinityRerank against a real Infinity server.

The served reranker has seeded random weights: its scores carry no meaning, so these tests
check the protocol (order, counts, top_n, metadata, sync == async), not the ranking's sense.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from langchain_core.documents import Document

from infinity_rag.langchain import InfinityRerank
from integration_tests.conftest import ServerInfo

QUERY = "Which planet is known as the red planet?"
TEXTS = [
    "Mars is called the red planet because of iron oxide on its surface.",
    "Jupiter is the largest planet in the solar system.",
    "Bake the bread for forty minutes.",
    "Venus is the hottest planet.",
    "The stock market fell on Monday.",
    "Saturn has bright rings of ice.",
    "Tomatoes need plenty of sun.",
    "A goal was scored in the last minute.",
]


def _reranker(server: ServerInfo, **kwargs: Any) -> InfinityRerank:
    kwargs.setdefault("model", server.rerank_model)
    return InfinityRerank(base_url=server.url, api_key=server.api_key, **kwargs)


def _docs() -> list[Document]:
    return [
        Document(page_content=text, metadata={"position": i, "nested": {"n": i}}, id=f"doc-{i}")
        for i, text in enumerate(TEXTS)
    ]


def _scores_by_index(results: list[dict[str, Any]]) -> dict[int, float]:
    return {r["index"]: r["relevance_score"] for r in results}


def test_compress_documents_keeps_the_top_n_sorted_with_scores(
    infinity_server: ServerInfo,
) -> None:
    docs = _docs()
    before = copy.deepcopy(docs)

    ranked = _reranker(infinity_server).compress_documents(docs, QUERY)

    assert len(ranked) == 3
    scores = [d.metadata["relevance_score"] for d in ranked]
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True)
    for doc in ranked:
        original = docs[doc.metadata["position"]]
        assert doc.page_content == original.page_content
        assert doc.id == original.id
        assert doc.metadata["nested"] == original.metadata["nested"]
    assert docs == before  # the caller's documents are untouched


def test_compressed_documents_are_the_best_scored_ones(infinity_server: ServerInfo) -> None:
    reranker = _reranker(infinity_server, top_n=None)

    everything = reranker.rerank(TEXTS, QUERY)
    ranked = reranker.compress_documents(_docs(), QUERY)

    assert sorted(r["index"] for r in everything) == list(range(len(TEXTS)))
    assert [d.metadata["position"] for d in ranked] == [r["index"] for r in everything]
    for doc, result in zip(ranked, everything, strict=True):
        assert math.isclose(doc.metadata["relevance_score"], result["relevance_score"])


def test_top_n_is_applied_by_the_server(infinity_server: ServerInfo) -> None:
    reranker = _reranker(infinity_server, top_n=5)

    all_scores = _scores_by_index(reranker.rerank(TEXTS, QUERY, top_n=None))
    top2 = reranker.rerank(TEXTS, QUERY, top_n=2)

    assert len(reranker.rerank(TEXTS, QUERY)) == 5
    assert len(top2) == 2
    best_two = sorted(all_scores.values(), reverse=True)[:2]
    assert [r["relevance_score"] for r in top2] == pytest.approx(best_two, abs=1e-5)
    assert len(reranker.rerank(TEXTS[:2], QUERY, top_n=10)) == 2


def test_rerank_accepts_strings_and_documents(infinity_server: ServerInfo) -> None:
    reranker = _reranker(infinity_server, top_n=None)

    from_strings = _scores_by_index(reranker.rerank(TEXTS, QUERY))
    from_documents = _scores_by_index(reranker.rerank(_docs(), QUERY))

    assert from_strings.keys() == from_documents.keys()
    for index, score in from_strings.items():
        assert math.isclose(score, from_documents[index], abs_tol=1e-5)


def test_raw_scores_are_the_logits_of_the_scores(infinity_server: ServerInfo) -> None:
    scores = _scores_by_index(_reranker(infinity_server, top_n=None).rerank(TEXTS, QUERY))
    raw = _scores_by_index(
        _reranker(infinity_server, top_n=None, raw_scores=True).rerank(TEXTS, QUERY)
    )

    for index, score in scores.items():
        assert math.isclose(1 / (1 + math.exp(-raw[index])), score, abs_tol=1e-5)


def test_score_threshold_drops_documents_below_it(infinity_server: ServerInfo) -> None:
    scores = sorted(
        _scores_by_index(_reranker(infinity_server, top_n=None).rerank(TEXTS, QUERY)).values(),
        reverse=True,
    )
    threshold = (scores[2] + scores[3]) / 2  # between the third and the fourth best

    ranked = _reranker(infinity_server, top_n=None, score_threshold=threshold).compress_documents(
        _docs(), QUERY
    )

    assert len(ranked) == 3
    assert all(d.metadata["relevance_score"] >= threshold for d in ranked)


def test_split_requests_merge_like_one(infinity_server: ServerInfo) -> None:
    whole = _scores_by_index(_reranker(infinity_server, top_n=None).rerank(TEXTS, QUERY))
    split = _reranker(infinity_server, top_n=None, batch_size=3).rerank(TEXTS, QUERY)

    assert [r["relevance_score"] for r in split] == sorted(
        (r["relevance_score"] for r in split), reverse=True
    )
    merged = _scores_by_index(split)
    assert merged.keys() == whole.keys()
    for index, score in whole.items():
        assert math.isclose(score, merged[index], abs_tol=1e-5)


async def test_async_matches_sync(infinity_server: ServerInfo) -> None:
    reranker = _reranker(infinity_server, top_n=4)

    sync_docs = reranker.compress_documents(_docs(), QUERY)
    async_docs = await reranker.acompress_documents(_docs(), QUERY)
    sync_scores = _scores_by_index(reranker.rerank(TEXTS, QUERY, top_n=None))
    async_scores = _scores_by_index(await reranker.arerank(TEXTS, QUERY, top_n=None))

    assert [d.page_content for d in async_docs] == [d.page_content for d in sync_docs]
    assert [d.metadata["relevance_score"] for d in async_docs] == pytest.approx(
        [d.metadata["relevance_score"] for d in sync_docs], abs=1e-5
    )
    assert async_scores == pytest.approx(sync_scores, abs=1e-5)


async def test_no_documents_give_no_documents(infinity_server: ServerInfo) -> None:
    reranker = _reranker(infinity_server)

    assert reranker.compress_documents([], QUERY) == []
    assert await reranker.acompress_documents([], QUERY) == []
    assert reranker.rerank([], QUERY) == []
