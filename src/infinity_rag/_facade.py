"""What every public method of :class:`~infinity_rag.InfinityClient` stands on.

A public method checks its inputs, builds an operation (``infinity_rag._protocol``,
``_vectors``, ``_maxsim``) and hands it to the engine with :meth:`ClientCore._run` (sync) or
:meth:`ClientCore._arun` (async): nothing else. The state it needs is set by
``InfinityClient.__init__``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from functools import partial
from typing import Any, TypeVar

from infinity_rag import _protocol as protocol
from infinity_rag import _vectors
from infinity_rag._arrays import require_numpy
from infinity_rag._engine import CallOptions, Engine, ProgressCallback
from infinity_rag._flows import Call
from infinity_rag._inputs import (
    MAX_ITEMS_PER_REQUEST,
    MAX_MEDIA_ITEMS_PER_REQUEST,
    EncodingFormat,
    check_batch_size,
    check_encoding_format,
    check_optional_positive_int,
    check_positive_int,
)
from infinity_rag._loops import Pending
from infinity_rag._observe import CallInfo
from infinity_rag.errors import InvalidResponseError
from infinity_rag.types import VectorShape

__all__ = ["ClientCore", "Embedder"]

R = TypeVar("R")


class Embedder:
    """An embedding call's checked arguments: what turns inputs into its operation."""

    __slots__ = ("options", "size")

    def __init__(self, size: int, options: dict[str, Any]) -> None:
        self.size = size
        self.options = options

    def call(self, inputs: list[str]) -> tuple[protocol.Operation[Any], CallInfo]:
        """The operation embedding ``inputs`` and how observers see the call."""
        options = self.options
        info = CallInfo(
            "embeddings",
            options["model"],
            {
                "input_count": len(inputs),
                "encoding_format": options["encoding_format"],
                "dimensions": options["dimensions"],
                "modality": options["modality"],
            },
        )
        return _vectors.embed_operation(inputs, **options), info


class ClientCore:
    """The engine plumbing shared by the client's public methods."""

    max_concurrency: int
    batch_size: int
    deadline: float | None
    _engine: Engine
    _shapes: _vectors.ShapeCache

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
    ) -> Embedder:
        """The arguments checked, as what turns inputs into an embedding operation."""
        if modality == "text":
            size = self.batch_size if batch_size is None else batch_size
            size = check_batch_size(size, "batch_size", MAX_ITEMS_PER_REQUEST)
        else:
            size = min(self.batch_size, MAX_MEDIA_ITEMS_PER_REQUEST)
        if as_numpy:
            require_numpy()
        return Embedder(
            size,
            dict(
                target=target,
                modality=modality,
                model=model,
                encoding_format=check_encoding_format(encoding_format or "base64"),
                dimensions=check_optional_positive_int(dimensions, "dimensions"),
                extra_body=extra_body,
                batch_size=size,
                as_numpy=bool(as_numpy),
                shapes=self._shapes,
            ),
        )

    # --- multi-vector and bit-packed embeddings ----------------------------------------------

    def _concurrency(self, override: int | None) -> int:
        limit = self.max_concurrency if override is None else override
        return check_positive_int(limit, "max_concurrency")

    def _options(
        self,
        operation: protocol.Operation[Any],
        info: CallInfo,
        max_concurrency: int | None,
        on_progress: ProgressCallback | None,
        deadline: float | None = None,
    ) -> CallOptions:
        """A call's options, checked before anything is sent (else the operation is closed)."""
        try:
            limit = self._concurrency(max_concurrency)
            return CallOptions(
                info, limit, on_progress, self.deadline if deadline is None else deadline
            )
        except BaseException:
            operation.close()
            raise

    def _run(self, operation: protocol.Operation[R], info: CallInfo, *options: Any) -> R:
        """Run a sync call's operation on the engine (``options``: those of :meth:`_options`)."""
        return self._engine.run_sync(operation, self._options(operation, info, *options))

    async def _arun(self, operation: protocol.Operation[R], info: CallInfo, *options: Any) -> R:
        """Async :meth:`_run`."""
        return await self._engine.run(operation, self._options(operation, info, *options))

    def _call(self, operation: protocol.Operation[R], info: CallInfo, *options: Any) -> Call[R]:
        """:meth:`_run` or :meth:`_arun`, as a flow yields it (``infinity_rag._flows``): for a
        method pair written once."""
        return Call(
            partial(self._run, operation, info, *options),
            partial(self._arun, operation, info, *options),
        )

    def _submit_chunk(self, job: Embedder) -> Callable[[list[str]], Pending[Any]]:
        """For a sync stream: start one chunk's call."""

        def submit(chunk: list[str]) -> Pending[Any]:
            operation, info = job.call(chunk)
            return self._engine.submit(operation, CallOptions(info, deadline=self.deadline))

        return submit

    def _start_chunk(self, job: Embedder) -> Callable[[list[str]], Coroutine[Any, Any, Any]]:
        """For an async stream: one chunk's call."""

        def start(chunk: list[str]) -> Coroutine[Any, Any, Any]:
            operation, info = job.call(chunk)
            return self._engine.run(operation, CallOptions(info, deadline=self.deadline))

        return start

    def _learned(self, model: str | None) -> VectorShape:
        shape = self._shapes.get(_vectors.model_key(model))
        if shape is None:
            raise InvalidResponseError(f"embedding a probe did not tell the shape of {model!r}")
        return shape
