"""InfinityEmbedding inside real LlamaIndex indexes and pipelines, against a real Infinity server.

MiniLM is a real embedder, so retrieval on clearly distinct topics is asserted.
"""

from __future__ import annotations

import io
import math
import socket
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.embedding import (
    EmbeddingEndEvent,
    EmbeddingStartEvent,
)
from llama_index.core.node_parser import SentenceSplitter
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import AsyncQdrantClient, QdrantClient

from infinity_rag import (
    AuthenticationError,
    InfinityConnectionError,
    ModelNotFoundError,
)
from infinity_rag.llama_index import InfinityEmbedding
from integration_tests.conftest import ServerInfo, png

# Qdrant's local mode says its payload indexes are no-ops; that is not what is tested here.
pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

TOPICS = {
    "tower": "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris. "
    "It was built by Gustave Eiffel's company for the 1889 World's Fair.",
    "plants": "Photosynthesis is how green plants use sunlight, water and carbon dioxide to make "
    "glucose, releasing oxygen from the chlorophyll in their leaves.",
    "coffee": "Espresso is brewed by forcing hot water under pressure through finely ground "
    "coffee beans, which gives a concentrated coffee topped with crema.",
    "space": "A black hole is a region of spacetime where gravity is so strong that nothing, "
    "not even light, can escape once it crosses the event horizon.",
    "football": "In football, a player is offside when nearer to the opponents' goal line than "
    "both the ball and the second-last opponent as the ball is played.",
}
QUESTIONS = {
    "plants": "How do plants make food from sunlight?",
    "coffee": "How is an espresso made?",
    "space": "What can escape the gravity of a black hole?",
}


def documents() -> list[Document]:
    return [Document(text=text, id_=topic) for topic, text in TOPICS.items()]


def embedder(server: ServerInfo, **kwargs: Any) -> InfinityEmbedding:
    kwargs = {
        "model_name": server.embed_model,
        "base_url": server.url,
        "api_key": server.api_key,
        **kwargs,
    }
    return InfinityEmbedding(**kwargs)


def close(a: list[float], b: list[float], tol: float = 1e-4) -> bool:
    return len(a) == len(b) and all(
        math.isclose(x, y, abs_tol=tol) for x, y in zip(a, b, strict=True)
    )


# --- the embedder --------------------------------------------------------------------------


async def test_sync_and_async_hooks_agree(infinity_server: ServerInfo) -> None:
    embed = embedder(infinity_server)
    texts = ["first passage", "second passage", "third passage"]
    sync_query, async_query = (
        embed.get_query_embedding("a question"),
        await embed.aget_query_embedding("a question"),
    )
    sync_batch = embed.get_text_embedding_batch(texts, show_progress=True)
    async_batch = await embed.aget_text_embedding_batch(texts, show_progress=True)

    assert len(sync_query) == infinity_server.dim
    assert all(type(x) is float for x in sync_query)
    assert close(sync_query, async_query)
    assert close(sync_batch[1], embed.get_text_embedding("second passage"))
    assert close(sync_batch[2], await embed.aget_text_embedding("third passage"))
    assert all(close(a, b) for a, b in zip(sync_batch, async_batch, strict=True))


async def test_instructions_dimensions_and_wire_format(infinity_server: ServerInfo) -> None:
    plain = embedder(infinity_server)
    instructed = embedder(infinity_server, query_instruction="query: ", text_instruction="doc: ")
    assert close(instructed.get_query_embedding("x"), plain.get_query_embedding("query: x"))
    assert close(await instructed.aget_text_embedding("x"), plain.get_text_embedding("doc: x"))
    assert not close(instructed.get_query_embedding("x"), plain.get_query_embedding("x"))

    as_floats = embedder(infinity_server, encoding_format="float").get_text_embedding("x")
    assert close(as_floats, plain.get_text_embedding("x"))

    short = embedder(infinity_server, dimensions=128)
    assert len(short.get_text_embedding("x")) == 128
    assert len(await short.aget_query_embedding("x")) == 128


async def test_many_texts_in_small_llama_index_batches_with_workers(
    infinity_server: ServerInfo,
) -> None:
    embed = embedder(infinity_server, embed_batch_size=16, num_workers=2)
    texts = [f"sentence number {i} about topic {i % 7}" for i in range(100)]
    vectors = await embed.aget_text_embedding_batch(texts, show_progress=True)
    assert len(vectors) == 100
    assert close(vectors[57], embed.get_text_embedding(texts[57]))


# --- indexes and pipelines -----------------------------------------------------------------


def test_vector_store_index_from_documents(
    infinity_server: ServerInfo, events: list[BaseEvent]
) -> None:
    index = VectorStoreIndex.from_documents(documents(), embed_model=embedder(infinity_server))
    starts = [e for e in events if isinstance(e, EmbeddingStartEvent)]
    ends = [e for e in events if isinstance(e, EmbeddingEndEvent)]
    assert len(starts) == len(ends) >= 1
    assert sum(len(e.chunks) for e in ends) == len(TOPICS)
    assert starts[0].model_dict["class_name"] == "InfinityEmbedding"
    assert infinity_server.api_key is None or infinity_server.api_key not in str(starts[0])

    retriever = index.as_retriever(similarity_top_k=1)
    for topic, question in QUESTIONS.items():
        (hit,) = retriever.retrieve(question)
        assert hit.node.ref_doc_id == topic


async def test_async_index_build_and_retrieval(infinity_server: ServerInfo) -> None:
    index = VectorStoreIndex.from_documents(
        documents(), embed_model=embedder(infinity_server), use_async=True
    )
    retriever = index.as_retriever(similarity_top_k=1)
    for topic, question in QUESTIONS.items():
        (hit,) = await retriever.aretrieve(question)
        assert hit.node.ref_doc_id == topic


def test_ingestion_pipeline_into_qdrant(infinity_server: ServerInfo) -> None:
    store = QdrantVectorStore(collection_name="topics", client=QdrantClient(location=":memory:"))
    pipeline = IngestionPipeline(
        transformations=[
            SentenceSplitter(chunk_size=24, chunk_overlap=0),
            embedder(infinity_server),
        ],
        vector_store=store,
    )
    nodes = pipeline.run(documents=documents(), show_progress=True)
    assert len(nodes) > len(TOPICS)  # the splitter cut every document
    assert all(node.embedding is not None for node in nodes)
    assert {len(node.embedding or []) for node in nodes} == {infinity_server.dim}

    index = VectorStoreIndex.from_vector_store(store, embed_model=embedder(infinity_server))
    retriever = index.as_retriever(similarity_top_k=1)
    for topic, question in QUESTIONS.items():
        (hit,) = retriever.retrieve(question)
        assert hit.node.ref_doc_id == topic


async def test_async_ingestion_pipeline_into_qdrant(
    infinity_server: ServerInfo, tmp_path: Path
) -> None:
    aclient = AsyncQdrantClient(path=str(tmp_path / "qdrant"))
    try:
        store = QdrantVectorStore(collection_name="topics", aclient=aclient)
        embed = embedder(infinity_server)
        pipeline = IngestionPipeline(
            transformations=[SentenceSplitter(chunk_size=24, chunk_overlap=0), embed],
            vector_store=store,
        )
        nodes = await pipeline.arun(documents=documents())
        assert len(nodes) > len(TOPICS)

        index = VectorStoreIndex.from_vector_store(store, embed_model=embed)
        retriever = index.as_retriever(similarity_top_k=1)
        for topic, question in QUESTIONS.items():
            (hit,) = await retriever.aretrieve(question)
            assert hit.node.ref_doc_id == topic
    finally:
        await aclient.close()


def test_storage_context_index_then_insert(infinity_server: ServerInfo) -> None:
    store = QdrantVectorStore(collection_name="growing", client=QdrantClient(location=":memory:"))
    index = VectorStoreIndex.from_documents(
        documents()[:2],
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embedder(infinity_server),
    )
    index.insert(documents()[3])
    (hit,) = index.as_retriever(similarity_top_k=1).retrieve(QUESTIONS["space"])
    assert hit.node.ref_doc_id == "space"


# --- images (CLIP) -------------------------------------------------------------------------


async def test_image_embeddings_from_paths_and_bytesio(
    clip_server: ServerInfo, tmp_path: Path
) -> None:
    red, blue = png((255, 0, 0)), png((0, 0, 255))
    red_path = tmp_path / "red.png"
    red_path.write_bytes(red)
    clip = embedder(clip_server, model_name="clip")

    from_path = clip.get_image_embedding(str(red_path))
    stream = io.BytesIO(red)
    from_stream = await clip.aget_image_embedding(stream)
    batch = clip.get_image_embedding_batch([str(red_path), io.BytesIO(blue)])
    abatch = await clip.aget_image_embedding_batch([str(red_path), io.BytesIO(blue)])
    text = clip.get_query_embedding("a red square")

    assert len(from_path) == len(text) > 0
    assert close(from_path, from_stream)
    assert stream.tell() == 0  # the caller's stream was not consumed
    assert close(batch[0], from_path)
    assert not close(batch[0], batch[1])
    assert all(close(a, b) for a, b in zip(batch, abatch, strict=True))


# --- what a user sees when something is wrong ----------------------------------------------


async def test_a_wrong_key_is_an_authentication_error(infinity_server: ServerInfo) -> None:
    if infinity_server.api_key is None:
        pytest.skip("the server runs without --api-key")
    embed = embedder(infinity_server, api_key="not-the-key", max_retries=0)
    with pytest.raises(AuthenticationError, match="401") as error:
        embed.get_query_embedding("q")
    with pytest.raises(AuthenticationError):
        await embed.aget_text_embedding_batch(["a", "b"])
    assert "not-the-key" not in str(error.value)


async def test_an_unknown_model_lists_the_served_ones(infinity_server: ServerInfo) -> None:
    embed = embedder(infinity_server, model_name="no-such-model")
    with pytest.raises(ModelNotFoundError) as error:
        VectorStoreIndex.from_documents(documents(), embed_model=embed)
    assert infinity_server.embed_model in str(error.value)
    with pytest.raises(ModelNotFoundError):
        await embed.aget_query_embedding("q")


async def test_an_unreachable_server_is_a_connection_error() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    embed = InfinityEmbedding(
        model_name="minilm", base_url=f"http://127.0.0.1:{port}", max_retries=0, timeout=5
    )
    with pytest.raises(InfinityConnectionError, match=f"cannot reach .*127.0.0.1:{port}"):
        embed.get_text_embedding("t")
    with pytest.raises(InfinityConnectionError):
        await embed.aget_query_embedding("q")
