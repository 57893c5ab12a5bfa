"""The outbox relay: moves committed outbox rows to the bus, then deletes them.

Rows are claimed with `FOR UPDATE SKIP LOCKED`, so replicas share the work without double sends;
a row's delete commits only after the bus confirmed it. If the broker is down the transaction rolls back
and the rows wait for the next round: an outage delays events, it never loses them. A crash between
confirm and delete re-sends a few events, which consumers drop through their inbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from opentelemetry.instrumentation.utils import suppress_instrumentation
from sqlalchemy import Text, cast, delete, exists, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.dml import ReturningDelete

from coder.shared.db import transaction
from coder.shared.events.bus import Bus, Deliver, topic_matches
from coder.shared.events.envelope import CloudEvent
from coder.shared.events.outbox import Batched, Consumer, EventContext, EventTables

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from coder.shared.http import ServiceClients

log = logging.getLogger(__name__)

INBOX_RETENTION = timedelta(days=7)


class Relay:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bus: Bus,
        tables: Sequence[EventTables],
        *,
        poll_seconds: float = 1.0,
        batch: int = 500,
    ) -> None:
        self.sessions = sessions
        self.bus = bus
        self.tables = list(tables)
        self.poll_seconds = poll_seconds
        self.batch = batch
        self._wake = asyncio.Event()
        self._last_cleanup = 0.0
        # Outboxes that had rows committed since the last round: a wake drains only those (a busy
        # process wakes the relay on every commit, and polling every outbox each time costs a
        # transaction per outbox); the timed round drains all of them.
        self._dirty: set[int] = set()
        self._all = True
        self._swept = 0.0
        # The positions in `tables` of the outboxes that hold rows.
        self._holding_rows = union_all(
            *(select(literal(i)).where(exists().select_from(t.outbox)) for i, t in enumerate(self.tables))
        )
        self._take = {id(t): _take(t, batch) for t in self.tables}

    def wake(self, tables: EventTables | None = None) -> None:
        if tables is None:
            self._all = True
        else:
            self._dirty.add(id(tables))
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            # Every outbox at least once per interval, however busy (rows of a replica that died).
            every = self._all or time.monotonic() - self._swept >= self.poll_seconds
            dirty = self._dirty
            self._all, self._dirty = False, set()
            if every:
                self._swept = time.monotonic()
            try:
                if every:
                    dirty |= await self._pending()
                for tables in self.tables:
                    if id(tables) not in dirty:
                        continue
                    while await self.drain_once(tables) == self.batch:
                        pass
                await self._forget_old_inbox_entries()
            except Exception as exc:
                log.warning(
                    "outbox relay round failed; rows stay for the next round", extra={"error": repr(exc)}
                )
                # Back off a full interval: new commits keep waking the relay, and retrying on each
                # of them while the broker is down would only spin.
                await asyncio.sleep(self.poll_seconds)
                self._all = True
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
            except TimeoutError:
                self._all = True

    async def _pending(self) -> set[int]:
        """The outboxes holding rows, in one statement: the timed round drains only those (a
        transaction per outbox each second, for 18 targets, cost a process more than all its other
        background work; bench/bench_embeddings.py)."""
        async with self.sessions() as session:
            with suppress_instrumentation():
                found = (await session.execute(self._holding_rows)).scalars().all()
        return {id(self.tables[i]) for i in found}

    async def drain_once(self, tables: EventTables) -> int:
        async with transaction(self.sessions) as session:
            # The polls would make a trace a second of their own: the relay's statements stay out of
            # traces, and each event's publish continues the trace that created it (bus.publish).
            with suppress_instrumentation():
                taken = (await session.execute(self._take[id(tables)])).all()
            if not taken:
                return 0
            rows = sorted(taken, key=lambda row: row.seq)  # DELETE ... RETURNING keeps no order
            # Rolled back (the bus refused, or the process stops) the rows are still there.
            await self.bus.publish([CloudEvent.model_validate_json(row.payload) for row in rows])
        return len(rows)

    async def _forget_old_inbox_entries(self) -> None:
        if time.monotonic() - self._last_cleanup < 3600:
            return
        self._last_cleanup = time.monotonic()
        async with transaction(self.sessions) as session:
            for tables in self.tables:
                await tables.forget_handled_before(session, datetime.now(UTC) - INBOX_RETENTION)


def _take(tables: EventTables, batch: int) -> ReturningDelete[int, str]:
    """The oldest `batch` rows no other relay holds, deleted in the statement that reads them (one
    round trip, not a select and then a delete): the delete commits only after the bus has the
    events. The payload comes as JSON text, parsed straight into the envelope."""
    outbox = tables.outbox
    oldest = select(outbox.c.seq).order_by(outbox.c.seq).limit(batch).with_for_update(skip_locked=True)
    return (
        delete(outbox)
        .where(outbox.c.seq.in_(oldest))
        .returning(outbox.c.seq, cast(outbox.c.payload, Text).label("payload"))
    )


def deliverer(
    sessions: async_sessionmaker[AsyncSession],
    tables: EventTables,
    handlers: dict[str, Consumer],
    *,
    cache: Redis | None = None,
    clients: ServiceClients | None = None,
    batch: int = 1,
) -> Deliver:
    """A transaction claims its deliveries' ids in the inbox and runs their matching handlers.

    With `batch` 1, each delivery has its own transaction, and deliveries run concurrently. With more
    (a target's `consume_batch`, for cheap handlers), the deliveries that arrive while a transaction
    runs wait for it and are then handled together in the next one, up to `batch`: one commit for
    many. If a handler raises, its batch rolls back and each of its deliveries is handled again in
    its own transaction, so only the failing one is retried.
    """

    async def handle(events: Sequence[CloudEvent]) -> None:
        async with transaction(sessions) as session:
            context = EventContext(session=session, cache=cache, clients=clients)
            claimed = await tables.claim(session, events)
            batched: dict[Batched, list[CloudEvent]] = {}
            for event in claimed:
                for binding, handler in handlers.items():
                    if not topic_matches(binding, event.type):
                        continue
                    if isinstance(handler, Batched):
                        batched.setdefault(handler, []).append(event)
                    else:
                        await handler(event, context)
            for handler, matched in batched.items():
                await handler.handle(matched, context)

    if batch == 1:
        return lambda event: handle([event])

    waiting: list[tuple[CloudEvent, asyncio.Future[None]]] = []
    worker: asyncio.Task[None] | None = None  # runs one batch after another while there are any

    async def run(taken: Sequence[tuple[CloudEvent, asyncio.Future[None]]]) -> None:
        try:
            await handle([event for event, _ in taken])
        except Exception as exc:
            if len(taken) == 1:
                _settle(taken[0][1], exc)
            else:  # one transaction each: only the failing delivery fails
                for one in taken:
                    await run([one])
        else:
            for _, done in taken:
                _settle(done, None)

    async def work() -> None:
        while waiting:
            # A delivery whose caller is gone (the bus closing) is left to the broker's redelivery.
            taken = [(event, done) for event, done in waiting[:batch] if not done.done()]
            del waiting[:batch]
            try:
                if taken:
                    await run(taken)
            finally:  # cancelled part way: the callers fail, and the broker redelivers
                for _, done in taken:
                    _settle(done, ConnectionAbortedError("the inbox transaction was abandoned"))

    async def deliver(event: CloudEvent) -> None:
        nonlocal worker
        done = asyncio.get_running_loop().create_future()
        waiting.append((event, done))
        if worker is None or worker.done():
            worker = asyncio.create_task(work(), name=f"inbox:{tables.target}")
        await done

    return deliver


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
