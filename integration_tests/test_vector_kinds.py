"""Every kind of vector a real Infinity 0.0.78 serves: ColBERT matrices and bit-packed vectors.

One server (``vector_kinds_server``, module scope) serves MiniLM as float32, as a ColBERT-mode
copy (``colbert``) and bit-packed (``minilm-ubinary``, ``minilm-binary``), with
``--lengths-via-tokenize``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from infinity_rag import (
    InfinityClient,
    MultiVectorArrayResult,
    PackedEmbeddingArrayResult,
    VectorKindError,
    VectorShape,
)
from integration_tests.conftest import ServerInfo

TEXTS = [
    "hello world",
    "a longer text of seven",
    "Late interaction keeps one vector per token.",
    "",
    "Binary quantization stores one bit per dimension, 32 times smaller than float32.",
]


@pytest.fixture
def kinds(vector_kinds_server: ServerInfo) -> Iterator[InfinityClient]:
    with InfinityClient(
        base_url=vector_kinds_server.url, api_key=vector_kinds_server.api_key, batch_size=2
    ) as client:
        yield client


def counting_client(server: ServerInfo, sent: list[str]) -> InfinityClient:
    """A client whose (real) HTTP client records each request's encoding_format."""

    def record(request: httpx.Request) -> None:
        sent.append(request.content.decode())

    http = httpx.Client(event_hooks={"request": [record]})
    return InfinityClient(base_url=server.url, api_key=server.api_key, http_client=http)


# --- multi-vector ----------------------------------------------------------------------------


def test_float_and_base64_give_the_same_matrices(kinds: InfinityClient) -> None:
    # One text per request: texts batched together are padded, which moves the values by
    # ~1e-6 whatever the encoding.
    one = {"model": "colbert", "batch_size": 1, "max_concurrency": 1}
    learned = kinds.embed_multi_vector(TEXTS, **one)  # first request as floats
    via_base64 = kinds.embed_multi_vector(TEXTS, encoding_format="base64", **one)
    via_float = kinds.embed_multi_vector(TEXTS, encoding_format="float", **one)
    arrays = kinds.embed_multi_vector(TEXTS, as_numpy=True, **one)
    assert learned.dimensions == via_base64.dimensions == 384
    for a, b, c, d in zip(learned, via_base64, via_float, arrays, strict=True):
        assert np.asarray(a).shape == np.asarray(b).shape == np.asarray(c).shape == d.shape
        assert d.dtype == np.float32
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), atol=1e-6, rtol=0)
        np.testing.assert_allclose(np.asarray(b), np.asarray(c), atol=1e-6, rtol=0)
        np.testing.assert_allclose(d, np.asarray(c), atol=1e-6, rtol=0)


def test_rows_match_the_token_counts_infinity_reports(kinds: InfinityClient) -> None:
    for text in TEXTS:
        result = kinds.embed_multi_vector([text], model="colbert", as_numpy=True)
        # --lengths-via-tokenize counts tokens without [CLS] and [SEP]; the matrix has both.
        assert result[0].shape == (result.usage.prompt_tokens + 2, 384), text


async def test_async_matrices_match_sync(kinds: InfinityClient) -> None:
    one = {"model": "colbert", "batch_size": 1, "max_concurrency": 1}
    sync = kinds.embed_multi_vector(TEXTS, as_numpy=True, **one)
    result = await kinds.aembed_multi_vector(TEXTS, as_numpy=True, **one)
    for a, b in zip(sync, result, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_no_path_returns_a_flattened_matrix(vector_kinds_server: ServerInfo) -> None:
    from infinity_rag.langchain import InfinityEmbeddings
    from infinity_rag.llama_index import InfinityEmbedding

    calls = {
        "embed (base64)": lambda c: c.embed(TEXTS, model="colbert"),
        "embed (float)": lambda c: c.embed(TEXTS, model="colbert", encoding_format="float"),
        "embed (numpy)": lambda c: c.embed(TEXTS, model="colbert", as_numpy=True),
        "aembed": lambda c: asyncio.run(c.aembed(TEXTS, model="colbert")),
        "embed_stream": lambda c: list(c.embed_stream(iter(TEXTS), model="colbert")),
        "langchain": lambda c: InfinityEmbeddings(model="colbert", client=c).embed_documents(TEXTS),
        "llama_index": lambda c: InfinityEmbedding(
            model_name="colbert", client=c
        ).get_text_embedding_batch(TEXTS),
    }
    for name, call in calls.items():
        for learned_before in (False, True):
            with InfinityClient(
                base_url=vector_kinds_server.url, api_key=vector_kinds_server.api_key
            ) as client:
                if learned_before:
                    client.vector_shape("colbert")
                with pytest.raises(VectorKindError, match="embed_multi_vector") as caught:
                    call(client)
                assert caught.value.shape == VectorShape(384, multi_vector=True), name


# --- bit-packed ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "dtype", "offset"),
    [("minilm-ubinary", np.uint8, 0), ("minilm-binary", np.int8, 128)],
)
def test_packed_vectors_are_packbits_of_the_float_signs(
    kinds: InfinityClient, model: str, dtype: type, offset: int
) -> None:
    floats = kinds.embed(TEXTS, model="minilm", as_numpy=True).embeddings
    packed = kinds.embed_packed(TEXTS, model=model, as_numpy=True)
    as_ints = kinds.embed_packed(TEXTS, model=model)
    # Infinity's convention (sentence-transformers' quantize_embeddings): bit = value > 0,
    # big-endian bit order (numpy.packbits' default); binary = the byte - 128, as int8.
    expected = (np.packbits(floats > 0, axis=-1).astype(np.int16) - offset).astype(dtype)
    assert packed.embeddings.dtype == dtype
    np.testing.assert_array_equal(packed.embeddings, expected)
    assert as_ints.embeddings == expected.tolist()
    assert packed.dimensions == as_ints.dimensions == 384
    np.testing.assert_array_equal(packed.bits(), (floats > 0).astype(np.uint8))


def test_packed_works_with_the_defaults_and_the_refusal_is_not_retried(
    vector_kinds_server: ServerInfo,
) -> None:
    sent: list[str] = []
    with counting_client(vector_kinds_server, sent) as client:
        with pytest.raises(VectorKindError, match=r"embed_packed\(\)"):
            client.embed(TEXTS, model="minilm-ubinary")
        assert len(sent) == 2  # the floats, then one base64 request refused with a 500
        first = client.embed_packed(TEXTS, model="minilm-ubinary")
        second = client.embed_packed(TEXTS, model="minilm-ubinary")
    assert first == second
    assert all('"encoding_format":"float"' in body for body in sent[2:])
    assert len(sent) == 4


async def test_async_packed_matches_sync(kinds: InfinityClient) -> None:
    sync = kinds.embed_packed(TEXTS, model="minilm-binary")
    result = await kinds.aembed_packed(TEXTS, model="minilm-binary")
    assert result == sync
    assert result.packing == "binary"


# --- what the client learned -----------------------------------------------------------------


def test_models_report_each_model_s_vectors(kinds: InfinityClient) -> None:
    for name in ("minilm", "colbert", "minilm-ubinary", "minilm-binary"):
        kinds.vector_shape(name)
    learned = {info.id: info.vectors for info in kinds.models()}
    assert learned == {
        "minilm": VectorShape(384),
        "colbert": VectorShape(384, multi_vector=True),
        "minilm-ubinary": VectorShape(48, packing="ubinary"),
        "minilm-binary": VectorShape(48, packing="binary"),
    }


# --- the guide's example ---------------------------------------------------------------------


def test_the_guide_s_example_runs(vector_kinds_server: ServerInfo) -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "vector_kinds.md").read_text()
    block = re.findall(r"```python\n(.*?)```", page, re.S)[0]
    swaps = {
        '"colbert-ir/colbertv2.0"': '"colbert"',
        '"mixedbread-ai/mxbai-embed-large-v1"': '"minilm-ubinary"',
        'base_url="http://localhost:7997"': (
            f"base_url={vector_kinds_server.url!r}, api_key={vector_kinds_server.api_key!r}"
        ),
    }
    for old, new in swaps.items():
        assert old in block, old
        block = block.replace(old, new)
    namespace: dict[str, object] = {}
    exec(compile(block, "docs/vector_kinds.md", "exec"), namespace)
    matrices = namespace["matrices"]
    packed = namespace["packed"]
    assert isinstance(matrices, MultiVectorArrayResult)
    assert isinstance(packed, PackedEmbeddingArrayResult)
    assert [m.shape[1] for m in matrices] == [384, 384]
    assert packed.embeddings.dtype == np.uint8
    assert namespace["bits"].shape == (2, 384)  # type: ignore[attr-defined]
    assert namespace["suggested"] == "embed_multi_vector"
    namespace["client"].close()  # type: ignore[attr-defined]
