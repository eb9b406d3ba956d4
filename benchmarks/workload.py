"""One measured configuration, in a fresh interpreter: ``python workload.py '<json config>'``.

Prints one JSON line: wall time, this process's CPU time (user + system, all threads) and
memory for the timed call only (imports, client construction and a small warm-up call are
done before the clock starts), plus a check of the result's shape.

It runs in whichever venv holds the client under test (the peers venv, or the infinity_client
venv), so it imports nothing of the client at module level.

Config keys: ``client`` (a name in ``EMBEDDERS`` or ``RERANKERS``), ``url`` (for ``ours`` and
``raw`` also a list of replica URLs), ``model``, ``n`` (texts or documents), ``fmt`` (``float`` /
``base64``), ``dim`` (expected vector size), ``batch`` and ``concurrency`` (for the hand-written
loops), ``as_numpy`` (``ours`` and ``raw``: one float32 array), ``top_n`` (rerank), ``words``
(words per passage), ``seed``, ``tracemalloc`` (measure Python allocations instead of RSS),
``profile`` (a path: write cProfile stats of the timed call there, all threads merged, in
CPU time).

Besides the process's own CPU, ``machine_cpu`` is the CPU seconds all cores spent busy during
the call (``/proc/stat``; the server's and any other process's included) and
``runqueue_wait`` the seconds the client's threads were ready to run but waited for a core
(``/proc/thread-self/schedstat``, summed over threads): what a busy machine denied it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import resource
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

_STARTED = time.perf_counter()  # before any client is imported: "setup" counts from here

_WORD_TEXT = (
    "the of and to in is for that on with as by this from at are be or an it was which have "
    "not has can more data model system server time each new used other use first also such "
    "when two into their its may one these than only between all most well information "
    "results method based number both where high using however different through large user "
    "query search document vector embedding index retrieval language text passage neural "
    "network training learning performance memory process value state function request "
    "response network storage cluster latency throughput python library framework pipeline "
    "answer question context knowledge source paper study research report table figure "
    "section city river history music energy water health market policy century world "
    "government team game player season film album species county village school university "
    "company product service price customer account order payment shipping return review"
)
WORDS = _WORD_TEXT.split()


def passages(n: int, words: int, seed: int) -> list[str]:
    """``n`` deterministic pseudo-English passages of about ``words`` words."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        count = max(3, words + rng.randint(-words // 4, words // 4))
        body = " ".join(rng.choice(WORDS) for _ in range(count))
        out.append(f"Passage {i}: {body.capitalize()}.")
    return out


# ------------------------------------------------------------------------------ patches
# ``"patch": "NAME"`` in the config monkeypatches infinity-rag in this process: how a proposed
# change to the client is measured before it is made.


def _patch_sorted_chunks() -> None:
    """Send texts ordered by length (and restore the order): requests whose texts are alike in
    length let the server pad less, as sentence-transformers and langchain-community do."""
    from infinity_rag import _vectors

    original = _vectors.plan_vectors

    def plan_embed(inputs: Any, **kwargs: Any) -> Any:
        if len(inputs) <= kwargs["batch_size"]:
            return original(inputs, **kwargs)
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
        plan = original([inputs[i] for i in order], **kwargs)

        def combine(parts: Any) -> Any:
            result = plan.combine(parts)
            vectors: list[Any] = [None] * len(order)
            for position, i in enumerate(order):
                vectors[i] = result.embeddings[position]
            return type(result)(vectors, result.model, result.usage)

        return type(plan)(plan.calls, combine)

    _vectors.plan_vectors = plan_embed


PATCHES: dict[str, Callable[[], None]] = {
    "sorted-chunks": _patch_sorted_chunks,
}


# ------------------------------------------------------------------------------ embedders
# Each factory takes the config and returns (call, is_async); call(texts) -> list of vectors.

Embedder = tuple[Callable[[list[str]], Any], bool]


def _ours(cfg: dict[str, Any], is_async: bool) -> Embedder:
    from infinity_rag import InfinityClient

    url = cfg["url"]
    if isinstance(url, list) and len(url) == 1:
        url = url[0]  # one replica: the plain one-URL client
    client = InfinityClient(base_url=url, timeout=600)
    options = {"model": cfg["model"], "encoding_format": cfg["fmt"]}
    if cfg.get("batch"):
        options["batch_size"] = cfg["batch"]
    if cfg.get("concurrency"):
        options["max_concurrency"] = cfg["concurrency"]
    if cfg.get("as_numpy"):
        options["as_numpy"] = True
    if is_async:

        async def acall(texts: list[str]) -> list[list[float]]:
            return (await client.aembed(texts, **options)).embeddings

        return acall, True
    return (lambda texts: client.embed(texts, **options).embeddings), False


def _decode_b64(data: str) -> list[float]:
    import base64
    from array import array

    vector = array("f")
    vector.frombytes(base64.b64decode(data))
    return vector.tolist()


def _raw_vectors(payload: dict[str, Any]) -> list[list[float]]:
    data = payload["data"]
    if data and isinstance(data[0]["embedding"], str):
        return [_decode_b64(item["embedding"]) for item in data]
    return [item["embedding"] for item in data]


def _chunks(texts: list[str], size: int) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def _raw_sync(cfg: dict[str, Any]) -> Embedder:
    """The floor: httpx.Client, a plain loop (threads when concurrency > 1).

    Several URLs (``url`` a list) take the chunks round-robin. ``as_numpy`` decodes base64
    with ``np.frombuffer`` into rows of one preallocated ``(n, dim)`` float32 array.
    """
    import httpx

    http = httpx.Client(timeout=600)
    urls = cfg["url"] if isinstance(cfg["url"], list) else [cfg["url"]]
    batch, limit = cfg.get("batch") or 256, cfg.get("concurrency") or 1

    def post(i: int, chunk: list[str]) -> Any:
        body = {"model": cfg["model"], "input": chunk, "encoding_format": cfg["fmt"]}
        response = http.post(urls[i % len(urls)] + "/embeddings", json=body)
        response.raise_for_status()
        return response.json()

    def each(one: Callable[[int, list[str]], Any], chunks: list[list[str]]) -> list[Any]:
        if limit <= 1:
            return [one(i, chunk) for i, chunk in enumerate(chunks)]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(limit) as pool:
            return list(pool.map(one, range(len(chunks)), chunks))

    if cfg.get("as_numpy"):
        import base64

        import numpy as np

        def call_numpy(texts: list[str]) -> Any:
            out = np.empty((len(texts), cfg["dim"]), dtype=np.float32)

            def one(i: int, chunk: list[str]) -> None:
                rows = out[i * batch : i * batch + len(chunk)]
                for item in post(i, chunk)["data"]:
                    raw = base64.b64decode(item["embedding"])
                    rows[item["index"]] = np.frombuffer(raw, dtype="<f4")

            each(one, _chunks(texts, batch))
            return out

        return call_numpy, False

    def call(texts: list[str]) -> list[list[float]]:
        parts = each(lambda i, chunk: _raw_vectors(post(i, chunk)), _chunks(texts, batch))
        return [vector for part in parts for vector in part]

    return call, False


def _raw_async(cfg: dict[str, Any]) -> Embedder:
    """The floor, asyncio: httpx.AsyncClient, gather under a semaphore."""
    import httpx

    url = cfg["url"] + "/embeddings"
    batch, limit = cfg.get("batch") or 256, cfg.get("concurrency") or 4
    state: dict[str, Any] = {}

    async def acall(texts: list[str]) -> list[list[float]]:
        http = state.get("http") or state.setdefault("http", httpx.AsyncClient(timeout=600))
        gate = asyncio.Semaphore(limit)

        async def one(chunk: list[str]) -> list[list[float]]:
            body = {"model": cfg["model"], "input": chunk, "encoding_format": cfg["fmt"]}
            async with gate:
                response = await http.post(url, json=body)
            response.raise_for_status()
            return _raw_vectors(response.json())

        parts = await asyncio.gather(*(one(chunk) for chunk in _chunks(texts, batch)))
        return [vector for part in parts for vector in part]

    return acall, True


def _lc_ours(cfg: dict[str, Any], is_async: bool) -> Embedder:
    from infinity_rag.langchain import InfinityEmbeddings

    embedder = InfinityEmbeddings(model=cfg["model"], base_url=cfg["url"], timeout=600)
    embedder.encoding_format = cfg["fmt"]
    return (embedder.aembed_documents if is_async else embedder.embed_documents), is_async


def _lc_community(cfg: dict[str, Any], is_async: bool) -> Embedder:
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from langchain_community.embeddings import InfinityEmbeddings

    if cfg["fmt"] != "float":
        raise Unsupported("sends no encoding_format: JSON floats only")
    embedder = InfinityEmbeddings(model=cfg["model"], infinity_api_url=cfg["url"])
    return (embedder.aembed_documents if is_async else embedder.embed_documents), is_async


def _lc_openai(cfg: dict[str, Any], is_async: bool) -> Embedder:
    from langchain_openai import OpenAIEmbeddings

    # The openai SDK asks for base64 unless told otherwise, and decodes it with numpy.
    kwargs = {"encoding_format": "float"} if cfg["fmt"] == "float" else {}
    embedder = OpenAIEmbeddings(
        model=cfg["model"],
        base_url=cfg["url"],
        api_key="unused",
        check_embedding_ctx_length=False,
        model_kwargs=kwargs,
        timeout=600,
    )
    return (embedder.aembed_documents if is_async else embedder.embed_documents), is_async


def _litellm_vectors(response: Any, fmt: str) -> list[list[float]]:
    vectors = [item["embedding"] for item in response.data]
    if fmt == "base64":  # LiteLLM hands Infinity's base64 strings through undecoded
        vectors = [_decode_b64(v) if isinstance(v, str) else v for v in vectors]
    return vectors


def _litellm(cfg: dict[str, Any], is_async: bool) -> Embedder:
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    batch, limit = cfg.get("batch") or 256, cfg.get("concurrency") or 4
    kwargs: dict[str, Any] = {
        "model": f"infinity/{cfg['model']}",
        "api_base": cfg["url"],
        "api_key": "unused",
        "timeout": 600,
    }
    if cfg["fmt"] == "base64":
        kwargs["encoding_format"] = "base64"
    # LiteLLM sends all inputs in one request (past 2048 the server refuses): the user loops.
    if is_async:

        async def acall(texts: list[str]) -> list[list[float]]:
            gate = asyncio.Semaphore(limit)

            async def one(chunk: list[str]) -> list[list[float]]:
                async with gate:
                    response = await litellm.aembedding(input=chunk, **kwargs)
                return _litellm_vectors(response, cfg["fmt"])

            parts = await asyncio.gather(*(one(c) for c in _chunks(texts, batch)))
            return [vector for part in parts for vector in part]

        return acall, True

    def call(texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for chunk in _chunks(texts, batch):
            out.extend(_litellm_vectors(litellm.embedding(input=chunk, **kwargs), cfg["fmt"]))
        return out

    return call, False


def _infclient(cfg: dict[str, Any], is_async: bool) -> Embedder:
    import httpx
    from infinity_client import Client
    from infinity_client.api.default import embeddings
    from infinity_client.models import OpenAIEmbeddingInputText

    if cfg["fmt"] != "float":
        raise Unsupported("its parser raises TypeError on base64 answers")
    client = Client(
        base_url=cfg["url"], timeout=httpx.Timeout(600), raise_on_unexpected_status=True
    )
    batch, limit = cfg.get("batch") or 256, cfg.get("concurrency") or 4

    def body(chunk: list[str]) -> Any:
        return OpenAIEmbeddingInputText(input_=chunk, model=cfg["model"])

    if is_async:

        async def acall(texts: list[str]) -> list[list[float]]:
            gate = asyncio.Semaphore(limit)

            async def one(chunk: list[str]) -> list[list[float]]:
                async with gate:
                    result = await embeddings.asyncio(client=client, body=body(chunk))
                return [item.embedding for item in result.data]

            parts = await asyncio.gather(*(one(c) for c in _chunks(texts, batch)))
            return [vector for part in parts for vector in part]

        return acall, True

    def call(texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for chunk in _chunks(texts, batch):
            out.extend(
                item.embedding for item in embeddings.sync(client=client, body=body(chunk)).data
            )
        return out

    return call, False


def _li_ours(cfg: dict[str, Any], is_async: bool) -> Embedder:
    from infinity_rag.llama_index import InfinityEmbedding

    embedder = InfinityEmbedding(
        model_name=cfg["model"], base_url=cfg["url"], encoding_format=cfg["fmt"], timeout=600
    )
    if is_async:
        return embedder.aget_text_embedding_batch, True
    return embedder.get_text_embedding_batch, False


def _li_openai_like(cfg: dict[str, Any], is_async: bool) -> Embedder:
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    # Through the openai SDK: base64 (decoded with numpy) unless told otherwise.
    kwargs = {"encoding_format": "float"} if cfg["fmt"] == "float" else {}
    embedder = OpenAILikeEmbedding(
        model_name=cfg["model"],
        api_base=cfg["url"],
        api_key="unused",
        timeout=600,
        additional_kwargs=kwargs,
    )
    if is_async:
        return embedder.aget_text_embedding_batch, True
    return embedder.get_text_embedding_batch, False


def _lc_store(inner: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any], bool], Embedder]:
    """LangChain's vector store path: ``InMemoryVectorStore.add_texts`` with an embedder."""

    def factory(cfg: dict[str, Any], is_async: bool) -> Embedder:
        from langchain_core.vectorstores import InMemoryVectorStore

        embedding = inner(cfg)

        def vectors(store: Any) -> list[list[float]]:
            return [store.store[i]["vector"] for i in ids_of(store)]

        def ids_of(store: Any) -> list[str]:
            return list(store.store)

        if is_async:

            async def acall(texts: list[str]) -> list[list[float]]:
                store = InMemoryVectorStore(embedding=embedding)
                await store.aadd_texts(texts)
                return vectors(store)

            return acall, True

        def call(texts: list[str]) -> list[list[float]]:
            store = InMemoryVectorStore(embedding=embedding)
            store.add_texts(texts)
            return vectors(store)

        return call, False

    return factory


def _li_index(inner: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any], bool], Embedder]:
    """LlamaIndex's vector store path: ``VectorStoreIndex(nodes, embed_model=...)``."""

    def factory(cfg: dict[str, Any], is_async: bool) -> Embedder:
        from llama_index.core import VectorStoreIndex
        from llama_index.core.schema import TextNode

        embed_model = inner(cfg)

        def call(texts: list[str]) -> list[list[float]]:
            nodes = [TextNode(text=text, id_=f"n{i}") for i, text in enumerate(texts)]
            index = VectorStoreIndex(nodes, embed_model=embed_model, use_async=is_async)
            store = index.vector_store
            return [store.get(f"n{i}") for i in range(len(texts))]

        # use_async=True runs the async embedding path inside the index's own event loop.
        return call, False

    return factory


def _lc_ours_model(cfg: dict[str, Any]) -> Any:
    from infinity_rag.langchain import InfinityEmbeddings

    return InfinityEmbeddings(
        model=cfg["model"], base_url=cfg["url"], timeout=600, encoding_format=cfg["fmt"]
    )


def _lc_community_model(cfg: dict[str, Any]) -> Any:
    return _lc_community(cfg, False)[0].__self__


def _lc_openai_model(cfg: dict[str, Any]) -> Any:
    return _lc_openai(cfg, False)[0].__self__


def _li_ours_model(cfg: dict[str, Any]) -> Any:
    return _li_ours(cfg, False)[0].__self__


def _li_openai_like_model(cfg: dict[str, Any]) -> Any:
    return _li_openai_like(cfg, False)[0].__self__


class Unsupported(Exception):
    """This client cannot run this configuration (reported, not an error)."""


def _noop(cfg: dict[str, Any]) -> Embedder:
    """No client at all: the baseline the instruction counts subtract."""
    return (lambda texts: [[0.0] * cfg.get("dim", 384) for _ in texts]), False


EMBEDDERS: dict[str, Callable[[dict[str, Any]], Embedder]] = {
    "noop": _noop,
    "ours": lambda cfg: _ours(cfg, False),
    "ours-async": lambda cfg: _ours(cfg, True),
    "raw": _raw_sync,
    "raw-async": _raw_async,
    "lc-ours": lambda cfg: _lc_ours(cfg, False),
    "lc-ours-async": lambda cfg: _lc_ours(cfg, True),
    "li-ours": lambda cfg: _li_ours(cfg, False),
    "li-ours-async": lambda cfg: _li_ours(cfg, True),
    "lc-community": lambda cfg: _lc_community(cfg, False),
    "lc-community-async": lambda cfg: _lc_community(cfg, True),
    "lc-openai": lambda cfg: _lc_openai(cfg, False),
    "lc-openai-async": lambda cfg: _lc_openai(cfg, True),
    "litellm": lambda cfg: _litellm(cfg, False),
    "litellm-async": lambda cfg: _litellm(cfg, True),
    "infclient": lambda cfg: _infclient(cfg, False),
    "infclient-async": lambda cfg: _infclient(cfg, True),
    "li-openai-like": lambda cfg: _li_openai_like(cfg, False),
    "li-openai-like-async": lambda cfg: _li_openai_like(cfg, True),
    "lc-store/ours": lambda cfg: _lc_store(_lc_ours_model)(cfg, False),
    "lc-store/ours-async": lambda cfg: _lc_store(_lc_ours_model)(cfg, True),
    "lc-store/lc-community": lambda cfg: _lc_store(_lc_community_model)(cfg, False),
    "lc-store/lc-community-async": lambda cfg: _lc_store(_lc_community_model)(cfg, True),
    "lc-store/lc-openai": lambda cfg: _lc_store(_lc_openai_model)(cfg, False),
    "lc-store/lc-openai-async": lambda cfg: _lc_store(_lc_openai_model)(cfg, True),
    "li-index/ours": lambda cfg: _li_index(_li_ours_model)(cfg, False),
    "li-index/ours-async": lambda cfg: _li_index(_li_ours_model)(cfg, True),
    "li-index/openai-like": lambda cfg: _li_index(_li_openai_like_model)(cfg, False),
    "li-index/openai-like-async": lambda cfg: _li_index(_li_openai_like_model)(cfg, True),
}


# ------------------------------------------------------------------------------ rerankers
# call(query, documents) -> list of (index, score), best first, at most top_n.

Reranker = tuple[Callable[[str, list[str]], Any], bool]


def _rr_ours(cfg: dict[str, Any], is_async: bool) -> Reranker:
    from infinity_rag import InfinityClient

    url = cfg["url"]
    if isinstance(url, list) and len(url) == 1:
        url = url[0]  # one replica: the plain one-URL client
    client = InfinityClient(base_url=url, timeout=600)
    options: dict[str, Any] = {"model": cfg["model"], "top_n": cfg["top_n"]}
    if cfg.get("concurrency"):
        options["max_concurrency"] = cfg["concurrency"]

    def pairs(result: Any) -> list[tuple[int, float]]:
        return [(item.index, item.relevance_score) for item in result.results]

    if is_async:

        async def acall(query: str, documents: list[str]) -> list[tuple[int, float]]:
            return pairs(await client.arerank(query, documents, **options))

        return acall, True
    return (lambda query, documents: pairs(client.rerank(query, documents, **options))), False


def _rr_raw(cfg: dict[str, Any]) -> Reranker:
    """The server's own time: raw httpx, the same chunks one after the other, merged."""
    import httpx

    http = httpx.Client(timeout=600)
    url = cfg["url"] + "/rerank"
    batch, top_n = cfg.get("batch") or 1024, cfg["top_n"]

    def call(query: str, documents: list[str]) -> list[tuple[int, float]]:
        merged = []
        for start in range(0, len(documents), batch):
            chunk = documents[start : start + batch]
            body = {"model": cfg["model"], "query": query, "documents": chunk}
            body["top_n"] = min(top_n, len(chunk))
            response = http.post(url, json=body)
            response.raise_for_status()
            merged += [
                (start + r["index"], r["relevance_score"]) for r in response.json()["results"]
            ]
        merged.sort(key=lambda pair: -pair[1])
        return merged[:top_n]

    return call, False


def _rr_raw_async(cfg: dict[str, Any]) -> Reranker:
    """The server's time when kept busy: raw httpx, the same chunks all in flight, merged."""
    import httpx

    url = cfg["url"] + "/rerank"
    batch, top_n = cfg.get("batch") or 1024, cfg["top_n"]
    limit = cfg.get("concurrency") or 4
    state: dict[str, Any] = {}

    async def acall(query: str, documents: list[str]) -> list[tuple[int, float]]:
        http = state.get("http") or state.setdefault("http", httpx.AsyncClient(timeout=600))
        gate = asyncio.Semaphore(limit)

        async def one(start: int) -> list[tuple[int, float]]:
            chunk = documents[start : start + batch]
            body = {"model": cfg["model"], "query": query, "documents": chunk}
            body["top_n"] = min(top_n, len(chunk))
            async with gate:
                response = await http.post(url, json=body)
            response.raise_for_status()
            return [(start + r["index"], r["relevance_score"]) for r in response.json()["results"]]

        parts = await asyncio.gather(*(one(s) for s in range(0, len(documents), batch)))
        merged = sorted((pair for part in parts for pair in part), key=lambda pair: -pair[1])
        return merged[:top_n]

    return acall, True


def _rr_lc_ours(cfg: dict[str, Any], is_async: bool) -> Reranker:
    from langchain_core.documents import Document

    from infinity_rag.langchain import InfinityRerank

    reranker = InfinityRerank(
        model=cfg["model"], base_url=cfg["url"], top_n=cfg["top_n"], timeout=600
    )

    def pairs(docs: Any, documents: list[str]) -> list[tuple[int, float]]:
        position = {text: i for i, text in enumerate(documents)}
        return [(position[d.page_content], d.metadata["relevance_score"]) for d in docs]

    if is_async:

        async def acall(query: str, documents: list[str]) -> list[tuple[int, float]]:
            docs = [Document(page_content=text) for text in documents]
            return pairs(await reranker.acompress_documents(docs, query), documents)

        return acall, True

    def call(query: str, documents: list[str]) -> list[tuple[int, float]]:
        docs = [Document(page_content=text) for text in documents]
        return pairs(reranker.compress_documents(docs, query), documents)

    return call, False


def _rr_li_ours(cfg: dict[str, Any], is_async: bool) -> Reranker:
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from infinity_rag.llama_index import InfinityRerank

    reranker = InfinityRerank(
        model=cfg["model"], base_url=cfg["url"], top_n=cfg["top_n"], timeout=600
    )

    def nodes(documents: list[str]) -> list[Any]:
        return [NodeWithScore(node=TextNode(text=t, id_=str(i))) for i, t in enumerate(documents)]

    def pairs(ranked: Any) -> list[tuple[int, float]]:
        return [(int(n.node.node_id), n.score) for n in ranked]

    if is_async:

        async def acall(query: str, documents: list[str]) -> list[tuple[int, float]]:
            ranked = await reranker.apostprocess_nodes(nodes(documents), QueryBundle(query))
            return pairs(ranked)

        return acall, True

    def call(query: str, documents: list[str]) -> list[tuple[int, float]]:
        return pairs(reranker.postprocess_nodes(nodes(documents), QueryBundle(query)))

    return call, False


def _rr_lc_community(cfg: dict[str, Any]) -> Reranker:
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import httpx
    from infinity_client import Client
    from langchain_community.document_compressors.infinity_rerank import InfinityRerank
    from langchain_core.documents import Document

    client = Client(base_url=cfg["url"], timeout=httpx.Timeout(600))
    reranker = InfinityRerank(client=client, model=cfg["model"], top_n=cfg["top_n"])

    def call(query: str, documents: list[str]) -> list[tuple[int, float]]:
        docs = [Document(page_content=text, metadata={"i": i}) for i, text in enumerate(documents)]
        ranked = reranker.compress_documents(docs, query)
        return [(d.metadata["i"], d.metadata["relevance_score"]) for d in ranked]

    return call, False


def _rr_litellm(cfg: dict[str, Any], is_async: bool) -> Reranker:
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    kwargs = {
        "model": f"infinity/{cfg['model']}",
        "api_base": cfg["url"],
        "api_key": "unused",
        "top_n": cfg["top_n"],
    }

    def pairs(response: Any) -> list[tuple[int, float]]:
        return [(r["index"], r["relevance_score"]) for r in response.results]

    if is_async:

        async def acall(query: str, documents: list[str]) -> list[tuple[int, float]]:
            return pairs(await litellm.arerank(query=query, documents=documents, **kwargs))

        return acall, True
    return (lambda q, docs: pairs(litellm.rerank(query=q, documents=docs, **kwargs))), False


def _rr_infclient(cfg: dict[str, Any]) -> Reranker:
    import httpx
    from infinity_client import Client
    from infinity_client.api.default import rerank
    from infinity_client.models import RerankInput

    client = Client(
        base_url=cfg["url"], timeout=httpx.Timeout(600), raise_on_unexpected_status=True
    )

    def call(query: str, documents: list[str]) -> list[tuple[int, float]]:
        body = RerankInput(query=query, documents=documents, model=cfg["model"], top_n=cfg["top_n"])
        result = rerank.sync(client=client, body=body)
        if not hasattr(result, "results"):  # a 422 comes back as an HTTPValidationError object
            raise RuntimeError(f"422 from the server: {str(result)[:200]}")
        return [(r.index, r.relevance_score) for r in result.results]

    return call, False


RERANKERS: dict[str, Callable[[dict[str, Any]], Reranker]] = {
    "ours": lambda cfg: _rr_ours(cfg, False),
    "ours-async": lambda cfg: _rr_ours(cfg, True),
    "raw": _rr_raw,
    "raw-async": _rr_raw_async,
    "lc-ours": lambda cfg: _rr_lc_ours(cfg, False),
    "lc-ours-async": lambda cfg: _rr_lc_ours(cfg, True),
    "li-ours": lambda cfg: _rr_li_ours(cfg, False),
    "li-ours-async": lambda cfg: _rr_li_ours(cfg, True),
    "lc-community": _rr_lc_community,
    "litellm": lambda cfg: _rr_litellm(cfg, False),
    "litellm-async": lambda cfg: _rr_litellm(cfg, True),
    "infclient": _rr_infclient,
}


# ------------------------------------------------------------------------------ measuring


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm() -> int:
    """Peak RSS of this process image (VmHWM). Not ru_maxrss: that one survives exec and so
    starts at the parent's (the driver's) size."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_hwm() -> None:
    """Start the peak afresh at the current RSS (Linux >= 4.0), so it covers the call only."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def _machine_cpu() -> float | None:
    """CPU seconds every core has been busy since boot (``/proc/stat``), None off Linux."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def vectors_size(vectors: list[list[float]]) -> int:
    """Bytes the result holds: the outer list, each vector's list and its float objects."""
    size = sys.getsizeof(vectors)
    for vector in vectors:
        size += sys.getsizeof(vector) + sys.getsizeof(0.0) * len(vector)
    return size


def _run_embed(cfg: dict[str, Any]) -> dict[str, Any]:
    call, is_async = EMBEDDERS[cfg["client"]](cfg)
    setup = time.perf_counter() - _STARTED  # imports and construction
    texts = passages(cfg["n"], cfg.get("words", 30), cfg.get("seed", 0))
    warm = passages(8, cfg.get("words", 30), 99)
    if is_async:

        async def amain() -> tuple[Any, dict[str, Any]]:
            await call(warm)
            state = _start(cfg)  # timed inside the running loop: no loop set-up counted
            result = await call(texts)
            return result, _finish(cfg, state)

        result, stats = asyncio.run(amain())
    else:
        call(warm)
        state = _start(cfg)
        result = call(texts)
        stats = _finish(cfg, state)
    dims = {len(v) for v in result[:50]} | {len(v) for v in result[-50:]}
    stats.update(
        n=len(result),
        dim=min(dims) if dims else 0,
        ok=len(result) == cfg["n"] and (len(result) == 0 or dims == {cfg.get("dim", min(dims))}),
        result_bytes=vectors_size(result) if cfg.get("result_size") else None,
        setup=setup,
    )
    return stats


def _thread_sched() -> tuple[int, int]:
    """This thread's nanoseconds on a CPU and runnable but waiting for one (Linux), or zeros."""
    try:
        with open("/proc/thread-self/schedstat") as fh:
            on_cpu, waiting = fh.read().split()[:2]
        return int(on_cpu), int(waiting)
    except (OSError, ValueError):
        return 0, 0


def _count_thread_waits() -> Callable[[], float]:
    """Start adding up the seconds this thread, and the threads started from now on, wait
    runnable for a core (the machine's other work taking it); the returned function stops
    and gives the total (threads still running then are not counted)."""
    import threading

    original = threading.Thread.run
    totals = [0]
    lock = threading.Lock()

    def run(self: threading.Thread) -> None:
        before = _thread_sched()[1]
        try:
            original(self)
        finally:
            waited = _thread_sched()[1] - before
            with lock:
                totals[0] += waited

    threading.Thread.run = run  # type: ignore[method-assign]
    main_before = _thread_sched()[1]

    def stop() -> float:
        threading.Thread.run = original  # type: ignore[method-assign]
        return (totals[0] + _thread_sched()[1] - main_before) / 1e9

    return stop


def _profile_all_threads() -> list[Any]:
    """cProfile this thread and every thread started from now on (a client's worker threads):
    each new thread's first profiling event starts a profiler of its own in that thread.

    The clock is each thread's CPU time: waiting (for a socket, a lock, the GIL) costs
    nothing, so the merged profile says where the process's CPU went."""
    import cProfile
    import threading

    profilers = [cProfile.Profile(time.thread_time)]

    def start_in_thread(*_: Any) -> None:
        profiler = cProfile.Profile(time.thread_time)
        profilers.append(profiler)
        profiler.enable()  # replaces this hook in this thread

    threading.setprofile(start_in_thread)
    profilers[0].enable()
    return profilers


def _start(cfg: dict[str, Any]) -> dict[str, Any]:
    gc.collect()
    state: dict[str, Any] = {"trace": bool(cfg.get("tracemalloc"))}
    if state["trace"]:
        import tracemalloc

        tracemalloc.start()
    if cfg.get("profile"):
        state["profilers"] = _profile_all_threads()
    _reset_hwm()
    state["rss0"] = _rss()
    state["user0"], state["sys0"] = _cpu()
    state["machine0"] = _machine_cpu()
    state["waits"] = _count_thread_waits()
    state["t0"] = time.perf_counter()
    return state


def _finish(cfg: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    wall = time.perf_counter() - state["t0"]
    user1, sys1 = _cpu()
    machine1 = _machine_cpu()
    waited = state["waits"]()
    if state.get("profilers") is not None:
        import pstats
        import threading

        threading.setprofile(None)  # type: ignore[arg-type]  # (typeshed wants a function)
        state["profilers"][0].disable()
        pstats.Stats(*state["profilers"]).dump_stats(cfg["profile"])
    stats = {
        "wall": wall,
        "cpu_user": user1 - state["user0"],
        "cpu_sys": sys1 - state["sys0"],
        "cpu": (user1 - state["user0"]) + (sys1 - state["sys0"]),
        "rss_before": state["rss0"],
        "rss_after": _rss(),
        "peak_rss": _hwm(),
        "machine_cpu": None if machine1 is None else machine1 - state["machine0"],
        "runqueue_wait": waited,
    }
    stats["peak_delta"] = max(stats["peak_rss"], stats["rss_after"]) - state["rss0"]
    if state["trace"]:
        import tracemalloc

        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        stats["traced_current"], stats["traced_peak"] = current, peak
    return stats


def _run_rerank(cfg: dict[str, Any]) -> dict[str, Any]:
    call, is_async = RERANKERS[cfg["client"]](cfg)
    setup = time.perf_counter() - _STARTED
    words = cfg.get("words", 30)
    documents = passages(cfg["n"], words, cfg.get("seed", 0))
    query = "Which passage is about search and retrieval of documents?"
    warm = passages(4, words, 99)

    async def amain() -> tuple[Any, dict[str, Any]]:
        await call(query, warm)
        state = _start(cfg)
        ranked = await call(query, documents)
        return ranked, _finish(cfg, state)

    if is_async:
        ranked, stats = asyncio.run(amain())
    else:
        call(query, warm)
        state = _start(cfg)
        ranked = call(query, documents)
        stats = _finish(cfg, state)
    indexes = [index for index, _ in ranked]
    scores = [score for _, score in ranked]
    stats.update(
        n=len(ranked),
        ok=len(ranked) == min(cfg["top_n"], cfg["n"])
        and len(set(indexes)) == len(indexes)
        and all(0 <= i < cfg["n"] for i in indexes)
        and scores == sorted(scores, reverse=True),
        top=ranked[:3],
        setup=setup,
    )
    return stats


def main() -> int:
    cfg = json.loads(sys.argv[1])
    out: dict[str, Any] = {"config": cfg}
    try:
        for name in filter(None, str(cfg.get("patch", "")).split(",")):
            PATCHES[name]()
        run = _run_rerank if cfg.get("scenario") == "rerank" else _run_embed
        out.update(run(cfg))
        out["status"] = "ok" if out.get("ok") else "wrong result"
    except Unsupported as exc:
        out.update(status="unsupported", error=str(exc))
    except Exception as exc:
        out.update(status="error", error=f"{type(exc).__name__}: {str(exc)[:300]}")
        traceback.print_exc(file=sys.stderr)
    print("RESULT " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
