"""Integration tests run against a real Infinity server on loopback.

The session fixture starts one (``scripts/local_infinity.py``: MiniLM embedder, a seeded
reranker and classifier, all built offline) and stops it at the end. To use a server that is
already running instead, set ``INFINITY_TEST_URL`` (and ``INFINITY_TEST_API_KEY``); it must
serve the same model names.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infinity_rag import InfinityClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from local_infinity import LocalInfinityServer


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
