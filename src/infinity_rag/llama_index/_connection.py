"""The connection settings shared by the LlamaIndex classes, and the one client they use.

Each component holds one :class:`~infinity_rag.InfinityClient` for its whole life: the
injected ``client`` (shared with other components, even LangChain ones), or one built from
the connection fields when the component is created. No call ever opens a new HTTP client.
"""

from __future__ import annotations

from typing import Any, Literal, Self

import httpx
from llama_index.core.bridge.pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from infinity_rag._config import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    resolve_api_key,
    resolve_base_url_field,
    settings_clash_with_client,
)
from infinity_rag._pool import DEFAULT_MAX_REPLICA_BACKOFF, DEFAULT_REPLICA_BACKOFF
from infinity_rag.client import InfinityClient

# What an injected client already decides; setting one of these as well is ambiguous.
_CLIENT_SETTINGS = (
    "base_url",
    "api_key",
    "timeout",
    "max_retries",
    "default_headers",
    "http_client",
    "async_http_client",
    "replica_backoff",
    "max_replica_backoff",
    "balancer",
    "hedge",
    "deadline",
)


class InfinityConnection(BaseModel):
    """Where the Infinity server is, how to authenticate, and the client that talks to it.

    ``api_key`` is a ``SecretStr``: masked in reprs, excluded from ``to_dict()`` /
    ``to_json()``. ``default_headers`` are excluded too, and the HTTP clients (``client``,
    ``http_client``, ``async_http_client``) are never serialized. With ``client=`` the
    connection fields mirror the client's, so that a copy made by ``pickle`` (e.g. for
    ``IngestionPipeline(num_workers=...)``) reaches the same server.
    """

    # A validation error would otherwise print the whole input, api_key included.
    model_config = ConfigDict(arbitrary_types_allowed=True, hide_input_in_errors=True)

    base_url: str | list[str] | None = Field(
        default=None,
        description="The server's URL with any --url-prefix, or a list of replicas' URLs "
        "(requests go to the fastest, least loaded; failed ones are left out for a while); "
        "default: INFINITY_API_BASE, then INFINITY_API_URL (several URLs separated by "
        "commas), then http://localhost:7997.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        exclude=True,
        description="Sent as a Bearer token; default: INFINITY_API_KEY. Never serialized.",
    )
    timeout: float | None = Field(
        default=DEFAULT_TIMEOUT, gt=0, description="Seconds to wait for each request."
    )
    max_retries: int = Field(
        default=DEFAULT_MAX_RETRIES,
        ge=0,
        description="Retries of connection errors, timeouts, 429 and 5xx, with backoff.",
    )
    max_concurrency: int | None = Field(
        default=None,
        gt=0,
        description="Requests of one call in flight at once; default: the client's (4).",
    )
    replica_backoff: float = Field(
        default=DEFAULT_REPLICA_BACKOFF,
        ge=0,
        description="With several replicas: seconds a failed one is left out of rotation, "
        "doubled with each consecutive failure.",
    )
    max_replica_backoff: float = Field(
        default=DEFAULT_MAX_REPLICA_BACKOFF,
        ge=0,
        description="With several replicas: the longest a failed one is left out.",
    )
    balancer: Literal["peak-ewma", "least-busy"] = Field(
        default="peak-ewma",
        description="With several replicas: how each request's replica is chosen "
        "(peak-ewma: by latency and load; least-busy: fewest requests in flight).",
    )
    hedge: bool = Field(
        default=True,
        description="With several replicas: send a copy of a slow one-request call (a query) "
        "to another replica after the p95 of recent latencies; at most 5% more requests.",
    )
    deadline: float | None = Field(
        default=None,
        gt=0,
        description="Seconds each call may take in all (retries and hedges included).",
    )
    extra_body: dict[str, Any] | None = Field(
        default=None, description="Extra JSON fields added to every request body."
    )
    default_headers: dict[str, str] | None = Field(
        default=None,
        exclude=True,
        repr=False,
        description="Extra HTTP headers for every request (a gateway's, say); they may carry "
        "credentials, so they are neither shown nor serialized.",
    )
    http_client: httpx.Client | None = Field(
        default=None,
        exclude=True,
        description="Your own httpx.Client for sync calls (proxies, TLS); not closed here.",
    )
    async_http_client: httpx.AsyncClient | None = Field(
        default=None,
        exclude=True,
        description="Your own httpx.AsyncClient for async calls; not closed here.",
    )
    client: InfinityClient | None = Field(
        default=None,
        exclude=True,
        description="A shared InfinityClient; if set, the connection fields are taken from it.",
    )

    _client: InfinityClient = PrivateAttr()

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | list[str] | None) -> str | list[str] | None:
        # A field validator, so that a bad URL's error carries only the URL, never the key.
        return None if value is None else resolve_base_url_field(value)

    @model_validator(mode="after")
    def _connect(self) -> Self:
        if self.client is None:
            self.base_url = resolve_base_url_field(self.base_url)
            self.api_key = resolve_api_key(self.api_key)
            self._client = InfinityClient(
                base_url=self.base_url,
                api_key=self.api_key,
                timeout=self.timeout,
                max_retries=self.max_retries,
                headers=self.default_headers,
                http_client=self.http_client,
                http_async_client=self.async_http_client,
                replica_backoff=self.replica_backoff,
                max_replica_backoff=self.max_replica_backoff,
                balancer=self.balancer,
                hedge=self.hedge,
                deadline=self.deadline,
            )
            return self
        clashing = [
            name
            for name in _CLIENT_SETTINGS
            if name in self.model_fields_set and getattr(self, name) is not None
        ]
        if clashing:
            raise settings_clash_with_client(clashing)
        client = self.client
        self._client = client
        self.base_url = resolve_base_url_field(client.base_urls)
        self.api_key = client.api_key
        self.max_retries = client.retry.max_retries
        if client.timeout is None or isinstance(client.timeout, int | float):
            self.timeout = client.timeout
        return self

    def __getstate__(self) -> dict[Any, Any]:
        # Pickled for a worker process (IngestionPipeline(num_workers=...), multiprocessing,
        # Ray): the settings and the key travel. A shared client travels as its settings
        # (InfinityClient.__reduce__); LlamaIndex rebuilds a component by calling __init__
        # with the pickled fields, so the connection fields mirrored from it stay behind (they
        # would clash with it). HTTP clients cannot travel: the copy builds its own pool from
        # the connection fields (mirrored from a shared client that holds injected ones).
        update: dict[str, Any] = {"http_client": None, "async_http_client": None}
        if self.client is not None and not self.client.can_be_pickled():
            update["client"] = None
        clone = self.model_copy(update=update)
        clone.__pydantic_private__ = {**(clone.__pydantic_private__ or {}), "_client": None}
        state: dict[Any, Any] = super(InfinityConnection, clone).__getstate__()
        if clone.client is not None:
            for name in _CLIENT_SETTINGS:
                state["__dict__"].pop(name, None)
        return state
