"""Fix tasks from failing quality gates: the consumer of `quality.gate.changed`.

A quality project linked to a plan (its `plan_id`, carried by the event) gets one task per failing
condition when its gate turns ERROR. Idempotent: a condition that already has an open task (not done,
not cancelled) in the plan, by its title, gets no second one, so a redelivery or a gate that fails
again before the fix adds nothing."""

from __future__ import annotations

import logging
import uuid

from coder.services.planning.models import Plan, Task
from coder.services.planning.schemas import Priority, Status, TaskCreate
from coder.services.planning.service import NewTask, add_tasks, plans
from coder.shared.contracts.quality import FailingCondition, GateChanged
from coder.shared.events import CloudEvent, EventContext
from coder.shared.repository import scoped

log = logging.getLogger(__name__)

ACTOR = "quality"  # created_by of the tasks: the target that asked for them
CLOSED = (Status.DONE.value, Status.CANCELLED.value)
OPS = {"lt": "<", "gt": ">"}


def _ref(gate: GateChanged) -> str:
    return f"branch {gate.branch}" if gate.branch is not None else f"pull request {gate.pull_request}"


def fix_title(gate: GateChanged, condition: FailingCondition) -> str:
    return f"Quality gate: fix {condition.metric} of {gate.project_key} ({_ref(gate)})"[:200]


def fix_task(gate: GateChanged, condition: FailingCondition) -> TaskCreate:
    op = OPS.get(condition.op, condition.op)
    return TaskCreate(
        title=fix_title(gate, condition),
        description=(
            f"The quality gate of {gate.project_key} on {_ref(gate)} fails: {condition.metric} is "
            f"{condition.actual:g} ({op} {condition.threshold:g}) on new code."
        )[:20_000],
        details=f"Analysis {gate.analysis_id} of commit {gate.commit}.",
        test_strategy=f"The gate of {gate.project_key} on {_ref(gate)} answers OK for {condition.metric}.",
        priority=Priority.HIGH,
    )


async def on_quality_gate_changed(event: CloudEvent, context: EventContext) -> None:
    session = context.session
    gate = event.data_as(GateChanged)
    if gate.status != "ERROR" or gate.plan_id is None or not gate.failing:
        return
    org_id = event.orgid
    if not org_id:
        raise ValueError(f"event {event.id} has no orgid: it cannot be attributed to an organization")
    try:
        plan_id = uuid.UUID(gate.plan_id)
    except ValueError:
        log.warning("quality.gate.changed names a plan id that is no UUID", extra={"event_id": event.id})
        return
    # Locked: the tasks' ids, and two gate events of one plan, are taken one after the other.
    plan = await plans(session, org_id).find(Plan.id == plan_id, lock=True)
    if plan is None:
        log.warning("quality.gate.changed names no plan of its org", extra={"event_id": event.id})
        return
    query = (
        scoped(Task, org_id)
        .with_only_columns(Task.title)
        .where(Task.plan_id == plan.id, Task.status.not_in(CLOSED))
    )
    open_titles = set((await session.execute(query)).scalars())
    batch = [
        NewTask(fix_task(gate, condition))
        for condition in gate.failing
        if fix_title(gate, condition) not in open_titles
    ]
    if batch:
        await add_tasks(session, org_id, plan, ACTOR, batch)
