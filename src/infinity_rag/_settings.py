"""An :class:`~infinity_rag.InfinityClient`'s settings: looked up, checked, and pickled.

Everything the constructor takes is resolved here (the environment for the URL and the key),
checked before anything else happens, and kept as the state a pickled client is rebuilt from
in another process (the API key included: a worker must authenticate; sockets never travel).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import SecretStr

from infinity_rag._balance import DEFAULT_BALANCER, Balancer, make_balancer
from infinity_rag._config import (
    http_clients_cannot_travel,
    resolve_api_key,
    resolve_base_urls,
)
from infinity_rag._hedge import HedgePolicy, make_hedge_policy
from infinity_rag._inputs import MAX_ITEMS_PER_REQUEST, check_batch_size, check_positive_int
from infinity_rag._pool import check_backoff

__all__ = ["Settings", "masked"]


@dataclass(frozen=True, slots=True)
class Settings:
    """A client's settings: made from what ``InfinityClient(...)`` was given (the keywords of
    the same names) and checked then: bad values raise, naming what is allowed. The URL(s) and
    the key, the environment's when not given, are kept resolved as :attr:`base_urls` and
    :attr:`key`."""

    base_url: InitVar[str | Sequence[str] | None]
    api_key: InitVar[str | SecretStr | None]
    timeout: float | httpx.Timeout | None
    max_retries: int
    batch_size: int
    rerank_batch_size: int
    max_concurrency: int
    headers: Mapping[str, str] | None
    #: As given (a pickled copy needs the path, not the SSLContext built from it).
    verify: Any
    replica_backoff: float
    max_replica_backoff: float
    balancer: str | Balancer = DEFAULT_BALANCER
    hedge: bool | HedgePolicy = True
    deadline: float | None = None
    #: ``base_url``, else the environment's URL(s), checked.
    base_urls: tuple[str, ...] = field(init=False)
    #: ``api_key``, else ``INFINITY_API_KEY``; ``None``: no key.
    key: SecretStr | None = field(init=False)

    def __post_init__(
        self, base_url: str | Sequence[str] | None, api_key: str | SecretStr | None
    ) -> None:
        max_retries, deadline = self.max_retries, self.deadline
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        check_backoff(self.replica_backoff, self.max_replica_backoff)
        if isinstance(self.balancer, str):
            make_balancer(self.balancer)  # an unknown name raises, naming the allowed ones
        make_hedge_policy(self.hedge)  # likewise for hedge
        ok = deadline is None or (
            not isinstance(deadline, bool) and isinstance(deadline, int | float) and deadline > 0
        )
        if not ok:
            raise ValueError(f"deadline must be a number of seconds > 0 or None, got {deadline!r}")
        # Frozen: the resolved values are set as the dataclass's own __init__ sets fields.
        object.__setattr__(self, "base_urls", resolve_base_urls(base_url))
        object.__setattr__(self, "key", resolve_api_key(api_key))
        check_batch_size(self.batch_size, "batch_size", MAX_ITEMS_PER_REQUEST)
        check_batch_size(self.rerank_batch_size, "rerank_batch_size", MAX_ITEMS_PER_REQUEST)
        check_positive_int(self.max_concurrency, "max_concurrency")
        object.__setattr__(self, "headers", dict(self.headers) if self.headers else None)

    def request_headers(self) -> dict[str, str]:
        """The headers of every request (the key as ``Authorization: Bearer``)."""
        headers = {"Accept": "application/json", **(self.headers or {})}
        if self.key is not None:
            headers["Authorization"] = f"Bearer {self.key.get_secret_value()}"
        return headers

    def tls_verify(self) -> Any:
        """``verify`` as httpx takes it: a CA bundle path (str or os.PathLike, file or folder)
        as an SSLContext (httpx 0.28 deprecates ``verify=<str>`` and does not take a Path)."""
        if isinstance(self.verify, str | os.PathLike):
            path = os.fspath(self.verify)
            if os.path.isdir(path):
                return ssl.create_default_context(capath=path)
            return ssl.create_default_context(cafile=path)
        return self.verify

    def can_travel(self, injected_clients: bool) -> bool:
        """Whether a client with these settings can be pickled."""
        return not injected_clients and not isinstance(self.verify, ssl.SSLContext)

    def pickle_state(self, injected_clients: bool) -> dict[str, Any]:
        """What a pickled client is rebuilt from (``_rebuild_client(state)``, the 0.1.0
        format): keyword arguments of ``InfinityClient``, the key included."""
        if injected_clients:
            raise http_clients_cannot_travel("an InfinityClient")
        if isinstance(self.verify, ssl.SSLContext):
            raise TypeError(
                "an InfinityClient with verify=<ssl.SSLContext> cannot be pickled (an "
                "SSLContext does not cross processes); pass verify as a CA bundle path instead"
            )
        return {
            "base_url": list(self.base_urls),
            "api_key": self.key,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "batch_size": self.batch_size,
            "rerank_batch_size": self.rerank_batch_size,
            "max_concurrency": self.max_concurrency,
            "headers": dict(self.headers) if self.headers else None,
            "verify": self.verify,
            "replica_backoff": self.replica_backoff,
            "max_replica_backoff": self.max_replica_backoff,
            "balancer": self.balancer,
            "hedge": self.hedge,
            "deadline": self.deadline,
        }


def masked(url: str) -> str:
    """``url`` with any password replaced, as httpx shows URLs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":[secure]@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
