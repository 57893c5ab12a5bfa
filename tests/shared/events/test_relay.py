"""The relay's timed round: it finds the outboxes holding rows in one statement and drains those,
including rows whose commit woke no relay (another replica's, or one that died); and the wake a
commit gives it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from coder.shared import db
from coder.shared.events import CloudEvent, EventTables
from coder.shared.events.outbox import WAKE_RELAY
from coder.shared.events.relay import Relay
from coder.tests.shared.events.probe import (
    events,
    probe_tables,  # noqa: F401  (a fixture)
)
from coder.tests.support.platform import wait_until


class Recorder:
    def __init__(self) -> None:
        self.published: list[CloudEvent] = []

    async def publish(self, sent: Sequence[CloudEvent]) -> None:
        self.published.extend(sent)


@pytest.mark.usefixtures("probe_tables")
async def test_the_timed_round_drains_rows_no_commit_announced(database_url: str) -> None:
    engine = db.create_engine(database_url, pool_size=2)
    quiet_metadata = db.target_metadata("quiet")
    quiet = EventTables(quiet_metadata)
    async with engine.begin() as conn:
        await conn.run_sync(quiet_metadata.create_all)
    # No wake hook in these sessions: their commits go unannounced, as another process's would.
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    bus = Recorder()
    # Two outboxes; only the probe's gets rows.
    relay = Relay(sessions, bus, [quiet, events], poll_seconds=0.1)  # type: ignore[arg-type]
    assert await relay._pending() == set()
    async with db.transaction(sessions) as session:
        staged = [
            await events.publish(session, "probe.thing.happened", {"seq": i}, org_id="probe-org")
            for i in range(3)
        ]
    assert await relay._pending() == {id(events)}

    task = asyncio.create_task(relay.run())
    try:
        await wait_until(lambda: len(bus.published) == 3, what="the unannounced rows to be relayed")
        assert [e.id for e in bus.published] == [e.id for e in staged]
        async with sessions() as session:
            assert await session.scalar(select(func.count()).select_from(events.outbox)) == 0
        assert await relay._pending() == set()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        async with engine.begin() as conn:
            await conn.run_sync(quiet_metadata.drop_all)
        await engine.dispose()


@pytest.mark.usefixtures("probe_tables")
async def test_every_commit_that_wrote_events_wakes_the_relay_once(database_url: str) -> None:
    """A session's second transaction wakes the relay as its first did; a rolled-back one does not."""
    engine = db.create_engine(database_url, pool_size=1)
    woken: list[EventTables] = []
    sessions = async_sessionmaker(engine, expire_on_commit=False, info={WAKE_RELAY: woken.append})
    try:
        async with sessions() as session:
            for seq in range(2):
                async with session.begin():
                    await events.publish(session, "probe.thing.happened", {"seq": seq}, org_id="probe-org")
                    await events.publish(session, "probe.thing.happened", {"seq": seq}, org_id="probe-org")
                assert woken == [events] * (seq + 1)
            async with session.begin():
                await events.publish(session, "probe.thing.happened", {"seq": 2}, org_id="probe-org")
                await session.rollback()
            async with session.begin():
                await session.execute(select(1))  # a commit that wrote no event
            assert woken == [events] * 2
            async with session.begin():
                await events.publish(session, "probe.thing.happened", {"seq": 3}, org_id="probe-org")
            assert woken == [events] * 3
            assert await session.scalar(select(func.count()).select_from(events.outbox)) == 5
    finally:
        await engine.dispose()
