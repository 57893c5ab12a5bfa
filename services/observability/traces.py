"""OTLP/HTTP traces in (protobuf or JSON, as the OpenTelemetry exporters send them), spans kept, and the
service map derived from them: an edge from a client span's service to the service of the server span
it is the parent of (calls, errors, latency), or to the `peer.service`/`server.address` a client
span names when no instrumented server answered it (a database, an outside API)."""

from __future__ import annotations

import base64
import gzip
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from sqlalchemy import and_, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from coder.services.observability.models import Span
from coder.shared.errors import InvalidField, Problem
from coder.shared.repository import owned_by
from coder.shared.schemas import text_problem

PROTOBUF, JSON = "application/x-protobuf", "application/json"
SERVER, CLIENT = OtlpSpan.SPAN_KIND_SERVER, OtlpSpan.SPAN_KIND_CLIENT
PEER_ATTRIBUTES = ("peer.service", "server.address", "db.system", "net.peer.name")
# Attributes kept with a span (the rest are dropped: the map needs none of them).
KEPT = ("http.request.method", "http.response.status_code", "http.route", "url.path", *PEER_ATTRIBUTES)
MAX_TEXT = 200


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise Problem(f"Content-Encoding {encoding} is not supported (gzip, deflate)", status=415)
    try:
        d = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
        out = d.decompress(body, limit + 1)
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise InvalidField("body", f"not valid {encoding}: {exc}") from None
    if len(out) <= limit and not d.eof:
        raise InvalidField("body", f"not valid {encoding}: the stream is cut short")
    if len(out) > limit:
        raise Problem(f"the decompressed body is larger than {limit} bytes", status=413)
    return out


def _hex_ids(node: Any) -> Any:
    """OTLP/JSON writes ids in hex where protobuf's JSON mapping expects base64."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                try:
                    value = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    raise InvalidField(key, "must be hex") from None
            out[key] = _hex_ids(value)
        return out
    if isinstance(node, list):
        return [_hex_ids(v) for v in node]
    return node


def decode(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    media = content_type.split(";", 1)[0].strip().lower()
    if media == PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise InvalidField("body", f"not an OTLP ExportTraceServiceRequest: {exc}") from None
    elif media == JSON:
        import json

        try:
            document = json.loads(body)
        except ValueError as exc:
            raise InvalidField("body", f"not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise InvalidField("body", "must be an OTLP ExportTraceServiceRequest object")
        try:
            json_format.ParseDict(_hex_ids(document), request, ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise InvalidField("body", f"not an OTLP ExportTraceServiceRequest: {exc}") from None
    else:
        raise Problem(f"Content-Type must be {PROTOBUF} or {JSON}", status=415, slug="unsupported-media-type")
    return request


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which in ("string_value", "bool_value", "int_value", "double_value"):
        return getattr(v, which)
    return None


def _text(value: str, field: str, limit: int = MAX_TEXT) -> str:
    if problem := text_problem(value):
        raise InvalidField(field, problem)
    return value[:limit]


def _time(nanos: int) -> datetime:
    return datetime.fromtimestamp(nanos / 1e9, UTC)


def spans(request: ExportTraceServiceRequest, org_id: str, now: datetime) -> Iterator[Span]:
    """The request's spans as rows; a malformed one is refused naming where it is."""
    for r, resource_spans in enumerate(request.resource_spans):
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        service = str(resource.get("service.name") or "unknown_service")
        service = _text(service, f"resourceSpans[{r}].resource.service.name")
        for s, scope_spans in enumerate(resource_spans.scope_spans):
            for i, span in enumerate(scope_spans.spans):
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}]"
                if len(span.trace_id) != 16 or not any(span.trace_id):
                    raise InvalidField(f"{where}.traceId", "must be 16 bytes, not all zero")
                if len(span.span_id) != 8 or not any(span.span_id):
                    raise InvalidField(f"{where}.spanId", "must be 8 bytes, not all zero")
                if span.parent_span_id and len(span.parent_span_id) != 8:
                    raise InvalidField(f"{where}.parentSpanId", "must be 8 bytes")
                if span.end_time_unix_nano < span.start_time_unix_nano:
                    raise InvalidField(f"{where}.endTimeUnixNano", "must not be before startTimeUnixNano")
                if not 0 < span.start_time_unix_nano < 253402300799 * 10**9:
                    raise InvalidField(
                        f"{where}.startTimeUnixNano", "must be a time after 1970 and before 9999"
                    )
                attributes = {a.key: _value(a.value) for a in span.attributes if a.key in KEPT}
                attributes = {
                    k: _text(v, f"{where}.attributes.{k}") if isinstance(v, str) else v
                    for k, v in attributes.items()
                    if v is not None
                }
                status = attributes.get("http.response.status_code")
                error = span.status.code == Status.STATUS_CODE_ERROR or (
                    isinstance(status, int) and status >= 500
                )
                peer = next((str(attributes[k]) for k in PEER_ATTRIBUTES if attributes.get(k)), None)
                yield Span(
                    org_id=org_id,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex() if span.parent_span_id else None,
                    service=service,
                    name=_text(span.name, f"{where}.name", 500),
                    kind=int(span.kind),
                    start_at=_time(span.start_time_unix_nano),
                    duration_ms=(span.end_time_unix_nano - span.start_time_unix_nano) / 1e6,
                    error=error,
                    peer=peer,
                    attributes=attributes,
                    received_at=now,
                )


def _latency(column: Any) -> dict[str, Any]:
    return {
        "avg": func.avg(column),
        "p50": func.percentile_cont(0.5).within_group(column),
        "p95": func.percentile_cont(0.95).within_group(column),
    }


async def service_map(
    session: AsyncSession, org_id: str, start: datetime, end: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(nodes, edges) of the org's spans that started in [start, end)."""
    in_range = and_(owned_by(Span, org_id), Span.start_at >= start, Span.start_at < end)
    parent, child = aliased(Span), aliased(Span)
    latency = _latency(child.duration_ms)
    # Caller -> callee: a server span whose parent (a client span, or any span) is another service's.
    joined = (
        select(
            parent.service.label("source"),
            child.service.label("target"),
            func.count().label("calls"),
            func.count().filter(child.error | parent.error).label("errors"),
            *(value.label(name) for name, value in latency.items()),
        )
        .select_from(child)
        .join(
            parent,
            and_(
                parent.org_id == child.org_id,
                parent.trace_id == child.trace_id,
                parent.span_id == child.parent_span_id,
            ),
        )
        .where(
            child.org_id == org_id,
            child.start_at >= start,
            child.start_at < end,
            child.kind == SERVER,
            parent.service != child.service,
        )
        .group_by(parent.service, child.service)
    )
    # A client span naming its peer, that no instrumented server span answered.
    answered = (
        select(child.id)
        .where(
            # The same org's trace: a join condition, not an org filter.
            tuple_(child.org_id, child.trace_id) == tuple_(Span.org_id, Span.trace_id),
            child.parent_span_id == Span.span_id,
            child.kind == SERVER,
        )
        .exists()
    )
    peer_latency = _latency(Span.duration_ms)
    named = (
        select(
            Span.service.label("source"),
            Span.peer.label("target"),
            func.count().label("calls"),
            func.count().filter(Span.error).label("errors"),
            *(value.label(name) for name, value in peer_latency.items()),
        )
        .where(in_range, Span.kind == CLIENT, Span.peer.is_not(None), ~answered)
        .group_by(Span.service, Span.peer)
    )
    edges: dict[tuple[str, str], dict[str, Any]] = {}
    for query in (joined, named):
        for row in (await session.execute(query)).mappings():
            key = (row["source"], row["target"])
            if key in edges:  # a peer named like a traced service: the traced numbers stand
                continue
            edges[key] = {
                "source": row["source"],
                "target": row["target"],
                "calls": row["calls"],
                "errors": row["errors"],
                "error_ratio": row["errors"] / row["calls"] if row["calls"] else 0.0,
                "latency_ms": {k: round(float(row[k]), 3) for k in ("avg", "p50", "p95")},
            }
    node_rows = (
        await session.execute(
            select(
                Span.service,
                func.count().label("spans"),
                func.count().filter(Span.kind == SERVER).label("server_spans"),
                func.count().filter(Span.error).label("errors"),
            )
            .where(in_range)
            .group_by(Span.service)
            .order_by(Span.service)
        )
    ).mappings()
    nodes = [dict(row) for row in node_rows]
    known = {n["service"] for n in nodes}
    for source, target in edges:
        for name in (source, target):
            if name not in known:
                known.add(name)
                nodes.append({"service": name, "spans": 0, "server_spans": 0, "errors": 0})
    return nodes, sorted(edges.values(), key=lambda e: (e["source"], e["target"]))
