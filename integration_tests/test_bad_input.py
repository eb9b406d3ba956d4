"""Bad input that only the real server can judge (docs/bad_input.md), for the client and the
four framework classes: an empty string, past 2048 items, ``top_n`` past the documents,
``dimensions`` past the model's size, an unknown model, a model without the capability, a
missing or wrong key, an unreachable URL, an image sent to a text model.

The rows the client refuses before any request are tested in ``unit_tests/test_bad_input.py``;
a few are repeated here to show that nothing reaches the server.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Callable
from typing import Any

import pytest

from infinity_rag import (
    AuthenticationError,
    InfinityClient,
    InfinityConnectionError,
    InvalidRequestError,
    ModelCapabilityError,
    ModelNotFoundError,
)
from integration_tests.conftest import ServerInfo

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a0d7a1a70000000049454e44ae426082"
)


def resolve(value: Any) -> Any:
    if inspect.iscoroutine(value):
        return asyncio.run(value)
    return value


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Every entry builds its own object from (url, key, model) and calls one public method.
Build = Callable[[str, "str | None", str], Any]


def client(url: str, key: str | None) -> InfinityClient:
    return InfinityClient(base_url=url, api_key=key, max_retries=0)


def lc_embeddings(url: str, key: str | None, model: str) -> Any:
    from infinity_rag.langchain import InfinityEmbeddings

    return InfinityEmbeddings(model=model, base_url=url, api_key=key, max_retries=0)


def lc_rerank(url: str, key: str | None, model: str, **kwargs: Any) -> Any:
    from infinity_rag.langchain import InfinityRerank

    return InfinityRerank(model=model, base_url=url, api_key=key, max_retries=0, **kwargs)


def li_embedding(url: str, key: str | None, model: str) -> Any:
    from infinity_rag.llama_index import InfinityEmbedding

    return InfinityEmbedding(model_name=model, base_url=url, api_key=key, max_retries=0)


def li_rerank(url: str, key: str | None, model: str, **kwargs: Any) -> Any:
    from infinity_rag.llama_index import InfinityRerank

    return InfinityRerank(model=model, base_url=url, api_key=key, max_retries=0, **kwargs)


def docs(texts: list[str]) -> Any:
    from langchain_core.documents import Document

    return [Document(page_content=t) for t in texts]


def nodes(texts: list[str]) -> Any:
    from llama_index.core.schema import NodeWithScore, TextNode

    return [NodeWithScore(node=TextNode(text=t), score=0.0) for t in texts]


#: name -> (kind, call(url, key, model)); kind says which served model fits it.
METHODS: dict[str, tuple[str, Build]] = {
    "client.embed": ("embed", lambda u, k, m: client(u, k).embed(["a", ""], model=m)),
    "client.aembed": ("embed", lambda u, k, m: client(u, k).aembed(["a", ""], model=m)),
    "client.rerank": ("rerank", lambda u, k, m: client(u, k).rerank("q", ["a", ""], model=m)),
    "client.arerank": ("rerank", lambda u, k, m: client(u, k).arerank("", ["a"], model=m)),
    "client.classify": ("classify", lambda u, k, m: client(u, k).classify(["a", ""], model=m)),
    "client.aclassify": ("classify", lambda u, k, m: client(u, k).aclassify([""], model=m)),
    "lc.embed_documents": (
        "embed",
        lambda u, k, m: lc_embeddings(u, k, m).embed_documents(["a", ""]),
    ),
    "lc.aembed_query": ("embed", lambda u, k, m: lc_embeddings(u, k, m).aembed_query("")),
    "lc.compress_documents": (
        "rerank",
        lambda u, k, m: lc_rerank(u, k, m).compress_documents(docs(["a", ""]), "q"),
    ),
    "lc.arerank": ("rerank", lambda u, k, m: lc_rerank(u, k, m).arerank(["a"], "")),
    "li.get_text_embedding_batch": (
        "embed",
        lambda u, k, m: li_embedding(u, k, m).get_text_embedding_batch(["a", ""]),
    ),
    "li.aget_query_embedding": (
        "embed",
        lambda u, k, m: li_embedding(u, k, m).aget_query_embedding(""),
    ),
    "li.postprocess_nodes": (
        "rerank",
        lambda u, k, m: li_rerank(u, k, m).postprocess_nodes(nodes(["a", ""]), query_str="q"),
    ),
    "li.apostprocess_nodes": (
        "rerank",
        lambda u, k, m: li_rerank(u, k, m).apostprocess_nodes(nodes(["a"]), query_str=""),
    ),
}


def model_for(kind: str, server: ServerInfo) -> str:
    return {
        "embed": server.embed_model,
        "rerank": server.rerank_model,
        "classify": server.classify_model,
    }[kind]


def wrong_model_for(kind: str, server: ServerInfo) -> str:
    return server.rerank_model if kind == "embed" else server.embed_model


@pytest.mark.parametrize("method", METHODS)
def test_empty_strings_get_real_results(infinity_server: ServerInfo, method: str) -> None:
    kind, call = METHODS[method]
    result = resolve(
        call(infinity_server.url, infinity_server.api_key, model_for(kind, infinity_server))
    )
    assert result is not None
    if kind == "embed":
        vectors = result if isinstance(result[0], list) else [result]
        assert all(len(v) == infinity_server.dim for v in vectors)
        assert all(any(x != 0.0 for x in v) for v in vectors)


@pytest.mark.parametrize("method", METHODS)
def test_an_unknown_model_is_model_not_found_with_the_served_names(
    infinity_server: ServerInfo, method: str
) -> None:
    _, call = METHODS[method]
    with pytest.raises(ModelNotFoundError) as caught:
        resolve(call(infinity_server.url, infinity_server.api_key, "no-such-model"))
    message = str(caught.value)
    assert "no-such-model" in message
    assert infinity_server.embed_model in message  # the served names, to pick from


@pytest.mark.parametrize("method", METHODS)
def test_a_model_without_the_capability_is_a_capability_error(
    infinity_server: ServerInfo, method: str
) -> None:
    kind, call = METHODS[method]
    wrong = wrong_model_for(kind, infinity_server)
    with pytest.raises(ModelCapabilityError, match="does not support"):
        resolve(call(infinity_server.url, infinity_server.api_key, wrong))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_a_missing_or_wrong_key_is_an_authentication_error(
    infinity_server: ServerInfo, method: str, key: str | None
) -> None:
    if infinity_server.api_key is None:
        pytest.skip("the server runs without --api-key")
    kind, call = METHODS[method]
    with pytest.raises(AuthenticationError, match="api_key") as caught:
        resolve(call(infinity_server.url, key, model_for(kind, infinity_server)))
    assert infinity_server.api_key not in str(caught.value)
    assert caught.value.status_code == 401


@pytest.mark.parametrize("method", METHODS)
def test_an_unreachable_url_is_a_connection_error_naming_it(
    infinity_server: ServerInfo, method: str
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    kind, call = METHODS[method]
    with pytest.raises(InfinityConnectionError) as caught:
        resolve(call(url, infinity_server.api_key, model_for(kind, infinity_server)))
    assert url in str(caught.value)


def test_health_needs_no_key(infinity_server: ServerInfo) -> None:
    assert client(infinity_server.url, None).health() is True


# --- dimensions past the model's size ---------------------------------------------------------

DIMENSIONS: dict[str, Callable[[ServerInfo, int], Any]] = {
    "client.embed": lambda s, d: client(s.url, s.api_key).embed(
        ["a"], model=s.embed_model, dimensions=d
    ),
    "client.aembed": lambda s, d: client(s.url, s.api_key).aembed(
        ["a"], model=s.embed_model, dimensions=d
    ),
    "lc.InfinityEmbeddings": lambda s, d: _lc_dims(s, d).embed_documents(["a"]),
    "li.InfinityEmbedding": lambda s, d: _li_dims(s, d).get_text_embedding("a"),
}


def _lc_dims(server: ServerInfo, dimensions: int) -> Any:
    from infinity_rag.langchain import InfinityEmbeddings

    return InfinityEmbeddings(
        model=server.embed_model, base_url=server.url, api_key=server.api_key, dimensions=dimensions
    )


def _li_dims(server: ServerInfo, dimensions: int) -> Any:
    from infinity_rag.llama_index import InfinityEmbedding

    return InfinityEmbedding(
        model_name=server.embed_model,
        base_url=server.url,
        api_key=server.api_key,
        dimensions=dimensions,
    )


@pytest.mark.parametrize("method", DIMENSIONS)
def test_dimensions_past_the_model_size_is_an_invalid_request(
    infinity_server: ServerInfo, method: str
) -> None:
    with pytest.raises(InvalidRequestError, match=f"between 1 and {infinity_server.dim}"):
        resolve(DIMENSIONS[method](infinity_server, infinity_server.dim + 1))


@pytest.mark.parametrize("method", DIMENSIONS)
def test_dimensions_at_the_model_size_is_fine(infinity_server: ServerInfo, method: str) -> None:
    result = resolve(DIMENSIONS[method](infinity_server, infinity_server.dim))
    vector = result[0] if isinstance(result[0], list) else result
    assert len(vector) == infinity_server.dim


# --- top_n past the documents, and past 2048 items --------------------------------------------

TOP_N: dict[str, Callable[[ServerInfo, list[str]], Any]] = {
    "client.rerank": lambda s, d: client(s.url, s.api_key).rerank(
        "q", d, model=s.rerank_model, top_n=len(d) + 5
    ),
    "client.arerank": lambda s, d: client(s.url, s.api_key).arerank(
        "q", d, model=s.rerank_model, top_n=len(d) + 5
    ),
    "lc.compress_documents": lambda s, d: lc_rerank(
        s.url, s.api_key, s.rerank_model, top_n=len(d) + 5
    ).compress_documents(docs(d), "q"),
    "lc.rerank": lambda s, d: lc_rerank(s.url, s.api_key, s.rerank_model).rerank(
        d, "q", top_n=len(d) + 5
    ),
    "li.postprocess_nodes": lambda s, d: li_rerank(
        s.url, s.api_key, s.rerank_model, top_n=len(d) + 5
    ).postprocess_nodes(nodes(d), query_str="q"),
    "li.apostprocess_nodes": lambda s, d: li_rerank(
        s.url, s.api_key, s.rerank_model, top_n=len(d) + 5
    ).apostprocess_nodes(nodes(d), query_str="q"),
}


@pytest.mark.parametrize("method", TOP_N)
def test_top_n_past_the_documents_returns_them_all(
    infinity_server: ServerInfo, method: str
) -> None:
    documents = ["alpha", "beta", "gamma"]
    assert len(resolve(TOP_N[method](infinity_server, documents))) == 3


def test_more_than_2048_texts_reach_the_server_in_chunks_and_come_back_whole(
    infinity_server: ServerInfo,
) -> None:
    from infinity_rag.langchain import InfinityEmbeddings

    texts = [f"t{i}" for i in range(2049)]
    embeddings = InfinityEmbeddings(
        model=infinity_server.embed_model,
        base_url=infinity_server.url,
        api_key=infinity_server.api_key,
        batch_size=2048,
    )
    vectors = embeddings.embed_documents(texts)
    assert len(vectors) == 2049
    last = embeddings.embed_query(texts[-1])
    assert max(abs(a - b) for a, b in zip(vectors[-1], last, strict=True)) < 1e-5


def test_more_than_2048_documents_are_reranked_in_chunks_and_merged(
    infinity_server: ServerInfo,
) -> None:
    documents = [f"d{i}" for i in range(2049)]
    with InfinityClient(base_url=infinity_server.url, api_key=infinity_server.api_key) as c:
        merged = c.rerank("d7", documents, model=infinity_server.rerank_model, batch_size=2048)
        assert sorted(item.index for item in merged) == list(range(2049))
        last = c.rerank("d7", documents[-1:], model=infinity_server.rerank_model)
    by_index = {item.index: item.relevance_score for item in merged}
    assert by_index[2048] == pytest.approx(last[0].relevance_score, abs=1e-5)


# --- images on a text model, and files that are not images -----------------------------------

IMAGES: dict[str, Callable[[ServerInfo, list[Any]], Any]] = {
    "client.embed_images": lambda s, i: client(s.url, s.api_key).embed_images(
        i, model=s.embed_model
    ),
    "client.aembed_images": lambda s, i: client(s.url, s.api_key).aembed_images(
        i, model=s.embed_model
    ),
    "lc.embed_image": lambda s, i: lc_embeddings(s.url, s.api_key, s.embed_model).embed_image(i),
    "lc.aembed_image": lambda s, i: lc_embeddings(s.url, s.api_key, s.embed_model).aembed_image(i),
    "li.get_image_embedding_batch": lambda s, i: li_embedding(
        s.url, s.api_key, s.embed_model
    ).get_image_embedding_batch(i),
}


@pytest.mark.parametrize("method", IMAGES)
def test_an_image_for_a_text_model_is_a_capability_error(
    infinity_server: ServerInfo, method: str
) -> None:
    with pytest.raises(ModelCapabilityError, match="image"):
        resolve(IMAGES[method](infinity_server, [PNG]))


@pytest.mark.parametrize("method", IMAGES)
def test_a_file_that_is_not_an_image_never_reaches_the_server(
    infinity_server: ServerInfo, method: str, tmp_path: Any
) -> None:
    path = tmp_path / "photo.jpg"
    path.write_text("plain text, whatever the name says")
    with pytest.raises(ValueError, match=r"images\[1\] is not a recognised image"):
        resolve(IMAGES[method](infinity_server, [PNG, path]))
