"""`.ics` export read back by `icalendar` (and expanded by recurring-ical-events) to the same events,
and import of what other clients write: overrides, EXDATE, VALARM, cancelled occurrences."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import recurring_ical_events

from coder.tests.services.calendar.factories import API, create_calendar, create_event, occurrences, ok
from coder.tests.support.platform import Platform
from coder.tests.support.tokens import TestSigner

BERLIN = ZoneInfo("Europe/Berlin")


async def export(p: Platform, h: dict[str, str], calendar_id: str) -> icalendar.Calendar:
    response = await p.client.get(f"{API}/calendars/{calendar_id}/export", headers=h)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/calendar")
    return icalendar.Calendar.from_ical(response.content)


def by_uid(calendar: icalendar.Calendar) -> dict[tuple[str, Any], Any]:
    return {
        (str(e["UID"]), e.get("RECURRENCE-ID") and e.decoded("RECURRENCE-ID")): e
        for e in calendar.walk("VEVENT")
    }


async def test_export_reads_back_to_the_same_events(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org, sub="alice")
    calendar = await create_calendar(platform, h, time_zone="Europe/Berlin", name="Team")
    weekly = await create_event(
        platform,
        h,
        calendar["id"],
        uid="weekly@example.com",
        summary="Weekly sync",
        location="Room 1",
        start="2026-03-16T10:00:00",
        end="2026-03-16T11:00:00",
        rrule="FREQ=WEEKLY;BYDAY=MO;COUNT=6",
        exdates=["2026-03-23T10:00:00"],
        reminders=[15],
    )
    await platform.client.put(
        f"{API}/events/{weekly['id']}/occurrences/2026-03-30T10:00:00",
        json={"summary": "Weekly sync (long)", "start": "2026-03-30T09:00:00", "end": "2026-03-30T12:00:00"},
        headers=h,
    )
    await create_event(
        platform,
        h,
        calendar["id"],
        uid="offsite@example.com",
        summary="Offsite",
        start="2026-04-01",
        end="2026-04-03",
    )

    exported = await export(platform, h, calendar["id"])
    events = by_uid(exported)
    assert set(events) == {
        ("weekly@example.com", None),
        ("weekly@example.com", datetime(2026, 3, 30, 10, tzinfo=BERLIN)),
        ("offsite@example.com", None),
    }
    master = events["weekly@example.com", None]
    assert master.start == datetime(2026, 3, 16, 10, tzinfo=BERLIN)
    assert master["DTSTART"].params["TZID"] == "Europe/Berlin"
    assert master.end == datetime(2026, 3, 16, 11, tzinfo=BERLIN)
    assert str(master["SUMMARY"]) == "Weekly sync" and str(master["LOCATION"]) == "Room 1"
    assert master["RRULE"] == icalendar.vRecur.from_ical("FREQ=WEEKLY;BYDAY=MO;COUNT=6")
    assert master.exdates == [datetime(2026, 3, 23, 10, tzinfo=BERLIN)]
    assert [a.decoded("TRIGGER") for a in master.walk("VALARM")] == [timedelta(minutes=-15)]
    moved = events["weekly@example.com", datetime(2026, 3, 30, 10, tzinfo=BERLIN)]
    assert (moved.start, moved.end) == (
        datetime(2026, 3, 30, 9, tzinfo=BERLIN),
        datetime(2026, 3, 30, 12, tzinfo=BERLIN),
    )
    assert str(moved["SUMMARY"]) == "Weekly sync (long)"
    offsite = events["offsite@example.com", None]
    assert (offsite.start, offsite.end) == (date(2026, 4, 1), date(2026, 4, 3))
    assert "Europe/Berlin" in {str(tz["TZID"]) for tz in exported.walk("VTIMEZONE")}

    # recurring-ical-events expands the export to exactly the occurrences the API gives.
    lo, hi = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC)
    theirs = sorted(
        (
            str(e["UID"]),
            e.start.astimezone(UTC) if isinstance(e.start, datetime) else e.start,
            str(e["SUMMARY"]),
        )
        for e in recurring_ical_events.of(exported).between(lo, hi)
    )
    ours = sorted(
        (
            i["uid"],
            datetime.fromisoformat(i["start"]) if "T" in i["start"] else date.fromisoformat(i["start"]),
            i["summary"],
        )
        for i in await occurrences(
            platform, h, start=lo.isoformat(), end=hi.isoformat(), calendar_id=calendar["id"]
        )
    )
    assert ours == theirs
    assert len(ours) == 6  # 6 weekly - 1 EXDATE + the offsite

    # Importing the export into another calendar gives the same events and the same export.
    copy = await create_calendar(platform, h, time_zone="UTC", name="Copy")
    result = ok(
        await platform.client.post(
            f"{API}/calendars/{copy['id']}/import", json={"ics": exported.to_ical().decode()}, headers=h
        )
    )
    assert (result["created"], result["updated"]) == (2, 0)
    again = by_uid(await export(platform, h, copy["id"]))
    assert set(again) == set(events)
    for key, component in events.items():
        for prop in ("DTSTART", "DTEND", "SUMMARY", "LOCATION", "RRULE", "EXDATE", "RECURRENCE-ID"):
            assert again[key].get(prop) == component.get(prop), (key, prop)
        assert [a.decoded("TRIGGER") for a in again[key].walk("VALARM")] == [
            a.decoded("TRIGGER") for a in component.walk("VALARM")
        ]


OUTLOOK_STYLE = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Example Corp//Calendar//EN
BEGIN:VEVENT
UID:standup-1@example.com
DTSTAMP:20260101T000000Z
DTSTART;TZID=America/New_York:20260302T093000
DTEND;TZID=America/New_York:20260302T094500
RRULE:FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR;UNTIL=20260313T235959Z
EXDATE;TZID=America/New_York:20260304T093000
SUMMARY:Standup
TRANSP:OPAQUE
BEGIN:VALARM
ACTION:DISPLAY
DESCRIPTION:Standup
TRIGGER:-PT10M
END:VALARM
END:VEVENT
BEGIN:VEVENT
UID:standup-1@example.com
DTSTAMP:20260101T000000Z
RECURRENCE-ID;TZID=America/New_York:20260309T093000
DTSTART;TZID=America/New_York:20260309T110000
DTEND;TZID=America/New_York:20260309T111500
SUMMARY:Standup (late)
END:VEVENT
BEGIN:VEVENT
UID:standup-1@example.com
DTSTAMP:20260101T000000Z
RECURRENCE-ID;TZID=America/New_York:20260311T093000
DTSTART;TZID=America/New_York:20260311T093000
DTEND;TZID=America/New_York:20260311T094500
STATUS:CANCELLED
SUMMARY:Standup
END:VEVENT
BEGIN:VEVENT
UID:holiday@example.com
DTSTAMP:20260101T000000Z
DTSTART;VALUE=DATE:20260306
SUMMARY:Holiday
TRANSP:TRANSPARENT
END:VEVENT
END:VCALENDAR
"""


async def test_import_reads_overrides_cancellations_and_alarms(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org, sub="bob")
    calendar = await create_calendar(platform, h, time_zone="Europe/Berlin")
    url = f"{API}/calendars/{calendar['id']}/import"
    result = ok(await platform.client.post(url, json={"ics": OUTLOOK_STYLE}, headers=h))
    assert (result["created"], result["updated"]) == (2, 0)
    standup = ok(await platform.client.get(f"{API}/events/{result['events'][0]}", headers=h))
    assert (standup["time_zone"], standup["reminders"], standup["sequence"]) == ("America/New_York", [10], 0)
    assert standup["exdates"] == ["2026-03-04T14:30:00Z", "2026-03-11T13:30:00Z"]
    items = await occurrences(
        platform,
        h,
        start="2026-03-01T00:00:00Z",
        end="2026-03-14T00:00:00Z",
        time_zone="America/New_York",
        calendar_id=calendar["id"],
    )
    assert [(i["start"], i["summary"]) for i in items] == [
        ("2026-03-02T09:30:00-05:00", "Standup"),
        ("2026-03-03T09:30:00-05:00", "Standup"),
        ("2026-03-05T09:30:00-05:00", "Standup"),
        ("2026-03-06", "Holiday"),
        ("2026-03-06T09:30:00-05:00", "Standup"),
        ("2026-03-09T11:00:00-04:00", "Standup (late)"),
        ("2026-03-10T09:30:00-04:00", "Standup"),
        ("2026-03-12T09:30:00-04:00", "Standup"),
        ("2026-03-13T09:30:00-04:00", "Standup"),
    ]
    listed = ok(
        await platform.client.get(
            f"{API}/events", params={"calendar_id": calendar["id"], "limit": 1}, headers=h
        )
    )
    assert [e["uid"] for e in listed["items"]] == ["standup-1@example.com"]
    rest = ok(await platform.client.get(f"{API}/events", params={"cursor": listed["next_cursor"]}, headers=h))
    assert [e["uid"] for e in rest["items"]] == ["holiday@example.com"]
    # Importing it again replaces the events of the same UIDs: nothing doubles.
    result = ok(await platform.client.post(url, json={"ics": OUTLOOK_STYLE}, headers=h))
    assert (result["created"], result["updated"]) == (0, 2)
    again = await occurrences(
        platform, h, start="2026-03-01T00:00:00Z", end="2026-03-14T00:00:00Z", calendar_id=calendar["id"]
    )
    assert len(again) == len(items)

    for bad, field in (("not a calendar", "ics"), (OUTLOOK_STYLE.replace("FREQ=DAILY", "FREQ=NEVER"), "ics")):
        response = await platform.client.post(url, json={"ics": bad}, headers=h)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"].startswith(field), response.text
