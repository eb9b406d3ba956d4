"""The API key never shows: not in ``repr`` / ``str``, exceptions and their tracebacks, logs
(every logger at DEBUG), LangChain serialization (``dumpd`` / ``dumps``), LlamaIndex
``to_dict`` / ``to_json``, instrumentation events, validation errors or progress bars.

Through ``FakeInfinity`` (httpx.MockTransport): no socket is opened.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from infinity_rag import (
    AuthenticationError,
    InfinityClient,
    InfinityError,
    ServerError,
)
from infinity_rag._pool import RetryPolicy
from unit_tests.conftest import FAKE_URL, make_client
from unit_tests.fake_infinity import FakeInfinity

KEY = "sk-inf-Very-Secret-0123456789"


def assert_hidden(*texts: object) -> None:
    for text in texts:
        assert KEY not in str(text), f"the key leaked: {str(text)[:300]}"
        # Not even a recognisable part of it.
        assert "Very-Secret" not in str(text)


@pytest.fixture
def fake() -> FakeInfinity:
    return FakeInfinity(api_key=KEY)


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every logger, at DEBUG (httpx and httpcore included)."""
    with caplog.at_level(logging.DEBUG):
        for name in ("infinity_rag", "httpx", "httpcore", "langchain_core", "llama_index"):
            logging.getLogger(name).setLevel(logging.DEBUG)
        yield caplog


def lc_embeddings(fake: FakeInfinity, **kwargs: Any) -> Any:
    from infinity_rag.langchain import InfinityEmbeddings

    return InfinityEmbeddings(
        model="embedder",
        base_url=FAKE_URL,
        api_key=KEY,
        http_client=httpx.Client(transport=fake.transport()),
        http_async_client=httpx.AsyncClient(transport=fake.async_transport()),
        **kwargs,
    )


def lc_rerank(fake: FakeInfinity, **kwargs: Any) -> Any:
    from infinity_rag.langchain import InfinityRerank

    return InfinityRerank(
        model="reranker",
        base_url=FAKE_URL,
        api_key=KEY,
        http_client=httpx.Client(transport=fake.transport()),
        **kwargs,
    )


def li_embedding(fake: FakeInfinity, **kwargs: Any) -> Any:
    from infinity_rag.llama_index import InfinityEmbedding

    return InfinityEmbedding(model_name="embedder", client=make_client(fake, api_key=KEY), **kwargs)


def li_rerank(fake: FakeInfinity, **kwargs: Any) -> Any:
    from infinity_rag.llama_index import InfinityRerank

    return InfinityRerank(model="reranker", client=make_client(fake, api_key=KEY), **kwargs)


# --- repr / str ---------------------------------------------------------------------------------


def test_client_repr_and_str(fake: FakeInfinity) -> None:
    client = make_client(fake, api_key=KEY)
    assert_hidden(repr(client), str(client), f"{client!r}", "%r" % (client,))  # noqa: UP031
    assert "**********" in repr(client)
    assert_hidden(repr(client.api_key), str(client.api_key))


def test_client_repr_with_the_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFINITY_API_KEY", KEY)
    client = InfinityClient(base_url=FAKE_URL)
    assert client.api_key is not None
    assert_hidden(repr(client), str(client))


def test_framework_reprs(fake: FakeInfinity) -> None:
    for component in (lc_embeddings(fake), lc_rerank(fake), li_embedding(fake), li_rerank(fake)):
        assert_hidden(repr(component), str(component), f"{component}")


def test_framework_reprs_with_a_shared_client(fake: FakeInfinity) -> None:
    from infinity_rag.langchain import InfinityEmbeddings, InfinityRerank
    from infinity_rag.llama_index import InfinityEmbedding
    from infinity_rag.llama_index import InfinityRerank as LlamaRerank

    shared = make_client(fake, api_key=KEY)
    for component in (
        InfinityEmbeddings(model="embedder", client=shared),
        InfinityRerank(model="reranker", client=shared),
        InfinityEmbedding(model_name="embedder", client=shared),
        LlamaRerank(model="reranker", client=shared),
    ):
        assert_hidden(repr(component), str(component))


# --- serialization ------------------------------------------------------------------------------


def test_langchain_dumpd_and_dumps_keep_only_a_reference_to_the_env_var(
    fake: FakeInfinity,
) -> None:
    from langchain_core.load import dumpd, dumps

    for component in (lc_embeddings(fake), lc_rerank(fake)):
        data = dumpd(component)
        assert_hidden(json.dumps(data), dumps(component), dumps(component, pretty=True))
        assert data["kwargs"]["infinity_api_key"] == {
            "lc": 1,
            "type": "secret",
            "id": ["INFINITY_API_KEY"],
        }
        assert_hidden(component.model_dump_json(), component.model_dump())


def test_langchain_dumpd_of_a_component_sharing_a_client(fake: FakeInfinity) -> None:
    from langchain_core.load import dumps

    from infinity_rag.langchain import InfinityEmbeddings

    component = InfinityEmbeddings(model="embedder", client=make_client(fake, api_key=KEY))
    assert_hidden(dumps(component))


@pytest.mark.filterwarnings("ignore:The function `loads` is in beta")
def test_langchain_load_takes_the_key_from_the_environment_again(
    fake: FakeInfinity, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langchain_core.load import dumps, loads

    from infinity_rag.langchain import InfinityEmbeddings

    text = dumps(lc_embeddings(fake))
    monkeypatch.setenv("INFINITY_API_KEY", KEY)
    loaded = loads(
        text,
        secrets_from_env=True,
        valid_namespaces=["infinity_rag"],
        allowed_objects=[InfinityEmbeddings],
    )
    assert loaded.infinity_api_key.get_secret_value() == KEY
    assert_hidden(repr(loaded))


def test_llama_index_to_dict_and_to_json(fake: FakeInfinity) -> None:
    from infinity_rag.llama_index import InfinityEmbedding, InfinityRerank

    for component in (
        li_embedding(fake),
        li_rerank(fake),
        InfinityEmbedding(model_name="m", base_url=FAKE_URL, api_key=KEY),
        InfinityRerank(model="r", base_url=FAKE_URL, api_key=KEY),
    ):
        assert_hidden(component.to_dict(), component.to_json(), component.model_dump_json())
        assert "api_key" not in component.to_dict()


def test_llama_index_payloads_and_events_carry_no_key(fake: FakeInfinity) -> None:
    from llama_index.core.callbacks import CallbackManager, LlamaDebugHandler
    from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler

    seen: list[str] = []

    class Recorder(BaseEventHandler):
        def handle(self, event: Any, **kwargs: Any) -> None:
            seen.append(repr(event.dict()))

    recorder = Recorder()
    root = get_dispatcher()
    root.add_event_handler(recorder)
    debug = LlamaDebugHandler()
    try:
        embedding = li_embedding(fake, callback_manager=CallbackManager([debug]))
        rerank = li_rerank(fake, callback_manager=CallbackManager([debug]))
        embedding.get_text_embedding_batch(["a", "b"])
        embedding.get_query_embedding("q")
        from llama_index.core.schema import NodeWithScore, TextNode

        rerank.postprocess_nodes([NodeWithScore(node=TextNode(text="a"))], query_str="q")
    finally:
        root.event_handlers.remove(recorder)
    assert seen
    assert_hidden(*seen, embedding.to_payload(), debug.get_event_pairs())


# --- exceptions ---------------------------------------------------------------------------------


def _formatted(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_authentication_errors_do_not_show_the_key(mode: str) -> None:
    fake = FakeInfinity(api_key="the-right-one")
    client = make_client(fake, api_key=KEY)
    call = (
        (lambda: client.embed(["x"]))
        if mode == "sync"
        else (lambda: asyncio.run(client.aembed(["x"])))
    )
    with pytest.raises(AuthenticationError) as caught:
        call()
    assert_hidden(str(caught.value), repr(caught.value), _formatted(caught.value))
    assert_hidden(vars(caught.value))


def test_connection_and_retry_messages_do_not_show_the_key(
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = InfinityClient(
        base_url=FAKE_URL,
        api_key=KEY,
        http_client=httpx.Client(transport=httpx.MockTransport(refuse)),
    )
    client.retry = RetryPolicy(max_retries=2, initial_delay=0.001, max_delay=0.002)
    with pytest.raises(InfinityError) as caught:
        client.embed(["x"])
    assert_hidden(_formatted(caught.value), debug_logs.text)
    assert "retry 2 of 2" in debug_logs.text


def test_a_pydantic_validation_error_does_not_echo_the_key() -> None:
    from pydantic import ValidationError

    from infinity_rag.langchain import InfinityEmbeddings, InfinityRerank
    from infinity_rag.llama_index import InfinityEmbedding
    from infinity_rag.llama_index import InfinityRerank as LlamaRerank

    for build in (
        lambda: InfinityEmbeddings(model="m", api_key=KEY, timeout=-1),
        lambda: InfinityRerank(model="m", api_key=KEY, top_n=0),
        lambda: InfinityEmbedding(model_name="m", api_key=KEY, dimensions=0),
        lambda: LlamaRerank(model="m", api_key=KEY, top_n=0),
        lambda: InfinityEmbeddings(model="m", api_key=KEY, base_url="not a url"),
        lambda: InfinityEmbedding(model_name="m", api_key=KEY, base_url="not a url"),
    ):
        with pytest.raises(ValidationError) as caught:
            build()
        assert_hidden(str(caught.value), repr(caught.value), _formatted(caught.value))


def test_validation_error_details_do_not_carry_the_key() -> None:
    from pydantic import ValidationError

    from infinity_rag.langchain import InfinityEmbeddings
    from infinity_rag.llama_index import InfinityEmbedding

    for build in (
        lambda: InfinityEmbeddings(model="m", api_key=KEY, base_url="not a url"),
        lambda: InfinityEmbedding(model_name="m", api_key=KEY, base_url="not a url"),
    ):
        with pytest.raises(ValidationError) as caught:
            build()
        assert_hidden(caught.value.errors())


def test_a_client_conflict_error_does_not_echo_the_key(fake: FakeInfinity) -> None:
    from infinity_rag.langchain import InfinityEmbeddings
    from infinity_rag.llama_index import InfinityEmbedding

    shared = make_client(fake)
    for build in (
        lambda: InfinityEmbeddings(model="m", client=shared, api_key=KEY),
        lambda: InfinityEmbedding(model_name="m", client=shared, api_key=KEY),
    ):
        with pytest.raises((TypeError, ValueError)) as caught:
            build()
        assert_hidden(_formatted(caught.value))


def test_a_server_echoing_the_authorization_header_does_not_leak_it() -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        headers = dict(request.headers)
        return httpx.Response(500, json={"error": {"message": f"bad request {headers}"}})

    client = InfinityClient(
        base_url=FAKE_URL,
        api_key=KEY,
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(echo)),
    )
    with pytest.raises(ServerError) as caught:
        client.embed(["x"])
    assert_hidden(str(caught.value))


def test_a_password_in_the_url_is_masked() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = InfinityClient(
        base_url=f"http://user:{KEY}@infinity.test:7997",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(refuse)),
    )
    assert_hidden(repr(client))
    with pytest.raises(InfinityError) as caught:
        client.embed(["x"])
    assert_hidden(_formatted(caught.value))


# --- logs and progress output ------------------------------------------------------------------


def test_debug_logs_of_every_route_do_not_show_the_key(
    fake: FakeInfinity, debug_logs: pytest.LogCaptureFixture
) -> None:
    client = make_client(fake, api_key=KEY, batch_size=2)
    client.embed(["a", "b", "c"], model="embedder")
    client.rerank("q", ["a", "b"], model="reranker", return_documents=True)
    client.classify(["good"], model="classifier")
    client.models()
    client.health()
    asyncio.run(client.aembed(["a", "b", "c"], model="embedder"))
    assert "Infinity POST /embeddings -> 200" in debug_logs.text
    assert_hidden(debug_logs.text)


def test_framework_calls_log_no_key(
    fake: FakeInfinity, debug_logs: pytest.LogCaptureFixture
) -> None:
    from langchain_core.documents import Document

    lc_embeddings(fake).embed_documents(["a", "b"])
    lc_rerank(fake).compress_documents([Document(page_content="a")], "q")
    li_embedding(fake).get_text_embedding_batch(["a"])
    assert_hidden(debug_logs.text)


def test_progress_bars_do_not_show_the_key(
    fake: FakeInfinity, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tqdm")
    lc_embeddings(fake, show_progress_bar=True, batch_size=2).embed_documents(["a", "b", "c"])
    li_embedding(fake, embed_batch_size=2).get_text_embedding_batch(
        ["a", "b", "c"], show_progress=True
    )
    out, err = capsys.readouterr()
    assert err or out  # a bar was drawn
    assert_hidden(out, err)


def test_the_key_is_sent_only_as_a_bearer_header(fake: FakeInfinity) -> None:
    client = make_client(fake, api_key=KEY)
    client.embed(["x"])
    request = fake.requests[-1]
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert_hidden(str(request.url), request.content)
