"""InfinityEmbeddings against a real Infinity server (MiniLM; a seeded tiny CLIP for images)."""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

import pytest
from langchain_tests.integration_tests import EmbeddingsIntegrationTests

from infinity_rag.langchain import InfinityEmbeddings
from integration_tests.conftest import ServerInfo, png


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _close(a: list[float], b: list[float], tol: float = 1e-4) -> bool:
    return len(a) == len(b) and all(
        math.isclose(x, y, abs_tol=tol) for x, y in zip(a, b, strict=True)
    )


def _embeddings(server: ServerInfo, **kwargs: Any) -> InfinityEmbeddings:
    kwargs.setdefault("model", server.embed_model)
    return InfinityEmbeddings(base_url=server.url, api_key=server.api_key, **kwargs)


# --- LangChain's standard integration tests --------------------------------------------------


class TestInfinityEmbeddingsStandard(EmbeddingsIntegrationTests):
    @pytest.fixture(autouse=True)
    def _server(self, infinity_server: ServerInfo) -> None:
        self.server = infinity_server

    @property
    def embeddings_class(self) -> type[InfinityEmbeddings]:
        return InfinityEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {
            "model": self.server.embed_model,
            "base_url": self.server.url,
            "api_key": self.server.api_key,
        }


# --- text ------------------------------------------------------------------------------------


def test_vectors_have_the_models_dimension_and_plain_floats(infinity_server: ServerInfo) -> None:
    emb = _embeddings(infinity_server)

    vectors = emb.embed_documents(["first document", "zweites Dokument ✓", ""])
    query = emb.embed_query("a query")

    assert [len(v) for v in [*vectors, query]] == [infinity_server.dim] * 4
    assert all(type(x) is float for v in [*vectors, query] for x in v)


def test_query_and_document_of_the_same_text_agree(infinity_server: ServerInfo) -> None:
    emb = _embeddings(infinity_server)

    [document] = emb.embed_documents(["the cat sat on the mat"])
    query = emb.embed_query("the cat sat on the mat")

    assert _close(document, query)


def test_instruction_prefixes_are_applied(infinity_server: ServerInfo) -> None:
    plain = _embeddings(infinity_server)
    prefixed = _embeddings(infinity_server, query_prefix="query: ", document_prefix="passage: ")

    assert _close(prefixed.embed_query("solar eclipse"), plain.embed_query("query: solar eclipse"))
    assert _close(
        prefixed.embed_documents(["solar eclipse"])[0],
        plain.embed_documents(["passage: solar eclipse"])[0],
    )
    assert not _close(prefixed.embed_query("solar eclipse"), plain.embed_query("solar eclipse"))


def test_related_texts_are_closer_than_unrelated_ones(infinity_server: ServerInfo) -> None:
    emb = _embeddings(infinity_server)

    query = emb.embed_query("How long do I bake sourdough bread?")
    bread, galaxy = emb.embed_documents(
        [
            "Bake the sourdough loaf in a hot oven for forty minutes.",
            "The telescope photographed a spiral galaxy far away.",
        ]
    )

    assert _cosine(query, bread) > _cosine(query, galaxy) + 0.2


def test_float_and_base64_wire_formats_give_the_same_vectors(infinity_server: ServerInfo) -> None:
    texts = ["wire format", "another text"]

    as_base64 = _embeddings(infinity_server).embed_documents(texts)
    as_float = _embeddings(infinity_server, encoding_format="float").embed_documents(texts)

    assert all(_close(a, b) for a, b in zip(as_base64, as_float, strict=True))


def test_dimensions_truncate_the_vectors(infinity_server: ServerInfo) -> None:
    full = _embeddings(infinity_server).embed_query("matryoshka")
    short = _embeddings(infinity_server, dimensions=64).embed_query("matryoshka")

    assert len(short) == 64
    assert _close(short, full[:64])


def test_small_batches_in_parallel_match_one_request(infinity_server: ServerInfo) -> None:
    texts = [f"sentence number {i} about topic {i % 3}" for i in range(11)]

    chunked = _embeddings(infinity_server, batch_size=2, max_concurrency=3).embed_documents(texts)
    whole = _embeddings(infinity_server).embed_documents(texts)

    assert len(chunked) == len(texts)
    assert all(_close(a, b) for a, b in zip(chunked, whole, strict=True))


async def test_async_matches_sync(infinity_server: ServerInfo) -> None:
    emb = _embeddings(infinity_server, batch_size=3, query_prefix="q: ")
    texts = [f"async text {i}" for i in range(7)]

    sync_docs = emb.embed_documents(texts)
    async_docs = await emb.aembed_documents(texts)

    assert all(_close(a, b) for a, b in zip(sync_docs, async_docs, strict=True))
    assert _close(emb.embed_query("hello"), await emb.aembed_query("hello"))


def test_progress_bar_over_a_real_ingestion(
    infinity_server: ServerInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    emb = _embeddings(infinity_server, batch_size=8, show_progress_bar=True)

    vectors = emb.embed_documents([f"progress {i}" for i in range(20)])

    assert len(vectors) == 20
    assert "20/20" in capsys.readouterr().err


# --- images (CLIP) ---------------------------------------------------------------------------


def test_embed_image_from_paths_bytes_and_data_uris(
    clip_server: ServerInfo, tmp_path: Path
) -> None:
    red, blue = png((255, 0, 0)), png((0, 0, 255))
    red_path = tmp_path / "red.png"
    red_path.write_bytes(red)
    red_uri = "data:image/png;base64," + base64.b64encode(red).decode()
    clip = _embeddings(clip_server, model="clip")

    from_path, from_bytes, from_uri, other = clip.embed_image([str(red_path), red, red_uri, blue])
    text = clip.embed_query("a red square")

    assert len(from_path) == len(text) > 0
    assert all(type(x) is float for x in from_path)
    assert _close(from_path, from_bytes)
    assert _close(from_path, from_uri)
    assert not _close(from_path, other)


async def test_aembed_image_matches_embed_image(clip_server: ServerInfo) -> None:
    clip = _embeddings(clip_server, model="clip")
    images = [png((0, 200, 0)), png((10, 10, 10))]

    sync_vectors = clip.embed_image(images)
    async_vectors = await clip.aembed_image(images)

    assert all(_close(a, b) for a, b in zip(sync_vectors, async_vectors, strict=True))
