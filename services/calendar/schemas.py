from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from coder.shared.schemas import Input

TimeZone = Annotated[
    str, Field(min_length=1, max_length=64, description="IANA time zone, e.g. `Europe/Berlin`")
]


def _date_only(value: object) -> object:
    # JSON has no date type: "2026-03-02" is a date (all-day), never midnight as a date-time.
    if isinstance(value, str) and len(value) == 10:
        try:
            return date.fromisoformat(value)
        except ValueError:
            return value
    return value


Moment = Annotated[
    datetime | date,
    BeforeValidator(_date_only),
    Field(
        description="A date (all-day), a local date-time (read in the event's `time_zone`, "
        "like iCalendar's TZID) or a date-time with an offset"
    ),
]
Rule = Annotated[
    str,
    Field(
        min_length=1,
        max_length=500,
        description="An RFC 5545 RRULE value, e.g. `FREQ=WEEKLY;BYDAY=MO;COUNT=10`",
    ),
]
Minutes = Annotated[int, Field(ge=0, le=40320, description="Minutes before the start (at most 4 weeks)")]
Summary = Annotated[str, Field(min_length=1, max_length=500)]
Description = Annotated[str, Field(max_length=8000)]
Location = Annotated[str, Field(max_length=500)]
Uid = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\s]+$")]
MAX_DATES = 1000
MAX_REMINDERS = 10


# --- calendars ---


class CalendarCreate(Input):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    time_zone: TimeZone = "UTC"
    team_id: str | None = Field(default=None, min_length=1, max_length=128, description="A team sharing it")


class CalendarUpdate(Input):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    time_zone: TimeZone | None = None
    team_id: str | None = Field(default=None, min_length=1, max_length=128, description="null: no team")


class CalendarRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str
    time_zone: str
    owner_id: str
    team_id: str | None
    created_at: datetime
    updated_at: datetime


# --- events ---


class EventCreate(Input):
    uid: Uid | None = Field(default=None, description="iCalendar UID; generated when absent")
    summary: Summary
    description: Description = ""
    location: Location = ""
    start: Moment
    end: Moment | None = Field(default=None, description="Exclusive; default one hour (one day all-day)")
    time_zone: TimeZone | None = Field(default=None, description="Default: the calendar's")
    rrule: Rule | None = None
    exdates: list[Moment] = Field(default_factory=list, max_length=MAX_DATES, description="EXDATE")
    rdates: list[Moment] = Field(default_factory=list, max_length=MAX_DATES, description="RDATE")
    reminders: list[Minutes] = Field(default_factory=list, max_length=MAX_REMINDERS)
    transparent: bool = Field(default=False, description="TRANSP:TRANSPARENT, not busy in free/busy")


class EventUpdate(Input):
    """Fields given replace the series' (a null `rrule` ends the recurrence)."""

    summary: Summary | None = None
    description: Description | None = None
    location: Location | None = None
    start: Moment | None = None
    end: Moment | None = None
    time_zone: TimeZone | None = None
    rrule: Rule | None = None
    exdates: list[Moment] | None = Field(default=None, max_length=MAX_DATES)
    rdates: list[Moment] | None = Field(default=None, max_length=MAX_DATES)
    reminders: list[Minutes] | None = Field(default=None, max_length=MAX_REMINDERS)
    transparent: bool | None = None


class OccurrenceUpdate(Input):
    """One occurrence changed (RECURRENCE-ID); fields left out keep the series' values."""

    summary: Summary | None = None
    description: Description | None = None
    location: Location | None = None
    start: datetime | None = Field(default=None, description="Local to the event's zone unless offset")
    end: datetime | None = None


class OverrideRead(BaseModel):
    recurrence_id: datetime
    start: datetime
    end: datetime
    summary: str | None = None
    description: str | None = None
    location: str | None = None


class EventRead(BaseModel):
    id: uuid.UUID
    calendar_id: uuid.UUID
    uid: str
    summary: str
    description: str
    location: str
    start: datetime | date = Field(description="In the event's zone; a date when all-day")
    end: datetime | date
    time_zone: str
    all_day: bool
    rrule: str | None
    exdates: list[datetime]
    rdates: list[datetime]
    reminders: list[int]
    transparent: bool
    sequence: int
    overrides: list[OverrideRead]
    created_at: datetime
    updated_at: datetime


class OccurrenceRead(BaseModel):
    event_id: uuid.UUID
    calendar_id: uuid.UUID
    uid: str
    recurrence_id: datetime = Field(description="The occurrence's original start (UTC)")
    start: datetime | date = Field(description="In the requested time zone; a date when all-day")
    end: datetime | date
    all_day: bool
    summary: str
    description: str
    location: str
    transparent: bool
    overridden: bool


class OccurrenceList(BaseModel):
    items: list[OccurrenceRead]
    time_zone: str
    truncated: bool = Field(description="More occurrences than `limit` fall in the range")


# --- free/busy ---


class FreeBusyQuery(Input):
    users: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(min_length=1, max_length=50)
    start: datetime
    end: datetime
    time_zone: TimeZone = "UTC"


class Period(BaseModel):
    start: datetime
    end: datetime


class UserBusy(BaseModel):
    user_id: str
    busy: list[Period]


class FreeBusyRead(BaseModel):
    start: datetime
    end: datetime
    users: list[UserBusy]


# --- iCalendar ---


class IcsImport(Input):
    ics: str = Field(min_length=1, max_length=2_000_000, description="A VCALENDAR with VEVENTs")


class IcsImportRead(BaseModel):
    created: int
    updated: int
    events: list[uuid.UUID]
