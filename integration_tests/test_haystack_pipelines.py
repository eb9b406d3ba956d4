"""The pipelines Haystack users build, end to end against a real Infinity server: an indexing
pipeline (``InfinityDocumentEmbedder`` -> ``DocumentWriter``) and a query pipeline
(``InfinityTextEmbedder`` -> embedding retriever -> ``InfinityRanker``), on Haystack's
``InMemoryDocumentStore`` and on PostgreSQL + pgvector through pgvector-haystack's
``PgvectorDocumentStore`` (the PostgreSQL the tests start); ``Pipeline.run`` and
``run_async``; pipelines saved to YAML, loaded back and run.

The embedder (MiniLM) is real: retrieval is checked on clearly distinct topics. The reranker
has seeded random weights: its output is checked against the server's own scores.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import pytest
from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever
from haystack.components.writers import DocumentWriter
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack.utils import Secret
from haystack_integrations.components.retrievers.pgvector import PgvectorEmbeddingRetriever
from haystack_integrations.document_stores.pgvector import PgvectorDocumentStore

from infinity_rag import InfinityClient
from infinity_rag.haystack import InfinityDocumentEmbedder, InfinityRanker, InfinityTextEmbedder
from infinity_rag.testing import LocalPostgres
from integration_tests.conftest import ServerInfo, close_enough
from integration_tests.postgres_helpers import (
    count_rows,
    drop_tables,
    max_abs_diff,
    unique_name,
    vectors_by_text,
)
from integration_tests.test_langchain_pipelines import QUESTIONS, TOPICS

RETRIEVE_K = 10
KEEP = 3
#: Haystack loads classes only from allowlisted modules (its own, haystack_integrations).
ALLOWED = ["infinity_rag.haystack"]


@pytest.fixture(scope="module")
def corpus() -> list[Document]:
    """Six distinct topics, one sentence a document (288), with the topic as meta."""
    return [
        Document(content=f"{subject} {predicate}.", meta={"topic": topic})
        for topic, (subjects, predicates) in TOPICS.items()
        for subject, predicate in itertools.product(subjects, predicates)
    ]


@pytest.fixture(scope="module")
def keyed(infinity_server: ServerInfo) -> Iterator[None]:
    """The key as Haystack users give it: ``INFINITY_API_KEY`` (Secret.from_env_var)."""
    saved = os.environ.get("INFINITY_API_KEY")
    if infinity_server.api_key:
        os.environ["INFINITY_API_KEY"] = infinity_server.api_key
    yield
    if saved is None:
        os.environ.pop("INFINITY_API_KEY", None)
    else:
        os.environ["INFINITY_API_KEY"] = saved


@pytest.fixture(autouse=True)
def _key_for_each_test(keyed: None, infinity_server: ServerInfo) -> None:
    # conftest's autouse _clean_env removes INFINITY_API_KEY before each test: put it back.
    if infinity_server.api_key:
        os.environ["INFINITY_API_KEY"] = infinity_server.api_key


def indexing(server: ServerInfo, store: Any) -> Pipeline:
    pipeline = Pipeline()
    pipeline.add_component(
        "embedder",
        InfinityDocumentEmbedder(
            server.embed_model, base_url=server.url, batch_size=64, progress_bar=False
        ),
    )
    pipeline.add_component("writer", DocumentWriter(document_store=store))
    pipeline.connect("embedder.documents", "writer.documents")
    return pipeline


def querying(server: ServerInfo, retriever: Any) -> Pipeline:
    pipeline = Pipeline()
    pipeline.add_component(
        "text_embedder", InfinityTextEmbedder(server.embed_model, base_url=server.url)
    )
    pipeline.add_component("retriever", retriever)
    pipeline.add_component(
        "ranker", InfinityRanker(server.rerank_model, base_url=server.url, top_k=KEEP)
    )
    pipeline.connect("text_embedder.embedding", "retriever.query_embedding")
    pipeline.connect("retriever.documents", "ranker.documents")
    return pipeline


def ask(question: str) -> dict[str, Any]:
    return {"text_embedder": {"text": question}, "ranker": {"query": question}}


def check_answers(
    server: ServerInfo, client: InfinityClient, outputs: dict[str, dict[str, Any]]
) -> dict[str, list[tuple[str, float]]]:
    """Each question's retrieved documents are of its topic first, and the ranker's are the
    best of them by the server's scores. Returns each topic's ranked (id, score)."""
    ranked_by_topic = {}
    for topic, output in outputs.items():
        retrieved = output["retriever"]["documents"]
        ranked = output["ranker"]["documents"]
        assert len(retrieved) == RETRIEVE_K
        assert retrieved[0].meta["topic"] == topic
        assert sum(d.meta["topic"] == topic for d in retrieved) >= RETRIEVE_K // 2
        want = client.rerank(
            QUESTIONS[topic], [d.content for d in retrieved], model=server.rerank_model, top_n=KEEP
        )
        assert [d.id for d in ranked] == [retrieved[item.index].id for item in want]
        assert [d.score for d in ranked] == pytest.approx([item.relevance_score for item in want])
        ranked_by_topic[topic] = [(d.id, d.score) for d in ranked]
    return ranked_by_topic


def check_stored(
    stored: dict[str, list[float]],
    corpus: list[Document],
    client: InfinityClient,
    server: ServerInfo,
) -> None:
    """Every document is stored once with the vector the server gives its text."""
    want = client.embed([d.content or "" for d in corpus], model=server.embed_model).embeddings
    assert len(stored) == len(corpus)
    worst = max(max_abs_diff(stored[d.content or ""], v) for d, v in zip(corpus, want, strict=True))
    assert worst < 1e-5


# --- InMemoryDocumentStore ---------------------------------------------------------------------


def test_in_memory_pipelines_with_run(
    infinity_server: ServerInfo, client: InfinityClient, corpus: list[Document]
) -> None:
    store = InMemoryDocumentStore(index=unique_name("haystack"))
    result = indexing(infinity_server, store).run({"embedder": {"documents": corpus}})
    assert result["writer"]["documents_written"] == len(corpus)
    assert all(d.embedding is None for d in corpus)  # the caller's documents are untouched
    check_stored(
        {d.content or "": d.embedding or [] for d in store.filter_documents()},
        corpus,
        client,
        infinity_server,
    )

    query = querying(infinity_server, InMemoryEmbeddingRetriever(store, top_k=RETRIEVE_K))
    outputs = {
        topic: query.run(ask(question), include_outputs_from={"retriever"})
        for topic, question in QUESTIONS.items()
    }
    check_answers(infinity_server, client, outputs)


async def test_in_memory_pipelines_with_run_async_match_run(
    infinity_server: ServerInfo, client: InfinityClient, corpus: list[Document]
) -> None:
    store = InMemoryDocumentStore(index=unique_name("haystack"))
    result = await indexing(infinity_server, store).run_async({"embedder": {"documents": corpus}})
    assert result["writer"]["documents_written"] == len(corpus)
    query = querying(infinity_server, InMemoryEmbeddingRetriever(store, top_k=RETRIEVE_K))
    outputs = {}
    for topic, question in QUESTIONS.items():
        outputs[topic] = await query.run_async(ask(question), include_outputs_from={"retriever"})
    ranked = check_answers(infinity_server, client, outputs)
    again = {
        topic: query.run(ask(question), include_outputs_from={"retriever"})
        for topic, question in QUESTIONS.items()
    }
    assert ids(check_answers(infinity_server, client, again)) == ids(ranked)


def ids(ranked: dict[str, list[tuple[str, float]]]) -> dict[str, list[str]]:
    return {topic: [doc_id for doc_id, _ in docs] for topic, docs in ranked.items()}


# --- PostgreSQL + pgvector (pgvector-haystack) -------------------------------------------------


@pytest.fixture(scope="module")
def pg_table(postgres: LocalPostgres) -> Iterator[str]:
    """A fresh table name, the connection string in ``PG_CONN_STR`` (pgvector-haystack's
    default Secret), and the table dropped at the end."""
    name = unique_name("haystack_docs")
    saved = os.environ.get("PG_CONN_STR")
    os.environ["PG_CONN_STR"] = postgres.uri
    yield name
    drop_tables(postgres.uri, name)
    if saved is None:
        os.environ.pop("PG_CONN_STR", None)
    else:
        os.environ["PG_CONN_STR"] = saved


def pg_store(table: str, *, recreate: bool = False) -> PgvectorDocumentStore:
    return PgvectorDocumentStore(
        connection_string=Secret.from_env_var("PG_CONN_STR"),
        table_name=table,
        embedding_dimension=384,
        vector_function="cosine_similarity",
        recreate_table=recreate,
        keyword_index_name=f"{table}_keyword_index",
    )


@pytest.fixture(scope="module")
async def pg_indexed(
    infinity_server: ServerInfo, keyed: None, pg_table: str, corpus: list[Document]
) -> str:
    """The corpus indexed into PostgreSQL by the indexing pipeline's ``run_async``."""
    if infinity_server.api_key:
        os.environ["INFINITY_API_KEY"] = infinity_server.api_key
    store = pg_store(pg_table, recreate=True)
    result = await indexing(infinity_server, store).run_async({"embedder": {"documents": corpus}})
    assert result["writer"]["documents_written"] == len(corpus)
    await store.close_async()
    store.close()
    return pg_table


def test_pgvector_rows_hold_the_servers_vectors(
    infinity_server: ServerInfo,
    client: InfinityClient,
    postgres: LocalPostgres,
    pg_indexed: str,
    corpus: list[Document],
) -> None:
    assert count_rows(postgres.uri, pg_indexed) == len(corpus)
    stored, counts = vectors_by_text(
        postgres.uri, pg_indexed, text_column="content", vector_column="embedding"
    )
    assert set(counts.values()) == {1}
    check_stored(stored, corpus, client, infinity_server)


async def test_pgvector_query_pipeline_with_run_and_run_async(
    infinity_server: ServerInfo, client: InfinityClient, pg_indexed: str
) -> None:
    store = pg_store(pg_indexed)
    query = querying(infinity_server, PgvectorEmbeddingRetriever(document_store=store, top_k=10))
    sync = {
        topic: query.run(ask(question), include_outputs_from={"retriever"})
        for topic, question in QUESTIONS.items()
    }
    asynchronous = {}
    for topic, question in QUESTIONS.items():
        asynchronous[topic] = await query.run_async(
            ask(question), include_outputs_from={"retriever"}
        )
    ranked_sync = check_answers(infinity_server, client, sync)
    assert ids(check_answers(infinity_server, client, asynchronous)) == ids(ranked_sync)
    await query.close_async()
    store.close()


def test_pipelines_saved_to_yaml_load_and_run(
    infinity_server: ServerInfo,
    client: InfinityClient,
    postgres: LocalPostgres,
    pg_indexed: str,
    corpus: list[Document],
) -> None:
    store = pg_store(pg_indexed)
    query = querying(infinity_server, PgvectorEmbeddingRetriever(document_store=store, top_k=10))
    yaml = query.dumps()
    for secret in (infinity_server.api_key, postgres.uri):
        assert not secret or secret not in yaml
    assert "INFINITY_API_KEY" in yaml
    assert "PG_CONN_STR" in yaml
    assert "infinity_rag.haystack.ranker.InfinityRanker" in yaml

    loaded = Pipeline.loads(yaml, allowed_modules=ALLOWED)
    assert loaded.to_dict()["components"] == query.to_dict()["components"]
    for question in QUESTIONS.values():
        want = query.run(ask(question))["ranker"]["documents"]
        got = loaded.run(ask(question))["ranker"]["documents"]
        assert [d.id for d in got] == [d.id for d in want]
        assert [d.score for d in got] == pytest.approx([d.score for d in want])

    # The indexing pipeline too: loaded from YAML, it adds documents with the server's vectors.
    more = [Document(content=f"Extra note {i} about the observatory.") for i in range(5)]
    index_yaml = indexing(infinity_server, store).dumps()
    written = Pipeline.loads(index_yaml, allowed_modules=ALLOWED).run(
        {"embedder": {"documents": more}}
    )
    assert written["writer"]["documents_written"] == len(more)
    assert count_rows(postgres.uri, pg_indexed) == len(corpus) + len(more)
    stored, _ = vectors_by_text(
        postgres.uri, pg_indexed, text_column="content", vector_column="embedding"
    )
    want = client.embed([d.content or "" for d in more], model=infinity_server.embed_model)
    assert close_enough([stored[d.content or ""] for d in more], want.embeddings)
    loaded.close()
    query.close()
