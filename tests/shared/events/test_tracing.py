"""An event continues the trace that created it across either bus: the bus's PRODUCER span is a child
of the creating span, and the consumer's CONSUMER span a child of (and linked to) the producer's."""

from __future__ import annotations

import uuid

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import SpanKind

from coder.shared.events import CloudEvent
from coder.shared.events.bus import queue_name
from coder.shared.telemetry import configure_tracing
from coder.tests.shared.events.test_dead_letters import _queue_exists
from coder.tests.support.platform import Platform, wait_until


async def test_the_consumer_handles_an_event_in_the_trace_that_created_it(platform: Platform) -> None:
    configure_tracing("coder-test")  # the SDK provider (no export): spans record their parents
    assert isinstance(trace.get_tracer_provider(), TracerProvider)
    bus = platform.runtime.bus
    assert bus is not None
    target = f"trace{uuid.uuid4().hex[:8]}"
    seen: list[ReadableSpan] = []

    async def handler(event: CloudEvent) -> None:
        span = trace.get_current_span()
        assert isinstance(span, ReadableSpan)
        seen.append(span)

    await bus.consume(target, [f"{target}.thing.*"], handler)
    if platform.backend == "real":
        await wait_until(_queue_exists(platform, queue_name(target)), what="the consumer's queue")
    with trace.get_tracer("test").start_as_current_span("request") as request:
        event = CloudEvent.new(f"{target}.thing.happened", {"n": 1})
    await bus.publish([event])
    await wait_until(lambda: seen, what="the delivery")

    [process] = seen
    context = request.get_span_context()
    assert process.kind is SpanKind.CONSUMER
    assert process.name == f"process {target}.thing.happened"
    assert process.context is not None and process.context.trace_id == context.trace_id
    assert process.attributes is not None
    assert process.attributes["messaging.consumer.group.name"] == target
    assert process.attributes["messaging.system"] == (
        "rabbitmq" if platform.backend == "real" else "coder.inprocess"
    )
    # Its parent is the producer span (not the request's): the event left carrying that context.
    assert process.parent is not None and process.parent.span_id != context.span_id
    assert [link.context.span_id for link in process.links] == [process.parent.span_id]
