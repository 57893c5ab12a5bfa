"""The outbox under a broker outage: RabbitMQ is stopped while events are produced, then restarted.

Every event must be handled exactly once in effect: none lost (the outbox holds them), none applied
twice (the inbox drops redeliveries, including ones this test adds on purpose).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from coder.shared import db
from coder.shared.devservers import RabbitServer
from coder.shared.events import CloudEvent
from coder.shared.metrics import collect
from coder.shared.runtime import Runtime
from coder.shared.settings import PlatformSettings
from coder.tests.shared.events.probe import applied, effects, events, probe, probe_tables  # noqa: F401  (a fixture)
from coder.tests.support.platform import wait_until


async def produce(runtime: Runtime, first: int, count: int) -> list[str]:
    ids = []
    for seq in range(first, first + count):
        async with db.transaction(runtime.sessions) as session:
            event = await events.publish(session, "probe.thing.happened", {"seq": seq}, org_id="probe-org")
            ids.append(event.id)
    return ids


@pytest.mark.usefixtures("probe_tables")
async def test_broker_outage_delays_events_but_loses_and_duplicates_none(database_url: str) -> None:
    applied.clear()
    rabbit = RabbitServer().start()
    settings = PlatformSettings.model_validate(
        {
            "database_url": database_url,
            "amqp_url": rabbit.url,
            "environment": "test",
            "outbox_poll_seconds": 0.2,
            "jwks": '{"keys": []}',
        }
    )
    runtime = Runtime(settings, {"probe": probe}, {"probe": probe.descriptor})
    await runtime.start()
    try:
        assert runtime.bus is not None
        await wait_until(runtime.bus.is_ready, what="the broker connection")
        produced = await produce(runtime, 0, 40)
        await wait_until(lambda: len(set(applied)) >= 20, what="some events to flow before the outage")

        rabbit.terminate()  # the broker goes away mid-stream
        await wait_until(lambda: not runtime.bus.is_ready(), what="the client to notice the outage")
        produced += await produce(runtime, 40, 60)  # produced while the broker is down
        async with runtime.sessions() as session:
            waiting = await session.scalar(select(func.count()).select_from(events.outbox))
        assert waiting and waiting > 0, "events produced during the outage wait in the outbox"
        # What /metrics reports meanwhile: the rows waiting, and how long the oldest has waited.
        await collect(runtime)
        assert REGISTRY.get_sample_value("coder_outbox_events", {"target": "probe"}) == waiting
        assert (REGISTRY.get_sample_value("coder_outbox_oldest_age_seconds", {"target": "probe"}) or 0) > 0

        await asyncio.to_thread(rabbit.start)  # same port, same data: the broker comes back
        produced += await produce(runtime, 100, 20)

        async def all_applied() -> bool:
            async with runtime.sessions() as session:
                return await session.scalar(select(func.count()).select_from(effects)) == len(produced)

        await wait_until(all_applied, timeout=90, what="every event to be applied")

        async def outbox_empty() -> bool:
            await collect(runtime)
            return REGISTRY.get_sample_value("coder_outbox_events", {"target": "probe"}) == 0

        await wait_until(outbox_empty, what="an empty outbox on /metrics")
        assert REGISTRY.get_sample_value("coder_outbox_oldest_age_seconds", {"target": "probe"}) == 0
        assert REGISTRY.get_sample_value("coder_dead_letter_events", {"target": "probe"}) == 0

        # Redeliver some on purpose, as a broker does after a consumer crash: the inbox drops them.
        async with runtime.sessions() as session:
            rows = (await session.execute(select(events.inbox.c.event_id).limit(10))).scalars().all()
        duplicates = [
            CloudEvent(id=i, source="/coder/probe", type="probe.thing.happened", data={"seq": -1})
            for i in rows
        ]
        await runtime.bus.publish(duplicates)
        marker = CloudEvent(
            source="/coder/probe", type="probe.thing.happened", data={"seq": 10_000}, id=str(uuid.uuid4())
        )
        await runtime.bus.publish([marker])
        await wait_until(lambda: marker.id in applied, what="the marker behind the duplicates")

        async with runtime.sessions() as session:
            effect_ids = set((await session.execute(select(effects.c.event_id))).scalars())
            seqs = sorted((await session.execute(select(effects.c.seq))).scalars())
            left = await session.scalar(select(func.count()).select_from(events.outbox))
        assert effect_ids == {*produced, marker.id}
        assert seqs == [*range(120), 10_000]  # each exactly once
        assert left == 0
    finally:
        await runtime.stop()
        rabbit.stop()
