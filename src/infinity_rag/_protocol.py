"""Infinity's wire protocol and its operations, without any I/O.

Each client method is an *operation*: a generator that yields :class:`Fanout` s (requests to
send at once, each an *exchange*) and receives their results, then returns the method's result.
An exchange is a generator too, in the shape of httpx's ``auth_flow``: it yields a
:class:`Request`, receives the decoded JSON answer (or has the error raised at its ``yield``),
may yield a follow-up request, and returns its part. Follow-ups and re-plans are straight-line
code (``try: payload = yield request / except ...``); the engine (``infinity_rag._engine``)
only sends, retries, and hands answers back. Everything that can be wrong with an answer is
decided here, once for both I/O paths.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from array import array
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeAlias, TypeVar

from infinity_rag import errors
from infinity_rag.errors import InfinityAPIError, InvalidResponseError
from infinity_rag.types import (
    ClassifyResult,
    ClassLabel,
    ModelInfo,
    RerankItem,
    RerankResult,
    Usage,
)

T = TypeVar("T")
R = TypeVar("R")

JSON = Any  # what json.loads returns
Modality = Literal["text", "image", "audio"]


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request, as an exchange yields it.

    ``items`` is how many inputs it carries (progress reporting, observers).
    ``outside_prefix`` marks routes served at the server's root (``/health``).
    ``ints_as_floats`` has the JSON decoder make floats of integers: an answer made of
    numbers (embeddings) is then ready without a Python pass over every value.
    ``every_replica_once`` tries each replica once, without pauses, on any error (``/health``)
    instead of the client's retry policy.
    """

    method: Literal["GET", "POST"]
    route: str
    body: dict[str, Any] | None = None
    items: int = 0
    outside_prefix: bool = False
    ints_as_floats: bool = False
    every_replica_once: bool = False


#: One request's conversation: yields requests, receives decoded answers, returns its part.
Exchange: TypeAlias = Generator[Request, JSON, T]


@dataclass(frozen=True, slots=True)
class Fanout(Generic[T]):
    """Exchanges an operation wants run at once (at most ``max_concurrency`` in flight); it
    receives their parts in this order, or the first error (the others are then cancelled)."""

    exchanges: list[Exchange[T]]


#: A client method's flow: yields fanouts, receives their parts, returns the result.
Operation: TypeAlias = Generator[Fanout[Any], list[Any], R]


def exchange(request: Request, parse: Callable[[JSON], T]) -> Exchange[T]:
    """The plain exchange: one request, its answer parsed."""
    payload = yield request
    return parse(payload)


def finished(result: R) -> Operation[R]:
    """An operation that needs no request."""
    yield from ()
    return result


def run_parallel(exchanges: list[Exchange[T]]) -> Generator[Fanout[T], list[Any], list[T]]:
    """Within an operation: ``parts = yield from run_parallel(exchanges)`` (none: no fanout)."""
    if not exchanges:
        return []
    parts: list[T] = yield Fanout(exchanges)
    return parts


def chunks(count: int, size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` bounds splitting ``count`` items into runs of at most ``size``."""
    return [(start, min(start + size, count)) for start in range(0, count, size)]


def _body(fields: dict[str, Any], extra_body: Mapping[str, Any] | None) -> dict[str, Any]:
    # Unset optional fields are left out so that proxies (LiteLLM) see only what was asked for;
    # extra_body goes last so a provider parameter can override what the client set.
    body = {key: value for key, value in fields.items() if value is not None}
    if extra_body:
        body.update(extra_body)
    return body


# --- embeddings ------------------------------------------------------------------------------

_LITTLE_ENDIAN = sys.byteorder == "little"


def decode_base64_vector(data: str) -> list[float]:
    """Infinity's base64 embedding: little-endian float32, decoded to Python floats."""
    return float32_values(base64.b64decode(data))


def float32_values(raw: bytes) -> list[float]:
    """Little-endian float32 bytes as Python floats."""
    if len(raw) % 4:
        raise InvalidResponseError(
            f"base64 embedding has {len(raw)} bytes, not a whole number of float32 values"
        )
    vector = array("f")
    vector.frombytes(raw)
    if not _LITTLE_ENDIAN:
        vector.byteswap()
    return vector.tolist()


def embed_body(
    inputs: list[str],
    *,
    model: str | None,
    encoding_format: Literal["float", "base64"],
    dimensions: int | None,
    modality: Modality,
    extra_body: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The body of one ``POST /embeddings``."""
    return _body(
        {
            "model": model,
            "input": inputs,
            "encoding_format": encoding_format,
            "dimensions": dimensions,
            # "text" is the server's default; leaving it out keeps proxies that do not
            # know the parameter working.
            "modality": None if modality == "text" else modality,
        },
        extra_body,
    )


def embedding_items(
    payload: JSON, expected: int, *, check_numbers: bool = True
) -> list[tuple[int, Any]]:
    """``(index, embedding)`` of each item of an answer: every index once, in 0..expected-1.

    Each embedding is a list or a base64 string; ``check_numbers`` also checks that a list
    holds only numbers (a multi-vector answer's lists hold lists: its reader checks them).
    """
    data = _field(payload, "data", list)
    if len(data) != expected:
        raise InvalidResponseError(
            f"asked for {expected} embeddings, the server returned {len(data)}"
        )
    seen = [False] * expected
    items = []
    for position, item in enumerate(data):
        index = _integer(item.get("index", position)) if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < expected:
            raise InvalidResponseError(f"embedding with index {index!r} out of 0..{expected - 1}")
        if seen[index]:
            raise InvalidResponseError(f"the server returned index {index} twice")
        seen[index] = True
        embedding = item.get("embedding")
        if isinstance(embedding, list):
            if check_numbers:
                check_floats(embedding, index)
        elif not isinstance(embedding, str):
            raise InvalidResponseError(f"embedding {index} is neither a list nor base64")
        items.append((index, embedding))
    return items


def base64_rows(payload: JSON, expected: int) -> tuple[list[int] | None, list[str]] | None:
    """The fast path for a well-formed base64 answer: its embeddings and where they go
    (``None``: in order). ``None`` when anything is unusual; the careful path then says what."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or len(data) != expected:
        return None
    try:
        indices = [item["index"] for item in data]
        embeddings = [item["embedding"] for item in data]
    except (TypeError, KeyError):
        return None
    if set(map(type, embeddings)) != {str}:
        return None
    if not all(type(i) is float or type(i) is int for i in indices):
        return None
    in_order = list(range(expected))
    if indices == in_order:
        return None, embeddings
    if sorted(indices) != in_order:  # repeated, missing or out of range
        return None
    return [int(i) for i in indices], embeddings


def check_floats(values: list[Any], index: int) -> list[float]:
    # The answer was decoded with ints_as_floats, so a number here is already a float (a proxy
    # re-serialising 0.0 as 0 included). sum() checks that every value is a number at C speed;
    # a Python float() per value made JSON-float answers 10% slower than other clients'
    # (benchmarks/RESULTS.md, scenario A).
    try:
        sum(values)
    except TypeError:
        raise InvalidResponseError(
            f"embedding {index} holds a value that is not a number"
        ) from None
    return values


def _integer(value: Any) -> Any:
    """An integral float (from an ``ints_as_floats`` decode) back to an int; else unchanged."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


# --- rerank ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _RerankPart:
    items: list[RerankItem]
    model: str
    usage: Usage


@dataclass(frozen=True, slots=True)
class Rerank:
    """A rerank call's checked arguments (however it is run: ``/rerank`` or MaxSim)."""

    query: str
    documents: Sequence[str]
    model: str | None
    top_n: int | None
    raw_scores: bool
    return_documents: bool
    extra_body: Mapping[str, Any] | None


def rerank_operation(rerank: Rerank, batch_size: int) -> Operation[RerankResult]:
    """Score ``documents`` against ``query``; past ``batch_size`` they are split and merged.

    ``top_n`` larger than the number of documents returns them all. With several chunks each
    asks for at most ``top_n`` (the overall best are among each chunk's best), and ``top_n``
    is applied again to the merged list.
    """
    query, documents, model, top_n = rerank.query, rerank.documents, rerank.model, rerank.top_n
    exchanges = []
    for start, stop in chunks(len(documents), batch_size):
        chunk_top_n = None if top_n is None else min(top_n, stop - start)
        body = _body(
            {
                "model": model,
                "query": query,
                "documents": list(documents[start:stop]),
                "top_n": chunk_top_n,
                "return_documents": rerank.return_documents,
                "raw_scores": True if rerank.raw_scores else None,
            },
            rerank.extra_body,
        )
        expected = stop - start if chunk_top_n is None else chunk_top_n
        request = Request("POST", "/rerank", body, items=stop - start)
        exchanges.append(exchange(request, _rerank_parser(start, stop, expected)))
    return _merged_ranking(exchanges, model, top_n)


def _merged_ranking(
    exchanges: list[Exchange[_RerankPart]], model: str | None, top_n: int | None
) -> Operation[RerankResult]:
    parts = yield from run_parallel(exchanges)
    items = rank_items([item for part in parts for item in part.items], top_n)
    return RerankResult(items, _first_model(parts, model), _total_usage(parts))


def rank_items(items: list[RerankItem], top_n: int | None) -> list[RerankItem]:
    """``items`` highest score first (equal scores keep the documents' order), the best
    ``top_n`` of them (``None``: all)."""
    items = sorted(items, key=lambda item: (-item.relevance_score, item.index))
    return items if top_n is None else items[:top_n]


def _rerank_parser(start: int, stop: int, expected: int) -> Callable[[JSON], _RerankPart]:
    def parse(payload: JSON) -> _RerankPart:
        results = _field(payload, "results", list)
        if len(results) != expected:
            raise InvalidResponseError(
                f"asked for {expected} rerank results, the server returned {len(results)}"
            )
        seen: set[int] = set()
        items = []
        for result in results:
            index = result.get("index") if isinstance(result, dict) else None
            score = result.get("relevance_score") if isinstance(result, dict) else None
            if not isinstance(index, int) or not 0 <= index < stop - start or index in seen:
                raise InvalidResponseError(f"rerank result with bad or repeated index {index!r}")
            if not isinstance(score, int | float) or isinstance(score, bool):
                raise InvalidResponseError(f"rerank result {index} has no numeric relevance_score")
            seen.add(index)
            document = result.get("document")
            if isinstance(document, dict):  # Cohere / LiteLLM shape: {"text": ...}
                document = document.get("text")
            items.append(
                RerankItem(
                    start + index,
                    float(score),
                    document if isinstance(document, str) else None,
                )
            )
        return _RerankPart(items, str(payload.get("model", "")), parse_usage(payload))

    return parse


# --- classify --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ClassifyPart:
    results: list[list[ClassLabel]]
    model: str
    usage: Usage


def classify_operation(
    texts: Sequence[str],
    *,
    model: str | None,
    raw_scores: bool,
    extra_body: Mapping[str, Any] | None,
    batch_size: int,
) -> Operation[ClassifyResult]:
    exchanges = []
    for start, stop in chunks(len(texts), batch_size):
        body = _body(
            {
                "model": model,
                "input": list(texts[start:stop]),
                "raw_scores": True if raw_scores else None,
            },
            extra_body,
        )
        request = Request("POST", "/classify", body, items=stop - start)
        exchanges.append(exchange(request, _classify_parser(stop - start)))
    return _classifications(exchanges, model)


def _classifications(
    exchanges: list[Exchange[_ClassifyPart]], model: str | None
) -> Operation[ClassifyResult]:
    parts = yield from run_parallel(exchanges)
    results = [labels for part in parts for labels in part.results]
    return ClassifyResult(results, _first_model(parts, model), _total_usage(parts))


def _classify_parser(expected: int) -> Callable[[JSON], _ClassifyPart]:
    def parse(payload: JSON) -> _ClassifyPart:
        data = _field(payload, "data", list)
        if len(data) != expected:
            raise InvalidResponseError(
                f"asked to classify {expected} texts, the server returned {len(data)}"
            )
        results = []
        for labels in data:
            if not isinstance(labels, list):
                raise InvalidResponseError("a classification is not a list of labels")
            parsed = [_class_label(label) for label in labels]
            parsed.sort(key=lambda label: -label.score)
            results.append(parsed)
        return _ClassifyPart(results, str(payload.get("model", "")), parse_usage(payload))

    return parse


def _class_label(label: JSON) -> ClassLabel:
    if not isinstance(label, dict) or not isinstance(label.get("score"), int | float):
        raise InvalidResponseError(f"bad classification label {label!r:.80}")
    return ClassLabel(str(label.get("label")), float(label["score"]))


# --- models and health -----------------------------------------------------------------------


def models_operation() -> Operation[list[ModelInfo]]:
    (models,) = yield Fanout([exchange(Request("GET", "/models"), _parse_models)])
    return models  # type: ignore[no-any-return]


def _parse_models(payload: JSON) -> list[ModelInfo]:
    models = []
    for entry in _field(payload, "data", list):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise InvalidResponseError(f"bad model entry {entry!r:.80}")
        capabilities = entry.get("capabilities") or []
        models.append(
            ModelInfo(
                id=entry["id"],
                capabilities=frozenset(str(c) for c in capabilities),
                backend=entry.get("backend"),
                owned_by=entry.get("owned_by"),
                created=entry.get("created"),
                raw=entry,
            )
        )
    return models


def health_operation() -> Operation[bool]:
    """``GET /health`` on one replica after another until one answers 200."""
    request = Request("GET", "/health", outside_prefix=True, every_replica_once=True)
    yield Fanout([exchange(request, lambda payload: True)])
    return True


# --- shared parsing --------------------------------------------------------------------------


def parse_usage(payload: JSON) -> Usage:
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(usage, dict):
        return Usage()
    prompt = _integer(usage.get("prompt_tokens"))
    total = _integer(usage.get("total_tokens", prompt))
    return Usage(prompt if isinstance(prompt, int) else 0, total if isinstance(total, int) else 0)


def _field(payload: JSON, name: str, kind: type) -> Any:
    value = payload.get(name) if isinstance(payload, dict) else None
    if not isinstance(value, kind):
        got = json.dumps(payload) if not isinstance(payload, str) else payload
        raise InvalidResponseError(
            f"the answer has no {name!r} {kind.__name__}; is this an Infinity server? "
            f"Got: {short_message(got)}"
        )
    return value


_Part = _RerankPart | _ClassifyPart


def _first_model(parts: Sequence[_Part], asked: str | None) -> str:
    return next((part.model for part in parts if part.model), asked or "")


def _total_usage(parts: Sequence[_Part]) -> Usage:
    total = Usage()
    for part in parts:
        total += part.usage
    return total


def decode_answer(
    request: Request, status_code: int, content: bytes, url: str, retry_after: str | None = None
) -> JSON:
    """A 2xx answer's JSON, or the error its status stands for (raised)."""
    if not 200 <= status_code < 300:
        error = error_from_response(status_code, content, url)
        error.retry_after = parse_retry_after(retry_after)
        raise error
    try:
        if request.ints_as_floats:
            return json.loads(content, parse_int=float)
        return json.loads(content)
    except ValueError:
        text = short_message(content.decode(errors="replace"))
        raise InvalidResponseError(f"HTTP {status_code} from {url} is not JSON: {text}") from None


# --- errors ----------------------------------------------------------------------------------

#: The longest server message an error carries (longer ones are cut, never echoed whole).
MAX_MESSAGE = 400
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def short_message(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line, cut to ``limit`` characters (with an ellipsis)."""
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_message(content: bytes) -> tuple[str, str | int | None]:
    """The server's message and code from either of Infinity's error bodies (or any text)."""
    text = content.decode("utf-8", errors="replace")
    try:
        body = json.loads(text)
    except ValueError:
        # An HTML page from a load balancer, or plain text: keep the words, drop the markup.
        return short_message(_TAG.sub(" ", text)) or "(empty body)", None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):  # 400 / 429 / 500
        error = body["error"]
        return short_message(str(error.get("message", error))), error.get("code")
    if isinstance(body, dict) and "detail" in body:  # FastAPI: 401 / 404 / 422
        detail = body["detail"]
        if isinstance(detail, list):  # validation errors; each echoes its input: drop it
            problems = [_validation_problem(item) for item in detail[:3]]
            more = f" (and {len(detail) - 3} more)" if len(detail) > 3 else ""
            return short_message("; ".join(problems) + more), None
        return short_message(str(detail)), None
    return short_message(text), None


def _validation_problem(item: JSON) -> str:
    if not isinstance(item, dict):
        return short_message(str(item), 120)
    location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
    message = str(item.get("msg", "invalid"))
    return f"{location}: {message}" if location else message


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (only the delta-seconds form), or ``None``."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds <= 60 else None


# Infinity 0.0.78 (fastapi_schemas/pymodels.py) answers a base64 request to a model served with
# --embedding-dtype ubinary / binary with a 500 whose message says so: the same every time.
_PACKING_REFUSAL = re.compile(
    r"does not support base64 encoding, as it uses uint8-bitpacking "
    r"with EmbeddingDtype\.(u?binary)\b"
)


def refused_packing(message: str) -> Literal["ubinary", "binary"] | None:
    """The packing named by Infinity's refusal of base64 for bit-packed vectors, else None."""
    match = _PACKING_REFUSAL.search(message)
    if match is None:
        return None
    return "ubinary" if match.group(1) == "ubinary" else "binary"


def error_from_response(status_code: int, content: bytes, url: str) -> InfinityAPIError:
    message, code = error_message(content)
    kind: type[InfinityAPIError]
    if status_code in (401, 403):
        kind = errors.AuthenticationError
        message += " (set api_key= or INFINITY_API_KEY to the server's --api-key)"
    elif status_code == 400 and "No connected db" in message:
        kind = (
            errors.AuthenticationError
        )  # LiteLLM without a database: the key is not its master key
        message += " (a LiteLLM proxy without a database accepts only its master key)"
    elif status_code == 404:
        kind = errors.NotFoundError
        message += " (check base_url: does the server use a --url-prefix such as /v1?)"
    elif status_code == 429:
        kind = errors.OverloadedError
    elif status_code >= 500 and refused_packing(message) is not None:
        kind = errors.EncodingRefusedError
    elif status_code >= 500:
        kind = errors.ServerError
    elif "ModelNotDeployedError" in message:
        kind = errors.ModelCapabilityError
    elif "Invalid model" in message or "model not found" in message.lower():
        kind = errors.ModelNotFoundError
    else:
        kind = errors.InvalidRequestError
    return kind(message, status_code=status_code, url=url, code=code)
