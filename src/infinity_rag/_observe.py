"""What the engine tells an observer: one hook per call, one per HTTP attempt. No I/O.

The engine (``infinity_rag._engine``) calls :meth:`Observer.call` once per client call, in the
caller's thread or task (so the caller's context, an OpenTelemetry span for one, is current
there), before anything is sent. It then calls :meth:`CallObservation.attempt` for every HTTP
request it makes for that call (each retry and each hedged copy is one), possibly from another
thread (the sync driver's event loop): an observer must not rely on the current context there,
only on what :meth:`Observer.call` captured. Every observation started is finished exactly
once, whatever happens (an error, a cancellation, a deadline).

Observers never see inputs (texts, documents, images) nor the API key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "AttemptInfo",
    "AttemptObservation",
    "CallInfo",
    "CallObservation",
    "Observer",
]


@dataclass(frozen=True, slots=True)
class CallInfo:
    """One client call, as an observer sees it."""

    #: ``"embeddings"``, ``"rerank"``, ``"classify"``, ``"models"`` or ``"health"``.
    operation: str
    #: The model asked for (``None``: the server's only model).
    model: str | None
    #: Operation-specific facts, never contents: ``input_count``, ``encoding_format``,
    #: ``dimensions``, ``modality`` (embeddings); ``document_count``, ``top_n`` (rerank).
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    """One HTTP request of a call."""

    method: str
    #: The route as sent, without the base URL (``/embeddings``).
    route: str
    #: The replica's URL as shown in messages (password masked), with the route.
    url: str
    server_address: str
    server_port: int | None
    #: 0 for the first try of a request, 1 for its first retry, ...
    retry: int
    #: Why the previous try was retried (its error's class name), or ``None``.
    retry_reason: str | None
    #: Whether this is a hedged copy of a request still in flight elsewhere.
    hedge: bool
    #: How many inputs the request carries.
    items: int


class AttemptObservation(Protocol):
    def headers(self) -> Mapping[str, str]:
        """Headers to add to this request (W3C trace context, say); may be empty."""
        ...

    def finish(self, status_code: int | None, error: BaseException | None) -> None:
        """The request ended: with an HTTP status (``None`` when none came back) and the error
        it raised, if any (an ``InfinityError``, or ``asyncio.CancelledError`` when the
        engine abandoned it: a hedge lost, a sibling failed, the deadline passed)."""
        ...


class CallObservation(Protocol):
    def attempt(self, info: AttemptInfo) -> AttemptObservation:
        """An HTTP request of this call is about to be sent."""
        ...

    def finish(self, result: object | None, error: BaseException | None) -> None:
        """The call ended with ``result`` (an ``EmbeddingResult``, ``RerankResult``, ...) or
        ``error``."""
        ...


class Observer(Protocol):
    def call(self, info: CallInfo) -> CallObservation:
        """A client call starts (called in the caller's context)."""
        ...
