"""Reservations: resources held for a user against every quota covering them (the org's, the team's,
the user's), atomically across replicas, until released or until their TTL passes.

Why PostgreSQL row locks and not Redis counters: the reservation, its check and the refusal's event
commit in one transaction, with nothing to reconcile afterwards (no counter in another store that a
failed commit or a lost key leaves wrong), and a lapsed reservation stops counting by its `expires_at`
alone. The price is that reservations against one quota take turns on its row lock, for the length of a
short transaction; reservations of users under different quotas do not wait for each other.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coder.services.resources import quotas
from coder.services.resources.models import Base, Quota, Reservation
from coder.services.resources.quantities import Resource, display
from coder.services.resources.schemas import (
    AmountsRead,
    ReservationCreate,
    ReservationRead,
    ReservationStatus,
)
from coder.shared.auth import Principal
from coder.shared.errors import InvalidField, Problem
from coder.shared.repository import OrgScoped

Clock = Callable[[], datetime]
REAP_BATCH = 1000


def clock() -> datetime:
    """Now. A dependency of every route that reads time, so tests move the clock (dependency_overrides)."""
    return datetime.now(UTC)


class QuotaExceeded(Problem):
    status, slug, title = 409, "quota-exceeded", "Quota exceeded"
    commit = True  # the refusal's `resources.quota.exceeded` event commits with the answer


def amounts_of(reservation: Reservation) -> dict[Resource, Any]:
    return {r: getattr(reservation, r.value) for r in Resource}


def status_of(reservation: Reservation, now: datetime) -> ReservationStatus:
    status = ReservationStatus(reservation.status)
    if status is ReservationStatus.ACTIVE and reservation.expires_at <= now:
        return ReservationStatus.EXPIRED  # lapsed; the reaper has not marked it yet
    return status


def reservation_read(reservation: Reservation, now: datetime) -> ReservationRead:
    return ReservationRead(
        id=reservation.id,
        status=status_of(reservation, now),
        user_id=reservation.user_id,
        team_id=reservation.team_id,
        resources=AmountsRead.of({r: v for r, v in amounts_of(reservation).items() if v}),
        reference=reservation.reference,
        requested_by=reservation.requested_by,
        created_at=reservation.created_at,
        expires_at=reservation.expires_at,
        closed_at=reservation.closed_at,
    )


async def reserve(
    session: AsyncSession, principal: Principal, body: ReservationCreate, now: datetime
) -> ReservationRead:
    """Hold the resources against every quota covering (org, team, user), or refuse (QuotaExceeded)
    naming each limit it would overrun; nothing is held then."""
    org_id = principal.org_id
    requested = body.resources.given()
    if not any(requested.values()):
        raise InvalidField("resources", "reserve at least one resource")
    user_id = body.user_id or principal.subject
    keys = quotas.covers(org_id, body.team_id, user_id)
    covering = await quotas.covering(session, org_id, keys, lock=True)
    # Read after the locks are held: each statement sees what the previous holder committed.
    used = await quotas.in_use(session, org_id, [quotas.scope_key(q) for q in covering], now)
    overrun = [
        (quota, resource, limit, used[quotas.scope_key(quota)][resource], amount)
        for quota in covering
        for resource, limit in quotas.limits(quota).items()
        if limit is not None
        and (amount := requested.get(resource))
        and used[quotas.scope_key(quota)][resource] + amount > limit
    ]
    if overrun:
        raise await _refuse(session, org_id, user_id, body.team_id, overrun)
    reservation = Reservation(
        id=uuid.uuid4(),
        org_id=org_id,
        user_id=user_id,
        team_id=body.team_id,
        reference=body.reference,
        requested_by=principal.actor,
        status=ReservationStatus.ACTIVE.value,
        created_at=now,
        expires_at=now + timedelta(seconds=body.ttl_seconds),
        **{resource.value: amount for resource, amount in requested.items()},
    )
    session.add(reservation)
    await session.flush()
    return reservation_read(reservation, now)


def _number(resource: Resource, amount: Any) -> int | float:
    return float(amount) if resource is Resource.AI_CREDITS else int(amount)


async def _refuse(
    session: AsyncSession,
    org_id: str,
    user_id: str,
    team_id: str | None,
    overrun: list[tuple[Quota, Resource, Any, Any, Any]],
) -> QuotaExceeded:
    exceeded = [
        {
            "quota_id": str(quota.id),
            "name": quota.name,
            "scope": quota.scope,
            "scope_id": quota.scope_id,
            "resource": resource.value,
            "limit": _number(resource, limit),
            "used": _number(resource, used),
            "requested": _number(resource, amount),
        }
        for quota, resource, limit, used, amount in overrun
    ]
    first = exceeded[0]
    quota, resource, limit, used, amount = overrun[0]
    await Base.events.publish(
        session,
        "resources.quota.exceeded",
        {**first, "user_id": user_id, "team_id": team_id},
        org_id=org_id,
        subject=str(quota.id),
    )
    return QuotaExceeded(
        f"{quota.scope} quota {quota.name!r} ({quota.scope} {quota.scope_id}) has no room for "
        f"{resource.value}: requested {display(resource, amount)}, used {display(resource, used)}, "
        f"limit {display(resource, limit)}",
        quota=first,
        exceeded=exceeded,
    )


def _reservations(session: AsyncSession, org_id: str) -> OrgScoped[Reservation]:
    return OrgScoped(Reservation, session, org_id, "reservation")


async def get_reservation(session: AsyncSession, org_id: str, reservation_id: uuid.UUID) -> Reservation:
    return await _reservations(session, org_id).get(reservation_id, Reservation.id == reservation_id)


async def release(session: AsyncSession, org_id: str, reservation_id: uuid.UUID, now: datetime) -> None:
    """Give the resources back. Releasing a released or expired reservation changes nothing."""
    reservation = await _reservations(session, org_id).get(
        reservation_id, Reservation.id == reservation_id, lock=True
    )
    status = status_of(reservation, now)
    if reservation.status == ReservationStatus.ACTIVE.value:
        reservation.status = (
            status if status is ReservationStatus.EXPIRED else ReservationStatus.RELEASED
        ).value
        reservation.closed_at = reservation.expires_at if status is ReservationStatus.EXPIRED else now
        await session.flush()


async def expire(sessions: async_sessionmaker[AsyncSession], now: datetime) -> int:
    """Mark every reservation whose TTL passed as expired, a batch per transaction; returns how many.
    Bookkeeping only: a lapsed reservation already stopped counting at its `expires_at`."""
    total = 0
    while True:
        async with sessions() as session, session.begin():
            lapsed = (
                select(Reservation.id)
                .where(Reservation.status == ReservationStatus.ACTIVE.value, Reservation.expires_at <= now)
                .limit(REAP_BATCH)
                .with_for_update(skip_locked=True)  # replicas reap side by side, never the same rows
            )
            result = await session.execute(
                update(Reservation)
                .where(Reservation.id.in_(lapsed))
                .values(status=ReservationStatus.EXPIRED.value, closed_at=Reservation.expires_at)
                .execution_options(synchronize_session=False)
            )
        count = int(getattr(result, "rowcount", 0) or 0)
        total += count
        if count < REAP_BATCH:
            return total
