import asyncio
import contextlib
import random

import aio_pika
import aiormq
import pytest

from coder.shared.devservers import RabbitServer
from coder.shared.events import CloudEvent
from coder.shared.events.bus import RabbitBus, _Acknowledgements, topic_matches
from coder.tests.support.platform import own_vhost, wait_until


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("ai.request.completed", "ai.request.completed", True),
        ("ai.*.completed", "ai.request.completed", True),
        ("ai.*", "ai.request.completed", False),
        ("ai.#", "ai.request.completed", True),
        ("ai.#", "ai", True),
        ("#", "anything.at.all", True),
        ("#.completed", "ai.request.completed", True),
        ("ai.#.completed", "ai.completed", True),
        ("ai.#.completed", "ai.request.completed.not", False),
        ("*.request.*", "usage.request.x", True),
        ("secrets.secret.rotated", "secrets.secret.created", False),
    ],
)
def test_topic_matching_follows_amqp(pattern: str, key: str, matches: bool) -> None:
    assert topic_matches(pattern, key) is matches


class _Broker:
    """A channel's acknowledgements as RabbitMQ reckons them: a tag settled twice is a channel error
    ("unknown delivery tag"); each ack's frame is written after a yield, as a socket write may."""

    def __init__(self, deliveries: int) -> None:
        self.outstanding = set(range(1, deliveries + 1))

    async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
        await asyncio.sleep(0)
        if tag not in self.outstanding:
            raise AssertionError(f"unknown delivery tag {tag}")
        covered = {t for t in self.outstanding if t <= tag} if multiple else {tag}
        self.outstanding -= covered


@pytest.mark.parametrize("seed", range(20))
async def test_acknowledgements_never_settle_a_tag_twice(seed: int) -> None:
    """Deliveries finish in any order and their acks interleave; every tag is settled exactly once."""
    rng = random.Random(seed)
    order = list(range(1, 41))
    rng.shuffle(order)
    broker, acks = _Broker(len(order)), _Acknowledgements()

    async def finish(tag: int) -> None:
        for _ in range(rng.randrange(6)):  # handlers take their time
            await asyncio.sleep(0)
        acks.handled.add(tag)
        await asyncio.sleep(0)
        await acks.send(broker)  # type: ignore[arg-type]  # the part of a channel acks use

    await asyncio.gather(*(finish(tag) for tag in order))
    assert broker.outstanding == set()


async def test_a_consumer_survives_the_broker_closing_its_channel(rabbit_server: RabbitServer) -> None:
    """A channel error closes the channel, not the connection: the consumer is started again on a
    fresh channel, and the events published afterwards are handled."""
    bus = RabbitBus(own_vhost(rabbit_server, "channel"))
    received: list[str] = []

    async def deliver(event: CloudEvent) -> None:
        received.append(event.id)

    await bus.start()
    try:
        await wait_until(bus.is_ready, what="the broker connection")
        await bus.consume("probe", ["probe.#"], deliver)
        first = CloudEvent(source="/coder/probe", type="probe.thing.happened", data={"n": 1})
        await bus.publish([first])
        await wait_until(lambda: first.id in received, what="an event before the channel error")

        connection = bus._connection
        assert connection is not None and connection.transport is not None
        channels = connection.transport.connection.channels.values()
        consuming = [
            channel for channel in channels if isinstance(channel, aiormq.Channel) and channel.consumers
        ]
        assert len(consuming) == 1
        with contextlib.suppress(aiormq.exceptions.AMQPError):
            await consuming[0].basic_ack(999)  # the broker closes the channel: PRECONDITION_FAILED
        await wait_until(lambda: consuming[0].is_closed, what="the broker to close the channel")

        second = CloudEvent(source="/coder/probe", type="probe.thing.happened", data={"n": 2})

        async def handled() -> bool:
            if bus.is_ready():
                with contextlib.suppress(ConnectionError, aio_pika.exceptions.AMQPError):
                    await bus.publish([second])  # at least once: the consumer side dedupes
            return second.id in received

        await wait_until(handled, what="an event after the channel error")
    finally:
        await bus.close()
