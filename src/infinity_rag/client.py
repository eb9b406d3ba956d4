"""The shared client: every Infinity route, sync and async, over pooled httpx connections.

:class:`InfinityClient` is a facade. Each public method checks its inputs, builds an operation
(what to send and how to read the answers: ``infinity_rag._protocol``, ``_vectors``,
``_maxsim``) and hands it to the engine (``infinity_rag._engine``), which sends it to the
replicas (``infinity_rag._pool``). Settings live in ``infinity_rag._settings``; the embedding
methods in ``infinity_rag._embed_api``. See ``docs/development.md``, "Architecture".
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any, Self

import httpx
from pydantic import SecretStr

from infinity_rag import _maxsim, _vectors
from infinity_rag import _protocol as protocol
from infinity_rag._balance import DEFAULT_BALANCER, Balancer
from infinity_rag._config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RERANK_BATCH_SIZE,
    DEFAULT_TIMEOUT,
    server_root,
)
from infinity_rag._embed_api import EmbeddingMethods
from infinity_rag._engine import Engine
from infinity_rag._flows import Call, Flow, adrive, drive
from infinity_rag._hedge import HedgePolicy, make_hedge_policy
from infinity_rag._inputs import (
    MAX_ITEMS_PER_REQUEST,
    check_batch_size,
    check_optional_positive_int,
    check_query,
    check_texts,
)
from infinity_rag._observe import CallInfo
from infinity_rag._otel import make_observer
from infinity_rag._pool import (
    DEFAULT_MAX_REPLICA_BACKOFF,
    DEFAULT_REPLICA_BACKOFF,
    Replica,
    ReplicaPool,
    RetryPolicy,
)
from infinity_rag._settings import Settings, masked
from infinity_rag.errors import InfinityError, InfinityTimeoutError
from infinity_rag.types import ClassifyResult, ModelInfo, ReplicaState, RerankResult

__all__ = ["InfinityClient"]


class InfinityClient(EmbeddingMethods):
    """A client for an Infinity server (``infinity_emb v2``), sync and async.

    One instance holds, per event loop, one pooled ``httpx.AsyncClient`` (closed when its
    loop shuts down), made on first use; a sync call runs in its caller's thread, on an event
    loop of that thread's own (so each thread keeps its own connections). Share it between
    threads, tasks and framework classes; close it
    with ``close()`` / ``aclose()`` or a ``with`` block. Given several URLs (replicas), it
    sends each request to the fastest, least loaded one, hedges a slow query to another and
    leaves failed ones out of rotation for a while (see :meth:`replicas`). It pickles, for
    worker processes, as its settings (the API key included).

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
        timeout: seconds (or an ``httpx.Timeout``) for each request. With an injected
            ``http_client`` / ``http_async_client`` and ``timeout`` left at its default,
            the injected client's own timeout applies.
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
        balancer: how a replica is chosen for each request: ``"peak-ewma"`` (the default:
            power of two choices over each replica's peak-EWMA latency x (requests in flight
            + 1), as Finagle and Linkerd do; a slow replica gets less traffic, and more again
            once it recovers) or ``"least-busy"`` (fewest requests in flight).
        hedge: for a call that is one request (a query's embedding, a rerank within one
            request), send a copy to another replica when no answer has come after the 95th
            percentile of recent latencies, take the first answer and cancel the other; at
            most 5% more requests (a budget). ``False`` turns it off; a ``HedgePolicy`` sets
            the quantile and budget.
        deadline: seconds each call may take in all (retries, hedges and waits included);
            past it, the call raises ``InfinityTimeoutError`` naming the replicas tried and
            nothing keeps running. ``None`` (default): only ``timeout`` per request applies.

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
        balancer: str | Balancer = DEFAULT_BALANCER,
        hedge: bool | HedgePolicy = True,
        deadline: float | None = None,
    ) -> None:
        settings = Settings(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            batch_size=batch_size,
            rerank_batch_size=rerank_batch_size,
            max_concurrency=max_concurrency,
            headers=headers,
            verify=verify,
            replica_backoff=replica_backoff,
            max_replica_backoff=max_replica_backoff,
            balancer=balancer,
            hedge=hedge,
            deadline=deadline,
        )
        self._config = settings
        self.base_urls = settings.base_urls
        self.base_url = settings.base_urls[0]
        self.api_key = settings.key
        self.timeout = timeout
        self.batch_size = settings.batch_size
        self.rerank_batch_size = settings.rerank_batch_size
        self.max_concurrency = settings.max_concurrency
        self.verify = settings.tls_verify()
        self.deadline = deadline
        self._injected = http_client is not None or http_async_client is not None
        self._pool = ReplicaPool(
            [Replica(url, server_root(url), masked(url)) for url in self.base_urls],
            backoff=replica_backoff,
            max_backoff=max_replica_backoff,
            balancer=balancer,
        )
        # What each model's vectors look like, learned from its answers (see _vectors).
        self._shapes = _vectors.ShapeCache()
        # One TLS context for every pool of this client: httpx builds one per client otherwise
        # (~50 ms each, paid again by each event loop's pool).
        self._tls_context: ssl.SSLContext | None = None
        self._tls_lock = threading.Lock()
        self._engine = Engine(
            pool=self._pool,
            headers=settings.request_headers(),
            api_key=self.api_key,
            # An injected httpx client keeps its own timeout unless one was asked for here.
            timeout=None if self._injected and timeout == DEFAULT_TIMEOUT else timeout,
            retry=RetryPolicy(max_retries=max_retries),
            make_async_client=lambda: httpx.AsyncClient(timeout=self.timeout, verify=self._tls()),
            make_sync_client=lambda: httpx.Client(timeout=self.timeout, verify=self._tls()),
            http_client=http_client,
            http_async_client=http_async_client,
            # OpenTelemetry spans and metrics when opentelemetry-api is installed (else None).
            observer=make_observer(self.replicas),
            hedge=make_hedge_policy(hedge),
        )

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy (assignable: ``client.retry = RetryPolicy(max_retries=5)``)."""
        return self._engine.retry

    @retry.setter
    def retry(self, policy: RetryPolicy) -> None:
        self._engine.retry = policy

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
        return (_rebuild_client, (self._config.pickle_state(self._injected),))

    def can_be_pickled(self) -> bool:
        """Whether this client can be pickled (no injected httpx client, no SSLContext)."""
        return self._config.can_travel(self._injected)

    def __repr__(self) -> str:
        key = "'**********'" if self.api_key is not None else "None"
        urls = self._pool.replicas
        shown = urls[0].shown if len(urls) == 1 else [replica.shown for replica in urls]
        return f"InfinityClient(base_url={shown!r}, api_key={key})"

    def replicas(self) -> list[ReplicaState]:
        """Each replica's state now (URL, requests in flight, failures, out of rotation until
        when), in the order of ``base_url``: for logs and dashboards."""
        return self._pool.states()

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
        return self._run(plan, _rerank_info(model, documents, top_n), max_concurrency, None)

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
        return await self._arun(plan, _rerank_info(model, documents, top_n), max_concurrency, None)

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
    ) -> protocol.Operation[RerankResult]:
        if late_interaction is not None and not isinstance(late_interaction, bool):
            raise TypeError(
                f"late_interaction must be True, False or None, got {late_interaction!r}"
            )
        sizes = (
            (self.rerank_batch_size, self.batch_size) if batch_size is None else (batch_size,) * 2
        )
        rerank = protocol.Rerank(
            check_query(query),
            check_texts(documents, "documents"),
            model,
            check_optional_positive_int(top_n, "top_n"),
            bool(raw_scores),
            bool(return_documents),
            extra_body,
        )
        return _maxsim.rerank_operation(
            rerank,
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
        call = self._classify_call(texts, model, raw_scores, extra_body)
        return self._run(*call, max_concurrency, None)

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
        call = self._classify_call(texts, model, raw_scores, extra_body)
        return await self._arun(*call, max_concurrency, None)

    def _classify_call(
        self,
        texts: Sequence[str],
        model: str | None,
        raw_scores: bool,
        extra_body: Mapping[str, Any] | None,
    ) -> tuple[protocol.Operation[ClassifyResult], CallInfo]:
        checked = check_texts(texts)
        plan = protocol.classify_operation(
            checked,
            model=model,
            raw_scores=bool(raw_scores),
            extra_body=extra_body,
            batch_size=self.batch_size,
        )
        return plan, CallInfo("classify", model, {"input_count": len(checked)})

    # --- models and health -------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        """The served models with their capabilities (``embed``, ``rerank``, ``classify``, ...)
        and, in ``vectors``, what this client learned about each model's vectors."""
        return self._with_shapes(self._run(protocol.models_operation(), _MODELS, None, None))

    async def amodels(self) -> list[ModelInfo]:
        """Async :meth:`models`."""
        models = await self._arun(protocol.models_operation(), _MODELS, None, None)
        return self._with_shapes(models)

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
        return self._run(protocol.health_operation(), _HEALTH, None, None)

    async def ahealth(self) -> bool:
        """Async :meth:`health`."""
        return await self._arun(protocol.health_operation(), _HEALTH, None, None)

    def wait_until_ready(self, timeout: float = 60.0, interval: float = 0.5) -> None:
        """Poll ``/health`` until the server answers (models loaded) or ``timeout`` passes
        (each try waits at most what is left of it)."""
        drive(self._until_ready(timeout, interval))

    async def await_until_ready(self, timeout: float = 60.0, interval: float = 0.5) -> None:
        """Async :meth:`wait_until_ready`."""
        await adrive(self._until_ready(timeout, interval))

    def _until_ready(self, timeout: float, interval: float) -> Flow[bool | None, None]:
        """Both waits, written once (see ``infinity_rag._flows``)."""
        waiting = _Waiting(timeout, interval, self._shown_roots())
        while True:
            try:
                yield self._call(protocol.health_operation(), _HEALTH, None, None, waiting.left())
                return
            except InfinityError as error:
                waiting.failed(error)
            pause = waiting.pause()
            yield Call(partial(time.sleep, pause), partial(asyncio.sleep, pause))

    def _shown_roots(self) -> str:
        return ", ".join(server_root(replica.shown) for replica in self._pool.replicas)

    # --- connection pools --------------------------------------------------------------------

    def _tls(self) -> ssl.SSLContext:
        """The client's TLS context, built on first use and shared by its pools."""
        if self._tls_context is None:
            with self._tls_lock:
                if self._tls_context is None:
                    self._tls_context = httpx.create_ssl_context(verify=self.verify)
        return self._tls_context

    def close(self) -> None:
        """Close the pooled connections of sync calls once the calls in flight have ended
        (injected clients are left open). The client stays usable: a later call opens new
        ones."""
        self._engine.close()

    async def aclose(self) -> None:
        """Close the pooled connections of the running event loop and the sync ones."""
        await self._engine.aclose()

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
    """Unpickles a client (the name is in pickles made since 0.1.0: keep it)."""
    return InfinityClient(**settings)


_MODELS = CallInfo("models", None)
_HEALTH = CallInfo("health", None)


def _rerank_info(model: str | None, documents: Sequence[str], top_n: int | None) -> CallInfo:
    return CallInfo("rerank", model, {"document_count": len(documents), "top_n": top_n})


class _Waiting:
    """How long :meth:`InfinityClient.wait_until_ready` may still wait."""

    def __init__(self, timeout: float, interval: float, shown: str) -> None:
        self.timeout = timeout
        self.interval = interval
        self.shown = shown
        self.deadline = time.monotonic() + timeout

    def left(self) -> float:
        return max(self.deadline - time.monotonic(), 0.001)

    def failed(self, error: InfinityError) -> None:
        if time.monotonic() >= self.deadline:
            raise InfinityTimeoutError(
                f"the Infinity server at {self.shown} was not ready after {self.timeout:g}s: "
                f"{error}",
                url=self.shown,
            ) from error

    def pause(self) -> float:
        return min(self.interval, self.left())
