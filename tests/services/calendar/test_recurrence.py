"""Recurrence through the API: DST in two zones, an edited and a cancelled occurrence, RDATE/EXDATE,
all-day events, on both backends."""

from __future__ import annotations

from typing import Any

from coder.tests.services.calendar.factories import API, create_calendar, create_event, occurrences, ok
from coder.tests.support.platform import Platform
from coder.tests.support.tokens import TestSigner


def starts(items: list[dict[str, Any]]) -> list[str]:
    return [item["start"] for item in items]


async def test_a_weekly_meeting_keeps_its_local_time_across_dst_in_two_zones(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org, sub="alice")
    berlin = await create_calendar(platform, h, time_zone="Europe/Berlin")
    # Berlin changes on 29 March and 25 October 2026; New York on 8 March and 1 November.
    weekly = {"start": "2026-03-02T10:00:00", "end": "2026-03-02T11:00:00", "rrule": "FREQ=WEEKLY;BYDAY=MO"}
    await create_event(platform, h, berlin["id"], summary="Berlin sync", **weekly)
    await create_event(platform, h, berlin["id"], summary="NY sync", time_zone="America/New_York", **weekly)

    async def utc(summary: str, start: str, end: str) -> list[str]:
        items = await occurrences(platform, h, start=start, end=end)
        return [i["start"] for i in items if i["summary"] == summary]

    # Spring: Berlin 09:00Z until its change, then 08:00Z; New York 15:00Z, then 14:00Z from 9 March.
    assert await utc("Berlin sync", "2026-03-01T00:00:00Z", "2026-04-07T00:00:00Z") == [
        "2026-03-02T09:00:00Z",
        "2026-03-09T09:00:00Z",
        "2026-03-16T09:00:00Z",
        "2026-03-23T09:00:00Z",
        "2026-03-30T08:00:00Z",
        "2026-04-06T08:00:00Z",
    ]
    assert await utc("NY sync", "2026-03-01T00:00:00Z", "2026-03-24T00:00:00Z") == [
        "2026-03-02T15:00:00Z",
        "2026-03-09T14:00:00Z",
        "2026-03-16T14:00:00Z",
        "2026-03-23T14:00:00Z",
    ]
    # Autumn: Berlin back to 09:00Z from 26 October; New York back to 15:00Z from 2 November.
    assert await utc("Berlin sync", "2026-10-19T00:00:00Z", "2026-11-10T00:00:00Z") == [
        "2026-10-19T08:00:00Z",
        "2026-10-26T09:00:00Z",
        "2026-11-02T09:00:00Z",
        "2026-11-09T09:00:00Z",
    ]
    assert await utc("NY sync", "2026-10-19T00:00:00Z", "2026-11-10T00:00:00Z") == [
        "2026-10-19T14:00:00Z",
        "2026-10-26T14:00:00Z",
        "2026-11-02T15:00:00Z",
        "2026-11-09T15:00:00Z",
    ]
    # Asked for in their own zones, both stay at 10:00 all year.
    in_berlin = await occurrences(
        platform, h, start="2026-03-01T00:00:00Z", end="2026-11-10T00:00:00Z", time_zone="Europe/Berlin"
    )
    berlin_times = {i["start"][11:] for i in in_berlin if i["summary"] == "Berlin sync"}
    assert berlin_times == {"10:00:00+01:00", "10:00:00+02:00"}
    in_ny = await occurrences(
        platform, h, start="2026-03-01T00:00:00Z", end="2026-11-10T00:00:00Z", time_zone="America/New_York"
    )
    assert {i["start"][11:] for i in in_ny if i["summary"] == "NY sync"} == {
        "10:00:00-05:00",
        "10:00:00-04:00",
    }
    # Between the two changes (16 March) the meetings are 5 hours apart instead of 6.
    week = await occurrences(platform, h, start="2026-03-16T00:00:00Z", end="2026-03-17T00:00:00Z")
    assert [(i["summary"], i["start"]) for i in week] == [
        ("Berlin sync", "2026-03-16T09:00:00Z"),
        ("NY sync", "2026-03-16T14:00:00Z"),
    ]


async def test_an_edited_single_occurrence(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org, sub="bob")
    calendar = await create_calendar(platform, h, time_zone="Europe/Berlin")
    event = await create_event(
        platform,
        h,
        calendar["id"],
        summary="Planning",
        start="2026-03-23T10:00:00",
        rrule="FREQ=WEEKLY;COUNT=4",
    )
    # The third one (after the DST change) moves to 14:00 Berlin and gets its own title.
    edited = ok(
        await platform.client.put(
            f"{API}/events/{event['id']}/occurrences/2026-04-06T10:00:00",
            json={"summary": "Planning (moved)", "start": "2026-04-06T14:00:00"},
            headers=h,
        )
    )
    assert edited["sequence"] == 1
    assert edited["overrides"] == [
        {
            "recurrence_id": "2026-04-06T08:00:00Z",
            "start": "2026-04-06T14:00:00+02:00",
            "end": "2026-04-06T15:00:00+02:00",
            "summary": "Planning (moved)",
            "description": None,
            "location": None,
        }
    ]
    items = await occurrences(
        platform, h, start="2026-03-01T00:00:00Z", end="2026-05-01T00:00:00Z", time_zone="Europe/Berlin"
    )
    assert [(i["start"], i["summary"], i["overridden"]) for i in items] == [
        ("2026-03-23T10:00:00+01:00", "Planning", False),
        ("2026-03-30T10:00:00+02:00", "Planning", False),
        ("2026-04-06T14:00:00+02:00", "Planning (moved)", True),
        ("2026-04-13T10:00:00+02:00", "Planning", False),
    ]
    assert items[2]["recurrence_id"] == "2026-04-06T08:00:00Z"
    # The moved occurrence is found where it now is, not where it was.
    at_ten = await occurrences(platform, h, start="2026-04-06T08:00:00Z", end="2026-04-06T09:00:00Z")
    assert at_ten == []

    # Cancelling another one makes it an EXDATE; editing it again brings it back.
    cancelled = ok(
        await platform.client.delete(
            f"{API}/events/{event['id']}/occurrences/2026-03-30T08:00:00Z", headers=h
        )
    )
    assert cancelled["exdates"] == ["2026-03-30T08:00:00Z"]
    items = await occurrences(platform, h, start="2026-03-01T00:00:00Z", end="2026-05-01T00:00:00Z")
    assert starts(items) == ["2026-03-23T09:00:00Z", "2026-04-06T12:00:00Z", "2026-04-13T08:00:00Z"]
    restored = ok(
        await platform.client.put(
            f"{API}/events/{event['id']}/occurrences/2026-03-30T08:00:00Z",
            json={"location": "Room 2"},
            headers=h,
        )
    )
    assert restored["exdates"] == []
    items = await occurrences(platform, h, start="2026-03-30T00:00:00Z", end="2026-03-31T00:00:00Z")
    assert [(i["start"], i["location"]) for i in items] == [("2026-03-30T08:00:00Z", "Room 2")]

    # A time that is not an occurrence is not one to edit.
    missing = await platform.client.put(
        f"{API}/events/{event['id']}/occurrences/2026-03-24T10:00:00", json={"summary": "x"}, headers=h
    )
    assert missing.status_code == 404, missing.text
    assert missing.json()["errors"][0]["field"] == "path.recurrence_id"


async def test_rdates_exdates_and_all_day_events(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org, sub="carol")
    calendar = await create_calendar(platform, h, time_zone="America/New_York")
    await create_event(
        platform,
        h,
        calendar["id"],
        summary="Daily",
        start="2026-03-06T09:00:00",
        end="2026-03-06T09:30:00",
        rrule="FREQ=DAILY;UNTIL=20260310T000000",  # a local UNTIL, read in the event's zone
        exdates=["2026-03-07T09:00:00"],
        rdates=["2026-03-12T18:00:00-04:00"],
    )
    trip = await create_event(
        platform, h, calendar["id"], summary="Trip", start="2026-03-07", end="2026-03-09"
    )
    assert (trip["start"], trip["end"], trip["all_day"]) == ("2026-03-07", "2026-03-09", True)
    items = await occurrences(platform, h, start="2026-03-01T00:00:00Z", end="2026-03-20T00:00:00Z")
    assert [(i["summary"], i["start"], i["end"]) for i in items] == [
        ("Daily", "2026-03-06T14:00:00Z", "2026-03-06T14:30:00Z"),
        ("Trip", "2026-03-07", "2026-03-09"),
        ("Daily", "2026-03-08T13:00:00Z", "2026-03-08T13:30:00Z"),
        ("Daily", "2026-03-09T13:00:00Z", "2026-03-09T13:30:00Z"),
        ("Daily", "2026-03-12T22:00:00Z", "2026-03-12T22:30:00Z"),
    ]


async def test_bad_input_names_the_field(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org, sub="dave")
    calendar = await create_calendar(platform, h)
    url = f"{API}/calendars/{calendar['id']}/events"
    cases = [
        ({"summary": "x", "start": "2026-01-01T10:00:00", "rrule": "FREQ=SOMETIMES"}, "rrule"),
        ({"summary": "x", "start": "2026-01-01T10:00:00", "rrule": "FREQ=MINUTELY"}, "rrule"),
        ({"summary": "x", "start": "2026-01-01T10:00:00", "time_zone": "Mars/Olympus"}, "time_zone"),
        ({"summary": "x", "start": "2026-01-01T10:00:00", "end": "2026-01-01T09:00:00"}, "end"),
        ({"summary": "x", "start": "2026-01-01", "end": "2026-01-01T09:00:00"}, "end"),
        ({"summary": "x", "start": "3026-01-01T10:00:00"}, "start"),
        (
            {"summary": "x", "start": "2026-01-01T10:00:00", "exdates": ["2026-01-01", "9000-01-01"]},
            "exdates.1",
        ),
    ]
    for body, field in cases:
        response = await platform.client.post(url, json=body, headers=h)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["field"] == field, response.text
    too_long = await platform.client.get(
        f"{API}/occurrences",
        params={"start": "2026-01-01T00:00:00Z", "end": "2027-06-01T00:00:00Z"},
        headers=h,
    )
    assert too_long.status_code == 422 and too_long.json()["errors"][0]["field"] == "query.end"
    # Only the owner changes a calendar's events.
    event = await create_event(platform, h, calendar["id"], start="2026-01-01T10:00:00")
    other = signer.headers(org, sub="eve", perms=["calendar:read", "calendar:write"])
    refused = await platform.client.patch(
        f"{API}/events/{event['id']}", json={"summary": "mine"}, headers=other
    )
    assert refused.status_code == 403, refused.text


async def test_changing_a_series_keeps_its_wall_time_and_length(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org, sub="frank")
    calendar = await create_calendar(platform, h, time_zone="Europe/Berlin")
    event = await create_event(
        platform,
        h,
        calendar["id"],
        start="2026-06-01T10:00:00",
        end="2026-06-01T11:30:00",
        rrule="FREQ=DAILY",
    )
    url = f"{API}/events/{event['id']}"
    moved = ok(await platform.client.patch(url, json={"time_zone": "America/New_York"}, headers=h))
    assert (moved["start"], moved["end"]) == ("2026-06-01T10:00:00-04:00", "2026-06-01T11:30:00-04:00")
    later = ok(await platform.client.patch(url, json={"start": "2026-06-02T15:00:00"}, headers=h))
    assert (later["start"], later["end"], later["sequence"]) == (
        "2026-06-02T15:00:00-04:00",
        "2026-06-02T16:30:00-04:00",
        2,
    )
    items = await occurrences(platform, h, start="2026-06-01T00:00:00Z", end="2026-06-04T00:00:00Z")
    assert starts(items) == ["2026-06-02T19:00:00Z", "2026-06-03T19:00:00Z"]
