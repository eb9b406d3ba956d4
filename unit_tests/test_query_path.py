"""The query path's engine, through httpx.MockTransport: hedged requests, their budget, the
call's deadline, latency-aware replica choice as the client exposes it."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import threading
import time
from collections import Counter

import httpx
import pytest

from infinity_rag import InfinityClient, InfinityError, InfinityTimeoutError
from infinity_rag._hedge import HedgePolicy

URLS = ["http://a.test:7997", "http://b.test:7997"]


class Replicas:
    """Two fake replicas answering ``/embeddings``; ``slow`` maps a host to seconds of delay."""

    def __init__(self) -> None:
        self.slow: dict[str, float] = {}
        self.started: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.cancelled: Counter[str] = Counter()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.started[host] += 1
        try:
            await asyncio.sleep(self.slow.get(host, 0.002))
        except asyncio.CancelledError:
            self.cancelled[host] += 1
            raise
        self.answered[host] += 1
        return answer(request)


def answer(request: httpx.Request) -> httpx.Response:
    """An ``/embeddings`` answer: the vector [1, 0, 0, 0] per input, in the asked format."""
    body = json.loads(request.content)
    vector = [1.0, 0.0, 0.0, 0.0]
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(struct.pack("<4f", *vector)).decode()
            if body.get("encoding_format") == "base64"
            else vector,
        }
        for i in range(len(body["input"]))
    ]
    payload = {"object": "list", "data": data, "model": "m", "usage": {"prompt_tokens": 1}}
    return httpx.Response(200, json=payload)


def client_for(replicas: Replicas, **kwargs: object) -> InfinityClient:
    return InfinityClient(
        base_url=URLS,
        http_async_client=httpx.AsyncClient(transport=httpx.MockTransport(replicas.handle)),
        **kwargs,  # type: ignore[arg-type]
    )


def quick_hedges(budget: float = 1.0) -> HedgePolicy:
    return HedgePolicy(min_samples=5, budget=budget, max_tokens=50)


async def test_a_stalled_replica_is_hedged_and_the_copy_wins() -> None:
    replicas = Replicas()
    client = client_for(replicas, hedge=quick_hedges(), balancer="least-busy")
    for _ in range(10):  # latencies known: the delay is their p95
        await client.aembed(["warm"])
    replicas.slow["a.test"] = 5.0
    before = dict(replicas.started)
    started = time.monotonic()
    for _ in range(6):
        result = await client.aembed(["query"])
        assert result.embeddings == [[1.0, 0.0, 0.0, 0.0]]
    assert time.monotonic() - started < 2.0  # not one wait of 5 s
    stalled = replicas.started["a.test"] - before.get("a.test", 0)
    assert stalled >= 1  # some queries went to the stalled replica first ...
    assert replicas.cancelled["a.test"] == stalled  # ... and were all cancelled
    assert replicas.answered["b.test"] >= 6  # the copies answered


async def test_hedging_off_waits_for_the_slow_replica() -> None:
    replicas = Replicas()
    client = client_for(replicas, hedge=False, balancer="least-busy")
    for _ in range(10):
        await client.aembed(["warm"])
    replicas.slow["a.test"] = 0.5
    started = time.monotonic()
    for _ in range(2):  # least-busy takes turns: one of the two goes to a.test
        await client.aembed(["query"])
    assert time.monotonic() - started >= 0.5
    assert replicas.cancelled["a.test"] == 0


async def test_the_budget_caps_the_extra_requests() -> None:
    replicas = Replicas()
    policy = HedgePolicy(min_samples=5, budget=0.05, max_tokens=1)
    client = client_for(replicas, hedge=policy, balancer="least-busy")
    for _ in range(10):
        await client.aembed(["warm"])
    replicas.slow["a.test"] = 0.05  # every answer of a.test is past the p95
    for _ in range(40):
        await client.aembed(["query"])
    # One token to start with, 5% of 50 calls deposited: at most 3 hedges in all.
    assert policy.hedges <= 3
    assert sum(replicas.started.values()) <= 50 + 3


async def test_a_deadline_ends_the_call_and_names_the_replicas() -> None:
    replicas = Replicas()
    replicas.slow = {"a.test": 10.0, "b.test": 10.0}
    client = client_for(replicas, deadline=0.3, hedge=False)
    started = time.monotonic()
    with pytest.raises(InfinityTimeoutError, match=r"deadline of 0\.3 s; tried http://") as info:
        await client.aembed(["q"])
    assert time.monotonic() - started < 1.0
    assert info.value.urls
    await asyncio.sleep(0)
    assert sum(replicas.cancelled.values()) == sum(replicas.started.values())  # none left


def test_bad_query_path_settings_are_refused_before_any_request() -> None:
    with pytest.raises(ValueError, match="balancer must be one of 'least-busy', 'peak-ewma'"):
        InfinityClient(base_url=URLS, balancer="round-robin")
    with pytest.raises(ValueError, match="hedge must be True, False or a HedgePolicy"):
        InfinityClient(base_url=URLS, hedge="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"deadline must be a number of seconds > 0"):
        InfinityClient(base_url=URLS, deadline=0)


async def test_replicas_show_their_latency_estimate() -> None:
    replicas = Replicas()
    replicas.slow["b.test"] = 0.05
    client = client_for(replicas, hedge=False, balancer="least-busy")
    for _ in range(6):
        await client.aembed(["q"])
    latency = {state.url: state.latency for state in client.replicas()}
    a, b = latency[URLS[0]], latency[URLS[1]]
    assert a is not None
    assert b is not None
    assert b > a
    assert b >= 0.05


async def test_peak_ewma_sends_most_queries_to_the_fast_replica() -> None:
    replicas = Replicas()
    replicas.slow["b.test"] = 0.03  # ten times slower than a.test
    client = client_for(replicas, hedge=False)  # the default balancer: peak-EWMA
    for _ in range(60):
        await client.aembed(["q"])
    assert replicas.answered["a.test"] > 3 * replicas.answered["b.test"]


class Failing(Replicas):
    """Replicas that answer a status of their own after their delay (``status`` by host)."""

    def __init__(self) -> None:
        super().__init__()
        self.status: dict[str, int] = {}

    async def handle(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle(request)
        status = self.status.get(request.url.host)
        if status is None:
            return response
        return httpx.Response(status, json={"detail": f"{request.url.host} says {status}"})


async def warmed(replicas: Replicas, **kwargs: object) -> InfinityClient:
    client = client_for(replicas, hedge=quick_hedges(), balancer="least-busy", **kwargs)
    for _ in range(40):  # latencies known: the delay is their p95 (a few ms), and stays so
        await client.aembed(["warm"])  # while the test adds a slow one or two
    return client


async def test_a_first_try_failing_with_a_copy_in_flight_takes_the_copys_answer() -> None:
    replicas = Failing()
    client = await warmed(replicas, max_retries=0)
    replicas.slow = {"a.test": 0.2, "b.test": 0.3}
    replicas.status["a.test"] = 500  # after 0.2 s; the copy, sent a few ms in, answers at 0.3 s
    for _ in range(2):  # least-busy takes turns: one of the two starts on a.test
        result = await client.aembed(["query"])
        assert result.embeddings == [[1.0, 0.0, 0.0, 0.0]]
    assert replicas.answered["b.test"] >= 2


async def test_when_both_copies_fail_the_first_tries_error_is_raised() -> None:
    replicas = Failing()
    client = await warmed(replicas, max_retries=0)
    replicas.slow = {"a.test": 0.1, "b.test": 0.05}
    replicas.status = {"a.test": 500, "b.test": 503}
    errors = []
    for _ in range(2):
        with pytest.raises(InfinityError) as info:
            await client.aembed(["query"])
        errors.append(info.value)
    # The copy (on the other replica) fails first; the first try's error is the call's.
    assert {error.status_code for error in errors} == {500, 503}
    assert {error.url.split("/")[2] for error in errors} == {"a.test:7997", "b.test:7997"}


async def test_a_deadline_during_a_hedged_race_cancels_both_tries() -> None:
    replicas = Replicas()
    client = await warmed(replicas, deadline=0.3)
    replicas.slow = {"a.test": 10.0, "b.test": 10.0}
    started = time.monotonic()
    with pytest.raises(InfinityTimeoutError, match=r"deadline of 0\.3 s"):
        await client.aembed(["query"])
    assert time.monotonic() - started < 1.0
    await asyncio.sleep(0)
    assert replicas.cancelled.total() == 2  # the first try and its copy
    assert replicas.cancelled.total() == replicas.started.total() - replicas.answered.total()


def test_a_sync_query_is_hedged_too() -> None:
    # Sync calls run the same engine on the calling thread's own loop.
    replicas = Replicas()
    client = client_for(replicas, hedge=quick_hedges(), balancer="least-busy")
    for _ in range(10):
        client.embed(["warm"])
    replicas.slow["a.test"] = 5.0
    started = time.monotonic()
    for _ in range(4):
        assert client.embed(["query"]).embeddings == [[1.0, 0.0, 0.0, 0.0]]
    assert time.monotonic() - started < 2.0
    assert replicas.cancelled["a.test"] >= 1
    assert replicas.cancelled["a.test"] == replicas.started["a.test"] - replicas.answered["a.test"]


# --- sync calls: blocking sends ----------------------------------------------------------------


class TimedReplicas(Replicas):
    """The replicas behind a sync transport that honours each request's read timeout as a
    socket would (a ``ReadTimeout`` once it has passed), and records the sending threads."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def handle_sync(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.started[host] += 1
        self.threads.append(threading.current_thread().name)
        delay = self.slow.get(host, 0.002)
        timeout = request.extensions.get("timeout", {}).get("read")
        if timeout is not None and delay > timeout:
            time.sleep(timeout)
            raise httpx.ReadTimeout("timed out", request=request)
        time.sleep(delay)
        self.answered[host] += 1
        return answer(request)


def sync_client_for(replicas: TimedReplicas, **kwargs: object) -> InfinityClient:
    return InfinityClient(
        base_url=URLS,
        http_client=httpx.Client(transport=httpx.MockTransport(replicas.handle_sync)),
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_sync_query_is_sent_from_the_callers_thread() -> None:
    replicas = TimedReplicas()
    client = sync_client_for(replicas, hedge=False)  # a hedged one cannot block: see below
    assert client.embed(["q"]).embeddings == [[1.0, 0.0, 0.0, 0.0]]
    assert replicas.threads == [threading.current_thread().name]  # no hand-over


def test_a_blocking_call_past_its_deadline_raises_the_deadline_error() -> None:
    replicas = TimedReplicas()
    replicas.slow = {"a.test": 5.0, "b.test": 5.0}
    client = sync_client_for(replicas, deadline=0.3, hedge=False)
    started = time.monotonic()
    with pytest.raises(InfinityTimeoutError, match=r"deadline of 0\.3 s; tried http://"):
        client.embed(["q"])
    assert time.monotonic() - started < 1.0


def test_a_deadline_passing_in_a_blocking_try_does_not_blame_the_replica() -> None:
    replicas = TimedReplicas()
    replicas.slow = {"a.test": 5.0, "b.test": 5.0}
    client = sync_client_for(replicas, deadline=0.3, hedge=False)
    with pytest.raises(InfinityTimeoutError, match="deadline"):
        client.embed(["q"])
    assert all(state.available for state in client.replicas())  # the call ran out, not them
    assert all(state.failures == 0 for state in client.replicas())


def test_a_hedgeable_sync_query_is_not_sent_blocking_with_an_injected_client() -> None:
    # An injected sync client's reads cannot be woken by a copy's answer: a hedgeable request
    # goes through the loop (our own client's are sent blocking: see integration_tests).
    replicas = TimedReplicas()
    client = sync_client_for(replicas)  # two replicas, hedging on
    assert client.embed(["q"]).embeddings == [[1.0, 0.0, 0.0, 0.0]]
    assert replicas.threads != [threading.current_thread().name]
