"""What the framework integrations (LangChain, LlamaIndex, Haystack) share: the keyword
arguments of the client's calls their settings become.

Every embedder and reranker keeps the same settings under the same names (``dimensions``,
``raw_scores``, ``late_interaction``, ...); :func:`embed_options` and :func:`rerank_options`
read them, so that a setting added to the client's calls is passed on in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypedDict

from infinity_rag._inputs import EncodingFormat

__all__ = ["EmbedOptions", "RerankOptions", "embed_options", "rerank_options"]


class _CallSettings(Protocol):
    @property
    def extra_body(self) -> Mapping[str, Any] | None: ...
    @property
    def max_concurrency(self) -> int | None: ...


class _EmbedSettings(_CallSettings, Protocol):
    @property
    def encoding_format(self) -> EncodingFormat: ...
    @property
    def dimensions(self) -> int | None: ...


class _RerankSettings(_CallSettings, Protocol):
    @property
    def model(self) -> str: ...
    @property
    def raw_scores(self) -> bool: ...
    @property
    def batch_size(self) -> int | None: ...
    @property
    def late_interaction(self) -> bool | None: ...


class EmbedOptions(TypedDict):
    """The keyword arguments of ``InfinityClient.embed`` (and its image twin) an embedder
    passes on every call."""

    model: str
    encoding_format: EncodingFormat
    dimensions: int | None
    extra_body: Mapping[str, Any] | None
    max_concurrency: int | None


class RerankOptions(TypedDict):
    """The keyword arguments of ``InfinityClient.rerank`` a reranker passes."""

    model: str
    top_n: int | None
    raw_scores: bool
    extra_body: Mapping[str, Any] | None
    batch_size: int | None
    max_concurrency: int | None
    late_interaction: bool | None


def embed_options(model: str, settings: _EmbedSettings) -> EmbedOptions:
    """An embedder's options: ``model`` (each framework names it its own way) and the
    settings of the same names."""
    return EmbedOptions(
        model=model,
        encoding_format=settings.encoding_format,
        dimensions=settings.dimensions,
        extra_body=settings.extra_body,
        max_concurrency=settings.max_concurrency,
    )


def rerank_options(settings: _RerankSettings, top_n: int | None) -> RerankOptions:
    """A reranker's options: its settings, with ``top_n`` for this call."""
    return RerankOptions(
        model=settings.model,
        top_n=top_n,
        raw_scores=settings.raw_scores,
        extra_body=settings.extra_body,
        batch_size=settings.batch_size,
        max_concurrency=settings.max_concurrency,
        late_interaction=settings.late_interaction,
    )
