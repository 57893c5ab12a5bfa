"""Usage events and meters: ingestion (idempotent per source and id) and aggregation queries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Numeric,
    and_,
    bindparam,
    case,
    cast,
    distinct,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from coder.services.usage.models import Event, Meter
from coder.services.usage.schemas import (
    EVENTS,
    Aggregation,
    Dimension,
    EventIn,
    IngestRead,
    MeterCreate,
    MeterQueryRead,
    MeterRow,
    WindowSize,
)
from coder.shared.errors import Conflict, InvalidField
from coder.shared.repository import OrgScoped, owned_by

WINDOWS = {
    WindowSize.MINUTE: timedelta(minutes=1),
    WindowSize.HOUR: timedelta(hours=1),
    WindowSize.DAY: timedelta(days=1),
}
# 7 days of minutes; the same number of hours or days is just as cheap to compute and to return.
MAX_WINDOWS = 7 * 24 * 60
MAX_QUERY_ROWS = 100_000
NUMERIC_TEXT = r"^\s*-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?\s*$"
INVALID_PARAMETER_VALUE = "22023"


def _now() -> datetime:
    return datetime.now(UTC)


# --- ingestion ---


# The events of a JSON document (`events`) for an org (`org_id`), next to their times (`times`: an
# array, sent binary: Python reads offsets up to 23:59, PostgreSQL up to 15:59 from text), those without
# a time at `now`, except those already stored; the dimensions (`Dimension`) are copied out of the data.
# ROWS FROM zips the document's records with the array. One statement whatever the batch size.
STORE = text("""
    INSERT INTO usage_event
        (org_id, source, event_id, type, subject, time, data, model, user_id, team_id, api_key_id, feature)
    SELECT :org_id, source, id, type, subject, coalesce(time, :now), coalesce(data, '{}'),
        data ->> 'model', data ->> 'user_id', data ->> 'team_id', data ->> 'api_key_id', data ->> 'feature'
    FROM ROWS FROM (
        jsonb_to_recordset(CAST(:events AS jsonb))
            AS (source text, id text, type text, subject text, data jsonb),
        unnest(CAST(:times AS timestamptz[]))
    ) AS incoming (source, id, type, subject, data, time)
    ON CONFLICT (org_id, source, event_id) DO NOTHING
""").bindparams(
    bindparam("times", type_=ARRAY(DateTime(timezone=True))), bindparam("now", type_=DateTime(timezone=True))
)


async def store_events(
    db: AsyncSession | AsyncConnection, org_id: str, events: Sequence[EventIn], document: str | None = None
) -> int:
    """Store the events not stored yet; returns how many were new.

    The batch goes as one JSON document that PostgreSQL unpacks with jsonb_to_recordset, taking the
    dimensions out of each event's data: a few parameters whatever the batch size, and no value
    encoded one at a time in Python. `document` is the events as JSON when the caller has them so
    (the request body they were validated from); otherwise pydantic serializes them in one call."""
    if not events:
        return 0
    parameters = {
        "events": document if document is not None else EVENTS.dump_json(list(events)).decode(),
        "times": [event.get("time") for event in events],
        "org_id": org_id,
        "now": _now(),
    }
    result = await db.execute(STORE, parameters)
    return result.rowcount  # type: ignore[attr-defined]  # a CursorResult: INSERT's own count


async def ingest(
    db: AsyncSession | AsyncConnection, org_id: str, events: Sequence[EventIn], document: str | None
) -> IngestRead:
    accepted = await store_events(db, org_id, events, document)
    return IngestRead(accepted=accepted, duplicates=len(events) - accepted)


# --- meters ---


async def create_meter(session: AsyncSession, org_id: str, body: MeterCreate) -> Meter:
    if body.aggregation is Aggregation.COUNT and body.value_property is not None:
        raise InvalidField("value_property", "a count meter counts events; it takes no value property")
    if body.aggregation is not Aggregation.COUNT and body.value_property is None:
        raise InvalidField("value_property", f"required for aggregation {body.aggregation.value}")
    meter = (
        await session.execute(
            insert(Meter)
            .values(
                org_id=org_id,
                slug=body.slug,
                name=body.name,
                description=body.description,
                event_type=body.event_type,
                aggregation=body.aggregation.value,
                value_property=body.value_property,
                group_by=list(dict.fromkeys(d.value for d in body.group_by)),
            )
            .on_conflict_do_nothing(index_elements=["org_id", "slug"])
            .returning(Meter)
        )
    ).scalar_one_or_none()
    if meter is None:
        raise Conflict(
            f"a meter {body.slug!r} already exists",
            slug="meter-exists",
            errors=[{"field": "slug", "message": "already used by another meter"}],
        )
    return meter


def _meters(session: AsyncSession, org_id: str) -> OrgScoped[Meter]:
    return OrgScoped(Meter, session, org_id, "meter")


async def get_meter(session: AsyncSession, org_id: str, slug: str) -> Meter:
    return await _meters(session, org_id).get(repr(slug), Meter.slug == slug)


async def delete_meter(session: AsyncSession, org_id: str, slug: str) -> None:
    await _meters(session, org_id).delete(repr(slug), Meter.slug == slug)


def _value_of(meter: Meter) -> ColumnElement[Any]:
    """The meter's aggregate over its value property. Values that are neither JSON numbers nor numeric
    strings count as absent rather than failing the query."""
    aggregation = Aggregation(meter.aggregation)
    if aggregation is Aggregation.COUNT:
        return func.count()
    assert meter.value_property is not None
    path = meter.value_property.split(".")
    raw = Event.data[path[0]] if len(path) == 1 else Event.data[tuple(path)]
    text = raw.astext
    if aggregation is Aggregation.UNIQUE_COUNT:
        return func.count(distinct(text))
    kind = func.jsonb_typeof(raw)
    number = case(
        (kind == "number", cast(text, Numeric)),
        (and_(kind == "string", text.regexp_match(NUMERIC_TEXT)), cast(text, Numeric)),
        else_=None,
    )
    return func.sum(number) if aggregation is Aggregation.SUM else func.max(number)


def _time_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidField("query.window_time_zone", f"unknown time zone {name!r}") from None


def _window_end(start: datetime, size: WindowSize, zone: ZoneInfo) -> datetime:
    if size is WindowSize.DAY:
        # A day in the requested zone: 23 or 25 hours across a DST change.
        local = start.astimezone(zone)
        return datetime.combine(local.date() + timedelta(days=1), time(), tzinfo=zone).astimezone(UTC)
    return start + WINDOWS[size]


async def query_meter(
    session: AsyncSession,
    org_id: str,
    slug: str,
    *,
    start: datetime | None,
    end: datetime | None,
    window_size: WindowSize | None,
    time_zone: str,
    group_by: Sequence[Dimension],
    filters: dict[Dimension, list[str]],
) -> MeterQueryRead:
    meter = await get_meter(session, org_id, slug)
    end = end or _now()
    if start is not None and start >= end:
        raise InvalidField("query.from", "must be before `to`")
    if window_size is not None:
        if start is None:
            raise InvalidField("query.from", "required with window_size")
        if (end - start) / WINDOWS[window_size] > MAX_WINDOWS:
            raise InvalidField(
                "query.window_size",
                f"more than {MAX_WINDOWS} {window_size.value} windows "
                "between from and to: use a larger window or a shorter range",
            )
    allowed = set(meter.group_by)
    for dimension in group_by:
        if dimension.value not in allowed:
            raise InvalidField(
                "query.group_by",
                f"meter {slug!r} cannot be grouped by {dimension.value}; "
                f"allowed: {', '.join(meter.group_by) or 'none'}",
            )
    zone = _time_zone(time_zone)
    dimensions = list(dict.fromkeys(group_by))

    conditions = [owned_by(Event, org_id), Event.type == meter.event_type, Event.time < end]
    if start is not None:
        conditions.append(Event.time >= start)
    for dimension, values in filters.items():
        conditions.append(getattr(Event, dimension.value).in_(values))
    keys: list[ColumnElement[Any]] = []
    if window_size is not None:
        # The same expression object in SELECT and GROUP BY binds its parameters once.
        keys.append(func.date_trunc(window_size.value.lower(), Event.time, zone.key).label("window_start"))
    keys += [getattr(Event, d.value).label(d.value) for d in dimensions]
    query = (
        select(*keys, _value_of(meter).label("value"))
        .where(*conditions)
        .group_by(*keys)
        .order_by(*keys)
        .limit(MAX_QUERY_ROWS + 1)
    )
    try:
        rows = (await session.execute(query)).all()
    except DBAPIError as exc:
        # Python and PostgreSQL each carry a time zone database; a name only Python knows ends here.
        if getattr(exc.orig, "sqlstate", None) == INVALID_PARAMETER_VALUE:
            raise InvalidField("query.window_time_zone", f"unknown time zone {time_zone!r}") from None
        raise
    if len(rows) > MAX_QUERY_ROWS:
        raise InvalidField(
            "query.window_size",
            f"the result has more than {MAX_QUERY_ROWS} rows: use a "
            "larger window, fewer group_by dimensions or a shorter range",
        )
    data = []
    for row in rows:
        if window_size is not None:
            window_start, window_end = row.window_start, _window_end(row.window_start, window_size, zone)
        else:
            window_start, window_end = start, end
        data.append(
            MeterRow(
                window_start=window_start,
                window_end=window_end,
                value=float(row.value or 0),
                group={d.value: getattr(row, d.value) for d in dimensions},
            )
        )
    return MeterQueryRead(
        meter=meter.slug,
        aggregation=Aggregation(meter.aggregation),
        from_=start,
        to=end,
        window_size=window_size,
        window_time_zone=zone.key,
        data=data,
    )
