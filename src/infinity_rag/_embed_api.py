"""The embedding methods of :class:`~infinity_rag.InfinityClient` (texts, streams, images,
audio, multi-vector and bit-packed), each: check, build the operation, hand it to the engine."""

from __future__ import annotations

import base64
import contextlib
import io
import struct
import wave
import zlib
from collections.abc import AsyncGenerator, AsyncIterable, Generator, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeAlias, TypedDict, Unpack, overload

from infinity_rag import _protocol as protocol
from infinity_rag import _stream, _vectors
from infinity_rag._engine import ProgressCallback
from infinity_rag._facade import ClientCore
from infinity_rag._flows import Flow, adrive, drive
from infinity_rag._inputs import (
    EncodingFormat,
    MediaInput,
    check_texts,
    to_media_uri,
)
from infinity_rag.errors import VectorKindError
from infinity_rag.types import (
    EmbeddingArrayResult,
    EmbeddingResult,
    MultiVectorArrayResult,
    MultiVectorResult,
    PackedEmbeddingArrayResult,
    PackedEmbeddingResult,
    VectorShape,
)

__all__ = ["EmbeddingMethods"]

_AnyIterable: TypeAlias = Iterable[str] | AsyncIterable[str]


class _MediaOpts(TypedDict, total=False):
    """The keywords of ``embed_images`` / ``embed_audio`` besides ``as_numpy`` (overloads)."""

    model: str | None
    encoding_format: EncodingFormat | None
    dimensions: int | None
    extra_body: Mapping[str, Any] | None
    max_concurrency: int | None


class _StreamOpts(_MediaOpts, total=False):
    batch_size: int | None


class _TextOpts(_StreamOpts, total=False):
    on_progress: ProgressCallback | None


class _MultiOpts(TypedDict, total=False):
    """The keywords of ``embed_multi_vector`` besides ``as_numpy`` (overloads)."""

    model: str | None
    modality: Literal["text", "image"]
    encoding_format: EncodingFormat | None
    extra_body: Mapping[str, Any] | None
    batch_size: int | None
    max_concurrency: int | None
    on_progress: ProgressCallback | None


class _PackedOpts(TypedDict, total=False):
    """The keywords of ``embed_packed`` besides ``as_numpy`` (overloads)."""

    model: str | None
    extra_body: Mapping[str, Any] | None
    batch_size: int | None
    max_concurrency: int | None
    on_progress: ProgressCallback | None


class EmbeddingMethods(ClientCore):
    """``embed`` and the other embedding methods (with their async twins)."""

    @overload
    def embed(
        self, texts: Sequence[str], *, as_numpy: Literal[False] = False, **kw: Unpack[_TextOpts]
    ) -> EmbeddingResult: ...
    @overload
    def embed(
        self, texts: Sequence[str], *, as_numpy: Literal[True], **kw: Unpack[_TextOpts]
    ) -> EmbeddingArrayResult: ...
    @overload
    def embed(
        self, texts: Sequence[str], *, as_numpy: bool, **kw: Unpack[_TextOpts]
    ) -> EmbeddingResult | EmbeddingArrayResult: ...
    def embed(
        self,
        texts: Sequence[str],
        *,
        model: str | None = None,
        encoding_format: EncodingFormat | None = None,
        dimensions: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
        max_concurrency: int | None = None,
        on_progress: ProgressCallback | None = None,
        as_numpy: bool = False,
    ) -> EmbeddingResult | EmbeddingArrayResult:
        """Embed ``texts``; vectors come back in input order.

        On the wire the default is base64 (float32; about 4x smaller and 10x faster to parse
        than JSON floats); ``encoding_format="float"`` asks for JSON floats. ``dimensions``
        truncates each vector (matryoshka models). More than ``batch_size`` texts are sent in
        chunks, ``max_concurrency`` at once. ``[]`` returns an empty result without a request.
        ``as_numpy=True`` returns an :class:`EmbeddingArrayResult`: one ``(n, d)`` float32
        array, decoded straight into place (needs the ``[numpy]`` extra).
        """
        job = self._embedder("text", model, encoding_format, dimensions, extra_body, batch_size,
                             as_numpy)  # fmt: skip
        return self._run(*job.call(check_texts(texts)), max_concurrency, on_progress)  # type: ignore[no-any-return]

    @overload
    async def aembed(
        self, texts: Sequence[str], *, as_numpy: Literal[False] = False, **kw: Unpack[_TextOpts]
    ) -> EmbeddingResult: ...
    @overload
    async def aembed(
        self, texts: Sequence[str], *, as_numpy: Literal[True], **kw: Unpack[_TextOpts]
    ) -> EmbeddingArrayResult: ...
    @overload
    async def aembed(
        self, texts: Sequence[str], *, as_numpy: bool, **kw: Unpack[_TextOpts]
    ) -> EmbeddingResult | EmbeddingArrayResult: ...
    async def aembed(
        self,
        texts: Sequence[str],
        *,
        model: str | None = None,
        encoding_format: EncodingFormat | None = None,
        dimensions: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
        max_concurrency: int | None = None,
        on_progress: ProgressCallback | None = None,
        as_numpy: bool = False,
    ) -> EmbeddingResult | EmbeddingArrayResult:
        """Async :meth:`embed`."""
        job = self._embedder("text", model, encoding_format, dimensions, extra_body, batch_size,
                             as_numpy)  # fmt: skip
        return await self._arun(*job.call(check_texts(texts)), max_concurrency, on_progress)

    @overload
    def embed_stream(
        self, texts: Iterable[str], *, as_numpy: Literal[False] = False, **kw: Unpack[_StreamOpts]
    ) -> Generator[EmbeddingResult, None, None]: ...
    @overload
    def embed_stream(
        self, texts: Iterable[str], *, as_numpy: Literal[True], **kw: Unpack[_StreamOpts]
    ) -> Generator[EmbeddingArrayResult, None, None]: ...
    @overload
    def embed_stream(
        self, texts: Iterable[str], *, as_numpy: bool, **kw: Unpack[_StreamOpts]
    ) -> Generator[EmbeddingResult | EmbeddingArrayResult, None, None]: ...
    def embed_stream(
        self,
        texts: Iterable[str],
        *,
        model: str | None = None,
        encoding_format: EncodingFormat | None = None,
        dimensions: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
        max_concurrency: int | None = None,
        as_numpy: bool = False,
    ) -> Generator[EmbeddingResult | EmbeddingArrayResult, None, None]:
        """Embed any iterable of texts (a generator over a corpus larger than memory) lazily:
        one result per chunk of ``batch_size`` texts, in input order.

        At most ``max_concurrency`` requests are in flight, and only their chunks are held.
        A bad item raises with its position in the whole stream, once the chunks before it
        have been yielded; its chunk is never sent. Leaving early (``break``, an exception,
        ``close()``) sends nothing more and waits for the requests already sent.
        """
        _stream.check_source(texts, allow_async=False)
        job = self._embedder("text", model, encoding_format, dimensions, extra_body, batch_size,
                             as_numpy)  # fmt: skip
        limit = self._concurrency(max_concurrency)
        return _stream.stream(self._submit_chunk(job), texts, job.size, limit)

    @overload
    def aembed_stream(
        self, texts: _AnyIterable, *, as_numpy: Literal[False] = False, **kw: Unpack[_StreamOpts]
    ) -> AsyncGenerator[EmbeddingResult, None]: ...
    @overload
    def aembed_stream(
        self, texts: _AnyIterable, *, as_numpy: Literal[True], **kw: Unpack[_StreamOpts]
    ) -> AsyncGenerator[EmbeddingArrayResult, None]: ...
    @overload
    def aembed_stream(
        self, texts: _AnyIterable, *, as_numpy: bool, **kw: Unpack[_StreamOpts]
    ) -> AsyncGenerator[EmbeddingResult | EmbeddingArrayResult, None]: ...
    def aembed_stream(
        self,
        texts: _AnyIterable,
        *,
        model: str | None = None,
        encoding_format: EncodingFormat | None = None,
        dimensions: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
        max_concurrency: int | None = None,
        as_numpy: bool = False,
    ) -> AsyncGenerator[EmbeddingResult | EmbeddingArrayResult, None]:
        """Async :meth:`embed_stream` (``async for``), over a sync or an async iterable.

        Leaving early cancels the requests in flight once the generator is closed: use
        ``contextlib.aclosing(...)`` to have that happen at once.
        """
        _stream.check_source(texts, allow_async=True)
        job = self._embedder("text", model, encoding_format, dimensions, extra_body, batch_size,
                             as_numpy)  # fmt: skip
        limit = self._concurrency(max_concurrency)
        return _stream.astream(self._start_chunk(job), texts, job.size, limit)

    @overload
    def embed_images(
        self,
        images: Sequence[MediaInput],
        *,
        as_numpy: Literal[False] = False,
        **kw: Unpack[_MediaOpts],
    ) -> EmbeddingResult: ...
    @overload
    def embed_images(
        self, images: Sequence[MediaInput], *, as_numpy: Literal[True], **kw: Unpack[_MediaOpts]
    ) -> EmbeddingArrayResult: ...
    @overload
    def embed_images(
        self, images: Sequence[MediaInput], *, as_numpy: bool, **kw: Unpack[_MediaOpts]
    ) -> EmbeddingResult | EmbeddingArrayResult: ...
    def embed_images(
        self,
        images: Sequence[MediaInput],
        *,
        model: str | None = None,
        encoding_format: EncodingFormat | None = None,
        dimensions: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        max_concurrency: int | None = None,
        as_numpy: bool = False,
    ) -> EmbeddingResult | EmbeddingArrayResult:
        """Embed images (URLs, data URIs, local paths, bytes or binary files) with a CLIP-style
        model; at most 32 go in one request."""
        job = self._embedder(
            "image", model, encoding_format, dimensions, extra_body, None, as_numpy
        )
        return self._run(*job.call(media_uris(images, "image")), max_concurrency, None)  # type: ignore[no-any-return]

    @overload
    async def aembed_images(
        self,
        images: Sequence[MediaInput],
        *,
        as_numpy: Literal[False] = False,
        **kw: Unpack[_MediaOpts],
    ) -> EmbeddingResult: ...
    @overload
    async def aembed_images(
        self, images: Sequence[MediaInput], *, as_numpy: Literal[True], **kw: Unpack[_MediaOpts]
    ) -> EmbeddingArrayResult: ...
    @overload
    async def aembed_images(
        self, images: Sequence[MediaInput], *, as_numpy: bool, **kw: Unpack[_MediaOpts]
    ) -> EmbeddingResult | EmbeddingArrayResult: ...
    async def aembed_images(
        self,
        images: Sequence[MediaInput],
        *,
        model: str | None = None,
        encoding_format: EncodingFormat | None = None,
        dimensions: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        max_concurrency: int | None = None,
        as_numpy: bool = False,
    ) -> EmbeddingResult | EmbeddingArrayResult:
        """Async :meth:`embed_images`."""
        job = self._embedder(
            "image", model, encoding_format, dimensions, extra_body, None, as_numpy
        )
        return await self._arun(*job.call(media_uris(images, "image")), max_concurrency, None)

    @overload
    def embed_audio(
        self,
        audio: Sequence[MediaInput],
        *,
        as_numpy: Literal[False] = False,
        **kw: Unpack[_MediaOpts],
    ) -> EmbeddingResult: ...
    @overload
    def embed_audio(
        self, audio: Sequence[MediaInput], *, as_numpy: Literal[True], **kw: Unpack[_MediaOpts]
    ) -> EmbeddingArrayResult: ...
    @overload
    def embed_audio(
        self, audio: Sequence[MediaInput], *, as_numpy: bool, **kw: Unpack[_MediaOpts]
    ) -> EmbeddingResult | EmbeddingArrayResult: ...
    def embed_audio(
        self,
        audio: Sequence[MediaInput],
        *,
        model: str | None = None,
        encoding_format: EncodingFormat | None = None,
        dimensions: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        max_concurrency: int | None = None,
        as_numpy: bool = False,
    ) -> EmbeddingResult | EmbeddingArrayResult:
        """Embed audio clips (URLs, data URIs, paths, bytes) with a CLAP-style model."""
        job = self._embedder(
            "audio", model, encoding_format, dimensions, extra_body, None, as_numpy
        )
        return self._run(*job.call(media_uris(audio, "audio")), max_concurrency, None)  # type: ignore[no-any-return]

    @overload
    async def aembed_audio(
        self,
        audio: Sequence[MediaInput],
        *,
        as_numpy: Literal[False] = False,
        **kw: Unpack[_MediaOpts],
    ) -> EmbeddingResult: ...
    @overload
    async def aembed_audio(
        self, audio: Sequence[MediaInput], *, as_numpy: Literal[True], **kw: Unpack[_MediaOpts]
    ) -> EmbeddingArrayResult: ...
    @overload
    async def aembed_audio(
        self, audio: Sequence[MediaInput], *, as_numpy: bool, **kw: Unpack[_MediaOpts]
    ) -> EmbeddingResult | EmbeddingArrayResult: ...
    async def aembed_audio(
        self,
        audio: Sequence[MediaInput],
        *,
        model: str | None = None,
        encoding_format: EncodingFormat | None = None,
        dimensions: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        max_concurrency: int | None = None,
        as_numpy: bool = False,
    ) -> EmbeddingResult | EmbeddingArrayResult:
        """Async :meth:`embed_audio`."""
        job = self._embedder(
            "audio", model, encoding_format, dimensions, extra_body, None, as_numpy
        )
        return await self._arun(*job.call(media_uris(audio, "audio")), max_concurrency, None)

    @overload
    def embed_multi_vector(
        self,
        inputs: Sequence[str] | Sequence[MediaInput],
        *,
        as_numpy: Literal[False] = False,
        **kw: Unpack[_MultiOpts],
    ) -> MultiVectorResult: ...
    @overload
    def embed_multi_vector(
        self,
        inputs: Sequence[str] | Sequence[MediaInput],
        *,
        as_numpy: Literal[True],
        **kw: Unpack[_MultiOpts],
    ) -> MultiVectorArrayResult: ...
    @overload
    def embed_multi_vector(
        self,
        inputs: Sequence[str] | Sequence[MediaInput],
        *,
        as_numpy: bool,
        **kw: Unpack[_MultiOpts],
    ) -> MultiVectorResult | MultiVectorArrayResult: ...
    def embed_multi_vector(
        self,
        inputs: Sequence[str] | Sequence[MediaInput],
        *,
        model: str | None = None,
        modality: Literal["text", "image"] = "text",
        encoding_format: EncodingFormat | None = None,
        extra_body: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
        max_concurrency: int | None = None,
        on_progress: ProgressCallback | None = None,
        as_numpy: bool = False,
    ) -> MultiVectorResult | MultiVectorArrayResult:
        """Embed texts (or, with ``modality="image"``, images) with a late-interaction model
        (ColBERT; ColPali for images): per input its matrix, one vector per token / patch.

        Returns a :class:`MultiVectorResult` (lists of floats) or, with ``as_numpy=True``, a
        :class:`MultiVectorArrayResult` (one float32 ``(tokens, dimensions)`` array per
        input). Base64 on the wire by default: Infinity flattens each matrix there, and the
        client cuts it into rows of the model's width, learned from a float answer on the
        first request to the model. A single-vector or bit-packed model raises
        :class:`~infinity_rag.errors.VectorKindError` naming the method to use.
        """
        job = self._embedder(modality, model, encoding_format, None, extra_body, batch_size,
                             as_numpy, "multi")  # fmt: skip
        return self._run(*job.call(checked_inputs(inputs, modality)), max_concurrency, on_progress)  # type: ignore[no-any-return]

    @overload
    async def aembed_multi_vector(
        self,
        inputs: Sequence[str] | Sequence[MediaInput],
        *,
        as_numpy: Literal[False] = False,
        **kw: Unpack[_MultiOpts],
    ) -> MultiVectorResult: ...
    @overload
    async def aembed_multi_vector(
        self,
        inputs: Sequence[str] | Sequence[MediaInput],
        *,
        as_numpy: Literal[True],
        **kw: Unpack[_MultiOpts],
    ) -> MultiVectorArrayResult: ...
    @overload
    async def aembed_multi_vector(
        self,
        inputs: Sequence[str] | Sequence[MediaInput],
        *,
        as_numpy: bool,
        **kw: Unpack[_MultiOpts],
    ) -> MultiVectorResult | MultiVectorArrayResult: ...
    async def aembed_multi_vector(
        self,
        inputs: Sequence[str] | Sequence[MediaInput],
        *,
        model: str | None = None,
        modality: Literal["text", "image"] = "text",
        encoding_format: EncodingFormat | None = None,
        extra_body: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
        max_concurrency: int | None = None,
        on_progress: ProgressCallback | None = None,
        as_numpy: bool = False,
    ) -> MultiVectorResult | MultiVectorArrayResult:
        """Async :meth:`embed_multi_vector`."""
        job = self._embedder(modality, model, encoding_format, None, extra_body, batch_size,
                             as_numpy, "multi")  # fmt: skip
        return await self._arun(*job.call(checked_inputs(inputs, modality)), max_concurrency,
                                on_progress)  # fmt: skip

    @overload
    def embed_packed(
        self, texts: Sequence[str], *, as_numpy: Literal[False] = False, **kw: Unpack[_PackedOpts]
    ) -> PackedEmbeddingResult: ...
    @overload
    def embed_packed(
        self, texts: Sequence[str], *, as_numpy: Literal[True], **kw: Unpack[_PackedOpts]
    ) -> PackedEmbeddingArrayResult: ...
    @overload
    def embed_packed(
        self, texts: Sequence[str], *, as_numpy: bool, **kw: Unpack[_PackedOpts]
    ) -> PackedEmbeddingResult | PackedEmbeddingArrayResult: ...
    def embed_packed(
        self,
        texts: Sequence[str],
        *,
        model: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
        max_concurrency: int | None = None,
        on_progress: ProgressCallback | None = None,
        as_numpy: bool = False,
    ) -> PackedEmbeddingResult | PackedEmbeddingArrayResult:
        """Embed ``texts`` with a model served with ``--embedding-dtype ubinary`` / ``binary``:
        bit-packed vectors (``dimensions / 8`` ints each), in input order.

        Returns a :class:`PackedEmbeddingResult` (Python ints) or, with ``as_numpy=True``, a
        :class:`PackedEmbeddingArrayResult` (``uint8`` for ubinary, ``int8`` for binary).
        Infinity refuses base64 for packed vectors, so they travel as JSON numbers; the
        packing is learned from that refusal, once per model. Bits are
        ``numpy.packbits(vector > 0)`` (see :data:`~infinity_rag.types.Packing`). A float or
        multi-vector model raises :class:`~infinity_rag.errors.VectorKindError`.
        """
        job = self._embedder("text", model, "float", None, extra_body, batch_size, as_numpy,
                             "packed")  # fmt: skip
        return self._run(*job.call(check_texts(texts)), max_concurrency, on_progress)  # type: ignore[no-any-return]

    @overload
    async def aembed_packed(
        self, texts: Sequence[str], *, as_numpy: Literal[False] = False, **kw: Unpack[_PackedOpts]
    ) -> PackedEmbeddingResult: ...
    @overload
    async def aembed_packed(
        self, texts: Sequence[str], *, as_numpy: Literal[True], **kw: Unpack[_PackedOpts]
    ) -> PackedEmbeddingArrayResult: ...
    @overload
    async def aembed_packed(
        self, texts: Sequence[str], *, as_numpy: bool, **kw: Unpack[_PackedOpts]
    ) -> PackedEmbeddingResult | PackedEmbeddingArrayResult: ...
    async def aembed_packed(
        self,
        texts: Sequence[str],
        *,
        model: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
        max_concurrency: int | None = None,
        on_progress: ProgressCallback | None = None,
        as_numpy: bool = False,
    ) -> PackedEmbeddingResult | PackedEmbeddingArrayResult:
        """Async :meth:`embed_packed`."""
        job = self._embedder("text", model, "float", None, extra_body, batch_size, as_numpy,
                             "packed")  # fmt: skip
        return await self._arun(*job.call(check_texts(texts)), max_concurrency, on_progress)

    def vector_shape(
        self,
        model: str | None = None,
        *,
        modality: protocol.Modality = "text",
        probe: str | MediaInput | None = None,
    ) -> VectorShape:
        """What ``model``'s vectors look like (width, multi-vector, bit-packed): learned from
        earlier answers, or now by embedding ``probe`` once (by default a short text, or for
        ``modality="image"`` / ``"audio"`` a tiny image / silent clip). Check it before
        ingesting; :meth:`InfinityClient.models` reports it too."""
        return drive(self._vector_shape_flow(model, modality, probe))

    async def avector_shape(
        self,
        model: str | None = None,
        *,
        modality: protocol.Modality = "text",
        probe: str | MediaInput | None = None,
    ) -> VectorShape:
        """Async :meth:`vector_shape`."""
        return await adrive(self._vector_shape_flow(model, modality, probe))

    def _vector_shape_flow(
        self, model: str | None, modality: protocol.Modality, probe: str | MediaInput | None
    ) -> Flow[Any, VectorShape]:
        """Both vector_shape methods, written once (see ``infinity_rag._flows``)."""
        shape = self._shapes.get(_vectors.model_key(model))
        if shape is not None:
            return shape
        job = self._embedder(modality, model, "float", None, None, None, False)
        with contextlib.suppress(VectorKindError):
            probed = checked_inputs([_probe(probe, modality)], modality)
            yield self._call(*job.call(probed), None, None)
        return self._learned(model)


def checked_inputs(inputs: Sequence[Any], modality: protocol.Modality) -> list[str]:
    """Texts checked as texts, media turned into URIs (each with its position on error)."""
    if modality == "text":
        return check_texts(inputs)
    if modality not in ("image", "audio"):
        raise ValueError(f"modality must be 'text' or 'image', got {modality!r}")
    return media_uris(inputs, modality)


def media_uris(items: Sequence[MediaInput], modality: Literal["image", "audio"]) -> list[str]:
    """Images or audio clips as the URIs Infinity takes (each with its position on error)."""
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise TypeError(f"{modality}s must be a list, got {type(items).__name__}")
    return [to_media_uri(item, i, modality) for i, item in enumerate(items)]


def _probe(probe: str | MediaInput | None, modality: protocol.Modality) -> str | MediaInput:
    """What :meth:`EmbeddingMethods.vector_shape` embeds: the caller's probe, else one of
    the modality's own (a text, an 8x8 grey PNG, a 0.1 s silent WAV)."""
    if probe is not None:
        return probe
    if modality == "image":
        return _PROBE_PNG
    if modality == "audio":
        return _PROBE_WAV
    return "infinity-rag vector shape probe"


def _png(size: int = 8) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x80" * 3 * size for _ in range(size))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _wav(seconds: float = 0.1, rate: int = 16000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()


_PROBE_PNG = "data:image/png;base64," + base64.b64encode(_png()).decode()
_PROBE_WAV = "data:audio/wav;base64," + base64.b64encode(_wav()).decode()
