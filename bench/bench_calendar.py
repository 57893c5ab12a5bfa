"""Expanding a year of a daily recurring event with exceptions (EXDATEs and moved, retitled
occurrences) in Europe/Berlin, across both DST changes: the recurring-ical-events library alone on
the event's `.ics` (parsed once), the calendar service's own expansion of the stored series (no
HTTP, no database), and `GET /api/calendar/v1/occurrences` (gateway dispatch, token check, the
range query, expansion, JSON), in the same run. Each checks it got the same 365 - 10 occurrences."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime

import httpx
import icalendar
import recurring_ical_events

from coder.bench.support import Stopwatch, report, result, scratch_database
from coder.runner import registry
from coder.runner.process import build_process_app
from coder.services.calendar.models import Event
from coder.shared import db, migrations
from coder.shared.settings import PlatformSettings
from coder.tests.support.tokens import TestSigner

ROUNDS = int(os.environ.get("BENCH_CALENDAR_ROUNDS", "40"))
START, END = datetime(2027, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC)
EXDATES = [f"2027-{month:02d}-10T09:00:00" for month in range(1, 11)]
MOVED = [f"2027-{month:02d}-20T09:00:00" for month in (2, 4, 6, 8, 10)]
EXPECTED = 365 - len(EXDATES)
API = "/api/calendar/v1"


async def setup(client: httpx.AsyncClient, headers: dict[str, str]) -> tuple[str, str]:
    """The event, created and edited through the API; returns the calendar id and the event id."""
    response = await client.post(
        f"{API}/calendars", json={"name": "Bench", "time_zone": "Europe/Berlin"}, headers=headers
    )
    calendar_id = response.json()["id"]
    body = {
        "summary": "Daily",
        "start": "2027-01-01T09:00:00",
        "end": "2027-01-01T09:15:00",
        "rrule": "FREQ=DAILY",
        "exdates": EXDATES,
    }
    response = await client.post(f"{API}/calendars/{calendar_id}/events", json=body, headers=headers)
    assert response.status_code == 201, response.text
    event_id = response.json()["id"]
    for moved in MOVED:
        response = await client.put(
            f"{API}/events/{event_id}/occurrences/{moved}",
            json={"summary": "Daily (late)", "start": moved.replace("T09", "T16")},
            headers=headers,
        )
        assert response.status_code == 200, response.text
    return calendar_id, event_id


def library_alone(ics: bytes) -> float:
    calendar = icalendar.Calendar.from_ical(ics)
    clock = Stopwatch()
    for _ in range(ROUNDS):
        found = recurring_ical_events.of(calendar).between(START, END)
        assert len(found) == EXPECTED, len(found)
        assert sum(str(e["SUMMARY"]) == "Daily (late)" for e in found) == len(MOVED)
    return ROUNDS / clock.seconds


def service_code(event: Event) -> float:
    clock = Stopwatch()
    for _ in range(ROUNDS):
        found = event.series().between(START, END)
        assert len(found) == EXPECTED, len(found)
    return ROUNDS / clock.seconds


async def through_api(client: httpx.AsyncClient, headers: dict[str, str], calendar_id: str) -> float:
    params = {
        "start": START.isoformat(),
        "end": END.isoformat(),
        "calendar_id": calendar_id,
        "time_zone": "Europe/Berlin",
    }
    clock = Stopwatch()
    for _ in range(ROUNDS):
        response = await client.get(f"{API}/occurrences", params=params, headers=headers)
        items = response.json()["items"]
        assert response.status_code == 200 and len(items) == EXPECTED, response.text[:300]
    return ROUNDS / clock.seconds


async def main() -> None:
    async with scratch_database() as database_url:
        engine = db.create_engine(database_url, pool_size=1)
        await migrations.upgrade(engine, list(registry.resolve("all").values()))
        await engine.dispose()
        signer = TestSigner()
        settings = PlatformSettings.model_validate(
            {"database_url": database_url, "jwks": signer.jwks(), "environment": "test"}
        )
        targets = registry.resolve("all")
        app = build_process_app(settings, targets, [t.settings() for t in targets.values() if t.settings])
        headers = signer.headers("bench-org", perms=["calendar:read", "calendar:write"], sub="bench")
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                calendar_id, event_id = await setup(client, headers)
                ics = (await client.get(f"{API}/calendars/{calendar_id}/export", headers=headers)).content
                async with app.state.runtime.sessions() as session:
                    event = await session.get(Event, uuid.UUID(event_id))
                    assert event is not None
                library = library_alone(ics)
                service = service_code(event)
                api = await through_api(client, headers, calendar_id)
    report(
        f"calendar: a year of a daily event, {len(EXDATES)} EXDATEs, {len(MOVED)} overrides, {ROUNDS} rounds",
        [
            ("recurring-ical-events alone", library, "years/s"),
            ("service expansion (Series.between)", service, "years/s"),
            ("GET /api/calendar/v1/occurrences", api, "years/s"),
        ],
        baseline="recurring-ical-events alone",
    )
    result("api_vs_library", api / library)
