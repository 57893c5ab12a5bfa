"""Telemetry end to end: a real process exports spans over OTLP (gRPC or HTTP/protobuf, as the standard
variables say) to a local collector that decodes the protobuf. One trace follows a request from the
gateway through the service, PostgreSQL, the outbox and RabbitMQ to the consumer; the incoming
traceparent's trace id comes out in the spans and in the JSON logs."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from coder.shared.devservers import RabbitServer, RedisServer, free_port
from coder.tests.support.databases import create_database, drop_database
from coder.tests.support.logscan import LogCapture
from coder.tests.support.platform import Platform, own_vhost
from coder.tests.support.process import platform_process
from coder.tests.support.tokens import TestSigner


@dataclass(frozen=True)
class Span:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    attributes: dict[str, object]

    def __str__(self) -> str:
        return f"{self.name:<48} {self.kind:<9} {self.service:<11} {self.trace_id}"


SPANS: list[Span] = []


def _collect(request: ExportTraceServiceRequest) -> None:
    for resource_spans in request.resource_spans:
        service = next(
            a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"
        )
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                SPANS.append(
                    Span(
                        service=service,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=PbSpan.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        attributes={
                            a.key: a.value.string_value or a.value.int_value for a in span.attributes
                        },
                    )
                )


class HttpCollector(BaseHTTPRequestHandler):
    """OTLP/HTTP: POST /v1/traces, a protobuf ExportTraceServiceRequest."""

    def do_POST(self) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(self.rfile.read(int(self.headers["content-length"])))
        _collect(request)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class GrpcCollector(trace_service_pb2_grpc.TraceServiceServicer):
    """OTLP/gRPC: the collector's TraceService."""

    def Export(self, request: ExportTraceServiceRequest, context: object) -> ExportTraceServiceResponse:  # noqa: N802
        _collect(request)
        return ExportTraceServiceResponse()


@dataclass(frozen=True)
class Collector:
    http: str
    grpc: str


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    http = HTTPServer(("127.0.0.1", free_port()), HttpCollector)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    grpc_server = grpc.server(ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(GrpcCollector(), grpc_server)  # type: ignore[no-untyped-call]
    grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    yield Collector(http=f"http://127.0.0.1:{http.server_port}", grpc=f"http://127.0.0.1:{grpc_port}")
    grpc_server.stop(grace=None)
    http.shutdown()
    http.server_close()


@pytest.fixture(scope="module")
def broker(rabbit_server: RabbitServer) -> str:
    """A virtual host of its own on the session's RabbitMQ: no other test's consumer of `coder.logging`
    takes the event."""
    return own_vhost(rabbit_server, "telemetry")


@pytest.fixture(scope="module")
def own_database(database_url: str) -> Iterator[str]:
    """A database of its own: no other test's outbox relay publishes this test's event."""
    url = asyncio.run(create_database(database_url, "telemetry"))
    yield url
    asyncio.run(drop_database(url))


# The standard variables as the operator sets them (one endpoint, a protocol), and a collector named
# for traces only (the HTTP exporter posts to that URL as given).
PROTOCOLS: dict[str, Callable[[Collector], dict[str, str]]] = {
    "grpc": lambda c: {"OTEL_EXPORTER_OTLP_ENDPOINT": c.grpc, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    "http/protobuf": lambda c: {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{c.http}/v1/traces",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    },
}


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_one_trace_from_the_gateway_through_the_broker_to_the_consumer(
    protocol: str,
    collector: Collector,
    own_database: str,
    broker: str,
    redis_server: RedisServer,
    signer: TestSigner,
    tmp_path: Path,
    log_capture: LogCapture,
) -> None:
    """A secret written through the gateway emits `secrets.secret.fingerprinted` (outbox, relay,
    RabbitMQ), which `logging` consumes: every span, from the gateway's to the consumer's statements,
    is in the caller's trace, exported over the configured protocol."""
    trace_id = uuid.uuid4().hex
    log = tmp_path / "process.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        **PROTOCOLS[protocol](collector),
        "DATABASE_URL": own_database,
        "AMQP_URL": broker,
        "REDIS_URL": redis_server.url,
        "CODER_JWKS": signer.jwks(),
        "OTEL_SERVICE_NAME": "coder-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with platform_process(env, log, log_capture) as base:
        response = httpx.put(
            f"{base}/api/secrets/v1/secrets/telemetry/key",
            json={"data": {"token": "a-value-long-enough-to-fingerprint"}},
            headers={
                "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
                "x-request-id": "req-123",
                **signer.headers("org-telemetry"),
            },
            timeout=30,
        )
        assert response.status_code in (200, 201), response.text
        assert response.headers["x-request-id"] == "req-123"

        def ours() -> list[Span]:
            return [span for span in SPANS if span.trace_id == trace_id]

        def consumed() -> list[Span]:
            return [
                span
                for span in ours()
                if span.kind == "CONSUMER" and span.attributes.get("coder.target") == "logging"
            ]

        deadline = time.monotonic() + 30
        # The consumer's span ends after its statements, so theirs are exported with or before it.
        while not consumed():
            assert time.monotonic() < deadline, f"the consumer's span never arrived: {ours()}"
            time.sleep(0.1)
    spans = ours()
    print(f"\n{protocol}:\n" + "\n".join(str(span) for span in spans))
    by_id = {span.span_id: span for span in spans}

    def ancestors(span: Span) -> list[Span]:
        chain = []
        while span.parent_id in by_id:
            span = by_id[span.parent_id]
            chain.append(span)
        return chain

    servers = {s.attributes.get("coder.target"): s for s in spans if s.kind == "SERVER"}
    assert set(servers) == {"gateway", "secrets"}, spans
    gateway, secrets = servers["gateway"], servers["secrets"]
    assert gateway.parent_id == "00f067aa0ba902b7"
    assert gateway in ancestors(secrets)
    assert secrets.name.endswith("/v1/secrets/{path}"), secrets
    # PostgreSQL: the secret's statements, beneath the secrets span.
    statements = [
        s
        for s in spans
        if "postgresql" in (s.attributes.get("db.system"), s.attributes.get("db.system.name"))
    ]
    assert any(secrets in ancestors(s) and "INSERT" in s.name for s in statements), spans
    # The outbox row leaves in the same trace: the relay's PRODUCER span is the publish (the relay
    # publishes on the confirming channel itself, beneath aio-pika, so no library span nests in it).
    [produced] = [
        s for s in spans if s.kind == "PRODUCER" and s.name == "publish secrets.secret.fingerprinted"
    ]
    assert produced.attributes["messaging.system"] == "rabbitmq"
    assert produced.parent_id in by_id and secrets in ancestors(produced)
    # The consumer: a CONSUMER span beneath the producer's, and its inbox statements beneath it.
    [process] = consumed()
    assert process.name == "process secrets.secret.fingerprinted"
    assert process.parent_id == produced.span_id
    assert process.attributes["messaging.consumer.group.name"] == "logging"
    assert any(process in ancestors(s) for s in statements), "no statement of the consumer"
    assert all(span.service == "coder-test" for span in spans)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    access = [
        line for line in lines if line.get("message") == "request" and line.get("request_id") == "req-123"
    ]
    assert access and all(line["trace_id"] == trace_id for line in access)


async def test_service_client_forwards_token_request_id_and_trace(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    """A target calling another through `runtime.clients` acts with its caller's token."""
    from opentelemetry import trace

    from coder.shared import context

    headers = signer.headers(org)
    await platform.client.put("/api/secrets/v1/secrets/s2s", json={"data": {"k": "v"}}, headers=headers)
    token = context.bearer_token.set(headers["Authorization"].removeprefix("Bearer "))
    request_id = context.request_id.set("req-s2s")
    try:
        with trace.get_tracer("test").start_as_current_span("caller"):
            response = await platform.runtime.clients.client("secrets").get("/v1/secrets/s2s")
    finally:
        context.bearer_token.reset(token)
        context.request_id.reset(request_id)
    assert response.status_code == 200
    assert response.json()["data"] == {"k": "v"}
    assert response.headers["x-request-id"] == "req-s2s"
    assert response.request.headers["traceparent"].startswith("00-")
