"""InfinityEmbeddings against FakeInfinity (httpx.MockTransport): no socket is opened."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from typing import Any

import httpx
import pytest
from langchain_core.embeddings import Embeddings
from langchain_core.load import dumpd, dumps, loads
from langchain_tests.unit_tests import EmbeddingsUnitTests
from pydantic import SecretStr, ValidationError

from infinity_rag import AuthenticationError, ModelCapabilityError, ModelNotFoundError
from infinity_rag.langchain import InfinityEmbeddings
from unit_tests.conftest import FAKE_URL, make_client
from unit_tests.fake_infinity import FakeInfinity, vector_for

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
SECRET = "sk-very-secret-infinity-key"


def _embeddings(fake: FakeInfinity, **kwargs: Any) -> InfinityEmbeddings:
    """An InfinityEmbeddings that builds its own client, with httpx clients routed to ``fake``."""
    kwargs.setdefault("model", "embedder")
    kwargs.setdefault("base_url", FAKE_URL)
    return InfinityEmbeddings(
        http_client=httpx.Client(transport=fake.transport()),
        http_async_client=httpx.AsyncClient(transport=fake.async_transport()),
        **kwargs,
    )


def _sync_transport_forbidden(request: httpx.Request) -> httpx.Response:
    raise AssertionError("the async path must not fall back to the sync client")


# --- LangChain's standard unit tests ---------------------------------------------------------


class TestInfinityEmbeddingsStandard(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[InfinityEmbeddings]:
        return InfinityEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": "embedder", "client": make_client(FakeInfinity())}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {"INFINITY_API_BASE": "http://env.test:7997/v1/", "INFINITY_API_KEY": "env-key"},
            {"model": "embedder"},
            {
                "model": "embedder",
                "infinity_api_base": "http://env.test:7997/v1",
                "infinity_api_key": "env-key",
            },
        )


# --- embedding text --------------------------------------------------------------------------


def test_embed_documents_returns_float_vectors_in_order(fake: FakeInfinity) -> None:
    texts = [f"text number {i}" for i in range(7)]
    emb = _embeddings(fake, batch_size=3)

    vectors = emb.embed_documents(texts)

    assert vectors == [vector_for(t) for t in texts]
    assert all(type(x) is float for v in vectors for x in v)
    assert [len(b["input"]) for b in fake.bodies] == [3, 3, 1]
    # The first request to a model asks for floats (the client learns its vectors' shape).
    assert [b["encoding_format"] for b in fake.bodies] == ["float", "base64", "base64"]
    assert all(b["model"] == "embedder" for b in fake.bodies)


def test_embed_query_returns_one_vector(fake: FakeInfinity) -> None:
    emb = _embeddings(fake)

    assert emb.embed_query("what is infinity?") == vector_for("what is infinity?")
    assert emb.embed_query("what is infinity?") == vector_for("what is infinity?")
    assert fake.bodies == [
        {"model": "embedder", "input": ["what is infinity?"], "encoding_format": fmt}
        for fmt in ("float", "base64")  # the first request to a model asks for floats
    ]


def test_prefixes_go_to_queries_and_documents_respectively(fake: FakeInfinity) -> None:
    emb = _embeddings(fake, query_prefix="query: ", document_prefix="passage: ")

    doc_vectors = emb.embed_documents(["alpha", "beta"])
    query_vector = emb.embed_query("alpha")

    assert [b["input"] for b in fake.bodies] == [
        ["passage: alpha", "passage: beta"],
        ["query: alpha"],
    ]
    assert doc_vectors == [vector_for("passage: alpha"), vector_for("passage: beta")]
    assert query_vector == vector_for("query: alpha")


def test_float_encoding_dimensions_user_and_extra_body_reach_the_request(
    fake: FakeInfinity,
) -> None:
    emb = _embeddings(
        fake,
        encoding_format="float",
        dimensions=2,
        user="alice",
        extra_body={"custom": 1, "user": "bob"},
    )

    vector = emb.embed_query("hello")

    assert vector == vector_for("hello")[:2]
    assert fake.bodies[0] == {
        "model": "embedder",
        "input": ["hello"],
        "encoding_format": "float",
        "dimensions": 2,
        "user": "bob",  # extra_body is passed as is and wins
        "custom": 1,
    }


def test_empty_document_list_sends_no_request(fake: FakeInfinity) -> None:
    emb = _embeddings(fake)

    assert emb.embed_documents([]) == []
    assert fake.requests == []


async def test_async_empty_document_list_sends_no_request(fake: FakeInfinity) -> None:
    emb = _embeddings(fake)

    assert await emb.aembed_documents([]) == []
    assert fake.requests == []


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda e: e.embed_documents("one string"), TypeError, "texts must be a list"),
        (lambda e: e.embed_documents(["ok", 3]), TypeError, r"texts\[1\] must be a string"),
        (lambda e: e.embed_documents([b"bytes"]), TypeError, r"texts\[0\] must be a string"),
        (lambda e: e.embed_documents(["x" * 200_000]), ValueError, "at most 122,880"),
        (lambda e: e.embed_query(None), TypeError, "query must be a string"),
        (lambda e: e.embed_image("photo.png"), TypeError, "images must be a list"),
        (lambda e: e.embed_image(["/no/such/file.png"]), ValueError, "neither an http"),
    ],
)
def test_bad_input_raises_before_any_request(
    fake: FakeInfinity, call: Any, error: type[Exception], message: str
) -> None:
    emb = _embeddings(fake, document_prefix="passage: ", query_prefix="query: ")

    with pytest.raises(error, match=message):
        call(emb)
    assert fake.requests == []


async def test_async_bad_input_raises_before_any_request(fake: FakeInfinity) -> None:
    emb = _embeddings(fake, document_prefix="passage: ")

    with pytest.raises(TypeError, match=r"texts\[0\] must be a string"):
        await emb.aembed_documents([None])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="query must be a string"):
        await emb.aembed_query(42)  # type: ignore[arg-type]
    assert fake.requests == []


async def test_async_methods_are_native_and_match_sync(fake: FakeInfinity) -> None:
    texts = [f"doc {i}" for i in range(5)]
    sync_emb = _embeddings(fake, batch_size=2, query_prefix="q: ")
    # Only the async transport works: an executor fallback onto the sync path would fail.
    async_only = InfinityEmbeddings(
        model="embedder",
        base_url=FAKE_URL,
        batch_size=2,
        query_prefix="q: ",
        http_client=httpx.Client(transport=httpx.MockTransport(_sync_transport_forbidden)),
        http_async_client=httpx.AsyncClient(transport=fake.async_transport()),
    )

    assert await async_only.aembed_documents(texts) == sync_emb.embed_documents(texts)
    assert await async_only.aembed_query("hello") == sync_emb.embed_query("hello")


def test_batch_size_default_is_the_clients(fake: FakeInfinity) -> None:
    emb = InfinityEmbeddings(model="embedder", client=make_client(fake, batch_size=2))

    emb.embed_documents(["a", "b", "c", "d", "e"])

    assert [len(b["input"]) for b in fake.bodies] == [2, 2, 1]


def test_max_concurrency_one_sends_chunks_in_order(fake: FakeInfinity) -> None:
    emb = _embeddings(fake, batch_size=1, max_concurrency=1)

    emb.embed_documents(["a", "b", "c"])

    assert [b["input"] for b in fake.bodies] == [["a"], ["b"], ["c"]]


# --- images ----------------------------------------------------------------------------------


def test_embed_image_accepts_paths_urls_data_uris_and_bytes(
    fake: FakeInfinity, tmp_path: Any
) -> None:
    path = tmp_path / "red.png"
    path.write_bytes(PNG)
    data_uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    emb = _embeddings(fake, model="clip")

    vectors = emb.embed_image([str(path), "https://example.com/cat.jpg", data_uri, PNG])

    body = fake.bodies[0]
    assert body["modality"] == "image"
    assert body["model"] == "clip"
    assert body["input"] == [data_uri, "https://example.com/cat.jpg", data_uri, data_uri]
    assert vectors == [vector_for(uri) for uri in body["input"]]


async def test_aembed_image_matches_embed_image(fake: FakeInfinity) -> None:
    emb = _embeddings(fake, model="clip", dimensions=3)

    sync_vectors = emb.embed_image(["https://example.com/a.png"])
    async_vectors = await emb.aembed_image(["https://example.com/a.png"])

    assert async_vectors == sync_vectors
    assert len(async_vectors[0]) == 3
    # The first request asks for floats (the client learns the model's vectors), then base64.
    assert fake.bodies[0] == dict(fake.bodies[1], encoding_format="float")


# --- progress bar ----------------------------------------------------------------------------


def test_progress_bar_advances_over_chunks(
    fake: FakeInfinity, capsys: pytest.CaptureFixture[str]
) -> None:
    emb = _embeddings(fake, batch_size=4, show_progress_bar=True)

    emb.embed_documents([f"t{i}" for i in range(10)])

    err = capsys.readouterr().err
    assert "Embedding (embedder)" in err
    assert "10/10" in err
    assert len(fake.requests) == 3


async def test_async_progress_bar_advances_over_chunks(
    fake: FakeInfinity, capsys: pytest.CaptureFixture[str]
) -> None:
    emb = _embeddings(fake, batch_size=4, show_progress_bar=True)

    await emb.aembed_documents([f"t{i}" for i in range(6)])

    assert "6/6" in capsys.readouterr().err


def test_no_progress_bar_by_default(fake: FakeInfinity, capsys: pytest.CaptureFixture[str]) -> None:
    _embeddings(fake).embed_documents(["a", "b"])

    assert capsys.readouterr().err == ""


def test_progress_bar_without_tqdm_raises_with_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)

    with pytest.raises(ImportError, match="pip install tqdm"):
        InfinityEmbeddings(model="embedder", show_progress_bar=True)
    assert InfinityEmbeddings(model="embedder").show_progress_bar is False


# --- configuration ---------------------------------------------------------------------------


def test_defaults() -> None:
    emb = InfinityEmbeddings(model="embedder")

    assert emb.infinity_api_base == "http://localhost:7997"
    assert emb.infinity_api_key is None
    assert emb.encoding_format == "base64"
    assert emb.request_timeout == 120.0
    assert emb.max_retries == 2
    assert emb._client.base_url == "http://localhost:7997"
    assert emb._client.api_key is None


def test_fields_by_alias_and_by_name_configure_the_client() -> None:
    by_alias = InfinityEmbeddings(
        model="embedder",
        base_url="http://a.test:1234/v1/",
        api_key=SECRET,
        timeout=5.0,
        max_retries=0,
    )
    by_name = InfinityEmbeddings(
        model="embedder",
        infinity_api_base="http://a.test:1234/v1",
        infinity_api_key=SECRET,
        request_timeout=5.0,
        max_retries=0,
    )

    for emb in (by_alias, by_name):
        assert emb.infinity_api_base == "http://a.test:1234/v1"
        assert isinstance(emb.infinity_api_key, SecretStr)
        assert emb.infinity_api_key.get_secret_value() == SECRET
        assert emb._client.base_url == "http://a.test:1234/v1"
        assert emb._client.timeout == 5.0
        assert emb._client.retry.max_retries == 0


def test_env_lookup_is_the_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFINITY_API_URL", "http://url.test:7997")
    assert InfinityEmbeddings(model="m").infinity_api_base == "http://url.test:7997"

    monkeypatch.setenv("INFINITY_API_BASE", "http://base.test:7997")
    assert InfinityEmbeddings(model="m").infinity_api_base == "http://base.test:7997"

    monkeypatch.setenv("INFINITY_API_KEY", "")
    assert InfinityEmbeddings(model="m").infinity_api_key is None  # empty means none


def test_api_key_is_sent_as_bearer_token() -> None:
    fake = FakeInfinity(api_key=SECRET)
    emb = _embeddings(fake, api_key=SECRET)

    emb.embed_query("hi")

    assert fake.requests[0].headers["authorization"] == f"Bearer {SECRET}"


def test_default_headers_are_sent(fake: FakeInfinity) -> None:
    _embeddings(fake, default_headers={"X-Team": "search"}).embed_query("hi")

    assert fake.requests[0].headers["x-team"] == "search"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"unknown_option": 1}, "unknown_option"),
        ({"model_kwargs": {}}, "model_kwargs"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2049}, "batch_size"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"dimensions": 0}, "dimensions"),
        ({"encoding_format": "binary"}, "encoding_format"),
        ({"max_retries": -1}, "max_retries"),
        ({"timeout": 0}, "timeout"),
        ({"base_url": "localhost:7997"}, "base_url"),
        ({"client": "not a client"}, "client"),
    ],
)
def test_bad_settings_raise_at_construction(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        InfinityEmbeddings(model="embedder", **kwargs)


def test_model_is_required() -> None:
    with pytest.raises(ValidationError, match="model"):
        InfinityEmbeddings()  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="model"):
        InfinityEmbeddings(model="")


def test_construction_makes_no_request(fake: FakeInfinity) -> None:
    _embeddings(fake, api_key=SECRET)
    InfinityEmbeddings(model="embedder", client=make_client(fake))

    assert fake.requests == []


# --- a shared client -------------------------------------------------------------------------


def test_injected_client_is_used_and_reflected(fake: FakeInfinity) -> None:
    client = make_client(fake, api_key=SECRET)
    emb = InfinityEmbeddings(model="embedder", client=client)

    emb.embed_query("hi")

    assert emb._client is client
    assert emb.infinity_api_base == FAKE_URL
    assert emb.infinity_api_key is not None
    assert emb.infinity_api_key.get_secret_value() == SECRET
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_url": "http://other.test"},
        {"api_key": SECRET},
        {"timeout": 3.0},
        {"max_retries": 5},
        {"default_headers": {"a": "b"}},
        {"http_client": httpx.Client()},
    ],
)
def test_connection_settings_conflict_with_an_injected_client(
    fake: FakeInfinity, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(TypeError, match="cannot be combined with client=") as info:
        InfinityEmbeddings(model="embedder", client=make_client(fake), **kwargs)
    assert SECRET not in str(info.value)


def test_none_connection_settings_do_not_conflict_with_an_injected_client(
    fake: FakeInfinity,
) -> None:
    client = make_client(fake, api_key=SECRET)

    emb = InfinityEmbeddings(model="embedder", client=client, api_key=None, base_url=None)

    assert emb._client is client
    assert emb.infinity_api_key is not None
    assert emb.infinity_api_key.get_secret_value() == SECRET


def test_env_settings_do_not_conflict_with_an_injected_client(
    fake: FakeInfinity, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(fake)  # no key
    monkeypatch.setenv("INFINITY_API_BASE", "http://env.test:1")
    monkeypatch.setenv("INFINITY_API_KEY", "env-key")

    emb = InfinityEmbeddings(model="embedder", client=client)

    assert emb.infinity_api_base == FAKE_URL
    assert emb.infinity_api_key is None


def test_one_client_for_the_instances_lifetime(fake: FakeInfinity) -> None:
    http_client = httpx.Client(transport=fake.transport())
    emb = InfinityEmbeddings(model="embedder", base_url=FAKE_URL, http_client=http_client)
    client = emb._client

    emb.embed_query("a")
    emb.embed_documents(["b", "c"])

    assert emb._client is client
    assert client._engine.http_client is http_client
    assert emb.model_copy(update={"dimensions": 2})._client is client


def test_deep_copies_share_the_client_and_copy_the_settings(fake: FakeInfinity) -> None:
    shared = make_client(fake)
    emb = InfinityEmbeddings(model="embedder", client=shared, extra_body={"options": [1]})

    clone = copy.deepcopy(emb)
    deep = emb.model_copy(deep=True)

    assert clone == deep == emb
    assert clone._client is deep._client is shared
    assert clone.extra_body == emb.extra_body
    assert clone.extra_body is not emb.extra_body
    assert deep.embed_query("x") == vector_for("x")
    assert len(fake.requests) == 1


# --- the key is a secret ---------------------------------------------------------------------


def test_key_never_in_repr_str_or_dumps() -> None:
    emb = InfinityEmbeddings(model="embedder", api_key=SECRET, base_url=FAKE_URL)

    assert SECRET not in repr(emb)
    assert SECRET not in str(emb)
    assert SECRET not in repr(emb.infinity_api_key)
    assert SECRET not in emb.model_dump_json()
    assert SECRET not in dumps(emb)
    assert SECRET not in json.dumps(dumpd(emb))


def test_serialization_replaces_the_key_with_a_secret_reference() -> None:
    emb = InfinityEmbeddings(model="embedder", api_key=SECRET, base_url=FAKE_URL, dimensions=2)

    data = dumpd(emb)

    assert InfinityEmbeddings.is_lc_serializable()
    assert emb.lc_secrets == {"infinity_api_key": "INFINITY_API_KEY"}
    assert data["id"] == ["infinity_rag", "langchain", "embeddings", "InfinityEmbeddings"]
    assert data["kwargs"]["infinity_api_key"] == {
        "lc": 1,
        "type": "secret",
        "id": ["INFINITY_API_KEY"],
    }
    assert "client" not in data["kwargs"]


@pytest.mark.filterwarnings("ignore::langchain_core._api.beta_decorator.LangChainBetaWarning")
def test_serialization_round_trip_takes_the_key_from_secrets_map() -> None:
    emb = InfinityEmbeddings(model="embedder", api_key=SECRET, base_url=FAKE_URL, dimensions=2)

    loaded = loads(
        dumps(emb),
        secrets_map={"INFINITY_API_KEY": SECRET},
        valid_namespaces=["infinity_rag"],
        allowed_objects=[InfinityEmbeddings],
    )

    assert isinstance(loaded, InfinityEmbeddings)
    assert loaded.model == "embedder"
    assert loaded.dimensions == 2
    assert loaded.infinity_api_base == FAKE_URL
    assert loaded.infinity_api_key is not None
    assert loaded.infinity_api_key.get_secret_value() == SECRET


def test_validation_errors_do_not_echo_the_key() -> None:
    with pytest.raises(ValidationError) as info:
        InfinityEmbeddings(model="embedder", api_key=SECRET, batch_size=-1)

    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)


def test_server_errors_do_not_contain_the_key() -> None:
    fake = FakeInfinity(api_key="the-right-key")
    emb = _embeddings(fake, api_key=SECRET)

    with pytest.raises(AuthenticationError, match="api_key") as info:
        emb.embed_query("hi")
    assert SECRET not in str(info.value)


# --- errors a user sees ----------------------------------------------------------------------


def test_unknown_model_raises_model_not_found(fake: FakeInfinity) -> None:
    emb = _embeddings(fake, model="no-such-model")

    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        emb.embed_documents(["a"])


async def test_async_non_embedding_model_raises_capability_error(fake: FakeInfinity) -> None:
    emb = _embeddings(fake, model="reranker")

    with pytest.raises(ModelCapabilityError, match="does not support `embed`"):
        await emb.aembed_query("a")


# --- packaging -------------------------------------------------------------------------------


def test_is_a_langchain_embeddings() -> None:
    emb = InfinityEmbeddings(model="embedder")

    assert isinstance(emb, Embeddings)
    assert type(emb).aembed_documents is not Embeddings.aembed_documents
    assert type(emb).aembed_query is not Embeddings.aembed_query


def test_importing_infinity_rag_does_not_import_langchain() -> None:
    code = (
        "import sys, infinity_rag\n"
        "prefixes = ('langchain', 'infinity_rag.langchain')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(prefixes))\n"
        "assert not loaded, loaded\n"
        "import infinity_rag.langchain\n"
        "assert 'langchain_core' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_langchain_core_gives_the_install_command() -> None:
    code = (
        "import sys\n"
        "sys.modules['langchain_core'] = None\n"
        "try:\n"
        "    import infinity_rag.langchain\n"
        "except ImportError as exc:\n"
        "    assert 'pip install \"infinity-rag[langchain]\"' in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('imported without langchain-core')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
