"""Definitions: a DAG checked on the way in (422 naming the field), immutable versions that running
runs keep, and what starts or ends a run besides the API: approvals, bus events, triggers, schedules."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from coder.services.workflow.models import Definition
from coder.shared.events import CloudEvent
from coder.tests.services.workflow.factories import (
    API,
    USER_PERMS,
    create_definition,
    http,
    start_run,
    steps_of,
    wait_run,
    wait_step,
)
from coder.tests.support.platform import Platform, wait_until
from coder.tests.support.tokens import TestSigner


@pytest.mark.parametrize(
    ("steps", "extra", "field", "says"),
    [
        ([http("a", "/v1/echo/x", "ghost")], {}, "steps.0.needs.0", "no step named 'ghost'"),
        (
            [http("a", "/v1/echo/x", "c"), http("b", "/v1/echo/x", "a"), http("c", "/v1/echo/x", "b")],
            {},
            "steps.0.needs",
            "a cycle: a -> c -> b -> a",
        ),
        ([http("a", "/v1/echo/x", "a")], {}, "steps.0.needs.0", "cannot need itself"),
        ([http("a", "/v1/echo/x"), http("a", "/v1/echo/y")], {}, "steps.1.name", "already the name"),
        ([http("a", "/v1/echo/x", target="nowhere")], {}, "steps.0.target", "no target 'nowhere'"),
        ([http("a", "/v1/users/me", target="gateway")], {}, "steps.0.target", "no target 'gateway'"),
        ([http("a", "/v1/echo/x")], {"schedule": "every tuesday"}, "schedule", "not a cron expression"),
        (
            [{"name": "w", "type": "event", "event_type": "secrets.secret.rotated"}],
            {},
            "steps.0.event_type",
            "workflow receives only",
        ),
        (
            [http("a", "/v1/echo/x")],
            {"trigger": {"event_type": "usage.budget.exceeded"}},
            "trigger.event_type",
            "only",
        ),
    ],
)
async def test_a_bad_definition_is_refused_naming_the_field(
    wf: Platform,
    signer: TestSigner,
    org: str,
    steps: list[dict[str, Any]],
    extra: dict[str, Any],
    field: str,
    says: str,
) -> None:
    h = signer.headers(org, USER_PERMS)
    response = await wf.client.post(
        f"{API}/definitions", json={"name": "bad", "steps": steps, **extra}, headers=h
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["errors"][0]["field"] == field and says in problem["errors"][0]["message"]
    listed = await wf.client.get(f"{API}/definitions", headers=h)
    assert listed.json()["items"] == []


async def test_the_schema_refuses_unknown_step_types_and_fields(
    wf: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org, USER_PERMS)
    for steps in ([{"name": "a", "type": "teleport"}], [{**http("a", "/v1/x"), "colour": "red"}], []):
        response = await wf.client.post(f"{API}/definitions", json={"name": "bad", "steps": steps}, headers=h)
        assert response.status_code == 422, response.text


async def test_a_running_run_keeps_its_version(wf: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org, USER_PERMS)
    v1 = [{"name": "gate", "type": "approval"}, http("one", "/v1/echo/v1", "gate")]
    definition = await create_definition(wf, h, v1, name="versioned")
    first = await start_run(wf, h, definition["id"])
    await wait_step(wf, h, first["id"], "gate", "waiting")

    v2 = {"steps": [http("two", "/v1/echo/v2")]}
    response = await wf.client.post(f"{API}/definitions/{definition['id']}/versions", json=v2, headers=h)
    assert response.status_code == 201, response.text
    assert response.json()["version"] == 2
    old = await wf.client.get(f"{API}/definitions/{definition['id']}/versions/1", headers=h)
    assert [s["name"] for s in old.json()["spec"]["steps"]] == ["gate", "one"]

    second = await wait_run(wf, h, (await start_run(wf, h, definition["id"]))["id"])
    assert second["version"] == 2 and list(steps_of(second)) == ["two"] and second["status"] == "completed"

    approved = await wf.client.post(f"{API}/runs/{first['id']}/steps/gate/approve", json={}, headers=h)
    assert approved.status_code == 200, approved.text
    first_done = await wait_run(wf, h, first["id"])
    assert first_done["version"] == 1 and first_done["status"] == "completed"
    assert list(steps_of(first_done)) == ["gate", "one"]


async def test_approval_needs_the_permission_and_a_rejection_fails_the_run(
    wf: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org, USER_PERMS)
    definition = await create_definition(
        wf, h, [{"name": "gate", "type": "approval", "message": "ship?"}], name="ap"
    )
    run = await start_run(wf, h, definition["id"])
    await wait_step(wf, h, run["id"], "gate", "waiting")
    url = f"{API}/runs/{run['id']}/steps/gate"
    viewer = signer.headers(org, ("workflow:read",))
    refused = await wf.client.post(f"{url}/approve", json={}, headers=viewer)
    assert refused.status_code == 403 and refused.json()["required"] == "workflow:approve"
    stranger = signer.headers(f"org-{uuid.uuid4().hex[:8]}", USER_PERMS)
    assert (await wf.client.post(f"{url}/approve", json={}, headers=stranger)).status_code == 404
    missing = await wf.client.post(f"{API}/runs/{run['id']}/steps/nope/approve", json={}, headers=h)
    assert missing.status_code == 404

    approver = signer.headers(org, ("workflow:approve", "workflow:read"), sub="boss")
    rejected = await wf.client.post(f"{url}/reject", json={"comment": "not today"}, headers=approver)
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "failed" and "rejected by boss: not today" in rejected.json()["error"]
    assert steps_of(rejected.json())["gate"]["decided_by"] == "boss"
    again = await wf.client.post(f"{url}/approve", json={}, headers=approver)
    assert again.status_code == 409


async def test_an_event_step_waits_for_a_matching_event_of_its_org(
    wf: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org, USER_PERMS)
    wait = {"name": "gate", "type": "event", "event_type": "planning.task.updated", "match": {"status": "OK"}}
    definition = await create_definition(
        wf, h, [wait, http("after", "/v1/echo/after-gate", "gate")], name="ev"
    )
    run = await start_run(wf, h, definition["id"])
    await wait_step(wf, h, run["id"], "gate", "waiting")
    assert wf.runtime.bus is not None
    other_org = CloudEvent.new(
        "planning.task.updated", {"status": "OK"}, org_id=f"org-{uuid.uuid4().hex[:6]}"
    )
    failing = CloudEvent.new("planning.task.updated", {"status": "ERROR"}, org_id=org)
    matching = CloudEvent.new("planning.task.updated", {"status": "OK", "project_key": "p"}, org_id=org)
    await wf.runtime.bus.publish([other_org, failing])
    await wf.runtime.bus.publish([matching])
    done = await wait_run(wf, h, run["id"])
    assert done["status"] == "completed"
    assert steps_of(done)["gate"]["output"]["event_id"] == matching.id


async def test_an_event_step_times_out(wf: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org, USER_PERMS)
    wait = {"name": "gate", "type": "event", "event_type": "planning.task.created", "timeout_seconds": 0.2}
    definition = await create_definition(wf, h, [wait], name="ev-timeout")
    run = await wait_run(wf, h, (await start_run(wf, h, definition["id"]))["id"])
    assert run["status"] == "failed" and "timed out waiting for an event" in run["error"]


async def test_a_trigger_starts_a_run_as_the_owner_with_the_event_as_input(
    wf: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org, USER_PERMS, sub="owner-1")
    trigger = {"event_type": "planning.task.status_changed", "match": {"status": "done"}}
    steps = [http("notify", "/v1/echo/notify", body={"task": "${input.task_id}"})]
    definition = await create_definition(wf, h, steps, name="on-done", trigger=trigger)
    assert definition["trigger_event"] == "planning.task.status_changed"
    assert wf.runtime.bus is not None
    await wf.runtime.bus.publish(
        [CloudEvent.new("planning.task.status_changed", {"status": "review", "task_id": 1}, org_id=org)]
    )
    await wf.runtime.bus.publish(
        [CloudEvent.new("planning.task.status_changed", {"status": "done", "task_id": 7}, org_id=org)]
    )

    async def triggered() -> list[dict[str, Any]]:
        runs = await wf.client.get(f"{API}/runs", params={"definition_id": definition["id"]}, headers=h)
        return [r for r in runs.json()["items"] if r["status"] == "completed"]

    runs = await wait_until(triggered, what="the triggered run")
    assert len(runs) == 1 and runs[0]["trigger"] == "event" and runs[0]["actor"] == "owner-1"
    run = await wait_run(wf, h, runs[0]["id"])
    assert steps_of(run)["notify"]["output"]["body"]["echo"] == {"task": 7}


async def test_a_schedule_starts_runs_when_due(wf: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org, USER_PERMS, sub="owner-2")
    definition = await create_definition(
        wf, h, [http("tick", "/v1/echo/tick")], name="cron", schedule="*/5 * * * *"
    )
    fire = datetime.fromisoformat(definition["next_fire_at"])
    assert fire > datetime.now(UTC) and fire.minute % 5 == 0 and fire.second == 0
    # Its time comes (moved, rather than waited for).
    async with wf.runtime.sessions.begin() as session:
        await session.execute(
            update(Definition)
            .where(Definition.id == uuid.UUID(definition["id"]))
            .values(next_fire_at=datetime.now(UTC) - timedelta(seconds=1))
        )

    async def scheduled() -> list[dict[str, Any]]:
        runs = await wf.client.get(f"{API}/runs", params={"definition_id": definition["id"]}, headers=h)
        return runs.json()["items"]

    runs = await wait_until(scheduled, what="the scheduled run")
    assert len(runs) == 1 and runs[0]["trigger"] == "schedule" and runs[0]["actor"] == "owner-2"
    assert (await wait_run(wf, h, runs[0]["id"]))["status"] == "completed"
    again = await wf.client.get(f"{API}/definitions/{definition['id']}", headers=h)
    assert datetime.fromisoformat(again.json()["next_fire_at"]) > datetime.now(UTC)
