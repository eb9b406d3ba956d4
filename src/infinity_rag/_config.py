"""Where the server is and how to authenticate: environment lookups shared by every class."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import SecretStr

from infinity_rag.errors import InfinityError

DEFAULT_BASE_URL = "http://localhost:7997"
BASE_URL_ENV_VARS = ("INFINITY_API_BASE", "INFINITY_API_URL")
API_KEY_ENV_VAR = "INFINITY_API_KEY"

DEFAULT_TIMEOUT = 120.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_BATCH_SIZE = 256
DEFAULT_RERANK_BATCH_SIZE = 1024
DEFAULT_MAX_CONCURRENCY = 4


def resolve_base_url(base_url: str | None = None) -> str:
    """``base_url``, else ``INFINITY_API_BASE``, else ``INFINITY_API_URL``, else localhost:7997.

    The URL may carry a path prefix (``http://host:7997/v1``); trailing slashes are dropped.
    """
    url = base_url or next(
        (os.environ[name] for name in BASE_URL_ENV_VARS if os.environ.get(name)),
        DEFAULT_BASE_URL,
    )
    return _check_url(url)


def _check_url(url: object) -> str:
    if not isinstance(url, str):
        raise TypeError(f"base_url must be a URL string or a list of them, got {url!r:.80}")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an http(s) URL such as {DEFAULT_BASE_URL}, got {url!r}")
    return url.strip().rstrip("/")


def resolve_base_urls(base_url: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """Every replica's URL: ``base_url`` (one URL, a comma-separated string or a list), else
    ``INFINITY_API_BASE`` / ``INFINITY_API_URL`` (one URL or several, comma-separated), else
    ``http://localhost:7997``. Each is checked as :func:`resolve_base_url` does; the same URL
    twice is refused (it would get twice the traffic without saying so).
    """
    if base_url is None or base_url == "":
        base_url = next(
            (os.environ[name] for name in BASE_URL_ENV_VARS if os.environ.get(name)),
            DEFAULT_BASE_URL,
        )
    if isinstance(base_url, str):
        listed: list[object] = [part for part in base_url.split(",") if part.strip()]
    elif isinstance(base_url, Sequence):
        listed = list(base_url)
    else:
        raise TypeError(
            f"base_url must be a URL string or a list of them, got {type(base_url).__name__}"
        )
    if not listed:
        raise ValueError(f"base_url lists no URL; give one such as {DEFAULT_BASE_URL}")
    urls = tuple(_check_url(url) for url in listed)
    repeated = sorted({url for url in urls if urls.count(url) > 1})
    if repeated:
        raise ValueError(f"base_url lists the same URL more than once: {', '.join(repeated)}")
    return urls


def server_root(base_url: str) -> str:
    """The URL without its path prefix: ``/health`` and ``/metrics`` live there."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


def resolve_api_key(api_key: str | SecretStr | None = None) -> SecretStr | None:
    """``api_key``, else ``INFINITY_API_KEY``; an empty key means none."""
    if isinstance(api_key, SecretStr):
        api_key = api_key.get_secret_value()
    key = api_key or os.environ.get(API_KEY_ENV_VAR) or None
    return SecretStr(key) if key else None


def settings_clash_with_client(names: list[str]) -> TypeError:
    """The error for connection settings given next to a shared ``client=`` (both frameworks).

    A TypeError, like any clash of arguments, and not a ValueError: pydantic would wrap that
    with the arguments (the key among them) attached.
    """
    return TypeError(
        f"{', '.join(names)} cannot be combined with client=: the shared InfinityClient's "
        "settings apply. Configure them on InfinityClient(...) instead."
    )


def http_clients_cannot_travel(owner: str) -> TypeError:
    """The error for pickling something that holds an injected httpx client (every class)."""
    return TypeError(
        f"{owner} built with an injected httpx client (http_client= / http_async_client=) "
        "cannot be pickled: httpx clients hold sockets and locks that do not cross processes. "
        "Pass base_url, headers, timeout and verify (a CA bundle path) instead, so that each "
        "process builds its own connection pool."
    )


def resolve_base_url_field(value: str | Sequence[str] | None) -> str | list[str]:
    """A framework class's ``base_url``: one URL as a string, several replicas as a list."""
    urls = resolve_base_urls(value)
    return urls[0] if len(urls) == 1 else list(urls)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter for errors that may pass (connection, 429, 5xx)."""

    max_retries: int = DEFAULT_MAX_RETRIES
    initial_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, retries_done: int, error: InfinityError) -> float | None:
        """Seconds to wait before the next try, or ``None`` to give up and raise ``error``."""
        if not error.retryable or retries_done >= self.max_retries:
            return None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:  # the server said how long (429 / 503)
            return float(retry_after)
        ceiling = min(self.max_delay, self.initial_delay * 2.0**retries_done)
        # "Equal jitter": at least half the backoff, so a flood of clients spreads out
        # without any of them retrying at once.
        return ceiling / 2 + random.uniform(0, ceiling / 2)
