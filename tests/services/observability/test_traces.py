"""OTLP/HTTP traces in (protobuf as the SDK's exporter encodes them, and JSON), the service map out."""

from __future__ import annotations

import gzip
import json

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from coder.tests.services.observability.factories import API, ok
from coder.tests.support.platform import Platform
from coder.tests.support.tokens import TestSigner

PROTOBUF = {"content-type": "application/x-protobuf"}


def _tracer(service: str, exporter: InMemorySpanExporter) -> trace.Tracer:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test")


def recorded_calls() -> list[ReadableSpan]:
    """web calls api twice (once failing with a 503) and api queries postgres, as the SDK records it."""
    exporter = InMemorySpanExporter()
    web, api = _tracer("web", exporter), _tracer("api", exporter)
    for status in (200, 503):
        with (
            web.start_as_current_span("GET /things", kind=SpanKind.CLIENT),
            api.start_as_current_span("GET /v1/things", kind=SpanKind.SERVER) as server,
        ):
            server.set_attribute("http.response.status_code", status)
            with api.start_as_current_span("SELECT", kind=SpanKind.CLIENT) as query:
                query.set_attribute("db.system", "postgresql")
                query.set_attribute("peer.service", "postgres")
            if status >= 500:
                server.set_status(Status(StatusCode.ERROR))
    return list(exporter.get_finished_spans())


async def test_service_map_from_otlp_protobuf(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    body = encode_spans(recorded_calls()).SerializeToString()
    answer = await platform.client.post(
        f"{API}/traces", content=gzip.compress(body), headers={**h, **PROTOBUF, "content-encoding": "gzip"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/x-protobuf"

    found = ok(await platform.client.get(f"{API}/service-map", headers=h))
    edges = {(e["source"], e["target"]): e for e in found["edges"]}
    assert set(edges) == {("web", "api"), ("api", "postgres")}
    assert (edges[("web", "api")]["calls"], edges[("web", "api")]["errors"]) == (2, 1)
    assert (edges[("api", "postgres")]["calls"], edges[("api", "postgres")]["errors"]) == (2, 0)
    assert edges[("web", "api")]["error_ratio"] == 0.5
    nodes = {n["service"]: n for n in found["nodes"]}
    assert (
        nodes["api"]["server_spans"] == 2 and nodes["web"]["spans"] == 2 and nodes["postgres"]["spans"] == 0
    )

    other = ok(await platform.client.get(f"{API}/service-map", headers=signer.headers(f"{org}-other")))
    assert other["edges"] == [] and other["nodes"] == []


async def test_service_map_from_otlp_json(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    trace_id = "5b8efff798038103d269b633813fc60c"
    now = 1_700_000_000_000_000_000

    def span(service: str, span_id: str, parent: str, kind: int, status: int) -> dict[str, object]:
        return {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeSpans": [
                {
                    "spans": [
                        {
                            "traceId": trace_id,
                            "spanId": span_id,
                            "parentSpanId": parent,
                            "name": "call",
                            "kind": kind,
                            "startTimeUnixNano": str(now),
                            "endTimeUnixNano": str(now + 25_000_000),
                            "attributes": [
                                {"key": "http.response.status_code", "value": {"intValue": str(status)}}
                            ],
                        }
                    ]
                }
            ],
        }

    export = {
        "resourceSpans": [
            span("gateway", "eee19b7ec3c1b174", "", 3, 502),
            span("ai", "eee19b7ec3c1b175", "eee19b7ec3c1b174", 2, 502),
        ]
    }
    answer = await platform.client.post(f"{API}/traces", json=export, headers=h)
    assert answer.status_code == 200, answer.text
    params = {"from": "2023-11-14T22:00:00Z", "to": "2023-11-14T23:00:00Z"}
    found = ok(await platform.client.get(f"{API}/service-map", params=params, headers=h))
    (edge,) = found["edges"]
    assert (edge["source"], edge["target"], edge["calls"], edge["errors"]) == ("gateway", "ai", 1, 1)
    assert edge["latency_ms"]["avg"] == 25.0


async def test_bad_otlp_is_refused_naming_where(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    short = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "abcd",
                                "spanId": "eee19b7ec3c1b174",
                                "startTimeUnixNano": "1",
                                "endTimeUnixNano": "2",
                            }
                        ]
                    }
                ]
            }
        ]
    }
    cases: list[tuple[bytes, dict[str, str], int, str]] = [
        (
            json.dumps(short).encode(),
            {"content-type": "application/json"},
            422,
            "resourceSpans[0].scopeSpans[0].spans[0].traceId",
        ),
        (b"{not json", {"content-type": "application/json"}, 422, "body"),
        (b"\xff\xff\xff", PROTOBUF, 422, "body"),
        (b"x", {"content-type": "text/plain"}, 415, "Content-Type"),
        (b"x", {**PROTOBUF, "content-encoding": "gzip"}, 422, "gzip"),
    ]
    for content, headers, status, where in cases:
        answer = await platform.client.post(f"{API}/traces", content=content, headers={**h, **headers})
        assert answer.status_code == status, (content, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert where in answer.text, (content, answer.text)
    found = ok(await platform.client.get(f"{API}/service-map", headers=h))
    assert found["nodes"] == []
