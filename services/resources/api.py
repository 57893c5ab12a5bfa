"""HTTP routes of `resources` (Kubernetes ResourceQuota, Coder quotas). Paths are relative to
`/api/resources` at the gateway."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import AwareDatetime

from coder.services.resources import ledger, quotas, reservations
from coder.services.resources.models import Quota, Reservation
from coder.services.resources.quantities import Resource
from coder.services.resources.reservations import clock
from coder.services.resources.schemas import (
    AmountsRead,
    Ledger,
    MyQuotas,
    QuotaCreate,
    QuotaRead,
    QuotaUpdate,
    ReservationCreate,
    ReservationRead,
    ReservationStatus,
    Scope,
)
from coder.shared.auth import Principal, require
from coder.shared.db import SessionDep
from coder.shared.deps import ClientsDep
from coder.shared.errors import InvalidField, problem_responses
from coder.shared.pagination import Page, PageDep, paginate
from coder.shared.repository import scoped
from coder.shared.schemas import StorableTime

router = APIRouter(prefix="/v1", tags=["resources"])

Now = Annotated[datetime, Depends(clock)]
ScopeIdQuery = Annotated[str | None, Query(min_length=1, max_length=128)]

# --- quotas ---


@router.post(
    "/quotas",
    response_model=QuotaRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({409}),
)
async def create_quota(
    body: QuotaCreate,
    session: SessionDep,
    now: Now,
    principal: Annotated[Principal, require("resources:admin")],
) -> QuotaRead:
    """Limit what the organization, a team or a user may hold at once: sandboxes (a count), `cpu`
    ("500m", 2), `memory` and `storage` ("2Gi", bytes) and `ai_credits` (money). One quota per scope;
    a reservation must fit in every quota covering it."""
    quota = await quotas.create_quota(session, principal.org_id, body, now)
    return (await quotas.quota_reads(session, [quota], now))[0]


@router.get("/quotas", response_model=Page[QuotaRead])
async def list_quotas(
    session: SessionDep,
    now: Now,
    principal: Annotated[Principal, require("resources:read")],
    params: PageDep,
    scope: Scope | None = None,
    scope_id: ScopeIdQuery = None,
) -> Page[QuotaRead]:
    """The organization's quotas with what is in use against each, oldest first."""
    query = scoped(Quota, principal.org_id)
    if scope is not None:
        query = query.where(Quota.scope == scope.value)
    if scope_id is not None:
        query = query.where(Quota.scope_id == scope_id)
    rows = await paginate(session, query, (Quota.created_at, Quota.id), params)
    return Page[QuotaRead](
        items=await quotas.quota_reads(session, rows.items, now), next_cursor=rows.next_cursor
    )


@router.get("/quotas/{quota_id}", response_model=QuotaRead)
async def read_quota(
    quota_id: uuid.UUID,
    session: SessionDep,
    now: Now,
    principal: Annotated[Principal, require("resources:read")],
) -> QuotaRead:
    """A quota's limits and what active reservations hold against it now."""
    quota = await quotas.get_quota(session, principal.org_id, quota_id)
    return (await quotas.quota_reads(session, [quota], now))[0]


@router.patch("/quotas/{quota_id}", response_model=QuotaRead)
async def update_quota(
    quota_id: uuid.UUID,
    body: QuotaUpdate,
    session: SessionDep,
    now: Now,
    principal: Annotated[Principal, require("resources:admin")],
) -> QuotaRead:
    """Rename a quota or change its limits (null removes one). A limit lowered below what is in use
    refuses new reservations until enough are released; nothing held is taken back."""
    quota = await quotas.update_quota(session, principal.org_id, quota_id, body, now)
    return (await quotas.quota_reads(session, [quota], now))[0]


@router.delete("/quotas/{quota_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_quota(
    quota_id: uuid.UUID,
    session: SessionDep,
    principal: Annotated[Principal, require("resources:admin")],
) -> Response:
    """Remove a quota: its scope is no longer limited. Reservations stay."""
    await quotas.delete_quota(session, principal.org_id, quota_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=MyQuotas)
async def my_quotas(
    session: SessionDep,
    now: Now,
    principal: Annotated[Principal, require("resources:read")],
    team_id: ScopeIdQuery = None,
) -> MyQuotas:
    """The quotas covering the caller (the organization's, `team_id`'s, the caller's own) with their
    use, and the room left for each resource: what the next reservation for the caller may hold."""
    keys = quotas.covers(principal.org_id, team_id, principal.subject)
    reads = await quotas.quota_reads(session, await quotas.covering(session, principal.org_id, keys), now)
    room: dict[Resource, Any] = {}
    for read in reads:
        for resource in Resource:
            limit = getattr(read.hard, resource.value)
            if limit is not None:
                left = max(limit - getattr(read.used, resource.value), 0)
                room[resource] = left if resource not in room else min(room[resource], left)
    return MyQuotas(user_id=principal.subject, team_id=team_id, quotas=reads, remaining=AmountsRead.of(room))


@router.get("/ledger", response_model=Ledger, response_model_by_alias=True)
async def read_ledger(
    session: SessionDep,
    clients: ClientsDep,
    now: Now,
    principal: Annotated[Principal, require("resources:read")],
    scope: Scope = Scope.ORG,
    scope_id: ScopeIdQuery = None,
    from_: Annotated[
        AwareDatetime | None,
        StorableTime,
        Query(alias="from", description="Default: the month's start (UTC)"),
    ] = None,
    to: Annotated[AwareDatetime | None, StorableTime, Query(description="Exclusive; default now")] = None,
    meter: Annotated[
        str | None,
        Query(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="A usage meter of AI spend to total too"),
    ] = None,
) -> Ledger:
    """What the organization, a team or a user used in `[from, to)`: compute reserved here (sandbox,
    CPU, memory and storage seconds, AI credits reserved, what is held now) and AI spend from usage
    (its cost budgets at this scope, and `meter`'s total if given), read with the caller's token."""
    if scope is Scope.ORG:
        if scope_id not in (None, principal.org_id):
            raise InvalidField("query.scope_id", "the organization's ledger is the caller's: leave it out")
        scope_id = principal.org_id
    elif scope_id is None:
        raise InvalidField("query.scope_id", f"required for scope {scope.value}")
    end = to or now
    start = from_ or ledger.month_start(end)
    if start >= end:
        raise InvalidField("query.from", "must be before `to`")
    return await ledger.ledger(session, clients, principal.org_id, scope, scope_id, start, end, meter, now)


# --- reservations ---


@router.post(
    "/reservations",
    response_model=ReservationRead,
    status_code=status.HTTP_201_CREATED,
    responses={
        409: {
            "description": "A quota has no room; the problem names the first (`quota`: quota_id, name, "
            "scope, scope_id, resource, limit, used, requested) and `exceeded` lists all",
        }
    },
)
async def create_reservation(
    body: ReservationCreate,
    session: SessionDep,
    now: Now,
    principal: Annotated[Principal, require("resources:reserve")],
) -> ReservationRead:
    """Hold resources for a user (by default the one the caller acts for) against every quota covering
    them (the organization's, `team_id`'s, the user's), atomically across replicas: all fit, or nothing
    is held and the answer is 409 naming what was requested, what is used, the limit and the quota.
    Release it when done; it lapses by itself after `ttl_seconds`."""
    return await reservations.reserve(session, principal, body, now)


@router.get("/reservations", response_model=Page[ReservationRead])
async def list_reservations(
    session: SessionDep,
    now: Now,
    principal: Annotated[Principal, require("resources:read")],
    params: PageDep,
    status_: Annotated[ReservationStatus | None, Query(alias="status")] = None,
    user_id: ScopeIdQuery = None,
    team_id: ScopeIdQuery = None,
) -> Page[ReservationRead]:
    """The organization's reservations, newest first."""
    query = scoped(Reservation, principal.org_id)
    if status_ is ReservationStatus.ACTIVE:
        query = query.where(Reservation.status == status_.value, Reservation.expires_at > now)
    elif status_ is ReservationStatus.EXPIRED:
        # Marked by the reaper, or lapsed and not marked yet: the same to the caller.
        lapsed = (Reservation.status == ReservationStatus.ACTIVE.value) & (Reservation.expires_at <= now)
        query = query.where((Reservation.status == status_.value) | lapsed)
    elif status_ is not None:
        query = query.where(Reservation.status == status_.value)
    for column, value in ((Reservation.user_id, user_id), (Reservation.team_id, team_id)):
        if value is not None:
            query = query.where(column == value)
    rows = await paginate(session, query, (Reservation.created_at, Reservation.id), params, descending=True)
    return rows.page(lambda r: reservations.reservation_read(r, now))


@router.get("/reservations/{reservation_id}", response_model=ReservationRead)
async def read_reservation(
    reservation_id: uuid.UUID,
    session: SessionDep,
    now: Now,
    principal: Annotated[Principal, require("resources:read")],
) -> ReservationRead:
    """A reservation and its state (`expired` once its TTL passed without a release)."""
    reservation = await reservations.get_reservation(session, principal.org_id, reservation_id)
    return reservations.reservation_read(reservation, now)


@router.delete("/reservations/{reservation_id}", status_code=status.HTTP_204_NO_CONTENT)
async def release_reservation(
    reservation_id: uuid.UUID,
    session: SessionDep,
    now: Now,
    principal: Annotated[Principal, require("resources:reserve")],
) -> Response:
    """Give the resources back. Releasing again, or after the reservation expired, changes nothing."""
    await reservations.release(session, principal.org_id, reservation_id, now)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
