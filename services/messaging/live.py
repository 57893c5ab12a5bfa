"""Live events: each user's stream of numbered events, stored with the change that caused it and
fanned out to every replica through Redis pub/sub.

A change records its event (`record`) in the request's transaction: one `Broadcast` row and, for each
recipient, the next `seq` of their stream (the `Stream` row stays locked until the commit, so a
user's events commit in `seq` order and no id is skipped). After the commit, one note goes to the
Redis channel `messaging.live`; every process's `Hub` hands it to its local connections. A
connection sends an event only when it is the next of its stream: an older one is a duplicate, a
later one means a note was late or lost, and the gap is read from PostgreSQL first. A reconnecting
client names the last `seq` it saw and gets the rest the same way, so no event is missed or doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete, func, insert
from sqlalchemy import event as sa_event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coder.services.messaging.config import MessagingSettings
from coder.services.messaging.models import Broadcast, Delivery, Stream
from coder.shared.repository import scoped
from coder.shared.runtime import Runtime

log = logging.getLogger(__name__)

CHANNEL = "messaging.live"
PENDING = "messaging.live.pending"  # session.info key: notes to publish once the transaction commits
CATCH_UP_BATCH = 500
# Fire-and-forget publishes, referenced until done (the loop keeps only weak references to tasks).
_sending: set[asyncio.Task[None]] = set()


def envelope(event: str, data: dict[str, Any], channel_id: str | None, seq: int | None) -> dict[str, Any]:
    """Mattermost's WebSocket event shape."""
    return {"event": event, "data": data, "broadcast": {"channel_id": channel_id}, "seq": seq}


async def record(
    session: AsyncSession,
    cache: Redis | None,
    org_id: str,
    recipients: Iterable[str],
    event: str,
    data: dict[str, Any],
    channel_id: uuid.UUID | None,
) -> None:
    """Store `event` in each recipient's stream; it goes live when (and if) the transaction commits."""
    users = sorted(set(recipients))  # one lock order for every writer: no deadlock between them
    if not users:
        return
    broadcast_id = (
        await session.execute(
            insert(Broadcast)
            .values(org_id=org_id, event=event, data=data, channel_id=channel_id)
            .returning(Broadcast.id)
        )
    ).scalar_one()
    bumped = await session.execute(
        pg_insert(Stream)
        .values([{"org_id": org_id, "user_id": user, "last_seq": 1} for user in users])
        .on_conflict_do_update(
            index_elements=[Stream.org_id, Stream.user_id], set_={"last_seq": Stream.last_seq + 1}
        )
        .returning(Stream.user_id, Stream.last_seq)
    )
    seqs = dict(bumped.all())
    await session.execute(
        insert(Delivery).values(
            [
                {"org_id": org_id, "user_id": user, "seq": seq, "broadcast_id": broadcast_id}
                for user, seq in seqs.items()
            ]
        )
    )
    channel = None if channel_id is None else str(channel_id)
    _stage(session, cache, {"org": org_id, "event": envelope(event, data, channel, None), "seqs": seqs})


def _stage(session: AsyncSession, cache: Redis | None, note: dict[str, Any]) -> None:
    if cache is None:
        return  # no Redis in this process: clients still catch up from the database
    pending: list[dict[str, Any]] | None = session.info.get(PENDING)
    if pending is None:
        pending = session.info[PENDING] = []
        sync = session.sync_session

        def committed(_session: Any) -> None:
            notes = sync.info.pop(PENDING, [])
            task = asyncio.get_running_loop().create_task(_publish(cache, notes))
            _sending.add(task)
            task.add_done_callback(_sending.discard)

        def rolled_back(_session: Any, _transaction: Any) -> None:
            sync.info.pop(PENDING, None)

        sa_event.listen(sync, "after_commit", committed, once=True)
        sa_event.listen(sync, "after_soft_rollback", rolled_back, once=True)
    pending.append(note)


async def _publish(cache: Redis, notes: list[dict[str, Any]]) -> None:
    for note in notes:
        try:
            await cache.publish(CHANNEL, json.dumps(note, default=str))
        except RedisError as exc:
            # The events are stored: clients get them at their next event or their next check.
            log.warning("live note not published", extra={"error": repr(exc)})


async def typing(cache: Redis | None, org_id: str, recipients: Iterable[str], data: dict[str, Any]) -> None:
    """An ephemeral event (no `seq`, not stored): who is typing where."""
    if cache is None:
        return
    channel = data.get("channel_id")
    note = {
        "org": org_id,
        "event": envelope("typing", data, channel, None),
        "seqs": dict.fromkeys(recipients),
    }
    await _publish(cache, [note])


async def missed(
    sessions: async_sessionmaker[AsyncSession], org_id: str, user_id: str, after: int, limit: int
) -> list[dict[str, Any]]:
    """A user's stored events after `after`, in order."""
    query = (
        scoped(Delivery, org_id)
        .with_only_columns(Delivery.seq, Broadcast.event, Broadcast.data, Broadcast.channel_id)
        .join(Broadcast, Broadcast.id == Delivery.broadcast_id)
        .where(Delivery.user_id == user_id, Delivery.seq > after)
        .order_by(Delivery.seq)
        .limit(limit)
    )
    async with sessions() as session:
        rows = (await session.execute(query)).all()
    return [
        envelope(event, data, None if channel is None else str(channel), seq)
        for seq, event, data, channel in rows
    ]


async def last_seq(sessions: async_sessionmaker[AsyncSession], org_id: str, user_id: str) -> int:
    query = scoped(Stream, org_id).with_only_columns(Stream.last_seq).where(Stream.user_id == user_id)
    async with sessions() as session:
        return (await session.execute(query)).scalar_one_or_none() or 0


@dataclass(eq=False)
class Subscriber:
    """One WebSocket connection's inbox: notes for its user, in the order they arrived."""

    org_id: str
    user_id: str
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)


class Hub:
    """This process's side of `messaging.live`: one subscription, handing notes to local subscribers."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.subscribers: dict[tuple[str, str], set[Subscriber]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def join(self, subscriber: Subscriber) -> None:
        """Receive notes for the subscriber's user from now on (the subscription is live on return)."""
        if self._task is None or self._task.done():
            self._subscribed = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="messaging.live")
        self.subscribers[(subscriber.org_id, subscriber.user_id)].add(subscriber)
        await asyncio.wait_for(self._subscribed.wait(), timeout=10)

    def leave(self, subscriber: Subscriber) -> None:
        key = (subscriber.org_id, subscriber.user_id)
        self.subscribers[key].discard(subscriber)
        if not self.subscribers[key]:
            del self.subscribers[key]

    def dispatch(self, note: dict[str, Any]) -> None:
        org = note["org"]
        for user, seq in note["seqs"].items():
            for subscriber in self.subscribers.get((org, user), ()):
                subscriber.queue.put_nowait({**note["event"], "seq": seq})

    async def _listen(self) -> None:
        while True:
            assert self.runtime.cache is not None  # messaging needs Redis: the runtime opened it
            pubsub = self.runtime.cache.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                self._subscribed.set()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message["type"] == "message":
                        self.dispatch(json.loads(message["data"]))
            except (RedisError, OSError) as exc:
                # Subscribers keep checking the database meanwhile (`MessagingSettings.check_seconds`).
                log.warning("live subscription lost; retrying", extra={"error": repr(exc)})
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


async def prune(runtime: Runtime) -> None:
    """Forget stored events older than `MessagingSettings.event_retention_days`, hourly (a client
    reconnecting after that long reloads its channels instead of catching up)."""
    settings = runtime.config(MessagingSettings)
    while True:
        try:
            async with runtime.sessions() as session, session.begin():
                await session.execute(
                    delete(Broadcast).where(
                        Broadcast.created_at
                        < func.now() - func.make_interval(0, 0, 0, settings.event_retention_days)
                    )
                )
        except Exception as exc:  # the next round tries again
            log.warning("stored events not pruned", extra={"error": repr(exc)})
        await asyncio.sleep(3600)
