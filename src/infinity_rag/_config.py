"""Where the server is and how to authenticate: environment lookups shared by every class."""

from __future__ import annotations

import os
import random
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
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an http(s) URL such as {DEFAULT_BASE_URL}, got {url!r}")
    return url.rstrip("/")


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
