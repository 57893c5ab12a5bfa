"""HTTP routes of `usage` (OpenMeter / LiteLLM style). Paths are relative to `/api/usage` at the gateway."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import AwareDatetime, Field, TypeAdapter

from coder.services.usage import budgets, holds, meters, reservations
from coder.services.usage.models import Budget, Meter
from coder.services.usage.schemas import (
    BudgetCreate,
    BudgetRead,
    BudgetUpdate,
    Dimension,
    EventBatch,
    EventIn,
    IngestRead,
    MeterCreate,
    MeterQueryRead,
    MeterRead,
    Metric,
    ReservationCreate,
    ReservationRead,
    ReservationSettle,
    Scope,
    Slug,
    WindowSize,
)
from coder.shared.auth import Principal, require
from coder.shared.db import AutocommitDep, SessionDep
from coder.shared.deps import CacheDep
from coder.shared.errors import problem_responses
from coder.shared.pagination import Page, PageDep, paginate
from coder.shared.repository import scoped
from coder.shared.schemas import StorableTime, inline_schema, json_body

router = APIRouter(prefix="/v1", tags=["usage"])

MAX_BATCH = 1000


async def _reserver(request: Request) -> reservations.Reserver:
    reserver: reservations.Reserver = request.app.state.usage
    return reserver


ReserverDep = Annotated[reservations.Reserver, Depends(_reserver)]
Admin = Annotated[Principal, require("usage:admin")]


async def _budgets_changed(request: Request, principal: Admin) -> AsyncIterator[None]:
    """Declared on every budget write, before its session: runs on after the write committed, and
    tells every replica's budget cache (reservations.Reserver) to read the org's budgets again."""
    yield
    cache = request.app.state.runtime.cache
    if cache is not None:
        await holds.budgets_changed(cache, principal.org_id)


# In the decorator, so it is set up first and torn down last: after the request's commit.
CHANGES_BUDGETS = Depends(_budgets_changed, scope="function")

DimensionValues = Annotated[list[Annotated[str, Field(max_length=200)]] | None, Query(max_length=100)]


# The batch is read by `json_body`, validated as it is parsed (one pass, not FastAPI's json.loads then
# a walk of what that built), so the route declares its body in `openapi_extra` rather than as a parameter.
BATCH: TypeAdapter[list[EventIn]] = TypeAdapter(
    Annotated[EventBatch, Field(min_length=1, max_length=MAX_BATCH)]
)
BATCH_BODY = {
    "required": True,
    "description": "CloudEvents 1.0, JSON format",
    "content": {
        media: {"schema": inline_schema(BATCH)}
        for media in ("application/json", "application/cloudevents-batch+json")
    },
}


@router.post(
    "/events",
    response_model=IngestRead,
    responses=problem_responses({400, 413, 415, 422}),
    openapi_extra={"requestBody": BATCH_BODY},
)
async def ingest_events(
    request: Request,
    connection: AutocommitDep,
    principal: Annotated[Principal, require("usage:ingest")],
) -> IngestRead:
    """Ingest up to 1000 usage events (CloudEvents, any `type`) for the caller's organization. An event
    already stored under the same `source` and `id` (or repeated in the batch) counts as a duplicate and
    is not stored again, so retrying a batch is safe."""
    body = await request.body()
    events = json_body(BATCH, body, request.headers.get("content-type"))
    # Validated, the body is what PostgreSQL reads, as sent: when it is UTF-8 without a byte order
    # mark (the other UTF encodings are JSON too; those events are serialized again).
    document = body.decode() if json.detect_encoding(body) == "utf-8" else None
    # The batch is one statement: no transaction around it.
    return await meters.ingest(connection, principal.org_id, events, document)


# --- meters ---


@router.post(
    "/meters",
    response_model=MeterRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({409}),
)
async def create_meter(
    body: MeterCreate,
    session: SessionDep,
    principal: Annotated[Principal, require("usage:admin")],
) -> MeterRead:
    """Define a meter: an aggregation (`sum`, `count`, `max`, `unique_count`) of `value_property` over
    the events of one type, with the dimensions queries may group by."""
    return MeterRead.model_validate(await meters.create_meter(session, principal.org_id, body))


@router.get("/meters", response_model=Page[MeterRead])
async def list_meters(
    session: SessionDep,
    principal: Annotated[Principal, require("usage:read")],
    params: PageDep,
) -> Page[MeterRead]:
    """The organization's meters, by slug."""
    rows = await paginate(session, scoped(Meter, principal.org_id), (Meter.slug,), params)
    return rows.page(MeterRead.model_validate)


@router.get("/meters/{slug}", response_model=MeterRead)
async def read_meter(
    slug: Slug,
    session: SessionDep,
    principal: Annotated[Principal, require("usage:read")],
) -> MeterRead:
    """One meter's definition."""
    return MeterRead.model_validate(await meters.get_meter(session, principal.org_id, slug))


@router.delete("/meters/{slug}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_meter(
    slug: Slug,
    session: SessionDep,
    principal: Annotated[Principal, require("usage:admin")],
) -> Response:
    """Remove a meter. The events it aggregated stay."""
    await meters.delete_meter(session, principal.org_id, slug)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/meters/{slug}/query", response_model=MeterQueryRead)
async def query_meter(
    slug: Slug,
    session: SessionDep,
    principal: Annotated[Principal, require("usage:read")],
    from_: Annotated[
        AwareDatetime | None,
        StorableTime,
        Query(alias="from", description="Inclusive; required with window_size"),
    ] = None,
    to: Annotated[AwareDatetime | None, StorableTime, Query(description="Exclusive; default now")] = None,
    window_size: Annotated[
        WindowSize | None,
        Query(description="One row per window and group; without it, one row per group over the whole range"),
    ] = None,
    window_time_zone: Annotated[str, Query(max_length=64, description="IANA zone windows align to")] = "UTC",
    group_by: Annotated[list[Dimension] | None, Query(max_length=len(Dimension))] = None,
    user_id: DimensionValues = None,
    team_id: DimensionValues = None,
    api_key_id: DimensionValues = None,
    model: DimensionValues = None,
    feature: DimensionValues = None,
) -> MeterQueryRead:
    """The meter's value over `[from, to)`, per window and per group; filters on a dimension keep the
    events whose value is one of those given (repeat the parameter for several)."""
    given = {
        Dimension.USER_ID: user_id,
        Dimension.TEAM_ID: team_id,
        Dimension.API_KEY_ID: api_key_id,
        Dimension.MODEL: model,
        Dimension.FEATURE: feature,
    }
    return await meters.query_meter(
        session,
        principal.org_id,
        slug,
        start=from_,
        end=to,
        window_size=window_size,
        time_zone=window_time_zone,
        group_by=group_by or [],
        filters={d: values for d, values in given.items() if values},
    )


# --- budgets ---


@router.post(
    "/budgets", response_model=BudgetRead, status_code=status.HTTP_201_CREATED, dependencies=[CHANGES_BUDGETS]
)
async def create_budget(
    body: BudgetCreate,
    session: SessionDep,
    cache: CacheDep,
    principal: Annotated[Principal, require("usage:admin")],
) -> BudgetRead:
    """Limit the spend (`cost_usd` or `tokens`) of the organization, a team, a user or an API key per
    day, per month (UTC) or in total. Reservations must fit in every budget that covers them."""
    budget = await budgets.create_budget(session, principal.org_id, body)
    return (await budgets.budget_reads(session, cache, [budget]))[0]


@router.get("/budgets", response_model=Page[BudgetRead])
async def list_budgets(
    session: SessionDep,
    cache: CacheDep,
    principal: Annotated[Principal, require("usage:read")],
    params: PageDep,
    scope: Scope | None = None,
    scope_id: Annotated[str | None, Query(max_length=128)] = None,
    metric: Metric | None = None,
) -> Page[BudgetRead]:
    """The organization's budgets with their current spend and holds, oldest first."""
    query = scoped(Budget, principal.org_id)
    for column, value in ((Budget.scope, scope), (Budget.scope_id, scope_id), (Budget.metric, metric)):
        if value is not None:
            query = query.where(column == value)
    rows = await paginate(session, query, (Budget.created_at, Budget.id), params)
    return Page[BudgetRead](
        items=await budgets.budget_reads(session, cache, rows.items), next_cursor=rows.next_cursor
    )


@router.get("/budgets/{budget_id}", response_model=BudgetRead)
async def read_budget(
    budget_id: uuid.UUID,
    session: SessionDep,
    cache: CacheDep,
    principal: Annotated[Principal, require("usage:read")],
) -> BudgetRead:
    """A budget with the current period's settled spend and the amount held by active reservations."""
    budget = await budgets.get_budget(session, principal.org_id, budget_id)
    return (await budgets.budget_reads(session, cache, [budget]))[0]


@router.patch("/budgets/{budget_id}", response_model=BudgetRead, dependencies=[CHANGES_BUDGETS])
async def update_budget(
    budget_id: uuid.UUID,
    body: BudgetUpdate,
    session: SessionDep,
    cache: CacheDep,
    principal: Annotated[Principal, require("usage:admin")],
) -> BudgetRead:
    """Rename a budget or change its limit; the next reservation is checked against the new limit."""
    budget = await budgets.update_budget(session, principal.org_id, budget_id, body)
    return (await budgets.budget_reads(session, cache, [budget]))[0]


@router.delete("/budgets/{budget_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[CHANGES_BUDGETS])
async def delete_budget(
    budget_id: uuid.UUID,
    session: SessionDep,
    principal: Annotated[Principal, require("usage:admin")],
) -> Response:
    """Remove a budget and its spend history."""
    await budgets.delete_budget(session, principal.org_id, budget_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- reservations ---


@router.post(
    "/reservations",
    response_model=ReservationRead,
    status_code=status.HTTP_201_CREATED,
    responses={
        402: {
            "description": "A budget would be exceeded; the problem names it "
            "(`budget`: id, name, scope, scope_id, limit, spent, reserved, requested)",
        }
    },
)
async def create_reservation(
    body: ReservationCreate,
    reserver: ReserverDep,
    cache: CacheDep,
    principal: Annotated[Principal, require("usage:reserve")],
) -> ReservationRead:
    """Hold `amount` against every budget that covers this spend (the org's, the team's, the user's,
    the API key's), atomically across replicas: either all have room, or nothing is held and the answer
    is 402 naming the budget that would be exceeded. Settle or release it; it lapses after `ttl_seconds`."""
    # No request session: a hold is a Redis script run, and opens one only when it reads the database.
    return await reservations.reserve(reserver, cache, principal.org_id, body)


@router.get("/reservations/{reservation_id}", response_model=ReservationRead)
async def read_reservation(
    reservation_id: uuid.UUID,
    session: SessionDep,
    cache: CacheDep,
    principal: Annotated[Principal, require("usage:reserve")],
) -> ReservationRead:
    """A reservation and its state (`expired` once its hold has lapsed without settle or release)."""
    return reservations.reservation_read(
        await reservations.get_reservation(session, cache, principal.org_id, reservation_id)
    )


@router.post(
    "/reservations/{reservation_id}/settle",
    response_model=ReservationRead,
    responses=problem_responses({409}),
)
async def settle_reservation(
    reservation_id: uuid.UUID,
    body: ReservationSettle,
    session: SessionDep,
    cache: CacheDep,
    principal: Annotated[Principal, require("usage:reserve")],
) -> ReservationRead:
    """Release the hold and record `actual` as spend against the budgets that cover it. Settling a
    settled reservation returns the first result and adds nothing; an expired one is still recorded."""
    return await reservations.settle(session, cache, principal.org_id, reservation_id, body.actual)


@router.delete(
    "/reservations/{reservation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses({409}),
)
async def release_reservation(
    reservation_id: uuid.UUID,
    session: SessionDep,
    cache: CacheDep,
    principal: Annotated[Principal, require("usage:reserve")],
) -> Response:
    """Give the held amount back without spending it (the request was not made)."""
    await reservations.release(session, cache, principal.org_id, reservation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
