"""OpenTelemetry for the client: a span per call, a child span per HTTP attempt, metrics.

:func:`make_observer` returns an :class:`~infinity_rag._observe.Observer` that the request
engine calls (see ``_observe.py``), or ``None`` when ``opentelemetry-api`` is not installed.
Nothing here is imported by ``import infinity_rag``; opentelemetry itself is imported only when
an observer is made (a client is built) and the package is there.

What is emitted (docs/tracing.md has the tables):

- a span per client call, kind CLIENT, named ``"{operation} {model}"``, child of the caller's
  current span, with the GenAI semantic conventions' attributes (``gen_ai.provider.name`` is
  ``"infinity"``: the conventions' registry has no well-known value for it);
- a child span per HTTP attempt, as opentelemetry-python-contrib's httpx instrumentation makes
  them (HTTP client conventions), with the retry number, why it was retried, whether it is a
  hedged copy, and ``infinity_rag.attempt.cancelled`` (not an error) when the engine abandoned
  it;
- W3C trace context (``traceparent``, ``tracestate``, baggage) for each attempt's headers;
- ``gen_ai.client.operation.duration`` and ``http.client.request.duration`` histograms, and two
  observable gauges of the replicas' state (registered once per meter provider, fed by every
  live client).

The tracer and meter come from the global providers (or the ones given, for tests) when the
observer is made: before an SDK is configured those are the API's proxies, which pick up the
SDK's tracer and meter once one is set, as the contrib instrumentations rely on. Without an
SDK every span is the API's non-recording span and no attribute is built.

Wiring (the engine's side): ``self._observer = _otel.make_observer(self.replicas)`` once per
client (``None``: skip every hook); ``observation = observer.call(CallInfo(...))`` in the
caller's thread or task before anything is sent; per HTTP request
``attempt = observation.attempt(AttemptInfo(...))``, its ``attempt.headers()`` added to the
request's headers, ``attempt.finish(status, error)`` when it ends (``CancelledError`` when
abandoned); ``observation.finish(result, error)`` once at the end.

No texts, documents or headers reach an observer, so no content and no API key can land in a
span. Exceptions are recorded as an ``exception`` event with their type and message only (no
stack trace: its source lines are the caller's code, which may hold a key literal); the
client's own messages never contain the key (``errors.py``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from infinity_rag._observe import AttemptInfo, CallInfo
from infinity_rag._version import __version__

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.metrics import CallbackOptions, Histogram, Meter, MeterProvider
    from opentelemetry.metrics import Observation as ObservationT
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from infinity_rag._observe import AttemptObservation, CallObservation, Observer
    from infinity_rag.types import ReplicaState

__all__ = ["PROVIDER_NAME", "make_observer", "otel_available"]

#: ``gen_ai.provider.name``: Infinity is not among the registry's well-known values (openai,
#: cohere, aws.bedrock, ...), which allows a custom value; the server's project name is used.
PROVIDER_NAME = "infinity"
SCOPE = "infinity_rag"
#: The semantic conventions version whose GenAI attributes are emitted (gen_ai.provider.name).
SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"

#: gen_ai.client.operation.duration: the conventions' ExplicitBucketBoundaries.
OPERATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                     40.96, 81.92)  # fmt: skip
#: http.client.request.duration: the HTTP conventions' ExplicitBucketBoundaries.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

#: The ``error.type`` of an attempt or call that was cancelled is never set: not an error.
CANCELLED = "infinity_rag.attempt.cancelled"


@cache
def otel_available() -> bool:
    """Whether ``opentelemetry-api`` can be imported (looked up once, imports nothing)."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):  # a blocked or broken ``opentelemetry`` package
        return False


def make_observer(
    replica_states: Callable[[], list[ReplicaState]],
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> Observer | None:
    """The OpenTelemetry observer of a client, or ``None`` without ``opentelemetry-api``.

    ``replica_states`` is the client's ``replicas`` (a bound method is held weakly: a client
    that goes away stops being reported by the gauges). ``tracer_provider`` /
    ``meter_provider`` default to the global ones (for tests: pass an SDK's own).
    """
    if not otel_available():
        return None
    return _OtelObserver(replica_states, tracer_provider, meter_provider)


# --- instruments, once per meter provider -------------------------------------------------------


class _Instruments:
    """The histograms and gauges of one meter provider, and the clients its gauges report."""

    def __init__(self, meter: Meter) -> None:
        self.operation_duration: Histogram = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(OPERATION_BUCKETS),
        )
        self.request_duration: Histogram = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=list(HTTP_BUCKETS),
        )
        self._sources: dict[int, weakref.ref[Any]] = {}
        self._lock = threading.Lock()
        meter.create_observable_gauge(
            "infinity_rag.replica.requests_in_flight",
            callbacks=[self._in_flight],
            unit="{request}",
            description="Requests a replica has in flight now (summed over live clients).",
        )
        meter.create_observable_gauge(
            "infinity_rag.replica.out_of_rotation",
            callbacks=[self._out_of_rotation],
            unit="1",
            description="1 while a replica is out of rotation (after failures or a 429), else 0.",
        )

    def watch(self, states: Callable[[], list[ReplicaState]]) -> None:
        key = id(states.__self__) if inspect.ismethod(states) else id(states)
        ref: weakref.ref[Any]

        def forget(_: object, key: int = key) -> None:
            with self._lock:
                if self._sources.get(key) is ref:
                    del self._sources[key]

        if inspect.ismethod(states):
            ref = weakref.WeakMethod(states, forget)
        else:
            ref = weakref.ref(states, forget)
        with self._lock:
            self._sources[key] = ref

    def _replicas(self) -> dict[tuple[str, int | None], tuple[int, int]]:
        """(address, port) -> (requests in flight, out of rotation) over every live client."""
        with self._lock:
            refs = list(self._sources.values())
        seen: dict[tuple[str, int | None], tuple[int, int]] = {}
        now = time.time()
        for ref in refs:
            states = ref()
            if states is None:
                continue
            try:
                replicas = states()
            except Exception:  # a client being torn down must not break the collection
                continue
            for replica in replicas:
                where = _address(replica.url)
                out = int(replica.out_until is not None and replica.out_until > now)
                in_flight, was_out = seen.get(where, (0, 0))
                seen[where] = (in_flight + replica.in_flight, max(was_out, out))
        return seen

    def _in_flight(self, options: CallbackOptions) -> Iterable[ObservationT]:
        from opentelemetry.metrics import Observation

        for (address, port), (in_flight, _) in self._replicas().items():
            yield Observation(in_flight, _server(address, port))

    def _out_of_rotation(self, options: CallbackOptions) -> Iterable[ObservationT]:
        from opentelemetry.metrics import Observation

        for (address, port), (_, out) in self._replicas().items():
            yield Observation(out, _server(address, port))


_INSTRUMENTS: dict[int, tuple[object, _Instruments]] = {}
_INSTRUMENTS_LOCK = threading.Lock()


def _instruments(meter_provider: MeterProvider | None) -> _Instruments:
    """One set of instruments per meter provider (``None``: the global one, whose proxy meter
    hands its instruments over to the SDK's once one is set)."""
    key = id(meter_provider)
    with _INSTRUMENTS_LOCK:
        found = _INSTRUMENTS.get(key)
        if found is not None and found[0] is meter_provider:
            return found[1]
        from opentelemetry import metrics

        meter = metrics.get_meter(
            SCOPE, __version__, meter_provider=meter_provider, schema_url=SCHEMA_URL
        )
        made = _Instruments(meter)
        _INSTRUMENTS[key] = (meter_provider, made)
        return made


def _server(address: str, port: int | None) -> dict[str, Any]:
    return {"server.address": address} if port is None else {
        "server.address": address, "server.port": port
    }  # fmt: skip


def _split(url: str) -> tuple[str, str, bool, str]:
    """(scheme, host[:port], whether credentials were there, path) of ``url``, by hand: the
    client shows a masked password as ``[secure]``, which ``urlsplit`` takes for an IPv6
    address and refuses."""
    scheme, _, rest = url.partition("://")
    end = len(rest)
    for mark in "/?#":
        found = rest.find(mark)
        if found != -1:
            end = min(end, found)
    netloc, tail = rest[:end], rest[end:]
    credentials = "@" in netloc
    if credentials:
        netloc = netloc.rpartition("@")[2]
    path = tail.partition("?")[0].partition("#")[0]
    return scheme.lower(), netloc, credentials, path


@lru_cache(maxsize=256)
def _address(url: str) -> tuple[str, int | None]:
    """(server.address, server.port) of a replica's URL (the scheme's port when none)."""
    scheme, netloc, _, _ = _split(url)
    if netloc.startswith("["):  # an IPv6 literal
        host, _, after = netloc[1:].partition("]")
        port_text = after[1:] if after.startswith(":") else ""
    else:
        host, _, port_text = netloc.partition(":")
    port = int(port_text) if port_text.isdigit() else {"http": 80, "https": 443}.get(scheme)
    return host, port


@lru_cache(maxsize=256)
def _url_attributes(url: str, method: str) -> tuple[str, str, str]:
    """(span name, url.template, url.full) of an attempt: credentials ``REDACTED`` as the
    conventions ask, no query string nor fragment."""
    scheme, netloc, credentials, path = _split(url)
    path = path or "/"
    if credentials:
        netloc = "REDACTED:REDACTED@" + netloc
    return f"{method} {path}", path, f"{scheme}://{netloc}{path}"


# --- the observer ---------------------------------------------------------------------------------


class _Api:
    """What the hot path uses of opentelemetry, imported once (when the first observer is
    made): no import statement runs per call."""

    def __init__(self) -> None:
        from opentelemetry import baggage, context, propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.current_context = context.get_current
        self.with_span = trace.set_span_in_context
        self.inject = propagate.inject
        self.baggage = baggage.get_all
        self.client_kind = SpanKind.CLIENT
        self.status = Status
        self.error_code = StatusCode.ERROR


@cache
def _api() -> _Api:
    return _Api()


class _OtelObserver:
    __slots__ = ("_api", "_instruments", "_tracer")

    def __init__(
        self,
        replica_states: Callable[[], list[ReplicaState]],
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
    ) -> None:
        from opentelemetry import trace

        self._tracer: Tracer = trace.get_tracer(
            SCOPE, __version__, tracer_provider=tracer_provider, schema_url=SCHEMA_URL
        )
        self._api = _api()
        self._instruments = _instruments(meter_provider)
        self._instruments.watch(replica_states)

    def call(self, info: CallInfo) -> CallObservation:
        api = self._api
        name = info.operation if info.model is None else f"{info.operation} {info.model}"
        parent = api.current_context()
        span = self._tracer.start_span(name, context=parent, kind=api.client_kind)
        if span.is_recording():
            span.set_attributes(_call_attributes(info))
        return _Call(self, info, span, api.with_span(span, parent))


def _call_attributes(info: CallInfo) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": info.operation,
        "gen_ai.provider.name": PROVIDER_NAME,
    }
    if info.model is not None:
        attributes["gen_ai.request.model"] = info.model
    facts = info.attributes
    if (fmt := facts.get("encoding_format")) is not None:
        attributes["gen_ai.request.encoding_formats"] = [str(fmt)]
    if isinstance(dimensions := facts.get("dimensions"), int):
        attributes["gen_ai.embeddings.dimension.count"] = dimensions
    for fact, key in (
        ("input_count", "infinity_rag.request.input_count"),
        ("modality", "infinity_rag.request.modality"),
        ("document_count", "infinity_rag.rerank.document_count"),
        ("top_n", "infinity_rag.rerank.top_n"),
    ):
        value = facts.get(fact)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            attributes[key] = value
    return attributes


def _error_type(error: BaseException) -> str:
    return type(error).__qualname__


def _record_error(span: Span, error: BaseException) -> None:
    """The conventions' ``exception`` event, without the stack trace (see the module's doc)."""
    kind = type(error)
    span.add_event(
        "exception",
        {
            "exception.type": f"{kind.__module__}.{kind.__qualname__}",
            "exception.message": str(error),
        },
    )


class _Call:
    __slots__ = ("_answered", "_context", "_info", "_last", "_observer", "_span", "_started")

    def __init__(
        self, observer: _OtelObserver, info: CallInfo, span: Span, context: Context
    ) -> None:
        self._observer = observer
        self._info = info
        self._span = span
        self._context = context  # the caller's, with this call's span: attempts' parent
        self._started = time.perf_counter()
        #: Replicas that answered 2xx, in order; the last one tried (for a call that failed).
        self._answered: list[tuple[str, int | None]] = []
        self._last: tuple[str, int | None] | None = None

    def attempt(self, info: AttemptInfo) -> AttemptObservation:
        name, template, full = _url_attributes(info.url, info.method)
        observer = self._observer
        span = observer._tracer.start_span(
            name, context=self._context, kind=observer._api.client_kind
        )
        if span.is_recording():
            attributes: dict[str, Any] = {
                "http.request.method": info.method,
                "server.address": info.server_address,
                "url.full": full,
                "url.template": template,
                "infinity_rag.hedge": info.hedge,
                "infinity_rag.request.input_count": info.items,
            }
            if info.server_port is not None:
                attributes["server.port"] = info.server_port
            if info.retry:
                attributes["http.request.resend_count"] = info.retry
            if info.retry_reason is not None:
                attributes["infinity_rag.retry.reason"] = info.retry_reason
            span.set_attributes(attributes)
        self._last = (info.server_address, info.server_port)
        return _Attempt(self, info, span)

    def finish(self, result: object | None, error: BaseException | None) -> None:
        duration = time.perf_counter() - self._started
        span = self._span
        info = self._info
        answered = dict.fromkeys(self._answered)
        if len(answered) == 1:
            server: tuple[str, int | None] | None = next(iter(answered))
        elif not answered:
            server = self._last
        else:
            server = None  # several replicas answered parts of the call: see the attempts
        response_model = getattr(result, "model", None) if result is not None else None
        error_type = None
        cancelled = isinstance(error, asyncio.CancelledError)
        if error is not None and not cancelled:
            error_type = _error_type(error)
        if span.is_recording():
            attributes: dict[str, Any] = {}
            if server is not None:
                attributes.update(_server(*server))
            elif answered:
                attributes["infinity_rag.servers"] = [
                    f"{address}:{port}" if port is not None else address
                    for address, port in answered
                ]
            if isinstance(response_model, str):
                attributes["gen_ai.response.model"] = response_model
            if result is not None:
                dimensions = _dimensions(result)
                if dimensions is not None:
                    attributes["gen_ai.embeddings.dimension.count"] = dimensions
                usage = getattr(result, "usage", None)
                prompt = getattr(usage, "prompt_tokens", None)
                if isinstance(prompt, int):
                    attributes["infinity_rag.usage.prompt_tokens"] = prompt
            _set_outcome(span, attributes, cancelled, error_type)
            if error is not None and not cancelled:
                api = self._observer._api
                _record_error(span, error)
                span.set_status(api.status(api.error_code, f"{error_type}: {error}"[:500]))
        span.end()
        if cancelled:
            return  # a cut-short duration would only skew the histogram
        metric: dict[str, Any] = {
            "gen_ai.operation.name": info.operation,
            "gen_ai.provider.name": PROVIDER_NAME,
        }
        if info.model is not None:
            metric["gen_ai.request.model"] = info.model
        if isinstance(response_model, str):
            metric["gen_ai.response.model"] = response_model
        if server is not None:
            metric.update(_server(*server))
        if error_type is not None:
            metric["error.type"] = error_type
        self._observer._instruments.operation_duration.record(duration, metric)


def _dimensions(result: object) -> int | None:
    """The vectors' dimensionality of an embeddings result (``None`` for other results)."""
    dimensions = getattr(result, "dimensions", None)
    if isinstance(dimensions, int):
        return dimensions
    embeddings = getattr(result, "embeddings", None)
    shape = getattr(embeddings, "shape", None)
    if isinstance(shape, tuple) and len(shape) == 2:
        return int(shape[1])
    if isinstance(embeddings, list) and embeddings and isinstance(embeddings[0], list):
        return len(embeddings[0])
    return None


class _Attempt:
    __slots__ = ("_call", "_info", "_span", "_started")

    def __init__(self, call: _Call, info: AttemptInfo, span: Span) -> None:
        self._call = call
        self._info = info
        self._span = span
        self._started = time.perf_counter()

    def headers(self) -> Mapping[str, str]:
        call = self._call
        api = call._observer._api
        if not self._span.get_span_context().is_valid and not api.baggage(call._context):
            return {}  # nothing to propagate (no SDK, no incoming trace): skip the propagators
        carrier: dict[str, str] = {}
        api.inject(carrier, context=api.with_span(self._span, call._context))
        return carrier

    def finish(self, status_code: int | None, error: BaseException | None) -> None:
        duration = time.perf_counter() - self._started
        span = self._span
        info = self._info
        cancelled = isinstance(error, asyncio.CancelledError)
        error_type: str | None = None
        if status_code is not None and status_code >= 400:
            error_type = str(status_code)  # the HTTP conventions: the status, as a string
        elif error is not None and not cancelled:
            error_type = _error_type(error)
        if status_code is not None and status_code < 400 and error is None:
            self._call._answered.append((info.server_address, info.server_port))
        if span.is_recording():
            attributes: dict[str, Any] = {}
            if status_code is not None:
                attributes["http.response.status_code"] = status_code
            _set_outcome(span, attributes, cancelled, error_type)
            if error_type is not None:
                api = self._call._observer._api
                if error is not None:
                    _record_error(span, error)
                span.set_status(api.status(api.error_code, error_type))
        span.end()
        if cancelled:
            return
        metric: dict[str, Any] = {
            "http.request.method": info.method,
            "server.address": info.server_address,
        }
        if info.server_port is not None:
            metric["server.port"] = info.server_port
        if status_code is not None:
            metric["http.response.status_code"] = status_code
        if error_type is not None:
            metric["error.type"] = error_type
        self._call._observer._instruments.request_duration.record(duration, metric)


def _set_outcome(
    span: Span, attributes: dict[str, Any], cancelled: bool, error_type: str | None
) -> None:
    """``attributes`` set on ``span`` with how it ended (cancelled, or its error's type)."""
    if cancelled:
        attributes[CANCELLED] = True
    if error_type is not None:
        attributes["error.type"] = error_type
    span.set_attributes(attributes)
