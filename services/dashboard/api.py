"""HTTP routes of `dashboard`. Paths are relative to `/api/dashboard` at the gateway."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from coder.services.dashboard import service
from coder.services.dashboard.models import Base, Dashboard, Version
from coder.services.dashboard.schemas import (
    AggregateRead,
    DashboardCreate,
    DashboardRead,
    DashboardSave,
    DashboardSummary,
    Restore,
    TeamId,
    VersionRead,
    VersionSummary,
)
from coder.shared.auth import Principal, require
from coder.shared.db import SessionDep
from coder.shared.deps import ClientsDep, RuntimeDep
from coder.shared.errors import problem_responses
from coder.shared.pagination import Page, PageDep, paginate
from coder.shared.repository import scoped

router = APIRouter(prefix="/v1", tags=["dashboard"])

Reader = Annotated[Principal, require("dashboard:read")]
Writer = Annotated[Principal, require("dashboard:write")]
VersionPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="A version number of the dashboard")]


def _targets(runtime: RuntimeDep) -> set[str]:
    return set(runtime.service_urls)


@router.post("/dashboards", response_model=DashboardRead, status_code=status.HTTP_201_CREATED)
async def create_dashboard(
    body: DashboardCreate, session: SessionDep, principal: Writer, runtime: RuntimeDep
) -> DashboardRead:
    """Create a dashboard, the caller's own or (with `team_id`) a team's; its version 1. Each panel's
    query is checked: an unknown target, a method other than GET or a path that is not the target's
    own `/v1` path is a 422 naming it (`panels.<n>.query.target|method|path`)."""
    panels = service.check_panels(body.panels, _targets(runtime))
    dashboard = await service.create(session, principal, body.title, body.team_id, panels, body.message)
    return service.read(dashboard)


@router.get("/dashboards", response_model=Page[DashboardSummary])
async def list_dashboards(
    session: SessionDep,
    principal: Reader,
    params: PageDep,
    team_id: Annotated[TeamId | None, Query(description="Only this team's dashboards")] = None,
    mine: Annotated[bool, Query(description="Only the caller's own dashboards")] = False,
) -> Page[DashboardSummary]:
    """The caller's own dashboards and the teams', last saved first."""
    query = scoped(Dashboard, principal.org_id).where(service.visible(principal))
    if team_id is not None:
        query = query.where(Dashboard.team_id == team_id)
    if mine:
        query = query.where(Dashboard.owner_id == principal.subject)
    rows = await paginate(session, query, (Dashboard.updated_at, Dashboard.id), params, descending=True)
    return rows.page(lambda d: DashboardSummary.model_validate(d, from_attributes=True))


@router.get("/dashboards/{dashboard_id}", response_model=DashboardRead)
async def read_dashboard(dashboard_id: uuid.UUID, session: SessionDep, principal: Reader) -> DashboardRead:
    """The dashboard's latest version; save changes against its `version`."""
    return service.read(await service.get(session, principal, dashboard_id))


@router.put("/dashboards/{dashboard_id}", response_model=DashboardRead, responses=problem_responses({409}))
async def save_dashboard(
    dashboard_id: uuid.UUID, body: DashboardSave, session: SessionDep, principal: Writer, runtime: RuntimeDep
) -> DashboardRead:
    """Save a new version of the whole dashboard against the version read: if another save came first,
    409 `stale-version` with `version` and `latest`, and nothing is saved."""
    panels = service.check_panels(body.panels, _targets(runtime))
    dashboard = await service.save(
        session, principal, dashboard_id, body.version, body.title, panels, body.message
    )
    return service.read(dashboard)


@router.delete("/dashboards/{dashboard_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_dashboard(dashboard_id: uuid.UUID, session: SessionDep, principal: Writer) -> Response:
    """Delete the dashboard with every version."""
    dashboard = await service.get(session, principal, dashboard_id, lock=True)
    await session.delete(dashboard)
    await Base.events.publish(
        session,
        "dashboard.dashboard.deleted",
        {"dashboard_id": str(dashboard_id), "actor": principal.subject},
        org_id=principal.org_id,
        subject=str(dashboard_id),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/dashboards/{dashboard_id}/versions", response_model=Page[VersionSummary])
async def list_versions(
    dashboard_id: uuid.UUID, session: SessionDep, principal: Reader, params: PageDep
) -> Page[VersionSummary]:
    """The dashboard's versions, latest first: number, author, message, and what a restore restored."""
    query = scoped(Version, principal.org_id).where(Version.dashboard_id == dashboard_id)
    rows = await paginate(session, query, (Version.version,), params, descending=True)
    await service.get(session, principal, dashboard_id)  # after the cursor: 400 first
    return rows.page(lambda v: VersionSummary.model_validate(v, from_attributes=True))


@router.get("/dashboards/{dashboard_id}/versions/{version}", response_model=VersionRead)
async def read_version(
    dashboard_id: uuid.UUID, version: VersionPath, session: SessionDep, principal: Reader
) -> VersionRead:
    """One version's whole content."""
    found = await service.version(session, principal, dashboard_id, version)
    return VersionRead.model_validate(found, from_attributes=True)


@router.post(
    "/dashboards/{dashboard_id}/versions/{version}/restore",
    response_model=DashboardRead,
    responses=problem_responses({409}),
)
async def restore_version(
    dashboard_id: uuid.UUID,
    version: VersionPath,
    body: Restore,
    session: SessionDep,
    principal: Writer,
) -> DashboardRead:
    """Make an old version's content the latest again, as a new version (`restored_from` says which);
    the versions in between stay."""
    old = await service.version(session, principal, dashboard_id, version)
    latest = await service.get(session, principal, dashboard_id, lock=True)
    message = body.message or f"restored version {version}"
    dashboard = await service.save(
        session,
        principal,
        dashboard_id,
        latest.version,
        old.title,
        old.panels,
        message,
        restored_from=version,
    )
    return service.read(dashboard)


@router.get("/dashboards/{dashboard_id}/data", response_model=AggregateRead)
async def dashboard_data(
    dashboard_id: uuid.UUID, session: SessionDep, principal: Reader, clients: ClientsDep
) -> AggregateRead:
    """The whole dashboard in one call: the latest version and, for each panel, what its query reads
    now. The queries run in parallel with the caller's own token, so a panel shows only what the
    caller may read (`forbidden`, `not_found` otherwise), each under its own timeout (`timeout`),
    so one slow target does not hold back the others."""
    dashboard = service.read(await service.get(session, principal, dashboard_id))
    await session.commit()  # no transaction held open while the queries run
    return AggregateRead(dashboard=dashboard, slots=await service.aggregate(clients, dashboard.panels))
