"""A consumer that opts into batches (`Target.consume_batch`): deliveries share a transaction, a
failing handler fails only its own delivery, and a copy delivered twice in one batch counts once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from coder.shared import db
from coder.shared.events import Batched, CloudEvent, EventContext
from coder.shared.events.relay import deliverer
from coder.tests.shared.events.probe import effects, events, probe_tables  # noqa: F401  (a fixture)

TYPE = "probe.thing.happened"


async def _six_and_a_copy(deliver: Callable[[CloudEvent], Awaitable[None]]) -> list[CloudEvent]:
    """Events 0-5 and a copy of 0 delivered at once, one batch: only 3's delivery fails."""
    sent = [CloudEvent(source="/coder/probe", type=TYPE, data={"seq": seq}) for seq in range(6)]
    outcomes = await asyncio.gather(*(deliver(e) for e in [*sent, sent[0]]), return_exceptions=True)
    assert [type(o).__name__ for o in outcomes] == [
        *(["NoneType"] * 3),
        "RuntimeError",
        *(["NoneType"] * 3),
    ]
    return sent


@pytest.mark.usefixtures("probe_tables")
async def test_a_batch_commits_together_and_a_failing_handler_fails_alone(database_url: str) -> None:
    calls: list[int] = []

    async def handler(event: CloudEvent, context: EventContext) -> None:
        calls.append(event.data["seq"])
        await context.session.execute(effects.insert().values(event_id=event.id, seq=event.data["seq"]))
        if event.data["seq"] == 3:
            raise RuntimeError("this one fails")

    engine = db.create_engine(database_url, pool_size=2)
    try:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        deliver = deliverer(sessions, events, {TYPE: handler}, batch=8)
        sent = await _six_and_a_copy(deliver)
        async with sessions() as session:
            applied = sorted((await session.execute(select(effects.c.seq))).scalars())
            claimed = set((await session.execute(select(events.inbox.c.event_id))).scalars())
        assert applied == [0, 1, 2, 4, 5]  # 3 rolled back alone; 0 once, though delivered twice
        assert claimed == {e.id for e in sent} - {sent[3].id}  # the failed one is retried by the broker
        # The batch ran its handlers once, rolled back on 3's failure, then each delivery alone.
        assert calls == [0, 1, 2, 3, 0, 1, 2, 3, 4, 5]

        await deliver(sent[1])  # a redelivery of a handled event: skipped
        assert calls[-1] == 5

        calls.clear()  # a batch without failures, holding a copy twice: one transaction, one call each
        more = [CloudEvent(source="/coder/probe", type=TYPE, data={"seq": seq}) for seq in (10, 11)]
        await asyncio.gather(*(deliver(e) for e in [more[0], more[1], more[0]]))
        assert calls == [10, 11]
    finally:
        await engine.dispose()


@pytest.mark.usefixtures("probe_tables")
async def test_a_batched_handler_takes_the_batch_at_once_and_a_failure_splits_it(database_url: str) -> None:
    calls: list[list[int]] = []

    async def handler(batch: Sequence[CloudEvent], context: EventContext) -> None:
        calls.append([e.data["seq"] for e in batch])
        rows = [{"event_id": e.id, "seq": e.data["seq"]} for e in batch]
        await context.session.execute(effects.insert(), rows)
        if any(e.data["seq"] == 3 for e in batch):
            raise RuntimeError("this one fails")

    engine = db.create_engine(database_url, pool_size=2)
    try:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        deliver = deliverer(sessions, events, {TYPE: Batched(handler)}, batch=8)
        await _six_and_a_copy(deliver)
        async with sessions() as session:
            applied = sorted((await session.execute(select(effects.c.seq))).scalars())
        assert applied == [0, 1, 2, 4, 5]
        # One call for the batch (the copy of 0 claimed once), rolled back on 3's failure, then one
        # call per delivery alone.
        assert calls == [[0, 1, 2, 3, 4, 5], [0], [1], [2], [3], [4], [5]]
    finally:
        await engine.dispose()
