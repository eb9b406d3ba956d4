"""One InfinityClient shared by the LlamaIndex and the LangChain classes in one process."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator

import pytest
from langchain_core.documents import Document as LCDocument
from llama_index.core.schema import NodeWithScore, TextNode

from infinity_rag import InfinityClient
from infinity_rag.langchain import InfinityEmbeddings as LCEmbeddings
from infinity_rag.langchain import InfinityRerank as LCRerank
from infinity_rag.llama_index import InfinityEmbedding, InfinityRerank
from integration_tests.conftest import ServerInfo

TEXTS = [
    "Honeybees communicate with a waggle dance.",
    "Espresso is brewed under pressure.",
    "The Eiffel Tower is in Paris.",
]
QUERY = "How do bees communicate?"


@pytest.fixture
def shared(infinity_server: ServerInfo) -> Iterator[InfinityClient]:
    with InfinityClient(base_url=infinity_server.url, api_key=infinity_server.api_key) as client:
        yield client


def close(a: list[float], b: list[float], tol: float = 1e-4) -> bool:
    return len(a) == len(b) and all(
        math.isclose(x, y, abs_tol=tol) for x, y in zip(a, b, strict=True)
    )


async def test_llama_index_and_langchain_share_one_client(
    infinity_server: ServerInfo, shared: InfinityClient
) -> None:
    li_embed = InfinityEmbedding(model_name=infinity_server.embed_model, client=shared)
    li_rerank = InfinityRerank(model=infinity_server.rerank_model, client=shared, top_n=None)
    lc_embed = LCEmbeddings(model=infinity_server.embed_model, client=shared)
    lc_rerank = LCRerank(model=infinity_server.rerank_model, client=shared, top_n=None)
    assert li_embed._client is shared
    assert li_rerank._client is shared
    assert lc_embed._client is shared
    assert lc_rerank._client is shared

    # Both frameworks get the same vectors from the one client, sync and async; the async
    # calls run at once on the client's one pool for this event loop.
    li_vectors = li_embed.get_text_embedding_batch(TEXTS)
    lc_vectors = lc_embed.embed_documents(TEXTS)
    li_async, lc_async = await asyncio.gather(
        li_embed.aget_text_embedding_batch(TEXTS), lc_embed.aembed_documents(TEXTS)
    )
    for vectors in (lc_vectors, li_async, lc_async):
        assert all(close(a, b) for a, b in zip(li_vectors, vectors, strict=True))
    assert close(li_embed.get_query_embedding(QUERY), lc_embed.embed_query(QUERY))

    # ... and the same rerank order and scores.
    nodes = [NodeWithScore(node=TextNode(text=text), score=0.0) for text in TEXTS]
    li_ranked = await li_rerank.apostprocess_nodes(nodes, query_str=QUERY)
    lc_ranked = await lc_rerank.acompress_documents(
        [LCDocument(page_content=text) for text in TEXTS], QUERY
    )
    assert [n.node.get_content() for n in li_ranked] == [d.page_content for d in lc_ranked]
    assert [n.score for n in li_ranked] == pytest.approx(
        [d.metadata["relevance_score"] for d in lc_ranked], abs=1e-5
    )
