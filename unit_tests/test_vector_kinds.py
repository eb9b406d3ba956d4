"""Multi-vector (ColBERT / ColPali) and bit-packed answers: recognised, cached, never flattened."""

from __future__ import annotations

import asyncio
import base64
import struct

import httpx
import numpy as np
import pytest

from infinity_rag import (
    EncodingRefusedError,
    InfinityClient,
    InvalidResponseError,
    MultiVectorArrayResult,
    MultiVectorResult,
    PackedEmbeddingArrayResult,
    PackedEmbeddingResult,
    ServerError,
    VectorKindError,
    VectorShape,
)
from unit_tests.conftest import FAKE_URL, make_client
from unit_tests.fake_infinity import (
    DIM,
    PACKED_WIDTH,
    FakeInfinity,
    matrix_for,
    packed_for,
    vector_for,
)

TEXTS = ["one", "two words", "three words here", "a", "b c", "d e f g", "h"]


@pytest.fixture
def fake() -> FakeInfinity:
    fake = FakeInfinity()
    fake.models.update(
        {
            "colbert": ["embed"],
            "ubin": ["embed"],
            "bin": ["embed"],
            "colpali": ["embed", "image_embed"],
        }
    )
    fake.multi_vector = {"colbert", "colpali"}
    fake.packed = {"ubin": "ubinary", "bin": "binary"}
    return fake


def formats(fake: FakeInfinity) -> list[str]:
    return [body["encoding_format"] for body in fake.bodies]


# --- multi-vector ----------------------------------------------------------------------------


def test_embed_on_a_multi_vector_model_names_the_method_and_returns_nothing(
    fake: FakeInfinity,
) -> None:
    with make_client(fake) as client:
        for _ in range(2):  # learned, then refused before any request
            with pytest.raises(VectorKindError, match=r"embed_multi_vector\(\)") as caught:
                client.embed(["hello world"], model="colbert")
    assert caught.value.method == "embed_multi_vector"
    assert caught.value.shape == VectorShape(DIM, multi_vector=True)
    assert "a matrix per input" in str(caught.value)
    assert formats(fake) == ["float"]


async def test_aembed_on_a_multi_vector_model_raises_too(fake: FakeInfinity) -> None:
    async with make_client(fake) as client:
        with pytest.raises(VectorKindError, match="embed_multi_vector"):
            await client.aembed(["hello world"], model="colbert")


def test_matrices_are_the_same_on_the_float_and_base64_paths(fake: FakeInfinity) -> None:
    expected = [matrix_for(text) for text in TEXTS]
    with make_client(fake, batch_size=3) as client:
        learned = client.embed_multi_vector(TEXTS, model="colbert")
        via_base64 = client.embed_multi_vector(TEXTS, model="colbert")
        via_float = client.embed_multi_vector(TEXTS, model="colbert", encoding_format="float")
    assert isinstance(learned, MultiVectorResult)
    assert learned.embeddings == via_base64.embeddings == via_float.embeddings == expected
    assert learned.dimensions == DIM
    assert [len(matrix) for matrix in learned] == [len(t.split()) + 2 for t in TEXTS]
    # First request to the model alone and as floats; the rest of that call base64.
    assert formats(fake) == ["float", "base64", "base64"] + ["base64"] * 3 + ["float"] * 3


def test_the_first_chunk_goes_alone_before_the_others(fake: FakeInfinity) -> None:
    with make_client(fake, batch_size=2, max_concurrency=4) as client:
        client.embed_multi_vector(TEXTS, model="colbert")
    assert fake.bodies[0]["encoding_format"] == "float"
    assert fake.bodies[0]["input"] == TEXTS[:2]
    assert all(body["encoding_format"] == "base64" for body in fake.bodies[1:])


@pytest.mark.parametrize("fmt", ["base64", "float"])
def test_as_numpy_gives_one_float32_matrix_per_input(fake: FakeInfinity, fmt: str) -> None:
    with make_client(fake, batch_size=3) as client:
        client.embed_multi_vector(["warm up"], model="colbert")
        result = client.embed_multi_vector(
            TEXTS, model="colbert", encoding_format=fmt, as_numpy=True
        )
    assert isinstance(result, MultiVectorArrayResult)
    for matrix, text in zip(result, TEXTS, strict=True):
        assert matrix.dtype == np.float32
        assert matrix.shape == (len(text.split()) + 2, DIM)
        np.testing.assert_array_equal(matrix, np.array(matrix_for(text), dtype=np.float32))
    assert result == result


async def test_async_multi_vector_matches_sync(fake: FakeInfinity) -> None:
    async with make_client(fake, batch_size=3) as client:
        result = await client.aembed_multi_vector(TEXTS, model="colbert")
        again = await client.aembed_multi_vector(TEXTS, model="colbert", as_numpy=True)
    assert result.embeddings == [matrix_for(text) for text in TEXTS]
    assert [m.tolist() for m in again] == result.embeddings


def test_images_with_a_colpali_style_model(fake: FakeInfinity) -> None:
    uri = "https://example.com/page.png"
    with make_client(fake) as client:
        with pytest.raises(VectorKindError, match="embed_multi_vector"):
            client.embed_images([uri], model="colpali")
        result = client.embed_multi_vector([uri, uri], model="colpali", modality="image")
    assert result.embeddings == [matrix_for(uri)] * 2
    assert fake.bodies[-1]["modality"] == "image"


def test_a_single_vector_model_refuses_the_multi_vector_method(fake: FakeInfinity) -> None:
    with make_client(fake) as client:
        with pytest.raises(VectorKindError, match=r"use InfinityClient\.embed\(\)"):
            client.embed_multi_vector(["a b"], model="embedder")
        assert client.embed(["a b"], model="embedder").embeddings == [vector_for("a b")]
    assert formats(fake) == ["float", "base64"]


def test_embed_stream_refuses_a_multi_vector_model(fake: FakeInfinity) -> None:
    with make_client(fake) as client, pytest.raises(VectorKindError, match="embed_multi_vector"):
        list(client.embed_stream(iter(TEXTS), model="colbert", batch_size=2))


async def test_aembed_stream_refuses_a_multi_vector_model(fake: FakeInfinity) -> None:
    async with make_client(fake) as client:
        with pytest.raises(VectorKindError, match="embed_multi_vector"):
            async for _ in client.aembed_stream(TEXTS, model="colbert", batch_size=2):
                pass


@pytest.mark.parametrize("as_numpy", [False, True])
def test_a_flattened_matrix_is_never_taken_for_a_vector(fake: FakeInfinity, as_numpy: bool) -> None:
    # The model was learned as single-vector, then replaced by a ColBERT model of the same
    # name: its base64 matrices are longer than the learned width.
    with make_client(fake) as client:
        client.embed(["a"], model="embedder")
        fake.multi_vector.add("embedder")
        with pytest.raises(InvalidResponseError, match="not the 4 of the model's vectors"):
            client.embed(["one two"], model="embedder", as_numpy=as_numpy)
        # Forgotten: the next call asks for floats again and names the right method.
        with pytest.raises(VectorKindError, match="embed_multi_vector"):
            client.embed(["one two"], model="embedder", as_numpy=as_numpy)


def test_a_base64_matrix_that_is_not_whole_rows_is_refused(fake: FakeInfinity) -> None:
    def hook(request: httpx.Request) -> httpx.Response | None:
        if b'"base64"' not in request.content:
            return None
        raw = base64.b64encode(struct.pack("<5f", *range(5))).decode()
        return httpx.Response(200, json={"data": [{"embedding": raw, "index": 0}]})

    with make_client(fake) as client:
        client.embed_multi_vector(["a"], model="colbert")
        fake.hook = hook
        with pytest.raises(InvalidResponseError, match="not rows of 4 float32 values"):
            client.embed_multi_vector(["a"], model="colbert")


# --- bit-packed ------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "packing", "dtype"), [("ubin", "ubinary", np.uint8),
                                                          ("bin", "binary", np.int8)])  # fmt: skip
def test_packed_vectors_work_with_the_defaults(
    fake: FakeInfinity, model: str, packing: str, dtype: type
) -> None:
    with make_client(fake, batch_size=3) as client:
        result = client.embed_packed(TEXTS, model=model)
        array = client.embed_packed(TEXTS, model=model, as_numpy=True)
    assert isinstance(result, PackedEmbeddingResult)
    assert result.embeddings == [packed_for(text, packing) for text in TEXTS]
    assert all(type(v) is int for vector in result for v in vector)
    assert (result.packing, result.dimensions) == (packing, PACKED_WIDTH * 8)
    assert isinstance(array, PackedEmbeddingArrayResult)
    assert array.embeddings.dtype == dtype
    assert array.embeddings.tolist() == result.embeddings
    # First request as floats (alone), then one base64 request that is refused (500, not
    # retried): the packing is learned from it. From then on floats only.
    assert formats(fake) == ["float", "base64"] + ["float"] * 2 + ["float"] * 3
    assert [len(body["input"]) for body in fake.bodies[:2]] == [3, 1]


def test_bits_unpack_both_packings(fake: FakeInfinity) -> None:
    with make_client(fake) as client:
        ubin = client.embed_packed(TEXTS, model="ubin", as_numpy=True)
        bin_ = client.embed_packed(TEXTS, model="bin", as_numpy=True)
    expected = np.unpackbits(np.array([packed_for(t, "ubinary") for t in TEXTS], np.uint8), -1)
    np.testing.assert_array_equal(ubin.bits(), expected)
    np.testing.assert_array_equal(bin_.bits(), expected)
    assert ubin.bits().shape == (len(TEXTS), ubin.dimensions)


async def test_async_packed_matches_sync(fake: FakeInfinity) -> None:
    async with make_client(fake) as client:
        result = await client.aembed_packed(TEXTS, model="bin")
        array = await client.aembed_packed(TEXTS, model="bin", as_numpy=True)
    assert result.embeddings == [packed_for(text, "binary") for text in TEXTS]
    assert array.embeddings.dtype == np.int8


def test_embed_on_a_packed_model_names_embed_packed_without_retrying(fake: FakeInfinity) -> None:
    with make_client(fake, max_retries=5) as client:
        with pytest.raises(VectorKindError, match=r"embed_packed\(\)") as caught:
            client.embed(["a"], model="ubin")
        assert caught.value.shape == VectorShape(PACKED_WIDTH, packing="ubinary")
        assert "bit-packed vectors (ubinary: 8 ints per vector, 64 dimensions)" in str(caught.value)
        with pytest.raises(VectorKindError, match="embed_packed"):  # cached: no request
            client.embed(["a"], model="ubin", as_numpy=True)
    assert formats(fake) == ["float", "base64"]  # the refusal (500) was not retried


def test_a_known_model_that_starts_refusing_base64_is_not_retried(fake: FakeInfinity) -> None:
    with make_client(fake, max_retries=5) as client:
        client.embed(["a"], model="embedder")
        fake.packed["embedder"] = "binary"  # replaced by a bit-packed model
        with pytest.raises(VectorKindError, match="bit-packed vectors \\(binary\\)") as caught:
            client.embed(["a"], model="embedder")
        assert isinstance(caught.value.__cause__, EncodingRefusedError)
        assert client.embed_packed(["a"], model="embedder").packing == "binary"
    assert formats(fake) == ["float", "base64", "float", "base64"]


def test_only_the_refusal_of_base64_is_left_unretried(fake: FakeInfinity) -> None:
    fake.failures = [(500, {"error": {"message": "CUDA out of memory", "code": 500}})]
    with make_client(fake, max_retries=2) as client:
        assert client.embed(["a"], model="embedder").embeddings == [vector_for("a")]
    assert len(fake.requests) == 2
    refusal = "model m does not support base64 encoding, as it uses uint8-bitpacking with X"
    fake.failures = [(500, {"error": {"message": refusal, "code": 500}})] * 3
    with make_client(fake, max_retries=2) as client, pytest.raises(ServerError) as caught:
        client.embed(["a"], model="embedder")
    assert not isinstance(caught.value, EncodingRefusedError)  # not Infinity's exact words


def test_a_float_model_refuses_embed_packed(fake: FakeInfinity) -> None:
    with make_client(fake) as client, pytest.raises(VectorKindError, match=r"embed\(\)"):
        client.embed_packed(["a"], model="embedder")


def test_whole_number_floats_that_base64_accepts_are_single_vectors(fake: FakeInfinity) -> None:
    # int8 / uint8 scalar quantization: floats of whole numbers, base64 accepted.
    def hook(request: httpx.Request) -> httpx.Response | None:
        vector = [float(v) for v in range(-3, 9)]
        if b'"base64"' in request.content:
            embedding: object = base64.b64encode(struct.pack("<12f", *vector)).decode()
        else:
            embedding = vector
        return httpx.Response(200, json={"data": [{"embedding": embedding, "index": 0}]})

    fake.hook = hook
    with make_client(fake) as client:
        first = client.embed(["a"], model="embedder")
        second = client.embed(["a"], model="embedder")
    assert first.embeddings == second.embeddings == [[float(v) for v in range(-3, 9)]]
    assert formats(fake) == ["float", "base64", "base64"]


# --- what the client learned -----------------------------------------------------------------


def test_models_and_vector_shape_report_what_was_learned(fake: FakeInfinity) -> None:
    with make_client(fake) as client:
        assert all(info.vectors is None for info in client.models())
        assert client.vector_shape("colbert") == VectorShape(DIM, multi_vector=True)
        client.embed_packed(["x"], model="bin")
        client.embed(["x"], model="embedder")
        learned = {info.id: info.vectors for info in client.models()}
        assert asyncio.run(client.avector_shape("bin")).dimensions == PACKED_WIDTH * 8
    assert learned["colbert"] == VectorShape(DIM, multi_vector=True)
    assert learned["bin"] == VectorShape(PACKED_WIDTH, packing="binary")
    assert learned["embedder"] == VectorShape(DIM)
    assert learned["reranker"] is None


def test_each_client_learns_for_itself(fake: FakeInfinity) -> None:
    with make_client(fake) as first, make_client(fake) as second:
        first.embed(["a"], model="embedder")
        second.embed(["a"], model="embedder")
        first.embed(["a"], model="embedder")
    assert formats(fake) == ["float", "float", "base64"]


def test_empty_input_sends_nothing(fake: FakeInfinity) -> None:
    client = InfinityClient(base_url=FAKE_URL, http_client=httpx.Client(transport=fake.transport()))
    assert len(client.embed_multi_vector([], model="colbert")) == 0
    assert len(client.embed_packed([], model="ubin")) == 0
    assert fake.requests == []


# --- frameworks ------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "words"), [("colbert", "embed_multi_vector"),
                                              ("ubin", "embed_packed")])  # fmt: skip
def test_langchain_embeddings_refuse_other_kinds_at_the_first_call(
    fake: FakeInfinity, model: str, words: str
) -> None:
    from infinity_rag.langchain import InfinityEmbeddings

    with make_client(fake) as client:
        embeddings = InfinityEmbeddings(model=model, client=client)
        with pytest.raises(VectorKindError, match=f"InfinityEmbeddings gives one float.*{words}"):
            embeddings.embed_documents(["a b", "c"])
        with pytest.raises(VectorKindError, match=words):
            asyncio.run(embeddings.aembed_query("a"))


@pytest.mark.parametrize(("model", "words"), [("colbert", "MultiVectorConfig"),
                                              ("bin", "Hamming")])  # fmt: skip
def test_llama_index_embedding_refuses_other_kinds_at_the_first_call(
    fake: FakeInfinity, model: str, words: str
) -> None:
    from infinity_rag.llama_index import InfinityEmbedding

    with make_client(fake) as client:
        embedding = InfinityEmbedding(model_name=model, client=client)
        with pytest.raises(VectorKindError, match=f"InfinityEmbedding gives one float.*{words}"):
            embedding.get_text_embedding_batch(["a b", "c"])
        with pytest.raises(VectorKindError, match=words):
            asyncio.run(embedding.aget_query_embedding("a"))


@pytest.mark.parametrize(
    ("modality", "uri"), [("image", "data:image/png;base64,"), ("audio", "data:audio/wav;base64,")]
)
def test_vector_shape_probes_a_media_model_with_media_of_its_own(
    fake: FakeInfinity, modality: str, uri: str
) -> None:
    # A default probe of the modality's own kind (the text probe made these always raise).
    with make_client(fake) as client:
        shape = client.vector_shape("clip", modality=modality)  # type: ignore[arg-type]
    assert shape == VectorShape(DIM)
    (body,) = fake.bodies
    assert body["modality"] == modality
    assert body["input"][0].startswith(uri)
