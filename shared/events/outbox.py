"""Transactional outbox and inbox tables, and the consumer side's exactly-once-in-effect handling.

A target that publishes writes the event into `<target>_outbox` in the same transaction as its data;
the relay (relay.py) moves committed rows to the bus. A target that consumes records each handled
event id in `<target>_inbox` in the same transaction as the handler's writes, so a redelivered event
is skipped: at-least-once delivery becomes exactly-once in effect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    event,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, registry

from coder.shared import contracts
from coder.shared.events.envelope import CloudEvent

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from coder.shared.http import ServiceClients


@dataclass(frozen=True)
class EventContext:
    """What an event handler is given: the delivery's transaction (its writes commit with the inbox
    entry), and the cache and service clients of the process that runs it."""

    session: AsyncSession
    cache: Redis | None = None
    clients: ServiceClients | None = None


Handler = Callable[[CloudEvent, EventContext], Awaitable[None]]


@dataclass(frozen=True)
class Batched:
    """A handler given every event of a delivery batch (`Target.consume_batch`) it matches at once,
    in the batch's transaction, after the batch's plain handlers: one statement for many events
    rather than one each. If it raises, each event is handled again in a batch of its own."""

    handle: Callable[[Sequence[CloudEvent], EventContext], Awaitable[None]]


Consumer = Handler | Batched

WAKE_RELAY = "wake_relay"  # session.info key: a callable the runtime puts there to wake its relay
_RELAY_PENDING = "relay_pending"  # session.info key: the outboxes its open transaction wrote to


class _Staged:
    def __init__(self, **values: Any) -> None:
        for name, value in values.items():
            setattr(self, name, value)


def _on_commit_wake(session: Session) -> None:
    for tables in session.info.pop(_RELAY_PENDING, ()):
        session.info[WAKE_RELAY](tables)


def _on_rollback_forget(session: Session) -> None:
    session.info.pop(_RELAY_PENDING, None)


class EventTables:
    """The outbox and inbox of one target, declared on that target's metadata."""

    def __init__(self, metadata: MetaData) -> None:
        self.target: str = metadata.info["target"]
        self.outbox = Table(
            f"{self.target}_outbox",
            metadata,
            Column("seq", BigInteger, Identity(), primary_key=True),
            Column("event_id", String(64), nullable=False, unique=True),
            Column("routing_key", String(200), nullable=False),
            Column("payload", JSONB, nullable=False),
            Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        )
        self.inbox = Table(
            f"{self.target}_inbox",
            metadata,
            Column("event_id", String(64), primary_key=True),
            Column("event_type", String(200), nullable=False),
            Column(
                "handled_at", DateTime(timezone=True), nullable=False, server_default=func.now(), index=True
            ),
        )

        # One statement, its rows in key order (as every claimer's, so two never wait on each other),
        # the ids as two arrays: the same SQL text (one prepared statement) whatever the batch's size.
        delivered = (
            func.unnest(bindparam("ids", type_=ARRAY(String)), bindparam("types", type_=ARRAY(String)))
            .table_valued("event_id", "event_type")
            .render_derived()
        )
        self._claim = (
            insert(self.inbox)
            .from_select(
                ["event_id", "event_type"],
                select(delivered.c.event_id, delivered.c.event_type).order_by(delivered.c.event_id),
            )
            .on_conflict_do_nothing()
            .returning(self.inbox.c.event_id)
        )

        # Staged through the ORM's unit of work: the rows a transaction stages are written together,
        # in one statement, at its next flush (its commit at the latest, or a savepoint's start);
        # rolled back, they vanish with the rest of its work.
        self._row = type(f"{self.target}_outbox_row", (_Staged,), {})
        registry().map_imperatively(self._row, self.outbox)

    async def publish(
        self,
        session: AsyncSession,
        type: str,
        data: dict[str, Any],
        *,
        org_id: str | None = None,
        subject: str | None = None,
    ) -> CloudEvent:
        """Stage an event; it leaves only if (and when) the surrounding transaction commits."""
        if not type.startswith(f"{self.target}."):
            raise ValueError(f"{self.target} may only publish {self.target}.* events, not {type}")
        contract = contracts.contract_of(type)
        if contract is None:
            raise ValueError(f"{type} has no contract: declare it in coder.shared.contracts.{self.target}")
        # Checked, not rewritten: a payload its own contract refuses is a producer bug, and must not
        # reach the consumers who rely on that contract.
        contract.model_validate(data)
        cloud_event = CloudEvent.new(type, data, org_id=org_id, subject=subject)
        session.add(
            self._row(
                event_id=cloud_event.id,
                routing_key=cloud_event.type,
                payload=cloud_event.model_dump(mode="json", exclude_none=True),
            )
        )
        if WAKE_RELAY in session.info:
            # The relay is woken when this transaction commits, whichever it is of the session's.
            if not event.contains(session.sync_session, "after_commit", _on_commit_wake):
                event.listen(session.sync_session, "after_commit", _on_commit_wake)
                event.listen(session.sync_session, "after_rollback", _on_rollback_forget)
            session.info.setdefault(_RELAY_PENDING, set()).add(self)
        return cloud_event

    async def claim(self, session: AsyncSession, events: Sequence[CloudEvent]) -> list[CloudEvent]:
        """Record the events as handled, in one statement; return those that were not already (the
        others are redeliveries: skip them). A copy delivered twice in `events` is returned once."""
        result = await session.execute(
            self._claim, {"ids": [e.id for e in events], "types": [e.type for e in events]}
        )
        new = set(result.scalars())
        claimed = []
        for delivered in events:
            if delivered.id in new:
                new.remove(delivered.id)
                claimed.append(delivered)
        return claimed

    async def forget_handled_before(self, session: AsyncSession, moment: datetime) -> None:
        await session.execute(delete(self.inbox).where(self.inbox.c.handled_at < moment))
