"""Result objects returned by :class:`infinity_rag.InfinityClient`.

They are plain frozen dataclasses (no validation cost): the client has already checked the
server's answer while parsing it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

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
    "ReplicaState",
    "RerankItem",
    "RerankResult",
    "Usage",
]

Capability = Literal["embed", "rerank", "classify", "image_embed", "audio_embed"]
"""What a served model can do, as ``GET /models`` lists it in ``ModelInfo.capabilities``."""


@dataclass(frozen=True, slots=True)
class Usage:
    """What the server reports it processed. Infinity counts characters unless it tokenizes."""

    prompt_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens, self.total_tokens + other.total_tokens
        )


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    """Vectors in the order of the inputs, as plain Python floats."""

    embeddings: list[list[float]]
    model: str
    usage: Usage = field(default_factory=Usage)

    def __len__(self) -> int:
        return len(self.embeddings)

    def __iter__(self) -> Iterator[list[float]]:
        return iter(self.embeddings)

    def __getitem__(self, index: int) -> list[float]:
        return self.embeddings[index]


@dataclass(frozen=True, slots=True, eq=False)
class EmbeddingArrayResult:
    """Vectors in the order of the inputs, as one ``(n, d)`` float32 ``numpy.ndarray``.

    What ``embed(..., as_numpy=True)`` returns. Rows are views into ``embeddings``; two
    results are equal when their arrays, models and usage are.
    """

    embeddings: NDArray[np.float32]
    model: str
    usage: Usage = field(default_factory=Usage)

    def __len__(self) -> int:
        return len(self.embeddings)

    def __iter__(self) -> Iterator[NDArray[np.float32]]:
        return iter(self.embeddings)

    def __getitem__(self, index: int) -> NDArray[np.float32]:
        row: NDArray[np.float32] = self.embeddings[index]
        return row

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EmbeddingArrayResult):
            return NotImplemented
        return (
            self.model == other.model
            and self.usage == other.usage
            and self.embeddings.shape == other.embeddings.shape
            and bool((self.embeddings == other.embeddings).all())
        )

    __hash__ = None  # type: ignore[assignment]  # an array is mutable


@dataclass(frozen=True, slots=True)
class RerankItem:
    """One scored document: ``index`` points into the documents that were sent."""

    index: int
    relevance_score: float
    document: str | None = None


@dataclass(frozen=True, slots=True)
class RerankResult:
    """Scored documents, most relevant first (ties keep the input order)."""

    results: list[RerankItem]
    model: str
    usage: Usage = field(default_factory=Usage)

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[RerankItem]:
        return iter(self.results)

    def __getitem__(self, index: int) -> RerankItem:
        return self.results[index]


@dataclass(frozen=True, slots=True)
class ClassLabel:
    """One label of a classified text, with its score."""

    label: str
    score: float


@dataclass(frozen=True, slots=True)
class ClassifyResult:
    """For each input text (in order), its labels with scores, highest first."""

    results: list[list[ClassLabel]]
    model: str
    usage: Usage = field(default_factory=Usage)

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[list[ClassLabel]]:
        return iter(self.results)

    def __getitem__(self, index: int) -> list[ClassLabel]:
        return self.results[index]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A served model as ``GET /models`` describes it.

    ``capabilities`` is empty when the server does not say (a LiteLLM proxy, for example).
    """

    id: str
    capabilities: frozenset[str] = frozenset()
    backend: str | None = None
    owned_by: str | None = None
    created: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


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

    @property
    def available(self) -> bool:
        """Whether the replica takes requests now (it is not out of rotation)."""
        return self.out_until is None
