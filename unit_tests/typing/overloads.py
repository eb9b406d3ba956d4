"""Checked by mypy --strict in test_typing.py (never run): each mode has its return type."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import assert_type

import numpy as np
from numpy.typing import NDArray

from infinity_rag import (
    EmbeddingArrayResult,
    EmbeddingResult,
    InfinityClient,
    MultiVectorArrayResult,
    MultiVectorResult,
    PackedEmbeddingArrayResult,
    PackedEmbeddingResult,
    VectorShape,
)


async def check(client: InfinityClient, flag: bool) -> None:
    assert_type(client.embed(["a"]), EmbeddingResult)
    assert_type(client.embed(["a"], as_numpy=False, model="m"), EmbeddingResult)
    assert_type(client.embed(["a"], as_numpy=True, dimensions=2), EmbeddingArrayResult)
    assert_type(client.embed(["a"], as_numpy=flag), EmbeddingResult | EmbeddingArrayResult)
    assert_type(await client.aembed(["a"]), EmbeddingResult)
    assert_type(await client.aembed(["a"], as_numpy=True), EmbeddingArrayResult)
    assert_type(client.embed_images([b"x"], as_numpy=True), EmbeddingArrayResult)
    assert_type(await client.aembed_images([b"x"]), EmbeddingResult)
    assert_type(client.embed_audio([b"x"], as_numpy=True), EmbeddingArrayResult)
    assert_type(await client.aembed_audio([b"x"], as_numpy=True), EmbeddingArrayResult)
    assert_type(client.embed_stream(iter(["a"])), Generator[EmbeddingResult, None, None])
    assert_type(
        client.embed_stream(iter(["a"]), as_numpy=True, batch_size=2),
        Generator[EmbeddingArrayResult, None, None],
    )
    assert_type(client.aembed_stream(["a"]), AsyncGenerator[EmbeddingResult, None])
    assert_type(
        client.aembed_stream(["a"], as_numpy=True), AsyncGenerator[EmbeddingArrayResult, None]
    )
    array = client.embed(["a"], as_numpy=True)
    assert_type(array.embeddings, NDArray[np.float32])
    assert_type(array[0], NDArray[np.float32])
    assert_type(client.embed(["a"]).embeddings, list[list[float]])
    # Multi-vector and bit-packed: their own methods and results.
    assert_type(client.embed_multi_vector(["a"]), MultiVectorResult)
    assert_type(client.embed_multi_vector(["a"], as_numpy=True), MultiVectorArrayResult)
    assert_type(
        client.embed_multi_vector([b"x"], modality="image", as_numpy=flag),
        MultiVectorResult | MultiVectorArrayResult,
    )
    assert_type(await client.aembed_multi_vector(["a"], model="m"), MultiVectorResult)
    assert_type(client.embed_multi_vector(["a"]).embeddings, list[list[list[float]]])
    assert_type(client.embed_multi_vector(["a"], as_numpy=True)[0], NDArray[np.float32])
    assert_type(client.embed_packed(["a"]), PackedEmbeddingResult)
    assert_type(client.embed_packed(["a"]).embeddings, list[list[int]])
    assert_type(await client.aembed_packed(["a"], as_numpy=True), PackedEmbeddingArrayResult)
    assert_type(
        client.embed_packed(["a"], as_numpy=True).embeddings, NDArray[np.uint8] | NDArray[np.int8]
    )
    assert_type(client.vector_shape("m"), VectorShape)
    assert_type(await client.avector_shape(), VectorShape)
