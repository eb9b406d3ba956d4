"""Unit tests talk to :class:`FakeInfinity` through httpx.MockTransport and open no socket."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from infinity_rag import InfinityClient
from unit_tests.fake_infinity import FakeInfinity

if TYPE_CHECKING:
    from llama_index.core.instrumentation.events import BaseEvent

FAKE_URL = "http://infinity.test:7997"

# Haystack sends usage telemetry from Pipeline.run unless told not to (read when it is first
# imported); unit tests open no socket at all.
os.environ["HAYSTACK_TELEMETRY_ENABLED"] = "False"


@pytest.fixture(autouse=True)
def _no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to connect anywhere fails the test loudly."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("unit tests must not open sockets; use httpx.MockTransport")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("INFINITY_API_BASE", "INFINITY_API_URL", "INFINITY_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> FakeInfinity:
    return FakeInfinity()


def make_client(fake: FakeInfinity, **kwargs: object) -> InfinityClient:
    """A client whose sync and async pools both go to ``fake``."""
    kwargs.setdefault("base_url", FAKE_URL)
    return InfinityClient(
        http_client=httpx.Client(transport=fake.transport()),
        http_async_client=httpx.AsyncClient(transport=fake.async_transport()),
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def client(fake: FakeInfinity) -> Iterator[InfinityClient]:
    with make_client(fake, batch_size=3, rerank_batch_size=4) as c:
        yield c


@pytest.fixture
def events() -> Iterator[list[BaseEvent]]:
    """LlamaIndex instrumentation events dispatched during the test, in order."""
    from unit_tests.llama_index_events import collect_events

    with collect_events() as collected:
        yield collected
