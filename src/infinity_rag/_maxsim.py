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

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING, Any

from infinity_rag import _protocol as protocol
from infinity_rag._protocol import Call, Followup, Plan, Replan, rank_items
from infinity_rag._vectors import ShapeCache, model_key, plan_vectors
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


@dataclass
class _Query:
    """The query's unit token vectors, set by the first call before the documents go out."""

    rows: NDArray[np.float64] | None = None


Translate = Callable[[VectorKindError], Exception]


def plan_rerank(
    query: str,
    documents: Sequence[str],
    *,
    model: str | None,
    top_n: int | None,
    raw_scores: bool,
    return_documents: bool,
    extra_body: Mapping[str, Any] | None,
    rerank_batch_size: int,
    embed_batch_size: int,
    late_interaction: bool | None,
    shapes: ShapeCache,
) -> Plan[Any, RerankResult]:
    """A rerank by the model's own ``/rerank`` (a cross-encoder) or by MaxSim over its token
    matrices (a late-interaction model), as ``late_interaction`` says.

    ``None`` decides from what the client knows: a model whose answers were matrices is
    reranked by MaxSim; otherwise ``/rerank`` is asked, and Infinity's refusal ("does not
    support `rerank`", the model only embeds) switches to MaxSim (the query's answer then
    teaches the client the model's shape, so later calls go straight there). A model that
    neither reranks nor gives matrices fails with the server's refusal, extended.
    """
    late = partial(
        plan_late_rerank,
        query,
        documents,
        model=model,
        top_n=top_n,
        raw_scores=raw_scores,
        return_documents=return_documents,
        extra_body=extra_body,
        batch_size=embed_batch_size,
        shapes=shapes,
    )
    shape = shapes.get(model_key(model))
    known_multi = shape is not None and shape.multi_vector
    if late_interaction or (late_interaction is None and known_multi):
        return late(translate=_not_multi_vector)
    cross = protocol.plan_rerank(
        query,
        documents,
        model=model,
        top_n=top_n,
        raw_scores=raw_scores,
        return_documents=return_documents,
        extra_body=extra_body,
        batch_size=rerank_batch_size,
    )
    if late_interaction is False or shape is not None:
        return cross

    def on_error(error: InfinityAPIError) -> Any:
        if not refuses_rerank(error):
            raise error
        raise Replan(late(translate=partial(_cannot_rerank, error)))

    calls = [dataclasses.replace(call, on_error=on_error) for call in cross.calls]
    return Plan(calls, cross.combine)


def plan_late_rerank(
    query: str,
    documents: Sequence[str],
    *,
    model: str | None,
    top_n: int | None,
    raw_scores: bool,
    return_documents: bool,
    extra_body: Mapping[str, Any] | None,
    batch_size: int,
    shapes: ShapeCache,
    translate: Translate,
) -> Plan[Any, RerankResult]:
    """Rerank ``documents`` by MaxSim: the query's matrix (one request, sent first and alone),
    then the documents' in chunks of ``batch_size``, each chunk scored as it arrives."""
    _numpy()  # before any request
    if not documents:
        return Plan([], lambda parts: RerankResult([], model or "", Usage()))
    embed = partial(
        plan_vectors,
        target="multi",
        modality="text",
        model=model,
        encoding_format="base64",
        dimensions=None,
        extra_body=extra_body,
        as_numpy=True,
        shapes=shapes,
    )
    try:
        query_plan = embed([query], batch_size=1)
        documents_plan = embed(documents, batch_size=batch_size)
    except VectorKindError as error:  # known before any request
        raise translate(error) from error
    state = _Query()

    def read_query(part: Any) -> _Scored:
        matrices: MultiVectorArrayResult = query_plan.combine([part])
        state.rows = unit_rows(matrices[0])
        return _Scored([], matrices.model, matrices.usage)

    def score_chunk(part: Any) -> _Scored:
        matrices: MultiVectorArrayResult = documents_plan.combine([part])
        if state.rows is None:  # the plan sends the query first, alone
            raise RuntimeError("a document chunk was scored before the query's answer")
        return _Scored(_scores_for(state.rows, matrices.embeddings), matrices.model, matrices.usage)

    calls = [_mapped(query_plan.calls[0], read_query, translate)]
    calls += [_mapped(call, score_chunk, translate) for call in documents_plan.calls]

    def combine(parts: list[_Scored]) -> RerankResult:
        rows = state.rows.shape[0] if state.rows is not None else 1
        scores = [score for part in parts[1:] for score in part.scores]
        items = [
            RerankItem(
                index,
                score if raw_scores else score / rows,
                documents[index] if return_documents else None,
            )
            for index, score in enumerate(scores)
        ]
        usage = Usage()
        for part in parts:
            usage += part.usage
        answered = next((part.model for part in parts if part.model), model or "")
        return RerankResult(rank_items(items, top_n), answered, usage)

    return Plan(calls, combine, first_alone=True)


def _mapped(call: Call[Any], then: Callable[[Any], Any], translate: Translate) -> Call[Any]:
    """``call`` whose final part (after any follow-up requests) goes through ``then``, and
    whose :class:`VectorKindError` (the model is not multi-vector) becomes ``translate``'s."""

    def finish(result: Any) -> Any:
        if isinstance(result, Followup):
            return Followup(_mapped(result.call, _same, translate), guard(result.then))
        return then(result)

    def guard(step: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def run(value: Any) -> Any:
            try:
                result = step(value)
            except VectorKindError as error:
                raise translate(error) from error
            return finish(result)

        return run

    on_error = None if call.on_error is None else guard(call.on_error)
    return dataclasses.replace(call, parse=guard(call.parse), on_error=on_error)


def _same(value: Any) -> Any:
    return value


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
