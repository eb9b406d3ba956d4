"""The request engine against small loopback servers that misbehave on purpose: timeouts the
user set are honoured, a failed call stops what it no longer needs, nothing is left running.

Each of these failed before the engine was rewritten (issue 24's faults 1-5), measured then:
an injected client's 1 s timeout waited 120 s; ``wait_until_ready(timeout=2)`` waited 120 s;
a sync ``embed`` whose last chunk failed at once waited 4.1 s for the others; an image
``vector_shape`` always raised; ``close()`` during a call could hand it a closed pool.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from infinity_rag import InfinityClient, InfinityTimeoutError, InvalidRequestError
from integration_tests.conftest import ServerInfo

#: What the stub does with a request: ``(status, body)`` after an optional pause, or None to
#: hold the connection open without answering until the server stops.
Behaviour = Callable[[dict[str, Any]], tuple[float, int, dict[str, Any]] | None]


class StubServer:
    """A threaded HTTP/1.1 server on loopback answering ``/embeddings`` and ``/health`` as
    ``behaviour`` says; it records when each request's client went away."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.gone_after: list[float] = []  # seconds from a request to its client leaving
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.answer({})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                self.answer(json.loads(self.rfile.read(length) or b"{}"))

            def answer(self, body: dict[str, Any]) -> None:
                with stub.lock:
                    stub.requests.append(body)
                started = time.monotonic()
                plan = stub.behaviour(body)
                pause = None if plan is None else plan[0]
                if stub.wait_or_leave(self, pause, started) or plan is None:
                    return
                _, status, payload = plan
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_or_leave(
        self, handler: BaseHTTPRequestHandler, pause: float | None, started: float
    ) -> bool:
        """Wait ``pause`` seconds (``None``: until stopped); True if the client left first."""
        sock = handler.connection
        until = None if pause is None else started + pause
        sock.settimeout(0.02)
        try:
            while not self.stopping.is_set() and (until is None or time.monotonic() < until):
                try:
                    if sock.recv(1, socket.MSG_PEEK) == b"":  # b"": the client has closed
                        with self.lock:
                            self.gone_after.append(time.monotonic() - started)
                        return True
                except TimeoutError:
                    continue
                except OSError:
                    return True
            return self.stopping.is_set()
        finally:
            sock.settimeout(None)

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


def embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """Infinity's answer for ``body``'s inputs: 4-dimensional vectors, as it asks."""
    values = [1.0, 0.0, 0.0, 0.0]
    vector: Any = values
    if body.get("encoding_format") == "base64":
        vector = base64.b64encode(struct.pack("<4f", *values)).decode()
    data = [
        {"object": "embedding", "embedding": vector, "index": i}
        for i in range(len(body.get("input", [])))
    ]
    return {"object": "list", "data": data, "model": "stub", "usage": {"prompt_tokens": 1}}


def never(body: dict[str, Any]) -> None:
    return None


def other_threads() -> set[str]:
    """Threads besides the process's own, the stub servers' and the shared loop that runs sync
    calls."""
    return {
        t.name
        for t in threading.enumerate()
        if t is not threading.main_thread()
        and not t.name.startswith("infinity-rag-loop")
        and "process_request_thread" not in t.name
        and "serve_forever" not in t.name
    }


@pytest.fixture
def silent() -> Iterator[StubServer]:
    """Accepts connections and requests, and never answers."""
    with StubServer(never) as server:
        yield server


def test_an_injected_clients_own_timeout_is_honoured(silent: StubServer) -> None:
    client = InfinityClient(base_url=silent.url, http_client=httpx.Client(timeout=1), max_retries=0)
    started = time.monotonic()
    with pytest.raises(InfinityTimeoutError):
        client.embed(["a"])
    assert time.monotonic() - started < 5  # was 120 s: our default overrode the client's


async def test_an_injected_async_clients_own_timeout_is_honoured(silent: StubServer) -> None:
    client = InfinityClient(
        base_url=silent.url, http_async_client=httpx.AsyncClient(timeout=1), max_retries=0
    )
    started = time.monotonic()
    with pytest.raises(InfinityTimeoutError):
        await client.aembed(["a"])
    assert time.monotonic() - started < 5


def test_a_timeout_given_here_still_wins_over_the_injected_clients(silent: StubServer) -> None:
    client = InfinityClient(
        base_url=silent.url, http_client=httpx.Client(timeout=30), timeout=0.5, max_retries=0
    )
    started = time.monotonic()
    with pytest.raises(InfinityTimeoutError, match=r"0\.5 s"):
        client.embed(["a"])
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_wait_until_ready_keeps_to_its_timeout(silent: StubServer, mode: str) -> None:
    client = InfinityClient(base_url=silent.url)  # each request may take 120 s
    started = time.monotonic()
    sync_call = functools.partial(client.wait_until_ready, timeout=2, interval=0.2)
    async_call = functools.partial(client.await_until_ready, timeout=2, interval=0.2)
    with pytest.raises(InfinityTimeoutError, match="not ready after 2s"):
        await (async_call() if mode == "async" else asyncio.to_thread(sync_call))
    assert 1.9 < time.monotonic() - started < 4  # was 120 s


def last_chunk_refused(body: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
    if not body:  # GET /health
        return 0.0, 200, {}
    if body["input"][0] == "t30":
        return 0.0, 400, {"error": {"message": "the last chunk is refused", "code": 400}}
    return (0.0 if body["input"][0] == "warm" else 4.0), 200, embeddings(body)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_the_first_fatal_error_ends_the_call_and_its_requests(mode: str) -> None:
    texts = [f"t{i}" for i in range(40)]
    with StubServer(last_chunk_refused) as server:
        client = InfinityClient(base_url=server.url, batch_size=10, max_concurrency=4)
        # The model's vectors known (else the first chunk goes alone), the shared loop running.
        client.embed(["warm"])
        before = other_threads()
        started = time.monotonic()
        call = client.aembed(texts) if mode == "async" else asyncio.to_thread(client.embed, texts)
        with pytest.raises(InvalidRequestError, match="last chunk is refused"):
            await call
        took = time.monotonic() - started
        await asyncio.sleep(0.3)
        assert took < 1.0  # the sync call waited 4.1 s for requests nobody needed
        assert other_threads() <= before  # no thread left behind
        assert len(server.requests) == 1 + 4  # the warm-up, then the four chunks
        # The three slow requests were abandoned: their connections closed at once.
        assert len(server.gone_after) == 3
        assert max(server.gone_after) < 1.0


def test_ctrl_c_in_a_sync_call_abandons_its_requests() -> None:
    with StubServer(lambda body: (0.0, 200, embeddings(body))) as server:
        client = InfinityClient(base_url=server.url, batch_size=2, max_concurrency=3)
        client.embed(["warm"])  # the model's vectors known: the three chunks go out at once
        server.behaviour = lambda body: (10.0, 200, embeddings(body))
        # A real SIGINT, as Ctrl-C sends: it wakes the main thread where it waits.
        main = threading.main_thread().ident
        assert main is not None
        timer = threading.Timer(0.5, lambda: signal.pthread_kill(main, signal.SIGINT))
        started = time.monotonic()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            client.embed(["a", "b", "c", "d", "e", "f"])
        assert time.monotonic() - started < 2.0
        time.sleep(0.3)
        assert len(server.gone_after) == 3  # every request in flight was abandoned
        assert max(server.gone_after) < 1.5
        # The client works on afterwards.
        server.behaviour = lambda body: (0.0, 200, embeddings(body))
        assert len(client.embed(["x"])) == 1


def test_close_during_calls_never_hands_them_a_closed_pool() -> None:
    with StubServer(lambda body: (0.005, 200, embeddings(body))) as server:
        client = InfinityClient(base_url=server.url)
        errors: list[BaseException] = []
        done = threading.Event()

        def call_repeatedly() -> None:
            try:
                while not done.is_set():
                    assert len(client.embed(["a", "b"])) == 2
            except BaseException as error:
                errors.append(error)

        callers = [threading.Thread(target=call_repeatedly) for _ in range(4)]
        for thread in callers:
            thread.start()
        for _ in range(50):
            client.close()
            time.sleep(0.005)
        done.set()
        for thread in callers:
            thread.join()
        assert errors == []
        assert len(server.requests) > 50


@pytest.mark.parametrize("modality", ["image"])
def test_vector_shape_of_an_image_model_needs_no_probe(
    clip_server: ServerInfo, modality: str
) -> None:
    with InfinityClient(base_url=clip_server.url, api_key=clip_server.api_key) as client:
        shape = client.vector_shape("clip", modality=modality)  # type: ignore[arg-type]
        assert shape.width > 0
        assert not shape.multi_vector
        image = client.embed_images([_red_png()], model="clip")
        assert len(image.embeddings[0]) == shape.width


def _red_png() -> bytes:
    from integration_tests.conftest import png

    return png((255, 0, 0))
