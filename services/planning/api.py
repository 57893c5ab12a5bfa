"""HTTP routes of `planning` (Task Master style). Paths are relative to `/api/planning` at the gateway."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from coder.services.planning import assistant, service
from coder.services.planning.models import Plan, Task
from coder.services.planning.schemas import (
    ExpandedRead,
    GeneratedPlanRead,
    NextTaskRead,
    PlanCreate,
    PlanGenerate,
    PlanRead,
    PlanUpdate,
    Priority,
    Status,
    StatusChange,
    TaskCreate,
    TaskExpand,
    TaskId,
    TaskRead,
    TaskUpdate,
    TeamId,
)
from coder.shared.auth import Principal, require
from coder.shared.db import SessionDep
from coder.shared.deps import ClientsDep
from coder.shared.errors import InvalidField, problem_responses
from coder.shared.pagination import Page, PageDep, paginate
from coder.shared.repository import scoped

router = APIRouter(prefix="/v1", tags=["planning"])

Reader = Annotated[Principal, require("planning:read")]
Writer = Annotated[Principal, require("planning:write")]
Generator = Annotated[Principal, require("planning:generate")]
TaskPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="The task's id in its plan")]
# What a call through `ai` can answer besides the route's own refusals (assistant.refusal).
AI_PROBLEMS = {403, 422, 429, 502, 503}


def _plan_read(plan: Plan) -> PlanRead:
    return PlanRead.model_validate(plan, from_attributes=True)


# --- plans ---


@router.post("/plans", response_model=PlanRead, status_code=status.HTTP_201_CREATED)
async def create_plan(body: PlanCreate, session: SessionDep, principal: Writer) -> PlanRead:
    """Create an empty plan, organization-wide or for one team."""
    return _plan_read(await service.create_plan(session, principal.org_id, principal.subject, body))


@router.get("/plans", response_model=Page[PlanRead])
async def list_plans(
    session: SessionDep,
    principal: Reader,
    params: PageDep,
    team_id: Annotated[TeamId | None, Query(description="Only this team's plans")] = None,
) -> Page[PlanRead]:
    """The organization's plans, newest first."""
    query = scoped(Plan, principal.org_id)
    if team_id is not None:
        query = query.where(Plan.team_id == team_id)
    rows = await paginate(session, query, (Plan.created_at, Plan.id), params, descending=True)
    return rows.page(_plan_read)


@router.get("/plans/{plan_id}", response_model=PlanRead)
async def read_plan(plan_id: uuid.UUID, session: SessionDep, principal: Reader) -> PlanRead:
    return _plan_read(await service.plans(session, principal.org_id).get(plan_id, Plan.id == plan_id))


@router.patch("/plans/{plan_id}", response_model=PlanRead)
async def update_plan(
    plan_id: uuid.UUID, body: PlanUpdate, session: SessionDep, principal: Writer
) -> PlanRead:
    """Change the title, the description or the team (`team_id: null` makes it organization-wide)."""
    return _plan_read(await service.update_plan(session, principal.org_id, plan_id, body))


@router.delete("/plans/{plan_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_plan(plan_id: uuid.UUID, session: SessionDep, principal: Writer) -> Response:
    """Delete the plan with all its tasks (one act: no task event per task)."""
    await service.plans(session, principal.org_id).delete(plan_id, Plan.id == plan_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/plans/generate",
    response_model=GeneratedPlanRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(AI_PROBLEMS),
)
async def generate_plan(
    body: PlanGenerate, session: SessionDep, principal: Generator, clients: ClientsDep
) -> GeneratedPlanRead:
    """Write a plan of tasks from a prompt with a model of `ai` (structured output). The plan and its
    tasks are stored together or, when the model's answer is unusable (502 naming why), not at all."""
    system, user = assistant.plan_prompt(body.prompt, body.max_tasks)
    draft = await assistant.ask(clients, body.model, system, user, assistant.DraftPlan, "plan")
    if len(draft.tasks) > body.max_tasks:
        raise assistant.BadModelAnswer(
            f"the model gave {len(draft.tasks)} tasks, at most {body.max_tasks} asked"
        )
    create = PlanCreate(title=body.title or draft.title, description=body.prompt, team_id=body.team_id)
    plan = await service.create_plan(session, principal.org_id, principal.subject, create)
    tasks = await assistant.add_drafts(
        session, principal.org_id, plan, principal.subject, draft.tasks, field="tasks"
    )
    return GeneratedPlanRead(plan=_plan_read(plan), tasks=[service.task_read(t) for t in tasks])


# --- tasks ---


@router.post(
    "/plans/{plan_id}/tasks",
    response_model=TaskRead,
    status_code=status.HTTP_201_CREATED,
)
async def create_task(
    plan_id: uuid.UUID, body: TaskCreate, session: SessionDep, principal: Writer
) -> TaskRead:
    """Add a task (a subtask with `parent_id`); its id is the plan's next. Dependencies must be tasks of
    the plan (422 naming `dependencies.<n>`)."""
    return service.task_read(
        await service.create_task(session, principal.org_id, plan_id, principal.subject, body)
    )


@router.get("/plans/{plan_id}/tasks", response_model=Page[TaskRead])
async def list_tasks(
    plan_id: uuid.UUID,
    session: SessionDep,
    principal: Reader,
    params: PageDep,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    priority: Priority | None = None,
    parent_id: Annotated[TaskId | None, Query(description="Only the subtasks of this task")] = None,
) -> Page[TaskRead]:
    """The plan's tasks by id."""
    query = scoped(Task, principal.org_id).where(Task.plan_id == plan_id)
    if status_ is not None:
        query = query.where(Task.status == status_.value)
    if priority is not None:
        query = query.where(Task.priority == service.PRIORITY_RANK[priority])
    if parent_id is not None:
        query = query.where(Task.parent_id == parent_id)
    rows = await paginate(session, query, (Task.id,), params)
    if not rows.items:  # an empty page of a plan, or no plan (checked after the cursor: 400 first)
        await service.plans(session, principal.org_id).get(plan_id, Plan.id == plan_id)
    return rows.page(service.task_read)


@router.get("/plans/{plan_id}/next", response_model=NextTaskRead)
async def next_task(plan_id: uuid.UUID, session: SessionDep, principal: Reader) -> NextTaskRead:
    """The task to work on next: a pending subtask of an in-progress task first, else a pending top-level
    task; every dependency done; the highest priority, then the lowest id. `task` is null when none is."""
    await service.plans(session, principal.org_id).get(plan_id, Plan.id == plan_id)
    task = await service.next_task(session, principal.org_id, plan_id)
    return NextTaskRead(task=None if task is None else service.task_read(task))


@router.get("/plans/{plan_id}/tasks/{task_id}", response_model=TaskRead)
async def read_task(
    plan_id: uuid.UUID, task_id: TaskPath, session: SessionDep, principal: Reader
) -> TaskRead:
    return service.task_read(await service.get_task(session, principal.org_id, plan_id, task_id))


@router.patch("/plans/{plan_id}/tasks/{task_id}", response_model=TaskRead)
async def update_task(
    plan_id: uuid.UUID, task_id: TaskPath, body: TaskUpdate, session: SessionDep, principal: Writer
) -> TaskRead:
    """Change a task's content; a dependency change that would close a cycle is refused (422 naming it,
    e.g. `3 -> 5 -> 3`)."""
    task = await service.update_task(session, principal.org_id, plan_id, task_id, principal.subject, body)
    return service.task_read(task)


@router.post(
    "/plans/{plan_id}/tasks/{task_id}/status",
    response_model=TaskRead,
    responses=problem_responses({409}),
)
async def set_status(
    plan_id: uuid.UUID, task_id: TaskPath, body: StatusChange, session: SessionDep, principal: Writer
) -> TaskRead:
    """Move a task to another status along the transition table (409 `illegal-transition` naming
    `from` and `to` otherwise); starting or finishing it needs every dependency done (409 `blocked`)."""
    task = await service.set_status(
        session, principal.org_id, plan_id, task_id, principal.subject, body.status
    )
    return service.task_read(task)


@router.delete(
    "/plans/{plan_id}/tasks/{task_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses({409}),
)
async def delete_task(
    plan_id: uuid.UUID, task_id: TaskPath, session: SessionDep, principal: Writer
) -> Response:
    """Delete a task and its subtasks; refused (409 naming them) while other tasks depend on them."""
    await service.delete_task(session, principal.org_id, plan_id, task_id, principal.subject)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/plans/{plan_id}/tasks/{task_id}/expand",
    response_model=ExpandedRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(AI_PROBLEMS),
)
async def expand_task(
    plan_id: uuid.UUID,
    task_id: TaskPath,
    body: TaskExpand,
    session: SessionDep,
    principal: Generator,
    clients: ClientsDep,
) -> ExpandedRead:
    """Break a top-level task into subtasks with a model of `ai` (structured output): stored together
    or, when the model's answer is unusable (502 naming why), not at all."""
    task = await service.get_task(session, principal.org_id, plan_id, task_id)
    if task.parent_id is not None:
        raise InvalidField("path.task_id", f"task {task_id} is a subtask: only top-level tasks expand")
    system, user = assistant.expand_prompt(
        task.title, task.description, task.details, body.count, body.prompt
    )
    draft = await assistant.ask(clients, body.model, system, user, assistant.DraftSubtasks, "subtasks")
    if len(draft.subtasks) > body.count:
        raise assistant.BadModelAnswer(f"the model gave {len(draft.subtasks)} subtasks, {body.count} asked")
    # The model took its time: the plan is locked only now, and the task must still be there.
    plan = await service.lock_plan(session, principal.org_id, plan_id)
    await service.get_task(session, principal.org_id, plan_id, task_id)
    subtasks = await assistant.add_drafts(
        session,
        principal.org_id,
        plan,
        principal.subject,
        draft.subtasks,
        field="subtasks",
        parent_id=task_id,
    )
    return ExpandedRead(subtasks=[service.task_read(t) for t in subtasks])
