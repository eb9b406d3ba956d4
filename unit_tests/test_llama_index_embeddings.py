"""InfinityEmbedding against FakeInfinity (httpx.MockTransport, no socket)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload, LlamaDebugHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.embedding import (
    EmbeddingEndEvent,
    EmbeddingStartEvent,
)
from llama_index.core.schema import ImageType, MetadataMode, TextNode

from infinity_rag import (
    AuthenticationError,
    InfinityClient,
    ModelCapabilityError,
    ModelNotFoundError,
)
from infinity_rag.llama_index import InfinityEmbedding
from unit_tests.conftest import FAKE_URL, make_client
from unit_tests.fake_infinity import FakeInfinity, vector_for

SECRET = "sk-very-secret-key"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
PNG_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()


@pytest.fixture
def shared(fake: FakeInfinity) -> Iterator[InfinityClient]:
    with make_client(fake, batch_size=3) as client:
        yield client


def embedder(client: InfinityClient, **kwargs: Any) -> InfinityEmbedding:
    kwargs.setdefault("model_name", "embedder")
    return InfinityEmbedding(client=client, **kwargs)


def refusing_sync_client(fake: FakeInfinity) -> InfinityClient:
    """A client whose sync pool fails: proves the async hooks never make a blocking call."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"sync HTTP call from an async path: {request.url}")

    return InfinityClient(
        base_url=FAKE_URL,
        http_client=httpx.Client(transport=httpx.MockTransport(refuse)),
        http_async_client=httpx.AsyncClient(transport=fake.async_transport()),
    )


# --- the package ---------------------------------------------------------------------------


def test_importing_infinity_rag_does_not_import_llama_index() -> None:
    code = (
        "import sys, infinity_rag; "
        "sys.exit(any(m.split('.')[0] == 'llama_index' for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_class_name_and_defaults(shared: InfinityClient) -> None:
    embed = embedder(shared)
    assert InfinityEmbedding.class_name() == "InfinityEmbedding"
    assert embed.to_dict()["class_name"] == "InfinityEmbedding"
    # Core's default (10) would mean one request of 10 texts at a time.
    assert embed.embed_batch_size == 1024
    assert embed.encoding_format == "base64"


# --- text hooks, sync and async ------------------------------------------------------------


async def test_every_text_hook_sync_and_async(fake: FakeInfinity, shared: InfinityClient) -> None:
    embed = embedder(shared)
    assert embed.get_query_embedding("q") == vector_for("q")
    assert await embed.aget_query_embedding("q") == vector_for("q")
    assert embed.get_text_embedding("t") == vector_for("t")
    assert await embed.aget_text_embedding("t") == vector_for("t")
    texts = [f"text {i}" for i in range(7)]
    expected = [vector_for(t) for t in texts]
    assert embed.get_text_embedding_batch(texts) == expected
    assert await embed.aget_text_embedding_batch(texts) == expected
    assert embed.get_agg_embedding_from_queries(["q", "q"]) == pytest.approx(vector_for("q"))
    assert all(body["model"] == "embedder" for body in fake.bodies)


async def test_async_hooks_never_use_the_sync_client(fake: FakeInfinity) -> None:
    embed = embedder(refusing_sync_client(fake))
    assert await embed.aget_query_embedding("q") == vector_for("q")
    assert await embed.aget_text_embedding("t") == vector_for("t")
    texts = ["a", "b", "c"]
    assert await embed.aget_text_embedding_batch(texts) == [vector_for(t) for t in texts]
    assert await embed.aget_image_embedding(io.BytesIO(PNG)) == vector_for(PNG_URI)
    assert len(fake.requests) == 4


async def test_instructions_prefix_queries_and_texts(fake: FakeInfinity) -> None:
    with make_client(fake) as client:
        embed = embedder(client, query_instruction="query: ", text_instruction="passage: ")
        assert embed.get_query_embedding("q") == vector_for("query: q")
        assert await embed.aget_query_embedding("q") == vector_for("query: q")
        assert embed.get_text_embedding("t") == vector_for("passage: t")
        assert await embed.aget_text_embedding("t") == vector_for("passage: t")
        assert embed.get_text_embedding_batch(["a", "b"]) == [
            vector_for("passage: a"),
            vector_for("passage: b"),
        ]
        assert await embed.aget_text_embedding_batch(["a"]) == [vector_for("passage: a")]
    inputs = [body["input"] for body in fake.bodies]
    assert inputs == [
        ["query: q"],
        ["query: q"],
        ["passage: t"],
        ["passage: t"],
        ["passage: a", "passage: b"],
        ["passage: a"],
    ]


def test_request_options_are_forwarded(fake: FakeInfinity, shared: InfinityClient) -> None:
    embed = embedder(shared, dimensions=2, encoding_format="float", extra_body={"user": "u1"})
    assert embed.get_text_embedding("t") == vector_for("t")[:2]
    assert fake.bodies == [
        {
            "model": "embedder",
            "input": ["t"],
            "encoding_format": "float",
            "dimensions": 2,
            "user": "u1",
        }
    ]


async def test_batches_follow_embed_batch_size_then_the_client_batch_size(
    fake: FakeInfinity, shared: InfinityClient, capsys: pytest.CaptureFixture[str]
) -> None:
    # embed_batch_size slices (5, 5, 2), each split by the client's batch_size=3; one request
    # at a time (max_concurrency=1) keeps the order of the requests deterministic.
    embed = embedder(shared, embed_batch_size=5, max_concurrency=1)
    texts = [f"t{i}" for i in range(12)]
    assert embed.get_text_embedding_batch(texts, show_progress=True) == [
        vector_for(t) for t in texts
    ]
    assert [len(body["input"]) for body in fake.bodies] == [3, 2, 3, 2, 2]
    assert "Generating embeddings: 100%" in capsys.readouterr().err
    fake.requests.clear()
    embed.num_workers = 2
    result = await embed.aget_text_embedding_batch(texts, show_progress=True)
    assert result == [vector_for(t) for t in texts]
    assert sorted(len(body["input"]) for body in fake.bodies) == [2, 2, 2, 3, 3]
    assert "3/3" in capsys.readouterr().err  # the three slices, two at a time


async def test_async_batches_are_bounded_by_num_workers() -> None:
    # LlamaIndex alone starts every slice at once; by default two slices of (here) two
    # requests each are in flight, never more, and the order of the vectors is kept.
    in_flight = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return FakeInfinity()._embed(json.loads(request.content), "embedder")

    client = InfinityClient(
        base_url=FAKE_URL,
        batch_size=3,
        max_concurrency=2,
        http_async_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )
    texts = [f"t{i}" for i in range(60)]  # 10 slices of 6, each 2 requests of 3
    embed = embedder(client, embed_batch_size=6)
    assert embed.num_workers == 2
    assert await embed.aget_text_embedding_batch(texts) == [vector_for(t) for t in texts]
    assert peak == 4


def test_embeds_nodes_as_a_transformation(shared: InfinityClient) -> None:
    nodes = [TextNode(text="alpha", metadata={"k": "v"}), TextNode(text="beta")]
    embedded = embedder(shared)(nodes)
    assert [node.embedding for node in embedded] == [
        vector_for(node.get_content(metadata_mode=MetadataMode.EMBED)) for node in nodes
    ]


# --- events --------------------------------------------------------------------------------


async def test_embedding_events_and_callbacks(
    shared: InfinityClient, events: list[BaseEvent]
) -> None:
    debug = LlamaDebugHandler()
    embed = embedder(shared, embed_batch_size=2, callback_manager=CallbackManager([debug]))
    embed.get_text_embedding_batch(["a", "b", "c"])
    await embed.aget_text_embedding_batch(["d", "e", "f"])
    await embed.aget_query_embedding("q")

    starts = [e for e in events if isinstance(e, EmbeddingStartEvent)]
    ends = [e for e in events if isinstance(e, EmbeddingEndEvent)]
    assert len(starts) == len(ends) == 5
    assert [e.chunks for e in ends] == [["a", "b"], ["c"], ["d", "e"], ["f"], ["q"]]
    assert ends[0].embeddings == [vector_for("a"), vector_for("b")]
    assert starts[0].model_dict["model_name"] == "embedder"

    pairs = debug.get_event_pairs(CBEventType.EMBEDDING)
    assert len(pairs) == 5
    assert pairs[0][0].payload is not None
    assert pairs[0][0].payload[EventPayload.SERIALIZED]["class_name"] == "InfinityEmbedding"
    assert pairs[-1][1].payload is not None
    assert pairs[-1][1].payload[EventPayload.CHUNKS] == ["q"]


# --- images --------------------------------------------------------------------------------


async def test_image_hooks_take_paths_urls_and_bytesio(
    fake: FakeInfinity, shared: InfinityClient, tmp_path: Path
) -> None:
    path = tmp_path / "image.png"
    path.write_bytes(PNG)
    stream = io.BytesIO(PNG)
    stream.seek(3)
    url = "https://example.com/cat.jpg"
    embed = embedder(shared, model_name="clip")

    data_uri = PNG_URI
    assert embed.get_image_embedding(str(path)) == vector_for(data_uri)
    assert await embed.aget_image_embedding(url) == vector_for(url)
    batch: list[ImageType] = [str(path), stream, url]
    expected = [vector_for(data_uri), vector_for(data_uri), vector_for(url)]
    assert embed.get_image_embedding_batch(batch) == expected
    assert await embed.aget_image_embedding_batch(batch) == expected
    # The caller's stream is read whole, and left where it was.
    assert stream.tell() == 3
    assert {body["modality"] for body in fake.bodies} == {"image"}


def test_more_than_32_images_are_split_into_requests(fake: FakeInfinity) -> None:
    urls: list[ImageType] = [f"https://example.com/{i}.png" for i in range(40)]
    with make_client(fake) as client:
        vectors = embedder(client, model_name="clip").get_image_embedding_batch(urls)
    assert vectors == [vector_for(str(u)) for u in urls]
    assert sorted(len(body["input"]) for body in fake.bodies) == [8, 32]


def test_a_bad_image_fails_before_any_request(fake: FakeInfinity, shared: InfinityClient) -> None:
    embed = embedder(shared, model_name="clip")
    with pytest.raises(ValueError, match=r"images\[0\] is neither"):
        embed.get_image_embedding("/no/such/file.png")
    with pytest.raises(ValueError, match="not a recognised image"):
        embed.get_image_embedding(io.BytesIO(b"not an image"))
    assert fake.requests == []


# --- configuration and secrets -------------------------------------------------------------


def test_env_configures_url_and_key(fake: FakeInfinity, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFINITY_API_BASE", "http://env.test:1234/v1")
    monkeypatch.setenv("INFINITY_API_KEY", SECRET)
    embed = InfinityEmbedding(model_name="embedder")
    assert embed.base_url == "http://env.test:1234/v1"
    assert embed.api_key is not None
    assert embed.api_key.get_secret_value() == SECRET
    assert embed._client.api_key == embed.api_key


def test_the_built_client_uses_the_connection_fields(fake: FakeInfinity) -> None:
    embed = InfinityEmbedding(
        model_name="embedder",
        base_url=FAKE_URL,
        api_key=SECRET,
        timeout=5,
        max_retries=0,
        default_headers={"X-Gateway": "g1"},
        http_client=httpx.Client(transport=fake.transport()),
    )
    client = embed._client
    assert (client.base_url, client.timeout, client.retry.max_retries) == (FAKE_URL, 5, 0)
    embed.get_text_embedding("t")
    embed.get_text_embedding("u")
    assert embed._client is client  # built once, not per call
    assert [r.headers["authorization"] for r in fake.requests] == [f"Bearer {SECRET}"] * 2
    assert [r.headers["x-gateway"] for r in fake.requests] == ["g1"] * 2


def test_an_injected_client_is_used_and_mirrored(fake: FakeInfinity) -> None:
    with make_client(fake, api_key=SECRET, max_retries=5, timeout=7.0) as client:
        embed = InfinityEmbedding(model_name="embedder", client=client)
        assert embed._client is client
        assert (embed.base_url, embed.max_retries, embed.timeout) == (FAKE_URL, 5, 7.0)
        assert embed.api_key == client.api_key
        embed.get_text_embedding("t")
    assert len(fake.requests) == 1


def test_client_and_connection_settings_together_are_refused(shared: InfinityClient) -> None:
    # The same error as the LangChain classes'.
    with pytest.raises(TypeError, match=r"^api_key cannot be combined with client=") as error:
        InfinityEmbedding(model_name="embedder", client=shared, api_key=SECRET)
    assert SECRET not in str(error.value)
    with pytest.raises(TypeError, match=r"^base_url, timeout cannot be combined with client="):
        InfinityEmbedding(
            model_name="embedder", client=shared, base_url="http://other:7997", timeout=3.0
        )


def test_none_connection_settings_do_not_conflict_with_an_injected_client(
    shared: InfinityClient,
) -> None:
    embed = InfinityEmbedding(
        model_name="embedder", client=shared, api_key=None, base_url=None, timeout=None
    )
    assert embed._client is shared


def test_the_key_is_never_serialized_or_shown(
    shared: InfinityClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    embed = InfinityEmbedding(
        model_name="embedder",
        base_url=FAKE_URL,
        api_key=SECRET,
        default_headers={"X-Gateway-Key": SECRET},
    )
    for text in (
        repr(embed),
        str(embed),
        json.dumps(embed.to_dict()),
        embed.to_json(),
        json.dumps(embed.to_payload()),
        embed.model_dump_json(),
        repr(embed._client),
    ):
        assert SECRET not in text
    assert {"api_key", "default_headers", "client", "http_client"}.isdisjoint(embed.to_dict())
    # A round trip through to_dict takes the key from the environment again.
    monkeypatch.setenv("INFINITY_API_KEY", "from-env")
    restored = InfinityEmbedding.from_dict(embed.to_dict())
    assert restored.api_key is not None
    assert restored.api_key.get_secret_value() == "from-env"
    assert restored.to_dict() == embed.to_dict()


def test_pickling_keeps_the_settings_and_builds_a_new_client(
    fake: FakeInfinity, caplog: pytest.LogCaptureFixture
) -> None:
    # IngestionPipeline(num_workers=...) pickles its transformations into worker processes.
    with make_client(fake, api_key=SECRET) as client:
        embed = InfinityEmbedding(model_name="embedder", client=client, dimensions=2)
        own = InfinityEmbedding(
            model_name="embedder",
            base_url=FAKE_URL,
            default_headers={"X-Gateway": "g1"},
            http_client=httpx.Client(transport=fake.transport()),
        )
        with caplog.at_level(logging.WARNING):
            copy = pickle.loads(pickle.dumps(embed))
            own_copy = pickle.loads(pickle.dumps(own))
    assert caplog.records == []
    assert own_copy.http_client is None
    assert own_copy.default_headers == {"X-Gateway": "g1"}
    assert own.http_client is not None  # the original keeps its own
    assert isinstance(copy, InfinityEmbedding)
    assert copy.client is None
    assert copy._client is not client
    assert copy._client.base_url == FAKE_URL
    assert copy.api_key is not None
    assert copy.api_key.get_secret_value() == SECRET
    assert copy.to_dict() == embed.to_dict()
    assert embed._client is client  # the original is untouched


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_name": ""}, "model_name"),
        ({"dimensions": 0}, "dimensions"),
        ({"encoding_format": "int8"}, "encoding_format"),
        ({"embed_batch_size": 0}, "embed_batch_size"),
        ({"embed_batch_size": 4096}, "embed_batch_size"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"timeout": -1}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"base_url": "localhost:7997"}, "base_url must be an http"),
    ],
)
def test_bad_settings_fail_at_construction(kwargs: dict[str, Any], message: str) -> None:
    kwargs = {"model_name": "embedder", "api_key": SECRET, **kwargs}
    with pytest.raises(ValueError, match=message) as error:
        InfinityEmbedding(**kwargs)
    assert SECRET not in str(error.value)


def test_bad_texts_fail_before_any_request(fake: FakeInfinity, shared: InfinityClient) -> None:
    embed = embedder(shared)
    with pytest.raises(ValueError, match=r"texts\[1\] has 200,000 characters"):
        embed.get_text_embedding_batch(["ok", "x" * 200_000])
    with pytest.raises(TypeError, match=r"texts\[0\] must be a string"):
        embed.get_text_embedding(b"bytes")
    assert fake.requests == []


# --- errors from the server ----------------------------------------------------------------


async def test_a_wrong_key_is_an_authentication_error(fake: FakeInfinity) -> None:
    fake.api_key = "the-right-key"
    with make_client(fake, api_key=SECRET) as client:
        embed = embedder(client)
        with pytest.raises(AuthenticationError) as error:
            embed.get_query_embedding("q")
        with pytest.raises(AuthenticationError):
            await embed.aget_query_embedding("q")
    assert error.value.status_code == 401
    assert SECRET not in str(error.value)


async def test_an_unknown_or_wrong_model_is_a_clear_error(shared: InfinityClient) -> None:
    with pytest.raises(ModelNotFoundError, match=r"nope.*embedder"):
        embedder(shared, model_name="nope").get_text_embedding("t")
    with pytest.raises(ModelCapabilityError, match="does not support `embed`"):
        await embedder(shared, model_name="reranker").aget_text_embedding("t")
