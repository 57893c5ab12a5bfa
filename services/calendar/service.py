"""Calendars and events: validation, storage, expansion and free/busy. Functions only flush.

An event is stored as its series (first occurrence, zone, RRULE/RDATE/EXDATE) and its overrides;
what ranges and reminders need (`span_start`, `span_end`, `next_reminder_at`) is derived from them
on every write, so reads never walk a series they cannot overlap.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import or_
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.calendar import recurrence, reminders
from coder.services.calendar.models import Base, Calendar, Event, Override
from coder.services.calendar.recurrence import Occurrence, Series
from coder.services.calendar.schemas import (
    CalendarCreate,
    CalendarUpdate,
    EventCreate,
    EventRead,
    EventUpdate,
    OccurrenceRead,
    OccurrenceUpdate,
    OverrideRead,
    Period,
    UserBusy,
)
from coder.shared.auth import Principal
from coder.shared.errors import Forbidden, InvalidField
from coder.shared.repository import OrgScoped, scoped

# Events live between these years: far enough for any calendar, near enough that every rule
# expansion and reminder search stays inside what datetime can hold.
EARLIEST, LATEST = datetime(1900, 1, 1, tzinfo=UTC), datetime(2300, 1, 1, tzinfo=UTC)
MAX_RANGE = timedelta(days=400)
OVERRIDE_FIELDS = ("summary", "description", "location")


def now() -> datetime:
    return datetime.now(UTC)


def zone(name: str, field: str) -> ZoneInfo:
    try:
        return recurrence.zone(name)
    except ValueError as exc:
        raise InvalidField(field, str(exc)) from None


def in_bounds(value: datetime, field: str) -> datetime:
    if not EARLIEST <= value < LATEST:
        raise InvalidField(field, f"must be between {EARLIEST.year} and {LATEST.year}")
    return value


def time_range(start: datetime, end: datetime, prefix: str = "query.") -> tuple[datetime, datetime]:
    """A requested [start, end): ordered, within bounds and at most 400 days long."""
    in_bounds(start, f"{prefix}start")
    in_bounds(end, f"{prefix}end")
    if end <= start:
        raise InvalidField(f"{prefix}end", "must be after start")
    if end - start > MAX_RANGE:
        raise InvalidField(f"{prefix}end", f"at most {MAX_RANGE.days} days after start")
    return start, end


# --- calendars ---


def calendars(session: AsyncSession, org_id: str) -> OrgScoped[Calendar]:
    return OrgScoped(Calendar, session, org_id, "calendar")


def writable(calendar: Calendar, principal: Principal) -> Calendar:
    """Only its owner (or a holder of `calendar:admin`) changes a calendar and its events."""
    if calendar.owner_id != principal.subject and not principal.can("calendar:admin"):
        raise Forbidden(f"calendar {calendar.id} belongs to another user; it needs calendar:admin")
    return calendar


async def get_calendar(session: AsyncSession, org_id: str, calendar_id: uuid.UUID) -> Calendar:
    return await calendars(session, org_id).get(calendar_id, Calendar.id == calendar_id)


async def create_calendar(session: AsyncSession, principal: Principal, body: CalendarCreate) -> Calendar:
    zone(body.time_zone, "time_zone")
    calendar = Calendar(
        org_id=principal.org_id,
        owner_id=principal.subject,
        team_id=body.team_id,
        name=body.name,
        description=body.description,
        time_zone=body.time_zone,
    )
    session.add(calendar)
    await session.flush()
    await session.refresh(calendar)
    return calendar


async def update_calendar(
    session: AsyncSession, principal: Principal, calendar_id: uuid.UUID, body: CalendarUpdate
) -> Calendar:
    calendar = writable(await get_calendar(session, principal.org_id, calendar_id), principal)
    given = body.model_fields_set
    for name in ("name", "description", "time_zone"):
        value = getattr(body, name)
        if name in given and value is None:
            raise InvalidField(name, "cannot be null")
        if value is not None:
            if name == "time_zone":
                zone(value, "time_zone")
            setattr(calendar, name, value)
    if "team_id" in given:
        calendar.team_id = body.team_id
    await session.flush()
    await session.refresh(calendar)
    return calendar


async def delete_calendar(session: AsyncSession, principal: Principal, calendar_id: uuid.UUID) -> None:
    calendar = writable(await get_calendar(session, principal.org_id, calendar_id), principal)
    for event in (
        await session.scalars(scoped(Event, principal.org_id).where(Event.calendar_id == calendar.id))
    ).all():
        await Base.events.publish(session, "calendar.event.deleted", changed(event, calendar), **about(event))
    await session.delete(calendar)
    await session.flush()


# --- events: input ---


def _moment(value: datetime | date, tz: ZoneInfo, field: str) -> datetime:
    return in_bounds(recurrence.to_instant(value, tz), field)


def times(
    start: datetime | date, end: datetime | date | None, tz: ZoneInfo, prefix: str = ""
) -> tuple[datetime, datetime, bool]:
    """(start, end, all_day) from an event's input: dates make an all-day event."""
    all_day = not isinstance(start, datetime)
    if end is not None and isinstance(end, datetime) == all_day:
        raise InvalidField(f"{prefix}end", "a date when start is a date, a date-time when it is one")
    start_at = _moment(start, tz, f"{prefix}start")
    if end is None:
        end_at = (
            recurrence.local_midnight(start, tz) + timedelta(days=1)
            if not isinstance(start, datetime)
            else start_at + timedelta(hours=1)
        )
        end_at = end_at.astimezone(UTC)
    else:
        end_at = _moment(end, tz, f"{prefix}end")
    if end_at < start_at or (all_day and end_at == start_at):
        raise InvalidField(f"{prefix}end", "must not be before start")
    return start_at, end_at, all_day


def _iso(values: Iterable[datetime]) -> list[str]:
    return sorted(v.astimezone(UTC).isoformat() for v in values)


def _dates(values: Sequence[datetime | date], tz: ZoneInfo, field: str) -> list[str]:
    return _iso(_moment(v, tz, f"{field}.{i}") for i, v in enumerate(values))


def derive(event: Event, at: datetime) -> Series:
    """Check the series' rule and refresh what is derived from it; InvalidField naming `rrule`."""
    series = event.series()
    try:
        series.rule  # noqa: B018 (parsing is the check)
    except ValueError as exc:
        raise InvalidField("rrule", str(exc)) from None
    try:
        event.span_start, event.span_end = series.span()
    except (ValueError, OverflowError):
        event.span_start, event.span_end = series.start, None
    event.next_reminder_at = reminders.next_trigger(series, event.reminders, at)
    return series


# --- events: reads ---


def event_read(event: Event) -> EventRead:
    tz = recurrence.zone(event.time_zone)
    start: datetime | date = event.start_at.astimezone(tz)
    end: datetime | date = event.end_at.astimezone(tz)
    if event.all_day:
        start, end = event.start_at.astimezone(tz).date(), event.end_at.astimezone(tz).date()
    return EventRead(
        id=event.id,
        calendar_id=event.calendar_id,
        uid=event.uid,
        summary=event.summary,
        description=event.description,
        location=event.location,
        start=start,
        end=end,
        time_zone=event.time_zone,
        all_day=event.all_day,
        rrule=event.rrule,
        exdates=[datetime.fromisoformat(v) for v in event.exdates],
        rdates=[datetime.fromisoformat(v) for v in event.rdates],
        reminders=event.reminders,
        transparent=event.transparent,
        sequence=event.sequence,
        overrides=[
            OverrideRead(
                recurrence_id=o.recurrence_id.astimezone(UTC),
                start=o.start_at.astimezone(tz),
                end=o.end_at.astimezone(tz),
                **{k: v for k, v in o.fields.items() if k in OVERRIDE_FIELDS},
            )
            for o in event.overrides
        ],
        created_at=event.created_at,
        updated_at=event.updated_at,
    )


def events_of(session: AsyncSession, org_id: str) -> OrgScoped[Event]:
    return OrgScoped(Event, session, org_id, "event")


async def get_event(session: AsyncSession, org_id: str, event_id: uuid.UUID, *, lock: bool = False) -> Event:
    return await events_of(session, org_id).get(event_id, Event.id == event_id, lock=lock)


async def _writable_event(
    session: AsyncSession, principal: Principal, event_id: uuid.UUID
) -> tuple[Event, Calendar]:
    event = await get_event(session, principal.org_id, event_id, lock=True)
    calendar = writable(await get_calendar(session, principal.org_id, event.calendar_id), principal)
    return event, calendar


# --- events: writes ---


def changed(event: Event, calendar: Calendar) -> dict[str, Any]:
    """The `data` of a `calendar.event.*` event about this series."""
    read = event_read(event)
    return {
        "id": str(event.id),
        "calendar_id": str(event.calendar_id),
        "uid": event.uid,
        "owner_id": calendar.owner_id,
        "summary": event.summary,
        "start": read.start.isoformat(),
        "end": read.end.isoformat(),
        "time_zone": event.time_zone,
        "all_day": event.all_day,
        "rrule": event.rrule,
        "sequence": event.sequence,
    }


def about(event: Event) -> dict[str, Any]:
    return {"org_id": event.org_id, "subject": str(event.id)}


async def create_event(
    session: AsyncSession, principal: Principal, calendar_id: uuid.UUID, body: EventCreate
) -> Event:
    calendar = writable(await get_calendar(session, principal.org_id, calendar_id), principal)
    event = await _new_event(session, calendar, body)
    await session.flush()
    await session.refresh(event)
    await Base.events.publish(session, "calendar.event.created", changed(event, calendar), **about(event))
    return event


async def upsert_event(session: AsyncSession, calendar: Calendar, body: EventCreate) -> tuple[Event, bool]:
    """The calendar's event of `body.uid` replaced by `body` (its overrides dropped), or a new one."""
    existing = None
    if body.uid is not None:
        existing = await events_of(session, calendar.org_id).find(
            Event.calendar_id == calendar.id, Event.uid == body.uid, lock=True
        )
    if existing is None:
        return await _new_event(session, calendar, body), True
    name = body.time_zone or calendar.time_zone
    tz = zone(name, "time_zone")
    existing.start_at, existing.end_at, existing.all_day = times(body.start, body.end, tz)
    existing.time_zone = name
    for field in ("summary", "description", "location", "rrule", "transparent"):
        setattr(existing, field, getattr(body, field))
    existing.exdates = _dates(body.exdates, tz, "exdates")
    existing.rdates = _dates(body.rdates, tz, "rdates")
    existing.reminders = sorted(set(body.reminders))
    existing.overrides = []
    await session.flush()  # the old overrides go before new ones may take their recurrence ids
    existing.sequence += 1
    derive(existing, now())
    return existing, False


async def _new_event(session: AsyncSession, calendar: Calendar, body: EventCreate) -> Event:
    name = body.time_zone or calendar.time_zone
    tz = zone(name, "time_zone")
    start_at, end_at, all_day = times(body.start, body.end, tz)
    uid = body.uid or f"{uuid.uuid4()}@coder"
    existing = await events_of(session, calendar.org_id).find(
        Event.calendar_id == calendar.id, Event.uid == uid
    )
    if existing is not None:
        raise InvalidField("uid", f"calendar {calendar.id} already has an event with this UID", status=409)
    event = Event(
        org_id=calendar.org_id,
        calendar_id=calendar.id,
        uid=uid,
        summary=body.summary,
        description=body.description,
        location=body.location,
        start_at=start_at,
        end_at=end_at,
        time_zone=name,
        all_day=all_day,
        rrule=body.rrule,
        exdates=_dates(body.exdates, tz, "exdates"),
        rdates=_dates(body.rdates, tz, "rdates"),
        reminders=sorted(set(body.reminders)),
        transparent=body.transparent,
        sequence=0,
        overrides=[],
    )
    derive(event, now())
    session.add(event)
    return event


async def update_event(
    session: AsyncSession, principal: Principal, event_id: uuid.UUID, body: EventUpdate
) -> Event:
    event, calendar = await _writable_event(session, principal, event_id)
    given = body.model_fields_set
    for name in (
        "summary",
        "description",
        "location",
        "start",
        "time_zone",
        "exdates",
        "rdates",
        "reminders",
        "transparent",
    ):
        if name in given and getattr(body, name) is None:
            raise InvalidField(name, "cannot be null")
    for name in ("summary", "description", "location", "transparent"):
        if name in given:
            setattr(event, name, getattr(body, name))
    if "reminders" in given and body.reminders is not None:
        event.reminders = sorted(set(body.reminders))
    if "rrule" in given:
        event.rrule = body.rrule
    name = body.time_zone or event.time_zone
    tz = zone(name, "time_zone")
    if given & {"start", "end", "time_zone"}:
        old = event_read(event)
        start = body.start if body.start is not None else old.start
        if isinstance(start, datetime) and start.tzinfo is not None and body.start is None:
            start = start.replace(tzinfo=None)  # the old wall time, read in the (new) zone
        end = body.end if "end" in given else old.end
        if isinstance(end, datetime) and end.tzinfo is not None and body.end is None:
            end = end.replace(tzinfo=None)
        if body.start is not None and "end" not in given:
            end = None  # a moved start keeps the event's length
        length = event.end_at - event.start_at
        was_all_day = event.all_day
        event.start_at, event.end_at, event.all_day = times(start, end, tz)
        if end is None and event.all_day == was_all_day:
            days = timedelta(days=max(1, length.days))
            event.end_at = (
                (event.start_at.astimezone(tz) + days).astimezone(UTC)
                if event.all_day
                else event.start_at + length
            )
        event.time_zone = name
    if body.exdates is not None:
        event.exdates = _dates(body.exdates, tz, "exdates")
    if body.rdates is not None:
        event.rdates = _dates(body.rdates, tz, "rdates")
    event.sequence += 1
    derive(event, now())
    await session.flush()
    await session.refresh(event)
    await Base.events.publish(session, "calendar.event.updated", changed(event, calendar), **about(event))
    return event


async def delete_event(session: AsyncSession, principal: Principal, event_id: uuid.UUID) -> None:
    event, calendar = await _writable_event(session, principal, event_id)
    await Base.events.publish(session, "calendar.event.deleted", changed(event, calendar), **about(event))
    await session.delete(event)
    await session.flush()


def recurrence_id(event: Event, value: str) -> datetime:
    """An occurrence named in a path: its original start, as a date (all-day) or a date-time
    (local to the event's zone unless it has an offset). NotFound-alike InvalidField otherwise."""
    tz = recurrence.zone(event.time_zone)
    try:
        parsed: datetime | date = datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)
    except ValueError:
        raise InvalidField("path.recurrence_id", "an ISO 8601 date or date-time") from None
    rid = recurrence.to_instant(parsed, tz)
    if not EARLIEST <= rid < LATEST or not event.series().is_instance(rid):
        raise InvalidField(
            "path.recurrence_id", f"event {event.id} has no occurrence starting then", status=404
        )
    return rid


async def override_occurrence(
    session: AsyncSession, principal: Principal, event_id: uuid.UUID, rid_text: str, body: OccurrenceUpdate
) -> Event:
    """Edit one occurrence (RECURRENCE-ID): a cancelled one comes back edited."""
    event, calendar = await _writable_event(session, principal, event_id)
    if event.all_day and (body.start is not None or body.end is not None):
        raise InvalidField("start", "an all-day occurrence keeps its day; change the series instead")
    rid = recurrence_id(event, rid_text)
    tz = recurrence.zone(event.time_zone)
    series = event.series()
    current = next((o for o in event.overrides if o.recurrence_id.astimezone(UTC) == rid), None)
    start = in_bounds(recurrence.to_instant(body.start, tz), "start") if body.start else None
    end = in_bounds(recurrence.to_instant(body.end, tz), "end") if body.end else None
    base_start = current.start_at if current else rid
    base_end = current.end_at if current else series.end_of(rid)
    new_start = start or base_start
    new_end = end or (new_start + (base_end - base_start))
    if new_end < new_start:
        raise InvalidField("end", "must not be before start")
    fields = dict(current.fields) if current else {}
    for name in OVERRIDE_FIELDS:
        if getattr(body, name) is not None:
            fields[name] = getattr(body, name)
    if current is None:
        current = Override(org_id=event.org_id, recurrence_id=rid)
        event.overrides.append(current)
    current.start_at, current.end_at, current.fields = new_start, new_end, fields
    event.exdates = [v for v in event.exdates if datetime.fromisoformat(v) != rid]
    event.sequence += 1
    derive(event, now())
    await session.flush()
    await session.refresh(event)
    await Base.events.publish(session, "calendar.event.updated", changed(event, calendar), **about(event))
    return event


async def cancel_occurrence(
    session: AsyncSession, principal: Principal, event_id: uuid.UUID, rid_text: str
) -> Event:
    """Cancel one occurrence: an EXDATE, and its override (if any) goes."""
    event, calendar = await _writable_event(session, principal, event_id)
    rid = recurrence_id(event, rid_text)
    event.overrides = [o for o in event.overrides if o.recurrence_id.astimezone(UTC) != rid]
    event.exdates = _iso({*(datetime.fromisoformat(v) for v in event.exdates), rid})
    event.sequence += 1
    derive(event, now())
    await session.flush()
    await session.refresh(event)
    await Base.events.publish(session, "calendar.event.updated", changed(event, calendar), **about(event))
    return event


# --- occurrences and free/busy ---


def overlapping(query: Any, start: datetime, end: datetime) -> Any:
    """Events whose span can overlap [start, end)."""
    return query.where(Event.span_start < end, or_(Event.span_end.is_(None), Event.span_end > start))


def occurrence_read(event: Event, occurrence: Occurrence, tz: ZoneInfo) -> OccurrenceRead:
    fields: dict[str, Any] = dict(occurrence.override.fields) if occurrence.override else {}
    start: datetime | date = occurrence.start.astimezone(tz)
    end: datetime | date = occurrence.end.astimezone(tz)
    if event.all_day:  # the event's own dates, whatever zone is asked for
        start, end = occurrence.start.date(), occurrence.end.date()
    return OccurrenceRead(
        event_id=event.id,
        calendar_id=event.calendar_id,
        uid=event.uid,
        recurrence_id=occurrence.recurrence_id,
        start=start,
        end=end,
        all_day=event.all_day,
        summary=fields.get("summary", event.summary),
        description=fields.get("description", event.description),
        location=fields.get("location", event.location),
        transparent=event.transparent,
        overridden=occurrence.override is not None,
    )


def expand(found: Iterable[Event], start: datetime, end: datetime) -> list[tuple[Event, Occurrence]]:
    """Every occurrence of these events overlapping [start, end), by start."""
    out = [(event, o) for event in found for o in event.series().between(start, end)]
    out.sort(key=lambda pair: (pair[1].start, pair[1].recurrence_id, str(pair[0].id)))
    return out


def merged(periods: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for start, end in sorted(periods):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


async def freebusy(
    session: AsyncSession, org_id: str, users: Sequence[str], start: datetime, end: datetime, tz: ZoneInfo
) -> list[UserBusy]:
    """Each user's busy periods in [start, end), merged and clipped: occurrences of opaque events
    in the calendars they own."""
    query = (
        scoped(Event, org_id)
        .join(Calendar, Calendar.id == Event.calendar_id)
        .where(Calendar.owner_id.in_(set(users)), Event.transparent.is_(False))
        .add_columns(Calendar.owner_id)
    )
    rows = (await session.execute(overlapping(query, start, end))).all()
    busy: dict[str, list[tuple[datetime, datetime]]] = {user: [] for user in users}
    for event, owner in rows:
        for occurrence in event.series().between(start, end):
            if occurrence.end > occurrence.start:
                busy[owner].append((max(occurrence.start, start), min(occurrence.end, end)))
    return [
        UserBusy(
            user_id=user,
            busy=[Period(start=s.astimezone(tz), end=e.astimezone(tz)) for s, e in merged(busy[user])],
        )
        for user in dict.fromkeys(users)
    ]
