"""One answer per org, team or user: the compute it reserved over a window (from this target's
reservations) and its AI spend as usage counts it (read from usage's budgets and meters for the
caller, with the caller's own token: the ledger shows only what the caller may read there)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import ColumnElement, Float, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.resources import quotas
from coder.services.resources.models import Quota, Reservation
from coder.services.resources.quantities import Resource
from coder.services.resources.schemas import (
    AiBudget,
    AiSpend,
    AmountsRead,
    ComputeUsage,
    Ledger,
    ReservationStatus,
    Scope,
)
from coder.shared.http import ServiceClients
from coder.shared.repository import owned_by, scoped

GIB = 2**30
BUDGET_PAGES = 10  # usage's budgets at one scope: a handful; a bound all the same


def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _in_scope(scope: Scope, scope_id: str) -> list[ColumnElement[bool]]:
    if scope is Scope.TEAM:
        return [Reservation.team_id == scope_id]
    if scope is Scope.USER:
        return [Reservation.user_id == scope_id]
    return []


async def compute(
    session: AsyncSession,
    org_id: str,
    scope: Scope,
    scope_id: str,
    start: datetime,
    end: datetime,
    now: datetime,
) -> ComputeUsage:
    # A reservation holds from its creation to its release or expiry (or now, while active).
    until = func.least(
        func.coalesce(Reservation.closed_at, Reservation.expires_at), literal(now), literal(end)
    )
    seconds = func.greatest(
        literal(0.0), func.extract("epoch", until - func.greatest(Reservation.created_at, literal(start)))
    )

    def held(resource: Resource) -> Any:
        return func.coalesce(func.sum(cast(getattr(Reservation, resource.value), Float) * seconds), 0.0)

    where = [owned_by(Reservation, org_id), *_in_scope(scope, scope_id)]
    window = (
        await session.execute(
            select(
                func.count(),
                held(Resource.SANDBOXES),
                held(Resource.CPU),
                held(Resource.MEMORY),
                held(Resource.STORAGE),
                func.coalesce(
                    func.sum(Reservation.ai_credits).filter(Reservation.created_at >= start), Decimal(0)
                ),
            ).where(*where, Reservation.created_at < end, until > start)
        )
    ).one()
    active = (
        await session.execute(
            select(func.count()).where(
                *where, Reservation.status == ReservationStatus.ACTIVE.value, Reservation.expires_at > now
            )
        )
    ).scalar_one()
    in_use = (await quotas.in_use(session, org_id, [(scope, scope_id)], now))[(scope, scope_id)]
    return ComputeUsage(
        in_use=AmountsRead.of(in_use),
        active_reservations=active,
        reservations=window[0],
        sandbox_seconds=round(window[1], 3),
        cpu_core_seconds=round(window[2] / 1000, 3),
        memory_gib_seconds=round(window[3] / GIB, 3),
        storage_gib_seconds=round(window[4] / GIB, 3),
        ai_credits_reserved=window[5],
    )


def _problem(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return f"usage answered {response.status_code}" + (f": {detail}" if detail else "")


async def ai_spend(
    clients: ServiceClients, scope: Scope, scope_id: str, meter: str | None, start: datetime, end: datetime
) -> AiSpend:
    """usage's numbers for this scope: its `cost_usd` budgets and, given a meter, the meter's total."""
    usage = clients.client("usage")
    params: dict[str, Any] = {"scope": scope.value, "metric": "cost_usd", "limit": 100}
    if scope is not Scope.ORG:
        params["scope_id"] = scope_id
    budgets: list[AiBudget] = []
    metered = None
    try:
        for _ in range(BUDGET_PAGES):
            response = await usage.get("/v1/budgets", params=params)
            if response.status_code != 200:
                return AiSpend(available=False, detail=_problem(response))
            page = response.json()
            budgets += [AiBudget.model_validate(b) for b in page["items"]]
            if not page.get("next_cursor"):
                break
            params["cursor"] = page["next_cursor"]
        if meter is not None:
            query: dict[str, Any] = {"from": start.isoformat(), "to": end.isoformat()}
            if scope is not Scope.ORG:
                query[f"{scope.value}_id"] = scope_id
            response = await usage.get(f"/v1/meters/{meter}/query", params=query)
            if response.status_code != 200:
                return AiSpend(available=False, detail=_problem(response), budgets=budgets, meter=meter)
            metered = sum(float(row["value"] or 0) for row in response.json()["data"])
    except httpx.HTTPError as exc:
        return AiSpend(available=False, detail=f"usage unreachable: {type(exc).__name__}")
    return AiSpend(available=True, budgets=budgets, meter=meter, metered=metered)


async def ledger(
    session: AsyncSession,
    clients: ServiceClients,
    org_id: str,
    scope: Scope,
    scope_id: str,
    start: datetime,
    end: datetime,
    meter: str | None,
    now: datetime,
) -> Ledger:
    quota = (
        await session.execute(
            scoped(Quota, org_id).where(Quota.scope == scope.value, Quota.scope_id == scope_id)
        )
    ).scalar_one_or_none()
    return Ledger(
        scope=scope,
        scope_id=scope_id,
        from_=start,
        to=end,
        quota=(await quotas.quota_reads(session, [quota], now))[0] if quota is not None else None,
        compute=await compute(session, org_id, scope, scope_id, start, end, now),
        ai=await ai_spend(clients, scope, scope_id, meter, start, end),
    )
