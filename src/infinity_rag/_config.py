"""Where the server is and how to authenticate: environment lookups shared by every class."""

from __future__ import annotations

import os
from collections.abc import Sequence
from urllib.parse import urlsplit

from pydantic import SecretStr

DEFAULT_BASE_URL = "http://localhost:7997"
BASE_URL_ENV_VARS = ("INFINITY_API_BASE", "INFINITY_API_URL")
API_KEY_ENV_VAR = "INFINITY_API_KEY"

DEFAULT_TIMEOUT = 120.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_BATCH_SIZE = 256
DEFAULT_RERANK_BATCH_SIZE = 1024
DEFAULT_MAX_CONCURRENCY = 4


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
    ``http://localhost:7997``. Each must be an http(s) URL (a path prefix is kept, trailing
    slashes dropped); the same URL twice is refused (it would get twice the traffic without
    saying so).
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
