"""Events the calendar target publishes."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from coder.shared.contracts import Contract


class EventFields(BaseModel):
    """An event series as its created/updated/deleted notices carry it (times in ISO 8601)."""

    id: str
    calendar_id: str
    uid: str
    owner_id: str
    summary: str
    start: str
    end: str
    time_zone: str
    all_day: bool
    rrule: str | None
    sequence: int


class EventCreated(EventFields, Contract):
    event_type: ClassVar[str] = "calendar.event.created"
    schema_version: ClassVar[int] = 1


class EventUpdated(EventFields, Contract):
    event_type: ClassVar[str] = "calendar.event.updated"
    schema_version: ClassVar[int] = 1


class EventDeleted(EventFields, Contract):
    event_type: ClassVar[str] = "calendar.event.deleted"
    schema_version: ClassVar[int] = 1


class ReminderDue(Contract):
    """A reminder's time has come: `minutes_before` the occurrence starting at `start` (its original
    start is `recurrence_id`). Delivered once per reminder and occurrence."""

    event_type: ClassVar[str] = "calendar.reminder.due"
    schema_version: ClassVar[int] = 1

    event_id: str
    calendar_id: str
    uid: str
    owner_id: str
    summary: str
    recurrence_id: str
    start: str
    end: str
    time_zone: str
    minutes_before: int
    due_at: str
