"""Plans and tasks: the rules every write keeps (dependencies in the plan and never a cycle, one level
of subtasks, statuses along the transition table) and the "next task" query."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from coder.services.planning.models import Base, Plan, Task
from coder.services.planning.schemas import (
    CheckRead,
    PlanCreate,
    PlanUpdate,
    Priority,
    Status,
    TaskCreate,
    TaskRead,
    TaskUpdate,
)
from coder.shared.errors import Conflict, InvalidField
from coder.shared.repository import OrgScoped, owned_by, scoped

PRIORITY_RANK = {Priority.HIGH: 1, Priority.MEDIUM: 2, Priority.LOW: 3}
PRIORITY_OF = {rank: priority for priority, rank in PRIORITY_RANK.items()}

# Where a task may go from each status. Staying where it is is always allowed (and changes nothing).
TRANSITIONS: Mapping[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.IN_PROGRESS, Status.DEFERRED, Status.CANCELLED}),
    Status.IN_PROGRESS: frozenset(
        {Status.REVIEW, Status.DONE, Status.PENDING, Status.DEFERRED, Status.CANCELLED}
    ),
    Status.REVIEW: frozenset({Status.DONE, Status.IN_PROGRESS}),
    Status.DONE: frozenset({Status.IN_PROGRESS}),  # reopened
    Status.DEFERRED: frozenset({Status.PENDING, Status.CANCELLED}),
    Status.CANCELLED: frozenset({Status.PENDING}),
}
# Statuses that mean work has started on the task: only once every dependency is done.
STARTED = frozenset({Status.IN_PROGRESS, Status.REVIEW, Status.DONE})


class IllegalTransition(Conflict):
    slug, title = "illegal-transition", "Illegal status transition"

    def __init__(self, task_id: int, current: Status, wanted: Status) -> None:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none"
        super().__init__(f"task {task_id} cannot go from {current} to {wanted} (from {current}: {allowed})")
        # `from` is a keyword: the extensions are set here rather than passed by name.
        self.extensions.update({"from": current.value, "to": wanted.value})


class Blocked(Conflict):
    slug, title = "blocked", "Dependencies not done"

    def __init__(self, task_id: int, wanted: Status, blocking: list[int]) -> None:
        names = ", ".join(map(str, blocking))
        super().__init__(
            f"task {task_id} cannot be {wanted} before its dependencies are done: {names}",
            blocking=blocking,
        )


class DependedOn(Conflict):
    slug, title = "depended-on", "Other tasks depend on it"

    def __init__(self, task_id: int, dependents: list[int]) -> None:
        names = ", ".join(map(str, dependents))
        super().__init__(
            f"task {task_id} (or a subtask of it) is a dependency of {names}: change theirs first",
            dependents=dependents,
        )


def plans(session: AsyncSession, org_id: str) -> OrgScoped[Plan]:
    return OrgScoped(Plan, session, org_id, "plan")


def tasks(session: AsyncSession, org_id: str) -> OrgScoped[Task]:
    return OrgScoped(Task, session, org_id, "task")


# --- the dependency graph ---


def find_cycle(graph: Mapping[int, Sequence[int]]) -> list[int] | None:
    """A cycle of `graph` (task -> the tasks it depends on) as a closed path, e.g. [3, 5, 3], or None.

    Iterative depth-first search, so a plan's size never meets Python's recursion limit."""
    state: dict[int, int] = {}  # 1 on the current path, 2 finished
    for root in sorted(graph):
        if root in state:
            continue
        path: list[int] = [root]
        pending: list[Iterator[int]] = [iter(graph.get(root, ()))]
        state[root] = 1
        while pending:
            step = next(pending[-1], None)
            if step is None:
                state[path.pop()] = 2
                pending.pop()
            elif state.get(step) == 1:
                return [*path[path.index(step) :], step]
            elif step not in state:
                state[step] = 1
                path.append(step)
                pending.append(iter(graph.get(step, ())))
    return None


def cycle_text(cycle: Sequence[int]) -> str:
    return " -> ".join(map(str, cycle))


async def _undone(session: AsyncSession, org_id: str, plan_id: uuid.UUID, ids: Sequence[int]) -> int:
    """How many of the plan's tasks `ids` are not done."""
    query = (
        scoped(Task, org_id)
        .with_only_columns(func.count())
        .where(Task.plan_id == plan_id, Task.id.in_(ids), Task.status != Status.DONE.value)
    )
    return int(await session.scalar(query) or 0)


async def _graph(session: AsyncSession, org_id: str, plan_id: uuid.UUID) -> dict[int, list[int]]:
    query = scoped(Task, org_id).with_only_columns(Task.id, Task.dependencies).where(Task.plan_id == plan_id)
    return {task_id: list(deps) for task_id, deps in (await session.execute(query)).all()}


# --- plans ---


async def create_plan(session: AsyncSession, org_id: str, actor: str, body: PlanCreate) -> Plan:
    plan = Plan(
        org_id=org_id, team_id=body.team_id, title=body.title, description=body.description, created_by=actor
    )
    session.add(plan)
    await session.flush()
    await session.refresh(plan)
    return plan


async def update_plan(session: AsyncSession, org_id: str, plan_id: uuid.UUID, body: PlanUpdate) -> Plan:
    plan = await plans(session, org_id).get(plan_id, Plan.id == plan_id, lock=True)
    if body.title is not None:
        plan.title = body.title
    if body.description is not None:
        plan.description = body.description
    if "team_id" in body.model_fields_set:
        plan.team_id = body.team_id
    await session.flush()
    await session.refresh(plan)
    return plan


async def lock_plan(session: AsyncSession, org_id: str, plan_id: uuid.UUID) -> Plan:
    """The plan, locked: every change to its tasks' ids or dependency graph holds this lock, so the
    graph checked is the graph written."""
    return await plans(session, org_id).get(plan_id, Plan.id == plan_id, lock=True)


# --- tasks ---


def task_read(task: Task) -> TaskRead:
    return TaskRead(
        id=task.id,
        plan_id=task.plan_id,
        parent_id=task.parent_id,
        title=task.title,
        description=task.description,
        details=task.details,
        test_strategy=task.test_strategy,
        status=Status(task.status),
        priority=PRIORITY_OF[task.priority],
        dependencies=list(task.dependencies),
        acceptance_checks=[CheckRead.model_validate(c) for c in task.acceptance_checks],
        complexity=task.complexity,
        created_at=task.created_at,
        updated_at=task.updated_at,
    )


def _event(task: Task, actor: str, **extra: Any) -> dict[str, Any]:
    return {
        "plan_id": str(task.plan_id),
        "task_id": task.id,
        "parent_id": task.parent_id,
        "title": task.title,
        "status": task.status,
        "priority": PRIORITY_OF[task.priority].value,
        "dependencies": list(task.dependencies),
        "actor": actor,
        **extra,
    }


def _subject(task: Task) -> str:
    return f"{task.plan_id}/{task.id}"


@dataclass
class NewTask:
    """A task to add, with its dependencies and parent given either as ids already in the plan or as
    `refs` to other new tasks of the same batch (an AI answer numbers its own tasks)."""

    body: TaskCreate
    key: int | None = None  # this task's number in its batch, for `refs`
    refs: list[int] = field(default_factory=list)  # batch numbers of the new tasks it depends on


class BadBatch(Exception):
    """A batch that breaks a plan rule; `field` and `message` say where and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


async def add_tasks(
    session: AsyncSession,
    org_id: str,
    plan: Plan,
    actor: str,
    batch: Sequence[NewTask],
    *,
    field_prefix: str = "",
) -> list[Task]:
    """Add `batch` to the locked `plan` in one go: every task is checked (dependencies in the plan,
    parents top-level tasks of it, no cycle) before any is written, and a refusal raises BadBatch
    naming the field (`<prefix><index>.dependencies.<n>`)."""
    graph = await _graph(session, org_id, plan.id)
    shape = (
        scoped(Task, org_id)
        .with_only_columns(Task.id, Task.parent_id, Task.status)
        .where(Task.plan_id == plan.id)
    )
    parents: dict[int, int | None] = {}
    done: set[int] = set()
    for existing, parent_id, status in (await session.execute(shape)).all():
        parents[existing] = parent_id
        if status == Status.DONE.value:
            done.add(existing)
    first = plan.next_task_id
    ids = {item.key: first + index for index, item in enumerate(batch) if item.key is not None}
    rows: list[Task] = []
    for index, item in enumerate(batch):
        at = f"{field_prefix}{index}." if field_prefix or len(batch) > 1 else ""
        task_id = first + index
        body = item.body
        deps: list[int] = []
        for n, dep in enumerate(body.dependencies):
            if dep not in graph:
                raise BadBatch(f"{at}dependencies.{n}", f"no task {dep} in this plan")
            deps.append(dep)
        for n, ref in enumerate(item.refs):
            if ref not in ids or ids[ref] == task_id:
                what = "itself" if ids.get(ref) == task_id else f"task {ref}, which is not in the answer"
                raise BadBatch(f"{at}dependencies.{n}", f"depends on {what}")
            deps.append(ids[ref])
        deps = list(dict.fromkeys(deps))
        if body.parent_id is not None:
            if body.parent_id not in parents:
                raise BadBatch(f"{at}parent_id", f"no task {body.parent_id} in this plan")
            if parents[body.parent_id] is not None:
                raise BadBatch(
                    f"{at}parent_id", f"task {body.parent_id} is itself a subtask (one level only)"
                )
        graph[task_id] = deps
        parents[task_id] = body.parent_id
        rows.append(
            Task(
                plan_id=plan.id,
                id=task_id,
                org_id=org_id,
                parent_id=body.parent_id,
                title=body.title,
                description=body.description,
                details=body.details,
                test_strategy=body.test_strategy,
                status=Status.PENDING.value,
                priority=PRIORITY_RANK[body.priority],
                dependencies=deps,
                blockers=sum(1 for dep in deps if dep not in done),
                acceptance_checks=[c.model_dump() for c in body.acceptance_checks],
                complexity=body.complexity,
                created_by=actor,
            )
        )
    # Only new tasks can close a cycle here: nothing already stored depends on them.
    cycle = find_cycle(graph)
    if cycle is not None:
        index = next(i for i, t in enumerate(rows) if t.id in cycle)
        at = f"{field_prefix}{index}." if field_prefix or len(batch) > 1 else ""
        raise BadBatch(f"{at}dependencies", f"would close the cycle {cycle_text(cycle)}")
    plan.next_task_id = first + len(batch)
    session.add_all(rows)
    await session.flush()
    await session.refresh(plan)  # its updated_at moved with next_task_id
    for row in rows:
        await session.refresh(row)
        data = _event(row, actor)
        await Base.events.publish(
            session, "planning.task.created", data, org_id=org_id, subject=_subject(row)
        )
    return rows


async def create_task(
    session: AsyncSession, org_id: str, plan_id: uuid.UUID, actor: str, body: TaskCreate
) -> Task:
    plan = await lock_plan(session, org_id, plan_id)
    try:
        (task,) = await add_tasks(session, org_id, plan, actor, [NewTask(body)])
    except BadBatch as bad:
        raise InvalidField(bad.field, bad.message) from None
    return task


async def get_task(
    session: AsyncSession, org_id: str, plan_id: uuid.UUID, task_id: int, *, lock: bool = False
) -> Task:
    return await tasks(session, org_id).get(task_id, Task.plan_id == plan_id, Task.id == task_id, lock=lock)


async def update_task(
    session: AsyncSession, org_id: str, plan_id: uuid.UUID, task_id: int, actor: str, body: TaskUpdate
) -> Task:
    await lock_plan(session, org_id, plan_id)
    task = await get_task(session, org_id, plan_id, task_id, lock=True)
    changed: list[str] = []
    if body.dependencies is not None:
        graph = await _graph(session, org_id, plan_id)
        for n, dep in enumerate(body.dependencies):
            if dep not in graph:
                raise InvalidField(f"dependencies.{n}", f"no task {dep} in this plan")
        graph[task_id] = list(dict.fromkeys(body.dependencies))
        cycle = find_cycle(graph)
        if cycle is not None:
            raise InvalidField("dependencies", f"would close the cycle {cycle_text(cycle)}", cycle=cycle)
        if graph[task_id] != list(task.dependencies):
            task.dependencies = graph[task_id]
            task.blockers = await _undone(session, org_id, plan_id, task.dependencies)
            changed.append("dependencies")
    values: dict[str, Any] = {
        "title": body.title,
        "description": body.description,
        "details": body.details,
        "test_strategy": body.test_strategy,
        "priority": None if body.priority is None else PRIORITY_RANK[body.priority],
        "acceptance_checks": None
        if body.acceptance_checks is None
        else [c.model_dump() for c in body.acceptance_checks],
    }
    for name, value in values.items():
        if value is not None and getattr(task, name) != value:
            setattr(task, name, value)
            changed.append(name)
    if "complexity" in body.model_fields_set and task.complexity != body.complexity:
        task.complexity = body.complexity
        changed.append("complexity")
    if changed:
        await session.flush()
        await session.refresh(task)
        data = _event(task, actor, changed=changed)
        await Base.events.publish(
            session, "planning.task.updated", data, org_id=org_id, subject=_subject(task)
        )
    return task


async def set_status(
    session: AsyncSession, org_id: str, plan_id: uuid.UUID, task_id: int, actor: str, wanted: Status
) -> Task:
    # The plan's lock: the dependents' blocker counts below change with no other write in between.
    await lock_plan(session, org_id, plan_id)
    task = await get_task(session, org_id, plan_id, task_id, lock=True)
    current = Status(task.status)
    if wanted == current:
        return task
    if wanted not in TRANSITIONS[current]:
        raise IllegalTransition(task_id, current, wanted)
    if wanted in STARTED and task.blockers:
        undone = (
            scoped(Task, org_id)
            .with_only_columns(Task.id)
            .where(Task.plan_id == plan_id, Task.id.in_(task.dependencies), Task.status != Status.DONE.value)
        )
        raise Blocked(task_id, wanted, sorted((await session.scalars(undone)).all()))
    if Status.DONE in (current, wanted):
        # Done, or done no more: one blocker less, or more, for every task depending on this one.
        dependents = (
            update(Task)
            .where(owned_by(Task, org_id), Task.plan_id == plan_id, Task.dependencies.contains([task_id]))
            .values(blockers=Task.blockers + (-1 if wanted == Status.DONE else 1))
            .execution_options(synchronize_session=False)
        )
        await session.execute(dependents)
    task.status = wanted.value
    await session.flush()
    await session.refresh(task)
    data = _event(task, actor, previous=current.value)
    await Base.events.publish(
        session, "planning.task.status_changed", data, org_id=org_id, subject=_subject(task)
    )
    return task


async def delete_task(
    session: AsyncSession, org_id: str, plan_id: uuid.UUID, task_id: int, actor: str
) -> None:
    """Delete a task with its subtasks; refused while a task outside them depends on one of them."""
    await lock_plan(session, org_id, plan_id)
    task = await get_task(session, org_id, plan_id, task_id, lock=True)
    subtasks = list(
        (
            await session.scalars(
                scoped(Task, org_id).where(Task.plan_id == plan_id, Task.parent_id == task_id)
            )
        ).all()
    )
    going = [task, *subtasks]
    ids = [t.id for t in going]
    dependents = (
        scoped(Task, org_id)
        .with_only_columns(Task.id)
        .where(Task.plan_id == plan_id, Task.dependencies.overlap(ids), Task.id.not_in(ids))
    )
    found = sorted((await session.scalars(dependents)).all())
    if found:
        raise DependedOn(task_id, found)
    for row in going:
        data = _event(row, actor)
        await Base.events.publish(
            session, "planning.task.deleted", data, org_id=org_id, subject=_subject(row)
        )
    for row in subtasks:
        await session.delete(row)
    await session.flush()
    await session.delete(task)
    await session.flush()


async def next_task(session: AsyncSession, org_id: str, plan_id: uuid.UUID) -> Task | None:
    """Task Master's next task: a pending subtask of an in-progress task first, else a pending
    top-level task; in both, every dependency done, the highest priority, then the lowest id.

    A task's `blockers` counts its dependencies not done, kept by every write: the ready tasks are an
    index range (plan, pending, 0 blockers) already in (priority, id) order, however many are blocked."""
    pending = scoped(Task, org_id).where(
        Task.plan_id == plan_id, Task.status == Status.PENDING.value, Task.blockers == 0
    )
    order = (Task.priority, Task.id)
    parent = aliased(Task)
    in_started = pending.join(
        parent, and_(parent.plan_id == Task.plan_id, parent.id == Task.parent_id)
    ).where(parent.status == Status.IN_PROGRESS.value)
    found = (await session.scalars(in_started.order_by(*order).limit(1))).first()
    if found is None:
        top = pending.where(Task.parent_id.is_(None))
        found = (await session.scalars(top.order_by(*order).limit(1))).first()
    return found
