"""OpenTelemetry against the real Infinity server: the client's spans, headers and metrics.

The SDK is set as the global tracer and meter provider once, by the session fixture ``sdk``
(the global providers can be set only once per process); each test clears the in-memory
exporter. The client finds the global providers by itself: nothing is passed to it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from infinity_rag import InfinityClient
from infinity_rag.errors import InfinityConnectionError, ModelNotFoundError
from integration_tests.conftest import ServerInfo


class Forward(SpanProcessor):
    """A span processor whose target a test may set for a while (an OTLP exporter)."""

    def __init__(self) -> None:
        self.target: SpanProcessor | None = None

    def on_end(self, span: ReadableSpan) -> None:
        if self.target is not None:
            self.target.on_end(span)


@dataclass
class Sdk:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    forward: Forward
    tracer: Any = field(default=None)

    def finished(self, name: str | None = None) -> list[ReadableSpan]:
        spans = list(self.spans.get_finished_spans())
        return spans if name is None else [s for s in spans if s.name == name]

    def points(self, name: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        return [
            point
            for resource in (data.resource_metrics if data else ())
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def dump(self) -> str:
        data = self.metrics.get_metrics_data()
        return "\n".join(s.to_json() for s in self.finished()) + (data.to_json() if data else "")


@pytest.fixture(scope="session")
def _global_sdk() -> Sdk:
    from opentelemetry import metrics

    exporter = InMemorySpanExporter()
    forward = Forward()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(forward)
    trace.set_tracer_provider(provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    if trace.get_tracer_provider() is not provider:
        pytest.skip("another global tracer provider was set earlier in this process")
    return Sdk(exporter, reader, forward, provider.get_tracer("integration-tests"))


@pytest.fixture
def sdk(_global_sdk: Sdk) -> Iterator[Sdk]:
    _global_sdk.spans.clear()
    yield _global_sdk
    _global_sdk.forward.target = None


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def test_a_rag_query_is_two_client_spans_in_the_callers_trace(
    sdk: Sdk, client: InfinityClient, infinity_server: ServerInfo
) -> None:
    with sdk.tracer.start_as_current_span("answer question") as root:
        client.embed(["what is a vector?"], model=infinity_server.embed_model)
        client.rerank(
            "what is a vector?",
            ["a list of numbers", "a fruit", "a direction"],
            model=infinity_server.rerank_model,
            top_n=2,
        )
    spans = sdk.finished()
    [root_span] = [s for s in spans if s.name == "answer question"]
    assert root_span.context.span_id == root.get_span_context().span_id
    embed_name = f"embeddings {infinity_server.embed_model}"
    rerank_name = f"rerank {infinity_server.rerank_model}"
    assert sorted(s.name for s in children(spans, root_span)) == [embed_name, rerank_name]
    assert {s.context.trace_id for s in spans} == {root.get_span_context().trace_id}

    [embed] = [s for s in spans if s.name == embed_name]
    attributes = dict(embed.attributes or {})
    port = httpx.URL(infinity_server.url).port
    assert embed.kind is SpanKind.CLIENT
    assert attributes["gen_ai.operation.name"] == "embeddings"
    assert attributes["gen_ai.provider.name"] == "infinity"
    assert attributes["gen_ai.request.model"] == infinity_server.embed_model
    assert attributes["gen_ai.response.model"] == infinity_server.embed_model
    assert attributes["gen_ai.embeddings.dimension.count"] == infinity_server.dim
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == port
    assert len(attributes["gen_ai.request.encoding_formats"]) == 1
    assert "gen_ai.usage.input_tokens" not in attributes
    [attempt] = children(spans, embed)
    assert attempt.kind is SpanKind.CLIENT
    assert (attempt.attributes or {})["http.response.status_code"] == 200
    assert (attempt.attributes or {})["server.port"] == port

    [rerank] = [s for s in spans if s.name == rerank_name]
    assert (rerank.attributes or {})["infinity_rag.rerank.document_count"] == 3
    assert (rerank.attributes or {})["infinity_rag.rerank.top_n"] == 2
    assert len(children(spans, rerank)) == 1
    assert "a fruit" not in sdk.dump()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_one_attempt_span_per_request(
    sdk: Sdk, client: InfinityClient, infinity_server: ServerInfo, mode: str
) -> None:
    import asyncio

    texts = [f"passage number {i}" for i in range(600)]
    with sdk.tracer.start_as_current_span("ingest"):
        if mode == "sync":
            result = client.embed(texts, model=infinity_server.embed_model, batch_size=256)
        else:
            result = asyncio.run(
                client.aembed(texts, model=infinity_server.embed_model, batch_size=256)
            )
    assert len(result) == 600
    [call] = sdk.finished(f"embeddings {infinity_server.embed_model}")
    attempts = children(sdk.finished(), call)
    assert len(attempts) == 3
    assert sorted((a.attributes or {})["infinity_rag.request.input_count"] for a in attempts) == [
        88,
        256,
        256,
    ]
    assert all(a.context.trace_id == call.context.trace_id for a in attempts)
    assert (call.attributes or {})["infinity_rag.request.input_count"] == 600


def test_a_wrong_model_fails_the_span_with_its_error_type(sdk: Sdk, client: InfinityClient) -> None:
    with pytest.raises(ModelNotFoundError):
        client.embed(["x"], model="no-such-model")
    [call] = sdk.finished("embeddings no-such-model")
    assert call.status.status_code is StatusCode.ERROR
    assert (call.attributes or {})["error.type"] == "ModelNotFoundError"
    [attempt] = children(sdk.finished(), call)
    assert attempt.status.status_code is StatusCode.ERROR
    assert (attempt.attributes or {})["error.type"] == "400"
    assert (attempt.attributes or {})["http.response.status_code"] == 400
    [event] = call.events
    assert event.name == "exception"


def test_a_server_that_is_down_shows_every_attempt(sdk: Sdk) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with InfinityClient(base_url=f"http://127.0.0.1:{port}", max_retries=2) as client:
        with pytest.raises(InfinityConnectionError):
            client.embed(["x"], model="minilm")
    [call] = sdk.finished("embeddings minilm")
    assert call.status.status_code is StatusCode.ERROR
    assert (call.attributes or {})["error.type"] == "InfinityConnectionError"
    assert (call.attributes or {})["server.port"] == port
    attempts = sorted(
        children(sdk.finished(), call),
        key=lambda s: (s.attributes or {}).get("http.request.resend_count", 0),
    )
    assert len(attempts) == 3
    assert [(a.attributes or {}).get("http.request.resend_count") for a in attempts] == [None, 1, 2]
    assert all(a.status.status_code is StatusCode.ERROR for a in attempts)
    assert (attempts[1].attributes or {})["infinity_rag.retry.reason"] == "InfinityConnectionError"
    assert all("http.response.status_code" not in (a.attributes or {}) for a in attempts)


class _Recorder(BaseHTTPRequestHandler):
    """A loopback proxy in front of Infinity that records each request's headers."""

    upstream = ""
    seen: list[tuple[str, dict[str, str]]] = []

    def _forward(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        type(self).seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host",)}
        answer = httpx.request(
            self.command, self.upstream + self.path, content=body, headers=headers, timeout=60
        )
        self.send_response(answer.status_code)
        self.send_header("content-type", answer.headers.get("content-type", "application/json"))
        self.send_header("content-length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = _forward

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recording_proxy(infinity_server: ServerInfo) -> Iterator[type[_Recorder]]:
    handler = type("Recorder", (_Recorder,), {"upstream": infinity_server.url, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()
    server.server_close()


def test_the_server_receives_the_attempts_traceparent(
    sdk: Sdk, recording_proxy: Any, infinity_server: ServerInfo
) -> None:
    with InfinityClient(base_url=recording_proxy.url, api_key=infinity_server.api_key) as client:
        with sdk.tracer.start_as_current_span("query"):
            client.embed(["hello"], model=infinity_server.embed_model)
    [call] = sdk.finished(f"embeddings {infinity_server.embed_model}")
    [attempt] = children(sdk.finished(), call)
    embeds = [h for path, h in recording_proxy.seen if path.endswith("/embeddings")]
    assert len(embeds) == 1
    context = attempt.context
    assert embeds[0]["traceparent"] == (
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
    )


def test_the_operation_duration_metric(
    sdk: Sdk, client: InfinityClient, infinity_server: ServerInfo
) -> None:
    client.embed(["one", "two"], model=infinity_server.embed_model)
    points = [
        p
        for p in sdk.points("gen_ai.client.operation.duration")
        if p.attributes.get("gen_ai.request.model") == infinity_server.embed_model
        and "error.type" not in p.attributes
    ]
    assert points
    assert sum(p.count for p in points) >= 1
    assert points[0].attributes["gen_ai.operation.name"] == "embeddings"
    assert points[0].attributes["gen_ai.provider.name"] == "infinity"
    assert 0 < points[0].sum < 60
    requests = sdk.points("http.client.request.duration")
    port = httpx.URL(infinity_server.url).port
    assert any(p.attributes.get("server.port") == port for p in requests)
    in_flight = sdk.points("infinity_rag.replica.requests_in_flight")
    assert any(p.attributes.get("server.port") == port for p in in_flight)


def test_no_key_anywhere(sdk: Sdk, infinity_server: ServerInfo) -> None:
    key = infinity_server.api_key or "sk-not-used-by-this-server-91c2e7"
    with InfinityClient(base_url=infinity_server.url, api_key=key) as client:
        client.embed(["a"], model=infinity_server.embed_model)
        client.rerank("q", ["d1", "d2"], model=infinity_server.rerank_model)
        with pytest.raises(ModelNotFoundError):
            client.embed(["a"], model="no-such-model")
    if infinity_server.api_key:
        with InfinityClient(base_url=infinity_server.url, api_key=key + "-wrong") as client:
            with pytest.raises(Exception):  # noqa: B017, PT011  # AuthenticationError
                client.embed(["a"], model=infinity_server.embed_model)
    dumped = sdk.dump()
    assert "gen_ai.client.operation.duration" in dumped
    assert len(sdk.finished()) >= 6
    assert key not in dumped


class _OtlpReceiver(BaseHTTPRequestHandler):
    requests: list[Any] = []

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        body = self.rfile.read(int(self.headers["content-length"]))
        if self.headers.get("content-encoding") == "gzip":
            import gzip

            body = gzip.decompress(body)
        type(self).requests.append((self.path, ExportTraceServiceRequest.FromString(body)))
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind)


def test_spans_through_the_otlp_http_exporter(
    sdk: Sdk, client: InfinityClient, infinity_server: ServerInfo
) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

    handler = type("Receiver", (_OtlpReceiver,), {"requests": []})
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}/v1/traces"
    processor = SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=10))
    sdk.forward.target = processor
    try:
        with sdk.tracer.start_as_current_span("query"):
            client.embed(["wire format"], model=infinity_server.embed_model)
    finally:
        sdk.forward.target = None
        processor.shutdown()
        receiver.shutdown()
        receiver.server_close()

    spans = {}
    for path, request in handler.requests:
        assert path == "/v1/traces"
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    spans[span.name] = (scope.scope, span)
    name = f"embeddings {infinity_server.embed_model}"
    scope, call = spans[name]
    assert scope.name == "infinity_rag"
    assert call.kind == ProtoSpan.SPAN_KIND_CLIENT
    attributes = {a.key: _value(a.value) for a in call.attributes}
    assert attributes["gen_ai.operation.name"] == "embeddings"
    assert attributes["gen_ai.provider.name"] == "infinity"
    assert attributes["gen_ai.embeddings.dimension.count"] == infinity_server.dim
    assert isinstance(attributes["gen_ai.request.encoding_formats"], list)
    _, attempt = spans["POST /embeddings"]
    assert attempt.parent_span_id == call.span_id
    assert attempt.trace_id == call.trace_id == spans["query"][1].trace_id
    assert call.parent_span_id == spans["query"][1].span_id
    assert json.dumps({k: str(v) for k, v in attributes.items()})  # plain values on the wire
