"""Faults between the client and a real Infinity server, and the server dying mid-call.

Two parts:

* A fault-injecting proxy of our own (``fault_proxy.py``) between the client and the session's
  Infinity server: resets, dropped connections, truncated bodies, an HTML 502 page, 429 / 503,
  delays. Each must surface as the right exception, be retried only where that is safe (every
  Infinity call is an idempotent POST: repeating it is harmless), and never hand back a partial
  result as if it were complete.
* A dedicated Infinity server, SIGKILLed and restarted in the middle of embedding 5,000 texts:
  with retries the call completes and every vector equals the reference; without, a clear
  connection error naming the URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from infinity_rag import (
    AuthenticationError,
    EmbeddingResult,
    InfinityAPIError,
    InfinityClient,
    InfinityConnectionError,
    InfinityTimeoutError,
    InvalidRequestError,
    InvalidResponseError,
    OverloadedError,
    ServerError,
)
from infinity_rag._pool import RetryPolicy
from integration_tests.conftest import Mode, ServerInfo, close_enough, run
from integration_tests.fault_proxy import Fault, FaultProxy
from integration_tests.fleet import Keeper

TEXTS = [f"fault tolerance sentence number {i}" for i in range(12)]

#: Quick retries for the proxy tests: the faults are injected, not waited out.
FAST_RETRY = RetryPolicy(max_retries=3, initial_delay=0.01, max_delay=0.05)

MODES = ["sync", "async"]


# --- fault proxy in front of the session's server -----------------------------------------------


@pytest.fixture(scope="module")
def proxy(infinity_server: ServerInfo) -> Iterator[FaultProxy]:
    with FaultProxy(infinity_server.url) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def faulty(proxy: FaultProxy) -> Iterator[FaultProxy]:
    proxy.reset()
    yield proxy
    # A request written just before the test's client closed (an async call whose sibling chunk
    # failed) is read late: wait for it here, so it is not logged in the next test. (Tests of
    # the framework classes leave idle keep-alive connections open: at most 2 s for those.)
    proxy.wait_idle(timeout=2.0)
    proxy.reset()


def proxied_client(
    faulty: FaultProxy, server: ServerInfo, *, retries: int = 3, timeout: float = 30.0
) -> InfinityClient:
    client = InfinityClient(
        base_url=faulty.url, api_key=server.api_key, timeout=timeout, max_retries=retries
    )
    client.retry = RetryPolicy(max_retries=retries, initial_delay=0.01, max_delay=0.05)
    return client


@pytest.fixture(scope="module")
def reference(infinity_server: ServerInfo) -> list[list[float]]:
    with InfinityClient(base_url=infinity_server.url, api_key=infinity_server.api_key) as c:
        return c.embed(TEXTS, model=infinity_server.embed_model).embeddings


def embed(client: InfinityClient, server: ServerInfo, mode: Mode, **kwargs: Any) -> EmbeddingResult:
    texts = kwargs.pop("texts", TEXTS)

    async def in_loop() -> EmbeddingResult:
        try:
            return await client.aembed(texts, model=server.embed_model, **kwargs)
        finally:
            await client.aclose()

    return run(  # type: ignore[no-any-return]
        mode, lambda: client.embed(texts, model=server.embed_model, **kwargs), in_loop
    )


def test_pass_through_is_transparent(
    faulty: FaultProxy, infinity_server: ServerInfo, reference: list[list[float]]
) -> None:
    with proxied_client(faulty, infinity_server) as client:
        result = embed(client, infinity_server, "sync")
    assert close_enough(result.embeddings, reference)
    assert faulty.faults_seen() == ["pass"]


RETRIED = [
    pytest.param(Fault("reset"), id="reset-before-the-server-saw-it"),
    pytest.param(Fault("reset", after_upstream=True), id="reset-after-the-server-did-the-work"),
    pytest.param(Fault("close"), id="closed-without-an-answer"),
    pytest.param(Fault("truncate", after_bytes=100), id="body-truncated"),
    pytest.param(Fault("html"), id="html-502-page"),
    pytest.param(Fault("status", status=503), id="503"),
    pytest.param(Fault("status", status=429), id="429"),
    pytest.param(Fault("status", status=500), id="500"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", RETRIED)
def test_transient_faults_are_retried_and_nothing_is_lost(
    faulty: FaultProxy,
    infinity_server: ServerInfo,
    reference: list[list[float]],
    fault: Fault,
    mode: Mode,
) -> None:
    faulty.inject(fault, times=2)
    with proxied_client(faulty, infinity_server, retries=3) as client:
        result = embed(client, infinity_server, mode)
    assert close_enough(result.embeddings, reference)
    assert faulty.faults_seen() == [fault.kind, fault.kind, "pass"]


FINAL_ERRORS = [
    pytest.param(Fault("reset"), InfinityConnectionError, "ReadError", id="reset"),
    pytest.param(Fault("close"), InfinityConnectionError, "disconnected", id="closed"),
    pytest.param(
        Fault("truncate", after_bytes=100), InfinityConnectionError, "received 100", id="truncated"
    ),
    pytest.param(Fault("html"), ServerError, "502 Bad Gateway", id="html-502-page"),
    pytest.param(Fault("status", status=503), ServerError, "injected 503", id="503"),
    pytest.param(Fault("status", status=429), OverloadedError, "injected 429", id="429"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("fault", "error", "words"), FINAL_ERRORS)
def test_with_retries_off_each_fault_is_its_own_clear_error(
    faulty: FaultProxy,
    infinity_server: ServerInfo,
    fault: Fault,
    error: type[Exception],
    words: str,
    mode: Mode,
) -> None:
    faulty.inject(fault, times=1)
    with (
        proxied_client(faulty, infinity_server, retries=0) as client,
        pytest.raises(error) as caught,
    ):
        embed(client, infinity_server, mode)
    message = str(caught.value)
    assert words in message
    assert faulty.url in message  # which server failed
    assert "<" not in message  # an HTML page is reduced to its words
    assert faulty.faults_seen() == [fault.kind]
    assert len(message) < 600


@pytest.mark.parametrize(
    "mode",
    [
        "sync",
        "async",
    ],
)
def test_a_reset_connection_says_so(
    faulty: FaultProxy, infinity_server: ServerInfo, mode: Mode
) -> None:
    faulty.inject(Fault("reset"))
    with (
        proxied_client(faulty, infinity_server, retries=0) as client,
        pytest.raises(InfinityConnectionError, match="reset by peer"),
    ):
        embed(client, infinity_server, mode)


@pytest.mark.parametrize("mode", MODES)
def test_retries_give_up_after_max_retries_with_the_last_error(
    faulty: FaultProxy, infinity_server: ServerInfo, mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    faulty.set_default(Fault("status", status=503))
    with (
        caplog.at_level(logging.WARNING, logger="infinity_rag"),
        proxied_client(faulty, infinity_server, retries=2) as client,
        pytest.raises(ServerError) as caught,
    ):
        embed(client, infinity_server, mode)
    assert caught.value.status_code == 503
    assert faulty.faults_seen() == ["status"] * 3  # one try and two retries
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert [r.getMessage().split("retry ")[1][:6] for r in retries] == ["1 of 2", "2 of 2"]


NEVER_RETRIED = [
    pytest.param(
        Fault(
            "status",
            status=400,
            body=json.dumps({"error": {"message": "bad input", "code": 400}}).encode(),
        ),
        InvalidRequestError,
        id="400",
    ),
    pytest.param(
        Fault("status", status=401, body=b'{"detail":"Unauthorized"}'),
        AuthenticationError,
        id="401",
    ),
    pytest.param(
        Fault("status", status=422, body=b'{"detail":[{"loc":["body","input"],"msg":"bad"}]}'),
        InvalidRequestError,
        id="422",
    ),
    pytest.param(Fault("garble", after_bytes=50), InvalidResponseError, id="200-with-cut-json"),
    pytest.param(
        Fault("status", status=200, body=b"<html>maintenance</html>"),
        InvalidResponseError,
        id="200-html",
    ),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("fault", "error"), NEVER_RETRIED)
def test_client_errors_and_bad_answers_are_not_retried(
    faulty: FaultProxy,
    infinity_server: ServerInfo,
    fault: Fault,
    error: type[Exception],
    mode: Mode,
) -> None:
    faulty.inject(fault, times=1)
    with proxied_client(faulty, infinity_server, retries=3) as client, pytest.raises(error):
        embed(client, infinity_server, mode)
    assert faulty.faults_seen() == [fault.kind]


def test_a_redirect_is_not_followed_nor_retried(
    faulty: FaultProxy, infinity_server: ServerInfo
) -> None:
    # A load balancer redirecting http to https: following it would turn the POST into a GET
    # (301/302) or send the key to another host. httpx does not follow; neither do we.
    faulty.inject(Fault("status", status=307, body=b"", headers={"Location": "https://x/"}))
    with proxied_client(faulty, infinity_server) as client, pytest.raises(InfinityAPIError) as e:
        embed(client, infinity_server, "sync")
    assert e.value.status_code == 307
    assert faulty.faults_seen() == ["status"]


def test_retry_after_is_honoured(faulty: FaultProxy, infinity_server: ServerInfo) -> None:
    faulty.inject(Fault("status", status=503, headers={"Retry-After": "2"}))
    with proxied_client(faulty, infinity_server) as client:  # own backoff: about 10 ms
        embed(client, infinity_server, "sync")
    refused, retried = faulty.posts()
    assert retried.at - refused.at >= 1.9


# --- incomplete answers are never passed off as complete ----------------------------------------


def _drop_last_embedding(body: bytes) -> bytes:
    payload = json.loads(body)
    payload["data"] = payload["data"][:-1]
    return json.dumps(payload).encode()


def _repeat_first_rerank_index(body: bytes) -> bytes:
    payload = json.loads(body)
    payload["results"][-1]["index"] = payload["results"][0]["index"]
    return json.dumps(payload).encode()


@pytest.mark.parametrize("mode", MODES)
def test_an_answer_with_a_missing_vector_is_refused(
    faulty: FaultProxy, infinity_server: ServerInfo, mode: Mode
) -> None:
    faulty.inject(Fault("rewrite", rewrite=_drop_last_embedding))
    with (
        proxied_client(faulty, infinity_server) as client,
        pytest.raises(InvalidResponseError, match=r"asked for 12 embeddings.* returned 11"),
    ):
        embed(client, infinity_server, mode)


def test_a_rerank_answer_with_a_repeated_index_is_refused(
    faulty: FaultProxy, infinity_server: ServerInfo
) -> None:
    faulty.inject(Fault("rewrite", rewrite=_repeat_first_rerank_index))
    with (
        proxied_client(faulty, infinity_server) as client,
        pytest.raises(InvalidResponseError, match="repeated index"),
    ):
        client.rerank("query", TEXTS, model=infinity_server.rerank_model)


@pytest.mark.parametrize("mode", MODES)
def test_one_failed_chunk_fails_the_whole_call(
    faulty: FaultProxy, infinity_server: ServerInfo, mode: Mode
) -> None:
    # 6 chunks, 2 at a time; the third request gets a non-retryable 400.
    bad = Fault("status", status=400, body=b'{"error":{"message":"chunk refused","code":400}}')
    for fault in (Fault("pass"), Fault("pass"), bad):
        faulty.inject(fault)
    with (
        proxied_client(faulty, infinity_server) as client,
        pytest.raises(InvalidRequestError, match="chunk refused"),
    ):
        embed(client, infinity_server, mode, batch_size=2, max_concurrency=2)


@pytest.mark.parametrize("mode", MODES)
def test_chunks_retried_out_of_order_still_come_back_in_order(
    faulty: FaultProxy, infinity_server: ServerInfo, reference: list[list[float]], mode: Mode
) -> None:
    for fault in (Fault("reset"), Fault("pass"), Fault("truncate", after_bytes=10), Fault("html")):
        faulty.inject(fault)
    with proxied_client(faulty, infinity_server) as client:
        result = embed(client, infinity_server, mode, batch_size=2, max_concurrency=3)
    assert close_enough(result.embeddings, reference)
    assert len(faulty.posts()) == 6 + 3


# --- timeouts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_slow_answer_times_out(
    faulty: FaultProxy, infinity_server: ServerInfo, mode: Mode
) -> None:
    faulty.inject(Fault("delay", seconds=4))
    started = time.monotonic()
    with (
        proxied_client(faulty, infinity_server, retries=0, timeout=0.5) as client,
        pytest.raises(InfinityTimeoutError) as caught,
    ):
        embed(client, infinity_server, mode)
    assert time.monotonic() - started < 3.5
    assert faulty.url in str(caught.value)
    assert isinstance(caught.value, InfinityConnectionError)  # catch one, get both


@pytest.mark.parametrize("mode", MODES)
def test_a_timeout_is_retried(
    faulty: FaultProxy, infinity_server: ServerInfo, reference: list[list[float]], mode: Mode
) -> None:
    faulty.inject(Fault("delay", seconds=3))
    with proxied_client(faulty, infinity_server, retries=2, timeout=1.0) as client:
        result = embed(client, infinity_server, mode)
    assert close_enough(result.embeddings, reference)
    assert faulty.faults_seen()[:2] == ["delay", "pass"]


def test_the_timeout_bounds_each_read_not_the_whole_answer(
    faulty: FaultProxy, infinity_server: ServerInfo, reference: list[list[float]]
) -> None:
    # As in httpx and requests, `timeout` is the longest silence allowed, not a deadline: an
    # answer trickling in faster than that completes even when it takes longer in total.
    faulty.inject(Fault("drip", seconds=0.4, chunk=5000))  # ~6 pieces
    started = time.monotonic()
    with proxied_client(faulty, infinity_server, retries=0, timeout=1.5) as client:
        result = embed(client, infinity_server, "sync")
    assert time.monotonic() - started > 1.5
    assert close_enough(result.embeddings, reference)


# --- unreachable servers ------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again on exit: nothing listens there


@pytest.mark.parametrize("mode", MODES)
def test_an_unreachable_server_is_a_connection_error_naming_the_url(
    mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    client = InfinityClient(base_url=url, max_retries=2)
    client.retry = RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.02)
    with (
        caplog.at_level(logging.WARNING, logger="infinity_rag"),
        client,
        pytest.raises(InfinityConnectionError) as caught,
    ):
        run(mode, lambda: client.embed(["x"]), lambda: client.aembed(["x"]))
    assert f"{url}/embeddings" in str(caught.value)
    assert caught.value.url == f"{url}/embeddings"
    assert not isinstance(caught.value, InfinityTimeoutError)
    assert sum("retry" in r.getMessage() for r in caplog.records) == 2


def test_health_is_one_try(faulty: FaultProxy, infinity_server: ServerInfo) -> None:
    faulty.inject(Fault("reset"))
    with proxied_client(faulty, infinity_server) as client:
        with pytest.raises(InfinityConnectionError):
            client.health()
        assert client.health() is True


# --- the framework classes behind the fault proxy ----------------------------------------------


def test_framework_classes_retry_transient_faults(
    faulty: FaultProxy, infinity_server: ServerInfo, reference: list[list[float]]
) -> None:
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode

    from infinity_rag.langchain import InfinityEmbeddings, InfinityRerank
    from infinity_rag.llama_index import InfinityEmbedding
    from infinity_rag.llama_index import InfinityRerank as LlamaRerank

    connection = {"base_url": faulty.url, "api_key": infinity_server.api_key, "max_retries": 2}
    faulty.inject(Fault("reset"))
    faulty.inject(Fault("html"))
    vectors = InfinityEmbeddings(model=infinity_server.embed_model, **connection).embed_documents(
        TEXTS
    )
    assert close_enough(vectors, reference)
    faulty.inject(Fault("truncate", after_bytes=20))
    faulty.inject(Fault("status", status=429))
    vectors = asyncio.run(
        InfinityEmbedding(
            model_name=infinity_server.embed_model, **connection
        ).aget_text_embedding_batch(TEXTS)
    )
    assert close_enough(vectors, reference)
    faulty.inject(Fault("close"))
    ranked = InfinityRerank(model=infinity_server.rerank_model, **connection).compress_documents(
        [Document(page_content=t) for t in TEXTS[:3]], "q"
    )
    assert len(ranked) == 3
    faulty.inject(Fault("status", status=503))
    nodes = LlamaRerank(model=infinity_server.rerank_model, **connection).postprocess_nodes(
        [NodeWithScore(node=TextNode(text=t)) for t in TEXTS[:3]], query_str="q"
    )
    assert len(nodes) == 2
    assert faulty.faults_seen().count("pass") == 4


def test_framework_classes_surface_the_fault_without_retries(
    faulty: FaultProxy, infinity_server: ServerInfo
) -> None:
    from infinity_rag.langchain import InfinityEmbeddings
    from infinity_rag.llama_index import InfinityEmbedding

    connection = {"base_url": faulty.url, "api_key": infinity_server.api_key, "max_retries": 0}
    faulty.inject(Fault("html"))
    with pytest.raises(ServerError, match="502 Bad Gateway"):
        InfinityEmbeddings(model=infinity_server.embed_model, **connection).embed_query("x")
    faulty.inject(Fault("delay", seconds=3))
    with pytest.raises(InfinityTimeoutError):
        InfinityEmbedding(
            model_name=infinity_server.embed_model, timeout=0.5, **connection
        ).get_query_embedding("x")


# --- the server SIGKILLed and restarted mid-call ------------------------------------------------

CRASH_TEXTS = [f"passage {i}: a sentence about topic {i % 97} and item {i}" for i in range(5000)]
#: Patience for a restart: about 8 s on a quiet 2-core machine, 12-17 s when busy, and over
#: a minute when other test suites share the CPU. Each pause is half to all of
#: min(2, 0.5 * 2**n) (equal jitter): 120 retries wait at least 2 minutes in all, and a server
#: that is back is found within 2 s.
CRASH_RETRY = RetryPolicy(max_retries=120, initial_delay=0.5, max_delay=2.0)


class Crasher:
    """Kills the server (SIGKILL, whole process group) and starts it again on the keeper.

    ``arm(after)``: the kill happens once ``after`` answers have come back.
    """

    def __init__(self, server: Any, keeper: Keeper) -> None:
        self.server = server
        self.keeper = keeper
        self.after = 0
        self.answers = 0
        self.lock = threading.Lock()
        self.done: threading.Event | None = None
        self.killed_at: float | None = None
        self.ready_at: float | None = None
        self.restart = True

    def arm(self, after: int, *, restart: bool = True) -> None:
        self.after, self.answers, self.restart = after, 0, restart
        self.done = None
        self.killed_at = self.ready_at = None

    def on_answer(self, response: httpx.Response) -> None:
        if response.request.url.path != "/embeddings":
            return
        with self.lock:
            self.answers += 1
            if self.done is not None or self.after == 0 or self.answers < self.after:
                return
            self.done = self.keeper.submit(self._crash)

    async def aon_answer(self, response: httpx.Response) -> None:
        self.on_answer(response)

    def _crash(self) -> None:
        self.killed_at = time.monotonic()
        self.server.kill()
        if self.restart:
            self.server.start()
            self.ready_at = time.monotonic()
            print(f"restart after SIGKILL: {self.restart_seconds:.1f} s")  # noqa: T201 (-s)

    def join(self) -> None:
        assert self.done is not None, "the server was never killed: the call ended too early"
        assert self.done.wait(300), "the restart did not finish"

    @property
    def restart_seconds(self) -> float:
        assert self.killed_at is not None
        assert self.ready_at is not None
        return self.ready_at - self.killed_at


@pytest.fixture(scope="module")
def keeper() -> Iterator[Keeper]:
    server_keeper = Keeper()
    yield server_keeper
    server_keeper.close()


@pytest.fixture(scope="module")
def crash_server(keeper: Keeper) -> Iterator[Any]:
    from infinity_rag.testing import LocalInfinityServer

    server = LocalInfinityServer(["minilm"])
    keeper.run(server.start)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def crasher(crash_server: Any, keeper: Keeper) -> Crasher:
    return Crasher(crash_server, keeper)


@pytest.fixture
def healthy_crash_server(crash_server: Any, crasher: Crasher, keeper: Keeper) -> Any:
    if crasher.done is not None:
        crasher.done.wait(300)
    if not crash_server.healthy():
        keeper.run(crash_server.restart)
    return crash_server


@pytest.fixture(scope="module")
def crash_reference(crash_server: Any) -> list[list[float]]:
    with InfinityClient(base_url=crash_server.url, api_key=crash_server.api_key) as client:
        return client.embed(CRASH_TEXTS, model="minilm").embeddings


def crash_client(server: Any, crasher: Crasher, *, retries: bool) -> InfinityClient:
    client = InfinityClient(
        base_url=server.url,
        api_key=server.api_key,
        timeout=60,
        http_client=httpx.Client(event_hooks={"response": [crasher.on_answer]}),
        http_async_client=httpx.AsyncClient(event_hooks={"response": [crasher.aon_answer]}),
    )
    client.retry = CRASH_RETRY if retries else RetryPolicy(max_retries=0)
    return client


@pytest.mark.slow
def test_a_server_with_one_model_ignores_the_model_name(healthy_crash_server: Any) -> None:
    # docs/bad_input.md: "A server with a single model ignores the name."
    with InfinityClient(
        base_url=healthy_crash_server.url, api_key=healthy_crash_server.api_key
    ) as client:
        assert len(client.embed(["x"], model="no-such-model").embeddings[0]) == 384


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a 5,000-text reference and a restart, on a possibly busy machine
def test_kill_and_restart_mid_embed_documents_sync(
    healthy_crash_server: Any,
    crasher: Crasher,
    crash_reference: list[list[float]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from infinity_rag.langchain import InfinityEmbeddings

    client = crash_client(healthy_crash_server, crasher, retries=True)
    embeddings = InfinityEmbeddings(model="minilm", client=client)
    crasher.arm(after=4)  # 4 of 20 chunks done, 4 in flight
    with caplog.at_level(logging.WARNING, logger="infinity_rag"):
        vectors = embeddings.embed_documents(CRASH_TEXTS)
    crasher.join()
    assert len(vectors) == len(CRASH_TEXTS)
    assert close_enough(vectors, crash_reference)
    assert any("retry" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_kill_and_restart_mid_embed_documents_async(
    healthy_crash_server: Any,
    crasher: Crasher,
    crash_reference: list[list[float]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from infinity_rag.langchain import InfinityEmbeddings

    client = crash_client(healthy_crash_server, crasher, retries=True)
    embeddings = InfinityEmbeddings(model="minilm", client=client)
    crasher.arm(after=4)
    with caplog.at_level(logging.WARNING, logger="infinity_rag"):
        vectors = await embeddings.aembed_documents(CRASH_TEXTS)
    await asyncio.to_thread(crasher.join)
    assert close_enough(vectors, crash_reference)
    assert any("retry" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_kill_mid_call_without_retries_is_a_connection_error(
    healthy_crash_server: Any, crasher: Crasher
) -> None:
    client = crash_client(healthy_crash_server, crasher, retries=False)
    crasher.arm(after=1, restart=False)
    texts = CRASH_TEXTS[:2048]
    started = time.monotonic()
    with pytest.raises(InfinityConnectionError) as caught:
        client.embed(texts, model="minilm")
    crasher.join()
    assert healthy_crash_server.url in str(caught.value)
    assert time.monotonic() - started < 30  # no waiting for a server that is gone
    # The server stays down: the async twin fails the same way, at once.
    with pytest.raises(InfinityConnectionError, match="Connect") as caught:
        asyncio.run(client.aembed(texts, model="minilm"))
    assert caught.value.url == f"{healthy_crash_server.url}/embeddings"


@pytest.mark.slow
def test_wait_until_ready_spans_a_restart(
    crash_server: Any, crasher: Crasher, keeper: Keeper
) -> None:
    if crasher.done is not None:
        crasher.done.wait(300)
    keeper.run(crash_server.kill)  # (again: harmless when it is already down)
    restarted = keeper.submit(crash_server.start)
    client = InfinityClient(base_url=crash_server.url, max_retries=0)
    with pytest.raises(InfinityConnectionError):
        client.health()
    client.wait_until_ready(timeout=180, interval=0.25)
    assert client.health() is True
    assert restarted.wait(300)
