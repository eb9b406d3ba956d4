"""embed_stream / aembed_stream: lazy, in order, a bounded window, nothing left behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest

from infinity_rag import (
    EmbeddingArrayResult,
    EmbeddingResult,
    InfinityClient,
    InvalidRequestError,
)
from unit_tests.conftest import FAKE_URL
from unit_tests.fake_infinity import FakeInfinity, vector_for


@dataclass
class Tracker:
    """Counts the requests in flight at the fake server, and the order they finish in."""

    #: Seconds the server takes for a request, from the first text of its chunk.
    delay: Callable[[str], float] = lambda first: 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    started: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    cancelled: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self, request: httpx.Request) -> tuple[str, float]:
        first = json.loads(request.content)["input"][0]
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.started.append(first)
        return first, self.delay(first)

    def leave(self, first: str, done: bool) -> None:
        with self.lock:
            self.in_flight -= 1
            if done:
                self.finished.append(first)
            else:
                self.cancelled += 1


def stream_client(fake: FakeInfinity, tracker: Tracker, **kwargs: object) -> InfinityClient:
    """A client whose requests pass through ``tracker`` (sync: threads; async: tasks)."""

    def hook(request: httpx.Request) -> None:
        first, delay = tracker.enter(request)
        time.sleep(delay)
        tracker.leave(first, done=True)

    async def handle_async(request: httpx.Request) -> httpx.Response:
        first, delay = tracker.enter(request)
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            tracker.leave(first, done=False)
            raise
        tracker.leave(first, done=True)
        return fake.handle(request)

    def handle_sync(request: httpx.Request) -> httpx.Response:
        hook(request)
        return fake.handle(request)

    return InfinityClient(
        base_url=FAKE_URL,
        http_client=httpx.Client(transport=httpx.MockTransport(handle_sync)),
        http_async_client=httpx.AsyncClient(transport=httpx.MockTransport(handle_async)),
        **kwargs,  # type: ignore[arg-type]
    )


def texts_(n: int) -> list[str]:
    return [f"t{i}" for i in range(n)]


def flat(results: list[EmbeddingResult]) -> list[list[float]]:
    return [vector for result in results for vector in result.embeddings]


def sent_texts(fake: FakeInfinity) -> list[str]:
    """Every text sent, in input order (concurrent requests reach the fake in any order)."""
    return sorted((t for body in fake.bodies for t in body["input"]), key=lambda t: int(t[1:]))


def other_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}


class Counted:
    """A lazy source that counts how many items were taken from it."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.taken = 0

    def __iter__(self) -> Iterator[str]:
        for i in range(self.n):
            self.taken += 1
            yield f"t{i}"

    async def aiter(self) -> AsyncIterator[str]:
        for text in self:
            yield text


def fail_at(k: int, stream: Iterator[EmbeddingResult]) -> None:
    """A consumer that fails on the k-th result."""
    for i, _ in enumerate(stream):
        if i == k:
            raise RuntimeError("consumer failed")


async def afail_at(k: int, stream: AsyncGenerator[EmbeddingResult, None]) -> None:
    """Async :func:`fail_at`, closing the stream on the way out."""
    async with contextlib.aclosing(stream):
        i = 0
        async for _ in stream:
            if i == k:
                raise RuntimeError("consumer failed")
            i += 1


async def acollect(stream: AsyncIterator[EmbeddingResult], into: list[EmbeddingResult]) -> None:
    async for result in stream:
        into.append(result)


def even_chunks_slow(first: str) -> float:
    """Chunks 0, 2, 4 ... (batch of 3) take longer: later chunks finish first."""
    return 0.04 if (int(first[1:]) // 3) % 2 == 0 else 0.0


# --- order and window ------------------------------------------------------------------------


def test_results_come_in_input_order_when_chunks_finish_out_of_order(fake: FakeInfinity) -> None:
    tracker = Tracker(delay=even_chunks_slow)
    texts = texts_(20)
    with stream_client(fake, tracker, batch_size=3, max_concurrency=3) as client:
        results = list(client.embed_stream(iter(texts), model="embedder"))
    assert [len(r) for r in results] == [3, 3, 3, 3, 3, 3, 2]
    assert flat(results) == [vector_for(t) for t in texts]
    assert tracker.finished != sorted(tracker.finished, key=lambda t: int(t[1:]))
    assert all(r.model == "embedder" for r in results)


async def test_async_results_come_in_input_order(fake: FakeInfinity) -> None:
    tracker = Tracker(delay=even_chunks_slow)
    texts = texts_(20)
    async with stream_client(fake, tracker, batch_size=3, max_concurrency=3) as client:
        results = [r async for r in client.aembed_stream(iter(texts), model="embedder")]
    assert flat(results) == [vector_for(t) for t in texts]
    assert tracker.finished != sorted(tracker.finished, key=lambda t: int(t[1:]))


def test_at_most_max_concurrency_requests_in_flight(fake: FakeInfinity) -> None:
    tracker = Tracker(delay=lambda first: 0.05)
    with stream_client(fake, tracker, batch_size=2) as client:
        results = list(client.embed_stream(texts_(40), max_concurrency=3, model="embedder"))
    assert len(results) == 20
    assert tracker.max_in_flight == 3


async def test_async_at_most_max_concurrency_requests_in_flight(fake: FakeInfinity) -> None:
    tracker = Tracker(delay=lambda first: 0.005)
    async with stream_client(fake, tracker, batch_size=2, max_concurrency=4) as client:
        results = [r async for r in client.aembed_stream(texts_(40), model="embedder")]
    assert len(results) == 20
    assert tracker.max_in_flight == 4


def test_the_source_is_read_no_further_than_the_window(fake: FakeInfinity) -> None:
    source = Counted(10_000)
    with stream_client(fake, Tracker(), batch_size=10, max_concurrency=3) as client:
        for k, result in enumerate(client.embed_stream(source, model="embedder")):
            assert len(result) == 10
            # the chunk handed out, and at most max_concurrency chunks read after it
            assert source.taken <= (k + 1 + 3) * 10
            if k == 5:
                break
    assert source.taken <= 9 * 10


@pytest.mark.parametrize("kind", ["sync source", "async source"])
async def test_async_stream_reads_its_source_lazily(fake: FakeInfinity, kind: str) -> None:
    source = Counted(10_000)
    texts = source.aiter() if kind == "async source" else source
    async with stream_client(fake, Tracker(), batch_size=10, max_concurrency=2) as client:
        stream = client.aembed_stream(texts, model="embedder")
        async with contextlib.aclosing(stream):
            k = 0
            async for result in stream:
                assert len(result) == 10
                assert source.taken <= (k + 1 + 2) * 10
                k += 1
                if k == 4:
                    break
    assert source.taken <= 7 * 10


async def test_async_stream_over_an_async_iterable_equals_aembed(fake: FakeInfinity) -> None:
    texts = texts_(25)
    async with stream_client(fake, Tracker(), batch_size=4) as client:
        streamed = [r async for r in client.aembed_stream(Counted(25).aiter(), model="embedder")]
        whole = await client.aembed(texts, model="embedder", batch_size=4)
    assert flat(streamed) == whole.embeddings
    assert [len(r) for r in streamed] == [4, 4, 4, 4, 4, 4, 1]


def test_an_empty_source_yields_nothing_and_sends_nothing(fake: FakeInfinity) -> None:
    tracker = Tracker()
    with stream_client(fake, tracker) as client:
        assert list(client.embed_stream(iter([]))) == []
    assert tracker.started == []


# --- leaving early ---------------------------------------------------------------------------


def test_break_sends_nothing_more_and_leaves_no_thread(fake: FakeInfinity) -> None:
    tracker = Tracker(delay=lambda first: 0.02)
    with stream_client(fake, tracker, batch_size=5, max_concurrency=4) as client:
        for _ in client.embed_stream(Counted(1_000_000), model="embedder"):
            break
        assert tracker.in_flight == 0  # nothing left running
        sent = len(tracker.started)
        time.sleep(0.1)
    assert sent <= 1 + 4
    assert len(tracker.started) == sent
    assert tracker.in_flight == 0


def test_an_exception_in_the_loop_leaves_no_thread(fake: FakeInfinity) -> None:
    tracker = Tracker(delay=lambda first: 0.01)
    with stream_client(fake, tracker, batch_size=5, max_concurrency=4) as client:
        with pytest.raises(RuntimeError, match="consumer failed"):
            fail_at(2, client.embed_stream(Counted(1_000_000), model="embedder"))
        assert tracker.in_flight == 0  # nothing left running
    assert tracker.in_flight == 0
    assert len(tracker.started) <= 3 + 4


def test_close_leaves_no_thread(fake: FakeInfinity) -> None:
    tracker = Tracker(delay=lambda first: 0.01)
    with stream_client(fake, tracker, batch_size=5, max_concurrency=3) as client:
        stream = client.embed_stream(Counted(1_000_000), model="embedder")
        next(stream)
        assert tracker.started  # requests went out
        stream.close()
        assert tracker.in_flight == 0  # nothing left running
        with pytest.raises(StopIteration):
            next(stream)
    assert tracker.in_flight == 0


def test_a_failed_request_stops_the_stream_and_leaves_no_thread(fake: FakeInfinity) -> None:
    tracker = Tracker(delay=lambda first: 0.005)
    texts = texts_(30)

    def fail_third_chunk(request: httpx.Request) -> httpx.Response | None:
        if json.loads(request.content)["input"][0] == "t6":
            return httpx.Response(422, json={"detail": "bad chunk"})
        return None

    fake.hook = fail_third_chunk
    got = []
    with stream_client(fake, tracker, batch_size=3, max_concurrency=2) as client:
        with pytest.raises(InvalidRequestError, match="bad chunk"):
            got.extend(client.embed_stream(iter(texts), model="embedder"))
        assert tracker.in_flight == 0  # nothing left running
    assert flat(got) == [vector_for(t) for t in texts[:6]]
    assert len(tracker.started) <= 3 + 2


async def test_async_break_with_aclosing_cancels_what_is_in_flight(fake: FakeInfinity) -> None:
    tracker = Tracker(delay=lambda first: 0.0 if first == "t0" else 10.0)
    async with stream_client(fake, tracker, batch_size=5, max_concurrency=4) as client:
        before = other_tasks()
        started = time.monotonic()
        stream = client.aembed_stream(Counted(1_000_000), model="embedder")
        async with contextlib.aclosing(stream):
            async for _ in stream:
                break
        assert other_tasks() - before == set()
    assert time.monotonic() - started < 5  # not waiting for the 10 s requests
    # Everything sent but the first chunk was cancelled (the window was refilled before the
    # first result was handed out: that last task may be cancelled before it sends).
    assert tracker.finished == ["t0"]
    assert tracker.cancelled == len(tracker.started) - 1 >= 3
    assert tracker.in_flight == 0


async def test_async_break_without_aclosing_cancels_soon(fake: FakeInfinity) -> None:
    tracker = Tracker(delay=lambda first: 0.0 if first == "t0" else 10.0)
    async with stream_client(fake, tracker, batch_size=5, max_concurrency=3) as client:
        before = other_tasks()
        async for _ in client.aembed_stream(Counted(1_000_000), model="embedder"):
            break
        # The event loop closes an abandoned async generator itself (its asyncgen hooks).
        for _ in range(20):
            if not other_tasks() - before:
                break
            await asyncio.sleep(0.01)
        assert other_tasks() - before == set()
    assert tracker.finished == ["t0"]
    assert tracker.cancelled == len(tracker.started) - 1 >= 2


async def test_async_exception_in_the_loop_cancels_what_is_in_flight(fake: FakeInfinity) -> None:
    tracker = Tracker(delay=lambda first: 0.0 if first in ("t0", "t5") else 10.0)
    async with stream_client(fake, tracker, batch_size=5, max_concurrency=3) as client:
        before = other_tasks()
        stream = client.aembed_stream(Counted(1_000_000), model="embedder")
        with pytest.raises(RuntimeError, match="consumer failed"):
            await afail_at(1, stream)
        assert other_tasks() - before == set()
    assert tracker.finished == ["t0", "t5"]
    assert tracker.cancelled == len(tracker.started) - 2 >= 1


async def test_async_failed_request_cancels_the_others(fake: FakeInfinity) -> None:
    tracker = Tracker(delay=lambda first: 0.0 if first == "t5" else 10.0 if first != "t0" else 0)

    def fail_second_chunk(request: httpx.Request) -> httpx.Response | None:
        if json.loads(request.content)["input"][0] == "t5":
            return httpx.Response(400, json={"error": {"message": "bad chunk"}})
        return None

    fake.hook = fail_second_chunk
    async with stream_client(fake, tracker, batch_size=5, max_concurrency=3) as client:
        before = other_tasks()
        got = []
        with pytest.raises(InvalidRequestError, match="bad chunk"):
            await acollect(client.aembed_stream(Counted(100), model="embedder"), got)
        assert other_tasks() - before == set()
    assert flat(got) == [vector_for(t) for t in texts_(5)]
    assert tracker.cancelled >= 1


# --- bad items -------------------------------------------------------------------------------


def with_bad_item(n: int, bad: object) -> Iterator[object]:
    for i in range(n):
        yield f"t{i}"
    yield bad
    yield "after"


def test_a_bad_item_gives_its_position_in_the_whole_stream(fake: FakeInfinity) -> None:
    tracker = Tracker()
    got = []
    with stream_client(fake, tracker, batch_size=1000, max_concurrency=4) as client:
        with pytest.raises(TypeError, match=r"texts\[70001\] must be a string, got int"):
            got.extend(client.embed_stream(with_bad_item(70_001, 5), model="embedder"))  # type: ignore[arg-type]
        assert tracker.in_flight == 0  # nothing left running
    # Every chunk before the bad one was handed out; the bad one was never sent.
    assert sum(len(r) for r in got) == 70_000
    assert len(tracker.started) == 70
    assert "t70000" not in tracker.started


def test_a_text_too_long_gives_its_position(fake: FakeInfinity) -> None:
    got = []
    with stream_client(fake, Tracker(), batch_size=3) as client:
        with pytest.raises(ValueError, match=r"texts\[7\] has 122,881 characters"):
            got.extend(client.embed_stream(with_bad_item(7, "x" * 122_881), model="embedder"))  # type: ignore[arg-type]
    assert flat(got) == [vector_for(t) for t in texts_(6)]
    assert sent_texts(fake) == texts_(6)


@pytest.mark.parametrize("kind", ["sync source", "async source"])
async def test_async_bad_item_gives_its_position(fake: FakeInfinity, kind: str) -> None:
    async def agen() -> AsyncIterator[object]:
        for item in with_bad_item(11, None):
            yield item

    source = agen() if kind == "async source" else with_bad_item(11, None)
    got = []
    async with stream_client(fake, Tracker(), batch_size=4) as client:
        with pytest.raises(TypeError, match=r"texts\[11\] must be a string, got NoneType"):
            await acollect(client.aembed_stream(source, model="embedder"), got)  # type: ignore[arg-type]
    assert flat(got) == [vector_for(t) for t in texts_(8)]
    assert sent_texts(fake) == texts_(8)


def test_a_failing_source_hands_out_what_came_before_then_raises(fake: FakeInfinity) -> None:
    def source() -> Iterator[str]:
        yield from texts_(7)
        raise OSError("disk gone")

    with stream_client(fake, Tracker(), batch_size=3, max_concurrency=2) as client:
        stream = client.embed_stream(source(), model="embedder")
        assert len(next(stream)) == 3
        assert len(next(stream)) == 3
        with pytest.raises(OSError, match="disk gone"):
            next(stream)
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    ("texts", "kwargs", "error", "message"),
    [
        ("one string", {}, TypeError, r"texts must be an iterable .*of strings, got str"),
        (None, {}, TypeError, r"texts must be an iterable .*of strings, got NoneType"),
        (b"bytes", {}, TypeError, "got bytes"),
        (["a"], {"batch_size": 0}, ValueError, "batch_size"),
        (["a"], {"batch_size": 3000}, ValueError, "batch_size must be between 1 and 2048"),
        (["a"], {"max_concurrency": 0}, ValueError, "max_concurrency"),
        (["a"], {"encoding_format": "int8"}, ValueError, "encoding_format"),
        (["a"], {"dimensions": 0}, ValueError, "dimensions"),
    ],
)
def test_bad_arguments_are_refused_at_the_call(
    fake: FakeInfinity, texts: object, kwargs: dict[str, object], error: type, message: str
) -> None:
    with stream_client(fake, Tracker()) as client:
        with pytest.raises(error, match=message):
            client.embed_stream(texts, **kwargs)  # type: ignore[call-overload]
        with pytest.raises(error, match=message):
            client.aembed_stream(texts, **kwargs)  # type: ignore[call-overload]
    assert fake.requests == []


# --- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["base64", "float"])
def test_numpy_stream_equals_numpy_embed(fake: FakeInfinity, fmt: str) -> None:
    texts = texts_(23)
    with stream_client(fake, Tracker(delay=even_chunks_slow), batch_size=3) as client:
        chunks = list(client.embed_stream(iter(texts), encoding_format=fmt, as_numpy=True))
        whole = client.embed(texts, encoding_format=fmt, as_numpy=True)
    assert all(isinstance(c, EmbeddingArrayResult) for c in chunks)
    assert [c.embeddings.shape for c in chunks] == [(3, 4)] * 7 + [(2, 4)]
    np.testing.assert_array_equal(np.vstack([c.embeddings for c in chunks]), whole.embeddings)


async def test_async_numpy_stream_with_dimensions(fake: FakeInfinity) -> None:
    texts = texts_(10)
    async with stream_client(fake, Tracker(), batch_size=4) as client:
        chunks = [c async for c in client.aembed_stream(texts, dimensions=2, as_numpy=True)]
    assert [c.embeddings.shape for c in chunks] == [(4, 2), (4, 2), (2, 2)]
    np.testing.assert_array_equal(
        np.vstack([c.embeddings for c in chunks]),
        np.array([vector_for(t)[:2] for t in texts], np.float32),
    )
    assert all(body["dimensions"] == 2 for body in fake.bodies)


def test_stream_options_reach_the_request(fake: FakeInfinity) -> None:
    with stream_client(fake, Tracker(), batch_size=256) as client:
        list(
            client.embed_stream(
                texts_(5),
                model="embedder",
                encoding_format="float",
                dimensions=3,
                extra_body={"user": "me"},
                batch_size=2,
            )
        )
    bodies = sorted(fake.bodies, key=lambda body: body["input"][0])
    assert [len(b["input"]) for b in bodies] == [2, 2, 1]
    assert bodies[0] == {
        "model": "embedder",
        "input": ["t0", "t1"],
        "encoding_format": "float",
        "dimensions": 3,
        "user": "me",
    }
