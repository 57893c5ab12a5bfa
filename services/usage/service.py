"""The usage domain: every function is scoped by an org id and only flushes; the caller commits.

Budgets keep two books: Postgres (`usage_budget_spend`) is the ledger, Redis holds the active
reservations and a cache of the ledger's totals (budgets.py), so a check never waits on Postgres locks.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError
from redis.asyncio import Redis
from sqlalchemy import (
    ARRAY,
    ColumnElement,
    DateTime,
    Numeric,
    String,
    Text,
    and_,
    case,
    cast,
    distinct,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.usage import budgets as holds
from coder.services.usage.budgets import BudgetKeys, Charge, Check, Held, from_units, to_units
from coder.services.usage.models import Budget, BudgetSpend, Event, Meter, Reservation, events
from coder.services.usage.schemas import (
    Aggregation,
    AiRequestCompleted,
    BudgetCreate,
    BudgetRead,
    BudgetUpdate,
    Dimension,
    EventData,
    EventIn,
    IngestRead,
    MeterCreate,
    MeterQueryRead,
    MeterRow,
    Metric,
    Period,
    ReservationCreate,
    ReservationRead,
    ReservationStatus,
    Scope,
    WindowSize,
)
from coder.shared.errors import Conflict, InvalidField, NotFound, Problem
from coder.shared.events import CloudEvent, EventContext

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WINDOWS = {
    WindowSize.MINUTE: timedelta(minutes=1),
    WindowSize.HOUR: timedelta(hours=1),
    WindowSize.DAY: timedelta(days=1),
}
# 7 days of minutes; the same number of hours or days is just as cheap to compute and to return.
MAX_WINDOWS = 7 * 24 * 60
MAX_QUERY_ROWS = 100_000
NUMERIC_TEXT = r"^\s*-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?\s*$"
MICRO = Decimal("0.000001")
INVALID_PARAMETER_VALUE = "22023"
DIMENSIONS = tuple(d.value for d in Dimension)


class UsageProblem(Problem):
    slug, title = "usage", "Usage error"


class BudgetExceeded(UsageProblem):
    status, slug, title = 402, "budget-exceeded", "Budget exceeded"


class ReservationClosed(UsageProblem):
    status, slug, title = 409, "reservation-closed", "Reservation already closed"


def _now() -> datetime:
    return datetime.now(UTC)


# --- ingestion ---


def _event_columns(events_in: Sequence[EventIn], now: datetime) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {
        "source": [e.source for e in events_in],
        "event_id": [e.id for e in events_in],
        "type": [e.type for e in events_in],
        "subject": [e.subject for e in events_in],
        "time": [e.time or now for e in events_in],
        "data": [e.data.model_dump_json(exclude_unset=True) for e in events_in],
    }
    for name in DIMENSIONS:
        columns[name] = [getattr(e.data, name) for e in events_in]
    return columns


async def store_events(session: AsyncSession, org_id: str, events_in: Sequence[EventIn]) -> int:
    """Store the events not stored yet; returns how many were new.

    One INSERT ... SELECT FROM unnest(arrays): its text is the same for any batch size (prepared once)
    and it sends one array per column instead of one parameter per value."""
    if not events_in:
        return 0
    columns = _event_columns(events_in, _now())
    types: dict[str, ARRAY[Any]] = {"time": ARRAY(DateTime(timezone=True)), "data": ARRAY(Text)}
    arrays = [literal(values, types.get(name, ARRAY(String))) for name, values in columns.items()]
    rows = func.unnest(*arrays).table_valued(*columns).render_derived(name="incoming")
    source = select(
        literal(org_id, String),
        *(cast(rows.c[name], JSONB) if name == "data" else rows.c[name] for name in columns),
    )
    statement = (
        insert(Event)
        .from_select(["org_id", *columns], source)
        .on_conflict_do_nothing(index_elements=["org_id", "source", "event_id"])
        .returning(Event.event_id)
    )
    return len((await session.execute(statement)).all())


async def ingest(session: AsyncSession, org_id: str, events_in: Sequence[EventIn]) -> IngestRead:
    accepted = await store_events(session, org_id, events_in)
    return IngestRead(accepted=accepted, duplicates=len(events_in) - accepted)


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


async def get_meter(session: AsyncSession, org_id: str, slug: str) -> Meter:
    meter = (
        await session.execute(select(Meter).where(Meter.org_id == org_id, Meter.slug == slug))
    ).scalar_one_or_none()
    if meter is None:
        raise NotFound(f"no meter {slug!r}")
    return meter


async def delete_meter(session: AsyncSession, org_id: str, slug: str) -> None:
    await session.delete(await get_meter(session, org_id, slug))
    await session.flush()


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

    conditions = [Event.org_id == org_id, Event.type == meter.event_type, Event.time < end]
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


# --- budgets ---


def period_bounds(period: Period, now: datetime) -> tuple[datetime, datetime | None]:
    """The current period in UTC: [start, end); a total budget has one period that never ends."""
    if period is Period.TOTAL:
        return EPOCH, None
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period is Period.DAY:
        return day, day + timedelta(days=1)
    month = day.replace(day=1)
    return month, (month + timedelta(days=32)).replace(day=1)


def _units(metric: Metric, amount: Decimal, field: str) -> int:
    if metric is Metric.TOKENS and amount != amount.to_integral_value():
        raise InvalidField(field, "tokens are counted in whole numbers")
    units = to_units(metric, amount)
    if units > holds.MAX_UNITS:
        raise InvalidField(field, f"at most {from_units(metric, holds.MAX_UNITS)} for {metric.value}")
    return units


def _keys(budget: Budget) -> BudgetKeys:
    return BudgetKeys(budget.org_id, budget.id)


async def _ledger(session: AsyncSession, wanted: Sequence[tuple[uuid.UUID, datetime]]) -> list[Decimal]:
    """The ledger's spend of each (budget, period start); 0 where nothing was spent yet."""
    if not wanted:
        return []
    rows = (
        await session.execute(
            select(BudgetSpend.budget_id, BudgetSpend.period_start, BudgetSpend.spent).where(
                BudgetSpend.budget_id.in_({b for b, _ in wanted}),
                BudgetSpend.period_start.in_({p for _, p in wanted}),
            )
        )
    ).all()
    spent = {(row.budget_id, row.period_start): row.spent for row in rows}
    return [spent.get(key, Decimal(0)) for key in wanted]


async def budget_reads(session: AsyncSession, cache: Redis, budgets: Sequence[Budget]) -> list[BudgetRead]:
    """Budgets with the current period's settled spend (ledger) and active holds (Redis)."""
    now = _now()
    periods = [period_bounds(Period(b.period), now) for b in budgets]
    spent = await _ledger(session, [(b.id, start) for b, (start, _) in zip(budgets, periods, strict=True)])
    held = await holds.reserved(cache, [_keys(b) for b in budgets])
    reads = []
    for budget, (start, end), spent_now, held_units in zip(budgets, periods, spent, held, strict=True):
        reserved = from_units(Metric(budget.metric), held_units)
        reads.append(
            BudgetRead(
                id=budget.id,
                name=budget.name,
                scope=Scope(budget.scope),
                scope_id=budget.scope_id,
                metric=Metric(budget.metric),
                limit=budget.limit,
                period=Period(budget.period),
                period_start=start,
                period_end=end,
                spent=spent_now,
                reserved=reserved,
                remaining=max(Decimal(0), budget.limit - spent_now - reserved),
                created_at=budget.created_at,
                updated_at=budget.updated_at,
            )
        )
    return reads


async def create_budget(session: AsyncSession, org_id: str, body: BudgetCreate) -> Budget:
    if body.scope is Scope.ORG and body.scope_id is not None:
        raise InvalidField("scope_id", "an org budget applies to the whole organization: leave it null")
    if body.scope is not Scope.ORG and body.scope_id is None:
        raise InvalidField("scope_id", f"required for scope {body.scope.value}")
    _units(body.metric, body.limit, "limit")
    budget = Budget(
        org_id=org_id,
        name=body.name,
        scope=body.scope.value,
        scope_id=body.scope_id,
        metric=body.metric.value,
        limit=body.limit,
        period=body.period.value,
    )
    session.add(budget)
    await session.flush()
    await session.refresh(budget)
    return budget


async def get_budget(
    session: AsyncSession, org_id: str, budget_id: uuid.UUID, *, lock: bool = False
) -> Budget:
    query = select(Budget).where(Budget.org_id == org_id, Budget.id == budget_id)
    if lock:
        query = query.with_for_update()
    budget = (await session.execute(query)).scalar_one_or_none()
    if budget is None:
        raise NotFound(f"no budget {budget_id}")
    return budget


async def update_budget(
    session: AsyncSession, org_id: str, budget_id: uuid.UUID, body: BudgetUpdate
) -> Budget:
    budget = await get_budget(session, org_id, budget_id, lock=True)
    if body.name is not None:
        budget.name = body.name
    if body.limit is not None:
        _units(Metric(budget.metric), body.limit, "limit")
        budget.limit = body.limit
    await session.flush()
    await session.refresh(budget)
    return budget


async def delete_budget(session: AsyncSession, org_id: str, budget_id: uuid.UUID) -> None:
    # Its Redis keys are left to their TTLs; nothing reads them once the budget is gone.
    await session.delete(await get_budget(session, org_id, budget_id))
    await session.flush()


async def _applicable(
    session: AsyncSession,
    org_id: str,
    metric: Metric,
    user_id: str | None,
    team_id: str | None,
    api_key_id: str | None,
) -> list[Budget]:
    """The org's budgets of `metric` covering this spend: the org's own, the team's, the user's, the key's."""
    covers = [Budget.scope == Scope.ORG.value]
    for scope, scope_id in ((Scope.TEAM, team_id), (Scope.USER, user_id), (Scope.API_KEY, api_key_id)):
        if scope_id is not None:
            covers.append(and_(Budget.scope == scope.value, Budget.scope_id == scope_id))
    # Sorted by id: every transaction upserts spend rows in one order, so two never deadlock.
    return list(
        (
            await session.execute(
                select(Budget)
                .where(Budget.org_id == org_id, Budget.metric == metric.value, or_(*covers))
                .order_by(Budget.id)
            )
        )
        .scalars()
        .all()
    )


async def _charge_ledger(
    session: AsyncSession, metric: Metric, budgets: Sequence[Budget], amount: Decimal, now: datetime
) -> list[Charge]:
    """Add `amount` to each budget's spend for the current period; returns the charges for Redis."""
    if amount == 0 or not budgets:
        return []
    values = [
        {"budget_id": b.id, "period_start": period_bounds(Period(b.period), now)[0], "spent": amount}
        for b in budgets
    ]
    upsert = insert(BudgetSpend).values(values)
    statement = upsert.on_conflict_do_update(
        index_elements=["budget_id", "period_start"],
        set_={"spent": BudgetSpend.spent + upsert.excluded.spent, "updated_at": func.now()},
    ).returning(BudgetSpend.budget_id, BudgetSpend.period_start, BudgetSpend.spent)
    totals = {row.budget_id: (row.period_start, row.spent) for row in await session.execute(statement)}
    units = to_units(metric, amount)
    return [Charge(_keys(b), totals[b.id][0], units, to_units(metric, totals[b.id][1])) for b in budgets]


def _exact(metric: Metric, amount: Decimal) -> Decimal:
    return amount.quantize(Decimal(1) if metric is Metric.TOKENS else MICRO, ROUND_HALF_UP)


async def charge(
    session: AsyncSession,
    cache: Redis,
    org_id: str,
    metric: Metric,
    amount: Decimal,
    *,
    user_id: str | None,
    team_id: str | None,
    api_key_id: str | None,
) -> None:
    """Spend that was never reserved: it counts against every budget that covers it."""
    budgets = await _applicable(session, org_id, metric, user_id, team_id, api_key_id)
    charges = await _charge_ledger(session, metric, budgets, _exact(metric, amount), _now())
    await holds.settle(cache, None, [], charges)


# --- reservations ---


def reservation_read(reservation: Reservation, now: datetime | None = None) -> ReservationRead:
    status = ReservationStatus(reservation.status)
    if status is ReservationStatus.RESERVED and reservation.expires_at <= (now or _now()):
        status = ReservationStatus.EXPIRED
    return ReservationRead(
        reservation_id=reservation.id,
        status=status,
        metric=Metric(reservation.metric),
        amount=reservation.amount,
        actual=reservation.actual,
        user_id=reservation.user_id,
        team_id=reservation.team_id,
        api_key_id=reservation.api_key_id,
        budget_ids=[uuid.UUID(b) for b in reservation.budget_ids],
        created_at=reservation.created_at,
        expires_at=reservation.expires_at,
        closed_at=reservation.closed_at,
    )


async def reserve(
    session: AsyncSession, cache: Redis, org_id: str, body: ReservationCreate
) -> ReservationRead | BudgetExceeded:
    """Hold `amount` against every budget that covers the caller, or refuse naming the budget it would
    overrun. A refusal is returned, not raised: the `usage.budget.exceeded` event must commit."""
    metric = body.metric
    amount = _units(metric, body.amount, "amount")
    now = _now()
    budgets = await _applicable(session, org_id, metric, body.user_id, body.team_id, body.api_key_id)
    reservation_id = uuid.uuid4()
    expires_at = now + timedelta(seconds=body.ttl_seconds)
    if budgets:
        checks = [
            Check(_keys(b), period_bounds(Period(b.period), now)[0], to_units(metric, b.limit))
            for b in budgets
        ]

        async def load_spent(indexes: Sequence[int]) -> list[int]:
            spent = await _ledger(session, [(budgets[i].id, checks[i].period_start) for i in indexes])
            return [to_units(metric, s) for s in spent]

        outcome = await holds.reserve(cache, reservation_id, checks, amount, body.ttl_seconds, load_spent)
        if not isinstance(outcome, Held):
            return await _refuse(
                session,
                org_id,
                body,
                budgets[outcome.index],
                from_units(metric, outcome.spent),
                from_units(metric, outcome.reserved),
                now,
            )
        expires_at = outcome.expires_at
    # Should this transaction fail to commit, the holds just placed lapse at their expiry: the error
    # is on the safe side (too little room for a while, never too much).
    reservation = Reservation(
        id=reservation_id,
        org_id=org_id,
        metric=metric.value,
        amount=body.amount,
        user_id=body.user_id,
        team_id=body.team_id,
        api_key_id=body.api_key_id,
        budget_ids=[str(b.id) for b in budgets],
        status=ReservationStatus.RESERVED.value,
        expires_at=expires_at,
    )
    session.add(reservation)
    await session.flush()
    await session.refresh(reservation)
    return reservation_read(reservation, now)


async def _refuse(
    session: AsyncSession,
    org_id: str,
    body: ReservationCreate,
    budget: Budget,
    spent: Decimal,
    reserved: Decimal,
    now: datetime,
) -> BudgetExceeded:
    start, _ = period_bounds(Period(budget.period), now)
    details: dict[str, Any] = {
        "id": str(budget.id),
        "name": budget.name,
        "scope": budget.scope,
        "scope_id": budget.scope_id,
        "metric": budget.metric,
        "period": budget.period,
        "period_start": start.isoformat(),
        "limit": float(budget.limit),
        "spent": float(spent),
        "reserved": float(reserved),
        "requested": float(body.amount),
    }
    await events.publish(
        session,
        "usage.budget.exceeded",
        {
            **details,
            "user_id": body.user_id,
            "team_id": body.team_id,
            "api_key_id": body.api_key_id,
        },
        org_id=org_id,
        subject=str(budget.id),
    )
    scope = budget.scope if budget.scope_id is None else f"{budget.scope} {budget.scope_id}"
    return BudgetExceeded(
        f"budget {budget.name!r} ({scope}) would be exceeded: limit {details['limit']}, spent "
        f"{details['spent']}, reserved {details['reserved']}, requested {details['requested']}",
        budget=details,
    )


async def _find_reservation(
    session: AsyncSession, org_id: str, reservation_id: uuid.UUID
) -> Reservation | None:
    return (
        await session.execute(
            select(Reservation)
            .where(Reservation.org_id == org_id, Reservation.id == reservation_id)
            .with_for_update()
        )
    ).scalar_one_or_none()


async def get_reservation(session: AsyncSession, org_id: str, reservation_id: uuid.UUID) -> Reservation:
    reservation = (
        await session.execute(
            select(Reservation).where(Reservation.org_id == org_id, Reservation.id == reservation_id)
        )
    ).scalar_one_or_none()
    if reservation is None:
        raise NotFound(f"no reservation {reservation_id}")
    return reservation


async def _locked_reservation(session: AsyncSession, org_id: str, reservation_id: uuid.UUID) -> Reservation:
    # Row lock: concurrent settles and releases of one reservation take turns, so only one acts.
    reservation = await _find_reservation(session, org_id, reservation_id)
    if reservation is None:
        raise NotFound(f"no reservation {reservation_id}")
    return reservation


async def _settle(session: AsyncSession, cache: Redis, reservation: Reservation, actual: Decimal) -> None:
    metric = Metric(reservation.metric)
    actual = _exact(metric, actual)
    now = _now()
    budgets = await _applicable(
        session, reservation.org_id, metric, reservation.user_id, reservation.team_id, reservation.api_key_id
    )
    charges = await _charge_ledger(session, metric, budgets, actual, now)
    release = [BudgetKeys(reservation.org_id, uuid.UUID(b)) for b in reservation.budget_ids]
    await holds.settle(cache, reservation.id, release, charges)
    reservation.status = ReservationStatus.SETTLED.value
    reservation.actual = actual
    reservation.closed_at = now
    await session.flush()


async def settle(
    session: AsyncSession, cache: Redis, org_id: str, reservation_id: uuid.UUID, actual: Decimal
) -> ReservationRead:
    """Release the hold and record `actual` as spend. Settling again returns the first result."""
    reservation = await _locked_reservation(session, org_id, reservation_id)
    if reservation.status == ReservationStatus.RELEASED.value:
        raise ReservationClosed(
            f"reservation {reservation_id} was released; it cannot be settled",
            status_now=ReservationStatus.RELEASED.value,
        )
    if reservation.status == ReservationStatus.RESERVED.value:
        _units(Metric(reservation.metric), actual, "actual")
        await _settle(session, cache, reservation, actual)
    return reservation_read(reservation)


async def release(session: AsyncSession, cache: Redis, org_id: str, reservation_id: uuid.UUID) -> None:
    """Give the held amount back without spending it. Releasing again changes nothing."""
    reservation = await _locked_reservation(session, org_id, reservation_id)
    if reservation.status == ReservationStatus.SETTLED.value:
        raise ReservationClosed(
            f"reservation {reservation_id} was settled; it cannot be released",
            status_now=ReservationStatus.SETTLED.value,
        )
    if reservation.status == ReservationStatus.RESERVED.value:
        keys = [BudgetKeys(org_id, uuid.UUID(b)) for b in reservation.budget_ids]
        await holds.settle(cache, reservation.id, keys, [])
        reservation.status = ReservationStatus.RELEASED.value
        reservation.closed_at = _now()
        await session.flush()


# --- events from the bus ---


async def on_ai_request_completed(event: CloudEvent, context: EventContext) -> None:
    """Store the request as a usage event and charge its cost and tokens to the budgets: through its
    reservation when it names one that is still open, directly otherwise. The inbox makes this run
    once per event id; a malformed event raises and ends in the dead-letter queue."""
    session, cache = context.session, context.cache
    org_id = event.orgid
    if not org_id:
        raise ValueError(f"event {event.id} has no orgid: it cannot be attributed to an organization")
    try:
        usage = AiRequestCompleted.model_validate(event.data)
        stored = EventIn(
            id=event.id,
            source=event.source,
            type=event.type,
            subject=event.subject,
            time=event.time if event.time.tzinfo else event.time.replace(tzinfo=UTC),
            data=EventData.model_validate(event.data),
        )
    except ValidationError as exc:
        raise ValueError(f"event {event.id} has malformed data: {exc}") from None
    await store_events(session, org_id, [stored])
    assert cache is not None, "usage needs redis"
    reservation = None
    if usage.reservation_id is not None:
        reservation = await _find_reservation(session, org_id, usage.reservation_id)
        if reservation is None:
            log.warning(
                "ai.request.completed names an unknown reservation; charging directly",
                extra={"event_id": event.id, "reservation_id": str(usage.reservation_id)},
            )
    tokens = Decimal(usage.prompt_tokens + usage.completion_tokens)
    spend = {Metric.COST_USD: usage.cost_usd, Metric.TOKENS: tokens}
    for metric, amount in spend.items():
        if reservation is not None and reservation.metric == metric.value:
            if reservation.status == ReservationStatus.RESERVED.value:
                await _settle(session, cache, reservation, amount)
                continue
            if reservation.status == ReservationStatus.SETTLED.value:
                continue  # settled over HTTP already: this spend is counted
        await charge(
            session,
            cache,
            org_id,
            metric,
            amount,
            user_id=usage.user_id,
            team_id=usage.team_id,
            api_key_id=usage.api_key_id,
        )
