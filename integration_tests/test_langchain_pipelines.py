"""The retrieval pipelines LangChain users build, end to end against a real Infinity server.

Ingest a few hundred chunks into Qdrant (local mode) with InfinityEmbeddings, retrieve, rerank
with InfinityRerank in a ContextualCompressionRetriever (sync and async), cache embeddings with
CacheBackedEmbeddings, share one InfinityClient, and see the errors a user sees.

The embedder (MiniLM) is real: retrieval is checked on clearly distinct topics. The reranker
has seeded random weights: only its protocol is checked.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from langchain_classic.embeddings import CacheBackedEmbeddings
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.stores import InMemoryByteStore
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_qdrant import QdrantVectorStore
from langchain_text_splitters import RecursiveCharacterTextSplitter

from infinity_rag import (
    AuthenticationError,
    InfinityClient,
    InfinityConnectionError,
    ModelCapabilityError,
    ModelNotFoundError,
)
from infinity_rag.langchain import InfinityEmbeddings, InfinityRerank
from integration_tests.conftest import ServerInfo

# Six clearly distinct topics; each sentence = subject + predicate, so 6 x 48 sentences.
TOPICS: dict[str, tuple[list[str], list[str]]] = {
    "astronomy": (
        ["The telescope", "The astronomer", "The space probe", "The observatory",
         "The orbiting satellite", "The radio dish", "The planetarium", "The star chart"],
        ["revealed a distant spiral galaxy", "tracked a comet swinging around the sun",
         "measured the orbits of Jupiter's moons", "recorded a supernova explosion",
         "mapped craters on the far side of the moon", "found an exoplanet around a red dwarf"],
    ),
    "cooking": (
        ["The baker", "The chef", "The recipe", "Grandmother's cookbook", "The pastry cook",
         "The kitchen apprentice", "The food blogger", "The bakery"],
        ["kneads sourdough bread before baking it in a hot oven",
         "simmers tomato sauce with garlic and basil",
         "whisks eggs and sugar for a sponge cake", "roasts vegetables with olive oil and salt",
         "lets the pizza dough rise overnight", "melts butter and chocolate for brownies"],
    ),
    "football": (
        ["The striker", "The goalkeeper", "The referee", "The midfielder", "The coach",
         "The home team", "The captain", "The young defender"],
        ["scored a penalty in the final minute of the match",
         "saved a free kick in the cup final", "showed a red card after a rough tackle",
         "passed the ball through the defence to the winger",
         "trained the squad for the league season", "celebrated promotion with the fans"],
    ),
    "gardening": (
        ["The gardener", "The allotment holder", "The greenhouse", "The landscaper",
         "The flower bed", "The orchard keeper", "The compost heap", "The seed catalogue"],
        ["planted tulip bulbs in the autumn soil", "pruned the rose bushes in early spring",
         "watered the tomato seedlings every morning", "spread mulch around the fruit trees",
         "pulled weeds from between the lettuce rows", "sowed carrots and beans in raised beds"],
    ),
    "programming": (
        ["The software engineer", "The compiler", "The Python script", "The code reviewer",
         "The database migration", "The unit test suite", "The web server", "The debugger"],
        ["caught a null pointer exception in the parser",
         "refactored the function into smaller modules",
         "optimised the SQL query with an index", "fixed a race condition between threads",
         "merged the pull request after the build passed",
         "stepped through the stack trace of the crash"],
    ),
    "finance": (
        ["The central bank", "The investor", "The stock exchange", "The accountant",
         "The pension fund", "The mortgage lender", "The hedge fund", "The tax office"],
        ["raised interest rates to fight inflation",
         "bought government bonds with a fixed yield",
         "reported quarterly earnings and dividends", "audited the company's balance sheet",
         "diversified the portfolio across equities", "approved a loan at a variable rate"],
    ),
}  # fmt: skip

QUESTIONS = {
    "astronomy": "What did the telescope discover about galaxies and comets in space?",
    "cooking": "How do I bake bread and cakes in the kitchen oven?",
    "football": "Who scored the goal and got a red card in the soccer match?",
    "gardening": "When should I plant bulbs and prune roses in the garden?",
    "programming": "How do I debug exceptions and fix bugs in my code?",
    "finance": "Why did the bank raise interest rates and what happened to bonds?",
}


def _corpus() -> list[Document]:
    """Each topic as one long article, split into chunks the way users ingest documents."""
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=80, chunk_overlap=0, separators=[". "], keep_separator="end"
    )
    chunks: list[Document] = []
    for topic, (subjects, predicates) in TOPICS.items():
        article = ". ".join(f"{s} {p}" for s, p in itertools.product(subjects, predicates))
        chunks.extend(
            splitter.split_documents([Document(page_content=article, metadata={"topic": topic})])
        )
    return chunks


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _needs_key(server: ServerInfo) -> None:
    if not server.api_key:
        pytest.skip("the server runs without --api-key: a wrong key cannot be refused")


@pytest.fixture(scope="module")
def chunks() -> list[Document]:
    return _corpus()


@pytest.fixture(scope="module")
def embeddings(infinity_server: ServerInfo) -> InfinityEmbeddings:
    return InfinityEmbeddings(
        model=infinity_server.embed_model,
        base_url=infinity_server.url,
        api_key=infinity_server.api_key,
    )


@pytest.fixture(scope="module")
def qdrant(chunks: list[Document], embeddings: InfinityEmbeddings) -> Iterator[QdrantVectorStore]:
    store = QdrantVectorStore.from_documents(
        chunks, embeddings, location=":memory:", collection_name="infinity-rag-langchain"
    )
    yield store
    store.client.close()


def _reranker(server: ServerInfo, **kwargs: Any) -> InfinityRerank:
    return InfinityRerank(
        model=server.rerank_model, base_url=server.url, api_key=server.api_key, **kwargs
    )


# --- ingest and retrieve ---------------------------------------------------------------------


def test_corpus_is_a_few_hundred_chunks(chunks: list[Document]) -> None:
    assert 200 <= len(chunks) <= 400
    assert {c.metadata["topic"] for c in chunks} == set(TOPICS)


def test_qdrant_ingests_every_chunk_with_the_models_dimension(
    qdrant: QdrantVectorStore, chunks: list[Document], infinity_server: ServerInfo
) -> None:
    info = qdrant.client.get_collection("infinity-rag-langchain")

    assert info.points_count == len(chunks)
    assert info.config.params.vectors[""].size == infinity_server.dim  # type: ignore[index]


@pytest.mark.parametrize("topic", sorted(QUESTIONS))
def test_retriever_finds_the_topic_of_the_question(qdrant: QdrantVectorStore, topic: str) -> None:
    found = qdrant.as_retriever(search_kwargs={"k": 5}).invoke(QUESTIONS[topic])

    assert len(found) == 5
    assert [d.metadata["topic"] for d in found] == [topic] * 5


def test_similarity_scores_rank_the_right_topic_first(qdrant: QdrantVectorStore) -> None:
    hits = qdrant.similarity_search_with_score("sourdough bread dough rising in the oven", k=3)

    assert [doc.metadata["topic"] for doc, _ in hits] == ["cooking"] * 3
    scores = [score for _, score in hits]
    assert scores == sorted(scores, reverse=True)


# --- rerank over the retriever ---------------------------------------------------------------


def _rerank_retriever(
    qdrant: QdrantVectorStore, reranker: InfinityRerank
) -> ContextualCompressionRetriever:
    return ContextualCompressionRetriever(
        base_compressor=reranker, base_retriever=qdrant.as_retriever(search_kwargs={"k": 12})
    )


def test_contextual_compression_reranks_the_retrieved_chunks(
    qdrant: QdrantVectorStore, infinity_server: ServerInfo
) -> None:
    reranker = _reranker(infinity_server, top_n=4)
    question = QUESTIONS["gardening"]

    candidates = qdrant.as_retriever(search_kwargs={"k": 12}).invoke(question)
    reranked = _rerank_retriever(qdrant, reranker).invoke(question)

    assert len(reranked) == 4
    scores = [d.metadata["relevance_score"] for d in reranked]
    assert scores == sorted(scores, reverse=True)
    # The same chunks as scoring the candidates directly, with Qdrant's metadata kept.
    expected = reranker.rerank(candidates, question)
    assert [d.page_content for d in reranked] == [
        candidates[r["index"]].page_content for r in expected
    ]
    assert scores == pytest.approx([r["relevance_score"] for r in expected], abs=1e-5)
    assert all(d.metadata["topic"] == "gardening" for d in reranked)
    assert all("_id" in d.metadata for d in reranked)
    assert all("relevance_score" not in d.metadata for d in candidates)


async def test_async_contextual_compression_matches_sync(
    qdrant: QdrantVectorStore, infinity_server: ServerInfo
) -> None:
    retriever = _rerank_retriever(qdrant, _reranker(infinity_server, top_n=3))
    question = QUESTIONS["programming"]

    sync_docs = retriever.invoke(question)
    async_docs = await retriever.ainvoke(question)

    assert len(async_docs) == 3
    assert [d.page_content for d in async_docs] == [d.page_content for d in sync_docs]
    assert [d.metadata["relevance_score"] for d in async_docs] == pytest.approx(
        [d.metadata["relevance_score"] for d in sync_docs], abs=1e-5
    )


def test_score_threshold_and_top_n_none_in_a_retriever(
    qdrant: QdrantVectorStore, infinity_server: ServerInfo
) -> None:
    question = QUESTIONS["finance"]
    everything = _rerank_retriever(qdrant, _reranker(infinity_server, top_n=None)).invoke(question)
    threshold = everything[5].metadata["relevance_score"]

    filtered = _rerank_retriever(
        qdrant, _reranker(infinity_server, top_n=None, score_threshold=threshold)
    ).invoke(question)

    assert len(everything) == 12
    assert 6 <= len(filtered) < 12
    assert all(d.metadata["relevance_score"] >= threshold for d in filtered)


# --- cache-backed embeddings -----------------------------------------------------------------


class _RequestLog:
    """Records the requests that really reach the server (httpx event hooks, not mocks)."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.http_client = httpx.Client(event_hooks={"request": [self._record]})
        self.http_async_client = httpx.AsyncClient(event_hooks={"request": [self._arecord]})

    def _record(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)

    async def _arecord(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)

    def clients(self) -> dict[str, Any]:
        return {"http_client": self.http_client, "http_async_client": self.http_async_client}


@pytest.fixture
async def log() -> AsyncIterator[_RequestLog]:
    log = _RequestLog()
    yield log
    log.http_client.close()
    await log.http_async_client.aclose()


async def test_cache_backed_embeddings_embed_each_text_once(
    infinity_server: ServerInfo, chunks: list[Document], log: _RequestLog
) -> None:
    embeddings = InfinityEmbeddings(
        model=infinity_server.embed_model,
        base_url=infinity_server.url,
        api_key=infinity_server.api_key,
        **log.clients(),
    )
    cached = CacheBackedEmbeddings.from_bytes_store(
        embeddings,
        InMemoryByteStore(),
        namespace=embeddings.model,
        query_embedding_cache=True,
        key_encoder="sha256",
    )
    texts = [c.page_content for c in chunks[:40]]

    first = cached.embed_documents(texts)
    requests_after_first = len(log.paths)
    again = cached.embed_documents(texts)
    async_again = await cached.aembed_documents(texts)

    assert requests_after_first >= 1
    assert len(log.paths) == requests_after_first  # all from the cache
    assert again == first
    assert async_again == first
    assert all(len(v) == infinity_server.dim for v in first)

    mixed = await cached.aembed_documents([*texts[:3], "A brand new sentence about whales."])
    assert len(log.paths) == requests_after_first + 1  # only the new text was sent
    assert mixed[:3] == first[:3]

    query = cached.embed_query("whales")
    assert await cached.aembed_query("whales") == query
    assert len(log.paths) == requests_after_first + 2
    assert set(log.paths) == {"/embeddings"}


async def test_cache_backed_embeddings_in_a_vector_store(
    infinity_server: ServerInfo, chunks: list[Document]
) -> None:
    embeddings = InfinityEmbeddings(
        model=infinity_server.embed_model,
        base_url=infinity_server.url,
        api_key=infinity_server.api_key,
    )
    cached = CacheBackedEmbeddings.from_bytes_store(
        embeddings, InMemoryByteStore(), namespace=embeddings.model, key_encoder="sha256"
    )
    subset = [c for i, c in enumerate(chunks) if i % 4 == 0]
    store = InMemoryVectorStore(cached)

    await store.aadd_documents(subset)
    found = await store.asimilarity_search(QUESTIONS["football"], k=3)

    assert [d.metadata["topic"] for d in found] == ["football"] * 3


# --- one client for everything ---------------------------------------------------------------


async def test_one_shared_client_serves_embedder_and_reranker(
    infinity_server: ServerInfo, chunks: list[Document], log: _RequestLog
) -> None:
    async with InfinityClient(
        base_url=infinity_server.url, api_key=infinity_server.api_key, **log.clients()
    ) as client:
        embeddings = InfinityEmbeddings(model=infinity_server.embed_model, client=client)
        reranker = InfinityRerank(model=infinity_server.rerank_model, client=client, top_n=3)
        store = InMemoryVectorStore(embeddings)
        await store.aadd_documents([c for i, c in enumerate(chunks) if i % 3 == 0])
        retriever = ContextualCompressionRetriever(
            base_compressor=reranker, base_retriever=store.as_retriever(search_kwargs={"k": 8})
        )

        async_docs = await retriever.ainvoke(QUESTIONS["astronomy"])
        sync_docs = retriever.invoke(QUESTIONS["astronomy"])

    assert embeddings._client is reranker._client is client
    assert len(async_docs) == 3
    assert [d.page_content for d in sync_docs] == [d.page_content for d in async_docs]
    assert all(d.metadata["topic"] == "astronomy" for d in async_docs)
    assert {"/embeddings", "/rerank"} <= set(log.paths)
    assert log.paths.count("/rerank") == 2


# --- the errors a user sees ------------------------------------------------------------------


def test_wrong_key_is_refused_clearly(
    infinity_server: ServerInfo, chunks: list[Document], qdrant: QdrantVectorStore
) -> None:
    _needs_key(infinity_server)
    wrong = "definitely-not-the-key"
    embeddings = InfinityEmbeddings(
        model=infinity_server.embed_model, base_url=infinity_server.url, api_key=wrong
    )
    reranker = InfinityRerank(
        model=infinity_server.rerank_model, base_url=infinity_server.url, api_key=wrong
    )

    with pytest.raises(AuthenticationError, match="INFINITY_API_KEY") as info:
        QdrantVectorStore.from_documents(chunks[:5], embeddings, location=":memory:")
    assert wrong not in str(info.value)
    assert info.value.status_code == 401

    with pytest.raises(AuthenticationError):
        _rerank_retriever(qdrant, reranker).invoke(QUESTIONS["cooking"])


async def test_missing_key_is_refused_clearly_async(infinity_server: ServerInfo) -> None:
    _needs_key(infinity_server)
    embeddings = InfinityEmbeddings(model=infinity_server.embed_model, base_url=infinity_server.url)

    with pytest.raises(AuthenticationError, match="set api_key="):
        await embeddings.aembed_documents(["hello"])


def test_unknown_model_lists_the_served_models(
    infinity_server: ServerInfo, qdrant: QdrantVectorStore
) -> None:
    embeddings = InfinityEmbeddings(
        model="no-such-model", base_url=infinity_server.url, api_key=infinity_server.api_key
    )
    reranker = _reranker(infinity_server).model_copy(update={"model": "no-such-reranker"})

    with pytest.raises(ModelNotFoundError, match="no-such-model") as info:
        embeddings.embed_query("hello")
    assert infinity_server.embed_model in str(info.value)
    with pytest.raises(ModelNotFoundError, match="no-such-reranker"):
        _rerank_retriever(qdrant, reranker).invoke(QUESTIONS["cooking"])


async def test_wrong_kind_of_model_is_named(infinity_server: ServerInfo) -> None:
    reranker = InfinityRerank(
        model=infinity_server.embed_model,
        base_url=infinity_server.url,
        api_key=infinity_server.api_key,
    )

    with pytest.raises(ModelCapabilityError, match="rerank"):
        await reranker.acompress_documents([Document(page_content="a")], "q")


async def test_unreachable_server_names_the_url() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    embeddings = InfinityEmbeddings(model="minilm", base_url=url, max_retries=1, timeout=5)
    reranker = InfinityRerank(model="reranker", base_url=url, max_retries=0)

    with pytest.raises(InfinityConnectionError, match="cannot reach the Infinity server") as info:
        embeddings.embed_documents(["hello"])
    assert url in str(info.value)
    with pytest.raises(InfinityConnectionError, match=url):
        await embeddings.aembed_query("hello")
    with pytest.raises(InfinityConnectionError, match=url):
        await reranker.acompress_documents([Document(page_content="a")], "q")
