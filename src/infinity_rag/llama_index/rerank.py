"""``InfinityRerank``: a LlamaIndex node postprocessor that reranks with an Infinity model."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from llama_index.core.bridge.pydantic import Field
from llama_index.core.callbacks import CBEventType, EventPayload

# llama_index.core re-exports get_dispatcher without marking it as exported (mypy strict).
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from infinity_rag._flows import Flow, adrive, call, drive
from infinity_rag._inputs import MAX_ITEMS_PER_REQUEST, check_query, check_texts
from infinity_rag._integration import rerank_options
from infinity_rag.llama_index._connection import InfinityConnection
from infinity_rag.types import RerankResult

__all__ = ["RETRIEVAL_SCORE_KEY", "InfinityRerank"]

dispatcher = get_dispatcher(__name__)

#: The metadata key under which ``keep_retrieval_score=True`` keeps the retriever's score.
RETRIEVAL_SCORE_KEY = "retrieval_score"


class InfinityRerank(InfinityConnection, BaseNodePostprocessor):
    """Rerank retrieved nodes with a cross-encoder or a late-interaction (ColBERT) model
    served by Infinity, natively sync and async.

    Setup:
        ```bash
        pip install "infinity-rag[llama-index]"
        infinity_emb v2 --model-id mixedbread-ai/mxbai-rerank-xsmall-v1   # a reranker
        export INFINITY_API_BASE=http://localhost:7997  # its URL; INFINITY_API_KEY if needed
        ```

    Key init args:
        model: the served reranker (``--served-model-name`` or its Hugging Face id).
        top_n: how many nodes to keep, best first (default 2, as LlamaIndex's rerankers;
            ``None`` keeps all, reordered).
        score_threshold: drop nodes scoring below it (applied after ``top_n``).
        raw_scores: return the model's logits instead of sigmoid scores in ``[0, 1]``
            (late interaction: ColBERT's MaxSim sum instead of its mean per query token).
        late_interaction: ``None`` (default) decides from the model; ``True``: a ColBERT
            model, scored by MaxSim on the client (needs numpy); ``False``: a cross-encoder.
        keep_retrieval_score: keep the retriever's score in ``metadata["retrieval_score"]`` of
            a copy of the node (excluded from the text sent to LLMs and embedders).
        metadata_mode: which text of a node is scored (default ``MetadataMode.EMBED``: its
            content with the metadata meant for embedding).
        batch_size: documents per request (default: the client's, 1024).
        max_concurrency / extra_body: requests in flight per call / extra JSON fields.
        base_url / api_key / timeout / max_retries / default_headers / http_client /
            async_http_client: the connection (URL and key from the environment by default),
            or ``client``: a shared :class:`~infinity_rag.InfinityClient` instead.

    Use:
        ```python
        from infinity_rag.llama_index import InfinityRerank

        rerank = InfinityRerank(model="mixedbread-ai/mxbai-rerank-xsmall-v1", top_n=3)
        query_engine = index.as_query_engine(similarity_top_k=20, node_postprocessors=[rerank])
        nodes = await rerank.apostprocess_nodes(retrieved, query_str="what is infinity?")
        ```

    The caller's nodes are never modified: the result is new ``NodeWithScore`` objects.
    Each call dispatches ``ReRankStartEvent`` / ``ReRankEndEvent`` inside a span and a
    ``CBEventType.RERANKING`` callback event; an empty list returns ``[]`` without a request.
    """

    model: str = Field(min_length=1, description="The name of the served reranker.")
    top_n: int | None = Field(
        default=2, gt=0, description="Nodes to keep, best first; None keeps them all."
    )
    raw_scores: bool = Field(
        default=False, description="Return the model's raw logits instead of [0, 1] scores."
    )
    score_threshold: float | None = Field(
        default=None, description="Drop nodes whose rerank score is below this value."
    )
    keep_retrieval_score: bool = Field(
        default=False,
        description=f"Keep the retriever's score in metadata[{RETRIEVAL_SCORE_KEY!r}].",
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED, description="Which text of each node is sent to the model."
    )
    batch_size: int | None = Field(
        default=None,
        gt=0,
        le=MAX_ITEMS_PER_REQUEST,
        description="Documents per rerank request; default: the client's (1024; late "
        "interaction: its embedding batch size).",
    )
    late_interaction: bool | None = Field(
        default=None,
        description="False: a cross-encoder (Infinity's /rerank). True: a late-interaction "
        "(ColBERT) model: token matrices embedded and scored on the client by MaxSim, the "
        "mean over query tokens of their best cosine with a document token, in [-1, 1] "
        "(raw_scores: the sum); needs numpy. None: MaxSim for a model known to give "
        "matrices, else /rerank, switching to MaxSim when Infinity refuses it for a model "
        "that only embeds.",
    )

    @classmethod
    def class_name(cls) -> str:
        return "InfinityRerank"

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        return drive(self._flow(nodes, query_bundle))

    @dispatcher.span
    async def _apostprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        return await adrive(self._flow(nodes, query_bundle))

    # --- shared by the sync and async paths --------------------------------------------------

    def _flow(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None
    ) -> Flow[RerankResult, list[NodeWithScore]]:
        """Both postprocess methods, written once (see ``infinity_rag._flows``)."""
        query, documents = self._inputs(nodes, query_bundle)
        if not documents:
            return []
        client, options = self._client, rerank_options(self, self.top_n)
        rerank = call(client.rerank, client.arerank)(query.query_str, documents, **options)
        with self._rerank_events(nodes, query) as reranked:
            result = yield rerank
            reranked.extend(self._reranked(nodes, result))
        return reranked

    def _inputs(
        self, nodes: Sequence[NodeWithScore], query_bundle: QueryBundle | None
    ) -> tuple[QueryBundle, list[str]]:
        """Check the arguments (before any request) and pick the text of each node."""
        if query_bundle is None:
            raise ValueError(
                "InfinityRerank needs a query: call postprocess_nodes(nodes, query_str=...) "
                "or pass query_bundle=QueryBundle(...)"
            )
        if isinstance(nodes, NodeWithScore) or not isinstance(nodes, Sequence):
            raise TypeError(f"nodes must be a list of NodeWithScore, got {type(nodes).__name__}")
        documents = []
        for i, node in enumerate(nodes):
            if not isinstance(node, NodeWithScore):
                raise TypeError(f"nodes[{i}] must be a NodeWithScore, got {type(node).__name__}")
            documents.append(node.node.get_content(metadata_mode=self.metadata_mode))
        # The client checks these too, but only once the events below have started.
        check_query(query_bundle.query_str)
        return query_bundle, check_texts(documents, "documents")

    @contextmanager
    def _rerank_events(
        self, nodes: list[NodeWithScore], query: QueryBundle
    ) -> Iterator[list[NodeWithScore]]:
        """Start/end events around one rerank; the body fills in the reranked nodes."""
        dispatcher.event(
            ReRankStartEvent(
                query=query,
                nodes=nodes,
                top_n=len(nodes) if self.top_n is None else self.top_n,
                model_name=self.model,
            )
        )
        reranked: list[NodeWithScore] = []
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self.model,
                EventPayload.QUERY_STR: query.query_str,
                EventPayload.TOP_K: self.top_n,
            },
        ) as event:
            yield reranked
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))

    def _reranked(self, nodes: list[NodeWithScore], result: RerankResult) -> list[NodeWithScore]:
        """New ``NodeWithScore`` objects, best first; the caller's nodes are left as they were."""
        reranked = []
        for item in result.results:
            if self.score_threshold is not None and item.relevance_score < self.score_threshold:
                continue
            retrieved = nodes[item.index]
            node = retrieved.node
            if self.keep_retrieval_score:
                node = node.model_copy(
                    update={
                        "metadata": {**node.metadata, RETRIEVAL_SCORE_KEY: retrieved.score},
                        "excluded_embed_metadata_keys": _with_key(
                            node.excluded_embed_metadata_keys
                        ),
                        "excluded_llm_metadata_keys": _with_key(node.excluded_llm_metadata_keys),
                    }
                )
            reranked.append(NodeWithScore(node=node, score=item.relevance_score))
        return reranked


def _with_key(keys: list[str]) -> list[str]:
    return [*keys] if RETRIEVAL_SCORE_KEY in keys else [*keys, RETRIEVAL_SCORE_KEY]
