"""The OpenTelemetry observer (``infinity_rag._otel``), driven directly with the real SDK.

No engine and no socket: the tests play the engine's part (``Observer.call``, then
``attempt`` / ``finish``), with an in-memory span exporter and metric reader on providers made
for each test (the global providers are never touched here).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from infinity_rag import _otel
from infinity_rag._observe import AttemptInfo, CallInfo, Observer
from infinity_rag.errors import (
    AuthenticationError,
    InfinityConnectionError,
    ModelNotFoundError,
    ServerError,
)
from infinity_rag.types import EmbeddingResult, ReplicaState, RerankItem, RerankResult, Usage
from unit_tests.conftest import make_client
from unit_tests.fake_infinity import FakeInfinity

KEY = "sk-otel-test-7f3c9a1e5b2d4c6f8a0b"
URL = "http://10.0.0.7:7997"


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def observer(self, states: Any = None) -> Observer:
        made = _otel.make_observer(
            states if states is not None else _no_replicas,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
        )
        assert made is not None
        return made

    def finished(self) -> dict[str, ReadableSpan]:
        """The finished spans by name (names are unique in these tests unless said)."""
        return {span.name: span for span in self.spans.get_finished_spans()}

    def points(self, name: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found += list(metric.data.data_points)
        return found


def _no_replicas() -> list[ReplicaState]:
    return []


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Telemetry(spans, reader, tracer_provider, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


def attempt_info(**changes: Any) -> AttemptInfo:
    fields: dict[str, Any] = {
        "method": "POST",
        "route": "/embeddings",
        "url": f"{URL}/embeddings",
        "server_address": "10.0.0.7",
        "server_port": 7997,
        "retry": 0,
        "retry_reason": None,
        "hedge": False,
        "items": 3,
    }
    fields.update(changes)
    return AttemptInfo(**fields)


EMBED = CallInfo(
    "embeddings", "minilm", {"input_count": 3, "encoding_format": "base64", "modality": "text"}
)
RESULT = EmbeddingResult([[0.1, 0.2, 0.3, 0.4]] * 3, "minilm", Usage(42, 42))


def test_call_span_is_a_child_of_the_callers_span_and_attempts_its_children(
    otel: Telemetry,
) -> None:
    observer = otel.observer()
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("answer question") as parent:
        call = observer.call(EMBED)
    seen: list[AttemptInfo] = []

    def engine() -> None:  # attempts run on another thread, with no current span
        attempt = call.attempt(attempt_info())
        seen.append(attempt_info())
        attempt.finish(200, None)

    thread = threading.Thread(target=engine)
    thread.start()
    thread.join()
    call.finish(RESULT, None)

    spans = otel.finished()
    assert set(spans) == {"answer question", "embeddings minilm", "POST /embeddings"}
    call_span, attempt_span = spans["embeddings minilm"], spans["POST /embeddings"]
    assert call_span.kind is SpanKind.CLIENT
    assert attempt_span.kind is SpanKind.CLIENT
    assert call_span.parent is not None
    assert attempt_span.parent is not None
    assert call_span.parent.span_id == parent.get_span_context().span_id
    assert attempt_span.parent.span_id == call_span.context.span_id
    assert {s.context.trace_id for s in spans.values()} == {parent.get_span_context().trace_id}
    assert call_span.status.status_code is StatusCode.UNSET
    assert call_span.instrumentation_scope.name == "infinity_rag"


def test_call_and_attempt_attributes(otel: Telemetry) -> None:
    call = otel.observer().call(EMBED)
    call.attempt(attempt_info()).finish(200, None)
    call.finish(RESULT, None)
    spans = otel.finished()
    assert dict(spans["embeddings minilm"].attributes or {}) == {
        "gen_ai.operation.name": "embeddings",
        "gen_ai.provider.name": "infinity",
        "gen_ai.request.model": "minilm",
        "gen_ai.request.encoding_formats": ("base64",),
        "gen_ai.response.model": "minilm",
        "gen_ai.embeddings.dimension.count": 4,
        "server.address": "10.0.0.7",
        "server.port": 7997,
        "infinity_rag.request.input_count": 3,
        "infinity_rag.request.modality": "text",
        "infinity_rag.usage.prompt_tokens": 42,
    }
    assert dict(spans["POST /embeddings"].attributes or {}) == {
        "http.request.method": "POST",
        "server.address": "10.0.0.7",
        "server.port": 7997,
        "url.full": f"{URL}/embeddings",
        "url.template": "/embeddings",
        "http.response.status_code": 200,
        "infinity_rag.hedge": False,
        "infinity_rag.request.input_count": 3,
    }
    assert all("gen_ai.usage.input_tokens" not in (s.attributes or {}) for s in spans.values())


def test_no_model_names_the_span_after_the_operation(otel: Telemetry) -> None:
    call = otel.observer().call(CallInfo("embeddings", None, {"input_count": 1}))
    call.finish(EmbeddingResult([[1.0, 0.0]], "the-only-one"), None)
    span = otel.finished()["embeddings"]
    assert "gen_ai.request.model" not in (span.attributes or {})
    assert (span.attributes or {})["gen_ai.response.model"] == "the-only-one"


def test_rerank_records_counts_never_texts(otel: Telemetry) -> None:
    call = otel.observer().call(CallInfo("rerank", "reranker", {"document_count": 20, "top_n": 5}))
    call.attempt(attempt_info(route="/rerank", url=f"{URL}/rerank", items=20)).finish(200, None)
    call.finish(RerankResult([RerankItem(0, 0.9, "a secret document")], "reranker"), None)
    spans = otel.finished()
    attributes = dict(spans["rerank reranker"].attributes or {})
    assert attributes["gen_ai.operation.name"] == "rerank"
    assert attributes["infinity_rag.rerank.document_count"] == 20
    assert attributes["infinity_rag.rerank.top_n"] == 5
    assert "gen_ai.embeddings.dimension.count" not in attributes
    assert "a secret document" not in _dump(otel)
    assert "POST /rerank" in spans


def test_a_failed_call_has_an_error_status_and_error_type(otel: Telemetry) -> None:
    call = otel.observer().call(CallInfo("embeddings", "nope", {"input_count": 1}))
    error = ModelNotFoundError(
        "Engine for model name `nope` not found. Available model names are ['a', 'b']",
        status_code=400,
        url=f"{URL}/embeddings",
    )
    call.attempt(attempt_info()).finish(400, error)
    call.finish(None, error)
    spans = otel.finished()
    call_span, attempt_span = spans["embeddings nope"], spans["POST /embeddings"]
    assert call_span.status.status_code is StatusCode.ERROR
    assert (call_span.attributes or {})["error.type"] == "ModelNotFoundError"
    assert (call_span.attributes or {})["server.address"] == "10.0.0.7"  # the one tried
    assert attempt_span.status.status_code is StatusCode.ERROR
    assert (attempt_span.attributes or {})["error.type"] == "400"  # the HTTP conventions
    assert (attempt_span.attributes or {})["http.response.status_code"] == 400
    [event] = call_span.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.type"] == "infinity_rag.errors.ModelNotFoundError"
    assert "exception.stacktrace" not in (event.attributes or {})


def test_connection_errors_retries_and_hedges_are_attempt_attributes(otel: Telemetry) -> None:
    call = otel.observer().call(EMBED)
    first = call.attempt(attempt_info())
    first.finish(None, InfinityConnectionError("connection refused", url=URL))
    second = call.attempt(
        attempt_info(
            retry=1,
            retry_reason="InfinityConnectionError",
            url="http://10.0.0.8:7997/embeddings",
            server_address="10.0.0.8",
        )
    )
    hedge = call.attempt(attempt_info(retry=1, hedge=True, url="http://10.0.0.9:7997/embeddings",
                                      server_address="10.0.0.9"))  # fmt: skip
    second.finish(200, None)
    hedge.finish(None, asyncio.CancelledError())
    call.finish(RESULT, None)

    attempts = [s for s in otel.spans.get_finished_spans() if s.name == "POST /embeddings"]
    by_server = {(s.attributes or {})["server.address"]: s for s in attempts}
    refused = by_server["10.0.0.7"]
    assert refused.status.status_code is StatusCode.ERROR
    assert (refused.attributes or {})["error.type"] == "InfinityConnectionError"
    assert "http.response.status_code" not in (refused.attributes or {})
    assert "http.request.resend_count" not in (refused.attributes or {})

    retried = dict(by_server["10.0.0.8"].attributes or {})
    assert retried["http.request.resend_count"] == 1
    assert retried["infinity_rag.retry.reason"] == "InfinityConnectionError"
    assert retried["infinity_rag.hedge"] is False

    lost = by_server["10.0.0.9"]
    assert (lost.attributes or {})["infinity_rag.hedge"] is True
    assert (lost.attributes or {})[_otel.CANCELLED] is True
    assert "error.type" not in (lost.attributes or {})
    assert lost.status.status_code is StatusCode.UNSET  # a lost hedge is no error

    call_span = otel.finished()["embeddings minilm"]
    assert call_span.status.status_code is StatusCode.UNSET
    assert (call_span.attributes or {})["server.address"] == "10.0.0.8"  # the one that answered

    # The cancelled attempt is not in the request-duration histogram; the two others are.
    points = otel.points("http.client.request.duration")
    assert sorted(p.attributes["server.address"] for p in points) == ["10.0.0.7", "10.0.0.8"]


def test_a_call_answered_by_several_replicas_lists_them(otel: Telemetry) -> None:
    call = otel.observer().call(EMBED)
    call.attempt(attempt_info()).finish(200, None)
    other = attempt_info(url="http://10.0.0.8:7997/embeddings", server_address="10.0.0.8")
    call.attempt(other).finish(200, None)
    call.finish(RESULT, None)
    attributes = dict(otel.finished()["embeddings minilm"].attributes or {})
    assert "server.address" not in attributes
    assert attributes["infinity_rag.servers"] == ("10.0.0.7:7997", "10.0.0.8:7997")


def test_a_cancelled_call_is_not_an_error(otel: Telemetry) -> None:
    call = otel.observer().call(EMBED)
    call.attempt(attempt_info()).finish(None, asyncio.CancelledError())
    call.finish(None, asyncio.CancelledError())
    span = otel.finished()["embeddings minilm"]
    assert span.status.status_code is StatusCode.UNSET
    assert (span.attributes or {})[_otel.CANCELLED] is True
    assert otel.points("gen_ai.client.operation.duration") == []


def test_traceparent_header_is_the_attempt_span(otel: Telemetry) -> None:
    call = otel.observer().call(EMBED)
    attempt = call.attempt(attempt_info())
    headers = dict(attempt.headers())
    attempt.finish(200, None)
    call.finish(RESULT, None)
    span = otel.finished()["POST /embeddings"]
    context = span.context
    assert headers["traceparent"] == (
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
    )


def test_credentials_and_query_strings_never_reach_url_full(otel: Telemetry) -> None:
    call = otel.observer().call(EMBED)
    url = "https://user:[secure]@infinity.example:8443/v1/embeddings?api_key=abc#x"
    info = attempt_info(url=url, server_address="infinity.example", server_port=8443)
    call.attempt(info).finish(200, None)
    call.finish(RESULT, None)
    span = otel.finished()["POST /v1/embeddings"]
    attributes = span.attributes or {}
    assert attributes["url.full"] == "https://REDACTED:REDACTED@infinity.example:8443/v1/embeddings"
    assert attributes["url.template"] == "/v1/embeddings"


def test_duration_metrics(otel: Telemetry) -> None:
    observer = otel.observer()
    call = observer.call(EMBED)
    call.attempt(attempt_info()).finish(200, None)
    call.finish(RESULT, None)
    failed = observer.call(CallInfo("embeddings", "nope", {}))
    error = ServerError("boom", status_code=503, url=URL)
    failed.attempt(attempt_info()).finish(503, error)
    failed.finish(None, error)

    points = {p.attributes.get("error.type"): p for p in otel.points(
        "gen_ai.client.operation.duration")}  # fmt: skip
    assert dict(points[None].attributes) == {
        "gen_ai.operation.name": "embeddings",
        "gen_ai.provider.name": "infinity",
        "gen_ai.request.model": "minilm",
        "gen_ai.response.model": "minilm",
        "server.address": "10.0.0.7",
        "server.port": 7997,
    }
    assert points[None].count == 1
    assert tuple(points[None].explicit_bounds) == _otel.OPERATION_BUCKETS
    assert points["ServerError"].attributes["gen_ai.request.model"] == "nope"

    requests = {p.attributes.get("http.response.status_code"): p for p in otel.points(
        "http.client.request.duration")}  # fmt: skip
    assert dict(requests[503].attributes) == {
        "http.request.method": "POST",
        "server.address": "10.0.0.7",
        "server.port": 7997,
        "http.response.status_code": 503,
        "error.type": "503",
    }
    assert tuple(requests[200].explicit_bounds) == _otel.HTTP_BUCKETS


class FakeClient:
    def __init__(self, states: list[ReplicaState]) -> None:
        self.states = states

    def replicas(self) -> list[ReplicaState]:
        return self.states


def test_replica_gauges_follow_live_clients(otel: Telemetry) -> None:
    def state(url: str, in_flight: int, out_until: float | None) -> ReplicaState:
        return ReplicaState(url, in_flight, 0, out_until, 10, 0)

    first = FakeClient([state("http://a:7997", 2, None), state("http://b:7997", 0, 4e9)])
    second = FakeClient([state("http://a:7997", 1, None)])
    otel.observer(first.replicas)
    otel.observer(second.replicas)

    def gauges() -> dict[tuple[str, str, int], float]:
        return {
            (name.rsplit(".", 1)[1], p.attributes["server.address"], p.attributes["server.port"]):
                p.value
            for name in ("infinity_rag.replica.requests_in_flight",
                         "infinity_rag.replica.out_of_rotation")
            for p in otel.points(name)
        }  # fmt: skip

    assert gauges() == {
        ("requests_in_flight", "a", 7997): 3,
        ("requests_in_flight", "b", 7997): 0,
        ("out_of_rotation", "a", 7997): 0,
        ("out_of_rotation", "b", 7997): 1,
    }
    del first
    import gc

    gc.collect()
    assert gauges() == {("requests_in_flight", "a", 7997): 1, ("out_of_rotation", "a", 7997): 0}


def test_gauges_are_registered_once_per_meter_provider(otel: Telemetry) -> None:
    clients = [FakeClient([]) for _ in range(3)]
    for client in clients:
        otel.observer(client.replicas)
    assert _otel._instruments(otel.meter_provider) is _otel._instruments(otel.meter_provider)


def test_the_client_with_the_real_sdk_without_a_global_provider_is_no_op() -> None:
    """No SDK configured (the API's no-op providers): nothing recorded, nothing raised, no
    headers to send."""
    observer = _otel.make_observer(
        _no_replicas,
        tracer_provider=trace.NoOpTracerProvider(),
        meter_provider=__import__("opentelemetry.metrics").metrics.NoOpMeterProvider(),
    )
    assert observer is not None
    call = observer.call(EMBED)
    attempt = call.attempt(attempt_info())
    assert dict(attempt.headers()) == {}
    attempt.finish(200, None)
    call.finish(RESULT, None)


def _dump(otel: Telemetry) -> str:
    spans = [span.to_json() for span in otel.spans.get_finished_spans()]
    data = otel.metrics.get_metrics_data()
    return "\n".join(spans) + (data.to_json() if data else "")


def test_no_key_anywhere(otel: Telemetry) -> None:
    """A real client's errors (its key refused, a proxy echoing the request's headers) fed to
    the observer: no key in any span, event or metric."""
    fake = FakeInfinity(api_key="the-right-one")
    client = make_client(
        fake, api_key=KEY, base_url="http://user:hunter2pw@infinity.test:7997", max_retries=0
    )
    observer = otel.observer(client.replicas)
    with pytest.raises(AuthenticationError) as refused:
        client.embed(["x"])

    def echo(request: Any) -> Any:
        import httpx

        return httpx.Response(502, text=f"bad gateway: {dict(request.headers)}")

    fake.hook = echo
    with pytest.raises(ServerError) as echoed:
        client.embed(["x"])
    for error in (refused.value, echoed.value):
        call = observer.call(CallInfo("embeddings", "embedder", {"input_count": 1}))
        info = attempt_info(url=error.url, server_address="infinity.test")
        attempt = call.attempt(info)
        attempt.finish(getattr(error, "status_code", None), error)
        call.finish(None, error)
    dumped = _dump(otel)
    assert "exception.message" in dumped
    assert KEY not in dumped
    assert KEY[:12] not in dumped
    assert "hunter2pw" not in dumped
    client.close()


def test_make_observer_is_none_without_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    _otel.otel_available.cache_clear()
    try:
        assert _otel.make_observer(_no_replicas) is None
    finally:
        monkeypatch.undo()
        _otel.otel_available.cache_clear()
    assert _otel.otel_available()


def test_blocked_import_gives_no_observer_in_a_fresh_interpreter() -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from infinity_rag import _otel\n"
        "print(_otel.make_observer(lambda: []))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"


def test_an_sdk_configured_after_the_observer_still_applies() -> None:
    """The global proxies hand over to the SDK set later (a fresh interpreter: the global
    provider can be set once per process)."""
    code = """
from infinity_rag import _otel
from infinity_rag._observe import CallInfo
observer = _otel.make_observer(lambda: [])
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
observer.call(CallInfo("embeddings", "m", {})).finish(None, None)
print([span.name for span in exporter.get_finished_spans()])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().replace("'", '"')) == ["embeddings m"]


def test_the_callers_baggage_and_an_incoming_trace_pass_through_without_an_sdk() -> None:
    """API only: a trace the application received (a non-recording span with a valid
    context) and its baggage still reach the server, as W3C asks of a proxy-like hop."""
    from opentelemetry import baggage, context, metrics
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    observer = _otel.make_observer(
        _no_replicas,
        tracer_provider=trace.NoOpTracerProvider(),
        meter_provider=metrics.NoOpMeterProvider(),
    )
    assert observer is not None
    incoming = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    ctx = trace.set_span_in_context(NonRecordingSpan(incoming))
    token = context.attach(baggage.set_baggage("tenant", "acme", ctx))
    try:
        call = observer.call(EMBED)
    finally:
        context.detach(token)
    attempt = call.attempt(attempt_info())
    headers = dict(attempt.headers())
    attempt.finish(200, None)
    call.finish(RESULT, None)
    assert headers["traceparent"] == f"00-{0xABC:032x}-{0xDEF:016x}-01"
    assert headers["baggage"] == "tenant=acme"
