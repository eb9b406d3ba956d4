"""Late-interaction reranking and the stores that use Infinity's other vectors, for real.

One ``vector_kinds_server`` (module scope, about 10 s) serves ``colbert`` (MiniLM in ColBERT
mode), ``minilm`` and ``minilm-ubinary``; Qdrant runs in local mode, PostgreSQL is the real
one of the ``postgres`` fixture (pgvector 0.8.5).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
from langchain_core.documents import Document
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.schema import NodeWithScore, TextNode
from qdrant_client import QdrantClient

from infinity_rag import InfinityClient, ModelCapabilityError
from infinity_rag.langchain import InfinityRerank as LangChainRerank
from infinity_rag.llama_index import InfinityRerank as LlamaIndexRerank
from infinity_rag.testing import LocalPostgres
from integration_tests.conftest import ServerInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import binary_pgvector
import colbert_qdrant

QUERY = "How do I parse a JSON document?"
TEXTS = [
    "json.loads deserializes a str containing a JSON document to a Python object.",
    "shutil.copytree recursively copies an entire directory tree.",
    "Parse the JSON text and return the decoded object.",
    "textwrap.fill wraps a single paragraph of text.",
    "The JSON encoder turns Python objects into JSON strings.",
    "random.choice returns a random element from a non-empty sequence.",
    "",
    "Late interaction keeps one vector per token.",
]


@pytest.fixture
def kinds(vector_kinds_server: ServerInfo) -> Iterator[InfinityClient]:
    with InfinityClient(
        base_url=vector_kinds_server.url, api_key=vector_kinds_server.api_key
    ) as client:
        yield client


def reference(client: InfinityClient, query: str, texts: list[str], batch_size: int) -> list[float]:
    """ColBERT's MaxSim from the raw matrices, in numpy: rows normalised, then per document
    the sum over query tokens of the best dot product, divided by the query's tokens."""
    q = client.embed_multi_vector([query], model="colbert", as_numpy=True)[0].astype(np.float64)
    docs = client.embed_multi_vector(texts, model="colbert", as_numpy=True, batch_size=batch_size)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    scores = []
    for matrix in docs:
        d = matrix.astype(np.float64)
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        scores.append(float(np.sum(np.max(q @ d.T, axis=1))) / len(q))
    return scores


def ranked(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


# --- reranking ---------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [None, 3])
def test_rerank_scores_equal_a_numpy_maxsim_of_the_raw_matrices(
    kinds: InfinityClient, batch_size: int | None
) -> None:
    result = kinds.rerank(QUERY, TEXTS, model="colbert", batch_size=batch_size, top_n=None)
    want = reference(kinds, QUERY, TEXTS, batch_size or kinds.batch_size)
    assert [item.index for item in result] == ranked(want)
    got = {item.index: item.relevance_score for item in result}
    np.testing.assert_allclose([got[i] for i in range(len(TEXTS))], want, atol=1e-6, rtol=0)
    assert result.model == "colbert"
    assert result.usage.prompt_tokens > 0
    raw = kinds.rerank(QUERY, TEXTS, model="colbert", raw_scores=True, top_n=3)
    rows = kinds.embed_multi_vector([QUERY], model="colbert", as_numpy=True)[0].shape[0]
    assert [item.index for item in raw] == ranked(want)[:3]
    np.testing.assert_allclose(
        [item.relevance_score for item in raw],
        [want[i] * rows for i in ranked(want)[:3]],
        atol=1e-5,
        rtol=0,
    )


def test_detected_once_from_infinity_s_refusal(vector_kinds_server: ServerInfo) -> None:
    sent: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda r: sent.append(r.url.path)]})
    with InfinityClient(
        base_url=vector_kinds_server.url, api_key=vector_kinds_server.api_key, http_client=http
    ) as client:
        first = client.rerank(QUERY, TEXTS, model="colbert", top_n=2)
        assert sent == ["/rerank", "/embeddings", "/embeddings"]  # refused; query; documents
        second = client.rerank(QUERY, TEXTS, model="colbert", top_n=2)
        assert sent[3:] == ["/embeddings", "/embeddings"]
        # The first documents' request was JSON floats (the model unknown), the second base64.
        np.testing.assert_allclose(
            [i.relevance_score for i in first], [i.relevance_score for i in second], atol=1e-6
        )
        with pytest.raises(ModelCapabilityError, match="cannot rerank by late interaction"):
            client.rerank(QUERY, TEXTS, model="minilm")


async def test_async_matches_sync(kinds: InfinityClient) -> None:
    sync = kinds.rerank(QUERY, TEXTS, model="colbert", top_n=None)
    result = await kinds.arerank(QUERY, TEXTS, model="colbert", top_n=None)
    assert [i.index for i in result] == [i.index for i in sync]
    np.testing.assert_allclose(
        [i.relevance_score for i in result], [i.relevance_score for i in sync], atol=1e-6
    )


async def test_the_framework_rerankers_take_a_colbert_model(
    kinds: InfinityClient, events: list[BaseEvent]
) -> None:
    want = reference(kinds, QUERY, TEXTS, kinds.batch_size)
    best = ranked(want)[:3]
    docs = [Document(page_content=text, metadata={"n": i}) for i, text in enumerate(TEXTS)]
    langchain = LangChainRerank(model="colbert", client=kinds, top_n=3)
    for got in (
        langchain.compress_documents(docs, QUERY),
        await langchain.acompress_documents(docs, QUERY),
    ):
        assert [doc.metadata["n"] for doc in got] == best
        np.testing.assert_allclose(
            [doc.metadata["relevance_score"] for doc in got], [want[i] for i in best], atol=1e-6
        )
    assert all("relevance_score" not in doc.metadata for doc in docs)

    nodes = [NodeWithScore(node=TextNode(text=t, id_=f"n{i}")) for i, t in enumerate(TEXTS)]
    llama = LlamaIndexRerank(model="colbert", client=kinds, top_n=3)
    for got_nodes in (
        llama.postprocess_nodes(nodes, query_str=QUERY),
        await llama.apostprocess_nodes(nodes, query_str=QUERY),
    ):
        assert [n.node.node_id for n in got_nodes] == [f"n{i}" for i in best]
        np.testing.assert_allclose([n.score for n in got_nodes], [want[i] for i in best], atol=1e-6)
    starts = [e for e in events if isinstance(e, ReRankStartEvent)]
    ends = [e for e in events if isinstance(e, ReRankEndEvent)]
    assert [(e.model_name, e.top_n) for e in starts] == [("colbert", 3)] * 2
    assert [[n.node.node_id for n in e.nodes] for e in ends] == [[f"n{i}" for i in best]] * 2


# --- Qdrant multivectors -----------------------------------------------------------------------


def test_qdrant_maxsim_over_colbert_matrices_matches_the_reranker(kinds: InfinityClient) -> None:
    qdrant = QdrantClient(":memory:")
    try:
        colbert_qdrant.ingest(kinds, qdrant, "docs", TEXTS, model="colbert")
        hits = colbert_qdrant.search(kinds, qdrant, "docs", QUERY, model="colbert", limit=4)
    finally:
        qdrant.close()
    raw = kinds.rerank(QUERY, TEXTS, model="colbert", raw_scores=True, top_n=4)
    # Qdrant's MAX_SIM over cosines is ColBERT's sum: the reranker's raw scores (float32 there).
    assert [int(hit.id) for hit in hits] == [item.index for item in raw]
    np.testing.assert_allclose(
        [hit.score for hit in hits], [item.relevance_score for item in raw], atol=1e-4, rtol=0
    )
    assert hits[0].payload is not None
    assert hits[0].payload["text"] == TEXTS[raw[0].index]


def test_the_qdrant_example_runs(
    vector_kinds_server: ServerInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--infinity-url", vector_kinds_server.url, "--docs", "60", "--limit", "3", QUERY]
    if vector_kinds_server.api_key:
        argv += ["--api-key", vector_kinds_server.api_key]
    assert colbert_qdrant.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert '"rank": 1' in lines[0]


# --- pgvector bits -----------------------------------------------------------------------------


@pytest.fixture
def table() -> str:
    return f"bits_{uuid.uuid4().hex[:12]}"


def test_pgvector_hamming_over_infinity_s_bits(
    kinds: InfinityClient,
    postgres: LocalPostgres,
    table: str,
    record_property: Callable[[str, object], None],
) -> None:
    texts = [p.text for p in binary_pgvector.load_corpus(binary_pgvector.MODULES, max_chars=400)]
    texts = texts[:150]
    with psycopg.connect(postgres.uri) as conn:
        binary_pgvector.ingest(
            conn, kinds, table, texts, packed_model="minilm-ubinary", float_model="minilm"
        )
        # Infinity's bits are pgvector's binary_quantize (bit = value > 0) of the float
        # vectors, except where a value is within float noise of 0 (batches pad differently).
        stored = conn.execute(
            f"SELECT bits::text, embedding::text, bits = binary_quantize(embedding)::bit(384) "
            f"FROM {table} ORDER BY id"
        ).fetchall()
        bits = np.array([[c == "1" for c in row[0]] for row in stored])
        floats = np.array([np.array(row[1][1:-1].split(","), dtype=np.float32) for row in stored])
        differ = bits != (floats > 0)
        assert np.all(np.abs(floats[differ]) < 1e-4)
        assert sum(not same for *_, same in stored) == int(differ.any(axis=1).sum())

        # SQL's Hamming distances are numpy's popcount of the xor, for the nearest rows.
        queries = binary_pgvector.QUERIES[:5]
        packed = kinds.embed_packed(queries, model="minilm-ubinary", as_numpy=True).bits()
        strings = binary_pgvector.query_bits(kinds, queries, packed_model="minilm-ubinary")
        for q, q_bits in zip(packed, strings, strict=True):
            found = binary_pgvector.search_hamming(conn, table, q_bits, limit=10)
            distances = (bits != q.astype(bool)).sum(axis=1)
            assert [d for _, d in found] == sorted(distances.tolist())[:10]
            assert all(distances[i] == d for i, d in found)

        measured = binary_pgvector.agreement(
            conn,
            kinds,
            table,
            binary_pgvector.QUERIES,
            packed_model="minilm-ubinary",
            float_model="minilm",
            k=10,
            candidates=40,
        )
        conn.execute(f"DROP TABLE {table}")
    record_property("agreement", measured)
    # Hamming finds most of the cosine top 10, and rescoring its top 40 by cosine finds more.
    assert measured["hamming_recall@10"] >= 0.5
    assert measured["rescored_recall@10"] >= measured["hamming_recall@10"]


def test_the_pgvector_example_runs(
    vector_kinds_server: ServerInfo,
    postgres: LocalPostgres,
    table: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [
        "--postgres-url",
        postgres.uri,
        "--infinity-url",
        vector_kinds_server.url,
        "--table",
        table,
        "--docs",
        "80",
        "--hnsw",
    ]
    if vector_kinds_server.api_key:
        argv += ["--api-key", vector_kinds_server.api_key]
    assert binary_pgvector.main(argv) == 0
    assert capsys.readouterr().out.strip() == '{"rows": 80}'
    with psycopg.connect(postgres.uri) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (80,)
        conn.execute(f"DROP TABLE {table}")
