"""``InfinityRanker``: a Haystack ranker backed by a reranker an Infinity server serves."""

from __future__ import annotations

import numbers
from typing import Any, Literal

from haystack import Document, component
from haystack.utils import Secret

from infinity_rag._flows import Flow, adrive, call, drive
from infinity_rag._inputs import MAX_ITEMS_PER_REQUEST, check_optional_positive_int, check_query
from infinity_rag._integration import RerankOptions, rerank_options
from infinity_rag.client import InfinityClient
from infinity_rag.haystack._component import (
    DEFAULT_API_KEY,
    InfinityComponent,
    check_documents,
    check_meta_fields,
    check_optional_batch_size,
    check_strings,
    document_text,
    new_document,
)
from infinity_rag.types import RerankResult

__all__ = ["InfinityRanker"]


@component
class InfinityRanker(InfinityComponent):
    """Ranks ``Document``s by their relevance to a query with a reranker an Infinity server
    serves: a cross-encoder (Infinity's ``/rerank``) or a late-interaction (ColBERT) model,
    scored on the client by MaxSim as :meth:`InfinityClient.rerank
    <infinity_rag.InfinityClient.rerank>` does.

    Returns new ``Document``s, most relevant first, each with the server's relevance as its
    ``score``; the given ones are left untouched. Put it after a retriever in a query
    pipeline.

    ```python
    from haystack import Document
    from infinity_rag.haystack import InfinityRanker

    ranker = InfinityRanker(model="mixedbread-ai/mxbai-rerank-xsmall-v1", top_k=2)
    docs = [Document(content="Paris is in France."), Document(content="The Nile flows north.")]
    result = ranker.run(query="What is the capital of France?", documents=docs)
    print([(d.content, round(d.score, 3)) for d in result["documents"]])
    ```
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | list[str] | None = None,
        api_key: Secret = DEFAULT_API_KEY,
        top_k: int | None = 10,
        score_threshold: float | None = None,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        raw_scores: bool = False,
        late_interaction: bool | None = None,
        batch_size: int | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        max_concurrency: int | None = None,
        balancer: Literal["peak-ewma", "least-busy"] | None = None,
        hedge: bool | None = None,
        deadline: float | None = None,
        extra_body: dict[str, Any] | None = None,
        client: InfinityClient | None = None,
    ) -> None:
        """Create an InfinityRanker.

        Args:
            model: The served reranker's name (``--served-model-name``, else its model id).
            base_url: The server's URL with any ``--url-prefix``, or a list of replicas' URLs.
                ``None``: ``INFINITY_API_BASE``, then ``INFINITY_API_URL``, then
                ``http://localhost:7997``, read when the component warms up.
            api_key: The server's ``--api-key``; by default ``INFINITY_API_KEY`` if set.
            top_k: How many documents to return, most relevant first (sent to the server as
                ``top_n``); ``None``: all of them.
            score_threshold: Leave out documents scoring below this.
            meta_fields_to_embed: Meta keys whose values are put before the content in the
                text the reranker reads.
            embedding_separator: What joins those values and the content.
            raw_scores: The model's raw logits instead of scores in [0, 1] (ColBERT: the
                MaxSim sum instead of its mean per query token).
            late_interaction: ``None`` (default): decided from the model; ``True``: a
                ColBERT model, scored by MaxSim on the client (needs numpy); ``False``: a
                cross-encoder, through ``/rerank``.
            batch_size: Documents per request (at most 2048); ``None``: the client's.
            timeout: Seconds to wait for each request; ``None``: 120.
            max_retries: Retries of connection errors, timeouts, 429 and 5xx; ``None``: 2.
            max_concurrency: Requests of one call in flight at once; ``None``: 4.
            balancer: ``"peak-ewma"`` or ``"least-busy"`` (``None``: the client's).
            hedge: Copy slow one-request calls to another replica (``None``: the client's).
            deadline: Seconds a whole call may take (``None``: ``timeout`` per request only).
            extra_body: Fields added to every request body as they are.
            client: An ``InfinityClient`` to share with other components; the connection
                settings (but ``max_concurrency`` and ``extra_body``) are then its own.
        """
        self._connect(
            *(model, base_url, api_key, timeout, max_retries, max_concurrency),
            *(balancer, hedge, deadline, extra_body, client),
        )
        owner = type(self).__name__
        check_strings(owner, embedding_separator=embedding_separator)
        if late_interaction is not None and not isinstance(late_interaction, bool):
            raise TypeError(
                f"{owner}: late_interaction must be True, False or None, got {late_interaction!r}"
            )
        self.top_k = check_optional_positive_int(top_k, "top_k")
        self.score_threshold = _check_threshold(score_threshold)
        self.meta_fields_to_embed = check_meta_fields(meta_fields_to_embed, owner)
        self.embedding_separator = embedding_separator
        self.raw_scores = bool(raw_scores)
        self.late_interaction = late_interaction
        self.batch_size = check_optional_batch_size(batch_size, MAX_ITEMS_PER_REQUEST)

    def _request(
        self, query: object, documents: object, top_k: object, score_threshold: object
    ) -> tuple[str, list[Document], list[str], RerankOptions, float | None]:
        """Checked inputs, the texts to rerank, the client's arguments and the threshold."""
        text = check_query(query)
        docs = check_documents(documents, type(self).__name__)
        top_n = self.top_k if top_k is None else check_optional_positive_int(top_k, "top_k")
        threshold = self.score_threshold if score_threshold is None else score_threshold
        threshold = _check_threshold(threshold)
        texts = [
            document_text(doc, self.meta_fields_to_embed, self.embedding_separator) for doc in docs
        ]
        return text, docs, texts, rerank_options(self, top_n), threshold

    def _flow(
        self, query: object, documents: object, top_k: object, score_threshold: object
    ) -> Flow[RerankResult, dict[str, list[Document]]]:
        """:meth:`run` and :meth:`run_async`, written once (see ``infinity_rag._flows``)."""
        text, docs, texts, args, threshold = self._request(query, documents, top_k, score_threshold)
        if not docs:
            return {"documents": []}
        client = self._ready()
        result = yield call(client.rerank, client.arerank)(text, texts, **args)
        return self._ranked(docs, result, threshold)

    @staticmethod
    def _ranked(
        docs: list[Document], result: RerankResult, threshold: float | None
    ) -> dict[str, list[Document]]:
        ranked = []
        for item in result:
            if threshold is not None and item.relevance_score < threshold:
                break  # best first: the rest score lower still
            ranked.append(new_document(docs[item.index], score=item.relevance_score))
        return {"documents": ranked}

    @component.output_types(documents=list[Document])
    def run(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        score_threshold: float | None = None,
    ) -> dict[str, list[Document]]:
        """Rank ``documents`` by their relevance to ``query``.

        Args:
            query: The query.
            documents: The documents to rank (an empty list returns ``[]`` with no request).
            top_k: How many to return; ``None``: the component's ``top_k``.
            score_threshold: Leave out documents scoring below it; ``None``: the
                component's ``score_threshold``.

        Returns:
            ``documents``: new documents, most relevant first, with the relevance as
            ``score``.

        Raises:
            TypeError, ValueError: a bad query, document list, ``top_k`` or
                ``score_threshold`` (before any request).
            InfinityError: a request failed (after the retries).
        """
        return drive(self._flow(query, documents, top_k, score_threshold))

    @component.output_types(documents=list[Document])
    async def run_async(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        score_threshold: float | None = None,
    ) -> dict[str, list[Document]]:
        """Async :meth:`run` (native async HTTP, no thread pool)."""
        return await adrive(self._flow(query, documents, top_k, score_threshold))


def _check_threshold(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"score_threshold must be a number or None, got {value!r}")
    return float(value)
