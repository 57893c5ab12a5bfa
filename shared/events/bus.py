"""Two buses with one contract: RabbitMQ (aio-pika) and in-process.

Contract: `publish()` returns once the bus has the event (publisher confirm, or queued in memory);
each consuming target has its own durable queue bound to routing-key patterns (`*` one word, `#` any);
a delivery whose handler raises is retried, and after `delivery_limit` attempts it goes to that
target's dead-letter queue. Delivery is at-least-once; consumers dedupe through their inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from functools import cache, lru_cache
from typing import Protocol

import aio_pika
import aiormq
from aiormq.abc import DeliveredMessage

from coder.shared.events.envelope import CloudEvent
from coder.shared.events.tracing import processing, producing

log = logging.getLogger(__name__)

EXCHANGE = "coder.events"
DEAD_LETTER_EXCHANGE = "coder.events.dead"

Deliver = Callable[[CloudEvent], Awaitable[None]]


def queue_name(target: str) -> str:
    return f"coder.{target}"


@lru_cache(maxsize=4096)  # asked per delivery and binding, of a few patterns and event types
def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: dot-separated words, `*` is exactly one word, `#` zero or more."""
    words, keys = pattern.split("."), routing_key.split(".")

    @cache
    def match(i: int, j: int) -> bool:
        if i == len(words):
            return j == len(keys)
        if words[i] == "#":
            return match(i + 1, j) or (j < len(keys) and match(i, j + 1))
        return j < len(keys) and words[i] in ("*", keys[j]) and match(i + 1, j + 1)

    return match(0, 0)


class Bus(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def publish(self, events: Sequence[CloudEvent]) -> None: ...
    async def consume(self, target: str, bindings: Sequence[str], deliver: Deliver) -> None: ...
    def is_ready(self) -> bool: ...
    async def dead_letter_depths(self, targets: Sequence[str]) -> dict[str, int]: ...


class InProcessBus:
    """The `all` mode bus without a broker: same routing, retries and dead letters, in memory."""

    def __init__(self, delivery_limit: int = 5, retry_delay: float = 0.05, concurrency: int = 16) -> None:
        self.delivery_limit = delivery_limit
        self.concurrency = concurrency
        self.retry_delay = retry_delay
        self._subscriptions: list[tuple[str, Sequence[str], asyncio.Queue[tuple[CloudEvent, int]]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.dead_letters: dict[str, list[CloudEvent]] = defaultdict(list)

    async def start(self) -> None:
        return None

    def is_ready(self) -> bool:
        return True

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def dead_letter_depths(self, targets: Sequence[str]) -> dict[str, int]:
        consuming = {target for target, _, _ in self._subscriptions}
        return {target: len(self.dead_letters[target]) for target in targets if target in consuming}

    async def publish(self, events: Sequence[CloudEvent]) -> None:
        for created in events:
            with producing(created, "coder.inprocess") as event:
                for _target, bindings, queue in self._subscriptions:
                    if any(topic_matches(b, event.type) for b in bindings):
                        queue.put_nowait((event, 1))

    async def consume(self, target: str, bindings: Sequence[str], deliver: Deliver) -> None:
        queue: asyncio.Queue[tuple[CloudEvent, int]] = asyncio.Queue()
        self._subscriptions.append((target, bindings, queue))
        for worker in range(self.concurrency):
            self._tasks.append(
                asyncio.create_task(self._run(target, queue, deliver), name=f"consume:{target}:{worker}")
            )

    async def _run(self, target: str, queue: asyncio.Queue[tuple[CloudEvent, int]], deliver: Deliver) -> None:
        while True:
            event, attempt = await queue.get()
            try:
                with processing(event, "coder.inprocess", target):
                    await deliver(event)
            except Exception:
                if attempt >= self.delivery_limit:
                    log.exception("event dead-lettered", extra={"target": target, "event_id": event.id})
                    self.dead_letters[target].append(event)
                else:
                    log.warning(
                        "event handler failed, retrying",
                        exc_info=True,
                        extra={"target": target, "event_id": event.id, "attempt": attempt},
                    )
                    await asyncio.sleep(self.retry_delay * attempt)
                    queue.put_nowait((event, attempt + 1))


class RabbitBus:
    """RabbitMQ: one durable topic exchange, a quorum queue per consuming target with a delivery
    limit, a dead-letter exchange and queue per target, publisher confirms.

    One supervisor task owns the connection: it connects (retrying with backoff), declares the
    topology, starts every registered consumer, and when the connection drops does all of it again
    on a fresh one. A channel the broker closes while the connection stays up (a channel error,
    such as an unknown delivery tag) counts as a drop: left alone, its consumer would stop silently.
    Deliveries unacknowledged at a drop come back from the broker; the inbox drops the ones already
    handled.
    """

    def __init__(self, url: str, delivery_limit: int = 5, prefetch: int = 64) -> None:
        self.url = url
        self.delivery_limit = delivery_limit
        self.prefetch = prefetch
        self._publisher: aiormq.Channel | None = None  # with publisher confirms
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._lost = asyncio.Event()  # set when the connection, or one of its channels, closes
        self._supervisor: asyncio.Task[None] | None = None
        self._consumers: list[tuple[str, Sequence[str], Deliver]] = []
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        # Connect in the background so a process starts (and reports not-ready) while the broker is down.
        self._supervisor = asyncio.create_task(self._supervise(), name="amqp-supervisor")

    async def _supervise(self) -> None:
        delay = 0.5
        while True:
            try:
                connection = await aio_pika.connect(self.url, timeout=10)
            except Exception as exc:
                log.warning("AMQP broker not reachable, retrying", extra={"error": repr(exc), "in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            lost = self._lost = asyncio.Event()
            connection.close_callbacks.add(lambda *_, lost=lost: lost.set())
            try:
                publish_channel = await connection.channel(publisher_confirms=True)
                _watch(publish_channel, lost)
                await self._declare_exchanges(publish_channel)
                publisher = await publish_channel.get_underlay_channel()
                assert isinstance(publisher, aiormq.Channel)
                for target, bindings, deliver in list(self._consumers):
                    await self._start_consumer(connection, target, bindings, deliver)
                self._connection, self._publisher = connection, publisher
                delay = 0.5
                log.info("AMQP broker connected")
                await lost.wait()
                log.warning("AMQP connection or channel lost; reconnecting")
            except Exception as exc:
                log.warning("AMQP setup failed; reconnecting", extra={"error": repr(exc)})
            finally:
                lost.set()  # its channels closing with it are no news
                self._connection = self._publisher = None
                with contextlib.suppress(Exception):
                    await connection.close()
            await asyncio.sleep(delay)

    @staticmethod
    async def _declare_exchanges(channel: aio_pika.abc.AbstractChannel) -> aio_pika.abc.AbstractExchange:
        await channel.declare_exchange(DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)
        return await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)

    def is_ready(self) -> bool:
        return self._publisher is not None and self._connection is not None and not self._connection.is_closed

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        # Unfinished handlers are abandoned unacknowledged: the broker redelivers them.
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def dead_letter_depths(self, targets: Sequence[str]) -> dict[str, int]:
        """The messages in each target's dead-letter queue (a passive declare: the broker's count);
        none while the broker is away."""
        connection = self._connection
        if connection is None or not self.is_ready():
            return {}
        depths = {}
        channel = await connection.channel()
        try:
            for target in targets:
                try:
                    queue = await channel.declare_queue(f"{queue_name(target)}.dead", passive=True)
                except aio_pika.exceptions.ChannelClosed:  # not declared yet: its consumer is starting
                    channel = await connection.channel()  # the broker closed the one that asked
                    continue
                depths[target] = queue.declaration_result.message_count or 0
        finally:
            await channel.close()
        return depths

    async def publish(self, events: Sequence[CloudEvent]) -> None:
        publisher = self._publisher
        if publisher is None or not self.is_ready():
            raise ConnectionError("AMQP broker not connected")

        async def send(created: CloudEvent) -> None:
            with producing(created, "rabbitmq") as event:
                # On the channel itself (aio-pika's Message and Exchange add only copies): it returns
                # once the broker confirms, and raises if the broker refuses.
                await publisher.basic_publish(
                    event.to_json(),
                    exchange=EXCHANGE,
                    routing_key=event.type,
                    properties=aiormq.spec.Basic.Properties(
                        message_id=event.id,
                        message_type=event.type,
                        content_type="application/cloudevents+json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    wait=False,  # not for the socket's drain: the confirm comes after it
                )

        # Confirms are awaited together: one round trip's latency for the batch, not one per event.
        # A broker that vanishes mid-batch fails the batch (the outbox keeps it) instead of hanging.
        await asyncio.wait_for(asyncio.gather(*(send(event) for event in events)), timeout=30)

    async def consume(self, target: str, bindings: Sequence[str], deliver: Deliver) -> None:
        self._consumers.append((target, bindings, deliver))
        if self._connection is not None and self.is_ready():
            await self._start_consumer(self._connection, target, bindings, deliver)

    async def _start_consumer(
        self,
        connection: aio_pika.abc.AbstractConnection,
        target: str,
        bindings: Sequence[str],
        deliver: Deliver,
    ) -> None:
        channel = await connection.channel()
        _watch(channel, self._lost)
        await channel.set_qos(prefetch_count=self.prefetch)
        exchange = await self._declare_exchanges(channel)
        dead = await channel.declare_queue(
            f"{queue_name(target)}.dead", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead.bind(DEAD_LETTER_EXCHANGE, routing_key=target)
        queue = await channel.declare_queue(
            queue_name(target),
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": self.delivery_limit - 1,  # redeliveries after the first attempt
                "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
                "x-dead-letter-routing-key": target,
            },
        )
        for binding in bindings:
            await queue.bind(exchange, routing_key=binding)

        acks = _Acknowledgements()
        # Consumed on the channel itself, as the relay publishes: aio-pika's message wrapper and its
        # extra task per delivery cost more than the rest of the delivery's own handling.
        consumer = await channel.get_underlay_channel()
        assert isinstance(consumer, aiormq.Channel)

        # Each delivery is a task of its own (aiormq's), so they run concurrently up to the prefetch
        # window: a handler is a database transaction, and awaiting each in turn would cap a consumer
        # at one commit's latency.
        async def on_message(message: DeliveredMessage) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._handlers.add(task)
            try:
                await handle(message)
            except Exception as exc:
                if not message.channel.is_closed:
                    raise
                # Its channel closed under it (and the supervisor starts a new one): the broker
                # delivers again what was not settled.
                log.info("delivery left unsettled", extra={"target": target, "error": repr(exc)})
            finally:
                self._handlers.discard(task)

        async def handle(message: DeliveredMessage) -> None:
            tag = message.delivery_tag
            assert tag is not None
            try:
                event = CloudEvent.model_validate_json(message.body)
            except ValueError:
                log.error(
                    "malformed event dead-lettered",
                    extra={"target": target, "message_id": message.header.properties.message_id},
                )
                await message.channel.basic_reject(tag, requeue=False)
                acks.settled.add(tag)
                return
            try:
                with processing(event, "rabbitmq", target):
                    await deliver(event)
            except Exception:
                log.warning(
                    "event handler failed; the broker redelivers it",
                    exc_info=True,
                    extra={"target": target, "event_id": event.id},
                )
                await message.channel.basic_nack(tag, requeue=True)
                acks.settled.add(tag)
            else:
                acks.handled.add(tag)
                await asyncio.sleep(0)  # the others handled on the same commit join this ack
                await acks.send(message.channel)

        await consumer.basic_consume(queue.name, on_message)


def _watch(channel: aio_pika.abc.AbstractChannel, lost: asyncio.Event) -> None:
    """A channel closing (the broker closes one on a channel error) sets `lost`: the supervisor then
    connects again and starts every consumer afresh."""

    def closed(_: object, error: BaseException | None) -> None:
        if not lost.is_set():
            log.warning("AMQP channel closed", extra={"error": repr(error)})
        lost.set()

    channel.close_callbacks.add(closed)


class _Acknowledgements:
    """One consumer channel's acknowledgements, those of deliveries handled together (a batch's,
    on one commit) sent as one `multiple` ack.

    A channel numbers its deliveries 1, 2, 3...; a `multiple` ack of a tag settles every earlier
    unsettled one, so it covers only the run of handled tags from the oldest unsettled one. One
    handled behind a slower delivery is acknowledged alone, so it does not hold the prefetch window.
    One `send` at a time, each writing its acks before the next reckons: a tag marked settled must be
    acknowledged before a later `multiple` ack covers it, or the broker gets it twice and closes the
    channel ("unknown delivery tag").
    """

    def __init__(self) -> None:
        self.oldest = 1  # the oldest delivery not known to be settled
        self.handled: set[int] = set()  # to acknowledge
        self.settled: set[int] = set()  # above `oldest`: acknowledged alone, or refused
        self.lock = asyncio.Lock()

    async def send(self, channel: aiormq.abc.AbstractChannel) -> None:
        async with self.lock:
            await self._send(channel)

    async def _send(self, channel: aiormq.abc.AbstractChannel) -> None:
        last = 0
        while self.oldest in self.handled or self.oldest in self.settled:
            if self.oldest in self.handled:
                last = self.oldest
            self.handled.discard(self.oldest)
            self.settled.discard(self.oldest)
            self.oldest += 1
        alone = sorted(self.handled)
        self.handled.clear()
        self.settled.update(alone)
        if last:
            await channel.basic_ack(last, multiple=True, wait=False)
        for tag in alone:
            await channel.basic_ack(tag, wait=False)
