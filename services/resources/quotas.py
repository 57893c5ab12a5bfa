"""Quotas and what is in use against them. In use at a scope = the sum of the scope's active,
unexpired reservations, read from PostgreSQL; there is no counter to drift, and a reservation whose
TTL passed stops counting at that instant, before any reaper touches it (lazy expiry).
Every function only flushes; the caller commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.resources.models import Quota, Reservation
from coder.services.resources.quantities import Resource
from coder.services.resources.schemas import (
    AmountsRead,
    QuotaCreate,
    QuotaRead,
    QuotaUpdate,
    ReservationStatus,
    Scope,
)
from coder.shared.errors import Conflict, InvalidField
from coder.shared.repository import OrgScoped, owned_by, scoped

ScopeKey = tuple[Scope, str]


def limits(quota: Quota) -> dict[Resource, Any]:
    return {r: getattr(quota, r.value) for r in Resource}


def scope_key(quota: Quota) -> ScopeKey:
    return Scope(quota.scope), quota.scope_id


def covers(org_id: str, team_id: str | None, user_id: str) -> list[ScopeKey]:
    """The scopes whose quotas a reservation for (org, team, user) must fit in."""
    keys: list[ScopeKey] = [(Scope.ORG, org_id)]
    if team_id is not None:
        keys.append((Scope.TEAM, team_id))
    keys.append((Scope.USER, user_id))
    return keys


def _in_scope(key: ScopeKey) -> ColumnElement[bool] | None:
    scope, scope_id = key
    if scope is Scope.TEAM:
        return Reservation.team_id == scope_id
    if scope is Scope.USER:
        return Reservation.user_id == scope_id
    return None  # the org's: every reservation of the org


async def in_use(
    session: AsyncSession, org_id: str, keys: Sequence[ScopeKey], now: datetime
) -> dict[ScopeKey, dict[Resource, Any]]:
    """What the active, unexpired reservations hold at each scope, in one scan of the org's rows."""
    if not keys:
        return {}
    columns = []
    for key in keys:
        condition = _in_scope(key)
        for resource in Resource:
            total = func.sum(getattr(Reservation, resource.value))
            columns.append(total if condition is None else total.filter(condition))
    active = [owned_by(Reservation, org_id), Reservation.status == ReservationStatus.ACTIVE.value]
    narrowing = [_in_scope(key) for key in keys]
    where = [*active, Reservation.expires_at > now]
    if all(condition is not None for condition in narrowing):
        where.append(or_(*[c for c in narrowing if c is not None]))
    row = (await session.execute(select(*columns).where(*where))).one()
    out: dict[ScopeKey, dict[Resource, Any]] = {}
    values = iter(row)
    for key in keys:
        out[key] = {}
        for resource in Resource:
            value = next(values)
            zero: Any = Decimal(0) if resource is Resource.AI_CREDITS else 0
            out[key][resource] = (
                zero if value is None else (value if resource is Resource.AI_CREDITS else int(value))
            )
    return out


async def quota_reads(session: AsyncSession, quotas: Sequence[Quota], now: datetime) -> list[QuotaRead]:
    if not quotas:
        return []
    used = await in_use(session, quotas[0].org_id, sorted({scope_key(q) for q in quotas}), now)
    return [quota_read(q, used[scope_key(q)]) for q in quotas]


def quota_read(quota: Quota, used: dict[Resource, Any]) -> QuotaRead:
    return QuotaRead(
        id=quota.id,
        name=quota.name,
        scope=Scope(quota.scope),
        scope_id=quota.scope_id,
        hard=AmountsRead.of(limits(quota)),
        used=AmountsRead.of(used),
        created_at=quota.created_at,
        updated_at=quota.updated_at,
    )


def _quotas(session: AsyncSession, org_id: str) -> OrgScoped[Quota]:
    return OrgScoped(Quota, session, org_id, "quota")


async def create_quota(session: AsyncSession, org_id: str, body: QuotaCreate, now: datetime) -> Quota:
    if body.scope is Scope.ORG:
        if body.scope_id not in (None, org_id):
            raise InvalidField("scope_id", "an org quota applies to the caller's organization: leave it out")
        scope_id = org_id
    elif body.scope_id is None:
        raise InvalidField("scope_id", f"required for scope {body.scope.value}")
    else:
        scope_id = body.scope_id
    hard = body.hard.given()
    if not hard:
        raise InvalidField("hard", "limit at least one resource")
    quota = Quota(
        org_id=org_id,
        name=body.name or f"{body.scope.value} {scope_id}",
        scope=body.scope.value,
        scope_id=scope_id,
        created_at=now,
        updated_at=now,
        **{resource.value: value for resource, value in hard.items()},
    )
    try:
        async with session.begin_nested():
            session.add(quota)
            await session.flush()
    except IntegrityError:
        raise Conflict(
            f"{body.scope.value} {scope_id} already has a quota: change it instead",
            errors=[{"field": "scope_id", "message": "this scope already has a quota"}],
        ) from None
    return quota


async def get_quota(session: AsyncSession, org_id: str, quota_id: uuid.UUID, *, lock: bool = False) -> Quota:
    return await _quotas(session, org_id).get(quota_id, Quota.id == quota_id, lock=lock)


async def update_quota(
    session: AsyncSession, org_id: str, quota_id: uuid.UUID, body: QuotaUpdate, now: datetime
) -> Quota:
    # The row lock orders this change with reservations checking against the quota (they lock it too).
    quota = await get_quota(session, org_id, quota_id, lock=True)
    if body.name is not None:
        quota.name = body.name
    if body.hard is not None:
        for name in body.hard.model_fields_set:
            setattr(quota, name, getattr(body.hard, name))
        if all(value is None for value in limits(quota).values()):
            raise InvalidField("hard", "a quota limits at least one resource; delete it instead")
    quota.updated_at = now
    await session.flush()
    return quota


async def delete_quota(session: AsyncSession, org_id: str, quota_id: uuid.UUID) -> None:
    await _quotas(session, org_id).delete(quota_id, Quota.id == quota_id)


async def covering(
    session: AsyncSession, org_id: str, keys: Sequence[ScopeKey], *, lock: bool = False
) -> list[Quota]:
    """The org's quotas at these scopes. `lock` takes their row locks in id order: every reservation
    checking a quota holds its lock until it commits, so checks of one quota run one after another
    (on any replica) and two reservations never lock in opposite orders."""
    query = (
        scoped(Quota, org_id)
        .where(
            or_(*[and_(Quota.scope == scope.value, Quota.scope_id == scope_id) for scope, scope_id in keys])
        )
        .order_by(Quota.id)
    )
    if lock:
        query = query.with_for_update()
    return list((await session.execute(query)).scalars().all())
