"""One client over several real Infinity replicas (issue 11), and a real nginx in front of two.

Three MiniLM servers on loopback (``fleet``, shared by the module), counted on the server side
(Infinity's Prometheus ``/metrics``), and:

* requests spread over all three, least busy first, and ``client.replicas()`` agrees with what
  each server counted;
* one replica SIGKILLed in the middle of 5,000 texts (``embed`` and ``aembed``): the call
  completes, every vector equals the reference, in order; the replica is out, and once it is
  restarted on its port it gets traffic again when its backoff has passed;
* nginx round-robin over two replicas, our client given nginx's one URL, one replica killed
  mid-ingestion: nothing lost (our retries of nginx's 502s);
* the client and the LangChain / LlamaIndex embedders pickled into ``spawn`` workers
  (``multiprocessing.Pool`` for half the 5,000 texts, ``ProcessPoolExecutor`` for the other
  half): every vector equals the reference, the key in no repr on either side;
* 1,000 ``asyncio.run(client.aembed(...))`` with one client (from 4 threads, a loop per call):
  file descriptors and per-loop clients stay bounded, no ResourceWarning;
* every replica down: an ``InfinityConnectionError`` naming the URLs tried (all three for one
  request), in a time bounded by the retry policy (last: it leaves the fleet dead, and the
  module's teardown stops it anyway).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import multiprocessing
import os
import pickle
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest

from infinity_rag import EmbeddingResult, InfinityClient, InfinityConnectionError
from infinity_rag._config import DEFAULT_BATCH_SIZE
from integration_tests.conftest import Mode, close_enough, run
from integration_tests.fleet import Fleet, KillSwitch, Nginx
from integration_tests.fleet_workers import ChunkAnswer, embed_chunk, shown_forms

TEXTS = [f"replica passage {i}: a sentence about topic {i % 89} and item {i}" for i in range(5000)]

#: Short replica backoffs, so a restarted replica is back in rotation within seconds (the
#: defaults, 1 s doubling to 30 s, would make the tests wait half a minute for nothing).
REPLICA_BACKOFF = 0.5
MAX_REPLICA_BACKOFF = 4.0


def fleet_client(fleet: Fleet, **kwargs: Any) -> InfinityClient:
    options: dict[str, Any] = {
        "replica_backoff": REPLICA_BACKOFF,
        "max_replica_backoff": MAX_REPLICA_BACKOFF,
        "timeout": 60,
    }
    return InfinityClient(base_url=fleet.urls, api_key=fleet.api_key, **(options | kwargs))


@pytest.fixture(scope="module")
def reference(fleet: Fleet) -> list[list[float]]:
    """The 5,000 vectors, from one replica alone with the one-URL client (as before issue 11).
    Distinct texts give distinct vectors, so a lost, repeated or swapped vector shows."""
    with InfinityClient(base_url=fleet[0].url, api_key=fleet.api_key) as client:
        vectors = client.embed(TEXTS, model="minilm").embeddings
    assert len({tuple(round(x, 5) for x in v[:16]) for v in vectors}) == len(TEXTS)
    return vectors


@pytest.fixture
def info_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="infinity_rag"):
        yield caplog


def messages(caplog: pytest.LogCaptureFixture, level: int, *parts: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "infinity_rag"
        and r.levelno == level
        and all(part in r.getMessage() for part in parts)
    ]


# --- spread -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_requests_spread_over_every_replica_least_busy_first(
    mode: Mode, healthy_fleet: Fleet, reference: list[list[float]]
) -> None:
    texts, batch = TEXTS[:960], 16  # 60 requests, 6 at a time, over 3 replicas
    served_before = [replica.requests_served() for replica in healthy_fleet]
    client = fleet_client(healthy_fleet, batch_size=batch, max_concurrency=6, balancer="least-busy")
    assert client.base_urls == tuple(healthy_fleet.urls)
    assert client.base_url == healthy_fleet.urls[0]
    peak_in_flight = [0, 0, 0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for i, state in enumerate(client.replicas()):
                peak_in_flight[i] = max(peak_in_flight[i], state.in_flight)
            stop.wait(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = run(
            mode,
            lambda: client.embed(texts, model="minilm"),
            lambda: client.aembed(texts, model="minilm"),
        )
    finally:
        stop.set()
        watcher.join(10)
    assert close_enough(result.embeddings, reference[: len(texts)])

    served = [r.requests_served() - b for r, b in zip(healthy_fleet, served_before, strict=True)]
    states = client.replicas()
    print(f"\n{mode}: served per replica {served}, peak in flight {peak_in_flight}")  # noqa: T201
    assert [s.url for s in states] == healthy_fleet.urls
    assert sum(served) == len(texts) // batch
    # What the client counted is what each server answered (no failures: nothing else sent).
    assert [s.requests for s in states] == served
    assert all(s.failures == 0 and s.consecutive_failures == 0 for s in states)
    assert all(s.in_flight == 0 and s.out_until is None and s.available for s in states)
    # Every replica did a real share (a fair one is 20; a replica starved of CPU answers fewer) ...
    assert min(served) >= 5, served
    # ... and, 6 in flight over 3 replicas with the least busy chosen first, none took 4 at once
    # (a random or round-robin pick would pile up on a slow one).
    assert max(peak_in_flight) <= 3, peak_in_flight
    assert min(peak_in_flight) >= 1, peak_in_flight


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_bulk_embedding_spreads_over_every_replica_with_peak_ewma(
    mode: Mode, healthy_fleet: Fleet, reference: list[list[float]]
) -> None:
    # The default balancer weighs latency x requests in flight: a bulk call that keeps six
    # requests in flight still uses every replica, and nothing is lost or reordered.
    texts, batch = TEXTS[:960], 16
    served_before = [replica.requests_served() for replica in healthy_fleet]
    client = fleet_client(healthy_fleet, batch_size=batch, max_concurrency=6)
    result = run(
        mode,
        lambda: client.embed(texts, model="minilm"),
        lambda: client.aembed(texts, model="minilm"),
    )
    assert close_enough(result.embeddings, reference[: len(texts)])
    served = [r.requests_served() - b for r, b in zip(healthy_fleet, served_before, strict=True)]
    assert sum(served) == len(texts) // batch  # one-request hedges aside, a bulk call is not
    assert min(served) >= 1, served
    assert all(state.latency is not None for state in client.replicas())


# --- event loops that come and go ----------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


#: 1,000 asyncio.run calls, from 4 threads that each make a loop per task (a worker pool, a sync
#: web app calling the async API per request): the server batches their requests, so this
#: takes a quarter of the time one thread would (each call waits on the server, ~0.1-0.5 s).
LOOP_THREADS, LOOPS_PER_THREAD = 4, 250


@pytest.mark.slow
def test_a_thousand_event_loops_leave_no_sockets_nor_clients_behind(
    healthy_fleet: Fleet, reference: list[list[float]]
) -> None:
    client = fleet_client(healthy_fleet)
    texts = TEXTS[: LOOP_THREADS * LOOPS_PER_THREAD]
    for text in TEXTS[:3]:  # warm up: imports, the first connections
        asyncio.run(client.aembed([text], model="minilm"))
    gc.collect()
    baseline = open_fds()
    fds_seen: list[int] = []
    clients_seen: list[int] = []
    vectors: list[list[float] | None] = [None] * len(texts)

    def worker(first: int) -> None:
        for i in range(first, len(texts), LOOP_THREADS):
            result = asyncio.run(client.aembed([texts[i]], model="minilm"))
            vectors[i] = result.embeddings[0]
            if i % 20 == 0:
                fds_seen.append(open_fds())
                clients_seen.append(len(client._engine.loop_clients))

    unraisable: list[Any] = []
    previous_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    started = time.monotonic()
    try:
        # (process-wide: warnings raised in the worker threads are recorded too)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            with ThreadPoolExecutor(LOOP_THREADS) as pool:
                list(pool.map(worker, range(LOOP_THREADS)))
            gc.collect()
            fds_after, clients_after = open_fds(), len(client._engine.loop_clients)
    finally:
        sys.unraisablehook = previous_hook
    seconds = time.monotonic() - started
    print(  # noqa: T201
        f"\n{len(texts)} asyncio.run in {seconds:.1f} s; fds {baseline} -> max {max(fds_seen)}"
        f" -> {fds_after}; async clients max {max(clients_seen)} -> {clients_after}"
    )
    resource_warnings = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not resource_warnings, [str(w.message) for w in resource_warnings[:5]]
    assert not unraisable, [repr(u.exc_value) for u in unraisable[:5]]
    # At most one live loop per thread, each with its epoll fd, self-pipe and a socket or two.
    assert max(fds_seen) - baseline <= 5 * LOOP_THREADS, fds_seen
    assert fds_after - baseline <= 4
    assert max(clients_seen) <= LOOP_THREADS + 1, clients_seen
    assert clients_after <= 1
    assert close_enough([v or [] for v in vectors], reference[: len(texts)])
    # One request per text (and the three warm-ups), plus the hedged copies of slow ones:
    # within the budget (5% of one-request calls, and a bucket of 10 to start with).
    hedges = client._engine.hedge.hedges
    assert hedges <= 0.05 * len(texts) + 10, hedges
    assert sum(s.requests for s in client.replicas()) == len(texts) + 3 + hedges


# --- pickled into other processes ----------------------------------------------------------------


def embedders(fleet: Fleet) -> list[Any]:
    """An InfinityClient over the fleet, and the LangChain and LlamaIndex embedders built on it
    (client=), each used once (pools open) before it travels."""
    from infinity_rag.langchain import InfinityEmbeddings
    from infinity_rag.llama_index import InfinityEmbedding

    client = fleet_client(fleet)
    objects = [
        client,
        InfinityEmbeddings(model="minilm", client=client),
        InfinityEmbedding(model_name="minilm", client=client, embed_batch_size=256),
    ]
    client.embed(["warm"], model="minilm")
    asyncio.run(client.aembed(["warm"], model="minilm"))
    objects[1].embed_documents(["warm"])
    objects[2].get_text_embedding_batch(["warm"])
    return objects


def check_answers(
    answers: list[ChunkAnswer],
    span: slice,
    fleet: Fleet,
    reference: list[list[float]],
    objects: list[Any],
) -> None:
    key = fleet.api_key
    assert key is not None
    answers = sorted(answers, key=lambda a: a.start)
    assert [a.start for a in answers] == list(range(span.start, span.stop, CHUNK))
    vectors = [v for answer in answers for v in answer.vectors]
    assert close_enough(vectors, reference[span])  # every chunk, every vector, in order
    assert {a.kind for a in answers} == {
        "InfinityClient",
        "langchain.InfinityEmbeddings",
        "llama_index.InfinityEmbedding",
    }
    assert all(a.pid != os.getpid() for a in answers)  # really done in the workers
    # The replicas travelled, and the key did (the servers refuse requests without it) ...
    assert all(a.base_urls == tuple(fleet.urls) for a in answers)
    # ... and shows nowhere, in the workers nor here.
    assert all(a.key_hidden for a in answers)
    assert all(key not in text for a in answers for text in a.shown)
    assert all(key not in text for obj in objects for text in shown_forms(obj))
    assert all(key not in repr(pickle.loads(pickle.dumps(obj))) for obj in objects)


#: The 5,000 texts are shared out: the first half goes through the Pool, the second through the
#: ProcessPoolExecutor, in chunks of 250, each chunk with one of the three embedders in turn.
POOL_SPAN, EXECUTOR_SPAN, CHUNK = slice(0, 2500), slice(2500, 5000), 250


def chunk_jobs(objects: list[Any], span: slice) -> list[tuple[Any, int, list[str]]]:
    return [
        (objects[(start // CHUNK) % 3], start, TEXTS[start : start + CHUNK])
        for start in range(span.start, span.stop, CHUNK)
    ]


@pytest.mark.slow
def test_pickled_embedders_in_a_spawn_multiprocessing_pool(
    healthy_fleet: Fleet, reference: list[list[float]]
) -> None:
    objects = embedders(healthy_fleet)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        answers = pool.starmap(embed_chunk, chunk_jobs(objects, POOL_SPAN))
    check_answers(answers, POOL_SPAN, healthy_fleet, reference, objects)


@pytest.mark.slow
def test_pickled_embedders_in_a_process_pool_executor(
    healthy_fleet: Fleet, reference: list[list[float]]
) -> None:
    objects = embedders(healthy_fleet)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(embed_chunk, *job) for job in chunk_jobs(objects, EXECUTOR_SPAN)]
        answers = [future.result() for future in futures]
    check_answers(answers, EXECUTOR_SPAN, healthy_fleet, reference, objects)


# --- a replica SIGKILLed mid-call, then restarted -------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_sigkill_one_replica_mid_embed_then_it_comes_back(
    mode: Mode,
    healthy_fleet: Fleet,
    reference: list[list[float]],
    info_logs: pytest.LogCaptureFixture,
) -> None:
    client = fleet_client(healthy_fleet)  # default max_retries (2), default batch (256): 20 chunks
    victim_index = 1
    victim = healthy_fleet[victim_index]
    port = victim.port

    def mid_call() -> bool:  # a few answers back, and requests in flight to the victim
        states = client.replicas()
        return sum(s.requests for s in states) >= 6 and states[victim_index].in_flight >= 1

    with KillSwitch(victim, mid_call, watch=lambda: client.replicas()[victim_index]) as switch:
        result: EmbeddingResult = run(
            mode,
            lambda: client.embed(TEXTS, model="minilm"),
            lambda: client.aembed(TEXTS, model="minilm"),
        )
        ended = time.monotonic()
    assert switch.fired_at is not None, "the replica was never killed: the call ended too early"
    assert switch.fired_at < ended
    assert not victim.healthy()

    # Nothing lost, repeated or reordered; the server counted each text once.
    assert close_enough(result.embeddings, reference)
    assert result.usage.prompt_tokens == sum(len(text) for text in TEXTS)

    states = client.replicas()
    print(f"\n{mode}: after the kill {states}")  # noqa: T201
    assert states[victim_index].failures >= 1
    assert states[victim_index].consecutive_failures >= 1
    assert any(s.out_until is not None and not s.available for s in switch.seen)
    survivors = [s for i, s in enumerate(states) if i != victim_index]
    assert all(s.failures == 0 and s.consecutive_failures == 0 for s in survivors)
    assert all(s.in_flight == 0 for s in states)
    assert messages(info_logs, logging.WARNING, "Infinity replica", victim.url, " out ")

    # Restarted on the same port, it gets traffic again once its backoff has passed.
    restarted = time.monotonic()
    victim.start()
    assert victim.port == port
    up = time.monotonic()
    assert victim.requests_served() == 0  # a fresh process
    deadline = up + MAX_REPLICA_BACKOFF + 60  # the backoff, and patience for a busy machine
    while victim.requests_served() == 0:
        assert time.monotonic() < deadline, f"no traffic to the restarted replica: {states}"
        probe = run(
            mode,
            lambda: client.embed(TEXTS[:48], model="minilm", batch_size=16),
            lambda: client.aembed(TEXTS[:48], model="minilm", batch_size=16),
        )
        assert close_enough(probe.embeddings, reference[:48])
        time.sleep(0.2)
    back = time.monotonic()
    print(  # noqa: T201
        f"restart {up - restarted:.1f} s, traffic again {back - up:.1f} s later; "
        f"{client.replicas()[victim_index]}"
    )
    state = client.replicas()[victim_index]
    assert state.consecutive_failures == 0
    assert state.out_until is None
    assert state.requests > states[victim_index].requests
    assert messages(info_logs, logging.INFO, "Infinity replica", victim.url, "back")


# --- nginx in front -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nginx(fleet: Fleet, nginx_executable: Any) -> Iterator[Nginx]:
    """nginx round-robin over the fleet's first two replicas (their ports survive restarts)."""
    fleet.heal()
    with Nginx(nginx_executable, [f"127.0.0.1:{r.port}" for r in fleet.replicas[:2]]) as proxy:
        yield proxy


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_nginx_round_robin_one_replica_killed_mid_ingestion(
    nginx: Nginx, healthy_fleet: Fleet, reference: list[list[float]]
) -> None:
    from infinity_rag.langchain import InfinityEmbeddings

    embeddings = InfinityEmbeddings(
        model="minilm", base_url=nginx.url, api_key=healthy_fleet.api_key, timeout=60
    )  # nginx's one URL; default retries (2)
    victim = healthy_fleet[1]
    upstreams = {f"127.0.0.1:{r.port}" for r in healthy_fleet.replicas[:2]}
    nginx.clear_log()

    def embedded(entries: list[tuple[int, list[str], list[str], str]]) -> list[Any]:
        return [e for e in entries if e[3] == "/embeddings"]

    def mid_ingestion() -> bool:  # both upstreams answered, 4 of 20 chunks done
        done = [e for e in embedded(nginx.access_log()) if e[0] == 200]
        return len(done) >= 4 and {e[1][-1] for e in done} == upstreams

    with KillSwitch(victim, mid_ingestion, interval=0.02) as switch:
        vectors = embeddings.embed_documents(TEXTS)
        ended = time.monotonic()
    assert switch.fired_at is not None
    assert switch.fired_at < ended
    assert close_enough(vectors, reference)

    entries = embedded(nginx.access_log())
    statuses = [e[0] for e in entries]
    print(  # noqa: T201
        f"\nnginx: {statuses.count(200)} answered, {statuses.count(502)} 502s; "
        f"{sum(len(e[1]) > 1 for e in entries)} passed on by nginx to the other upstream"
    )
    assert statuses.count(200) == math.ceil(len(TEXTS) / DEFAULT_BATCH_SIZE)  # each chunk once
    assert {e[1][-1] for e in entries if e[0] == 200} == upstreams  # round-robin over both
    # The kill was felt: a 502 that our client retried, or nginx passing a request on.
    assert any(e[0] == 502 or "502" in e[2] or len(e[1]) > 1 for e in entries)
    assert set(statuses) <= {200, 502}
    healthy_fleet.heal()


# --- every replica down (last: it leaves them dead) -----------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_every_replica_down_is_one_clear_error_naming_every_url(mode: Mode, fleet: Fleet) -> None:
    for replica in fleet:
        if replica.healthy():
            replica.kill()
    client = fleet_client(fleet, max_retries=2)
    retry = client.retry
    # Refused loopback connections fail at once: the time is the retry pauses (each at most the
    # policy's ceiling; no waiting out replica backoffs), plus 1 s per try for a loaded machine.
    pauses = sum(min(retry.max_delay, retry.initial_delay * 2**n) for n in range(2))
    bound = pauses + 3 * 1.0 + 5.0

    def fails_in_time(sync_call: Callable[[], Any], async_call: Callable[[], Any]) -> Any:
        started = time.monotonic()
        with pytest.raises(InfinityConnectionError) as caught:
            run(mode, sync_call, async_call)
        seconds = time.monotonic() - started
        print(f"\n{mode}: all down -> {seconds:.2f} s: {caught.value}")  # noqa: T201
        assert seconds < bound, f"{seconds:.1f} s > {bound:.1f} s"
        assert fleet.api_key is not None
        assert fleet.api_key not in str(caught.value)
        return caught.value

    # One request: its three tries go to the three replicas, and the error names them all.
    error = fails_in_time(
        lambda: client.embed(TEXTS[:10], model="minilm"),
        lambda: client.aembed(TEXTS[:10], model="minilm"),
    )
    for url in fleet.urls:
        assert url in str(error)
        assert any(tried.startswith(url) for tried in error.urls), error.urls
    assert len(error.urls) == 3
    states = client.replicas()
    assert all(s.failures == 1 and s.consecutive_failures == 1 for s in states)

    # Many requests at once (a replica out before this request tried it may be the one whose
    # backoff ends first, so it names the URLs it tried, each a replica's): just as clear, as fast.
    error = fails_in_time(
        lambda: client.embed(TEXTS[:2000], model="minilm"),
        lambda: client.aembed(TEXTS[:2000], model="minilm"),
    )
    assert error.urls
    assert all(any(tried.startswith(url) for url in fleet.urls) for tried in error.urls)
    assert all(tried in str(error) for tried in error.urls)

    # health() is one question to each: false everywhere is the same clear error.
    with pytest.raises(InfinityConnectionError) as caught:
        run(mode, client.health, client.ahealth)
    assert all(url in str(caught.value) for url in fleet.urls)
    with pytest.raises(InfinityConnectionError):
        run(mode, client.models, client.amodels)
