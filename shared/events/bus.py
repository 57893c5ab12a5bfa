"""Two buses with one contract: RabbitMQ (aio-pika) and in-process.

Contract: `publish()` returns once the bus has the event (publisher confirm, or queued in memory);
each consuming target has its own durable queue bound to routing-key patterns (`*` one word, `#` any);
a delivery whose handler raises is retried, and after `delivery_limit` attempts it goes to that
target's dead-letter queue. Delivery is at-least-once; consumers dedupe through their inbox.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from functools import cache
from typing import Protocol

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from coder.shared.events.envelope import CloudEvent

log = logging.getLogger(__name__)

EXCHANGE = "coder.events"
DEAD_LETTER_EXCHANGE = "coder.events.dead"

Deliver = Callable[[CloudEvent], Awaitable[None]]


def queue_name(target: str) -> str:
    return f"coder.{target}"


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

    async def publish(self, events: Sequence[CloudEvent]) -> None:
        for event in events:
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
    limit, a dead-letter exchange and queue per target, publisher confirms. The robust connection
    reconnects and re-declares its consumers after a broker restart."""

    def __init__(self, url: str, delivery_limit: int = 5, prefetch: int = 64) -> None:
        self.url = url
        self.delivery_limit = delivery_limit
        self.prefetch = prefetch
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: aio_pika.abc.AbstractRobustChannel | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._connected = asyncio.Event()
        self._connect_task: asyncio.Task[None] | None = None
        self._pending: list[tuple[str, Sequence[str], Deliver]] = []
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        # Connect in the background so a process starts (and reports not-ready) while the broker is down.
        self._connect_task = asyncio.create_task(self._connect_forever(), name="amqp-connect")

    async def _connect_forever(self) -> None:
        delay = 0.5
        while True:
            try:
                self._connection = await aio_pika.connect_robust(self.url, timeout=10)
                break
            except Exception as exc:
                log.warning("AMQP broker not reachable, retrying", extra={"error": str(exc), "in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self._publish_channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await self._declare_exchanges(self._publish_channel)
        self._connected.set()
        for target, bindings, deliver in self._pending:
            await self._start_consumer(target, bindings, deliver)
        self._pending.clear()

    @staticmethod
    async def _declare_exchanges(channel: aio_pika.abc.AbstractChannel) -> aio_pika.abc.AbstractExchange:
        await channel.declare_exchange(DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)
        return await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)

    def is_ready(self) -> bool:
        return (
            self._connected.is_set() and self._connection is not None and self._connection.connected.is_set()
        )

    async def close(self) -> None:
        # Unfinished handlers are abandoned unacknowledged: the broker redelivers them.
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._connect_task is not None:
            self._connect_task.cancel()
            await asyncio.gather(self._connect_task, return_exceptions=True)
        if self._connection is not None:
            await self._connection.close()

    async def publish(self, events: Sequence[CloudEvent]) -> None:
        if not self.is_ready() or self._exchange is None:
            raise ConnectionError("AMQP broker not connected")
        exchange = self._exchange
        # Confirms are awaited together: one round trip's latency for the batch, not one per event.
        # A broker that vanishes mid-batch fails the batch (the outbox keeps it) instead of hanging.
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            body=event.to_json(),
                            message_id=event.id,
                            type=event.type,
                            content_type="application/cloudevents+json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=event.type,
                    )
                    for event in events
                )
            ),
            timeout=30,
        )

    async def consume(self, target: str, bindings: Sequence[str], deliver: Deliver) -> None:
        if self._connected.is_set():
            await self._start_consumer(target, bindings, deliver)
        else:
            self._pending.append((target, bindings, deliver))

    async def _start_consumer(self, target: str, bindings: Sequence[str], deliver: Deliver) -> None:
        assert self._connection is not None
        channel = await self._connection.channel()
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

        async def on_message(message: AbstractIncomingMessage) -> None:
            try:
                event = CloudEvent.model_validate_json(message.body)
            except ValueError:
                log.error(
                    "malformed event dead-lettered",
                    extra={"target": target, "message_id": message.message_id},
                )
                await message.reject(requeue=False)
                return
            try:
                await deliver(event)
            except Exception:
                log.warning(
                    "event handler failed; the broker redelivers it",
                    exc_info=True,
                    extra={"target": target, "event_id": event.id},
                )
                await message.nack(requeue=True)
            else:
                await message.ack()

        # Deliveries run concurrently (up to the prefetch window): a handler is a database
        # transaction, and awaiting each in turn would cap a consumer at one commit's latency.
        async def dispatch(message: AbstractIncomingMessage) -> None:
            task = asyncio.create_task(on_message(message))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

        await queue.consume(dispatch)
