"""Reminders (VALARM triggers before an occurrence's start) delivered as `calendar.reminder.due`.

What is due is computed from stored state alone: each event keeps `next_reminder_at`, its earliest
reminder not yet delivered. `deliver_due` takes the events whose time has come with
`FOR UPDATE SKIP LOCKED`, stages one outbox event per trigger in `[next_reminder_at, now]` and moves
`next_reminder_at` past `now`, in one transaction. So a reminder is delivered once: replicas skip
each other's rows, a committed pass never repeats, and a pass that dies before its commit leaves
the row as it was for the next one (after a restart too, however long the process was down).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coder.services.calendar.models import Base, Calendar, Event
from coder.services.calendar.recurrence import Occurrence, Series

log = logging.getLogger(__name__)

# How far ahead the next reminder is looked for, in growing windows; a series with none in the
# last window has no reminder left (the walk stays cheap for an open-ended daily rule).
_HORIZONS = (timedelta(days=2), timedelta(days=40), timedelta(days=400), timedelta(days=4000))
BATCH = 100  # events per transaction
MAX_PER_EVENT = 200  # triggers staged per event per transaction; the rest follow in the next one
_TICK = timedelta(microseconds=1)

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def triggers(
    series: Series, minutes: Sequence[int], lo: datetime, hi: datetime
) -> list[tuple[datetime, int, Occurrence]]:
    """(trigger time, minutes before, occurrence) for every trigger in [lo, hi), by time."""
    found = []
    for before in set(minutes):
        ahead = timedelta(minutes=before)
        for occurrence in series.starting(lo + ahead, hi + ahead):
            found.append((occurrence.start - ahead, before, occurrence))
    found.sort(key=lambda t: (t[0], t[1], t[2].recurrence_id))
    return found


def next_trigger(series: Series, minutes: Sequence[int], after: datetime) -> datetime | None:
    """The first trigger strictly after `after`, or None when there is none left."""
    if not minutes:
        return None
    # Nothing triggers before the series' first start less the longest reminder.
    first = min([series.start, *series.rdates, *(o.start for o in series.overrides.values())])
    lo = max(after + _TICK, first - timedelta(minutes=max(minutes)))
    for horizon in _HORIZONS:
        try:
            found = triggers(series, minutes, lo, lo + horizon)
        except (ValueError, OverflowError):  # the rule ran past what datetime holds
            return None
        if found:
            return found[0][0].astimezone(UTC)
    return None


async def _deliver(session: AsyncSession, event: Event, owner: str, now: datetime) -> int:
    assert event.next_reminder_at is not None
    series = event.series()
    due = triggers(series, event.reminders, event.next_reminder_at, now + _TICK)
    for at, before, occurrence in due[:MAX_PER_EVENT]:
        fields = occurrence.override.fields if occurrence.override else {}
        await Base.events.publish(
            session,
            "calendar.reminder.due",
            {
                "event_id": str(event.id),
                "calendar_id": str(event.calendar_id),
                "uid": event.uid,
                "owner_id": owner,
                "summary": fields.get("summary", event.summary),
                "recurrence_id": occurrence.recurrence_id.isoformat(),
                "start": occurrence.start.isoformat(),
                "end": occurrence.end.isoformat(),
                "time_zone": event.time_zone,
                "minutes_before": before,
                "due_at": at.astimezone(UTC).isoformat(),
            },
            org_id=event.org_id,
            subject=str(event.id),
        )
    if len(due) > MAX_PER_EVENT:
        event.next_reminder_at = due[MAX_PER_EVENT][0].astimezone(UTC)
    else:
        event.next_reminder_at = next_trigger(series, event.reminders, now)
    return min(len(due), MAX_PER_EVENT)


async def deliver_due(sessions: async_sessionmaker[AsyncSession], now: datetime) -> int:
    """Stage every reminder due at `now` (across all organizations); returns how many."""
    delivered = 0
    while True:
        async with sessions() as session, session.begin():
            # The worker serves every organization: each row's own org goes into its events.
            query = (
                select(Event, Calendar.owner_id)
                .join(Calendar, Calendar.id == Event.calendar_id)
                .where(Event.next_reminder_at <= now)
                .order_by(Event.next_reminder_at)
                .limit(BATCH)
                .with_for_update(of=Event, skip_locked=True)
            )
            rows = (await session.execute(query)).all()
            for event, owner in rows:
                delivered += await _deliver(session, event, owner, now)
        if len(rows) < BATCH:
            return delivered


async def earliest(sessions: async_sessionmaker[AsyncSession]) -> datetime | None:
    async with sessions() as session:
        value: datetime | None = await session.scalar(select(func.min(Event.next_reminder_at)))
        return value


class ReminderWorker:
    """The background task: delivers due reminders, then sleeps until the next one is due (at most
    `poll_seconds`, so reminders of events saved meanwhile are seen). `clock` is injectable."""

    def __init__(self, poll_seconds: float = 5.0, clock: Clock = _utc_now) -> None:
        self.poll_seconds, self.clock = poll_seconds, clock

    async def run(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        while True:
            try:
                await deliver_due(sessions, self.clock())
                upcoming = await earliest(sessions)
            except Exception:
                log.exception("reminder pass failed; retrying")
                upcoming = None
            wait = self.poll_seconds
            if upcoming is not None:
                wait = min(wait, max(0.0, (upcoming - self.clock()).total_seconds()))
            await asyncio.sleep(max(wait, 0.01))
