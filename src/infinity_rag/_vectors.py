"""Every kind of vector Infinity serves, recognised from its answers, without any I/O.

Infinity answers ``/embeddings`` with one of three kinds of vector, and says which only
through the answer itself:

- single vectors (the usual embedder): one flat list per input;
- multi-vector (a ColBERT model in late-interaction mode, a ColPali-style vision model): a
  matrix per input, nested lists on the float path, but *flattened* into one long float32
  string on the base64 path (only the model's vector width tells the rows apart);
- bit-packed vectors (``--embedding-dtype ubinary`` / ``binary``): ``dimensions / 8`` integers
  per input, on the float path only: base64 is refused with a 500.

So the client learns each model's :class:`~infinity_rag.types.VectorShape` once (cached per
client, in a :class:`ShapeCache`): the first request to a model it does not know asks for JSON
floats, whose nesting is unambiguous; a flat answer of whole numbers (bit-packed, or int8
scalar quantization) is settled by a one-text base64 request that a bit-packed model refuses.
Later requests use the caller's encoding (base64 by default), read with the learned width. A
method asked for the wrong kind raises :class:`~infinity_rag.errors.VectorKindError` naming
the right one: nothing is ever passed off as another shape.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from infinity_rag import _protocol as protocol
from infinity_rag import types as t
from infinity_rag._arrays import ArraySink, require_numpy
from infinity_rag._protocol import (
    JSON,
    Exchange,
    Modality,
    Operation,
    Request,
    chunks,
    embedding_items,
    parse_usage,
    refused_packing,
    run_parallel,
)
from infinity_rag.errors import (
    EncodingRefusedError,
    InvalidResponseError,
    VectorKindError,
)

Target = Literal["single", "multi", "packed"]
"""The kind of vector a client method returns."""

#: The client method that returns each kind.
METHODS: dict[Target, str] = {
    "single": "embed",
    "multi": "embed_multi_vector",
    "packed": "embed_packed",
}

_PACKED_RANGE: dict[t.Packing, tuple[int, int]] = {"ubinary": (0, 255), "binary": (-128, 127)}


class ShapeCache:
    """What one client learned about each model's vectors, keyed by the requested model name
    (``""``: the server's only model). Thread-safe; shared by every call of the client."""

    def __init__(self) -> None:
        self._shapes: dict[str, t.VectorShape] = {}
        # Single-vector models seen only with `dimensions`: their full width is still unknown.
        self._single: set[str] = set()
        self._lock = threading.Lock()

    def get(self, key: str) -> t.VectorShape | None:
        """The learned shape of ``key``'s vectors, or ``None``."""
        return self._shapes.get(key)

    def learn(self, key: str, shape: t.VectorShape) -> None:
        """Record (or correct) what ``key``'s vectors look like."""
        with self._lock:
            self._shapes[key] = shape
            self._single.discard(key)

    def learn_single_kind(self, key: str) -> None:
        """``key`` gives single float vectors, of a width not seen yet (asked truncated)."""
        with self._lock:
            if key not in self._shapes:
                self._single.add(key)

    def forget(self, key: str) -> None:
        """Drop what was learned (the answer contradicted it: the model was replaced)."""
        with self._lock:
            self._shapes.pop(key, None)
            self._single.discard(key)

    def known(self, key: str, dimensions: int | None) -> bool:
        """Whether a request to ``key`` can be read without asking for floats first."""
        return key in self._shapes or (dimensions is not None and key in self._single)

    def snapshot(self) -> dict[str, t.VectorShape]:
        """Every learned shape, by model name."""
        with self._lock:
            return dict(self._shapes)


def model_key(model: str | None) -> str:
    """The cache key of a requested model (``None``: the server's only model)."""
    return model or ""


def _target_of(shape: t.VectorShape) -> Target:
    return "multi" if shape.multi_vector else "packed" if shape.packing else "single"


def kind_error(
    key: str, shape: t.VectorShape, wanted: Target, modality: Modality
) -> VectorKindError:
    """The error for asking ``wanted`` of a model whose vectors are ``shape``."""
    actual = _target_of(shape)
    method = METHODS[actual]
    if actual == "single" and modality != "text":
        method = f"embed_{modality}" if modality == "audio" else "embed_images"
    name = f"model {key!r}" if key else "the server's model"
    what = {
        "multi": f"a matrix per input (one {shape.width}-dimensional vector per token or patch)",
        "packed": f"bit-packed vectors ({shape.packing}"
        + (
            f": {shape.width} ints per vector, {shape.dimensions} dimensions)"
            if shape.width
            else ")"
        ),
        "single": "one float vector per input"
        + (f" ({shape.width} dimensions)" if shape.width else ""),
    }[actual]
    return VectorKindError(
        f"{name} returns {what}, not what {METHODS[wanted]}() gives: use "
        f"InfinityClient.{method}() (or a{method}()) for it",
        model=key,
        shape=shape,
        method=method,
    )


@dataclass(frozen=True, slots=True)
class _Part:
    """One answer's vectors in the order of its inputs (``values`` is ``None`` when they
    went into an :class:`ArraySink`)."""

    values: Any
    model: str
    usage: t.Usage


@dataclass(frozen=True, slots=True)
class _Request:
    target: Target
    modality: Modality
    key: str
    model: str | None
    dimensions: int | None
    extra_body: Mapping[str, Any] | None
    as_numpy: bool
    shapes: ShapeCache


@dataclass(frozen=True, slots=True)
class Chunks:
    """The exchanges embedding some inputs (one per chunk) and how their parts combine."""

    exchanges: list[Exchange[Any]]
    combine: Callable[[list[Any]], Any]
    #: The model is not known yet: the first chunk asks for floats and must go alone.
    learning: bool


def embed_chunks(
    inputs: Sequence[str],
    *,
    target: Target,
    modality: Modality,
    model: str | None,
    encoding_format: Literal["float", "base64"],
    dimensions: int | None,
    extra_body: Mapping[str, Any] | None,
    batch_size: int,
    as_numpy: bool,
    shapes: ShapeCache,
) -> Chunks:
    """Embed ``inputs`` as ``target`` vectors, in chunks of ``batch_size``.

    A model the cache does not know gets its first chunk as JSON floats, sent alone; the
    other chunks then go out in ``encoding_format`` and are read with what it taught.
    Bit-packed vectors are always asked for as floats (Infinity refuses base64 for them).
    A model known to give another kind of vector is refused here, before any request.
    """
    request = _Request(target, modality, model_key(model), model, dimensions, extra_body,
                       as_numpy, shapes)  # fmt: skip
    shape = shapes.get(request.key)
    if shape is not None and inputs and _target_of(shape) != target:
        raise kind_error(request.key, shape, target, modality)
    learning = not shapes.known(request.key, dimensions)
    if target == "packed" or (shape is not None and shape.packing is not None):
        encoding_format = "float"
    sink = ArraySink(len(inputs), dimensions) if as_numpy and target == "single" else None
    exchanges = [
        _chunk_exchange(
            request,
            list(inputs[start:stop]),
            start,
            sink,
            "float" if learning and n == 0 else encoding_format,
        )
        for n, (start, stop) in enumerate(chunks(len(inputs), batch_size))
    ]
    return Chunks(exchanges, partial(_combine, request, sink=sink), learning)


def embed_operation(inputs: Sequence[str], **options: Any) -> Operation[Any]:
    """:func:`embed_chunks` as an operation: every chunk's vectors, combined in input order."""
    return _embed(embed_chunks(inputs, **options))


def _embed(chunks: Chunks) -> Operation[Any]:
    exchanges = chunks.exchanges
    if chunks.learning and len(exchanges) > 1:
        # The first answer teaches how the model's vectors look; if it fails, nothing else
        # is sent.
        parts = yield from run_parallel(exchanges[:1])
        parts += yield from run_parallel(exchanges[1:])
    else:
        parts = yield from run_parallel(exchanges)
    return chunks.combine(parts)


def _chunk_exchange(
    request: _Request,
    chunk: list[str],
    start: int,
    sink: ArraySink | None,
    encoding_format: Literal["float", "base64"],
) -> Exchange[_Part]:
    body = _request_body(request, chunk, encoding_format)
    post = Request("POST", "/embeddings", body, items=len(chunk), ints_as_floats=True)
    try:
        payload = yield post
    except EncodingRefusedError as error:
        # base64 refused because the model's vectors are bit-packed: learn that (the refusal
        # is not retried) and ask again for floats, or say which method gives them.
        packing = refused_packing(error.message)
        if packing is None or encoding_format != "base64":
            raise
        request.shapes.forget(request.key)
        if request.target != "packed":
            shape = t.VectorShape(0, packing=packing)  # its width is learned by embed_packed
            raise kind_error(request.key, shape, request.target, request.modality) from error
        payload = yield dataclasses.replace(post, body=dict(body, encoding_format="float"))
    part = _parser(request, chunk, start, sink)(payload)
    if isinstance(part, _NeedsPacking):
        # Whole numbers: bit-packed, or int8 scalar quantization. Only a base64 request
        # tells them apart (a bit-packed model refuses it, naming its packing).
        part = part.then((yield from _probe(request, chunk[0])))
    return part


@dataclass(frozen=True, slots=True)
class _NeedsPacking:
    """A flat answer of whole numbers: its part, once the probe says whether it is packed."""

    then: Callable[[t.Packing | None], _Part]


def _request_body(
    request: _Request, chunk: list[str], encoding_format: Literal["float", "base64"]
) -> dict[str, Any]:
    return protocol.embed_body(
        chunk,
        model=request.model,
        encoding_format=encoding_format,
        dimensions=request.dimensions,
        modality=request.modality,
        extra_body=request.extra_body,
    )


def _parser(
    request: _Request, chunk: list[str], start: int, sink: ArraySink | None
) -> Callable[[JSON], _Part | _NeedsPacking]:
    def parse(payload: JSON) -> _Part | _NeedsPacking:
        model = str(payload.get("model", "")) if isinstance(payload, dict) else ""
        shape = request.shapes.get(request.key)
        if sink is not None and shape is not None and not shape.multi_vector:
            rows = protocol.base64_rows(payload, len(chunk))
            if rows is not None:  # the fast path: well-formed base64, straight into the array
                if request.dimensions is None:
                    sink.width = shape.width
                _put(request, sink, start, *rows)
                return _Part(None, model, parse_usage(payload))
        items = embedding_items(payload, len(chunk), check_numbers=False)
        usage = parse_usage(payload)
        embeddings = [embedding for _, embedding in items]
        order = [index for index, _ in items]
        kinds = set(map(type, embeddings))
        if kinds == {list} and all(e and isinstance(e[0], list) for e in embeddings):
            return _multi_from_floats(request, order, embeddings, model, usage)
        if kinds == {str}:
            if shape is not None and shape.multi_vector:
                return _multi_from_base64(request, shape, order, embeddings, model, usage)
            _check_single_base64(request, shape, embeddings, floats_asked=sink is None)
            return _from_flat(request, None, order, embeddings, start, sink, model, usage,
                              learning=False)  # fmt: skip
        for index, embedding in items:
            if isinstance(embedding, list):
                protocol.check_floats(embedding, index)
        if request.shapes.known(request.key, request.dimensions):
            packing = shape.packing if shape is not None else None
            return _from_flat(request, packing, order, embeddings, start, sink, model, usage,
                              learning=False)  # fmt: skip
        if _whole_numbers(embeddings):

            def then(packing: t.Packing | None) -> _Part:
                return _from_flat(request, packing, order, embeddings, start, sink, model,
                                  usage, learning=True)  # fmt: skip

            return _NeedsPacking(then)
        return _from_flat(request, None, order, embeddings, start, sink, model, usage,
                          learning=True)  # fmt: skip

    return parse


def _whole_numbers(embeddings: list[Any]) -> bool:
    """Whether the first flat vector could be bit-packed: at least 8 values (64 dimensions, the
    smallest packed embedding in use), whole numbers in a byte's range, not all 0 (what an
    empty text gives some models). Float vectors never hold only whole numbers."""
    first = next((e for e in embeddings if isinstance(e, list)), None)
    if not first or len(first) < 8 or not any(first):
        return False
    return all(v.is_integer() and -128 <= v <= 255 for v in first)


def _probe(request: _Request, text: str) -> Exchange[t.Packing | None]:
    """One input asked for as base64: refused (500) by a bit-packed model, naming its packing."""
    probe = dataclasses.replace(request, dimensions=None, as_numpy=False)
    try:
        yield Request("POST", "/embeddings", _request_body(probe, [text], "base64"))
    except EncodingRefusedError as error:
        packing = refused_packing(error.message)
        if packing is None:
            raise
        return packing
    return None


def _from_flat(
    request: _Request,
    packing: t.Packing | None,
    order: list[int],
    embeddings: list[Any],
    start: int,
    sink: ArraySink | None,
    model: str,
    usage: t.Usage,
    *,
    learning: bool,
) -> _Part:
    """Flat vectors (JSON floats, or base64 decoded): single, or bit-packed."""
    first = next((e for e in embeddings if isinstance(e, list)), None)
    if learning:
        if packing is not None and first is not None:
            request.shapes.learn(request.key, t.VectorShape(len(first), packing=packing))
        elif request.dimensions is None and first is not None:
            request.shapes.learn(request.key, t.VectorShape(len(first)))
        else:
            request.shapes.learn_single_kind(request.key)
    if packing is None and request.target != "single":
        shape = request.shapes.get(request.key) or t.VectorShape(len(first or ()))
        raise kind_error(request.key, shape, request.target, request.modality)
    if packing is not None:
        if request.target != "packed":
            shape = request.shapes.get(request.key) or t.VectorShape(
                len(first or ()), packing=packing
            )
            raise kind_error(request.key, shape, request.target, request.modality)
        return _packed(request, packing, order, embeddings, model, usage)
    if sink is not None:
        known = request.shapes.get(request.key)
        if known is not None and request.dimensions is None and not learning:
            sink.width = known.width
        _put(request, sink, start, order, embeddings)
        return _Part(None, model, usage)
    vectors: list[list[float]] = [[] for _ in embeddings]
    for index, embedding in zip(order, embeddings, strict=True):
        vector = (
            protocol.decode_base64_vector(embedding) if isinstance(embedding, str) else embedding
        )
        vectors[index] = _single_width(request, vector, index)
    return _Part(vectors, model, usage)


def _put(
    request: _Request, sink: ArraySink, start: int, order: list[int] | None, embeddings: list[Any]
) -> None:
    try:
        sink.put(start, order, embeddings)
    except InvalidResponseError:
        request.shapes.forget(request.key)  # the next call learns the model again
        raise


def _single_width(request: _Request, vector: list[float], index: int) -> list[float]:
    dimensions = request.dimensions
    shape = request.shapes.get(request.key)
    # A proxy may drop `dimensions` (LiteLLM renames it); Infinity itself only truncates, so
    # truncating here gives the same vector.
    if dimensions is not None and len(vector) > dimensions:
        return vector[:dimensions]
    if dimensions is not None and len(vector) < dimensions:
        raise InvalidResponseError(
            f"asked for {dimensions} dimensions, the model's vectors have "
            f"{len(vector)} (a proxy such as LiteLLM does not forward `dimensions`)"
        )
    if dimensions is None and shape is not None and len(vector) != shape.width:
        request.shapes.forget(request.key)
        raise InvalidResponseError(
            f"embedding {index} has {len(vector)} values, not the {shape.width} of the model's "
            "vectors seen before (was the model replaced? the next call learns it again)"
        )
    return vector


def _check_single_base64(
    request: _Request, shape: t.VectorShape | None, embeddings: list[str], *, floats_asked: bool
) -> None:
    """Base64 vectors of a model not known to give matrices: single vectors, or an error."""
    if shape is None and floats_asked:
        # Floats were asked for and base64 came back (a proxy that ignores encoding_format):
        # only vectors of one length can be single vectors.
        sizes = {len(protocol.decode_base64_vector(e)) for e in embeddings}
        if len(sizes) > 1:
            raise InvalidResponseError(
                f"asked for floats, got base64 vectors of {len(sizes)} lengths: not one vector "
                "each (a multi-vector model behind a proxy that ignores encoding_format?)"
            )
    if request.target != "single":
        raise kind_error(request.key, shape or t.VectorShape(0), request.target, request.modality)


def _multi_from_floats(
    request: _Request, order: list[int], embeddings: list[list[Any]], model: str, usage: t.Usage
) -> _Part:
    widths = {len(row) for matrix in embeddings for row in matrix}
    if len(widths) != 1:
        raise InvalidResponseError(
            f"a multi-vector answer whose rows have {sorted(widths)[:4]} values: not a matrix"
        )
    width = widths.pop()
    request.shapes.learn(request.key, t.VectorShape(width, multi_vector=True))
    if request.target != "multi":
        shape = t.VectorShape(width, multi_vector=True)
        raise kind_error(request.key, shape, request.target, request.modality)
    for index, matrix in zip(order, embeddings, strict=True):
        for row in matrix:
            if not isinstance(row, list):
                raise InvalidResponseError(f"embedding {index} mixes rows and numbers")
            protocol.check_floats(row, index)
    matrices: list[Any] = [None] * len(embeddings)
    if request.as_numpy:
        np = require_numpy()
        for index, matrix in zip(order, embeddings, strict=True):
            matrices[index] = np.array(matrix, dtype=np.float32).reshape(len(matrix), width)
    else:
        for index, matrix in zip(order, embeddings, strict=True):
            matrices[index] = matrix
    return _Part(matrices, model, usage)


def _multi_from_base64(
    request: _Request,
    shape: t.VectorShape,
    order: list[int],
    embeddings: list[str],
    model: str,
    usage: t.Usage,
) -> _Part:
    if request.target != "multi":
        raise kind_error(request.key, shape, request.target, request.modality)
    width = shape.width
    matrices: list[Any] = [None] * len(embeddings)
    np = require_numpy() if request.as_numpy else None
    for index, embedding in zip(order, embeddings, strict=True):
        raw = binascii.a2b_base64(embedding) if np is not None else base64.b64decode(embedding)
        if len(raw) % (4 * width) or not raw:
            request.shapes.forget(request.key)
            raise InvalidResponseError(
                f"multi-vector embedding {index} has {len(raw)} bytes: not rows of {width} "
                "float32 values (was the model replaced? the next call learns it again)"
            )
        if np is not None:
            matrices[index] = np.frombuffer(bytearray(raw), dtype="<f4").reshape(-1, width)
            if matrices[index].dtype != np.float32:
                matrices[index] = matrices[index].astype(np.float32)
        else:
            flat = protocol.float32_values(raw)
            matrices[index] = [flat[i : i + width] for i in range(0, len(flat), width)]
    return _Part(matrices, model, usage)


def _packed(
    request: _Request,
    packing: t.Packing,
    order: list[int],
    embeddings: list[Any],
    model: str,
    usage: t.Usage,
) -> _Part:
    low, high = _PACKED_RANGE[packing]
    shape = request.shapes.get(request.key)
    vectors: list[list[int]] = [[] for _ in embeddings]
    for index, embedding in zip(order, embeddings, strict=True):
        if not isinstance(embedding, list):
            raise InvalidResponseError(f"bit-packed embedding {index} is not a list of ints")
        if shape is not None and len(embedding) != shape.width:
            request.shapes.forget(request.key)
            raise InvalidResponseError(
                f"bit-packed embedding {index} has {len(embedding)} bytes, not the model's "
                f"{shape.width} (was the model replaced? the next call learns it again)"
            )
        values = [int(v) for v in embedding]
        if values != embedding or any(not low <= v <= high for v in values):
            raise InvalidResponseError(
                f"bit-packed ({packing}) embedding {index} holds values that are not ints in "
                f"{low}..{high}"
            )
        vectors[index] = values
    if request.as_numpy:
        np = require_numpy()
        dtype = np.uint8 if packing == "ubinary" else np.int8
        width = len(vectors[0]) if vectors else 0
        return _Part(np.array(vectors, dtype=dtype).reshape(len(vectors), width), model, usage)
    return _Part(vectors, model, usage)


def _combine(request: _Request, parts: list[_Part], *, sink: ArraySink | None) -> Any:
    model = next((part.model for part in parts if part.model), request.model or "")
    usage = t.Usage()
    for part in parts:
        usage += part.usage
    shape = request.shapes.get(request.key)
    if request.target == "single":
        if sink is not None:
            return t.EmbeddingArrayResult(sink.array(), model, usage)
        return t.EmbeddingResult([v for part in parts for v in part.values], model, usage)
    width = shape.width if shape is not None else 0
    if request.target == "multi":
        matrices = [m for part in parts for m in part.values]
        kind = t.MultiVectorArrayResult if request.as_numpy else t.MultiVectorResult
        return kind(matrices, model, width, usage)
    packing: t.Packing = shape.packing if shape is not None and shape.packing else "ubinary"
    if request.as_numpy:
        np = require_numpy()
        dtype = np.uint8 if packing == "ubinary" else np.int8
        blocks = [part.values for part in parts]
        array = np.concatenate(blocks) if blocks else np.empty((0, width), dtype=dtype)
        return t.PackedEmbeddingArrayResult(array, model, packing, width * 8, usage)
    vectors = [v for part in parts for v in part.values]
    return t.PackedEmbeddingResult(vectors, model, packing, width * 8, usage)


#: What a framework class's user does with each other kind of vector instead.
_INSTEAD: dict[str, str] = {
    "embed_multi_vector": (
        "get the matrices with InfinityClient.embed_multi_vector() and store them in a "
        "multi-vector index (for example Qdrant's MultiVectorConfig with MAX_SIM)"
    ),
    "embed_packed": (
        "get the packed vectors with InfinityClient.embed_packed() and store them as bits "
        "(for example pgvector's bit type with Hamming distance)"
    ),
}


@contextmanager
def one_float_vector_per_input(owner: str) -> Iterator[None]:
    """For a framework embedding class (``owner``): a model of another kind fails with what it
    returns and what to use instead; its vectors are never stored flattened or as floats."""
    try:
        yield
    except VectorKindError as error:
        instead = _INSTEAD.get(error.method, f"use InfinityClient.{error.method}()")
        name = f"model {error.model!r}" if error.model else "the server's model"
        raise VectorKindError(
            f"{owner} gives one float vector per input, but {name} returns "
            f"{error.shape.kind} vectors: {instead}",
            model=error.model,
            shape=error.shape,
            method=error.method,
        ) from error
