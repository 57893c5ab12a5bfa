"""Reservations: hold an amount against every budget that covers it, then settle or release it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.usage import holds
from coder.services.usage.budgets import (
    applicable,
    charge_ledger,
    checked_units,
    exact,
    keys_of,
    ledger,
    period_bounds,
)
from coder.services.usage.holds import BudgetKeys, Check, Held, from_units, to_units
from coder.services.usage.models import Base, Budget, Reservation
from coder.services.usage.schemas import (
    Metric,
    Period,
    ReservationCreate,
    ReservationRead,
    ReservationStatus,
)
from coder.shared.errors import Problem
from coder.shared.repository import OrgScoped


class UsageProblem(Problem):
    slug, title = "usage", "Usage error"


class BudgetExceeded(UsageProblem):
    status, slug, title = 402, "budget-exceeded", "Budget exceeded"
    commit = True  # the refusal's `usage.budget.exceeded` event commits with the answer


class ReservationClosed(UsageProblem):
    status, slug, title = 409, "reservation-closed", "Reservation already closed"


def _now() -> datetime:
    return datetime.now(UTC)


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
) -> ReservationRead:
    """Hold `amount` against every budget that covers the caller, or refuse (BudgetExceeded) naming the
    budget it would overrun."""
    metric = body.metric
    amount = checked_units(metric, body.amount, "amount")
    now = _now()
    budgets = await applicable(session, org_id, metric, body.user_id, body.team_id, body.api_key_id)
    reservation_id = uuid.uuid4()
    expires_at = now + timedelta(seconds=body.ttl_seconds)
    if budgets:
        checks = [
            Check(keys_of(b), period_bounds(Period(b.period), now)[0], to_units(metric, b.limit))
            for b in budgets
        ]

        async def load_spent(indexes: Sequence[int]) -> list[int]:
            spent = await ledger(session, [(budgets[i].id, checks[i].period_start) for i in indexes])
            return [to_units(metric, s) for s in spent]

        outcome = await holds.reserve(cache, reservation_id, checks, amount, body.ttl_seconds, load_spent)
        if not isinstance(outcome, Held):
            raise await _refuse(
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
        actual=None,
        created_at=now,
        expires_at=expires_at,
        closed_at=None,
    )
    # Every column is set here: no read back after the insert (this sits before every model call).
    session.add(reservation)
    await session.flush()
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
    await Base.events.publish(
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


def _reservations(session: AsyncSession, org_id: str) -> OrgScoped[Reservation]:
    return OrgScoped(Reservation, session, org_id, "reservation")


async def find_locked(session: AsyncSession, org_id: str, reservation_id: uuid.UUID) -> Reservation | None:
    # Row lock: concurrent settles and releases of one reservation take turns, so only one acts.
    return await _reservations(session, org_id).find(Reservation.id == reservation_id, lock=True)


async def get_reservation(session: AsyncSession, org_id: str, reservation_id: uuid.UUID) -> Reservation:
    return await _reservations(session, org_id).get(reservation_id, Reservation.id == reservation_id)


async def _locked_reservation(session: AsyncSession, org_id: str, reservation_id: uuid.UUID) -> Reservation:
    return await _reservations(session, org_id).get(
        reservation_id, Reservation.id == reservation_id, lock=True
    )


async def settle_open(session: AsyncSession, cache: Redis, reservation: Reservation, actual: Decimal) -> None:
    metric = Metric(reservation.metric)
    actual = exact(metric, actual)
    now = _now()
    budgets = await applicable(
        session, reservation.org_id, metric, reservation.user_id, reservation.team_id, reservation.api_key_id
    )
    charges = await charge_ledger(session, metric, budgets, actual, now)
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
        checked_units(Metric(reservation.metric), actual, "actual")
        await settle_open(session, cache, reservation, actual)
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
