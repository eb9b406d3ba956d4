"""The Haystack components against a real Infinity server: their vectors and scores are the
server's (as the client gets them), sync and ``run_async``; a ColBERT model and a CLIP model;
the errors a user sees (server down, wrong key), with the key in no message, repr or YAML.

The served reranker has seeded random weights: its scores carry no meaning, so the ranker is
checked against the server's own scores, not for sense.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from haystack import Document, Pipeline
from haystack.core.errors import PipelineRuntimeError
from haystack.utils import Secret

from infinity_rag import AuthenticationError, InfinityClient, InfinityConnectionError
from infinity_rag.haystack import (
    InfinityDocumentEmbedder,
    InfinityDocumentImageEmbedder,
    InfinityRanker,
    InfinityTextEmbedder,
)
from infinity_rag.testing import free_port
from integration_tests.conftest import ServerInfo, close_enough, png
from integration_tests.test_langchain_rerank import QUERY, TEXTS


def connection(server: ServerInfo) -> dict[str, Any]:
    """The server's URL, and its key through ``INFINITY_API_KEY`` (see ``keyed``)."""
    return {"base_url": server.url, "api_key": Secret.from_env_var("INFINITY_API_KEY")}


@pytest.fixture(autouse=True)
def keyed(infinity_server: ServerInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    """The components read the key as Haystack users give it: from an environment variable."""
    if infinity_server.api_key:
        monkeypatch.setenv("INFINITY_API_KEY", infinity_server.api_key)


def documents() -> list[Document]:
    return [
        Document(content=text, meta={"position": i, "title": f"Fact {i}"})
        for i, text in enumerate(TEXTS)
    ]


def run(mode: str, component: Any, **inputs: Any) -> dict[str, Any]:
    if mode == "sync":
        return component.run(**inputs)  # type: ignore[no-any-return]
    return asyncio.run(component.run_async(**inputs))  # type: ignore[no-any-return]


# --- embedders ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_text_embedder_gives_the_servers_vector(
    infinity_server: ServerInfo, client: InfinityClient, mode: str
) -> None:
    embedder = InfinityTextEmbedder(
        infinity_server.embed_model, prefix="query: ", **connection(infinity_server)
    )
    result = run(mode, embedder, text=QUERY)
    want = client.embed(
        ["query: " + QUERY], model=infinity_server.embed_model, encoding_format="float"
    )
    assert len(result["embedding"]) == infinity_server.dim
    assert close_enough([result["embedding"]], want.embeddings)
    assert result["meta"]["model"] == infinity_server.embed_model
    assert result["meta"]["usage"]["prompt_tokens"] > 0


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_document_embedder_gives_the_servers_vectors_in_order(
    infinity_server: ServerInfo, client: InfinityClient, mode: str
) -> None:
    originals = documents()
    before = copy.deepcopy(originals)
    embedder = InfinityDocumentEmbedder(
        infinity_server.embed_model,
        meta_fields_to_embed=["title"],
        embedding_separator=": ",
        batch_size=3,  # three requests, in flight at once
        progress_bar=False,
        **connection(infinity_server),
    )
    result = run(mode, embedder, documents=originals)
    texts = [f"Fact {i}: {text}" for i, text in enumerate(TEXTS)]
    want = client.embed(texts, model=infinity_server.embed_model).embeddings
    out = result["documents"]
    assert [d.meta["position"] for d in out] == list(range(len(TEXTS)))
    assert [d.id for d in out] == [d.id for d in originals]
    assert close_enough([d.embedding for d in out], want)
    assert originals == before
    assert result["meta"]["usage"]["prompt_tokens"] == sum(len(t) for t in texts)


def test_dimensions_and_the_float_format_give_the_same_truncated_vectors(
    infinity_server: ServerInfo,
) -> None:
    settings = {"dimensions": 64, **connection(infinity_server)}
    base64 = InfinityDocumentEmbedder(infinity_server.embed_model, **settings)
    floats = InfinityDocumentEmbedder(
        infinity_server.embed_model, encoding_format="float", **settings
    )
    a = [d.embedding for d in base64.run(documents())["documents"]]
    b = [d.embedding for d in floats.run(documents())["documents"]]
    assert {len(v) for v in a} == {64}
    assert close_enough(a, b)


# --- ranker -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("raw_scores", [False, True])
def test_ranker_orders_by_the_servers_scores(
    infinity_server: ServerInfo, client: InfinityClient, mode: str, raw_scores: bool
) -> None:
    originals = documents()
    before = copy.deepcopy(originals)
    ranker = InfinityRanker(
        infinity_server.rerank_model, top_k=3, raw_scores=raw_scores, **connection(infinity_server)
    )
    ranked = run(mode, ranker, query=QUERY, documents=originals)["documents"]
    want = client.rerank(
        QUERY, TEXTS, model=infinity_server.rerank_model, top_n=None, raw_scores=raw_scores
    )
    assert [d.meta["position"] for d in ranked] == [item.index for item in want][:3]
    assert [d.score for d in ranked] == pytest.approx([i.relevance_score for i in want][:3])
    if not raw_scores:
        assert all(0.0 <= d.score <= 1.0 for d in ranked)
    assert originals == before


def test_ranker_threshold_and_run_time_top_k(
    infinity_server: ServerInfo, client: InfinityClient
) -> None:
    ranker = InfinityRanker(infinity_server.rerank_model, **connection(infinity_server))
    scores = sorted(
        (
            i.relevance_score
            for i in client.rerank(QUERY, TEXTS, model=infinity_server.rerank_model)
        ),
        reverse=True,
    )
    middle = scores[len(scores) // 2]
    above = ranker.run(QUERY, documents(), score_threshold=middle)["documents"]
    assert [d.score for d in above] == pytest.approx([s for s in scores if s >= middle])
    assert len(ranker.run(QUERY, documents(), top_k=2)["documents"]) == 2
    assert ranker.run(QUERY, []) == {"documents": []}


async def test_a_colbert_model_ranks_as_the_client_does(vector_kinds_server: ServerInfo) -> None:
    settings = {"base_url": vector_kinds_server.url}
    if vector_kinds_server.api_key:
        settings["api_key"] = vector_kinds_server.api_key
    async with InfinityClient(**settings) as kinds:
        want = await kinds.arerank(QUERY, TEXTS, model="colbert", top_n=None)
        ranker = InfinityRanker("colbert", client=kinds, top_k=4)
        for ranked in (
            ranker.run(QUERY, documents())["documents"],
            (await ranker.run_async(QUERY, documents()))["documents"],
        ):
            assert [d.meta["position"] for d in ranked] == [i.index for i in want][:4]
            assert [d.score for d in ranked] == pytest.approx(
                [i.relevance_score for i in want][:4], abs=1e-6
            )


# --- images (CLIP) ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_image_embedder_gives_the_servers_image_vectors(
    clip_server: ServerInfo, tmp_path: Path, mode: str
) -> None:
    colours = {"red.png": (255, 0, 0), "blue.png": (0, 0, 255), "green.png": (0, 160, 0)}
    for name, rgb in colours.items():
        (tmp_path / name).write_bytes(png(rgb))
    originals = [Document(meta={"file_path": name}) for name in colours]
    settings: dict[str, Any] = {"base_url": clip_server.url}
    if clip_server.api_key:
        settings["api_key"] = Secret.from_token(clip_server.api_key)
    embedder = InfinityDocumentImageEmbedder(
        "clip", root_path=str(tmp_path), batch_size=2, progress_bar=False, **settings
    )
    result = run(mode, embedder, documents=originals)
    with InfinityClient(base_url=clip_server.url, api_key=clip_server.api_key) as client:
        want = client.embed_images([tmp_path / n for n in colours], model="clip").embeddings
        text = client.embed(["a red square"], model="clip").embeddings[0]
    out = result["documents"]
    assert close_enough([d.embedding for d in out], want)
    assert not close_enough([out[0].embedding], [out[1].embedding])
    assert len(out[0].embedding) == len(text)  # queries share the images' space
    assert [d.meta["file_path"] for d in out] == list(colours)
    assert all(d.meta["embedding_source"]["type"] == "image" for d in out)
    assert all("embedding_source" not in d.meta for d in originals)
    query = InfinityTextEmbedder("clip", **settings).run("a red square")["embedding"]
    assert close_enough([query], [text])


# --- errors -----------------------------------------------------------------------------------


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        for name in ("infinity_rag", "httpx", "httpcore", "haystack"):
            logging.getLogger(name).setLevel(logging.DEBUG)
        yield caplog


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_server_down_raises_a_connection_error_for_every_component(mode: str) -> None:
    down = {"base_url": f"http://127.0.0.1:{free_port()}", "max_retries": 0, "timeout": 5}
    calls = [
        (InfinityTextEmbedder("minilm", **down), {"text": "q"}),
        (InfinityDocumentEmbedder("minilm", **down), {"documents": documents()}),
        (InfinityRanker("reranker", **down), {"query": "q", "documents": documents()}),
    ]
    for component, inputs in calls:
        with pytest.raises(InfinityConnectionError, match=r"127\.0\.0\.1"):
            run(mode, component, **inputs)


def test_a_wrong_key_is_refused_and_shown_nowhere(
    infinity_server: ServerInfo,
    monkeypatch: pytest.MonkeyPatch,
    debug_logs: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if not infinity_server.api_key:
        pytest.fail("the session server runs with --api-key; this test needs it")
    wrong = f"{infinity_server.api_key}-but-wrong"
    monkeypatch.setenv("INFINITY_API_KEY", wrong)
    embedder = InfinityDocumentEmbedder(infinity_server.embed_model, base_url=infinity_server.url)
    ranker = InfinityRanker(infinity_server.rerank_model, base_url=infinity_server.url)
    pipeline = Pipeline()
    pipeline.add_component("embedder", embedder)

    with pytest.raises(PipelineRuntimeError) as caught:
        pipeline.run({"embedder": {"documents": documents()}})
    assert isinstance(caught.value.__cause__, AuthenticationError)
    with pytest.raises(AuthenticationError) as direct:
        asyncio.run(ranker.run_async(QUERY, documents()))

    shown = [
        "".join(traceback.format_exception(caught.value)),
        "".join(traceback.format_exception(direct.value)),
        repr(embedder),
        repr(ranker),
        repr(embedder._client),
        str(embedder.to_dict()),
        pipeline.dumps(),
        debug_logs.text,
        *capsys.readouterr(),
    ]
    assert "send_request_headers" in debug_logs.text  # httpcore's trace was captured
    for text in shown:
        assert wrong not in text
        assert infinity_server.api_key not in text
    assert "INFINITY_API_KEY" in pipeline.dumps()
