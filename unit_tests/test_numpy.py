"""as_numpy=True: one (n, d) float32 array, equal to the list path, numpy optional."""

from __future__ import annotations

import base64
import json
import struct
import sys
from typing import Any

import httpx
import numpy as np
import pytest

from infinity_rag import (
    EmbeddingArrayResult,
    EmbeddingResult,
    InfinityClient,
    InvalidResponseError,
    Usage,
)
from infinity_rag import _protocol as protocol
from unit_tests.conftest import make_client
from unit_tests.fake_infinity import FakeInfinity, vector_for

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 20
TEXTS = [f"passage {i} " * (i % 5 + 1) for i in range(11)]


def expected(texts: list[str], dim: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.array([vector_for(t, dim)[:dim] for t in texts], dtype=np.float32)


@pytest.mark.parametrize("fmt", ["base64", "float"])
def test_array_equals_the_list_path(fake: FakeInfinity, fmt: str) -> None:
    fake.dim = 7
    with make_client(fake, batch_size=3, max_concurrency=3) as client:
        array = client.embed(TEXTS, model="embedder", encoding_format=fmt, as_numpy=True)
        lists = client.embed(TEXTS, model="embedder", encoding_format=fmt)
    assert isinstance(array, EmbeddingArrayResult)
    assert isinstance(array.embeddings, np.ndarray)
    assert array.embeddings.dtype == np.float32
    assert array.embeddings.shape == (11, 7)
    assert array.embeddings.flags.c_contiguous
    # The fake answers each chunk in reverse order: the rows are put back in input order.
    np.testing.assert_array_equal(array.embeddings, np.array(lists.embeddings, dtype=np.float32))
    np.testing.assert_array_equal(array.embeddings, expected(TEXTS, 7))
    assert array.model == lists.model == "embedder"
    assert array.usage == lists.usage


@pytest.mark.parametrize("fmt", ["base64", "float"])
async def test_async_array_equals_the_list_path(fake: FakeInfinity, fmt: str) -> None:
    with make_client(fake, batch_size=2) as client:
        array = await client.aembed(TEXTS, model="embedder", encoding_format=fmt, as_numpy=True)
        lists = await client.aembed(TEXTS, model="embedder", encoding_format=fmt)
    np.testing.assert_array_equal(array.embeddings, np.array(lists.embeddings, dtype=np.float32))


def test_base64_is_not_decoded_through_python_floats(
    fake: FakeInfinity, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(data: str) -> list[float]:
        raise AssertionError("the list decoder was used")

    monkeypatch.setattr(protocol, "decode_base64_vector", refuse)
    with make_client(fake, batch_size=4) as client:
        result = client.embed(TEXTS, model="embedder", as_numpy=True)
    np.testing.assert_array_equal(result.embeddings, expected(TEXTS, fake.dim))


@pytest.mark.parametrize("fmt", ["base64", "float"])
def test_dimensions_truncate_on_both_paths(fake: FakeInfinity, fmt: str) -> None:
    fake.dim = 8
    with make_client(fake, batch_size=5) as client:
        result = client.embed(
            TEXTS, model="embedder", encoding_format=fmt, dimensions=3, as_numpy=True
        )
    assert fake.bodies[0]["dimensions"] == 3
    np.testing.assert_array_equal(result.embeddings, expected(TEXTS, 8)[:, :3])


def ignore_dimensions(fake: FakeInfinity) -> list[int]:
    """Answer like a proxy that drops ``dimensions`` (LiteLLM): full-length vectors.

    Returns the list of the lengths of the vectors sent in full."""
    sent: list[int] = []

    def hook(request: httpx.Request) -> httpx.Response | None:
        body = json.loads(request.content)
        if body.pop("dimensions", None) is None:
            return None
        fake.hook = None
        try:
            response = fake.handle(httpx.Request("POST", request.url, json=body))
        finally:
            fake.hook = hook
        sent.append(fake.dim)
        return response

    fake.hook = hook
    return sent


@pytest.mark.parametrize("fmt", ["base64", "float"])
def test_dimensions_truncate_what_a_proxy_sent_in_full(fake: FakeInfinity, fmt: str) -> None:
    fake.dim = 6
    sent_in_full = ignore_dimensions(fake)
    with make_client(fake, batch_size=4) as client:
        array = client.embed(TEXTS, encoding_format=fmt, dimensions=2, as_numpy=True)
        lists = client.embed(TEXTS, encoding_format=fmt, dimensions=2)
        with pytest.raises(InvalidResponseError, match="asked for 9 dimensions, the model's"):
            client.embed(TEXTS, encoding_format=fmt, dimensions=9, as_numpy=True)
    assert sent_in_full[0] == 6
    assert array.embeddings.shape == (11, 2)
    np.testing.assert_array_equal(array.embeddings, np.array(lists.embeddings, dtype=np.float32))


def test_images_and_audio_give_arrays(fake: FakeInfinity) -> None:
    with make_client(fake) as client:
        images = client.embed_images([PNG] * 40, model="clip", as_numpy=True)
        audio = client.embed_audio([WAV, WAV], model="clip", as_numpy=True)
        listed = client.embed_images([PNG] * 40, model="clip")
    assert images.embeddings.shape == (40, fake.dim)
    assert audio.embeddings.shape == (2, fake.dim)
    np.testing.assert_array_equal(images.embeddings, np.array(listed.embeddings, np.float32))


async def test_async_images_and_audio_give_arrays(fake: FakeInfinity) -> None:
    with make_client(fake) as client:
        images = await client.aembed_images([PNG] * 3, model="clip", as_numpy=True)
        audio = await client.aembed_audio([WAV], model="clip", as_numpy=True)
    assert images.embeddings.shape == (3, fake.dim)
    assert audio.embeddings.shape == (1, fake.dim)


def test_empty_input_gives_an_empty_array_without_a_request(fake: FakeInfinity) -> None:
    with make_client(fake) as client:
        plain = client.embed([], as_numpy=True)
        truncated = client.embed([], dimensions=5, as_numpy=True)
    assert plain.embeddings.shape == (0, 0)
    assert truncated.embeddings.shape == (0, 5)
    assert len(plain) == 0
    assert fake.requests == []


def test_the_result_behaves_like_embedding_result(client: InfinityClient) -> None:
    result = client.embed(["a", "b", "c", "d"], model="embedder", as_numpy=True)
    assert len(result) == 4
    rows = list(result)
    assert len(rows) == 4
    np.testing.assert_array_equal(rows[2], result[2])
    np.testing.assert_array_equal(result[-1], np.array(vector_for("d"), np.float32))
    same = EmbeddingArrayResult(result.embeddings.copy(), result.model, result.usage)
    assert same == result
    assert EmbeddingArrayResult(result.embeddings * 2, result.model, result.usage) != result
    assert result != EmbeddingResult([], result.model)
    with pytest.raises(TypeError):
        hash(result)


def _answer(embeddings: list[Any]) -> httpx.Response:
    data = [{"object": "embedding", "embedding": e, "index": i} for i, e in enumerate(embeddings)]
    return httpx.Response(200, json={"data": data, "model": "m", "usage": {}})


def _b64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


@pytest.mark.parametrize(
    ("embeddings", "message"),
    [
        ([[1.0, 2.0], [1.0]], "embedding 1 has 1 values where the others have 2"),
        ([_b64([1.0, 2.0]), _b64([1.0, 2.0, 3.0])], "embedding 1 has 3 values"),
        ([_b64([1.0]), "QUJD"], "3 bytes, not a whole number of float32"),
        ([[1.0, "x"], [1.0, 2.0]], "embedding 0 holds a value that is not a number"),
        ([[1.0, 2.0], None], "embedding 1 is neither a list nor base64"),
    ],
)
def test_answers_that_do_not_make_an_array_are_refused(
    fake: FakeInfinity, embeddings: list[Any], message: str
) -> None:
    fake.hook = lambda request: _answer(embeddings)
    with make_client(fake) as client, pytest.raises(InvalidResponseError, match=message):
        client.embed(["a", "b"], as_numpy=True)


def test_usage_sums_over_chunks(fake: FakeInfinity) -> None:
    with make_client(fake, batch_size=2) as client:
        result = client.embed(["ab", "cde", "f"], as_numpy=True)
    assert result.usage == Usage(6, 6)


# --- numpy missing ---------------------------------------------------------------------------


@pytest.fixture
def no_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import numpy`` fails, as on a machine without the [numpy] extra."""
    monkeypatch.setitem(sys.modules, "numpy", None)


@pytest.mark.usefixtures("no_numpy")
async def test_without_numpy_as_numpy_names_the_extra(fake: FakeInfinity) -> None:
    hint = r'pip install "infinity-rag\[numpy\]"'
    with make_client(fake) as client:
        with pytest.raises(ImportError, match=hint):
            client.embed(["a"], as_numpy=True)
        with pytest.raises(ImportError, match=hint):
            await client.aembed(["a"], as_numpy=True)
        with pytest.raises(ImportError, match=hint):
            client.embed_images([PNG], as_numpy=True)
        with pytest.raises(ImportError, match=hint):
            client.embed_stream(iter(["a"]), as_numpy=True)  # at the call, not at first next()
        with pytest.raises(ImportError, match=hint):
            client.aembed_stream(["a"], as_numpy=True)
        # The list path does not need numpy.
        assert client.embed(["a"]).embeddings == [vector_for("a")]
    assert len(fake.requests) == 1
