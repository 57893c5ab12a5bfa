"""Producer and consumer spans of events, after OpenTelemetry's messaging semantic conventions.

An event carries the W3C traceparent of the span that created it (CloudEvents' distributed tracing
extension). Sending it opens a PRODUCER span, a child of that creation context, and the event leaves
carrying the producer span's context; handling it opens a CONSUMER `process` span whose parent is
that context (one message, one trace: gateway, service, outbox, broker and consumer) and which also
links to it, as the conventions ask of consumer spans.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind

from coder.shared.events.envelope import CloudEvent

tracer = trace.get_tracer("coder.events")

EXCHANGE = "coder.events"


def _attributes(event: CloudEvent, system: str, operation: str, kind: str) -> dict[str, str]:
    return {
        "messaging.system": system,
        "messaging.operation.type": kind,
        "messaging.operation.name": operation,
        "messaging.destination.name": EXCHANGE,
        "messaging.message.id": event.id,
        "messaging.rabbitmq.destination.routing_key": event.type,
        "cloudevents.event_id": event.id,
        "cloudevents.event_type": event.type,
        "cloudevents.event_source": event.source,
    }


def _parent(event: CloudEvent) -> Context:
    """The context the event was sent from (none: a root, whatever is current where it is handled)."""
    return propagate.extract({"traceparent": event.traceparent}) if event.traceparent else Context()


@contextmanager
def producing(event: CloudEvent, system: str) -> Iterator[CloudEvent]:
    """A PRODUCER span around sending one event (current inside the block): the event to send,
    carrying this span's context. A failure in the block marks the span as an error."""
    span = tracer.start_span(f"publish {event.type}", context=_parent(event), kind=SpanKind.PRODUCER)
    if not span.is_recording():  # no tracing here: the event keeps its creation context
        yield event
        return
    with trace.use_span(span, end_on_exit=True):
        span.set_attributes(_attributes(event, system, "publish", "send"))
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield event.model_copy(update={"traceparent": carrier.get("traceparent", event.traceparent)})


@contextmanager
def processing(event: CloudEvent, system: str, consumer: str) -> Iterator[None]:
    """A CONSUMER span around one target handling one event, in the event's trace."""
    parent = _parent(event)
    sent = trace.get_current_span(parent).get_span_context()
    span = tracer.start_span(
        f"process {event.type}",
        context=parent,
        kind=SpanKind.CONSUMER,
        links=[Link(sent)] if sent.is_valid else None,
    )
    if span.is_recording():  # the attributes only where they are kept
        span.set_attributes(
            {
                **_attributes(event, system, "process", "process"),
                "messaging.consumer.group.name": consumer,
                "coder.target": consumer,
            }
        )
    # Current even when not recording: what the handler publishes carries the event's trace on.
    with trace.use_span(span, end_on_exit=True, record_exception=True, set_status_on_exception=True):
        yield
