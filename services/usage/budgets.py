"""Budgets and their spend. Postgres (`usage_budget_spend`) is the ledger; Redis holds the active
reservations and a cache of the ledger's totals (holds.py), so a check never waits on Postgres locks.
Every function only flushes; the caller commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, cast

from prometheus_client import Gauge
from redis.asyncio import Redis
from sqlalchemy import (
    Table,
    and_,
    func,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

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
from coder.shared.repository import OrgScoped, scoped

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


def keys_of(budget: Budget) -> BudgetKeys:
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


async def applicable(
    session: AsyncSession,
    org_id: str,
    metric: Metric | None,
    user_id: str | None,
    team_id: str | None,
    api_key_id: str | None,
) -> list[Budget]:
    """The org's budgets of `metric` (None: of every metric) covering this spend: the org's own, the
    team's, the user's, the key's."""
    covers = [Budget.scope == Scope.ORG.value]
    for scope, scope_id in ((Scope.TEAM, team_id), (Scope.USER, user_id), (Scope.API_KEY, api_key_id)):
        if scope_id is not None:
            covers.append(and_(Budget.scope == scope.value, Budget.scope_id == scope_id))
    query = scoped(Budget, org_id).where(or_(*covers))
    if metric is not None:
        query = query.where(Budget.metric == metric.value)
    # Sorted by id: every transaction upserts spend rows in one order, so two never deadlock.
    return list((await session.execute(query.order_by(Budget.id))).scalars().all())


_SPEND = insert(cast(Table, BudgetSpend.__table__))
# The rows are the statement's parameters, not its text (as `values([...])` would make them): compiled
# once, whatever the number of budgets.
_CHARGE = _SPEND.on_conflict_do_update(
    index_elements=["budget_id", "period_start"],
    set_={"spent": _SPEND.table.c.spent + _SPEND.excluded.spent, "updated_at": func.now()},
).returning(_SPEND.table.c.budget_id, _SPEND.table.c.period_start, _SPEND.table.c.spent)


async def charge_ledger(
    session: AsyncSession, metric: Metric, budgets: Sequence[Budget], amount: Decimal, now: datetime
) -> list[Charge]:
    """Add `amount` to each budget's spend for the current period; returns the charges for Redis."""
    return await charge_ledgers(session, [(b, amount) for b in budgets], now)


async def charge_ledgers(
    session: AsyncSession, amounts: Sequence[tuple[Budget, Decimal]], now: datetime
) -> list[Charge]:
    """Add each amount to its budget's spend for the current period (in the budget's metric; one
    statement for all, a budget at most once); returns the charges for Redis."""
    amounts = [(b, amount) for b, amount in amounts if amount != 0]
    if not amounts:
        return []
    values = [
        {"budget_id": b.id, "period_start": period_bounds(Period(b.period), now)[0], "spent": amount}
        for b, amount in amounts
    ]
    totals = {row.budget_id: (row.period_start, row.spent) for row in await session.execute(_CHARGE, values)}
    return [
        Charge(
            keys_of(b),
            totals[b.id][0],
            to_units(Metric(b.metric), amount),
            to_units(Metric(b.metric), totals[b.id][1]),
        )
        for b, amount in amounts
    ]


def exact(metric: Metric, amount: Decimal) -> Decimal:
    return amount.quantize(Decimal(1) if metric is Metric.TOKENS else MICRO, ROUND_HALF_UP)


async def charge(
    session: AsyncSession, cache: Redis, metric: Metric, budgets: Sequence[Budget], amount: Decimal
) -> None:
    """Spend that was never reserved: it counts against every budget of `budgets` (those that cover it)."""
    charges = await charge_ledger(session, metric, budgets, exact(metric, amount), _now())
    await holds.settle(cache, None, [], charges)
