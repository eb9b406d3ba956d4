"""The shared client: every Infinity route, sync and async, over pooled httpx connections.

What to send and how to read the answer is decided in :mod:`infinity_rag._protocol`; this
module only performs the I/O: it sends a plan's requests (at most ``max_concurrency`` at once),
retries what may pass, and combines the parts in input order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import ssl
import sys
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Callable,
    Generator,
    Iterable,
    Mapping,
    Sequence,
)
from concurrent.futures import ThreadPoolExecutor, as_completed
from types import TracebackType
from typing import Any, Literal, Self, TypeAlias, TypedDict, TypeVar, Unpack, overload
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import SecretStr

from infinity_rag import _maxsim, _stream, _vectors
from infinity_rag import _protocol as protocol
from infinity_rag._arrays import require_numpy
from infinity_rag._config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RERANK_BATCH_SIZE,
    DEFAULT_TIMEOUT,
    RetryPolicy,
    http_clients_cannot_travel,
    resolve_api_key,
    resolve_base_urls,
    server_root,
)
from infinity_rag._inputs import (
    MAX_ITEMS_PER_REQUEST,
    MAX_MEDIA_ITEMS_PER_REQUEST,
    EncodingFormat,
    MediaInput,
    check_batch_size,
    check_encoding_format,
    check_optional_positive_int,
    check_positive_int,
    check_query,
    check_texts,
    to_media_uri,
)
from infinity_rag._loops import LoopClients
from infinity_rag._pool import (
    DEFAULT_MAX_REPLICA_BACKOFF,
    DEFAULT_REPLICA_BACKOFF,
    Attempts,
    Replica,
    ReplicaPool,
    check_backoff,
)
from infinity_rag.errors import (
    InfinityConnectionError,
    InfinityError,
    InfinityTimeoutError,
    InvalidResponseError,
    VectorKindError,
)
from infinity_rag.types import (
    ClassifyResult,
    EmbeddingArrayResult,
    EmbeddingResult,
    ModelInfo,
    MultiVectorArrayResult,
    MultiVectorResult,
    PackedEmbeddingArrayResult,
    PackedEmbeddingResult,
    ReplicaState,
    RerankResult,
    VectorShape,
)

__all__ = ["InfinityClient"]

logger = logging.getLogger("infinity_rag")

T = TypeVar("T")
R = TypeVar("R")

#: Called with the number of inputs a finished request carried (drives progress bars).
ProgressCallback = Callable[[int], None]

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


class InfinityClient:
    """A client for an Infinity server (``infinity_emb v2``), sync and async.

    One instance holds one pooled ``httpx.Client`` and, per event loop, one
    ``httpx.AsyncClient`` (closed when its loop shuts down), both made on first use. Share it
    between threads, tasks and framework classes; close it with ``close()`` / ``aclose()`` or
    a ``with`` block. Given several URLs (replicas), it sends each request to the least busy
    one and leaves failed ones out of rotation for a while (see :meth:`replicas`). It
    pickles, for worker processes, as its settings (the API key included).

    Setup:
        ```bash
        pip install infinity-rag
        export INFINITY_API_BASE=http://localhost:7997   # the server's URL (with its prefix)
        export INFINITY_API_KEY=...                      # if the server runs with --api-key
        ```

    Key init args (all optional, keyword only):
        base_url: the server's URL including any ``--url-prefix``, or a list of replicas'
            URLs (a string may list several, comma-separated); defaults to
            ``INFINITY_API_BASE``, then ``INFINITY_API_URL``, then ``http://localhost:7997``.
        api_key: sent as ``Authorization: Bearer``; defaults to ``INFINITY_API_KEY``.
        timeout: seconds (or an ``httpx.Timeout``) for each request.
        max_retries: retries of connection errors, timeouts, 429 and 5xx, with backoff.
        batch_size: inputs per embedding / classification request (at most 2048).
        rerank_batch_size: documents per rerank request (at most 2048).
        max_concurrency: requests of one call in flight at once.
        headers: extra headers for every request.
        verify: TLS verification: ``True``, ``False``, a CA bundle path or an ``ssl.SSLContext``.
        http_client / http_async_client: your own httpx clients (never closed by this one;
            a client holding them cannot be pickled).
        replica_backoff: with several replicas, seconds a failed one is left out of
            rotation; doubled with each consecutive failure, reset by a success.
        max_replica_backoff: the longest a failed replica is left out.

    Embed:
        ```python
        from infinity_rag import InfinityClient

        with InfinityClient(base_url="http://localhost:7997") as client:
            result = client.embed(["hello", "world"], model="BAAI/bge-small-en-v1.5")
            vectors = result.embeddings            # list[list[float]], in input order
            ranked = client.rerank("question?", ["doc a", "doc b"], top_n=1)
        ```

    Async:
        ```python
        async with InfinityClient() as client:
            result = await client.aembed(["hello", "world"])
        ```
    """

    def __init__(
        self,
        *,
        base_url: str | Sequence[str] | None = None,
        api_key: str | SecretStr | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        batch_size: int = DEFAULT_BATCH_SIZE,
        rerank_batch_size: int = DEFAULT_RERANK_BATCH_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        headers: Mapping[str, str] | None = None,
        verify: Any = True,
        http_client: httpx.Client | None = None,
        http_async_client: httpx.AsyncClient | None = None,
        replica_backoff: float = DEFAULT_REPLICA_BACKOFF,
        max_replica_backoff: float = DEFAULT_MAX_REPLICA_BACKOFF,
    ) -> None:
        self.base_urls = resolve_base_urls(base_url)
        self.base_url = self.base_urls[0]
        self.api_key = resolve_api_key(api_key)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        self.timeout = timeout
        self.retry = RetryPolicy(max_retries=max_retries)
        self.batch_size = check_batch_size(batch_size, "batch_size", MAX_ITEMS_PER_REQUEST)
        self.rerank_batch_size = check_batch_size(
            rerank_batch_size, "rerank_batch_size", MAX_ITEMS_PER_REQUEST
        )
        self.max_concurrency = check_positive_int(max_concurrency, "max_concurrency")
        check_backoff(replica_backoff, max_replica_backoff)
        self.verify = _tls_verify(verify)
        # What a pickled copy is rebuilt from (in another process): settings, never sockets.
        self._settings: dict[str, Any] = {
            "base_url": list(self.base_urls),
            "api_key": self.api_key,
            "timeout": timeout,
            "max_retries": max_retries,
            "batch_size": self.batch_size,
            "rerank_batch_size": self.rerank_batch_size,
            "max_concurrency": self.max_concurrency,
            "headers": dict(headers) if headers else None,
            "verify": verify,
            "replica_backoff": replica_backoff,
            "max_replica_backoff": max_replica_backoff,
        }
        self._pool = ReplicaPool(
            [Replica(url, server_root(url), _masked(url)) for url in self.base_urls],
            backoff=replica_backoff,
            max_backoff=max_replica_backoff,
        )
        self._headers = {"Accept": "application/json", **(headers or {})}
        if self.api_key is not None:
            self._headers["Authorization"] = f"Bearer {self.api_key.get_secret_value()}"
        # What each model's vectors look like, learned from its answers (see _vectors).
        self._shapes = _vectors.ShapeCache()
        self._injected_client = http_client
        self._injected_async_client = http_async_client
        self._sync_client: httpx.Client | None = None
        self._sync_lock = threading.Lock()
        # An httpx.AsyncClient's connections belong to the loop that opened them, so each
        # event loop (a notebook's, each asyncio.run) gets its own pool, closed when the loop
        # shuts down.
        self._async_clients = LoopClients(
            lambda: httpx.AsyncClient(timeout=self.timeout, verify=self._tls())
        )
        # One TLS context for every pool of this client: httpx builds one per client otherwise
        # (~50 ms each, paid again by each event loop's pool).
        self._tls_context: ssl.SSLContext | None = None
        self._tls_lock = threading.Lock()

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        # A client is a shared resource (connection pools, locks): copies of the objects
        # that hold it (pydantic's model_copy(deep=True), copy.deepcopy) share it too.
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (for a worker process: multiprocessing, Ray, Spark) as its settings.

        The copy carries the API key (a worker must authenticate) and builds its own
        connection pools and replica states when first used. Injected httpx clients and an
        ``ssl.SSLContext`` cannot travel: pass settings instead.
        """
        if self._injected_client is not None or self._injected_async_client is not None:
            raise http_clients_cannot_travel("an InfinityClient")
        if not self.can_be_pickled():
            raise TypeError(
                "an InfinityClient with verify=<ssl.SSLContext> cannot be pickled (an "
                "SSLContext does not cross processes); pass verify as a CA bundle path instead"
            )
        return (_rebuild_client, (self._settings,))

    def can_be_pickled(self) -> bool:
        """Whether this client can be pickled (no injected httpx client, no SSLContext)."""
        return (
            self._injected_client is None
            and self._injected_async_client is None
            and not isinstance(self._settings["verify"], ssl.SSLContext)
        )

    def __repr__(self) -> str:
        key = "'**********'" if self.api_key is not None else "None"
        urls = self._pool.replicas
        shown = urls[0].shown if len(urls) == 1 else [replica.shown for replica in urls]
        return f"InfinityClient(base_url={shown!r}, api_key={key})"

    def replicas(self) -> list[ReplicaState]:
        """Each replica's state now (URL, requests in flight, failures, out of rotation until
        when), in the order of ``base_url``: for logs and dashboards."""
        return self._pool.states()

    # --- embeddings --------------------------------------------------------------------------

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
        texts = check_texts(texts)
        prepare, _ = self._embedder(
            "text", model, encoding_format, dimensions, extra_body, batch_size, as_numpy
        )
        return self._run(prepare(texts), max_concurrency, on_progress)  # type: ignore[no-any-return]

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
        texts = check_texts(texts)
        prepare, _ = self._embedder(
            "text", model, encoding_format, dimensions, extra_body, batch_size, as_numpy
        )
        return await self._arun(prepare(texts), max_concurrency, on_progress)

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
        prepare, size = self._embedder(
            "text", model, encoding_format, dimensions, extra_body, batch_size, as_numpy
        )
        limit = self._concurrency(max_concurrency, sys.maxsize)
        return _stream.stream(self._call, texts, prepare, size, limit)

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
        prepare, size = self._embedder(
            "text", model, encoding_format, dimensions, extra_body, batch_size, as_numpy
        )
        limit = self._concurrency(max_concurrency, sys.maxsize)
        return _stream.astream(self._acall, texts, prepare, size, limit)

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
        inputs = _media(images, "image")
        prepare, _ = self._embedder(
            "image", model, encoding_format, dimensions, extra_body, None, as_numpy
        )
        return self._run(prepare(inputs), max_concurrency, None)  # type: ignore[no-any-return]

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
        inputs = _media(images, "image")
        prepare, _ = self._embedder(
            "image", model, encoding_format, dimensions, extra_body, None, as_numpy
        )
        return await self._arun(prepare(inputs), max_concurrency, None)

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
        inputs = _media(audio, "audio")
        prepare, _ = self._embedder(
            "audio", model, encoding_format, dimensions, extra_body, None, as_numpy
        )
        return self._run(prepare(inputs), max_concurrency, None)  # type: ignore[no-any-return]

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
        inputs = _media(audio, "audio")
        prepare, _ = self._embedder(
            "audio", model, encoding_format, dimensions, extra_body, None, as_numpy
        )
        return await self._arun(prepare(inputs), max_concurrency, None)

    def _embedder(
        self,
        modality: protocol.Modality,
        model: str | None,
        encoding_format: EncodingFormat | None,
        dimensions: int | None,
        extra_body: Mapping[str, Any] | None,
        batch_size: int | None,
        as_numpy: bool,
        target: _vectors.Target = "single",
    ) -> tuple[Callable[[list[str]], protocol.Plan[Any, Any]], int]:
        """The arguments checked, as a function from inputs to their plan, and the chunk size."""
        if modality == "text":
            size = self.batch_size if batch_size is None else batch_size
            size = check_batch_size(size, "batch_size", MAX_ITEMS_PER_REQUEST)
        else:
            size = min(self.batch_size, MAX_MEDIA_ITEMS_PER_REQUEST)
        if as_numpy:
            require_numpy()
        prepare = functools.partial(
            _vectors.plan_vectors,
            target=target,
            modality=modality,
            model=model,
            encoding_format=check_encoding_format(encoding_format or "base64"),
            dimensions=check_optional_positive_int(dimensions, "dimensions"),
            extra_body=extra_body,
            batch_size=size,
            as_numpy=bool(as_numpy),
            shapes=self._shapes,
        )
        return prepare, size

    # --- multi-vector and bit-packed embeddings ----------------------------------------------

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
        prepare, _ = self._embedder(
            modality, model, encoding_format, None, extra_body, batch_size, as_numpy, "multi"
        )
        plan = prepare(_checked_inputs(inputs, modality))
        return self._run(plan, max_concurrency, on_progress)  # type: ignore[no-any-return]

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
        prepare, _ = self._embedder(
            modality, model, encoding_format, None, extra_body, batch_size, as_numpy, "multi"
        )
        plan = prepare(_checked_inputs(inputs, modality))
        return await self._arun(plan, max_concurrency, on_progress)

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
        prepare, _ = self._embedder(
            "text", model, "float", None, extra_body, batch_size, as_numpy, "packed"
        )
        return self._run(prepare(check_texts(texts)), max_concurrency, on_progress)  # type: ignore[no-any-return]

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
        prepare, _ = self._embedder(
            "text", model, "float", None, extra_body, batch_size, as_numpy, "packed"
        )
        return await self._arun(prepare(check_texts(texts)), max_concurrency, on_progress)

    def vector_shape(
        self,
        model: str | None = None,
        *,
        modality: protocol.Modality = "text",
        probe: str | MediaInput = "infinity-rag vector shape probe",
    ) -> VectorShape:
        """What ``model``'s vectors look like (width, multi-vector, bit-packed): learned from
        earlier answers, or now by embedding ``probe`` once (an image or audio clip for a
        model without text). Check it before ingesting; :meth:`models` reports it too."""
        shape = self._shapes.get(_vectors.model_key(model))
        if shape is not None:
            return shape
        prepare, _ = self._embedder(modality, model, "float", None, None, None, False)
        with contextlib.suppress(VectorKindError):
            self._run(prepare(_checked_inputs([probe], modality)), None, None)
        return self._learned(model)

    async def avector_shape(
        self,
        model: str | None = None,
        *,
        modality: protocol.Modality = "text",
        probe: str | MediaInput = "infinity-rag vector shape probe",
    ) -> VectorShape:
        """Async :meth:`vector_shape`."""
        shape = self._shapes.get(_vectors.model_key(model))
        if shape is not None:
            return shape
        prepare, _ = self._embedder(modality, model, "float", None, None, None, False)
        with contextlib.suppress(VectorKindError):
            await self._arun(prepare(_checked_inputs([probe], modality)), None, None)
        return self._learned(model)

    def _learned(self, model: str | None) -> VectorShape:
        shape = self._shapes.get(_vectors.model_key(model))
        if shape is None:
            raise InvalidResponseError(f"embedding a probe did not tell the shape of {model!r}")
        return shape

    # --- rerank ------------------------------------------------------------------------------

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        model: str | None = None,
        top_n: int | None = None,
        raw_scores: bool = False,
        return_documents: bool = False,
        extra_body: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
        max_concurrency: int | None = None,
        late_interaction: bool | None = None,
    ) -> RerankResult:
        """Score ``documents`` against ``query``, most relevant first.

        ``top_n`` keeps the best n (``None``: all; larger than the number of documents: all).
        More than ``rerank_batch_size`` documents (the server takes 2048) are split, scored
        and merged; ``top_n`` applies to the merged list. ``[]`` returns an empty result
        without a request.

        A late-interaction model (ColBERT: a matrix per text, which Infinity cannot
        ``/rerank``) is reranked on the client by MaxSim over the token matrices (needs
        numpy): the query's matrix first, then the documents' in chunks of ``batch_size``
        (default: the client's embedding ``batch_size``). Its scores are the mean over the
        query's token vectors of the best cosine with a document token, in [-1, 1];
        ``raw_scores=True`` gives ColBERT's sum instead (see ``docs/vector_kinds.md``).
        ``late_interaction``: ``True`` always uses MaxSim, ``False`` always ``/rerank``;
        ``None`` (the default) uses MaxSim for a model known to give matrices, else asks
        ``/rerank`` and switches to MaxSim when Infinity refuses it for a model that only
        embeds (once per client: the client then knows the model). A cross-encoder costs
        nothing more.
        """
        plan = self._rerank_plan(
            query,
            documents,
            model,
            top_n,
            raw_scores,
            return_documents,
            extra_body,
            batch_size,
            late_interaction,
        )
        return self._run(plan, max_concurrency, None)

    async def arerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        model: str | None = None,
        top_n: int | None = None,
        raw_scores: bool = False,
        return_documents: bool = False,
        extra_body: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
        max_concurrency: int | None = None,
        late_interaction: bool | None = None,
    ) -> RerankResult:
        """Async :meth:`rerank`."""
        plan = self._rerank_plan(
            query,
            documents,
            model,
            top_n,
            raw_scores,
            return_documents,
            extra_body,
            batch_size,
            late_interaction,
        )
        return await self._arun(plan, max_concurrency, None)

    def _rerank_plan(
        self,
        query: str,
        documents: Sequence[str],
        model: str | None,
        top_n: int | None,
        raw_scores: bool,
        return_documents: bool,
        extra_body: Mapping[str, Any] | None,
        batch_size: int | None,
        late_interaction: bool | None,
    ) -> protocol.Plan[Any, RerankResult]:
        if late_interaction is not None and not isinstance(late_interaction, bool):
            raise TypeError(
                f"late_interaction must be True, False or None, got {late_interaction!r}"
            )
        sizes = (
            (self.rerank_batch_size, self.batch_size) if batch_size is None else (batch_size,) * 2
        )
        return _maxsim.plan_rerank(
            check_query(query),
            check_texts(documents, "documents"),
            model=model,
            top_n=check_optional_positive_int(top_n, "top_n"),
            raw_scores=bool(raw_scores),
            return_documents=bool(return_documents),
            extra_body=extra_body,
            rerank_batch_size=check_batch_size(sizes[0], "batch_size", MAX_ITEMS_PER_REQUEST),
            embed_batch_size=check_batch_size(sizes[1], "batch_size", MAX_ITEMS_PER_REQUEST),
            late_interaction=late_interaction,
            shapes=self._shapes,
        )

    # --- classify ----------------------------------------------------------------------------

    def classify(
        self,
        texts: Sequence[str],
        *,
        model: str | None = None,
        raw_scores: bool = False,
        extra_body: Mapping[str, Any] | None = None,
        max_concurrency: int | None = None,
    ) -> ClassifyResult:
        """Classify ``texts``: for each, its labels and scores, highest first."""
        plan = protocol.plan_classify(
            check_texts(texts),
            model=model,
            raw_scores=bool(raw_scores),
            extra_body=extra_body,
            batch_size=self.batch_size,
        )
        return self._run(plan, max_concurrency, None)

    async def aclassify(
        self,
        texts: Sequence[str],
        *,
        model: str | None = None,
        raw_scores: bool = False,
        extra_body: Mapping[str, Any] | None = None,
        max_concurrency: int | None = None,
    ) -> ClassifyResult:
        """Async :meth:`classify`."""
        plan = protocol.plan_classify(
            check_texts(texts),
            model=model,
            raw_scores=bool(raw_scores),
            extra_body=extra_body,
            batch_size=self.batch_size,
        )
        return await self._arun(plan, max_concurrency, None)

    # --- models and health -------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        """The served models with their capabilities (``embed``, ``rerank``, ``classify``, ...)
        and, in ``vectors``, what this client learned about each model's vectors."""
        return self._with_shapes(self._run(protocol.plan_models(), None, None))

    async def amodels(self) -> list[ModelInfo]:
        """Async :meth:`models`."""
        return self._with_shapes(await self._arun(protocol.plan_models(), None, None))

    def _with_shapes(self, models: list[ModelInfo]) -> list[ModelInfo]:
        shapes = self._shapes.snapshot()
        default = shapes.get("") if len(models) == 1 else None
        return [
            dataclasses.replace(info, vectors=shapes.get(info.id, default))
            if info.id in shapes or default is not None
            else info
            for info in models
        ]

    def health(self) -> bool:
        """``True`` if ``GET /health`` answers 200 on a replica (one try each); else raises
        the last :class:`InfinityError`, naming every URL tried."""
        return self._call(protocol.plan_health().calls[0], self._health_attempts())

    async def ahealth(self) -> bool:
        """Async :meth:`health`."""
        return await self._acall(protocol.plan_health().calls[0], self._health_attempts())

    def _health_attempts(self) -> Attempts:
        return Attempts(self._pool, self.retry, every_replica_once=True)

    def wait_until_ready(self, timeout: float = 60.0, interval: float = 0.5) -> None:
        """Poll ``/health`` until the server answers (models loaded) or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.health()
                return
            except InfinityError as error:
                _raise_if_not_ready_by(deadline, timeout, error, self._shown_roots())
            time.sleep(interval)

    async def await_until_ready(self, timeout: float = 60.0, interval: float = 0.5) -> None:
        """Async :meth:`wait_until_ready`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.ahealth()
                return
            except InfinityError as error:
                _raise_if_not_ready_by(deadline, timeout, error, self._shown_roots())
            await asyncio.sleep(interval)

    # --- running plans -----------------------------------------------------------------------

    def _run(
        self,
        plan: protocol.Plan[T, R],
        max_concurrency: int | None,
        on_progress: ProgressCallback | None,
    ) -> R:
        calls = plan.calls
        self._concurrency(max_concurrency, 1)  # checked before anything is sent
        try:
            if plan.first_alone and calls:
                first = self._run_calls(calls[:1], 1, on_progress)
                rest = self._run_calls(calls[1:], max_concurrency, on_progress)
                return plan.combine(first + rest)
            return plan.combine(self._run_calls(calls, max_concurrency, on_progress))
        except protocol.Replan as replan:  # an answer showed the operation takes other requests
            result: R = self._run(replan.plan, max_concurrency, on_progress)
            return result

    def _run_calls(
        self,
        calls: list[protocol.Call[T]],
        max_concurrency: int | None,
        on_progress: ProgressCallback | None,
    ) -> list[T]:
        limit = self._concurrency(max_concurrency, len(calls))
        if limit <= 1:
            parts = []
            for call in calls:
                parts.append(self._call(call))
                if on_progress:
                    on_progress(call.items)
            return parts
        # httpx.Client is thread-safe: the pool's threads share its connections.
        with ThreadPoolExecutor(limit, thread_name_prefix="infinity-rag") as pool:
            futures = {pool.submit(self._call, call): i for i, call in enumerate(calls)}
            results: list[Any] = [None] * len(calls)
            try:
                for future in as_completed(futures):
                    i = futures[future]
                    results[i] = future.result()
                    if on_progress:
                        on_progress(calls[i].items)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return results

    async def _arun(
        self,
        plan: protocol.Plan[T, R],
        max_concurrency: int | None,
        on_progress: ProgressCallback | None,
    ) -> R:
        calls = plan.calls
        self._concurrency(max_concurrency, 1)  # checked before anything is sent
        try:
            if plan.first_alone and calls:
                first = await self._arun_calls(calls[:1], 1, on_progress)
                rest = await self._arun_calls(calls[1:], max_concurrency, on_progress)
                return plan.combine(first + rest)
            return plan.combine(await self._arun_calls(calls, max_concurrency, on_progress))
        except protocol.Replan as replan:  # an answer showed the operation takes other requests
            result: R = await self._arun(replan.plan, max_concurrency, on_progress)
            return result

    async def _arun_calls(
        self,
        calls: list[protocol.Call[T]],
        max_concurrency: int | None,
        on_progress: ProgressCallback | None,
    ) -> list[T]:
        limit = self._concurrency(max_concurrency, len(calls))
        if limit <= 1:
            parts = []
            for call in calls:
                parts.append(await self._acall(call))
                if on_progress:
                    on_progress(call.items)
            return parts
        gate = asyncio.Semaphore(limit)

        async def run_one(call: protocol.Call[T]) -> T:
            async with gate:
                part = await self._acall(call)
            if on_progress:
                on_progress(call.items)
            return part

        try:
            # A TaskGroup cancels the remaining requests as soon as one fails.
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(run_one(call)) for call in calls]
        except BaseExceptionGroup as group_error:
            raise group_error.exceptions[0] from None
        return [task.result() for task in tasks]

    def _shown_roots(self) -> str:
        return ", ".join(server_root(replica.shown) for replica in self._pool.replicas)

    def _concurrency(self, override: int | None, calls: int) -> int:
        limit = self.max_concurrency if override is None else override
        return min(check_positive_int(limit, "max_concurrency"), calls)

    def _call(self, call: protocol.Call[T], attempts: Attempts | None = None) -> T:
        """Send one request, retrying what may pass (on another replica when there is one),
        and any :class:`~infinity_rag._protocol.Followup` its answer asks for."""
        part: Any = self._attempt(call, attempts)
        while isinstance(part, protocol.Followup):
            part = part.then(self._attempt(part.call, None))
        return part  # type: ignore[no-any-return]

    async def _acall(self, call: protocol.Call[T], attempts: Attempts | None = None) -> T:
        """Async :meth:`_call`."""
        part: Any = await self._aattempt(call, attempts)
        while isinstance(part, protocol.Followup):
            part = part.then(await self._aattempt(part.call, None))
        return part  # type: ignore[no-any-return]

    def _attempt(self, call: protocol.Call[T], attempts: Attempts | None) -> T:
        """Send one request, retrying what may pass (on another replica when there is one)."""
        attempts = attempts or Attempts(self._pool, self.retry)
        while True:
            replica = attempts.start()
            try:
                part = self._send(call, replica)
            except InfinityError as error:
                delay = attempts.failed(error, self._retry_logger(call))
            except BaseException:
                attempts.abandoned()
                raise
            else:
                attempts.succeeded()
                return part
            if delay:
                time.sleep(delay)

    async def _aattempt(self, call: protocol.Call[T], attempts: Attempts | None) -> T:
        """Async :meth:`_attempt`."""
        attempts = attempts or Attempts(self._pool, self.retry)
        while True:
            replica = attempts.start()
            try:
                part = await self._asend(call, replica)
            except InfinityError as error:
                delay = attempts.failed(error, self._retry_logger(call))
            except BaseException:
                attempts.abandoned()
                raise
            else:
                attempts.succeeded()
                return part
            if delay:
                await asyncio.sleep(delay)

    def _retry_logger(
        self, call: protocol.Call[Any]
    ) -> Callable[[InfinityError, int, float], None]:
        def log(error: InfinityError, retry: int, delay: float) -> None:
            logger.warning(
                "Infinity %s %s failed (%s); retry %d of %d in %.2fs",
                call.method,
                call.route,
                error,
                retry,
                self.retry.max_retries,
                delay,
            )

        return log

    def _send(self, call: protocol.Call[T], replica: Replica) -> T:
        url, shown = self._url(call, replica)
        started = time.perf_counter()
        try:
            response = self._http().request(
                call.method, url, json=call.body, headers=self._headers, timeout=self.timeout
            )
        except httpx.TransportError as exc:
            raise _transport_error(shown, exc, self.timeout) from exc
        return self._read(call, response, shown, started)

    async def _asend(self, call: protocol.Call[T], replica: Replica) -> T:
        url, shown = self._url(call, replica)
        started = time.perf_counter()
        try:
            response = await self._async_http().request(
                call.method, url, json=call.body, headers=self._headers, timeout=self.timeout
            )
        except httpx.TransportError as exc:
            raise _transport_error(shown, exc, self.timeout) from exc
        return self._read(call, response, shown, started)

    def _read(
        self, call: protocol.Call[T], response: httpx.Response, shown: str, started: float
    ) -> T:
        _log_response(call, response, time.perf_counter() - started)
        # The read body replaces httpx's stream, which holds the response in a reference
        # cycle: each answer is then freed at once, not by the cyclic GC (streams of a
        # million texts keep a flat memory).
        response.stream = httpx.ByteStream(response.content)
        return protocol.read_response(
            call,
            response.status_code,
            self._without_key(response.status_code, response.content),
            shown,
            retry_after=response.headers.get("retry-after"),
        )

    def _without_key(self, status_code: int, content: bytes) -> bytes:
        """An error body with our own key masked (a proxy may echo the request's headers)."""
        if status_code < 300 or self.api_key is None:
            return content
        return content.replace(self.api_key.get_secret_value().encode(), b"**********")

    @staticmethod
    def _url(call: protocol.Call[Any], replica: Replica) -> tuple[str, str]:
        """The URL to request and how it is shown (password masked)."""
        if call.outside_prefix:
            return replica.root_url + call.route, server_root(replica.shown) + call.route
        return replica.base_url + call.route, replica.shown + call.route

    # --- connection pools --------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        if self._injected_client is not None:
            return self._injected_client
        if self._sync_client is None:
            with self._sync_lock:
                if self._sync_client is None:
                    self._sync_client = httpx.Client(timeout=self.timeout, verify=self._tls())
        return self._sync_client

    def _tls(self) -> ssl.SSLContext:
        """The client's TLS context, built on first use and shared by its pools."""
        if self._tls_context is None:
            with self._tls_lock:
                if self._tls_context is None:
                    self._tls_context = httpx.create_ssl_context(verify=self.verify)
        return self._tls_context

    def _async_http(self) -> httpx.AsyncClient:
        if self._injected_async_client is not None:
            return self._injected_async_client
        return self._async_clients.get()

    def close(self) -> None:
        """Close the pooled sync connections (injected clients are left open)."""
        if self._sync_client is not None:
            self._sync_client.close()
            self._sync_client = None

    async def aclose(self) -> None:
        """Close the pooled connections of the running event loop and the sync ones."""
        client = self._async_clients.pop()
        if client is not None:
            await client.aclose()
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


def _rebuild_client(settings: dict[str, Any]) -> InfinityClient:
    return InfinityClient(**settings)


def _checked_inputs(inputs: Sequence[Any], modality: protocol.Modality) -> list[str]:
    """Texts checked as texts, media turned into URIs (each with its position on error)."""
    if modality == "text":
        return check_texts(inputs)
    if modality not in ("image", "audio"):
        raise ValueError(f"modality must be 'text' or 'image', got {modality!r}")
    return _media(inputs, modality)


def _media(items: Sequence[MediaInput], modality: Literal["image", "audio"]) -> list[str]:
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise TypeError(f"{modality}s must be a list, got {type(items).__name__}")
    return [to_media_uri(item, i, modality) for i, item in enumerate(items)]


def _tls_verify(verify: Any) -> Any:
    """A CA bundle path (str or os.PathLike, file or folder) as an SSLContext: httpx 0.28
    deprecates ``verify=<str>`` and does not take a Path."""
    if isinstance(verify, str | os.PathLike):
        path = os.fspath(verify)
        if os.path.isdir(path):
            return ssl.create_default_context(capath=path)
        return ssl.create_default_context(cafile=path)
    return verify


def _masked(url: str) -> str:
    """``url`` with any password replaced, as httpx shows URLs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":[secure]@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _transport_error(
    url: str, exc: httpx.TransportError, timeout: float | httpx.Timeout | None
) -> InfinityConnectionError:
    if isinstance(exc, httpx.TimeoutException):
        return _timeout_error(url, exc, timeout)
    return _connection_error(url, exc)


def _timeout_error(
    url: str, exc: httpx.TimeoutException, timeout: float | httpx.Timeout | None
) -> InfinityTimeoutError:
    kind = type(exc).__name__
    limit = f" ({timeout:g} s)" if isinstance(timeout, int | float) else ""
    return InfinityTimeoutError(f"{kind}: no answer from {url} within the timeout{limit}", url=url)


def _cause_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _connection_error(url: str, exc: httpx.TransportError) -> InfinityConnectionError:
    chain = _cause_chain(exc)
    # httpx's async ReadError on a reset connection has an empty message: name the cause.
    cause = next((e for e in chain if str(e)), None)
    reason = str(exc) if cause is exc else f"{type(cause).__name__}: {cause}" if cause else ""
    error = InfinityConnectionError(
        f"cannot reach the Infinity server at {url}: {type(exc).__name__}: {reason}",
        url=url,
    )
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain):
        error.retryable = False  # the certificate will be refused the same way every time
    return error


def _raise_if_not_ready_by(deadline: float, timeout: float, error: Exception, url: str) -> None:
    if time.monotonic() >= deadline:
        raise InfinityTimeoutError(
            f"the Infinity server at {url} was not ready after {timeout:g}s: {error}", url=url
        ) from error


def _log_response(call: protocol.Call[Any], response: httpx.Response, seconds: float) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "Infinity %s %s -> %d (%d items, %d bytes, %.3fs)",
            call.method,
            call.route,
            response.status_code,
            call.items,
            len(response.content),
            seconds,
        )
