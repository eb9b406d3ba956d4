"""The exceptions raised by infinity-rag, one family rooted at :class:`InfinityError`.

```
InfinityError
├── InfinityAPIError                 the server answered with an error status
│   ├── AuthenticationError          401 / 403: missing or wrong API key
│   ├── InvalidRequestError          400 / 422: the server rejected the request
│   │   ├── ModelNotFoundError       400: no served model has that name
│   │   └── ModelCapabilityError     400: the model cannot do that (e.g. rerank on an embedder)
│   ├── NotFoundError                404: no such route (often a wrong URL prefix)
│   ├── OverloadedError              429: the server's queue is full         (retried)
│   └── ServerError                  5xx                                      (retried)
│       └── EncodingRefusedError     500: the model cannot send that encoding (bit-packed
│                                    vectors as base64); deterministic, not retried
├── InfinityConnectionError          the server could not be reached         (retried)
│   └── InfinityTimeoutError         no answer within the timeout            (retried)
├── InvalidResponseError             the answer is not what Infinity sends
└── VectorKindError                  the model returns another kind of vector than the
                                     method gives (multi-vector, bit-packed, single)
```

Messages are kept short (a 422 echoes the whole input back; it is never repeated here) and
never contain the API key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infinity_rag.types import VectorShape

__all__ = [
    "AuthenticationError",
    "EncodingRefusedError",
    "InfinityAPIError",
    "InfinityConnectionError",
    "InfinityError",
    "InfinityTimeoutError",
    "InvalidRequestError",
    "InvalidResponseError",
    "ModelCapabilityError",
    "ModelNotFoundError",
    "NotFoundError",
    "OverloadedError",
    "ServerError",
    "VectorKindError",
]


class InfinityError(Exception):
    """Base class of every error infinity-rag raises about the server or its answers."""

    #: Whether sending the same request again may succeed (connection errors, 429, 5xx).
    retryable: bool = False
    #: Every URL the request was tried on, in order (several with several replicas).
    urls: tuple[str, ...] = ()

    def add_urls(self, urls: tuple[str, ...], *, mention: bool) -> None:
        """Record the URLs that were tried; ``mention`` adds them to the message too."""
        self.urls = urls
        if mention and urls and self.args and isinstance(self.args[0], str):
            self.args = (f"{self.args[0]} (tried {len(urls)} URL(s): {', '.join(urls)})",)

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuilt without calling __init__ (whose arguments are keyword-only): an error
        # raised in a worker process (multiprocessing, Ray) reaches the parent intact.
        return (_rebuild_error, (type(self), self.args, self.__dict__))


def _rebuild_error(
    kind: type[InfinityError], args: tuple[object, ...], state: dict[str, object]
) -> InfinityError:
    error = kind.__new__(kind)
    error.args = args
    error.__dict__.update(state)
    return error


class InfinityAPIError(InfinityError):
    """The server answered with an error status.

    Attributes:
        status_code: the HTTP status.
        message: the server's own message, shortened.
        code: the ``code`` field of Infinity's error body, when it sends one.
        url: the URL that was requested.
    """

    def __init__(
        self, message: str, *, status_code: int, url: str = "", code: str | int | None = None
    ) -> None:
        self.message = message
        self.status_code = status_code
        #: Seconds the server asked to wait (``Retry-After``), if it said.
        self.retry_after: float | None = None
        self.url = url
        self.code = code
        where = f" from {url}" if url else ""
        super().__init__(f"HTTP {status_code}{where}: {message}")


class AuthenticationError(InfinityAPIError):
    """401 / 403: the API key is missing or wrong (set ``api_key`` or ``INFINITY_API_KEY``)."""


class InvalidRequestError(InfinityAPIError):
    """400 / 422: the server rejected the request as invalid."""


class ModelNotFoundError(InvalidRequestError):
    """400: the requested model is not served. The message lists the served models."""


class ModelCapabilityError(InvalidRequestError):
    """400: the model is served but cannot do this (for example ``rerank`` on an embedder)."""


class NotFoundError(InfinityAPIError):
    """404: no such route. Usually the base URL lacks or adds a prefix such as ``/v1``."""


class OverloadedError(InfinityAPIError):
    """429: the server's queue is full. Retried with backoff up to ``max_retries``."""

    retryable = True


class ServerError(InfinityAPIError):
    """5xx: the server (or a proxy in front of it) failed. Retried up to ``max_retries``."""

    retryable = True


class EncodingRefusedError(ServerError):
    """500: the model refuses the request's ``encoding_format``: a model served with
    ``--embedding-dtype ubinary`` / ``binary`` cannot send base64. The same request fails the
    same way every time, so it is not retried; the client asks for floats instead."""

    retryable = False


class InfinityConnectionError(InfinityError):
    """The server could not be reached, or the connection broke mid-answer."""

    retryable = True

    def __init__(self, message: str, *, url: str = "") -> None:
        self.url = url
        super().__init__(message)


class InfinityTimeoutError(InfinityConnectionError):
    """The server did not answer within the configured ``timeout``."""


class InvalidResponseError(InfinityError):
    """The server answered 2xx with a body that is not Infinity's format (or is incomplete)."""


class VectorKindError(InfinityError):
    """The model returns another kind of vector than the method called gives.

    A ColBERT / ColPali model (late interaction) returns a matrix per input: use
    ``embed_multi_vector``; a model served with ``--embedding-dtype ubinary`` / ``binary``
    returns bit-packed vectors: use ``embed_packed``; a single-vector model: use ``embed``.
    Raised before anything is returned, so nothing is ever passed off as the wrong shape.

    Attributes:
        model: the model as the request named it (``""``: the server's only model).
        shape: what the client learned about the model's vectors (a ``VectorShape``).
        method: the client method that returns this kind of vector.
    """

    def __init__(self, message: str, *, model: str, shape: VectorShape, method: str) -> None:
        self.model = model
        self.shape = shape
        self.method = method
        super().__init__(message)
