"""LlamaIndex on a real PostgreSQL with pgvector: llama-index-vector-stores-postgres'
``PGVectorStore`` with ``InfinityEmbedding`` and ``InfinityRerank``, sync and async, against a
real Infinity server. The store speaks psycopg 3 for both its sync and its async engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.schema import TextNode
from llama_index.vector_stores.postgres import PGVectorStore

from infinity_rag import InfinityClient
from infinity_rag.llama_index import InfinityEmbedding, InfinityRerank
from infinity_rag.testing import LocalPostgres
from integration_tests.conftest import ServerInfo
from integration_tests.postgres_helpers import (
    count_rows,
    drop_tables,
    max_abs_diff,
    unique_name,
    vectors_by_text,
)
from integration_tests.test_langchain_pipelines import QUESTIONS, _corpus


@pytest.fixture(scope="module")
def nodes() -> list[TextNode]:
    return [
        TextNode(text=chunk.page_content, metadata=dict(chunk.metadata), id_=f"chunk-{i}")
        for i, chunk in enumerate(_corpus())
    ]


@pytest.fixture(scope="module")
async def shared_client(infinity_server: ServerInfo) -> AsyncIterator[InfinityClient]:
    async with InfinityClient(base_url=infinity_server.url, api_key=infinity_server.api_key) as c:
        yield c


@pytest.fixture(scope="module")
def embed_model(infinity_server: ServerInfo, shared_client: InfinityClient) -> InfinityEmbedding:
    return InfinityEmbedding(model_name=infinity_server.embed_model, client=shared_client)


@pytest.fixture(scope="module")
def rerank(infinity_server: ServerInfo, shared_client: InfinityClient) -> InfinityRerank:
    return InfinityRerank(model=infinity_server.rerank_model, client=shared_client, top_n=3)


def pg_store(postgres: LocalPostgres, dim: int) -> PGVectorStore:
    url = postgres.sqlalchemy_url()
    return PGVectorStore.from_params(
        connection_string=url,
        async_connection_string=url,
        table_name=unique_name("li"),
        embed_dim=dim,
    )


@pytest.fixture
def store(postgres: LocalPostgres, infinity_server: ServerInfo) -> Iterator[PGVectorStore]:
    store = pg_store(postgres, infinity_server.dim)
    yield store
    drop_tables(postgres.uri, f"data_{store.table_name}")


def _check_rows(
    postgres: LocalPostgres,
    store: PGVectorStore,
    nodes: list[TextNode],
    client: InfinityClient,
    model: str,
) -> None:
    """One row per node, each with the vector Infinity gives its text (the metadata, embedded
    with it by default, is left out here so that the row's text is what was embedded)."""
    table = f"data_{store.table_name}"
    texts = [n.text for n in nodes]
    stored, copies = vectors_by_text(
        postgres.uri, table, text_column="text", vector_column="embedding"
    )
    assert count_rows(postgres.uri, table) == len(nodes)
    assert copies == {text: 1 for text in texts}
    reference = client.embed(texts, model=model)
    assert max(max_abs_diff(stored[t], v) for t, v in zip(texts, reference, strict=True)) < 1e-5


def _plain(nodes: list[TextNode]) -> list[TextNode]:
    """Copies that embed their text alone (the topic stays in the metadata, for filtering)."""
    return [n.model_copy(update={"excluded_embed_metadata_keys": list(n.metadata)}) for n in nodes]


async def test_sync_index_retrieve_and_rerank(
    postgres: LocalPostgres,
    store: PGVectorStore,
    embed_model: InfinityEmbedding,
    rerank: InfinityRerank,
    shared_client: InfinityClient,
    nodes: list[TextNode],
    infinity_server: ServerInfo,
) -> None:
    plain = _plain(nodes)
    index = VectorStoreIndex(
        plain,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed_model,
    )

    _check_rows(postgres, store, plain, shared_client, infinity_server.embed_model)
    assert all(n.embedding is None for n in nodes)  # the caller's nodes are not touched

    found = index.as_retriever(similarity_top_k=5).retrieve(QUESTIONS["astronomy"])
    assert [n.node.metadata["topic"] for n in found] == ["astronomy"] * 5

    engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=12, node_postprocessors=[rerank])
    question = QUESTIONS["finance"]
    response = engine.query(question)
    candidates = index.as_retriever(similarity_top_k=12).retrieve(question)
    expected = rerank.postprocess_nodes(candidates, query_str=question)
    assert len(response.source_nodes) == 3
    assert [n.node_id for n in response.source_nodes] == [n.node_id for n in expected]
    assert [n.score for n in response.source_nodes] == pytest.approx(
        [n.score for n in expected], abs=1e-5
    )
    assert all(n.node.metadata["topic"] == "finance" for n in response.source_nodes)
    await store.close()


async def test_async_index_retrieve_and_rerank(
    postgres: LocalPostgres,
    store: PGVectorStore,
    embed_model: InfinityEmbedding,
    rerank: InfinityRerank,
    shared_client: InfinityClient,
    nodes: list[TextNode],
    infinity_server: ServerInfo,
) -> None:
    plain = _plain(nodes)
    index = VectorStoreIndex.from_vector_store(store, embed_model=embed_model)
    await index.ainsert_nodes(plain)

    _check_rows(postgres, store, plain, shared_client, infinity_server.embed_model)

    found = await index.as_retriever(similarity_top_k=5).aretrieve(QUESTIONS["cooking"])
    assert [n.node.metadata["topic"] for n in found] == ["cooking"] * 5

    engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=12, node_postprocessors=[rerank])
    question = QUESTIONS["gardening"]
    aresponse = await engine.aquery(question)
    response = engine.query(question)
    assert len(aresponse.source_nodes) == 3
    assert [n.node_id for n in aresponse.source_nodes] == [n.node_id for n in response.source_nodes]
    scores = [n.score or 0.0 for n in aresponse.source_nodes]
    assert scores == sorted(scores, reverse=True)
    assert all(n.node.metadata["topic"] == "gardening" for n in aresponse.source_nodes)

    # Deleting nodes by id removes exactly their rows.
    await store.adelete_nodes(node_ids=[n.node_id for n in plain[:10]])
    assert count_rows(postgres.uri, f"data_{store.table_name}") == len(plain) - 10
    await store.close()
