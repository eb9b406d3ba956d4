"""Result objects returned by :class:`infinity_rag.InfinityClient`.

They are plain frozen dataclasses (no validation cost): the client has already checked the
server's answer while parsing it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

if TYPE_CHECKING:  # numpy is optional (extra [numpy]); this module never imports it
    import numpy as np
    from numpy.typing import NDArray

__all__ = [
    "Capability",
    "ClassLabel",
    "ClassifyResult",
    "EmbeddingArrayResult",
    "EmbeddingResult",
    "ModelInfo",
    "MultiVectorArrayResult",
    "MultiVectorResult",
    "PackedEmbeddingArrayResult",
    "PackedEmbeddingResult",
    "Packing",
    "ReplicaState",
    "RerankItem",
    "RerankResult",
    "Usage",
    "VectorShape",
]

Capability = Literal["embed", "rerank", "classify", "image_embed", "audio_embed"]
"""What a served model can do, as ``GET /models`` lists it in ``ModelInfo.capabilities``."""

Packing = Literal["ubinary", "binary"]
"""How a model served with ``--embedding-dtype ubinary`` / ``binary`` packs its vectors.

Both are ``numpy.packbits(vector > 0)`` of the float32 vector (big-endian bit order: the first
dimension is the high bit of the first byte; a dimension that is exactly 0 gives a 0 bit).
``ubinary`` sends each byte as it is (0..255), ``binary`` sends ``byte - 128`` (-128..127).
"""


def _compact_repr(self: Any) -> str:
    """A vector result's repr without its vectors (a million of them would take seconds and
    fill a notebook): their count and shape, and the other fields."""
    shown = []
    for member in dataclasses.fields(self):
        value = getattr(self, member.name)
        if member.name == "embeddings":
            shown.append(f"embeddings={_shape_of(value)}")
        else:
            shown.append(f"{member.name}={value!r}")
    return f"{type(self).__name__}({', '.join(shown)})"


def _shape_of(vectors: Any) -> str:
    shape = getattr(vectors, "shape", None)
    if shape is not None:  # one numpy array
        return f"<array {tuple(shape)} {getattr(vectors, 'dtype', '')}>"
    if vectors and isinstance(vectors[0], list) and vectors[0] and isinstance(vectors[0][0], list):
        return f"<{len(vectors)} matrices>"  # a matrix (list of rows) per input
    if vectors and hasattr(vectors[0], "shape"):
        return f"<{len(vectors)} arrays>"
    width = len(vectors[0]) if vectors else 0
    return f"<{len(vectors)} vectors of {width}>"


def _arrays_equal(a: Any, b: Any) -> bool:
    return bool(a.shape == b.shape and a.dtype == b.dtype and (a == b).all())


_Item = TypeVar("_Item")


class _Items(Generic[_Item]):
    """``len()``, iteration and indexing over a result's items, one per input: the field
    named by ``_ITEMS``."""

    __slots__ = ()
    _ITEMS: ClassVar[str] = "results"

    def __len__(self) -> int:
        return len(getattr(self, self._ITEMS))

    def __iter__(self) -> Iterator[_Item]:
        return iter(getattr(self, self._ITEMS))

    def __getitem__(self, index: int) -> _Item:
        item: _Item = getattr(self, self._ITEMS)[index]
        return item


class _Vectors(_Items[_Item]):
    """A result of vectors, one per input in ``embeddings``; shown by :func:`_compact_repr`
    (its dataclass is declared with ``repr=False`` to keep it)."""

    __slots__ = ()
    _ITEMS = "embeddings"
    __repr__ = _compact_repr


class _ArrayVectors(_Vectors[_Item]):
    """Vectors as numpy arrays: equal when the other fields are and ``_same_embeddings``
    says the arrays are; unhashable (arrays are mutable)."""

    __slots__ = ()
    embeddings: Any

    @staticmethod
    def _same_embeddings(a: Any, b: Any) -> bool:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, type(self)):
            return NotImplemented
        fields_equal = all(
            getattr(self, member.name) == getattr(other, member.name)
            for member in dataclasses.fields(self)  # type: ignore[arg-type]
            if member.name != "embeddings"
        )
        return fields_equal and self._same_embeddings(self.embeddings, other.embeddings)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Usage:
    """What the server reports it processed. Infinity counts characters unless it tokenizes."""

    prompt_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens, self.total_tokens + other.total_tokens
        )


@dataclass(frozen=True, slots=True, repr=False)
class EmbeddingResult(_Vectors[list[float]]):
    """Vectors in the order of the inputs, as plain Python floats."""

    embeddings: list[list[float]]
    model: str
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class EmbeddingArrayResult(_ArrayVectors["NDArray[np.float32]"]):
    """Vectors in the order of the inputs, as one ``(n, d)`` float32 ``numpy.ndarray``.

    What ``embed(..., as_numpy=True)`` returns. Rows are views into ``embeddings``; two
    results are equal when their arrays, models and usage are.
    """

    embeddings: NDArray[np.float32]
    model: str
    usage: Usage = field(default_factory=Usage)

    @staticmethod
    def _same_embeddings(a: Any, b: Any) -> bool:
        return bool(a.shape == b.shape and (a == b).all())


@dataclass(frozen=True, slots=True)
class VectorShape:
    """What the client learned about a model's vectors from its answers (cached per client).

    Attributes:
        width: values per vector as the server sends them (bit-packed: bytes).
        multi_vector: each input gets a matrix (one vector per token or image patch, as
            ColBERT and ColPali models in late-interaction mode return), not one vector.
        packing: ``"ubinary"`` / ``"binary"`` for bit-packed vectors, else ``None``.
    """

    width: int
    multi_vector: bool = False
    packing: Packing | None = None

    @property
    def dimensions(self) -> int:
        """The vectors' dimensionality: ``width``, or ``8 * width`` bits when bit-packed."""
        return self.width * 8 if self.packing is not None else self.width

    @property
    def kind(self) -> str:
        """``"multi-vector"``, ``"bit-packed (ubinary)"`` / ``"bit-packed (binary)"`` or
        ``"single-vector"``: how the client's messages describe the model."""
        if self.multi_vector:
            return "multi-vector"
        if self.packing is not None:
            return f"bit-packed ({self.packing})"
        return "single-vector"


@dataclass(frozen=True, slots=True, repr=False)
class MultiVectorResult(_Vectors[list[list[float]]]):
    """Per input (in order) its matrix: one ``dimensions``-wide vector per token (ColBERT) or
    image patch (ColPali), as lists of Python floats. What ``embed_multi_vector`` returns."""

    embeddings: list[list[list[float]]]
    model: str
    dimensions: int
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class MultiVectorArrayResult(_ArrayVectors["NDArray[np.float32]"]):
    """Per input (in order) one ``(tokens, dimensions)`` float32 ``numpy.ndarray``.

    What ``embed_multi_vector(..., as_numpy=True)`` returns; inputs have different token
    counts, so the matrices are separate arrays.
    """

    embeddings: list[NDArray[np.float32]]
    model: str
    dimensions: int
    usage: Usage = field(default_factory=Usage)

    @staticmethod
    def _same_embeddings(a: Any, b: Any) -> bool:
        return len(a) == len(b) and all(map(_arrays_equal, a, b))


@dataclass(frozen=True, slots=True, repr=False)
class PackedEmbeddingResult(_Vectors[list[int]]):
    """Bit-packed vectors in input order, as Python ints (``dimensions / 8`` per vector).

    What ``embed_packed`` returns for a model served with ``--embedding-dtype ubinary``
    (ints 0..255) or ``binary`` (-128..127); see :data:`Packing` for the bit convention.
    """

    embeddings: list[list[int]]
    model: str
    packing: Packing
    dimensions: int
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class PackedEmbeddingArrayResult(_ArrayVectors["NDArray[np.uint8] | NDArray[np.int8]"]):
    """Bit-packed vectors as one ``(n, dimensions / 8)`` array: ``uint8`` for ``ubinary``,
    ``int8`` for ``binary``. What ``embed_packed(..., as_numpy=True)`` returns."""

    embeddings: NDArray[np.uint8] | NDArray[np.int8]
    model: str
    packing: Packing
    dimensions: int
    usage: Usage = field(default_factory=Usage)

    _same_embeddings = staticmethod(_arrays_equal)

    def bits(self) -> NDArray[np.uint8]:
        """The unpacked ``(n, dimensions)`` array of 0/1 (``numpy.unpackbits``): 1 where the
        float vector was > 0."""
        import numpy

        packed = self.embeddings
        if self.packing == "binary":
            packed = (packed.astype(numpy.int16) + 128).astype(numpy.uint8)
        return numpy.unpackbits(packed.view(numpy.uint8), axis=-1)


@dataclass(frozen=True, slots=True)
class RerankItem:
    """One scored document: ``index`` points into the documents that were sent."""

    index: int
    relevance_score: float
    document: str | None = None


@dataclass(frozen=True, slots=True)
class RerankResult(_Items[RerankItem]):
    """Scored documents, most relevant first (ties keep the input order)."""

    results: list[RerankItem]
    model: str
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True, slots=True)
class ClassLabel:
    """One label of a classified text, with its score."""

    label: str
    score: float


@dataclass(frozen=True, slots=True)
class ClassifyResult(_Items[list[ClassLabel]]):
    """For each input text (in order), its labels with scores, highest first."""

    results: list[list[ClassLabel]]
    model: str
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A served model as ``GET /models`` describes it.

    ``capabilities`` is empty when the server does not say (a LiteLLM proxy, for example).
    ``vectors`` is what this client learned about the model's vectors from its answers
    (width, multi-vector, bit-packed), ``None`` until it embedded something with it (see
    ``InfinityClient.vector_shape``).
    """

    id: str
    capabilities: frozenset[str] = frozenset()
    backend: str | None = None
    owned_by: str | None = None
    created: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    vectors: VectorShape | None = None


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """One replica of an :class:`~infinity_rag.InfinityClient`, as its pool sees it now.

    ``out_until`` is a wall-clock time (``time.time()``) until which the replica is out of
    rotation (after failures) or spared (after a 429); ``None`` while it takes requests.
    """

    url: str
    in_flight: int
    consecutive_failures: int
    out_until: float | None
    requests: int
    failures: int
    #: The replica's latency estimate in seconds (a peak-sensitive moving average of its
    #: answers' latencies), ``None`` before its first answer.
    latency: float | None = None

    @property
    def available(self) -> bool:
        """Whether the replica takes requests now (it is not out of rotation)."""
        return self.out_until is None
