"""Free/busy over several users' calendars, and the `calendar.event.*` events of every change."""

from __future__ import annotations

from coder.tests.services.calendar.factories import API, create_calendar, create_event, ok
from coder.tests.support.platform import Platform, listen, wait_until
from coder.tests.support.tokens import TestSigner


async def test_freebusy_merges_busy_periods_and_skips_transparent_events(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    alice, bob = signer.headers(org, sub="alice"), signer.headers(org, sub="bob")
    work = await create_calendar(platform, alice, time_zone="Europe/Berlin")
    private = await create_calendar(platform, alice, time_zone="UTC")
    # Daily 09:00-10:00 Berlin, except on the 4th; a 09:30-11:00 meeting overlapping it on the 3rd.
    await create_event(
        platform,
        alice,
        work["id"],
        start="2026-03-02T09:00:00",
        end="2026-03-02T10:00:00",
        rrule="FREQ=DAILY;COUNT=5",
        exdates=["2026-03-04T09:00:00"],
    )
    await create_event(
        platform, alice, private["id"], start="2026-03-03T08:30:00Z", end="2026-03-03T10:00:00Z"
    )
    await create_event(
        platform, alice, work["id"], summary="Focus", start="2026-03-05T12:00:00", transparent=True
    )
    bobs = await create_calendar(platform, bob, time_zone="America/New_York")
    await create_event(platform, bob, bobs["id"], summary="Trip", start="2026-03-04", end="2026-03-05")

    query = {
        "users": ["alice", "bob", "nobody"],
        "start": "2026-03-03T00:00:00Z",
        "end": "2026-03-05T08:30:00Z",
    }
    answer = ok(await platform.client.post(f"{API}/freebusy", json=query, headers=bob))
    assert answer["users"] == [
        {
            "user_id": "alice",
            "busy": [
                {"start": "2026-03-03T08:00:00Z", "end": "2026-03-03T10:00:00Z"},  # merged
                {"start": "2026-03-05T08:00:00Z", "end": "2026-03-05T08:30:00Z"},  # clipped
            ],
        },
        # An all-day event is its day in its own zone.
        {"user_id": "bob", "busy": [{"start": "2026-03-04T05:00:00Z", "end": "2026-03-05T05:00:00Z"}]},
        {"user_id": "nobody", "busy": []},
    ]
    bad = await platform.client.post(f"{API}/freebusy", json={**query, "end": query["start"]}, headers=bob)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "end"


async def test_every_change_is_an_event(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org, sub="dana")
    received = await listen(platform, "calendar.event.*")
    calendar = await create_calendar(platform, h)
    event = await create_event(platform, h, calendar["id"], start="2026-05-04T10:00:00Z", rrule="FREQ=DAILY")
    ok(await platform.client.patch(f"{API}/events/{event['id']}", json={"summary": "Renamed"}, headers=h))
    ok(
        await platform.client.delete(
            f"{API}/events/{event['id']}/occurrences/2026-05-05T10:00:00Z", headers=h
        )
    )
    assert (await platform.client.delete(f"{API}/events/{event['id']}", headers=h)).status_code == 204

    def mine() -> list[tuple[str, str, int]]:
        return [
            (e.type, e.data["summary"], e.data["sequence"]) for e in received if e.data["id"] == event["id"]
        ]

    await wait_until(lambda: len(mine()) >= 4, what="four events")
    assert mine() == [
        ("calendar.event.created", "Meeting", 0),
        ("calendar.event.updated", "Renamed", 1),
        ("calendar.event.updated", "Renamed", 2),
        ("calendar.event.deleted", "Renamed", 2),
    ]
    created = next(e for e in received if e.type == "calendar.event.created" and e.subject == event["id"])
    assert created.orgid == org
    assert created.data == {
        "id": event["id"],
        "calendar_id": calendar["id"],
        "uid": event["uid"],
        "owner_id": "dana",
        "summary": "Meeting",
        "start": "2026-05-04T10:00:00+00:00",
        "end": "2026-05-04T11:00:00+00:00",
        "time_zone": "UTC",
        "all_day": False,
        "rrule": "FREQ=DAILY",
        "sequence": 0,
    }
