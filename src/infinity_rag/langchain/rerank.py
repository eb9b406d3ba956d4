"""``InfinityRerank``: a LangChain document compressor backed by an Infinity reranker."""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import Field

from infinity_rag._flows import Call, Flow, adrive, call, drive
from infinity_rag._inputs import MAX_ITEMS_PER_REQUEST
from infinity_rag._integration import rerank_options
from infinity_rag.langchain._base import InfinityBase
from infinity_rag.types import RerankResult

__all__ = ["InfinityRerank"]


class InfinityRerank(InfinityBase, BaseDocumentCompressor):
    """Infinity reranker integration: a document compressor for any served reranker, a
    cross-encoder or a late-interaction (ColBERT) model.

    Setup:
        Install ``infinity-rag`` with the LangChain extra, serve a reranker and point to it
        (and its ``--api-key``, if it has one, in ``INFINITY_API_KEY``).

        ```bash
        pip install -U "infinity-rag[langchain]"
        infinity_emb v2 --model-id mixedbread-ai/mxbai-rerank-xsmall-v1 --port 7997 &
        export INFINITY_API_BASE="http://localhost:7997"
        ```

    Key init args — rerank params:
        model: str
            Name of the served reranker (``--served-model-name``, else the model id).
        top_n: int | None
            How many documents to keep, best first (default 3; ``None`` keeps all).
        score_threshold: float | None
            ``compress_documents`` drops documents scoring below it.
        raw_scores: bool
            Return the model's raw logits instead of scores in [0, 1] (late interaction:
            ColBERT's MaxSim sum instead of its mean per query token, in [-1, 1]).
        batch_size: int | None
            Documents per request (the client's ``rerank_batch_size``, 1024, if ``None``;
            late interaction: its embedding ``batch_size``).
        late_interaction: bool | None
            ``None`` (default): decided from the model; ``True``: a ColBERT model, scored
            by MaxSim on the client (needs numpy); ``False``: a cross-encoder.

    Key init args — client params:
        base_url, api_key, timeout, max_retries, client
            As for :class:`~infinity_rag.langchain.InfinityEmbeddings` (the server's URL
            and ``--api-key``, defaulting to ``INFINITY_API_BASE`` and ``INFINITY_API_KEY``;
            a shared ``InfinityClient`` instead of building one).

    See full list of supported init args and their descriptions in the params section.

    Instantiate:
        ```python
        from infinity_rag.langchain import InfinityRerank

        reranker = InfinityRerank(
            model="mixedbread-ai/mxbai-rerank-xsmall-v1",
            top_n=3,
            # base_url="http://localhost:7997",
            # api_key="...",
            # other params...
        )
        ```

    Compress documents:
        ```python
        from langchain_core.documents import Document

        docs = [
            Document(page_content="Paris is the capital of France."),
            Document(page_content="The Nile flows through Egypt."),
        ]
        ranked = reranker.compress_documents(docs, "What is France's capital?")
        print(ranked[0].page_content, ranked[0].metadata["relevance_score"])
        ```

        ```python
        Paris is the capital of France. 0.9987
        ```

    Rerank (indexes and scores):
        ```python
        reranker.rerank(["Paris is in France.", "The Nile"], "France's capital?", top_n=None)
        ```

        ```python
        [{"index": 0, "relevance_score": 0.9987}, {"index": 1, "relevance_score": 0.0012}]
        ```

    Use in a retriever:
        ```python
        from langchain_classic.retrievers import ContextualCompressionRetriever

        retriever = ContextualCompressionRetriever(
            base_compressor=reranker,
            base_retriever=vector_store.as_retriever(search_kwargs={"k": 20}),
        )
        docs = retriever.invoke("What is France's capital?")
        ```

    Async:
        ```python
        ranked = await reranker.acompress_documents(docs, "What is France's capital?")
        scores = await reranker.arerank(["Paris is in France."], "France's capital?")
        docs = await retriever.ainvoke("What is France's capital?")
        ```
    """

    model: str = Field(min_length=1)
    """Name of the served reranker (``--served-model-name``, else the model id)."""

    top_n: int | None = Field(default=3, gt=0)
    """How many documents to return, most relevant first; ``None`` returns them all. Sent to
    the server as ``top_n``."""

    raw_scores: bool = False
    """Return the model's raw logits instead of scores normalised to [0, 1]."""

    score_threshold: float | None = None
    """``compress_documents`` drops documents whose ``relevance_score`` is below this."""

    batch_size: int | None = Field(default=None, ge=1, le=MAX_ITEMS_PER_REQUEST)
    """Documents per request (at most 2048). ``None``: the client's ``rerank_batch_size``
    (1024). Larger lists are split, scored and merged."""

    max_concurrency: int | None = Field(default=None, ge=1)
    """Requests of one call in flight at once. ``None``: the client's (4)."""

    late_interaction: bool | None = None
    """How ``model`` scores. ``False``: a cross-encoder, through Infinity's ``/rerank``.
    ``True``: a late-interaction model (ColBERT, a matrix per text): the query's and the
    documents' token matrices are embedded (in chunks of ``batch_size``, default the
    client's embedding batch size) and scored on the client by MaxSim, ColBERT's sum over
    the query's token vectors of their best cosine with a document token, divided by the
    number of query tokens (in [-1, 1]; ``raw_scores=True``: the sum). Needs numpy
    (``infinity-rag[numpy]``). ``None`` (default): MaxSim for a model known to give matrices,
    else ``/rerank``, switching to MaxSim when Infinity refuses it for a model that only
    embeds (once per client)."""

    # --- BaseDocumentCompressor ---------------------------------------------------------------

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Rerank ``documents`` against ``query``: the best ``top_n``, most relevant first.

        Returns new ``Document`` objects (the given ones are left untouched), each with
        ``metadata["relevance_score"]``. No documents: ``[]`` without a request.
        """
        return drive(self._compress_flow(documents, query))

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Async :meth:`compress_documents` (native async HTTP, no thread pool)."""
        return await adrive(self._compress_flow(documents, query))

    # --- rerank, as langchain-cohere's CohereRerank offers it ---------------------------------

    def rerank(
        self,
        documents: Sequence[str | Document],
        query: str,
        *,
        top_n: int | None = -1,
    ) -> list[dict[str, Any]]:
        """Score ``documents`` (strings or ``Document`` objects) against ``query``.

        Returns ``{"index": ..., "relevance_score": ...}`` per document, most relevant first;
        ``index`` points into ``documents``. ``top_n=-1`` (the default) uses the instance's
        ``top_n``; ``None`` returns every document.
        """
        return drive(self._scores_flow(documents, query, top_n))

    async def arerank(
        self,
        documents: Sequence[str | Document],
        query: str,
        *,
        top_n: int | None = -1,
    ) -> list[dict[str, Any]]:
        """Async :meth:`rerank`."""
        return await adrive(self._scores_flow(documents, query, top_n))

    # --- shared by the sync and async paths (see infinity_rag._flows) -------------------------

    def _compress_flow(
        self, documents: Sequence[Document], query: str
    ) -> Flow[RerankResult, Sequence[Document]]:
        docs = _check_documents(documents)
        result = yield self._rerank_call(query, [doc.page_content for doc in docs], -1)
        return self._ranked_documents(docs, result)

    def _scores_flow(
        self, documents: Sequence[str | Document], query: str, top_n: int | None
    ) -> Flow[RerankResult, list[dict[str, Any]]]:
        result = yield self._rerank_call(query, _contents(documents), top_n)
        return _scores(result)

    def _rerank_call(self, query: str, texts: list[str], top_n: int | None) -> Call[RerankResult]:
        """The client's rerank; ``top_n=-1``: the instance's."""
        options = rerank_options(self, self.top_n if top_n == -1 else top_n)
        return call(self._client.rerank, self._client.arerank)(query, texts, **options)

    def _ranked_documents(self, docs: list[Document], result: RerankResult) -> list[Document]:
        ranked = []
        for item in result:
            if self.score_threshold is not None and item.relevance_score < self.score_threshold:
                break  # the results are sorted by score: the rest are lower still
            doc = docs[item.index]
            metadata = deepcopy(doc.metadata)
            metadata["relevance_score"] = item.relevance_score
            ranked.append(doc.model_copy(update={"metadata": metadata}))
        return ranked


def _check_documents(documents: Sequence[Document]) -> list[Document]:
    if isinstance(documents, str | Document) or not isinstance(documents, Sequence):
        raise TypeError(f"documents must be a list of Documents, got {type(documents).__name__}")
    for i, doc in enumerate(documents):
        if not isinstance(doc, Document):
            raise TypeError(f"documents[{i}] must be a Document, got {type(doc).__name__}")
    return list(documents)


def _contents(documents: Sequence[str | Document]) -> list[str]:
    if isinstance(documents, str | Document) or not isinstance(documents, Sequence):
        raise TypeError(
            f"documents must be a list of strings or Documents, got {type(documents).__name__}"
        )
    texts = []
    for i, doc in enumerate(documents):
        if isinstance(doc, Document):
            texts.append(doc.page_content)
        elif isinstance(doc, str):
            texts.append(doc)
        else:
            raise TypeError(
                f"documents[{i}] must be a string or a Document, got {type(doc).__name__}"
            )
    return texts


def _scores(result: RerankResult) -> list[dict[str, Any]]:
    return [{"index": item.index, "relevance_score": item.relevance_score} for item in result]
