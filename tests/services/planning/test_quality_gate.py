"""planning's consumer of quality.gate.changed: a failing gate of a project linked to a plan opens one
fix task per failing condition, once."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from coder.services.planning.models import Task
from coder.services.planning.quality_gate import on_quality_gate_changed
from coder.shared.events import CloudEvent, EventContext
from coder.tests.services.planning.factories import create_plan
from coder.tests.services.quality.factories import CLEAN, analyze, block, create_project
from coder.tests.support.platform import Platform, wait_until
from coder.tests.support.tokens import TestSigner


async def plan_tasks(p: Platform, plan_id: str) -> list[Task]:
    async with p.runtime.sessions() as session:
        query = select(Task).where(Task.plan_id == uuid.UUID(plan_id)).order_by(Task.id)
        return list((await session.execute(query)).scalars())


async def deliver(p: Platform, org: str, data: dict[str, Any]) -> None:
    event = CloudEvent.new("quality.gate.changed", data, org_id=org, subject=data["project_key"])
    async with p.runtime.sessions() as session:
        await on_quality_gate_changed(event, EventContext(session=session))
        await session.commit()


async def test_a_failing_gate_opens_one_task_per_condition_once(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    plan = await create_plan(platform, h)
    await create_project(platform, h, "gated", plan_id=plan["id"])
    await analyze(platform, h, "gated", {"a.py": CLEAN}, commit="c1")
    # New code with an unused import and a copied block: two conditions fail.
    files = {"a.py": "import os\n" + CLEAN, "b.py": block("one"), "c.py": block("one")}
    second = await analyze(platform, h, "gated", files, commit="c2")
    assert {c["metric"] for c in second["gate"]["failing"]} == {
        "new_violations",
        "new_duplicated_lines_density",
    }

    async def two() -> list[Task]:
        found = await plan_tasks(platform, plan["id"])
        return found if len(found) == 2 else []

    tasks = await wait_until(two, what="the fix tasks")
    assert sorted(t.title for t in tasks) == [
        "Quality gate: fix new_duplicated_lines_density of gated (branch main)",
        "Quality gate: fix new_violations of gated (branch main)",
    ]
    assert all(t.status == "pending" and t.priority == 1 and t.created_by == "quality" for t in tasks)
    violations = next(t for t in tasks if "new_violations" in t.title)
    assert "new_violations is 1 (> 0)" in violations.description and second["id"] in violations.details

    # The same failure again (a redelivery under another id, or the gate failing anew): no second task.
    event = {
        "project_key": "gated",
        "branch": "main",
        "pull_request": None,
        "status": "ERROR",
        "previous_status": "OK",
        "failing": [{"metric": "new_violations", "op": "gt", "threshold": 0, "actual": 3}],
        "analysis_id": str(uuid.uuid4()),
        "commit": "c9",
        "plan_id": plan["id"],
    }
    await deliver(platform, org, event)
    assert len(await plan_tasks(platform, plan["id"])) == 2
    # Once its task is closed, a new failure of the condition opens a new one.
    async with platform.runtime.sessions() as session:
        task = await session.get(Task, (violations.plan_id, violations.id))
        assert task is not None
        task.status = "cancelled"
        await session.commit()
    await deliver(platform, org, event)
    assert len(await plan_tasks(platform, plan["id"])) == 3


async def test_no_task_without_a_linked_plan_of_the_org(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    plan = await create_plan(platform, h)
    event = {
        "project_key": "p",
        "branch": None,
        "pull_request": "4",
        "status": "ERROR",
        "previous_status": None,
        "failing": [{"metric": "new_coverage", "op": "lt", "threshold": 80, "actual": 12.5}],
        "analysis_id": str(uuid.uuid4()),
        "commit": "c1",
    }
    await deliver(platform, org, event)  # no plan_id
    await deliver(platform, f"other-{org}", {**event, "plan_id": plan["id"]})  # another org's plan
    await deliver(platform, org, {**event, "plan_id": plan["id"], "status": "OK", "failing": []})
    assert await plan_tasks(platform, plan["id"]) == []
    await deliver(platform, org, {**event, "plan_id": plan["id"]})
    (task,) = await plan_tasks(platform, plan["id"])
    assert task.title == "Quality gate: fix new_coverage of p (pull request 4)"
    assert "new_coverage is 12.5 (< 80)" in task.description
