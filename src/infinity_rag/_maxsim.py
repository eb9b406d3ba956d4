"""Late-interaction reranking (ColBERT's MaxSim) on the client, without any I/O.

A ColBERT model served by Infinity cannot ``/rerank`` (Infinity refuses: it only embeds), but
it gives each text a matrix, one vector per token, and that is all late interaction needs.
ColBERT's relevance of a document ``D`` to a query ``Q`` is

    score(Q, D) = sum over query tokens q of  max over document tokens d of  q . d

with every token vector L2-normalised first (``colbert.modeling.colbert``: both
``query()`` and ``doc()`` end in ``torch.nn.functional.normalize(..., p=2, dim=2)``), so each
term is a cosine. Infinity returns the token vectors *unnormalised* (its ColBERT mode turns
normalisation off), so the client normalises them; without it, tokens with long vectors
would outweigh the others. Every row Infinity returns is used, ``[CLS]`` and ``[SEP]``
included, as ColBERT does; Infinity adds neither ColBERT's ``[Q]`` / ``[D]`` markers nor its
``[MASK]`` query padding, so scores are those of the vectors it serves.

Scores: ``raw_scores=True`` gives that sum, in ``[-n, n]`` for a query of ``n`` token
vectors (what Qdrant's ``MAX_SIM`` comparator gives for the same matrices with
``Distance.COSINE``); by default it is divided by ``n``: the mean best cosine per query
token, in ``[-1, 1]`` (1: every query token has an identical document token), comparable
across queries of different lengths, so that one ``score_threshold`` fits them all.

The plan embeds the query first, alone (one short request; a model of the wrong kind then
fails before any document is sent), then the documents in the client's embedding chunks,
scoring each chunk as it arrives: only one chunk's matrices at a time are held per request in
flight, never every document's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING, Any

from infinity_rag import _protocol as protocol
from infinity_rag._protocol import Exchange, Operation, Rerank, rank_items, run_parallel
from infinity_rag._vectors import Chunks, ShapeCache, embed_chunks, model_key
from infinity_rag.errors import (
    InfinityAPIError,
    InvalidResponseError,
    ModelCapabilityError,
    VectorKindError,
)
from infinity_rag.types import MultiVectorArrayResult, RerankItem, RerankResult, Usage

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

NUMPY_MISSING = (
    "late-interaction reranking (MaxSim over token matrices, computed on the client) needs "
    'numpy, which is not installed: pip install "infinity-rag[numpy]" (or pip install '
    '"numpy>=1.26")'
)

# Infinity 0.0.78's 400 for /rerank on a model that only embeds:
# "ModelNotDeployedError: model=`colbert` does not support `rerank`. ... Options are {'embed'}."
_REFUSAL = re.compile(r"does not support `rerank`.*Options are \{[^}]*'embed'", re.S)


def _numpy() -> ModuleType:
    try:
        import numpy
    except ImportError as exc:
        raise ImportError(NUMPY_MISSING) from exc
    return numpy


def unit_rows(matrix: Any) -> NDArray[np.float64]:
    """``matrix`` (one vector per row) as float64 rows of length 1 (zero rows stay 0)."""
    numpy = _numpy()
    rows = numpy.asarray(matrix, dtype=numpy.float64)
    if rows.ndim != 2:
        raise ValueError(f"a token matrix has 2 dimensions (tokens, dim), got shape {rows.shape}")
    norms = numpy.linalg.norm(rows, axis=1, keepdims=True)
    unit: NDArray[np.float64] = rows / numpy.where(norms == 0.0, 1.0, norms)
    return unit


def maxsim_scores(query: Any, documents: Sequence[Any]) -> list[float]:
    """ColBERT's late-interaction score of each document for ``query``: the sum over the
    query's token vectors of the largest cosine with any of the document's token vectors.

    ``query`` is a ``(q, dim)`` matrix, each document a ``(tokens, dim)`` one (arrays or
    nested lists). Computed in float64; a document without a row cannot be scored.
    """
    return _scores_for(unit_rows(query), documents)


def _scores_for(query: NDArray[np.float64], documents: Sequence[Any]) -> list[float]:
    scores = []
    for index, document in enumerate(documents):
        rows = unit_rows(document)
        if rows.shape[0] == 0 or rows.shape[1] != query.shape[1]:
            raise InvalidResponseError(
                f"document {index}'s token matrix has shape {rows.shape}: not rows of the "
                f"query's {query.shape[1]} values"
            )
        scores.append(float((query @ rows.T).max(axis=1).sum()))
    return scores


def refuses_rerank(error: InfinityAPIError) -> bool:
    """Whether ``error`` is Infinity refusing ``/rerank`` for a model that only embeds."""
    return isinstance(error, ModelCapabilityError) and _REFUSAL.search(error.message) is not None


@dataclass(frozen=True, slots=True)
class _Scored:
    """One answer's share of the result: its documents' raw scores, in input order."""

    scores: list[float]
    model: str
    usage: Usage


Translate = Callable[[VectorKindError], Exception]


def rerank_operation(
    rerank: Rerank,
    *,
    rerank_batch_size: int,
    embed_batch_size: int,
    late_interaction: bool | None,
    shapes: ShapeCache,
) -> Operation[RerankResult]:
    """A rerank by the model's own ``/rerank`` (a cross-encoder) or by MaxSim over its token
    matrices (a late-interaction model), as ``late_interaction`` says.

    ``None`` decides from what the client knows: a model whose answers were matrices is
    reranked by MaxSim; otherwise ``/rerank`` is asked, and Infinity's refusal ("does not
    support `rerank`", the model only embeds) switches to MaxSim (the query's answer then
    teaches the client the model's shape, so later calls go straight there). A model that
    neither reranks nor gives matrices fails with the server's refusal, extended.
    """
    late = partial(late_rerank_operation, rerank, batch_size=embed_batch_size, shapes=shapes)
    shape = shapes.get(model_key(rerank.model))
    known_multi = shape is not None and shape.multi_vector
    if late_interaction or (late_interaction is None and known_multi):
        return late(translate=_not_multi_vector)
    cross = protocol.rerank_operation(rerank, rerank_batch_size)
    if late_interaction is False or shape is not None:
        return cross
    return _cross_or_late(cross, late)


def _cross_or_late(
    cross: Operation[RerankResult], late: Callable[..., Operation[RerankResult]]
) -> Operation[RerankResult]:
    """``/rerank``; if Infinity refuses it for a model that only embeds, MaxSim instead."""
    try:
        return (yield from cross)
    except ModelCapabilityError as error:
        if not refuses_rerank(error):
            raise
        refusal = error
    return (yield from late(translate=partial(_cannot_rerank, refusal)))


def late_rerank_operation(
    rerank: Rerank, *, batch_size: int, shapes: ShapeCache, translate: Translate
) -> Operation[RerankResult]:
    """Rerank ``documents`` by MaxSim: the query's matrix (one request, sent first and alone),
    then the documents' in chunks of ``batch_size``, each chunk scored as it arrives."""
    _numpy()  # before any request
    if not rerank.documents:
        return protocol.finished(RerankResult([], rerank.model or "", Usage()))
    embed = partial(
        embed_chunks,
        target="multi",
        modality="text",
        model=rerank.model,
        encoding_format="base64",
        dimensions=None,
        extra_body=rerank.extra_body,
        as_numpy=True,
        shapes=shapes,
    )
    try:
        query_chunks = embed([rerank.query], batch_size=1)  # a model of the wrong kind: here
    except VectorKindError as error:
        raise translate(error) from error
    return _LateRerank(rerank, embed, batch_size, translate).run(query_chunks)


@dataclass(frozen=True, slots=True)
class _LateRerank:
    rerank: Rerank
    embed: Callable[..., Chunks]
    batch_size: int
    translate: Translate

    def run(self, query_chunks: Chunks) -> Operation[RerankResult]:
        try:
            (part,) = yield from run_parallel(query_chunks.exchanges)
            matrices: MultiVectorArrayResult = query_chunks.combine([part])
            rows = unit_rows(matrices[0])
            documents = self.embed(self.rerank.documents, batch_size=self.batch_size)
            scored = yield from run_parallel(
                [_scored(exchange, documents.combine, rows) for exchange in documents.exchanges]
            )
        except VectorKindError as error:
            raise self.translate(error) from error
        scores = [score for part in scored for score in part.scores]
        items = [
            RerankItem(
                index,
                score if self.rerank.raw_scores else score / rows.shape[0],
                self.rerank.documents[index] if self.rerank.return_documents else None,
            )
            for index, score in enumerate(scores)
        ]
        usage = matrices.usage
        for chunk in scored:
            usage += chunk.usage
        named = [matrices.model, *(chunk.model for chunk in scored)]
        answered = next((name for name in named if name), self.rerank.model or "")
        return RerankResult(rank_items(items, self.rerank.top_n), answered, usage)


def _scored(
    exchange: Exchange[Any], combine: Callable[[list[Any]], Any], rows: Any
) -> Exchange[_Scored]:
    """One chunk of documents, scored against the query's rows as it arrives: only its own
    matrices are held, and only until they are scored."""
    part = yield from exchange
    matrices: MultiVectorArrayResult = combine([part])
    return _Scored(_scores_for(rows, matrices.embeddings), matrices.model, matrices.usage)


def _named(error: VectorKindError) -> str:
    return f"model {error.model!r}" if error.model else "the server's model"


def _not_multi_vector(error: VectorKindError) -> VectorKindError:
    """``late_interaction=True`` with a model that does not give a matrix per text."""
    return VectorKindError(
        f"late-interaction reranking needs a multi-vector (ColBERT) model, but "
        f"{_named(error)} returns {error.shape.kind} embeddings: rerank with a cross-encoder "
        "(late_interaction=False, or None to decide from the model)",
        model=error.model,
        shape=error.shape,
        method=error.method,
    )


def _cannot_rerank(refusal: InfinityAPIError, error: VectorKindError) -> ModelCapabilityError:
    """Infinity refused ``/rerank`` and the model's vectors are not matrices either."""
    why = (
        f" ({_named(error)} returns {error.shape.kind} embeddings, not a matrix per token, so it "
        "cannot rerank by late interaction either: use a cross-encoder or a ColBERT model)"
    )
    # The whole message within the usual limit: the server's words give way to ours.
    room = max(protocol.MAX_MESSAGE - len(why), 80)
    cannot = ModelCapabilityError(
        protocol.short_message(refusal.message, room) + why,
        status_code=refusal.status_code,
        url=refusal.url,
        code=refusal.code,
    )
    cannot.urls = refusal.urls
    return cannot
