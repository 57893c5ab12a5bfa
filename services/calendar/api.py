"""HTTP routes of `calendar` (RFC 5545 / CalDAV semantics). Paths are relative to `/api/calendar`."""

from __future__ import annotations

import uuid
from datetime import UTC, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import AwareDatetime

from coder.services.calendar import service
from coder.services.calendar.models import Calendar, Event
from coder.services.calendar.schemas import (
    CalendarCreate,
    CalendarRead,
    CalendarUpdate,
    EventCreate,
    EventRead,
    EventUpdate,
    FreeBusyQuery,
    FreeBusyRead,
    IcsImport,
    IcsImportRead,
    OccurrenceList,
    OccurrenceUpdate,
    TimeZone,
)
from coder.shared.auth import Principal, require
from coder.shared.db import SessionDep
from coder.shared.errors import problem_responses
from coder.shared.pagination import Page, PageDep, paginate
from coder.shared.repository import scoped
from coder.shared.schemas import StorableTime

router = APIRouter(prefix="/v1", tags=["calendar"])

Reader = Annotated[Principal, require("calendar:read")]
Writer = Annotated[Principal, require("calendar:write")]
RecurrenceId = Annotated[
    str,
    Path(
        max_length=64,
        description="The occurrence's original start: a date-time (local to the event's zone unless "
        "it has an offset), or a date for an all-day event",
    ),
]
OWNER = problem_responses({403})


# --- calendars ---


@router.post("/calendars", response_model=CalendarRead, status_code=status.HTTP_201_CREATED)
async def create_calendar(body: CalendarCreate, session: SessionDep, principal: Writer) -> CalendarRead:
    """Create a calendar owned by the caller; its `time_zone` is the default of its events."""
    return CalendarRead.model_validate(await service.create_calendar(session, principal, body))


@router.get("/calendars", response_model=Page[CalendarRead])
async def list_calendars(
    session: SessionDep,
    principal: Reader,
    params: PageDep,
    owner_id: Annotated[str | None, Query(max_length=128, description="Only this user's calendars")] = None,
    team_id: Annotated[str | None, Query(max_length=128)] = None,
) -> Page[CalendarRead]:
    """The organization's calendars, oldest first."""
    query = scoped(Calendar, principal.org_id)
    if owner_id is not None:
        query = query.where(Calendar.owner_id == owner_id)
    if team_id is not None:
        query = query.where(Calendar.team_id == team_id)
    rows = await paginate(session, query, (Calendar.created_at, Calendar.id), params)
    return rows.page(CalendarRead.model_validate)


@router.get("/calendars/{calendar_id}", response_model=CalendarRead)
async def read_calendar(calendar_id: uuid.UUID, session: SessionDep, principal: Reader) -> CalendarRead:
    """One calendar."""
    return CalendarRead.model_validate(await service.get_calendar(session, principal.org_id, calendar_id))


@router.patch("/calendars/{calendar_id}", response_model=CalendarRead, responses=OWNER)
async def update_calendar(
    calendar_id: uuid.UUID, body: CalendarUpdate, session: SessionDep, principal: Writer
) -> CalendarRead:
    """Rename a calendar, change its default zone or its team (its owner, or `calendar:admin`)."""
    return CalendarRead.model_validate(await service.update_calendar(session, principal, calendar_id, body))


@router.delete("/calendars/{calendar_id}", status_code=status.HTTP_204_NO_CONTENT, responses=OWNER)
async def delete_calendar(calendar_id: uuid.UUID, session: SessionDep, principal: Writer) -> Response:
    """Delete a calendar and its events (each announced as `calendar.event.deleted`)."""
    await service.delete_calendar(session, principal, calendar_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- events ---


@router.post(
    "/calendars/{calendar_id}/events",
    response_model=EventRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({403, 409}),
)
async def create_event(
    calendar_id: uuid.UUID, body: EventCreate, session: SessionDep, principal: Writer
) -> EventRead:
    """Create an event: dates make it all-day; local date-times are read in `time_zone` (TZID);
    `rrule`, `rdates` and `exdates` make it recur; `reminders` are minutes before each start."""
    return service.event_read(await service.create_event(session, principal, calendar_id, body))


@router.get("/events", response_model=Page[EventRead], responses=problem_responses({404}))
async def list_events(
    session: SessionDep,
    principal: Reader,
    params: PageDep,
    calendar_id: Annotated[uuid.UUID | None, Query(description="One calendar of the organization")] = None,
) -> Page[EventRead]:
    """Event series (not occurrences), by first start: one calendar's, or those of the caller's calendars."""
    query = scoped(Event, principal.org_id)
    if calendar_id is not None:
        await service.get_calendar(session, principal.org_id, calendar_id)
        query = query.where(Event.calendar_id == calendar_id)
    else:
        query = query.join(Calendar, Calendar.id == Event.calendar_id).where(
            Calendar.owner_id == principal.subject
        )
    rows = await paginate(session, query, (Event.start_at, Event.id), params)
    return rows.page(service.event_read)


@router.get("/events/{event_id}", response_model=EventRead)
async def read_event(event_id: uuid.UUID, session: SessionDep, principal: Reader) -> EventRead:
    """One event series with its overrides."""
    return service.event_read(await service.get_event(session, principal.org_id, event_id))


@router.patch("/events/{event_id}", response_model=EventRead, responses=OWNER)
async def update_event(
    event_id: uuid.UUID, body: EventUpdate, session: SessionDep, principal: Writer
) -> EventRead:
    """Change the series; its SEQUENCE goes up and reminders are recomputed from now."""
    return service.event_read(await service.update_event(session, principal, event_id, body))


@router.delete("/events/{event_id}", status_code=status.HTTP_204_NO_CONTENT, responses=OWNER)
async def delete_event(event_id: uuid.UUID, session: SessionDep, principal: Writer) -> Response:
    """Delete the series with all its occurrences."""
    await service.delete_event(session, principal, event_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/events/{event_id}/occurrences/{recurrence_id}", response_model=EventRead, responses=OWNER)
async def update_occurrence(
    event_id: uuid.UUID,
    recurrence_id: RecurrenceId,
    body: OccurrenceUpdate,
    session: SessionDep,
    principal: Writer,
) -> EventRead:
    """Edit one occurrence (a RECURRENCE-ID override): move it, or change its summary, description
    or location; the other occurrences keep the series' values."""
    return service.event_read(
        await service.override_occurrence(session, principal, event_id, recurrence_id, body)
    )


@router.delete("/events/{event_id}/occurrences/{recurrence_id}", response_model=EventRead, responses=OWNER)
async def cancel_occurrence(
    event_id: uuid.UUID, recurrence_id: RecurrenceId, session: SessionDep, principal: Writer
) -> EventRead:
    """Cancel one occurrence (an EXDATE; its override, if any, goes)."""
    return service.event_read(await service.cancel_occurrence(session, principal, event_id, recurrence_id))


# --- occurrences, free/busy ---


@router.get("/occurrences", response_model=OccurrenceList, responses=problem_responses({404}))
async def list_occurrences(
    session: SessionDep,
    principal: Reader,
    start: Annotated[AwareDatetime | None, StorableTime, Query(description="Inclusive; default now")] = None,
    end: Annotated[
        AwareDatetime | None, StorableTime, Query(description="Exclusive; default 7 days after start")
    ] = None,
    time_zone: Annotated[TimeZone, Query(description="The zone times are given in")] = "UTC",
    calendar_id: Annotated[uuid.UUID | None, Query(description="One calendar of the organization")] = None,
    owner_id: Annotated[
        str | None, Query(max_length=128, description="Calendars of this user; default the caller's")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> OccurrenceList:
    """Occurrences overlapping [start, end) (at most 400 days), recurrences expanded and overrides
    applied, in `time_zone`, by start: the caller's calendars unless a calendar or owner is named."""
    tz = service.zone(time_zone, "query.time_zone")
    start = start or service.now()
    end = end or start + timedelta(days=7)
    service.time_range(start, end)
    query = scoped(Event, principal.org_id)
    if calendar_id is not None:
        await service.get_calendar(session, principal.org_id, calendar_id)
        query = query.where(Event.calendar_id == calendar_id)
    else:
        owner = owner_id or principal.subject
        query = query.join(Calendar, Calendar.id == Event.calendar_id).where(Calendar.owner_id == owner)
    found = (await session.scalars(service.overlapping(query, start, end))).all()
    expanded = service.expand(found, start.astimezone(UTC), end.astimezone(UTC))
    return OccurrenceList(
        items=[service.occurrence_read(event, o, tz) for event, o in expanded[:limit]],
        time_zone=time_zone,
        truncated=len(expanded) > limit,
    )


@router.post("/freebusy", response_model=FreeBusyRead)
async def freebusy(body: FreeBusyQuery, session: SessionDep, principal: Reader) -> FreeBusyRead:
    """Busy periods of each user over [start, end) (at most 400 days): the occurrences of the opaque
    events of the calendars they own, merged where they touch or overlap; transparent events are free."""
    tz = service.zone(body.time_zone, "time_zone")
    start, end = service.time_range(body.start, body.end, prefix="")
    users = await service.freebusy(session, principal.org_id, body.users, start, end, tz)
    return FreeBusyRead(start=start.astimezone(tz), end=end.astimezone(tz), users=users)


# --- iCalendar ---


@router.post("/calendars/{calendar_id}/import", response_model=IcsImportRead, responses=OWNER)
async def import_ics(
    calendar_id: uuid.UUID, body: IcsImport, session: SessionDep, principal: Writer
) -> IcsImportRead:
    """Import a VCALENDAR: each VEVENT series (with its RECURRENCE-ID overrides) is created, or
    replaces the calendar's event of the same UID. All or nothing."""
    calendar = service.writable(await service.get_calendar(session, principal.org_id, calendar_id), principal)
    from coder.services.calendar import ics  # icalendar, loaded by the first import or export

    return await ics.import_ics(session, calendar, body.ics)


@router.get(
    "/calendars/{calendar_id}/export",
    response_class=Response,
    responses={
        200: {"content": {"text/calendar": {"schema": {"type": "string"}}}, "description": "RFC 5545"}
    },
)
async def export_ics(calendar_id: uuid.UUID, session: SessionDep, principal: Reader) -> Response:
    """The calendar as one `.ics` VCALENDAR (with the VTIMEZONEs its events use)."""
    calendar = await service.get_calendar(session, principal.org_id, calendar_id)
    found = (
        await session.scalars(
            scoped(Event, principal.org_id)
            .where(Event.calendar_id == calendar_id)
            .order_by(Event.start_at, Event.id)
        )
    ).all()
    from coder.services.calendar import ics

    body = ics.export(calendar, found)
    return Response(
        content=body,
        media_type="text/calendar",
        headers={"content-disposition": f'attachment; filename="{calendar_id}.ics"'},
    )
