"""Bad input to every public method (docs/bad_input.md): refused before any request, or the
documented behaviour. Through ``FakeInfinity`` (httpx.MockTransport): no socket is opened.

Each method is called through a small adapter so that one table of inputs covers the client
(sync and async) and the four framework classes.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infinity_rag import (
    AuthenticationError,
    InfinityClient,
    ModelCapabilityError,
    ModelNotFoundError,
)
from unit_tests.conftest import FAKE_URL, make_client
from unit_tests.fake_infinity import FakeInfinity

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a0d7a1a70000000049454e44ae426082"
)
TOO_LONG = "x" * 122_881
AT_LIMIT = "x" * 122_880


#: Extra arguments for every client these tests build (the key tests set ``api_key``).
CLIENT_KWARGS: dict[str, Any] = {}


def new_client(fake: FakeInfinity, **kwargs: Any) -> InfinityClient:
    return make_client(fake, **{**CLIENT_KWARGS, **kwargs})


def resolve(value: Any) -> Any:
    """Await a coroutine (the async twins) on a fresh loop, or return the value."""
    if inspect.iscoroutine(value):
        return asyncio.run(value)
    return value


def length(result: Any) -> int:
    return len(result)


# --- the framework classes, wired to the fake -------------------------------------------------


def lc_embeddings(fake: FakeInfinity, **kwargs: Any) -> Any:
    from infinity_rag.langchain import InfinityEmbeddings

    kwargs.setdefault("model", "embedder")
    return InfinityEmbeddings(client=new_client(fake), **kwargs)


def lc_rerank(fake: FakeInfinity, **kwargs: Any) -> Any:
    from infinity_rag.langchain import InfinityRerank

    kwargs.setdefault("model", "reranker")
    return InfinityRerank(client=new_client(fake), **kwargs)


def li_embedding(fake: FakeInfinity, **kwargs: Any) -> Any:
    from infinity_rag.llama_index import InfinityEmbedding

    kwargs.setdefault("model_name", "embedder")
    return InfinityEmbedding(client=new_client(fake), **kwargs)


def li_rerank(fake: FakeInfinity, **kwargs: Any) -> Any:
    from infinity_rag.llama_index import InfinityRerank

    kwargs.setdefault("model", "reranker")
    return InfinityRerank(client=new_client(fake), **kwargs)


def documents(items: Any) -> Any:
    from langchain_core.documents import Document

    if not isinstance(items, list):
        return items
    return [Document(page_content=i) if isinstance(i, str) else i for i in items]


def nodes(items: Any) -> Any:
    from llama_index.core.schema import NodeWithScore, TextNode

    if not isinstance(items, list):
        return items
    return [
        NodeWithScore(node=TextNode(text=i), score=0.5) if isinstance(i, str) else i for i in items
    ]


# --- methods that take a list of texts --------------------------------------------------------

Call = Callable[[FakeInfinity, Any], Any]

TEXT_LISTS: dict[str, Call] = {
    "client.embed": lambda f, x: new_client(f).embed(x, model="embedder"),
    "client.aembed": lambda f, x: new_client(f).aembed(x, model="embedder"),
    "client.classify": lambda f, x: new_client(f).classify(x, model="classifier"),
    "client.aclassify": lambda f, x: new_client(f).aclassify(x, model="classifier"),
    "client.rerank(documents)": lambda f, x: new_client(f).rerank("q", x, model="reranker"),
    "client.arerank(documents)": lambda f, x: new_client(f).arerank("q", x, model="reranker"),
    "lc.embed_documents": lambda f, x: lc_embeddings(f).embed_documents(x),
    "lc.aembed_documents": lambda f, x: lc_embeddings(f).aembed_documents(x),
    "lc.rerank(documents)": lambda f, x: lc_rerank(f, top_n=None).rerank(x, "q"),
    "lc.arerank(documents)": lambda f, x: lc_rerank(f, top_n=None).arerank(x, "q"),
    "li.get_text_embedding_batch": lambda f, x: li_embedding(f).get_text_embedding_batch(x),
    "li.aget_text_embedding_batch": lambda f, x: li_embedding(f).aget_text_embedding_batch(x),
}

#: Methods taking a list of Document / NodeWithScore objects: the same rows, wrapped.
OBJECT_LISTS: dict[str, Call] = {
    "lc.compress_documents": lambda f, x: lc_rerank(f, top_n=None).compress_documents(
        documents(x), "q"
    ),
    "lc.acompress_documents": lambda f, x: lc_rerank(f, top_n=None).acompress_documents(
        documents(x), "q"
    ),
    "li.postprocess_nodes": lambda f, x: li_rerank(f, top_n=None).postprocess_nodes(
        nodes(x), query_str="q"
    ),
    "li.apostprocess_nodes": lambda f, x: li_rerank(f, top_n=None).apostprocess_nodes(
        nodes(x), query_str="q"
    ),
}

ALL_LISTS = {**TEXT_LISTS, **OBJECT_LISTS}


@pytest.mark.parametrize("method", ALL_LISTS)
def test_an_empty_list_gives_an_empty_result_without_a_request(
    fake: FakeInfinity, method: str
) -> None:
    assert length(resolve(ALL_LISTS[method](fake, []))) == 0
    assert fake.requests == []


@pytest.mark.parametrize("method", ALL_LISTS)
def test_an_empty_string_is_sent_and_gets_a_result(fake: FakeInfinity, method: str) -> None:
    assert length(resolve(ALL_LISTS[method](fake, ["", "text"]))) == 2
    assert len(fake.requests) == 1


@pytest.mark.parametrize("method", ALL_LISTS)
def test_none_instead_of_the_list_is_a_type_error(fake: FakeInfinity, method: str) -> None:
    with pytest.raises(TypeError):
        resolve(ALL_LISTS[method](fake, None))
    assert fake.requests == []


@pytest.mark.parametrize("method", ALL_LISTS)
def test_one_string_instead_of_a_list_is_a_type_error(fake: FakeInfinity, method: str) -> None:
    with pytest.raises(TypeError):
        resolve(ALL_LISTS[method](fake, "a single string"))
    assert fake.requests == []


@pytest.mark.parametrize("method", TEXT_LISTS)
@pytest.mark.parametrize("item", [None, 42, b"bytes", 1.5], ids=repr)
def test_a_non_string_item_is_a_type_error_naming_its_index(
    fake: FakeInfinity, method: str, item: object
) -> None:
    with pytest.raises(TypeError, match=r"\[1\]"):
        resolve(TEXT_LISTS[method](fake, ["fine", item]))
    assert fake.requests == []


@pytest.mark.parametrize("method", OBJECT_LISTS)
@pytest.mark.parametrize("item", [None, 42, "a plain string"], ids=repr)
def test_a_wrong_object_in_a_document_list_is_a_type_error(
    fake: FakeInfinity, method: str, item: object
) -> None:
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode

    fine = (
        Document(page_content="fine")
        if method.startswith("lc.")
        else NodeWithScore(node=TextNode(text="fine"))
    )
    call = {
        "lc.compress_documents": lambda: lc_rerank(fake).compress_documents([fine, item], "q"),
        "lc.acompress_documents": lambda: lc_rerank(fake).acompress_documents([fine, item], "q"),
        "li.postprocess_nodes": lambda: li_rerank(fake).postprocess_nodes(
            [fine, item], query_str="q"
        ),
        "li.apostprocess_nodes": lambda: li_rerank(fake).apostprocess_nodes(
            [fine, item], query_str="q"
        ),
    }[method]
    with pytest.raises(TypeError, match=r"\[1\]"):
        resolve(call())
    assert fake.requests == []


@pytest.mark.parametrize("method", ALL_LISTS)
def test_a_string_over_the_limit_is_a_value_error_naming_its_index(
    fake: FakeInfinity, method: str
) -> None:
    with pytest.raises(ValueError, match=r"\[1\].*122,881.*122,880"):
        resolve(ALL_LISTS[method](fake, ["fine", TOO_LONG]))
    assert fake.requests == []


@pytest.mark.parametrize("method", ["client.embed", "client.aembed", "lc.embed_documents"])
def test_a_string_at_the_limit_is_sent(fake: FakeInfinity, method: str) -> None:
    assert length(resolve(TEXT_LISTS[method](fake, [AT_LIMIT]))) == 1


@pytest.mark.parametrize("method", ALL_LISTS)
def test_more_than_2048_items_are_split_and_come_back_complete(
    fake: FakeInfinity, method: str
) -> None:
    items = [f"item {i}" for i in range(2049)]
    result = resolve(ALL_LISTS[method](fake, items))
    assert length(result) == 2049
    assert len(fake.requests) >= 2
    assert all(len(b.get("input", b.get("documents", []))) <= 2048 for b in fake.bodies)


# --- methods that take one text (a query) -----------------------------------------------------

SINGLE_TEXTS: dict[str, Call] = {
    "client.rerank(query)": lambda f, q: new_client(f).rerank(q, ["d"], model="reranker"),
    "client.arerank(query)": lambda f, q: new_client(f).arerank(q, ["d"], model="reranker"),
    "lc.embed_query": lambda f, q: lc_embeddings(f).embed_query(q),
    "lc.aembed_query": lambda f, q: lc_embeddings(f).aembed_query(q),
    "lc.rerank(query)": lambda f, q: lc_rerank(f).rerank(["d"], q),
    "lc.arerank(query)": lambda f, q: lc_rerank(f).arerank(["d"], q),
    "lc.compress_documents(query)": lambda f, q: lc_rerank(f).compress_documents(
        documents(["d"]), q
    ),
    "lc.acompress_documents(query)": lambda f, q: lc_rerank(f).acompress_documents(
        documents(["d"]), q
    ),
    "li.get_query_embedding": lambda f, q: li_embedding(f).get_query_embedding(q),
    "li.aget_query_embedding": lambda f, q: li_embedding(f).aget_query_embedding(q),
    "li.get_text_embedding": lambda f, q: li_embedding(f).get_text_embedding(q),
    "li.aget_text_embedding": lambda f, q: li_embedding(f).aget_text_embedding(q),
    "li.postprocess_nodes(query)": lambda f, q: li_rerank(f).postprocess_nodes(
        nodes(["d"]), query_str=q
    ),
    "li.apostprocess_nodes(query)": lambda f, q: li_rerank(f).apostprocess_nodes(
        nodes(["d"]), query_str=q
    ),
}

#: LlamaIndex turns ``query_str=None`` into "no query" (a ValueError that says so).
NONE_QUERY_ERRORS = {
    "li.postprocess_nodes(query)": ValueError,
    "li.apostprocess_nodes(query)": ValueError,
}


@pytest.mark.parametrize("method", SINGLE_TEXTS)
def test_an_empty_query_is_sent(fake: FakeInfinity, method: str) -> None:
    assert resolve(SINGLE_TEXTS[method](fake, "")) is not None
    assert len(fake.requests) == 1


@pytest.mark.parametrize("method", SINGLE_TEXTS)
@pytest.mark.parametrize("query", [None, 42, b"bytes"], ids=repr)
def test_a_query_that_is_not_a_string_is_refused(
    fake: FakeInfinity, method: str, query: object
) -> None:
    error = NONE_QUERY_ERRORS.get(method, TypeError) if query is None else TypeError
    with pytest.raises(error):
        resolve(SINGLE_TEXTS[method](fake, query))
    assert fake.requests == []


@pytest.mark.parametrize("method", SINGLE_TEXTS)
def test_a_query_over_the_limit_is_a_value_error(fake: FakeInfinity, method: str) -> None:
    with pytest.raises(ValueError, match="122,880"):
        resolve(SINGLE_TEXTS[method](fake, TOO_LONG))
    assert fake.requests == []


# --- images and audio -------------------------------------------------------------------------

MEDIA: dict[str, Call] = {
    "client.embed_images": lambda f, x: new_client(f).embed_images(x, model="clip"),
    "client.aembed_images": lambda f, x: new_client(f).aembed_images(x, model="clip"),
    "lc.embed_image": lambda f, x: lc_embeddings(f, model="clip").embed_image(x),
    "lc.aembed_image": lambda f, x: lc_embeddings(f, model="clip").aembed_image(x),
    "li.get_image_embedding_batch": lambda f, x: li_embedding(
        f, model_name="clip"
    ).get_image_embedding_batch(x),
    "li.aget_image_embedding_batch": lambda f, x: li_embedding(
        f, model_name="clip"
    ).aget_image_embedding_batch(x),
}


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.png"  # the name says PNG; the bytes do not
    path.write_text("this is not an image")
    return path


@pytest.mark.parametrize("method", MEDIA)
def test_a_file_that_is_not_an_image_is_refused_before_any_request(
    fake: FakeInfinity, method: str, text_file: Path
) -> None:
    for item in (text_file, str(text_file), text_file.read_bytes()):
        with pytest.raises(ValueError, match=r"images\[1\] is not a recognised image"):
            resolve(MEDIA[method](fake, [PNG, item]))
    assert fake.requests == []


@pytest.mark.parametrize("method", MEDIA)
def test_a_missing_image_file_is_refused(fake: FakeInfinity, method: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"images\[0\]"):
        resolve(MEDIA[method](fake, [str(tmp_path / "missing.png")]))
    assert fake.requests == []


@pytest.mark.parametrize("method", MEDIA)
@pytest.mark.parametrize("item", [None, 42], ids=repr)
def test_an_image_of_the_wrong_type_is_a_type_error(
    fake: FakeInfinity, method: str, item: object
) -> None:
    with pytest.raises(TypeError):
        resolve(MEDIA[method](fake, [item]))
    assert fake.requests == []


@pytest.mark.parametrize("method", MEDIA)
def test_an_empty_image_list_sends_nothing(fake: FakeInfinity, method: str) -> None:
    assert length(resolve(MEDIA[method](fake, []))) == 0
    assert fake.requests == []


@pytest.mark.parametrize("method", ["client.embed_audio", "client.aembed_audio"])
def test_a_file_that_is_not_audio_is_refused(fake: FakeInfinity, method: str) -> None:
    client = new_client(fake)
    call = client.embed_audio if method == "client.embed_audio" else client.aembed_audio
    with pytest.raises(ValueError, match=r"audios\[0\] is not a recognised audio"):
        resolve(call([PNG], model="clap"))
    assert fake.requests == []


# --- top_n, dimensions, batch sizes -----------------------------------------------------------

RERANK_TOP_N: dict[str, Call] = {
    "client.rerank": lambda f, n: new_client(f).rerank("q", ["a", "b"], top_n=n),
    "client.arerank": lambda f, n: new_client(f).arerank("q", ["a", "b"], top_n=n),
    "lc.rerank(top_n=)": lambda f, n: lc_rerank(f).rerank(["a", "b"], "q", top_n=n),
    "lc.arerank(top_n=)": lambda f, n: lc_rerank(f).arerank(["a", "b"], "q", top_n=n),
    "lc.InfinityRerank(top_n=)": lambda f, n: lc_rerank(f, top_n=n).compress_documents(
        documents(["a", "b"]), "q"
    ),
    "li.InfinityRerank(top_n=)": lambda f, n: li_rerank(f, top_n=n).postprocess_nodes(
        nodes(["a", "b"]), query_str="q"
    ),
}


@pytest.mark.parametrize("method", RERANK_TOP_N)
# -2, not -1: LangChain's ``rerank(top_n=-1)`` means "the instance's top_n" (as CohereRerank).
@pytest.mark.parametrize("top_n", [0, -2])
def test_top_n_below_one_is_a_value_error(fake: FakeInfinity, method: str, top_n: int) -> None:
    with pytest.raises(ValueError, match="top_n"):
        resolve(RERANK_TOP_N[method](fake, top_n))
    assert fake.requests == []


@pytest.mark.parametrize("method", RERANK_TOP_N)
def test_top_n_larger_than_the_documents_returns_them_all(fake: FakeInfinity, method: str) -> None:
    assert length(resolve(RERANK_TOP_N[method](fake, 5))) == 2


DIMENSIONS: dict[str, Call] = {
    "client.embed": lambda f, d: new_client(f).embed(["a"], dimensions=d),
    "client.aembed": lambda f, d: new_client(f).aembed(["a"], dimensions=d),
    "lc.InfinityEmbeddings(dimensions=)": lambda f, d: lc_embeddings(f, dimensions=d).embed_query(
        "a"
    ),
    "li.InfinityEmbedding(dimensions=)": lambda f, d: li_embedding(
        f, dimensions=d
    ).get_query_embedding("a"),
}


@pytest.mark.parametrize("method", DIMENSIONS)
@pytest.mark.parametrize("dimensions", [0, -8])
def test_dimensions_below_one_is_a_value_error(
    fake: FakeInfinity, method: str, dimensions: int
) -> None:
    with pytest.raises(ValueError, match="dimensions"):
        resolve(DIMENSIONS[method](fake, dimensions))
    assert fake.requests == []


@pytest.mark.parametrize("value", [True, 2.0, "3"], ids=repr)
def test_client_integer_arguments_refuse_other_types(fake: FakeInfinity, value: object) -> None:
    client = new_client(fake)
    for call in (
        lambda: client.embed(["a"], dimensions=value),  # type: ignore[arg-type]
        lambda: client.rerank("q", ["a"], top_n=value),  # type: ignore[arg-type]
        lambda: client.embed(["a"], batch_size=value),  # type: ignore[arg-type]
        lambda: client.embed(["a"], max_concurrency=value),  # type: ignore[arg-type]
    ):
        with pytest.raises(TypeError):
            call()
    assert fake.requests == []


BATCH_SIZES: dict[str, Callable[[FakeInfinity, int], Any]] = {
    "InfinityClient(batch_size=)": lambda f, n: new_client(f, batch_size=n),
    "InfinityClient(rerank_batch_size=)": lambda f, n: new_client(f, rerank_batch_size=n),
    "client.embed(batch_size=)": lambda f, n: new_client(f).embed(["a"], batch_size=n),
    "client.rerank(batch_size=)": lambda f, n: new_client(f).rerank("q", ["a"], batch_size=n),
    "lc.InfinityEmbeddings(batch_size=)": lambda f, n: lc_embeddings(f, batch_size=n),
    "lc.InfinityRerank(batch_size=)": lambda f, n: lc_rerank(f, batch_size=n),
    "li.InfinityEmbedding(embed_batch_size=)": lambda f, n: li_embedding(f, embed_batch_size=n),
    "li.InfinityRerank(batch_size=)": lambda f, n: li_rerank(f, batch_size=n),
}


@pytest.mark.parametrize("where", BATCH_SIZES)
@pytest.mark.parametrize("size", [0, 2049])
def test_batch_sizes_outside_1_to_2048_are_refused(
    fake: FakeInfinity, where: str, size: int
) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        resolve(BATCH_SIZES[where](fake, size))
    assert fake.requests == []


@pytest.mark.parametrize("method", ["client.embed", "client.aembed"])
def test_an_unknown_encoding_format_is_a_value_error(fake: FakeInfinity, method: str) -> None:
    client = new_client(fake)
    call = client.embed if method == "client.embed" else client.aembed
    with pytest.raises(ValueError, match="encoding_format"):
        resolve(call(["a"], encoding_format="int8"))  # type: ignore[arg-type]
    assert fake.requests == []


# --- the model, the key and the URL -----------------------------------------------------------

#: method -> (call with a model name, a served model that can do it, one that cannot)
MODEL_CALLS: dict[str, tuple[Callable[[FakeInfinity, str], Any], str, str]] = {
    "client.embed": (lambda f, m: new_client(f).embed(["a"], model=m), "embedder", "reranker"),
    "client.aembed": (lambda f, m: new_client(f).aembed(["a"], model=m), "embedder", "reranker"),
    "client.rerank": (
        lambda f, m: new_client(f).rerank("q", ["a"], model=m),
        "reranker",
        "embedder",
    ),
    "client.arerank": (
        lambda f, m: new_client(f).arerank("q", ["a"], model=m),
        "reranker",
        "embedder",
    ),
    "client.classify": (
        lambda f, m: new_client(f).classify(["a"], model=m),
        "classifier",
        "embedder",
    ),
    "client.aclassify": (
        lambda f, m: new_client(f).aclassify(["a"], model=m),
        "classifier",
        "embedder",
    ),
    "client.embed_images": (
        lambda f, m: new_client(f).embed_images([PNG], model=m),
        "clip",
        "reranker",
    ),
    "client.models": (lambda f, m: new_client(f).models(), "", ""),
    "lc.embed_documents": (
        lambda f, m: lc_embeddings(f, model=m).embed_documents(["a"]),
        "embedder",
        "reranker",
    ),
    "lc.aembed_query": (
        lambda f, m: lc_embeddings(f, model=m).aembed_query("a"),
        "embedder",
        "reranker",
    ),
    "lc.compress_documents": (
        lambda f, m: lc_rerank(f, model=m).compress_documents(documents(["a"]), "q"),
        "reranker",
        "embedder",
    ),
    "lc.arerank": (
        lambda f, m: lc_rerank(f, model=m).arerank(["a"], "q"),
        "reranker",
        "embedder",
    ),
    "li.get_text_embedding_batch": (
        lambda f, m: li_embedding(f, model_name=m).get_text_embedding_batch(["a"]),
        "embedder",
        "reranker",
    ),
    "li.aget_query_embedding": (
        lambda f, m: li_embedding(f, model_name=m).aget_query_embedding("a"),
        "embedder",
        "reranker",
    ),
    "li.postprocess_nodes": (
        lambda f, m: li_rerank(f, model=m).postprocess_nodes(nodes(["a"]), query_str="q"),
        "reranker",
        "embedder",
    ),
    "li.apostprocess_nodes": (
        lambda f, m: li_rerank(f, model=m).apostprocess_nodes(nodes(["a"]), query_str="q"),
        "reranker",
        "embedder",
    ),
}
MODEL_METHODS = [name for name, (_, right, _) in MODEL_CALLS.items() if right]


@pytest.mark.parametrize("method", MODEL_METHODS)
def test_an_unknown_model_is_model_not_found_listing_the_served_ones(
    fake: FakeInfinity, method: str
) -> None:
    call, _, _ = MODEL_CALLS[method]
    with pytest.raises(ModelNotFoundError, match="reranker"):
        resolve(call(fake, "no-such-model"))
    assert len(fake.requests) == 1  # never retried


@pytest.mark.parametrize("method", MODEL_METHODS)
def test_a_model_without_the_capability_is_a_capability_error(
    fake: FakeInfinity, method: str
) -> None:
    call, right, wrong = MODEL_CALLS[method]
    with pytest.raises(ModelCapabilityError, match="does not support"):
        resolve(call(fake, wrong))
    routes = [request.url.path for request in fake.requests]
    if right == "reranker":
        # Never retried; an embedder refusing /rerank might be a ColBERT model (reranked by
        # MaxSim): one embedding of the query tells, then the refusal is raised.
        assert routes == ["/rerank", "/embeddings"]
        assert fake.bodies[1]["input"] == ["q"]
    else:
        assert len(routes) == 1


@pytest.mark.parametrize("method", MODEL_CALLS)
@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_a_missing_or_wrong_key_is_an_authentication_error(
    method: str, key: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeInfinity(api_key="the-right-key")
    monkeypatch.setitem(CLIENT_KWARGS, "api_key", key)
    call, right, _ = MODEL_CALLS[method]
    with pytest.raises(AuthenticationError, match="api_key") as caught:
        resolve(call(fake, right))
    assert "the-right-key" not in str(caught.value)
    if key:
        assert key not in str(caught.value)
    assert len(fake.requests) == 1  # never retried


@pytest.mark.parametrize(
    "url", ["localhost:7997", "ftp://host:7997", "http://", "", "7997"], ids=repr
)
def test_a_url_that_is_not_http_is_refused_at_construction(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFINITY_API_BASE", "ftp://also-wrong")  # "" falls back to the env
    from infinity_rag.langchain import InfinityEmbeddings
    from infinity_rag.llama_index import InfinityEmbedding

    for build in (
        lambda: InfinityClient(base_url=url),
        lambda: InfinityEmbeddings(model="m", base_url=url),
        lambda: InfinityEmbedding(model_name="m", base_url=url),
    ):
        with pytest.raises(ValueError, match="http"):
            build()


def test_the_fake_url_is_what_the_clients_use() -> None:
    assert FAKE_URL.startswith("http://")
