"""embed_stream / aembed_stream and as_numpy=True against a real Infinity server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from infinity_rag import EmbeddingArrayResult, EmbeddingResult, InfinityClient
from integration_tests.conftest import ServerInfo

N = 5_000
TOPICS = ["rivers", "compilers", "bread", "orbits", "violins", "tides", "glaciers", "ledgers"]


def passage(i: int) -> str:
    """Short (the server's time grows with the length), distinct texts."""
    return f"{TOPICS[i % len(TOPICS)]} {i * 7919 % 10007}"


def passages(n: int) -> Iterator[str]:
    """A generator, as over a corpus on disk: nothing is held."""
    return (passage(i) for i in range(n))


async def apassages(n: int) -> AsyncIterator[str]:
    for i in range(n):
        yield passage(i)


@pytest.fixture(scope="module")
def reference(infinity_server: ServerInfo) -> np.ndarray[tuple[int, int], np.dtype[np.float64]]:
    """embed() of the 5,000 passages, computed once."""
    with InfinityClient(base_url=infinity_server.url, api_key=infinity_server.api_key) as client:
        result = client.embed([passage(i) for i in range(N)], model=infinity_server.embed_model)
    return np.array(result.embeddings)


def stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("infinity-rag-stream")]


def open_sockets() -> int:
    fds = os.listdir("/proc/self/fd")
    return sum(1 for fd in fds if _link(fd).startswith("socket:"))


def _link(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def test_embed_stream_over_a_generator_equals_embed(
    client: InfinityClient, infinity_server: ServerInfo, reference: np.ndarray
) -> None:
    sizes = []
    rows: list[list[float]] = []
    for result in client.embed_stream(passages(N), model=infinity_server.embed_model):
        assert isinstance(result, EmbeddingResult)
        sizes.append(len(result))
        rows.extend(result.embeddings)
    assert sizes == [256] * 19 + [N - 19 * 256]
    assert np.abs(np.array(rows) - reference).max() < 1e-5
    assert stream_threads() == []


async def test_aembed_stream_over_an_async_generator_equals_embed(
    aclient: InfinityClient, infinity_server: ServerInfo, reference: np.ndarray
) -> None:
    chunks = []
    stream = aclient.aembed_stream(
        apassages(N), model=infinity_server.embed_model, batch_size=500, as_numpy=True
    )
    async for result in stream:
        assert isinstance(result, EmbeddingArrayResult)
        chunks.append(result.embeddings)
    assert [len(c) for c in chunks] == [500] * 10
    assert np.abs(np.vstack(chunks) - reference).max() < 1e-5


@pytest.mark.parametrize("fmt", ["base64", "float"])
async def test_as_numpy_equals_the_list_path(
    client: InfinityClient, aclient: InfinityClient, infinity_server: ServerInfo, fmt: str
) -> None:
    texts = [passage(i) for i in range(100)]
    options = {"model": infinity_server.embed_model, "encoding_format": fmt, "batch_size": 32}
    lists = client.embed(texts, **options)  # type: ignore[call-overload]
    array = client.embed(texts, as_numpy=True, **options)  # type: ignore[call-overload]
    aarray = await aclient.aembed(texts, as_numpy=True, **options)  # type: ignore[call-overload]
    for result in (array, aarray):
        assert result.embeddings.dtype == np.float32
        assert result.embeddings.shape == (100, infinity_server.dim)
        assert np.abs(result.embeddings - np.array(lists.embeddings)).max() < 1e-6
    assert array.usage == lists.usage


async def test_as_numpy_with_dimensions(
    client: InfinityClient, infinity_server: ServerInfo
) -> None:
    texts = [passage(i) for i in range(40)]
    full = client.embed(texts, model=infinity_server.embed_model, as_numpy=True)
    cut = client.embed(texts, model=infinity_server.embed_model, dimensions=64, as_numpy=True)
    assert cut.embeddings.shape == (40, 64)
    assert np.abs(cut.embeddings - full.embeddings[:, :64]).max() < 1e-6


def test_leaving_a_stream_early_leaves_nothing_behind(
    client: InfinityClient, infinity_server: ServerInfo
) -> None:
    client.embed(["warm the pool"], model=infinity_server.embed_model)
    sockets = open_sockets()
    for _ in client.embed_stream(passages(10**9), model=infinity_server.embed_model, batch_size=16):
        break
    assert stream_threads() == []
    # The requests that were in flight finished; their connections are back in the pool.
    assert open_sockets() <= sockets + client.max_concurrency
    again = client.embed(["still works"], model=infinity_server.embed_model)
    assert len(again) == 1


async def test_leaving_an_async_stream_early_cancels_its_requests(
    aclient: InfinityClient, infinity_server: ServerInfo
) -> None:
    await aclient.aembed(["warm the pool"], model=infinity_server.embed_model)
    sockets = open_sockets()
    before = {t for t in asyncio.all_tasks() if not t.done()}
    stream = aclient.aembed_stream(
        passages(10**9), model=infinity_server.embed_model, batch_size=16
    )
    async with contextlib.aclosing(stream):
        async for _ in stream:
            break
    assert {t for t in asyncio.all_tasks() if not t.done()} - before == set()
    # A cancelled request's connection is closed rather than returned half-read.
    assert open_sockets() <= sockets + aclient.max_concurrency
    again = await aclient.aembed(["still works"], model=infinity_server.embed_model)
    assert len(again) == 1
