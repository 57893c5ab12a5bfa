"""`.ics` (RFC 5545) export and import through the `icalendar` library.

Export writes each series as a VEVENT with DTSTART/DTEND in its TZID (with the VTIMEZONE it needs),
RRULE, RDATE, EXDATE and VALARMs, and each override as a VEVENT with the same UID and its
RECURRENCE-ID. Import reads the same back: a VEVENT without RECURRENCE-ID is a series, one with it
an override of the series of its UID (STATUS:CANCELLED makes it an EXDATE). An event whose UID the
calendar already has is replaced (its SEQUENCE goes up), so importing an export again changes
nothing but sequences.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
from icalendar.prop import vRecur
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.calendar import recurrence, service
from coder.services.calendar.models import Base, Calendar, Event, Override
from coder.services.calendar.schemas import EventCreate, IcsImportRead
from coder.shared.errors import InvalidField

PRODID = "-//Coder Platform//calendar//EN"
MAX_COMPONENTS = 5000


def _local(instant: datetime, event: Event, tz: ZoneInfo) -> datetime | date:
    local = instant.astimezone(tz)
    return local.date() if event.all_day else local


def _vevent(event: Event, tz: ZoneInfo) -> icalendar.Event:
    component = icalendar.Event()
    component.add("uid", event.uid)
    # Without a METHOD, DTSTAMP is when the event was last revised in the store (RFC 5545 3.8.7.2).
    component.add("dtstamp", event.updated_at.astimezone(UTC))
    component.add("sequence", event.sequence)
    component.add("summary", event.summary)
    if event.description:
        component.add("description", event.description)
    if event.location:
        component.add("location", event.location)
    component.add("dtstart", _local(event.start_at, event, tz))
    component.add("dtend", _local(event.end_at, event, tz))
    if event.transparent:
        component.add("transp", "TRANSPARENT")
    return component


def export(calendar: Calendar, found: Sequence[Event]) -> bytes:
    """The calendar's events as one VCALENDAR."""
    out = icalendar.Calendar()
    out.add("prodid", PRODID)
    out.add("version", "2.0")
    out.add("x-wr-calname", calendar.name)
    for event in found:
        tz = recurrence.zone(event.time_zone)
        master = _vevent(event, tz)
        if event.rrule:
            master.add("rrule", vRecur.from_ical(event.rrule))
        for name, values in (("rdate", event.rdates), ("exdate", event.exdates)):
            if values:
                master.add(name, [_local(datetime.fromisoformat(v), event, tz) for v in values])
        for minutes in event.reminders:
            alarm = icalendar.Alarm()
            alarm.add("action", "DISPLAY")
            alarm.add("description", event.summary)
            alarm.add("trigger", timedelta(minutes=-minutes))
            master.add_component(alarm)
        out.add_component(master)
        for override in event.overrides:
            component = _vevent(event, tz)
            for key, value in (("dtstart", override.start_at), ("dtend", override.end_at)):
                del component[key]
                component.add(key, _local(value, event, tz))
            for key, value in override.fields.items():
                component[key] = icalendar.vText(value)
            component.add("recurrence-id", _local(override.recurrence_id, event, tz))
            out.add_component(component)
    out.add_missing_timezones()
    return out.to_ical()


# --- import ---


def _zone_of(value: datetime | date, default: str) -> str:
    """The IANA zone a DTSTART names, or `default` (a date, a floating time, an unknown TZID)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        key = getattr(value.tzinfo, "key", None)
        if key:
            try:
                recurrence.zone(key)
                return str(key)
            except ValueError:
                pass
        if value.utcoffset() == timedelta(0):
            return "UTC"
    return default


def _moments(values: Sequence[Any]) -> list[datetime | date]:
    return [v for v in values if isinstance(v, date)]


def _reminders(component: icalendar.Event) -> list[int]:
    """Minutes before the start of each VALARM triggered relative to the start (others are skipped)."""
    minutes = set()
    for alarm in component.walk("VALARM"):
        trigger = alarm.get("TRIGGER")
        if trigger is None or trigger.params.get("RELATED", "START").upper() != "START":
            continue
        delta = getattr(trigger, "dt", None)
        if isinstance(delta, timedelta) and timedelta(0) >= delta >= -timedelta(weeks=4):
            minutes.add(int(-delta.total_seconds() // 60))
    return sorted(minutes)[:10]


def _text(component: icalendar.Event, name: str, limit: int) -> str:
    value = component.get(name)
    return str(value)[:limit] if value is not None else ""


def parse(text: str, default_zone: str) -> tuple[list[tuple[EventCreate, list[icalendar.Event]]], int]:
    """Series (as EventCreate) with their override components; and how many components were skipped."""
    try:
        parsed = icalendar.Calendar.from_ical(text)
    except Exception as exc:  # icalendar raises ValueError, KeyError, IndexError... on bad input
        raise InvalidField("ics", f"not an iCalendar object ({type(exc).__name__})") from None
    components = parsed.walk("VEVENT")
    if len(components) > MAX_COMPONENTS:
        raise InvalidField("ics", f"at most {MAX_COMPONENTS} VEVENTs per import")
    masters: dict[str, icalendar.Event] = {}
    overrides: dict[str, list[icalendar.Event]] = {}
    for component in components:
        assert isinstance(component, icalendar.Event)
        uid = str(component.get("UID") or "") or f"{uuid.uuid4()}@coder"
        if component.get("RECURRENCE-ID") is not None:
            overrides.setdefault(uid, []).append(component)
        else:
            masters[uid] = component
    out = []
    for index, (uid, component) in enumerate(masters.items()):
        try:
            start = component.start
            end = component.end
        except (icalendar.IncompleteComponent, icalendar.InvalidCalendar, ValueError, TypeError):
            raise InvalidField(f"ics.VEVENT.{index}.DTSTART", "missing or invalid") from None
        zone = _zone_of(start, default_zone)
        rules = component.rrules
        body = {
            "uid": uid[:255].replace(" ", "_") or f"{uuid.uuid4()}@coder",
            "summary": _text(component, "SUMMARY", 500) or "(no title)",
            "description": _text(component, "DESCRIPTION", 8000),
            "location": _text(component, "LOCATION", 500),
            "start": start,
            "end": end,
            "time_zone": zone,
            "rrule": rules[0].to_ical().decode() if rules else None,
            "exdates": _moments(component.exdates),
            "rdates": _moments([s for s, _ in component.rdates]),
            "reminders": _reminders(component),
            "transparent": str(component.get("TRANSP", "")).upper() == "TRANSPARENT",
        }
        try:
            out.append((EventCreate.model_validate(body), overrides.get(uid, [])))
        except ValueError as exc:
            raise InvalidField(f"ics.VEVENT.{index}", str(exc).splitlines()[0][:300]) from None
    orphans = sum(len(v) for uid, v in overrides.items() if uid not in masters)
    return out, orphans


def apply_overrides(event: Event, components: Sequence[icalendar.Event]) -> None:
    """Replace the event's overrides with these RECURRENCE-ID components (cancelled ones: EXDATEs)."""
    tz = recurrence.zone(event.time_zone)
    series = event.series()
    kept: dict[datetime, Override] = {}
    exdates = {datetime.fromisoformat(v) for v in event.exdates}
    for component in components:
        try:
            rid = recurrence.to_instant(component.get("RECURRENCE-ID").dt, tz)
            start, end = component.start, component.end
        except (AttributeError, ValueError, TypeError, icalendar.InvalidCalendar):
            continue  # an override we cannot place is left out, not guessed
        if not series.is_instance(rid):
            continue
        if str(component.get("STATUS", "")).upper() == "CANCELLED":
            exdates.add(rid)
            continue
        fields = {
            key: _text(component, key.upper(), limit)
            for key, limit in (("summary", 500), ("description", 8000), ("location", 500))
            if component.get(key.upper()) is not None
        }
        kept[rid] = Override(
            org_id=event.org_id,
            recurrence_id=rid,
            start_at=recurrence.to_instant(start, tz),
            end_at=recurrence.to_instant(end, tz),
            fields={k: v for k, v in fields.items() if v != getattr(event, k)},
        )
    event.overrides = list(kept.values())
    event.exdates = sorted(v.astimezone(UTC).isoformat() for v in exdates)


async def import_ics(session: AsyncSession, calendar: Calendar, text: str) -> IcsImportRead:
    series, _orphans = parse(text, calendar.time_zone)
    created = updated = 0
    ids = []
    for index, (body, components) in enumerate(series):
        try:
            event, is_new = await service.upsert_event(session, calendar, body)
            apply_overrides(event, components)
            service.derive(event, service.now())
        except InvalidField as exc:
            detail = exc.errors[0] if exc.errors else {"field": "?", "message": str(exc)}
            raise InvalidField(f"ics.VEVENT.{index}.{detail['field']}", detail["message"]) from None
        await session.flush()
        await session.refresh(event)
        data = service.changed(event, calendar)
        if is_new:
            await Base.events.publish(session, "calendar.event.created", data, **service.about(event))
        else:
            await Base.events.publish(session, "calendar.event.updated", data, **service.about(event))
        created, updated = created + is_new, updated + (not is_new)
        ids.append(event.id)
    return IcsImportRead(created=created, updated=updated, events=ids)
