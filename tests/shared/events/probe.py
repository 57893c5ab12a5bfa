"""The probe target the outbox tests share: one event type, one effect table, its handler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

import pytest
from fastapi import APIRouter
from sqlalchemy import Column, Integer, String, Table

from coder.shared import db
from coder.shared.contracts import Contract
from coder.shared.events import CloudEvent, EventContext, EventTables
from coder.shared.target import Dependency, Descriptor, Target


class ProbeThingHappened(Contract):
    event_type: ClassVar[str] = "probe.thing.happened"
    schema_version: ClassVar[int] = 1

    seq: int


metadata = db.target_metadata("probe")
events = EventTables(metadata)
effects = Table(
    "probe_effect",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("seq", Integer, nullable=False),
)
applied: list[str] = []


async def on_happened(event: CloudEvent, context: EventContext) -> None:
    session = context.session
    applied.append(event.id)
    await session.execute(effects.insert().values(event_id=event.id, seq=event.data["seq"]))


probe = Target(
    descriptor=Descriptor(
        name="probe",
        port=39999,
        title="Outbox probe",
        package="coder.tests.shared.events",
        needs=frozenset({Dependency.POSTGRES, Dependency.RABBITMQ}),
        emits=("probe.thing.happened",),
        consumes=("probe.thing.happened",),
    ),
    router=APIRouter(),
    metadata=metadata,
    events=events,
    consumes={"probe.thing.happened": on_happened},
)


@pytest.fixture
async def probe_tables(database_url: str) -> AsyncIterator[None]:
    engine = db.create_engine(database_url, pool_size=1)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)  # test-only target: no migrations
    yield
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
    await engine.dispose()
