"""Reminders: computed from stored state, delivered once through the outbox by any number of
workers, and none lost while no worker runs. Time is the `now` given to the worker, not the wall."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coder.services.calendar.reminders import ReminderWorker, deliver_due
from coder.shared import db
from coder.shared.events import CloudEvent
from coder.tests.services.calendar.factories import API, create_calendar, create_event
from coder.tests.support.platform import Platform, listen, wait_until
from coder.tests.support.tokens import TestSigner


@pytest.fixture
async def other_process(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions of a second engine: what another replica (or the process after a restart) holds."""
    engine = db.create_engine(database_url, pool_size=2)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


def delivered(received: list[CloudEvent], event_id: str) -> list[tuple[str, int]]:
    data: list[dict[str, Any]] = [e.data for e in received if e.data["event_id"] == event_id]
    return sorted((d["recurrence_id"], d["minutes_before"]) for d in data)


@pytest.fixture
async def weekly_with_reminders(
    platform: Platform, signer: TestSigner, org: str
) -> AsyncIterator[tuple[dict[str, str], dict[str, Any]]]:
    """A weekly meeting with reminders, deleted afterwards: the workers serve every org, and no
    other test may find it due."""
    h = signer.headers(org, sub="alice")
    calendar = await create_calendar(platform, h, time_zone="Europe/Berlin")
    # Far in the future, so the platform's own worker (on the wall clock) never finds them due.
    event = await create_event(
        platform,
        h,
        calendar["id"],
        summary="Review",
        start="2040-03-19T10:00:00",
        rrule="FREQ=WEEKLY",
        reminders=[10, 60],
    )
    yield h, event
    response = await platform.client.delete(f"{API}/calendars/{calendar['id']}", headers=h)
    assert response.status_code == 204, response.text


async def test_two_workers_deliver_each_reminder_once(
    platform: Platform,
    org: str,
    other_process: async_sessionmaker[AsyncSession],
    weekly_with_reminders: tuple[dict[str, str], dict[str, Any]],
) -> None:
    received = await listen(platform, "calendar.reminder.due")
    _, event = weekly_with_reminders
    # Three weeks on, just after the third meeting's 10-minute reminder (the first after DST: 08:50Z).
    now = datetime(2040, 4, 2, 8, 50, tzinfo=UTC)
    counts = await asyncio.gather(
        deliver_due(platform.runtime.sessions, now),
        deliver_due(other_process, now),
        deliver_due(other_process, now),
    )
    # Each worker took what the others had not (they serve every org: other tests' rows count too).
    assert sum(counts) >= 6
    assert await deliver_due(platform.runtime.sessions, now) == 0
    expected = sorted(
        (f"{day}T{hour}:00:00+00:00", minutes)
        for day, hour in (("2040-03-19", "09"), ("2040-03-26", "08"), ("2040-04-02", "08"))
        for minutes in (10, 60)
    )
    await wait_until(lambda: len(delivered(received, event["id"])) >= 6, what="six reminders")
    # A later reminder, staged after them, arrives after them: no duplicate was on its way.
    assert await deliver_due(other_process, now + timedelta(weeks=1)) >= 2
    await wait_until(lambda: len(delivered(received, event["id"])) >= 8, what="the next week's reminders")
    assert delivered(received, event["id"])[:6] == expected
    assert len(delivered(received, event["id"])) == 8
    first = next(e for e in received if e.data["minutes_before"] == 60)
    assert first.orgid == org
    assert first.data["start"] == "2040-03-19T10:00:00+01:00"
    assert first.data["due_at"] == "2040-03-19T08:00:00+00:00"


async def test_reminders_due_while_no_worker_ran_are_delivered_after_a_restart(
    platform: Platform,
    other_process: async_sessionmaker[AsyncSession],
    weekly_with_reminders: tuple[dict[str, str], dict[str, Any]],
) -> None:
    received = await listen(platform, "calendar.reminder.due")
    _, event = weekly_with_reminders
    clock = [datetime(2040, 3, 19, 9, 0, tzinfo=UTC)]  # the 60-minute reminder of the first meeting

    first = asyncio.create_task(
        ReminderWorker(poll_seconds=0.05, clock=lambda: clock[0]).run(platform.runtime.sessions)
    )
    await wait_until(lambda: delivered(received, event["id"]), what="the first reminder")
    first.cancel()  # the process stops...
    await asyncio.gather(first, return_exceptions=True)
    clock[0] = datetime(2040, 3, 26, 7, 30, tzinfo=UTC)  # ...for a week, and starts again
    second = asyncio.create_task(ReminderWorker(poll_seconds=0.05, clock=lambda: clock[0]).run(other_process))
    try:
        await wait_until(lambda: len(delivered(received, event["id"])) >= 3, what="the missed reminders")
    finally:
        second.cancel()
        await asyncio.gather(second, return_exceptions=True)
    assert delivered(received, event["id"]) == [
        ("2040-03-19T09:00:00+00:00", 10),
        ("2040-03-19T09:00:00+00:00", 60),
        ("2040-03-26T08:00:00+00:00", 60),
    ]


async def test_the_platforms_worker_delivers_on_the_wall_clock(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org, sub="carol")
    received = await listen(platform, "calendar.reminder.due")
    calendar = await create_calendar(platform, h)
    start = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    event = await create_event(platform, h, calendar["id"], start=start.isoformat(), reminders=[0])
    found = await wait_until(lambda: delivered(received, event["id"]), what="the reminder at the start")
    assert found == [(start.isoformat(), 0)]
