"""What every Haystack component here shares: the connection settings, their checks, the one
:class:`~infinity_rag.InfinityClient` built by ``warm_up`` (or shared), and (de)serialization.

Haystack builds a component from its ``__init__`` parameters (``from_dict``) and saves it as
them (``to_dict``), so every setting is a plain constructor argument and the API key is a
Haystack ``Secret``: saved as the name of its environment variable, never its value (a token
``Secret`` refuses to be saved, as Haystack's own components do).
"""

from __future__ import annotations

import inspect
import numbers
from copy import deepcopy
from dataclasses import replace
from typing import Any, Self

from haystack import Document, default_from_dict, default_to_dict
from haystack.utils import Secret

from infinity_rag._config import (
    API_KEY_ENV_VAR,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    resolve_base_url_field,
    resolve_base_urls,
    settings_clash_with_client,
)
from infinity_rag._flows import Flow, adrive, call, drive
from infinity_rag._inputs import check_batch_size, check_positive_int
from infinity_rag.client import InfinityClient

#: Constructor arguments that are not saved: the shared client is saved as its settings.
_NOT_SAVED = ("self", "client")

#: The ``balancer`` names :class:`~infinity_rag.InfinityClient` takes.
BALANCERS = ("peak-ewma", "least-busy")

#: The default ``api_key``: ``INFINITY_API_KEY`` if it is set, else no key.
DEFAULT_API_KEY = Secret.from_env_var(API_KEY_ENV_VAR, strict=False)


class InfinityComponent:
    """The connection half of every component (not a component itself).

    Subclasses call :meth:`_connect` from ``__init__`` and keep every other constructor
    argument as the attribute of the same name: ``to_dict`` saves them all.
    """

    model: str
    base_url: str | list[str] | None
    api_key: Secret
    timeout: float | None
    max_retries: int | None
    max_concurrency: int | None
    balancer: str | None
    hedge: bool | None
    deadline: float | None
    extra_body: dict[str, Any] | None

    def _connect(  # positional: every constructor passes them all, in this order
        self,
        model: str,
        base_url: str | list[str] | None,
        api_key: Secret,
        timeout: float | None,
        max_retries: int | None,
        max_concurrency: int | None,
        balancer: str | None,
        hedge: bool | None,
        deadline: float | None,
        extra_body: dict[str, Any] | None,
        client: InfinityClient | None,
    ) -> None:
        owner = type(self).__name__
        # Each setting is checked, in this order, then kept; a shared client comes last.
        self.model = _check_model(model, owner)
        self.base_url = _check_base_url(base_url)
        self.api_key = _check_api_key(api_key, owner)
        self.timeout = _check_seconds(timeout, "timeout", owner)
        self.deadline = _check_seconds(deadline, "deadline", owner)
        if balancer is not None and balancer not in BALANCERS:
            raise ValueError(f"{owner}: balancer must be one of {BALANCERS}, got {balancer!r}")
        self.balancer = balancer
        if hedge is not None and not isinstance(hedge, bool):
            raise TypeError(f"{owner}: hedge must be True, False or None, got {hedge!r}")
        self.hedge = hedge
        if max_retries is not None and (
            isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0
        ):
            raise ValueError(f"{owner}: max_retries must be an integer >= 0, got {max_retries!r}")
        self.max_retries = max_retries
        if max_concurrency is not None:
            check_positive_int(max_concurrency, "max_concurrency")
        self.max_concurrency = max_concurrency
        if extra_body is not None and not isinstance(extra_body, dict):
            raise TypeError(f"{owner}: extra_body must be a dict, got {type(extra_body).__name__}")
        self.extra_body = extra_body
        if client is not None:
            _check_client(client, owner, self._client_settings_passed())
        self._shared_client = client
        self._client: InfinityClient | None = client

    def _client_settings_passed(self) -> list[str]:
        """The connection settings given besides a shared client (they would be ignored)."""
        passed = [
            name
            for name in ("base_url", "timeout", "max_retries", "balancer", "hedge", "deadline")
            if getattr(self, name) is not None
        ]
        if self.api_key != DEFAULT_API_KEY:
            passed.append("api_key")
        return passed

    # --- life cycle (Pipeline.warm_up / close call these) ------------------------------------

    def warm_up(self) -> None:
        """Build the :class:`~infinity_rag.InfinityClient` (no request is sent); ``run`` and
        ``run_async`` call it when needed. With a shared ``client``, nothing to do."""
        if self._client is None:
            # None: the client's default (a balancer by latency, hedging on, no deadline).
            replicas: dict[str, Any] = {
                "balancer": self.balancer,
                "hedge": self.hedge,
                "deadline": self.deadline,
            }
            self._client = InfinityClient(
                base_url=self.base_url,
                # An unset INFINITY_API_KEY (strict=False) resolves to None: no key.
                api_key=self.api_key.resolve_value(),
                timeout=DEFAULT_TIMEOUT if self.timeout is None else float(self.timeout),
                max_retries=DEFAULT_MAX_RETRIES if self.max_retries is None else self.max_retries,
                **{name: value for name, value in replicas.items() if value is not None},
            )

    def close(self) -> None:
        """Close the connection pool ``warm_up`` opened (a shared ``client`` is left open);
        a later run builds a new one."""
        drive(self._close_flow())

    async def close_async(self) -> None:
        """Async :meth:`close`: closes the async connection pools too."""
        await adrive(self._close_flow())

    def _close_flow(self) -> Flow[None, None]:
        """Both closes, written once (see ``infinity_rag._flows``)."""
        if self._client is not None and self._shared_client is None:
            yield call(self._client.close, self._client.aclose)()
            self._client = None

    def _ready(self) -> InfinityClient:
        self.warm_up()
        assert self._client is not None
        return self._client

    # --- serialization ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The component as a dictionary (for ``Pipeline.dumps`` / YAML): its constructor's
        arguments. The API key is saved as its environment variable's name; a token
        ``Secret`` raises ``ValueError``. A shared ``client`` is saved as its URL(s), timeout
        retries and deadline (its key as ``api_key``'s variable, which must hold the same key);
        loading builds a client of its own."""
        names = inspect.signature(type(self).__init__).parameters
        parameters = {name: getattr(self, name) for name in names if name not in _NOT_SAVED}
        if self._shared_client is not None:
            parameters.update(_client_settings(self._shared_client, self.api_key))
            if self.max_concurrency is None:
                parameters["max_concurrency"] = self._shared_client.max_concurrency
        return default_to_dict(self, **parameters)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The component :meth:`to_dict` saved (the key read from its environment variable
        when the component first runs)."""
        return default_from_dict(cls, data)


# --- the connection settings' checks ------------------------------------------------------------


def _check_model(model: object, owner: str) -> str:
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"{owner}: model must be the served model's name, got {model!r:.80}")
    return model


def _check_base_url(base_url: str | list[str] | None) -> str | list[str] | None:
    if base_url is None:
        return None
    resolve_base_urls(base_url)  # a bad URL fails here, with the URL only
    return list(base_url) if isinstance(base_url, list | tuple) else base_url


def _check_api_key(api_key: object, owner: str) -> Secret:
    if not isinstance(api_key, Secret):
        # Never echo the value: it is probably the key itself.
        raise TypeError(
            f"{owner}: api_key must be a haystack Secret, such as "
            f'Secret.from_env_var("{API_KEY_ENV_VAR}") or Secret.from_token(...), '
            f"got a {type(api_key).__name__}"
        )
    return api_key


def _check_seconds(seconds: float | None, name: str, owner: str) -> float | None:
    if seconds is not None and (
        isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or seconds <= 0
    ):
        raise ValueError(f"{owner}: {name} must be a number of seconds > 0, got {seconds!r}")
    return seconds


def _check_client(client: object, owner: str, settings_passed: list[str]) -> None:
    if not isinstance(client, InfinityClient):
        raise TypeError(f"{owner}: client must be an InfinityClient, got {type(client).__name__}")
    if settings_passed:
        raise settings_clash_with_client(settings_passed)


def _client_settings(client: InfinityClient, api_key: Secret) -> dict[str, Any]:
    """A shared client's settings as constructor arguments, or a ``ValueError`` when they
    cannot be saved as such (without ever showing the key)."""
    if client.api_key is not None and api_key.resolve_value() != client.api_key.get_secret_value():
        raise ValueError(
            "This component's shared InfinityClient holds an API key that cannot be saved: "
            "the saved component reads its key from the environment variable of api_key "
            f"({', '.join(api_key.to_dict()['env_vars'])}), which does not hold the same key. "
            "Set that variable to the key, or build the component without client=."
        )
    timeout = client.timeout
    if timeout is not None and not isinstance(timeout, int | float):
        raise ValueError(
            "This component's shared InfinityClient has an httpx.Timeout, which cannot be "
            "saved; give it a number of seconds, or build the component without client=."
        )
    return {
        "base_url": resolve_base_url_field(client.base_urls),
        "timeout": timeout,
        "max_retries": client.retry.max_retries,
        "deadline": client.deadline,
    }


# --- checks and helpers the components share ---------------------------------------------------


def check_documents(documents: object, owner: str, instead: str | None = None) -> list[Document]:
    """A list of ``Document``s, or a ``TypeError`` saying which component takes what
    (``instead``: the component that embeds a string)."""
    if isinstance(documents, str):
        hint = f"; to embed a string, use {instead}" if instead else ""
        raise TypeError(f"{owner} expects a list of Documents, got a string{hint}.")
    if not isinstance(documents, list | tuple):
        raise TypeError(f"{owner} expects a list of Documents, got {type(documents).__name__}")
    for i, doc in enumerate(documents):
        if not isinstance(doc, Document):
            raise TypeError(
                f"{owner}: documents[{i}] must be a haystack Document, got {type(doc).__name__}"
            )
    return list(documents)


def check_meta_fields(value: object, owner: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise TypeError(f"{owner}: meta_fields_to_embed must be a list of meta keys, got {value!r}")
    for name in value:
        if not isinstance(name, str):
            raise TypeError(f"{owner}: meta_fields_to_embed holds a non-string key: {name!r}")
    return list(value)


def check_strings(owner: str, **values: object) -> None:
    for name, value in values.items():
        if not isinstance(value, str):
            raise TypeError(f"{owner}: {name} must be a string, got {type(value).__name__}")


def check_optional_batch_size(value: object, limit: int) -> int | None:
    return None if value is None else check_batch_size(value, "batch_size", limit)


def check_dimensions(value: object) -> int | None:
    return None if value is None else check_positive_int(value, "dimensions")


def document_text(doc: Document, meta_fields: list[str], separator: str) -> str:
    """What is embedded or reranked for ``doc``: the listed meta values (those present and
    not ``None``), then its content, joined by ``separator``, as Haystack's embedders do."""
    parts = [str(doc.meta[key]) for key in meta_fields if doc.meta.get(key) is not None]
    return separator.join([*parts, doc.content or ""])


def new_document(doc: Document, **changes: Any) -> Document:
    """A copy of ``doc`` with ``changes``; its ``meta`` is copied too, so that nothing done
    to the new document reaches the caller's."""
    changes.setdefault("meta", deepcopy(doc.meta))
    return replace(doc, **changes)


def usage_meta(model: str, prompt_tokens: int, total_tokens: int) -> dict[str, Any]:
    """The ``meta`` output of the embedders, as Haystack's OpenAI embedders give it. Infinity
    counts characters in ``prompt_tokens`` unless it runs with ``--lengths-via-tokenize``."""
    return {
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": total_tokens},
    }
