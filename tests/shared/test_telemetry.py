"""Telemetry end to end: a real process exports spans over OTLP/HTTP to a local collector that decodes
the protobuf; the incoming traceparent's trace id comes out in the spans and in the JSON logs."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from coder.shared.devservers import free_port
from coder.tests.support.logscan import LogCapture
from coder.tests.support.platform import Platform
from coder.tests.support.process import platform_process
from coder.tests.support.tokens import TestSigner

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class Collector(BaseHTTPRequestHandler):
    spans: list[tuple[str, str, dict[str, object]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            service = next(
                a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: a.value.string_value or a.value.int_value for a in span.attributes}
                    Collector.spans.append((service, span.trace_id.hex(), {"name": span.name, **attributes}))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", free_port()), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_spans_exported_over_otlp_and_logs_carry_ids(
    collector: str, database_url: str, signer: TestSigner, tmp_path: Path, log_capture: LogCapture
) -> None:
    log = tmp_path / "process.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CODER_JWKS": signer.jwks(),
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector,
        "OTEL_SERVICE_NAME": "coder-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with platform_process(env, log, log_capture) as base:
        response = httpx.get(
            f"{base}/api/secrets/v1/secrets/a/b",
            headers={
                "traceparent": TRACEPARENT,
                "x-request-id": "req-123",
                **signer.headers("org-telemetry"),
            },
        )
        assert response.status_code == 404
        assert response.headers["x-request-id"] == "req-123"
        deadline = time.monotonic() + 20
        while not any(trace == TRACE_ID for _, trace, _ in Collector.spans):
            assert time.monotonic() < deadline, f"no span of the trace arrived: {Collector.spans}"
            time.sleep(0.1)
    ours = [(service, attrs) for service, trace, attrs in Collector.spans if trace == TRACE_ID]
    # In `all` mode the gateway hands the request to the target in-process: one server span, named by
    # the target's route, plus FastAPI's operation spans beneath it.
    server = [attrs for _, attrs in ours if attrs.get("coder.target")]
    assert len(server) == 1, ours
    assert server[0]["coder.target"] == "secrets"
    assert str(server[0]["name"]).endswith("/v1/secrets/{path}"), server
    assert all(service == "coder-test" for service, _ in ours)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    access = [
        line for line in lines if line.get("message") == "request" and line.get("request_id") == "req-123"
    ]
    assert access and all(line["trace_id"] == TRACE_ID for line in access)


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
