"""The API key never shows, over real sockets to a real Infinity server: not in the logs of
every logger at DEBUG (httpx and httpcore trace every request), not in errors and their
tracebacks, not in progress bars, not in serialized framework objects.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Iterator

import pytest

from infinity_rag import AuthenticationError, InfinityClient, InfinityConnectionError
from infinity_rag._pool import RetryPolicy
from integration_tests.conftest import ServerInfo
from integration_tests.fault_proxy import Fault, FaultProxy


@pytest.fixture
def key(infinity_server: ServerInfo) -> str:
    if not infinity_server.api_key:
        pytest.skip("the server runs without --api-key")
    return infinity_server.api_key


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        for name in ("infinity_rag", "httpx", "httpcore", "langchain_core", "llama_index"):
            logging.getLogger(name).setLevel(logging.DEBUG)
        yield caplog


def hidden(key: str, *texts: object) -> bool:
    return all(key not in str(text) for text in texts)


def test_a_full_session_logs_nothing_secret(
    infinity_server: ServerInfo, key: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    with InfinityClient(base_url=infinity_server.url, api_key=key, batch_size=2) as client:
        client.embed(["a", "b", "c"], model=infinity_server.embed_model)
        client.rerank("q", ["a", "b"], model=infinity_server.rerank_model, top_n=1)
        client.classify(["good"], model=infinity_server.classify_model)
        client.models()
        client.health()
        asyncio.run(client.aembed(["a", "b", "c"], model=infinity_server.embed_model))
    assert "send_request_headers" in debug_logs.text  # httpcore's trace was captured
    assert hidden(key, debug_logs.text)


def test_auth_failures_log_and_raise_nothing_secret(
    infinity_server: ServerInfo, key: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    wrong = f"{key}-but-wrong"
    with (
        InfinityClient(base_url=infinity_server.url, api_key=wrong) as client,
        pytest.raises(AuthenticationError) as caught,
    ):
        client.embed(["a"], model=infinity_server.embed_model)
    text = "".join(traceback.format_exception(caught.value))
    assert hidden(wrong, text, repr(caught.value), debug_logs.text)
    assert hidden(key, text, debug_logs.text)


def test_retried_failures_log_nothing_secret(
    infinity_server: ServerInfo, key: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    with FaultProxy(infinity_server.url) as proxy:
        proxy.inject(Fault("reset"))
        proxy.inject(Fault("html"))
        proxy.inject(Fault("status", status=429))
        proxy.inject(Fault("pass"))
        proxy.inject(Fault("truncate", after_bytes=5), times=4)
        client = InfinityClient(base_url=proxy.url, api_key=key)
        client.retry = RetryPolicy(max_retries=3, initial_delay=0.01, max_delay=0.02)
        with client:
            client.embed(["a"], model=infinity_server.embed_model)
            with pytest.raises(InfinityConnectionError) as caught:
                client.embed(["a"], model=infinity_server.embed_model)
    assert "retry 3 of 3" in debug_logs.text
    text = "".join(traceback.format_exception(caught.value))
    assert hidden(key, text, debug_logs.text)


def test_framework_classes_log_serialize_and_draw_nothing_secret(
    infinity_server: ServerInfo,
    key: str,
    debug_logs: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("tqdm")
    from langchain_core.documents import Document
    from langchain_core.load import dumps
    from llama_index.core.schema import NodeWithScore, TextNode

    from infinity_rag.langchain import InfinityEmbeddings, InfinityRerank
    from infinity_rag.llama_index import InfinityEmbedding
    from infinity_rag.llama_index import InfinityRerank as LlamaRerank

    connection = {"base_url": infinity_server.url, "api_key": key}
    lc_embed = InfinityEmbeddings(
        model=infinity_server.embed_model, show_progress_bar=True, batch_size=2, **connection
    )
    lc_rerank = InfinityRerank(model=infinity_server.rerank_model, **connection)
    li_embed = InfinityEmbedding(
        model_name=infinity_server.embed_model, embed_batch_size=2, **connection
    )
    li_rerank = LlamaRerank(model=infinity_server.rerank_model, **connection)

    lc_embed.embed_documents(["a", "b", "c"])
    asyncio.run(lc_embed.aembed_documents(["a", "b", "c"]))
    lc_rerank.compress_documents([Document(page_content="a")], "q")
    li_embed.get_text_embedding_batch(["a", "b", "c"], show_progress=True)
    li_rerank.postprocess_nodes([NodeWithScore(node=TextNode(text="a"))], query_str="q")

    out, err = capsys.readouterr()
    assert "Embedding" in err or "Generating" in err  # the bars were drawn
    serialized = [dumps(lc_embed), dumps(lc_rerank), li_embed.to_json(), li_rerank.to_json()]
    reprs = [repr(c) for c in (lc_embed, lc_rerank, li_embed, li_rerank)]
    assert hidden(key, out, err, debug_logs.text, *serialized, *reprs)
