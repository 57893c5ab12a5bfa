"""Definitions and runs: validation of a DAG, versions, starting, cancelling and deciding."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.workflow.descriptor import CONSUMES
from coder.services.workflow.models import Base, Definition, Run, Step, Version
from coder.services.workflow.schemas import (
    DefinitionCreate,
    DefinitionSpec,
    HttpStep,
    RunRead,
    StepRead,
)
from coder.shared.errors import Conflict, InvalidField
from coder.shared.events.bus import topic_matches
from coder.shared.repository import OrgScoped

# Statuses a run or step does not leave.
RUN_DONE = frozenset({"completed", "failed", "cancelled"})
STEP_DONE = frozenset({"completed", "failed", "cancelled", "skipped"})
# Targets a step may not call: the gateway's routes are the user's own account, never a run's business.
FORBIDDEN_TARGETS = frozenset({"gateway"})
DEFAULT_WAIT_SECONDS = 3600.0


def now() -> datetime:
    return datetime.now(UTC)


class NotWaiting(Conflict):
    slug, title = "not-waiting", "Step is not waiting for a decision"


class RunOver(Conflict):
    slug, title = "run-over", "Run is over"


def definitions(session: AsyncSession, org_id: str) -> OrgScoped[Definition]:
    return OrgScoped(Definition, session, org_id, "definition")


def runs(session: AsyncSession, org_id: str) -> OrgScoped[Run]:
    return OrgScoped(Run, session, org_id, "run")


def consumed(event_type: str) -> bool:
    return any(topic_matches(pattern, event_type) for pattern in CONSUMES)


def validate(spec: DefinitionSpec, targets: Mapping[str, str]) -> None:
    """Refuse what the schema cannot: duplicate names, unknown dependencies, a cycle, unknown targets,
    event types workflow does not receive and a bad cron expression (422 naming the field)."""
    index: dict[str, int] = {}
    for i, step in enumerate(spec.steps):
        if step.name in index:
            raise InvalidField(
                f"steps.{i}.name", f"{step.name!r} is already the name of steps.{index[step.name]}"
            )
        index[step.name] = i
    for i, step in enumerate(spec.steps):
        for j, need in enumerate(step.needs):
            if need not in index:
                raise InvalidField(f"steps.{i}.needs.{j}", f"no step named {need!r}")
            if need == step.name:
                raise InvalidField(f"steps.{i}.needs.{j}", f"{step.name!r} cannot need itself")
        if isinstance(step, HttpStep) and (step.target in FORBIDDEN_TARGETS or step.target not in targets):
            raise InvalidField(f"steps.{i}.target", f"no target {step.target!r} a step may call")
        kind_target = {"execution": "execution", "ai": "ai"}.get(step.type)
        if kind_target is not None and kind_target not in targets:
            raise InvalidField(f"steps.{i}.type", f"{kind_target} is not known to this platform")
        if step.type == "event" and not consumed(step.event_type):
            raise InvalidField(
                f"steps.{i}.event_type",
                f"workflow receives only {', '.join(CONSUMES)}, not {step.event_type}",
            )
    cycle = find_cycle({s.name: list(s.needs) for s in spec.steps})
    if cycle:
        raise InvalidField(f"steps.{index[cycle[0]]}.needs", "a cycle: " + " -> ".join(cycle))
    if spec.schedule is not None and not _valid_cron(spec.schedule):
        raise InvalidField("schedule", f"{spec.schedule!r} is not a cron expression")
    if spec.trigger is not None and not consumed(spec.trigger.event_type):
        raise InvalidField(
            "trigger.event_type",
            f"workflow receives only {', '.join(CONSUMES)}, not {spec.trigger.event_type}",
        )


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle of the dependency graph as names (the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 on the path, 2 done
    for start in graph:
        if state.get(start):
            continue
        path: list[str] = [start]
        iters = [iter(graph[start])]
        state[start] = 1
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(graph[nxt]))
    return None


def next_fire(schedule: str | None, after: datetime) -> datetime | None:
    if schedule is None:
        return None
    from croniter import croniter  # here, not at the top: its import weighs on every start

    fire: datetime = croniter(schedule, after).get_next(datetime)
    return fire


def _valid_cron(schedule: str) -> bool:
    from croniter import croniter

    return bool(croniter.is_valid(schedule))


def _spec_json(spec: DefinitionSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", exclude={"name"})


async def create_definition(
    session: AsyncSession, org_id: str, owner: str, body: DefinitionCreate, delegation: str | None
) -> Definition:
    taken = await definitions(session, org_id).find(Definition.name == body.name)
    if taken is not None:
        raise InvalidField("name", f"a definition named {body.name!r} exists", status=409)
    definition = Definition(
        id=uuid.uuid4(),
        org_id=org_id,
        name=body.name,
        owner=owner,
        latest_version=1,
        schedule=body.schedule,
        next_fire_at=next_fire(body.schedule, now()),
        trigger_event=body.trigger.event_type if body.trigger else None,
        delegation=delegation,
    )
    session.add(definition)
    await session.flush()
    session.add(
        Version(
            definition_id=definition.id, version=1, org_id=org_id, spec=_spec_json(body), created_by=owner
        )
    )
    await session.flush()
    return definition


async def add_version(
    session: AsyncSession, definition: Definition, author: str, body: DefinitionSpec, delegation: str | None
) -> Version:
    """A new version (the definition row is locked): the author becomes the owner scheduled and
    triggered runs act for, with the delegation taken now."""
    definition.latest_version += 1
    definition.schedule = body.schedule
    definition.next_fire_at = next_fire(body.schedule, now())
    definition.trigger_event = body.trigger.event_type if body.trigger else None
    definition.owner = author
    definition.delegation = delegation
    version = Version(
        definition_id=definition.id,
        version=definition.latest_version,
        org_id=definition.org_id,
        spec=_spec_json(body),
        created_by=author,
    )
    session.add(version)
    await session.flush()
    return version


async def latest(session: AsyncSession, definition: Definition) -> Version:
    version = await session.get(Version, (definition.id, definition.latest_version))
    assert version is not None
    return version


def _payload(run: Run, definition_name: str) -> dict[str, Any]:
    return {
        "run_id": str(run.id),
        "definition_id": str(run.definition_id),
        "definition_name": definition_name,
        "version": run.version,
        "trigger": run.trigger,
        "actor": run.actor,
    }


async def definition_name(session: AsyncSession, run: Run) -> str:
    name = await session.scalar(select(Definition.name).where(Definition.id == run.definition_id))
    return name or ""


async def start_run(
    session: AsyncSession,
    definition: Definition,
    version: Version,
    *,
    actor: str,
    delegation: str | None,
    trigger: str,
    input: dict[str, Any],
) -> Run:
    """A run of `version` with its steps; those needing nothing are ready at once."""
    spec = version.spec
    started = now()
    timeout = spec.get("timeout_seconds")
    run = Run(
        id=uuid.uuid4(),
        org_id=definition.org_id,
        definition_id=definition.id,
        version=version.version,
        status="running",
        trigger=trigger,
        input=input,
        actor=actor,
        delegation=delegation,
        deadline=started + timedelta(seconds=timeout) if timeout else None,
    )
    session.add(run)
    await session.flush()
    for position, step in enumerate(spec["steps"]):
        session.add(
            Step(
                run_id=run.id,
                name=step["name"],
                org_id=run.org_id,
                kind=step["type"],
                position=position,
                needs=list(step.get("needs", [])),
                status="pending" if step.get("needs") else "ready",
                due_at=started,
                state={},
                attempts=0,
                fence=0,
            )
        )
    await session.flush()
    await Base.events.publish(
        session,
        "workflow.run.started",
        _payload(run, definition.name),
        org_id=run.org_id,
        subject=str(run.id),
    )
    return run


async def cancel_run(session: AsyncSession, run: Run) -> None:
    """Cancel a running run: its unfinished steps end as cancelled; a step in flight loses its lease
    (the fence moves), so whatever it answers is not recorded."""
    if run.status in RUN_DONE:
        raise RunOver(f"run {run.id} is already {run.status}")
    stamp = now()
    await session.execute(
        update(Step)
        .where(Step.run_id == run.id, Step.status.not_in(STEP_DONE))
        .values(status="cancelled", fence=Step.fence + 1, finished_at=stamp, worker=None)
    )
    run.status, run.finished_at = "cancelled", stamp
    await session.flush()
    await Base.events.publish(
        session,
        "workflow.run.cancelled",
        _payload(run, await definition_name(session, run)),
        org_id=run.org_id,
        subject=str(run.id),
    )


async def decide(
    session: AsyncSession, run: Run, name: str, approver: str, approved: bool, comment: str
) -> Step:
    """Approve or reject a waiting approval step (the run and the step locked)."""
    step = await session.get(Step, (run.id, name), with_for_update=True)
    if step is None:
        raise InvalidField("path.step", f"run {run.id} has no step {name!r}", status=404, slug="not-found")
    if step.kind != "approval":
        raise NotWaiting(f"step {name!r} is a {step.kind} step, not an approval")
    if step.status != "waiting":
        raise NotWaiting(f"step {name!r} is {step.status}")
    from coder.services.workflow import engine  # the engine records results the same way for every kind

    await engine.record(
        session,
        step,
        fence=step.fence,
        ok=approved,
        output={"approved": approved, "by": approver, "comment": comment},
        error=None if approved else f"rejected by {approver}" + (f": {comment}" if comment else ""),
        retryable=False,
    )
    step.decided_by = approver
    await session.flush()
    return step


async def read_run(session: AsyncSession, run: Run) -> RunRead:
    steps = (
        await session.execute(select(Step).where(Step.run_id == run.id).order_by(Step.position))
    ).scalars()
    return RunRead(
        id=run.id,
        definition_id=run.definition_id,
        version=run.version,
        status=run.status,
        trigger=run.trigger,
        actor=run.actor,
        input=run.input,
        error=run.error,
        deadline=run.deadline,
        created_at=run.created_at,
        finished_at=run.finished_at,
        steps=[StepRead.model_validate(s, from_attributes=True) for s in steps],
    )


async def count_runs(session: AsyncSession, definition_id: uuid.UUID) -> int:
    return int(
        await session.scalar(select(func.count()).select_from(Run).where(Run.definition_id == definition_id))
        or 0
    )
