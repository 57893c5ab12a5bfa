"""calendar's resources for the cross-org suite (tests/e2e/test_cross_org.py)."""

from __future__ import annotations

from coder.tests.support.crossorg import CrossOrg, TargetClient


async def create(client: TargetClient, headers: dict[str, str]) -> dict[str, str]:
    response = await client.request(
        "POST", "/v1/calendars", json={"name": "Team", "time_zone": "Europe/Berlin"}, headers=headers
    )
    assert response.status_code == 201, response.text
    calendar_id = response.json()["id"]
    event = {"summary": "Standup", "start": "2030-01-07T10:00:00", "rrule": "FREQ=DAILY;COUNT=5"}
    response = await client.request(
        "POST", f"/v1/calendars/{calendar_id}/events", json=event, headers=headers
    )
    assert response.status_code == 201, response.text
    return {
        "calendar_id": calendar_id,
        "event_id": response.json()["id"],
        "recurrence_id": "2030-01-08T10:00:00",
    }


registration = CrossOrg(
    create=create,
    bodies={
        ("PATCH", "/v1/calendars/{calendar_id}"): {"name": "Taken over"},
        ("POST", "/v1/calendars/{calendar_id}/events"): {"summary": "Intruder", "start": "2030-01-01"},
        ("PATCH", "/v1/events/{event_id}"): {"summary": "Taken over"},
        ("PUT", "/v1/events/{event_id}/occurrences/{recurrence_id}"): {"summary": "Taken over"},
        ("POST", "/v1/calendars/{calendar_id}/import"): {
            "ics": "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nEND:VCALENDAR\r\n"
        },
    },
    unaddressed={
        ("POST", "/v1/calendars"): "creates in the caller's org",
        ("POST", "/v1/freebusy"): "reads the calendars of the caller's org",
    },
    volatile=frozenset({("GET", "/v1/occurrences")}),  # `start` defaults to now
)
