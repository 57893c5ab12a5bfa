"""A delivery whose handler keeps failing is retried up to the delivery limit, then dead-lettered;
both buses keep the same contract."""

from __future__ import annotations

import uuid

import aio_pika

from coder.shared.events import CloudEvent
from coder.shared.events.bus import InProcessBus, queue_name
from coder.tests.support.platform import Platform, wait_until


async def test_failing_handler_is_retried_then_dead_lettered(platform: Platform) -> None:
    bus = platform.runtime.bus
    assert bus is not None
    target = f"dlq{uuid.uuid4().hex[:8]}"
    attempts: list[str] = []

    async def always_fails(event: CloudEvent) -> None:
        attempts.append(event.id)
        raise RuntimeError("handler bug")

    await bus.consume(target, [f"{target}.thing.*"], always_fails)
    event = CloudEvent(source=f"/coder/{target}", type=f"{target}.thing.broke", data={"n": 1})
    limit = platform.runtime.settings.event_delivery_limit
    if platform.backend == "real":
        await wait_until(_queue_exists(platform, queue_name(target)), what="the consumer's queue")
    await bus.publish([event])
    await wait_until(lambda: len(attempts) >= limit, what=f"{limit} delivery attempts")

    async def depth() -> bool:
        # A target without a consumer yet has no queue to count (and does not hide the others).
        return await bus.dead_letter_depths([f"none{uuid.uuid4().hex[:8]}", target]) == {target: 1}

    # What /metrics reports as coder_dead_letter_events{target}: the broker's count, or the bus's own.
    await wait_until(depth, what="a dead-letter queue of one", timeout=30)
    if isinstance(bus, InProcessBus):
        assert [e.id for e in bus.dead_letters[target]] == [event.id]
    else:
        dead = await wait_until(_dead_message(platform, target), what="the dead letter", timeout=30)
        assert CloudEvent.model_validate_json(dead).id == event.id
    assert attempts == [event.id] * limit  # no attempt beyond the limit


def _queue_exists(platform: Platform, name: str):
    async def check() -> bool:
        connection = await aio_pika.connect(platform.runtime.settings.amqp_url or "")
        async with connection:
            channel = await connection.channel()
            try:
                await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return False
            return True

    return check


def _dead_message(platform: Platform, target: str):
    async def fetch() -> bytes | None:
        connection = await aio_pika.connect(platform.runtime.settings.amqp_url or "")
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(f"{queue_name(target)}.dead", passive=True)
            message = await queue.get(fail=False)
            if message is None:
                return None
            await message.ack()
            return message.body

    return fetch


async def test_every_consuming_target_has_a_dead_letter_gauge(platform: Platform) -> None:
    text = (await platform.runtime.metrics.client("usage").get("/metrics")).text
    consumers = [name for name, t in platform.runtime.targets.items() if t.consumes]
    assert consumers
    for name in consumers:
        assert f'coder_dead_letter_events{{target="{name}"}}' in text
