"""End-to-end event throughput: the platform's outbox -> relay -> RabbitMQ -> inbox consumer, against
a bare aio-pika publish (with confirms) / consume loop on the same broker, in the same run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from pathlib import Path

import aio_pika
from fastapi import APIRouter
from sqlalchemy import String, func, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coder.bench.support import CpuClock, Stopwatch, report, result, scratch_database
from coder.runner.process import collector_tuned
from coder.shared import db
from coder.shared.contracts import Contract
from coder.shared.devservers import RabbitServer
from coder.shared.events import CloudEvent, EventContext
from coder.shared.runtime import Runtime
from coder.shared.settings import PlatformSettings
from coder.shared.target import Dependency, Descriptor, Target

EVENTS = 5000
PER_TRANSACTION = 50


class ThingHappened(Contract):
    """The probe's one event (the outbox checks every payload against its type's contract)."""

    event_type = "benchprobe.thing.happened"
    schema_version = 1
    seq: int


class Base(db.TargetBase, DeclarativeBase, target="benchprobe"):
    pass


class Effect(Base):
    """What handling an event leaves: one row per event, committed with its inbox entry."""

    __tablename__ = "benchprobe_effect"
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int]


metadata, events = Base.metadata, Base.events
handled = 0  # the handler's calls (a rolled-back batch runs its handlers again): a hint to look


async def on_event(event: CloudEvent, context: EventContext) -> None:
    # Written like a service writes its rows: added to the session, flushed with the transaction's others.
    global handled
    context.session.add(Effect(event_id=event.id, seq=event.data["seq"]))
    handled += 1


probe = Target(
    descriptor=Descriptor(
        name="benchprobe",
        port=39998,
        title="Bench probe",
        package="coder.bench",
        needs=frozenset({Dependency.POSTGRES, Dependency.RABBITMQ}),
        emits=("benchprobe.thing.happened",),
        consumes=("benchprobe.thing.happened",),
    ),
    router=APIRouter(),
    metadata=metadata,
    events=events,
    consumes={"benchprobe.thing.happened": on_event},
    consume_batch=32,
)


async def bare_aio_pika(url: str, servers: dict[str, int]) -> tuple[float, dict[str, float]]:
    """Publish EVENTS persistent messages with confirms (batched like the relay), consume and ack them."""
    connection = await aio_pika.connect_robust(url)
    async with connection:
        publish_channel = await connection.channel(publisher_confirms=True)
        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=64)
        exchange = await publish_channel.declare_exchange(
            "bench.bare", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await consume_channel.declare_queue(
            f"bench.bare.{uuid.uuid4().hex[:6]}", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind("bench.bare", routing_key="bench.#")
        done = asyncio.Event()
        received = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received
            json.loads(message.body)
            await message.ack()
            received += 1
            if received == EVENTS:
                done.set()

        await queue.consume(on_message)
        clock, cpu = Stopwatch(), CpuClock(servers)
        for start in range(0, EVENTS, 500):
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            CloudEvent(
                                source="/bench", type="bench.thing.happened", data={"seq": i}
                            ).to_json(),
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key="bench.thing.happened",
                    )
                    for i in range(start, min(start + 500, EVENTS))
                )
            )
        await asyncio.wait_for(done.wait(), timeout=300)
        elapsed, used = clock.seconds, cpu.per(EVENTS)
        await queue.delete(if_unused=False, if_empty=False)
        await publish_channel.exchange_delete("bench.bare")
    return EVENTS / elapsed, used


async def platform_pipeline(
    url: str, database_url: str, servers: dict[str, int]
) -> tuple[float, dict[str, float]]:
    """EVENTS written through the outbox in transactions of PER_TRANSACTION, until all are handled."""
    engine = db.create_engine(database_url, pool_size=2)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)  # a bench-only target: no migrations
        servers = {**servers, **_postgres(await conn.scalar(text("SELECT pg_backend_pid()")))}
    await engine.dispose()
    settings = PlatformSettings.model_validate(
        {"database_url": database_url, "amqp_url": url, "environment": "test", "jwks": '{"keys": []}'}
    )
    runtime = Runtime(settings, {"benchprobe": probe}, {"benchprobe": probe.descriptor})
    await runtime.start()
    try:
        assert runtime.bus is not None
        while not runtime.bus.is_ready():  # noqa: ASYNC110 - the bus exposes no event to wait on
            await asyncio.sleep(0.05)
        with collector_tuned():  # as a process serves (runner/process.py)
            return await _measure(runtime, servers)
    finally:
        await runtime.stop()


async def _measure(runtime: Runtime, servers: dict[str, int]) -> tuple[float, dict[str, float]]:
    clock, cpu = Stopwatch(), CpuClock(servers)
    for start in range(0, EVENTS, PER_TRANSACTION):
        async with db.transaction(runtime.sessions) as session:
            for seq in range(start, start + PER_TRANSACTION):
                await events.publish(session, "benchprobe.thing.happened", {"seq": seq})
    while True:
        # The database's count is the result; the handler's calls say when to ask it (the
        # count's transaction would otherwise be a share of the load measured).
        while handled < EVENTS:  # noqa: ASYNC110 - the bare loop's counter is in memory too
            await asyncio.sleep(0.02)
        async with runtime.sessions() as session:
            if await session.scalar(select(func.count()).select_from(Effect)) == EVENTS:
                break
        await asyncio.sleep(0.02)
    return EVENTS / clock.seconds, cpu.per(EVENTS)


def _postgres(backend: int) -> dict[str, int]:
    """{"database": the server's pid} when it runs on this machine (the backend's parent)."""
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{backend}/stat").read_text()
        if "(postgres)" in stat:
            return {"database": int(stat.rsplit(")", 1)[1].split()[1])}
    return {}


async def main() -> None:
    with RabbitServer() as rabbit:
        assert rabbit.process is not None
        broker = {"broker": rabbit.process.pid}
        async with scratch_database() as database_url:
            with collector_tuned():  # the same collector settings as the platform's, to be fair
                bare, bare_cpu = await bare_aio_pika(rabbit.url, broker)
            platform, platform_cpu = await platform_pipeline(rabbit.url, database_url, broker)
    report(
        f"events end to end, {EVENTS} events",
        [
            ("bare aio-pika publish/consume", bare, "events/s"),
            ("outbox -> relay -> RabbitMQ -> inbox", platform, "events/s"),
        ],
        baseline="bare aio-pika publish/consume",
    )
    print("  (the platform also commits each event with its data and each handling with an inbox row)")
    for name, cpu in (("bare", bare_cpu), ("platform", platform_cpu)):
        print(f"  CPU per event, {name:<9}" + ", ".join(f"{part} {us:,.0f} us" for part, us in cpu.items()))
    result("ratio_vs_bare", platform / bare, goal=0.5)
    # The same comparison in CPU rather than time: events per CPU second, all processes counted.
    result("cpu_ratio_vs_bare", bare_cpu["total"] / platform_cpu["total"])
