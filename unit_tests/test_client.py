"""InfinityClient against FakeInfinity: requests built, answers parsed, order kept."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import threading
import time
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from infinity_rag import (
    ClassifyResult,
    EmbeddingResult,
    InfinityClient,
    InfinityTimeoutError,
    InvalidResponseError,
    RerankResult,
    ServerError,
)
from unit_tests.conftest import FAKE_URL, make_client
from unit_tests.fake_infinity import FakeInfinity, score_for, vector_for

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16

# --- embeddings ------------------------------------------------------------------------------


def test_embed_returns_vectors_in_input_order_across_chunks(
    client: InfinityClient, fake: FakeInfinity
) -> None:
    texts = [f"text number {i}" for i in range(10)]
    result = client.embed(texts, model="embedder")
    assert isinstance(result, EmbeddingResult)
    assert result.embeddings == [vector_for(t) for t in texts]
    assert all(type(x) is float for v in result.embeddings for x in v)
    assert [len(b["input"]) for b in fake.bodies] == [3, 3, 3, 1]  # batch_size=3
    assert result.model == "embedder"
    assert result.usage.prompt_tokens == sum(len(t) for t in texts)


async def test_aembed_matches_embed(client: InfinityClient) -> None:
    texts = [f"async text {i}" for i in range(7)]
    result = await client.aembed(texts, model="embedder")
    assert result.embeddings == client.embed(texts, model="embedder").embeddings


def test_base64_is_the_default_on_the_wire_and_float_is_selectable(
    client: InfinityClient, fake: FakeInfinity
) -> None:
    # The first request to a model asks for floats: their nesting tells the client whether the
    # model returns one vector per input (see _vectors); base64 from then on.
    learned = client.embed(["a"])
    via_base64 = client.embed(["a"])
    via_float = client.embed(["a"], encoding_format="float")
    assert [b["encoding_format"] for b in fake.bodies] == ["float", "base64", "float"]
    assert learned.embeddings == via_base64.embeddings == via_float.embeddings
    assert via_float.embeddings == [vector_for("a")]


def test_request_body_carries_model_dimensions_and_extra_body(
    client: InfinityClient, fake: FakeInfinity
) -> None:
    client.embed(["a"], model="embedder")  # learns the model's vectors (asked as floats)
    result = client.embed(
        ["a", "b"], model="embedder", dimensions=2, extra_body={"user": "u1", "truncate": True}
    )
    body = fake.bodies[1]
    assert body == {
        "model": "embedder",
        "input": ["a", "b"],
        "encoding_format": "base64",
        "dimensions": 2,
        "user": "u1",
        "truncate": True,
    }
    assert all(len(v) == 2 for v in result.embeddings)


def test_unset_fields_are_left_out_of_the_body(client: InfinityClient, fake: FakeInfinity) -> None:
    client.embed(["a"])
    assert set(fake.bodies[0]) == {"input", "encoding_format"}


def test_dimensions_dropped_by_a_proxy_are_applied_client_side(fake: FakeInfinity) -> None:
    # LiteLLM forwards `dimensions` under another name; Infinity then sends full vectors.
    def ignore_dimensions(request: httpx.Request) -> httpx.Response | None:
        body = json.loads(request.content)
        body.pop("dimensions", None)
        return fake._embed(body, "embedder")

    fake.hook = ignore_dimensions
    with make_client(fake) as client:
        result = client.embed(["abc"], dimensions=3)
    assert result.embeddings == [vector_for("abc")[:3]]


def test_empty_list_returns_empty_result_without_a_request(
    client: InfinityClient, fake: FakeInfinity
) -> None:
    assert client.embed([]).embeddings == []
    assert client.rerank("q", []).results == []
    assert client.classify([]).results == []
    assert fake.requests == []


async def test_empty_list_async_sends_nothing(client: InfinityClient, fake: FakeInfinity) -> None:
    assert (await client.aembed([])).embeddings == []
    assert (await client.arerank("q", [])).results == []
    assert fake.requests == []


def test_empty_string_is_sent(client: InfinityClient) -> None:
    assert client.embed([""]).embeddings == [vector_for("")]


@pytest.mark.parametrize(
    ("texts", "error", "match"),
    [
        ("just a string", TypeError, "list of strings"),
        (None, TypeError, "list of strings"),
        (["ok", None], TypeError, r"texts\[1\] must be a string, got NoneType"),
        (["ok", 3], TypeError, r"texts\[1\] must be a string, got int"),
        (["x" * 122_881], ValueError, r"texts\[0\] has 122,881 characters.*at most 122,880"),
    ],
)
def test_bad_texts_fail_before_any_request(
    client: InfinityClient, fake: FakeInfinity, texts: object, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        client.embed(texts)  # type: ignore[arg-type]
    assert fake.requests == []


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"encoding_format": "binary"}, ValueError, "encoding_format must be one of"),
        ({"dimensions": 0}, ValueError, "dimensions must be a positive integer"),
        ({"dimensions": -4}, ValueError, "dimensions must be a positive integer"),
        ({"dimensions": 1.5}, TypeError, "dimensions must be a positive integer"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive integer"),
        ({"batch_size": 2049}, ValueError, "between 1 and 2048"),
        ({"max_concurrency": 0}, ValueError, "max_concurrency must be a positive integer"),
    ],
)
def test_bad_embed_arguments_fail_before_any_request(
    client: InfinityClient, fake: FakeInfinity, kwargs: dict[str, object], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        client.embed(["a", "b", "c", "d"], **kwargs)  # type: ignore[arg-type]
    assert fake.requests == []


def test_on_progress_counts_every_item(client: InfinityClient) -> None:
    done: list[int] = []
    client.embed([str(i) for i in range(8)], on_progress=done.append)
    assert sorted(done) == [2, 3, 3]


def test_sync_concurrency_is_bounded(fake: FakeInfinity) -> None:
    in_flight = 0
    peak = 0
    lock = threading.Lock()

    def slow(request: httpx.Request) -> None:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.02)
        with lock:
            in_flight -= 1

    fake.hook = slow
    with make_client(fake, batch_size=1, max_concurrency=3) as client:
        result = client.embed([str(i) for i in range(12)])
    assert result.embeddings == [vector_for(str(i)) for i in range(12)]
    assert peak == 3


async def test_async_concurrency_is_bounded() -> None:
    in_flight = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        body = json.loads(request.content)
        return FakeInfinity()._embed(body, "embedder")

    client = InfinityClient(
        base_url=FAKE_URL,
        batch_size=1,
        max_concurrency=2,
        http_async_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )
    result = await client.aembed([str(i) for i in range(9)])
    assert result.embeddings == [vector_for(str(i)) for i in range(9)]
    assert peak == 2


@pytest.mark.parametrize(
    "payload",
    [
        {"data": [{"embedding": [1.0], "index": 0}]},  # one vector for two texts
        {"data": [{"embedding": [1.0], "index": 0}, {"embedding": [1.0], "index": 0}]},
        {"data": [{"embedding": [1.0], "index": 0}, {"embedding": [1.0], "index": 5}]},
        {"data": [{"embedding": None, "index": 0}, {"embedding": [1.0], "index": 1}]},
        {"results": []},
    ],
)
def test_incomplete_answers_are_errors_not_partial_results(payload: object) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=payload))
    client = InfinityClient(base_url=FAKE_URL, http_client=httpx.Client(transport=transport))
    with pytest.raises(InvalidResponseError):
        client.embed(["a", "b"])


def test_base64_of_odd_length_is_rejected() -> None:
    bad = base64.b64encode(b"\x00" * 6).decode()
    payload = {"data": [{"embedding": bad, "index": 0}]}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=payload))
    client = InfinityClient(base_url=FAKE_URL, http_client=httpx.Client(transport=transport))
    with pytest.raises(InvalidResponseError, match="float32"):
        client.embed(["a"])


def test_base64_is_little_endian_float32() -> None:
    values = [0.1, -2.5, 3.0e-8]
    packed = base64.b64encode(struct.pack("<3f", *values)).decode()
    payload = {"data": [{"embedding": packed, "index": 0}], "model": "m"}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=payload))
    client = InfinityClient(base_url=FAKE_URL, http_client=httpx.Client(transport=transport))
    assert client.embed(["a"]).embeddings[0] == pytest.approx(values, rel=1e-6)


def test_non_json_success_is_an_invalid_response() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>hi</html>"))
    client = InfinityClient(base_url=FAKE_URL, http_client=httpx.Client(transport=transport))
    with pytest.raises(InvalidResponseError, match="not JSON"):
        client.embed(["a"])


def _answer(content: bytes) -> InfinityClient:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=content))
    return InfinityClient(base_url=FAKE_URL, http_client=httpx.Client(transport=transport))


def test_json_integers_in_a_float_answer_become_floats_and_index_usage_stay_ints() -> None:
    # A proxy re-serialising JSON may write 0.0 as 0 and an index as 1.0.
    content = (
        b'{"data": [{"embedding": [1, 0.5], "index": 1.0}, {"embedding": [0, -2], "index": 0}],'
        b' "model": "m", "usage": {"prompt_tokens": 7, "total_tokens": 7.0}}'
    )
    result = _answer(content).embed(["a", "b"], encoding_format="float")
    assert result.embeddings == [[0.0, -2.0], [1.0, 0.5]]
    assert all(type(x) is float for vector in result.embeddings for x in vector)
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (7, 7)
    assert type(result.usage.total_tokens) is int


@pytest.mark.parametrize("value", [b'"0.5"', b"null", b"[0.5]", b"{}"])
def test_a_vector_value_that_is_not_a_number_is_an_invalid_response(value: bytes) -> None:
    content = b'{"data": [{"embedding": [0.25, ' + value + b'], "index": 0}]}'
    with pytest.raises(
        InvalidResponseError, match="embedding 0 holds a value that is not a number"
    ):
        _answer(content).embed(["a"], encoding_format="float")


def test_a_fractional_index_is_an_invalid_response() -> None:
    content = b'{"data": [{"embedding": [0.25], "index": 0.5}]}'
    with pytest.raises(InvalidResponseError, match=r"index 0\.5"):
        _answer(content).embed(["a"], encoding_format="float")


# --- images and audio ------------------------------------------------------------------------


def test_images_from_paths_bytes_files_urls_and_data_uris(
    client: InfinityClient, fake: FakeInfinity, tmp_path: Path
) -> None:
    image = tmp_path / "cat.png"
    image.write_bytes(PNG)
    data_uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    inputs = [image, str(image), PNG, io.BytesIO(PNG), "https://example.com/cat.jpg", data_uri]
    result = client.embed_images(inputs, model="clip")
    assert len(result.embeddings) == 6
    assert all(body["modality"] == "image" for body in fake.bodies)
    sent = [uri for body in fake.bodies for uri in body["input"]]
    assert sent == [data_uri] * 4 + ["https://example.com/cat.jpg", data_uri]


def test_images_go_at_most_32_a_request(fake: FakeInfinity) -> None:
    with make_client(fake) as client:
        result = client.embed_images([PNG] * 70, model="clip")
    assert len(result.embeddings) == 70
    assert [len(b["input"]) for b in fake.bodies] == [32, 32, 6]


async def test_audio_is_sent_with_its_modality(client: InfinityClient, fake: FakeInfinity) -> None:
    wav = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 20
    await client.aembed_audio([wav], model="clip")
    assert fake.bodies[0]["modality"] == "audio"
    assert fake.bodies[0]["input"][0].startswith("data:audio/wav;base64,")


@pytest.mark.parametrize(
    ("item", "error", "match"),
    [
        (b"plain text, not an image", ValueError, r"images\[0\] is not a recognised image"),
        ("/no/such/file.png", ValueError, "neither an http"),
        (b"", ValueError, "is empty"),
        (42, TypeError, "must be a URL, a data URI, a path"),
        ("data:image/png,rawdata", ValueError, "without ';base64,'"),
    ],
)
def test_bad_images_fail_before_any_request(
    client: InfinityClient, fake: FakeInfinity, item: object, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        client.embed_images([item])  # type: ignore[list-item]
    assert fake.requests == []


def test_a_text_file_is_not_an_image(
    client: InfinityClient, fake: FakeInfinity, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("these are notes")
    with pytest.raises(ValueError, match="not a recognised image"):
        client.embed_images([notes])
    assert fake.requests == []


# --- rerank ----------------------------------------------------------------------------------

DOCS = [
    "paris is the capital of france",
    "berlin",
    "the capital of italy is rome",
    "a",
    "capital letters",
    "france has wine",
    "the capital",
]


def expected_order(query: str, docs: list[str]) -> list[int]:
    scores = [score_for(query, d) for d in docs]
    return sorted(range(len(docs)), key=lambda i: (-scores[i], i))


def test_rerank_merges_chunks_by_score(client: InfinityClient, fake: FakeInfinity) -> None:
    query = "capital of france"
    result = client.rerank(query, DOCS, model="reranker")
    assert isinstance(result, RerankResult)
    assert [r.index for r in result] == expected_order(query, DOCS)
    assert [r.relevance_score for r in result] == sorted(
        (score_for(query, d) for d in DOCS), reverse=True
    )
    assert [len(b["documents"]) for b in fake.bodies] == [4, 3]  # rerank_batch_size=4


async def test_arerank_matches_rerank(client: InfinityClient) -> None:
    query = "capital of france"
    sync = client.rerank(query, DOCS, top_n=3, return_documents=True)
    asynchronous = await client.arerank(query, DOCS, top_n=3, return_documents=True)
    assert sync == asynchronous


def test_top_n_applies_to_the_merged_list_and_is_sent(
    client: InfinityClient, fake: FakeInfinity
) -> None:
    query = "capital of france"
    result = client.rerank(query, DOCS, top_n=2, return_documents=True)
    assert [r.index for r in result] == expected_order(query, DOCS)[:2]
    assert [r.document for r in result] == [DOCS[i] for i in expected_order(query, DOCS)[:2]]
    assert [b["top_n"] for b in fake.bodies] == [2, 2]


def test_top_n_larger_than_the_documents_returns_them_all(
    client: InfinityClient, fake: FakeInfinity
) -> None:
    result = client.rerank("q", ["a", "b"], top_n=10)
    assert sorted(r.index for r in result) == [0, 1]
    assert fake.bodies[0]["top_n"] == 2


def test_rerank_body(client: InfinityClient, fake: FakeInfinity) -> None:
    client.rerank("q", ["a"], model="reranker", raw_scores=True, extra_body={"truncate": True})
    assert fake.bodies[0] == {
        "model": "reranker",
        "query": "q",
        "documents": ["a"],
        "return_documents": False,
        "raw_scores": True,
        "truncate": True,
    }


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"top_n": 0}, ValueError, "top_n must be a positive integer"),
        ({"top_n": -1}, ValueError, "top_n must be a positive integer"),
        ({"top_n": "3"}, TypeError, "top_n must be a positive integer"),
        ({"batch_size": 5000}, ValueError, "between 1 and 2048"),
    ],
)
def test_bad_rerank_arguments_fail_before_any_request(
    client: InfinityClient, fake: FakeInfinity, kwargs: dict[str, object], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        client.rerank("q", ["a"], **kwargs)  # type: ignore[arg-type]
    assert fake.requests == []


def test_bad_query_or_documents_fail_before_any_request(
    client: InfinityClient, fake: FakeInfinity
) -> None:
    with pytest.raises(TypeError, match="query must be a string"):
        client.rerank(None, ["a"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"documents\[1\] must be a string"):
        client.rerank("q", ["a", None])  # type: ignore[list-item]
    assert fake.requests == []


def test_rerank_reads_cohere_style_documents() -> None:
    # LiteLLM's proxy answers with documents as {"text": ...} objects.
    payload = {
        "id": "x",
        "results": [
            {"index": 1, "relevance_score": 0.9, "document": {"text": "b"}},
            {"index": 0, "relevance_score": 0.1, "document": {"text": "a"}},
        ],
        "meta": {},
    }
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=payload))
    client = InfinityClient(base_url=FAKE_URL, http_client=httpx.Client(transport=transport))
    result = client.rerank("q", ["a", "b"], return_documents=True)
    assert [(r.index, r.document) for r in result] == [(1, "b"), (0, "a")]


def test_rerank_with_missing_results_is_an_error() -> None:
    payload = {"results": [{"index": 0, "relevance_score": 0.5}]}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=payload))
    client = InfinityClient(base_url=FAKE_URL, http_client=httpx.Client(transport=transport))
    with pytest.raises(InvalidResponseError, match="asked for 2 rerank results"):
        client.rerank("q", ["a", "b"])


# --- classify, models, health ----------------------------------------------------------------


def test_classify(client: InfinityClient, fake: FakeInfinity) -> None:
    result = client.classify(["good day", "bad day", "good", "meh"], model="classifier")
    assert isinstance(result, ClassifyResult)
    assert [labels[0].label for labels in result] == [
        "positive",
        "negative",
        "positive",
        "negative",
    ]
    assert all(labels[0].score >= labels[1].score for labels in result)
    assert [len(b["input"]) for b in fake.bodies] == [3, 1]


async def test_aclassify_matches_classify(client: InfinityClient) -> None:
    texts = ["good", "bad"]
    assert await client.aclassify(texts, raw_scores=True) == client.classify(texts, raw_scores=True)


def test_models_lists_capabilities(client: InfinityClient) -> None:
    models = {m.id: m for m in client.models()}
    assert models["reranker"].capabilities == {"rerank"}
    assert models["clip"].capabilities == {"embed", "image_embed"}
    assert models["embedder"].backend == "torch"


def test_health_is_outside_the_url_prefix(fake: FakeInfinity) -> None:
    with make_client(fake, base_url="http://infinity.test:7997/v1/") as client:
        assert client.health() is True
        client.embed(["a"])
    assert [str(r.url) for r in fake.requests] == [
        "http://infinity.test:7997/health",
        "http://infinity.test:7997/v1/embeddings",
    ]


async def test_await_until_ready_polls_until_healthy(fake: FakeInfinity) -> None:
    fake.failures = [(503, "starting"), (503, "starting")]
    with make_client(fake) as client:
        await client.await_until_ready(timeout=5, interval=0.01)
        client.wait_until_ready(timeout=5, interval=0.01)
    assert len(fake.requests) == 4


async def test_wait_until_ready_gives_up_naming_the_last_error(fake: FakeInfinity) -> None:
    fake.failures = [(503, "starting")] * 1000
    with make_client(fake, max_retries=0) as client:
        with pytest.raises(InfinityTimeoutError, match=r"not ready after 0\.05s") as sync:
            client.wait_until_ready(timeout=0.05, interval=0.01)
        with pytest.raises(InfinityTimeoutError, match=r"not ready after 0\.05s") as async_:
            await client.await_until_ready(timeout=0.05, interval=0.01)
    for raised in (sync.value, async_.value):
        # The last try's error: the 503's, or the timeout of a try cut to what was left.
        assert isinstance(raised.__cause__, ServerError | InfinityTimeoutError)
        assert str(raised).endswith(str(raised.__cause__))


# --- configuration ---------------------------------------------------------------------------


def test_base_url_and_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFINITY_API_URL", "http://second:1")
    assert InfinityClient().base_url == "http://second:1"
    monkeypatch.setenv("INFINITY_API_BASE", "http://first:2/v1/")
    monkeypatch.setenv("INFINITY_API_KEY", "env-key")
    client = InfinityClient()
    assert client.base_url == "http://first:2/v1"
    assert client.api_key == SecretStr("env-key")
    assert InfinityClient(base_url="http://arg:3", api_key="arg-key").base_url == "http://arg:3"


def test_default_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    assert InfinityClient().base_url == "http://localhost:7997"


def test_api_key_is_sent_as_bearer_and_hidden(fake: FakeInfinity) -> None:
    fake.api_key = "sk-very-secret"
    with make_client(fake, api_key="sk-very-secret") as client:
        client.embed(["a"])
        assert "sk-very-secret" not in repr(client)
        assert "sk-very-secret" not in str(vars(client).get("api_key"))
    assert fake.requests[0].headers["authorization"] == "Bearer sk-very-secret"


def test_no_authorization_header_without_a_key(client: InfinityClient, fake: FakeInfinity) -> None:
    client.embed(["a"])
    assert "authorization" not in fake.requests[0].headers


def test_custom_headers_are_sent(fake: FakeInfinity) -> None:
    with make_client(fake, headers={"X-Team": "rag"}) as client:
        client.embed(["a"])
    assert fake.requests[0].headers["x-team"] == "rag"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_url": "localhost:7997"}, "base_url must be an http"),
        ({"base_url": "ftp://host"}, "base_url must be an http"),
        ({"max_retries": -1}, "max_retries must be an integer >= 0"),
        ({"batch_size": 4096}, "between 1 and 2048"),
        ({"rerank_batch_size": 0}, "rerank_batch_size must be a positive integer"),
        ({"max_concurrency": 0}, "max_concurrency must be a positive integer"),
    ],
)
def test_bad_configuration(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        InfinityClient(**kwargs)  # type: ignore[arg-type]


def test_one_client_shared_by_threads(client: InfinityClient) -> None:
    results: dict[int, list[list[float]]] = {}

    def work(n: int) -> None:
        results[n] = client.embed([f"{n}-{i}" for i in range(5)]).embeddings

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {n: [vector_for(f"{n}-{i}") for i in range(5)] for n in range(8)}


async def test_one_client_shared_by_tasks(client: InfinityClient) -> None:
    async def work(n: int) -> list[list[float]]:
        return (await client.aembed([f"{n}-{i}" for i in range(5)])).embeddings

    results = await asyncio.gather(*(work(n) for n in range(8)))
    assert results == [[vector_for(f"{n}-{i}") for i in range(5)] for n in range(8)]


def test_owned_async_pools_are_per_event_loop() -> None:
    # asyncio.run() makes a new loop each time; connections must not cross loops.
    fake = FakeInfinity()
    client = InfinityClient(base_url=FAKE_URL)
    seen = []

    async def grab() -> None:
        seen.append(client._engine.loop_clients.get())

    asyncio.run(grab())
    asyncio.run(grab())
    assert seen[0] is not seen[1]
    assert fake.requests == []
