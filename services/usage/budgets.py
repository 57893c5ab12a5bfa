"""Budgets and their spend. Postgres (`usage_budget_spend`) is the ledger; Redis holds the active
reservations and a cache of the ledger's totals (holds.py), so a check never waits on Postgres locks.
Every function only flushes; the caller commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, NamedTuple

from prometheus_client import Gauge
from redis.asyncio import Redis
from sqlalchemy import String, bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from coder.services.usage import holds
from coder.services.usage.holds import BudgetKeys, Charge, from_units, to_units
from coder.services.usage.models import Budget, BudgetSpend
from coder.services.usage.schemas import (
    BudgetCreate,
    BudgetRead,
    BudgetUpdate,
    Metric,
    Period,
    Scope,
)
from coder.shared.db import transaction
from coder.shared.errors import InvalidField
from coder.shared.repository import OrgScoped, owned_by_sql

if TYPE_CHECKING:
    from coder.shared.runtime import Runtime

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICRO = Decimal("0.000001")


def _now() -> datetime:
    return datetime.now(UTC)


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


def checked_units(metric: Metric, amount: Decimal, field: str) -> int:
    if metric is Metric.TOKENS and amount != amount.to_integral_value():
        raise InvalidField(field, "tokens are counted in whole numbers")
    units = to_units(metric, amount)
    if units > holds.MAX_UNITS:
        raise InvalidField(field, f"at most {from_units(metric, holds.MAX_UNITS)} for {metric.value}")
    return units


class Limit(NamedTuple):
    """A budget as a hold or a charge reads it: a row, not an ORM object (no identity map, no change
    tracking, for what is only read)."""

    id: uuid.UUID
    org_id: str
    name: str
    scope: str
    scope_id: str | None
    metric: str
    limit: Decimal
    period: str


Spender = tuple[str, str | None, str | None]  # user, team, API key


def keys_of(budget: Budget | Limit) -> BudgetKeys:
    return BudgetKeys(budget.org_id, budget.id)


async def ledger(session: AsyncSession, wanted: Sequence[tuple[uuid.UUID, datetime]]) -> list[Decimal]:
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
    spent = await ledger(session, [(b.id, start) for b, (start, _) in zip(budgets, periods, strict=True)])
    held = await holds.reserved(cache, [keys_of(b) for b in budgets])
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


# One series per budget (its scope and metric name what it caps), read from the ledger and Redis when
# scraped: as many series as budgets, never one per user or request.
BUDGET_LABELS = ["budget", "org", "scope", "metric", "period"]
BUDGET_SPENT = Gauge("usage_budget_spent", "A budget's settled spend in its current period", BUDGET_LABELS)
BUDGET_REMAINING = Gauge(
    "usage_budget_remaining",
    "What a budget leaves in its current period (limit - spent - reserved, >= 0)",
    BUDGET_LABELS,
)


async def export_budgets(runtime: Runtime) -> None:
    """Every budget's spend and remaining as gauges (usage's `metrics` hook, run at scrape time)."""
    assert runtime.cache is not None
    async with transaction(runtime.sessions) as session:
        budgets = list((await session.execute(select(Budget).order_by(Budget.id))).scalars().all())
        reads = await budget_reads(session, runtime.cache, budgets)
    BUDGET_SPENT.clear()
    BUDGET_REMAINING.clear()
    for budget, read in zip(budgets, reads, strict=True):
        labels = (str(budget.id), budget.org_id, budget.scope, budget.metric, budget.period)
        BUDGET_SPENT.labels(*labels).set(float(read.spent))
        BUDGET_REMAINING.labels(*labels).set(float(read.remaining))


async def create_budget(session: AsyncSession, org_id: str, body: BudgetCreate) -> Budget:
    if body.scope is Scope.ORG and body.scope_id is not None:
        raise InvalidField("scope_id", "an org budget applies to the whole organization: leave it null")
    if body.scope is not Scope.ORG and body.scope_id is None:
        raise InvalidField("scope_id", f"required for scope {body.scope.value}")
    checked_units(body.metric, body.limit, "limit")
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


def _budgets(session: AsyncSession, org_id: str) -> OrgScoped[Budget]:
    return OrgScoped(Budget, session, org_id, "budget")


async def get_budget(
    session: AsyncSession, org_id: str, budget_id: uuid.UUID, *, lock: bool = False
) -> Budget:
    return await _budgets(session, org_id).get(budget_id, Budget.id == budget_id, lock=lock)


async def update_budget(
    session: AsyncSession, org_id: str, budget_id: uuid.UUID, body: BudgetUpdate
) -> Budget:
    budget = await get_budget(session, org_id, budget_id, lock=True)
    if body.name is not None:
        budget.name = body.name
    if body.limit is not None:
        checked_units(Metric(budget.metric), body.limit, "limit")
        budget.limit = body.limit
    await session.flush()
    await session.refresh(budget)
    return budget


async def delete_budget(session: AsyncSession, org_id: str, budget_id: uuid.UUID) -> None:
    # Its Redis keys are left to their TTLs; nothing reads them once the budget is gone.
    await _budgets(session, org_id).delete(budget_id, Budget.id == budget_id)


# The org's budgets covering any of the spenders whose teams, users and API keys are the arrays: one
# statement text whatever their number (compiled once, prepared once per connection). Sorted by id:
# every transaction upserts spend rows in one order, so two never deadlock.
COVERING = (
    text(f"""
    SELECT id, org_id, name, scope, scope_id, metric, "limit", period FROM usage_budget
    WHERE {owned_by_sql("org_id")} AND (
        scope = '{Scope.ORG.value}'
        OR scope = '{Scope.TEAM.value}' AND scope_id = ANY(:teams)
        OR scope = '{Scope.USER.value}' AND scope_id = ANY(:users)
        OR scope = '{Scope.API_KEY.value}' AND scope_id = ANY(:api_keys))
    ORDER BY id
""")  # noqa: S608  (only constants are interpolated)
    .bindparams(*(bindparam(name, type_=ARRAY(String)) for name in ("teams", "users", "api_keys")))
    .columns(*(Budget.__table__.c[name] for name in Limit._fields))
)


async def covering(
    db: AsyncSession | AsyncConnection, org_id: str, spenders: Sequence[Spender]
) -> dict[Spender, list[Limit]]:
    """Each spender's budgets (of every metric): the org's own, its team's, its user's, its key's.
    One statement for them all."""
    users, teams, keys = ({s[i] for s in spenders if s[i] is not None} for i in range(3))
    parameters = {"org_id": org_id, "users": list(users), "teams": list(teams), "api_keys": list(keys)}
    found = [Limit._make(row) for row in await db.execute(COVERING, parameters)]
    by_spender = {}
    for spender in spenders:
        user_id, team_id, api_key_id = spender
        wanted = {
            (Scope.ORG.value, None),
            (Scope.USER.value, user_id),
            (Scope.TEAM.value, team_id),
            (Scope.API_KEY.value, api_key_id),
        }
        by_spender[spender] = [b for b in found if (b.scope, b.scope_id) in wanted]
    return by_spender


async def applicable(
    db: AsyncSession | AsyncConnection,
    org_id: str,
    metric: Metric | None,
    user_id: str,
    team_id: str | None,
    api_key_id: str | None,
) -> list[Limit]:
    """The org's budgets of `metric` (None: of every metric) covering this spend: the org's own, the
    team's, the user's, the key's."""
    spender = (user_id, team_id, api_key_id)
    found = (await covering(db, org_id, [spender]))[spender]
    return found if metric is None else [b for b in found if b.metric == metric.value]


# Adds each amount to its budget's spend in a period, the rows as one array per column: one statement
# text whatever the number of budgets (compiled once; a VALUES list is another text for every count).
_CHARGE = text("""
    INSERT INTO usage_budget_spend (budget_id, period_start, spent)
    SELECT * FROM unnest(
        CAST(:budgets AS uuid[]), CAST(:periods AS timestamptz[]), CAST(:amounts AS numeric[]))
    ON CONFLICT (budget_id, period_start)
    DO UPDATE SET spent = usage_budget_spend.spent + excluded.spent, updated_at = now()
    RETURNING budget_id, spent
""").columns(BudgetSpend.__table__.c.budget_id, BudgetSpend.__table__.c.spent)


async def charge_ledger(
    session: AsyncSession, metric: Metric, budgets: Sequence[Limit], amount: Decimal, now: datetime
) -> list[Charge]:
    """Add `amount` to each budget's spend for the current period; returns the charges for Redis."""
    return await charge_ledgers(session, [(b, amount) for b in budgets], now)


async def charge_ledgers(
    session: AsyncSession, amounts: Sequence[tuple[Limit, Decimal]], now: datetime
) -> list[Charge]:
    """Add each amount to its budget's spend for the current period (in the budget's metric; one
    statement for all, a budget at most once, in the order of their ids); returns the charges for
    Redis."""
    amounts = sorted(((b, amount) for b, amount in amounts if amount != 0), key=lambda c: c[0].id)
    if not amounts:
        return []
    periods = [period_bounds(Period(b.period), now)[0] for b, _ in amounts]
    parameters = {
        "budgets": [b.id for b, _ in amounts],
        "periods": periods,
        "amounts": [amount for _, amount in amounts],
    }
    totals = {row.budget_id: row.spent for row in await session.execute(_CHARGE, parameters)}
    return [
        Charge(
            keys_of(b), period, to_units(Metric(b.metric), amount), to_units(Metric(b.metric), totals[b.id])
        )
        for (b, amount), period in zip(amounts, periods, strict=True)
    ]


def exact(metric: Metric, amount: Decimal) -> Decimal:
    return amount.quantize(Decimal(1) if metric is Metric.TOKENS else MICRO, ROUND_HALF_UP)


async def charge(
    session: AsyncSession, cache: Redis, metric: Metric, budgets: Sequence[Limit], amount: Decimal
) -> None:
    """Spend that was never reserved: it counts against every budget of `budgets` (those that cover it)."""
    charges = await charge_ledger(session, metric, budgets, exact(metric, amount), _now())
    await holds.settle(cache, None, [], charges)
