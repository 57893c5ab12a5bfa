"""HTTP routes of `workflow`. Paths are relative to `/api/workflow` at the gateway."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, status
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.workflow import service
from coder.services.workflow.engine import wake_all
from coder.services.workflow.identity import Delegations
from coder.services.workflow.models import Attempt, Definition, Run, Version
from coder.services.workflow.schemas import (
    AttemptRead,
    Decision,
    DefinitionCreate,
    DefinitionRead,
    DefinitionSpec,
    HistoryRead,
    RunCreate,
    RunRead,
    RunSummary,
    VersionCreate,
    VersionRead,
)
from coder.services.workflow.settings import WorkflowSettings
from coder.shared.auth import Principal, require
from coder.shared.db import SessionDep
from coder.shared.deps import RuntimeDep, settings_of
from coder.shared.errors import problem_responses
from coder.shared.pagination import Page, PageDep, paginate
from coder.shared.repository import OrgScoped, scoped

router = APIRouter(prefix="/v1", tags=["workflow"])

Reader = Annotated[Principal, require("workflow:read")]
Writer = Annotated[Principal, require("workflow:write")]
Runner = Annotated[Principal, require("workflow:run")]
Approver = Annotated[Principal, require("workflow:approve")]
SettingsDep = Annotated[WorkflowSettings, Depends(settings_of(WorkflowSettings))]
StepPath = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{0,63}$", description="The step's name")]
# Taking a delegation at the gateway: refused for the user (401, 403) or the gateway unreachable (503).
DELEGATION_PROBLEMS = {403, 503}


def _delegations(runtime: RuntimeDep) -> Delegations:
    return Delegations(runtime.clients, runtime.settings.workload_secrets.get("workflow"))


DelegationsDep = Annotated[Delegations, Depends(_delegations)]


def _wake_on_commit(session: AsyncSession) -> None:
    """The engines of this process look for ready steps as soon as the request's transaction commits."""
    if not session.info.get("_workflow_wake"):
        session.info["_workflow_wake"] = True
        event.listen(session.sync_session, "after_commit", lambda _s: wake_all(), once=True)


def _definition_read(definition: Definition) -> DefinitionRead:
    return DefinitionRead.model_validate(definition, from_attributes=True)


async def _owner_delegation(
    body: DefinitionSpec, delegations: Delegations, settings: WorkflowSettings
) -> str | None:
    """Scheduled and triggered runs act for the definition's owner: their delegation, taken now."""
    if body.schedule is None and body.trigger is None:
        return None
    return await delegations.take(settings.trigger_delegation_seconds)


# --- definitions ---


@router.post(
    "/definitions",
    response_model=DefinitionRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({409} | DELEGATION_PROBLEMS),
)
async def create_definition(
    body: DefinitionCreate,
    session: SessionDep,
    principal: Writer,
    runtime: RuntimeDep,
    delegations: DelegationsDep,
    settings: SettingsDep,
) -> DefinitionRead:
    """Create a definition (its version 1): a DAG of steps, checked (names, dependencies, no cycle,
    targets, event types, the cron expression) with a 422 naming the field."""
    service.validate(body, runtime.service_urls)
    delegation = await _owner_delegation(body, delegations, settings)
    definition = await service.create_definition(
        session, principal.org_id, principal.subject, body, delegation
    )
    return _definition_read(definition)


@router.get("/definitions", response_model=Page[DefinitionRead])
async def list_definitions(session: SessionDep, principal: Reader, params: PageDep) -> Page[DefinitionRead]:
    """The organization's definitions, newest first."""
    query = scoped(Definition, principal.org_id)
    rows = await paginate(session, query, (Definition.created_at, Definition.id), params, descending=True)
    return rows.page(_definition_read)


@router.get("/definitions/{definition_id}", response_model=DefinitionRead)
async def read_definition(definition_id: uuid.UUID, session: SessionDep, principal: Reader) -> DefinitionRead:
    definition = await service.definitions(session, principal.org_id).get(
        definition_id, Definition.id == definition_id
    )
    return _definition_read(definition)


@router.post(
    "/definitions/{definition_id}/versions",
    response_model=VersionRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(DELEGATION_PROBLEMS),
)
async def create_version(
    definition_id: uuid.UUID,
    body: VersionCreate,
    session: SessionDep,
    principal: Writer,
    runtime: RuntimeDep,
    delegations: DelegationsDep,
    settings: SettingsDep,
) -> VersionRead:
    """A new, immutable version; new runs take it, running runs keep theirs. Its author becomes the
    owner that scheduled and triggered runs act for."""
    service.validate(body, runtime.service_urls)
    delegation = await _owner_delegation(body, delegations, settings)
    definition = await service.definitions(session, principal.org_id).get(
        definition_id, Definition.id == definition_id, lock=True
    )
    version = await service.add_version(session, definition, principal.subject, body, delegation)
    return VersionRead.model_validate(version, from_attributes=True)


@router.get("/definitions/{definition_id}/versions/{version}", response_model=VersionRead)
async def read_version(
    definition_id: uuid.UUID,
    version: Annotated[int, Path(ge=1, le=2**31 - 1)],
    session: SessionDep,
    principal: Reader,
) -> VersionRead:
    found = await OrgScoped(Version, session, principal.org_id, "version").get(
        f"{definition_id} v{version}", Version.definition_id == definition_id, Version.version == version
    )
    return VersionRead.model_validate(found, from_attributes=True)


# --- runs ---


@router.post(
    "/definitions/{definition_id}/runs",
    response_model=RunRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(DELEGATION_PROBLEMS),
)
async def start_run(
    definition_id: uuid.UUID,
    body: RunCreate,
    session: SessionDep,
    principal: Runner,
    delegations: DelegationsDep,
    settings: SettingsDep,
) -> RunRead:
    """Start a run of the definition's latest version. Its steps act for you (a delegation the
    gateway issues for this run), never with more than your permissions."""
    # Taken before the first query: the request holds no database connection while the gateway works.
    delegation = await delegations.take(settings.run_delegation_seconds)
    definition = await service.definitions(session, principal.org_id).get(
        definition_id, Definition.id == definition_id
    )
    version = await service.latest(session, definition)
    run = await service.start_run(
        session,
        definition,
        version,
        actor=principal.subject,
        delegation=delegation,
        trigger="api",
        input=body.input,
    )
    _wake_on_commit(session)
    return await service.read_run(session, run)


@router.get("/runs", response_model=Page[RunSummary])
async def list_runs(
    session: SessionDep,
    principal: Reader,
    params: PageDep,
    definition_id: Annotated[uuid.UUID | None, Query(description="Only this definition's runs")] = None,
    run_status: Annotated[
        Literal["running", "completed", "failed", "cancelled"] | None, Query(alias="status")
    ] = None,
) -> Page[RunSummary]:
    """The organization's runs, newest first."""
    query = scoped(Run, principal.org_id)
    if definition_id is not None:
        query = query.where(Run.definition_id == definition_id)
    if run_status is not None:
        query = query.where(Run.status == run_status)
    rows = await paginate(session, query, (Run.created_at, Run.id), params, descending=True)
    return rows.page(lambda r: RunSummary.model_validate(r, from_attributes=True))


@router.get("/runs/{run_id}", response_model=RunRead)
async def read_run(run_id: uuid.UUID, session: SessionDep, principal: Reader) -> RunRead:
    """A run, with each step's status, attempts, output and error."""
    run = await service.runs(session, principal.org_id).get(run_id, Run.id == run_id)
    return await service.read_run(session, run)


@router.get("/runs/{run_id}/history", response_model=HistoryRead)
async def run_history(run_id: uuid.UUID, session: SessionDep, principal: Reader) -> HistoryRead:
    """Every attempt of every step (input, output, error, worker, timing), in the order they started."""
    run = await service.runs(session, principal.org_id).get(run_id, Run.id == run_id)
    attempts = (
        await session.execute(select(Attempt).where(Attempt.run_id == run.id).order_by(Attempt.id))
    ).scalars()
    return HistoryRead(
        run_id=run.id,
        attempts=[
            {"step": a.step, **AttemptRead.model_validate(a, from_attributes=True).model_dump(mode="json")}
            for a in attempts
        ],
    )


@router.post("/runs/{run_id}/cancel", response_model=RunRead, responses=problem_responses({409}))
async def cancel_run(run_id: uuid.UUID, session: SessionDep, principal: Runner) -> RunRead:
    """Cancel a running run: its unfinished steps end cancelled, and a step in flight is not recorded."""
    run = await service.runs(session, principal.org_id).get(run_id, Run.id == run_id, lock=True)
    await service.cancel_run(session, run)
    return await service.read_run(session, run)


async def _decide(
    session: AsyncSession, principal: Principal, run_id: uuid.UUID, step: str, approved: bool, body: Decision
) -> RunRead:
    run = await service.runs(session, principal.org_id).get(run_id, Run.id == run_id, lock=True)
    if run.status in service.RUN_DONE:
        raise service.RunOver(f"run {run.id} is already {run.status}")
    await service.decide(session, run, step, principal.subject, approved, body.comment)
    _wake_on_commit(session)
    return await service.read_run(session, run)


@router.post(
    "/runs/{run_id}/steps/{step}/approve", response_model=RunRead, responses=problem_responses({409})
)
async def approve_step(
    run_id: uuid.UUID, step: StepPath, body: Decision, session: SessionDep, principal: Approver
) -> RunRead:
    """Approve a waiting approval step: the run goes on."""
    return await _decide(session, principal, run_id, step, True, body)


@router.post("/runs/{run_id}/steps/{step}/reject", response_model=RunRead, responses=problem_responses({409}))
async def reject_step(
    run_id: uuid.UUID, step: StepPath, body: Decision, session: SessionDep, principal: Approver
) -> RunRead:
    """Reject a waiting approval step: the run fails."""
    return await _decide(session, principal, run_id, step, False, body)
