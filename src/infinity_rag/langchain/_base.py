"""What the LangChain classes share: where the server is, how to authenticate, one client.

:class:`InfinityEmbeddings` and :class:`InfinityRerank` inherit these fields and the validator
that builds (once) the :class:`~infinity_rag.InfinityClient` they send their requests through,
or adopts the one passed as ``client``.
"""

from __future__ import annotations

from typing import Any, Literal, Self

import httpx
from langchain_core.load.serializable import Serializable
from langchain_core.utils import from_env, secret_from_env
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator

from infinity_rag._config import (
    API_KEY_ENV_VAR,
    BASE_URL_ENV_VARS,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    http_clients_cannot_travel,
    resolve_api_key,
    resolve_base_url_field,
    settings_clash_with_client,
)
from infinity_rag._pool import DEFAULT_MAX_REPLICA_BACKOFF, DEFAULT_REPLICA_BACKOFF
from infinity_rag.client import InfinityClient

#: Fields that configure the connection: with an injected ``client`` they belong to it.
_CONNECTION_FIELDS = (
    "infinity_api_base",
    "infinity_api_key",
    "request_timeout",
    "max_retries",
    "default_headers",
    "http_client",
    "http_async_client",
    "replica_backoff",
    "max_replica_backoff",
    "balancer",
    "hedge",
    "deadline",
)


class InfinityBase(Serializable):
    """Connection settings and the shared :class:`~infinity_rag.InfinityClient`."""

    infinity_api_base: str | list[str] = Field(
        alias="base_url",
        default_factory=from_env(BASE_URL_ENV_VARS, default=DEFAULT_BASE_URL),
        validate_default=True,
    )
    """The server's URL, including any ``--url-prefix`` such as ``/v1``; or a list of
    replicas' URLs (requests go to the fastest, least loaded; failed ones are left out for a while).

    Read from ``INFINITY_API_BASE``, then ``INFINITY_API_URL`` (one URL, or several separated
    by commas), if not passed; defaults to ``http://localhost:7997``."""

    infinity_api_key: SecretStr | None = Field(
        alias="api_key",
        default_factory=secret_from_env(API_KEY_ENV_VAR, default=None),
        validate_default=True,
    )
    """The server's ``--api-key``, sent as a bearer token. Read from ``INFINITY_API_KEY`` if
    not passed; ``None`` for a server without authentication."""

    request_timeout: float | None = Field(default=DEFAULT_TIMEOUT, alias="timeout", gt=0)
    """Seconds to wait for each request (``None``: no limit)."""

    max_retries: int = Field(default=DEFAULT_MAX_RETRIES, ge=0)
    """Retries of connection errors, timeouts, 429 and 5xx answers, with backoff."""

    default_headers: dict[str, str] | None = None
    """Extra headers sent with every request (e.g. for a gateway in front of Infinity)."""

    replica_backoff: float = Field(default=DEFAULT_REPLICA_BACKOFF, ge=0)
    """With several replicas: seconds a failed one is left out of rotation, doubled with each
    consecutive failure."""

    max_replica_backoff: float = Field(default=DEFAULT_MAX_REPLICA_BACKOFF, ge=0)
    """With several replicas: the longest a failed one is left out."""

    balancer: Literal["peak-ewma", "least-busy"] = "peak-ewma"
    """With several replicas: how each request's replica is chosen (``"peak-ewma"``: by
    latency and load; ``"least-busy"``: fewest requests in flight)."""

    hedge: bool = True
    """With several replicas: send a copy of a slow one-request call (a query) to another
    replica after the 95th percentile of recent latencies; first answer wins (at most 5% more
    requests)."""

    deadline: float | None = Field(default=None, gt=0)
    """Seconds each call may take in all (retries and hedges included); ``None``: no limit
    beyond ``timeout`` per request."""

    http_client: httpx.Client | None = Field(default=None, exclude=True)
    """Your own ``httpx.Client`` for sync calls (proxies, TLS, transports); not closed here."""

    http_async_client: httpx.AsyncClient | None = Field(default=None, exclude=True)
    """Your own ``httpx.AsyncClient`` for async calls; not closed here."""

    extra_body: dict[str, Any] | None = None
    """Provider parameters added to every request body as they are (they override ours)."""

    client: InfinityClient | None = Field(default=None, exclude=True)
    """An :class:`~infinity_rag.InfinityClient` to share (with other embedders, rerankers or
    LlamaIndex classes). Its connection settings then apply: ``base_url``, ``api_key``,
    ``timeout``, ``max_retries``, ``default_headers``, ``http_client`` and
    ``http_async_client`` cannot be passed with it (``None`` is accepted, as not passed).
    Without one, a client is built from those fields."""

    _client: InfinityClient = PrivateAttr()

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        protected_namespaces=(),
        arbitrary_types_allowed=True,
        # A validation error must not echo the constructor's arguments: they hold the key.
        hide_input_in_errors=True,
    )

    @field_validator("infinity_api_base", mode="before")
    @classmethod
    def _check_base_url(cls, value: Any) -> Any:
        # The client's own lookup: None or "" fall back to the environment (then the default),
        # each URL must be http(s); a comma-separated string is several replicas. Other types
        # are left to pydantic's check.
        if value is None or isinstance(value, str | list | tuple):
            return resolve_base_url_field(value)
        return value

    @field_validator("infinity_api_key")
    @classmethod
    def _check_api_key(cls, value: SecretStr | None) -> SecretStr | None:
        return resolve_api_key(value)  # an empty key means none

    @model_validator(mode="before")
    @classmethod
    def _no_connection_settings_with_client(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("client") is None:
            return data
        passed = []
        for name in _CONNECTION_FIELDS:
            alias = cls.model_fields[name].alias or name
            if data.get(name) is not None or data.get(alias) is not None:
                passed.append(alias)
        if passed:
            raise settings_clash_with_client(passed)
        return data

    @model_validator(mode="after")
    def _build_client(self) -> Self:
        if self.client is not None:
            self._client = self.client
            # Show (and serialize) the server the shared client talks to, not the environment's.
            self.infinity_api_base = resolve_base_url_field(self.client.base_urls)
            self.infinity_api_key = self.client.api_key
            return self
        self._client = InfinityClient(
            base_url=self.infinity_api_base,
            api_key=self.infinity_api_key,
            timeout=self.request_timeout,
            max_retries=self.max_retries,
            headers=self.default_headers,
            http_client=self.http_client,
            http_async_client=self.http_async_client,
            replica_backoff=self.replica_backoff,
            max_replica_backoff=self.max_replica_backoff,
            balancer=self.balancer,
            hedge=self.hedge,
            deadline=self.deadline,
        )
        return self

    def __getstate__(self) -> dict[Any, Any]:
        # Pickled for a worker process (multiprocessing, Ray): the settings and the key travel,
        # the InfinityClient rebuilds its pools there (see InfinityClient.__reduce__).
        if self.http_client is not None or self.http_async_client is not None:
            raise http_clients_cannot_travel(f"{type(self).__name__}")
        state: dict[Any, Any] = super().__getstate__()
        return state

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        # Copies share the InfinityClient and httpx clients (connection pools, locks): like
        # model_copy(), only the settings are copied.
        memo = {} if memo is None else memo
        for shared in (self._client, self.client, self.http_client, self.http_async_client):
            if shared is not None:
                memo[id(shared)] = shared
        return super().__deepcopy__(memo)

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    @property
    def lc_secrets(self) -> dict[str, str]:
        return {"infinity_api_key": API_KEY_ENV_VAR}
