"""LangChain on a real PostgreSQL with pgvector: langchain-postgres' ``PGVectorStore`` with
``InfinityEmbeddings`` and ``InfinityRerank``, sync and async, against a real Infinity server.

``PGVectorStore`` (``PGVector`` is deprecated since langchain-postgres 0.0.14) is async inside:
its sync methods run its coroutines on the ``PGEngine``'s own loop thread, so they reach
Infinity through ``aembed_documents`` on that loop; the async ones on the caller's loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_postgres import PGEngine, PGVectorStore

from infinity_rag import InfinityClient
from infinity_rag.langchain import InfinityEmbeddings, InfinityRerank
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
def chunks() -> list[Document]:
    return _corpus()


@pytest.fixture(scope="module")
async def engine(postgres: LocalPostgres) -> AsyncIterator[PGEngine]:
    engine = PGEngine.from_connection_string(postgres.sqlalchemy_url())
    yield engine
    await engine.close()


@pytest.fixture(scope="module")
async def shared_client(infinity_server: ServerInfo) -> AsyncIterator[InfinityClient]:
    async with InfinityClient(base_url=infinity_server.url, api_key=infinity_server.api_key) as c:
        yield c


@pytest.fixture(scope="module")
def embeddings(infinity_server: ServerInfo, shared_client: InfinityClient) -> InfinityEmbeddings:
    return InfinityEmbeddings(model=infinity_server.embed_model, client=shared_client)


@pytest.fixture(scope="module")
def reranker(infinity_server: ServerInfo, shared_client: InfinityClient) -> InfinityRerank:
    return InfinityRerank(model=infinity_server.rerank_model, client=shared_client, top_n=4)


def _check_rows(
    postgres: LocalPostgres, table: str, chunks: list[Document], client: InfinityClient, model: str
) -> None:
    """One row per chunk, each with the vector Infinity gives its text."""
    texts = [c.page_content for c in chunks]
    stored, copies = vectors_by_text(
        postgres.uri, table, text_column="content", vector_column="embedding"
    )
    assert count_rows(postgres.uri, table) == len(chunks)
    assert copies == {text: 1 for text in texts}
    reference = client.embed(texts, model=model)
    assert max(max_abs_diff(stored[t], v) for t, v in zip(texts, reference, strict=True)) < 1e-5


def _retriever(store: PGVectorStore, reranker: InfinityRerank) -> ContextualCompressionRetriever:
    return ContextualCompressionRetriever(
        base_compressor=reranker, base_retriever=store.as_retriever(search_kwargs={"k": 12})
    )


def test_sync_add_search_and_rerank(
    postgres: LocalPostgres,
    engine: PGEngine,
    embeddings: InfinityEmbeddings,
    reranker: InfinityRerank,
    shared_client: InfinityClient,
    chunks: list[Document],
    infinity_server: ServerInfo,
) -> None:
    table = unique_name("lc_sync")
    engine.init_vectorstore_table(table, infinity_server.dim)
    try:
        store = PGVectorStore.create_sync(engine, table_name=table, embedding_service=embeddings)
        ids = store.add_documents(chunks)

        assert len(set(ids)) == len(chunks)
        _check_rows(postgres, table, chunks, shared_client, infinity_server.embed_model)

        hits = store.similarity_search_with_score(QUESTIONS["cooking"], k=5)
        assert [doc.metadata["topic"] for doc, _ in hits] == ["cooking"] * 5
        distances = [score for _, score in hits]  # cosine distance: smaller is closer
        assert distances == sorted(distances)

        question = QUESTIONS["gardening"]
        candidates = store.as_retriever(search_kwargs={"k": 12}).invoke(question)
        reranked = _retriever(store, reranker).invoke(question)
        expected = reranker.rerank(candidates, question)
        assert len(reranked) == 4
        assert [d.page_content for d in reranked] == [
            candidates[r["index"]].page_content for r in expected
        ]
        assert [d.metadata["relevance_score"] for d in reranked] == pytest.approx(
            [r["relevance_score"] for r in expected], abs=1e-5
        )
        assert all(d.metadata["topic"] == "gardening" for d in reranked)
        assert all("relevance_score" not in d.metadata for d in candidates)
    finally:
        drop_tables(postgres.uri, table)


async def test_async_add_search_and_rerank(
    postgres: LocalPostgres,
    engine: PGEngine,
    embeddings: InfinityEmbeddings,
    reranker: InfinityRerank,
    shared_client: InfinityClient,
    chunks: list[Document],
    infinity_server: ServerInfo,
) -> None:
    table = unique_name("lc_async")
    await engine.ainit_vectorstore_table(table, infinity_server.dim)
    try:
        store = await PGVectorStore.create(engine, table_name=table, embedding_service=embeddings)
        ids = await store.aadd_documents(chunks)

        assert len(set(ids)) == len(chunks)
        _check_rows(postgres, table, chunks, shared_client, infinity_server.embed_model)

        found = await store.asimilarity_search(QUESTIONS["football"], k=5)
        assert [d.metadata["topic"] for d in found] == ["football"] * 5

        question = QUESTIONS["programming"]
        retriever = _retriever(store, reranker)
        async_docs = await retriever.ainvoke(question)
        sync_docs = retriever.invoke(question)
        assert len(async_docs) == 4
        assert [d.page_content for d in async_docs] == [d.page_content for d in sync_docs]
        scores = [d.metadata["relevance_score"] for d in async_docs]
        assert scores == sorted(scores, reverse=True)
        assert scores == pytest.approx([d.metadata["relevance_score"] for d in sync_docs], abs=1e-5)
        assert all(d.metadata["topic"] == "programming" for d in async_docs)

        # Deleting by id removes exactly those rows.
        await store.adelete(ids[:10])
        assert count_rows(postgres.uri, table) == len(chunks) - 10
    finally:
        drop_tables(postgres.uri, table)
