"""planning through the gateway path `/api/planning`: plans, tasks, dependencies, statuses, the next
task and the events, on both backends."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from coder.services.planning.models import Task
from coder.services.planning.service import find_cycle
from coder.shared.events import CloudEvent
from coder.tests.services.planning.factories import API, add_task, create_plan, next_id, post_task, set_status
from coder.tests.support.platform import Platform, listen, wait_until
from coder.tests.support.tokens import TestSigner


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


async def count_tasks(p: Platform, plan_id: str) -> int:
    async with p.runtime.sessions() as session:
        value = await session.scalar(select(func.count()).select_from(Task).where(Task.plan_id == plan_id))
    return int(value or 0)


async def test_tasks_have_task_masters_shape(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    plan = await create_plan(platform, h, team_id="team-1", description="ship it")
    first = await add_task(platform, h, plan["id"], title="Schema", priority="high")
    second = await add_task(
        platform,
        h,
        plan["id"],
        title="API",
        description="The routes",
        details="FastAPI",
        test_strategy="pytest against PostgreSQL",
        dependencies=[first["id"]],
        acceptance_checks=[{"text": "every route documented"}, {"text": "fuzzed", "checked": True}],
        complexity=7,
    )
    sub = await add_task(platform, h, plan["id"], title="Routes", parent_id=second["id"])

    assert (first["id"], second["id"], sub["id"]) == (1, 2, 3)
    read = (await platform.client.get(f"{API}/plans/{plan['id']}/tasks/2", headers=h)).json()
    assert {
        k: read[k] for k in ("title", "status", "priority", "dependencies", "complexity", "parent_id")
    } == {
        "title": "API",
        "status": "pending",
        "priority": "medium",
        "dependencies": [1],
        "complexity": 7,
        "parent_id": None,
    }
    assert read["acceptance_checks"] == [
        {"text": "every route documented", "checked": False},
        {"text": "fuzzed", "checked": True},
    ]
    assert sub["parent_id"] == 2
    subtasks = await platform.client.get(
        f"{API}/plans/{plan['id']}/tasks", params={"parent_id": 2}, headers=h
    )
    assert [t["id"] for t in subtasks.json()["items"]] == [3]
    # One level of subtasks only.
    deeper = problem(await post_task(platform, h, plan["id"], parent_id=3), 422)
    assert deeper["errors"][0]["field"] == "parent_id"


async def test_lists_are_keyset_pages(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    plan = await create_plan(platform, h)
    for n in range(5):
        await add_task(platform, h, plan["id"], title=f"T{n}", priority="low" if n % 2 else "high")
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await platform.client.get(f"{API}/plans/{plan['id']}/tasks", params=params, headers=h)).json()
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [1, 2, 3, 4, 5]
    high = await platform.client.get(
        f"{API}/plans/{plan['id']}/tasks", params={"priority": "high"}, headers=h
    )
    assert [t["id"] for t in high.json()["items"]] == [1, 3, 5]

    other = await create_plan(platform, h, team_id="team-x")
    plans = await platform.client.get(f"{API}/plans", params={"team_id": "team-x"}, headers=h)
    assert [p["id"] for p in plans.json()["items"]] == [other["id"]]
    everything = await platform.client.get(f"{API}/plans", params={"limit": 1}, headers=h)
    assert everything.json()["items"][0]["id"] == other["id"] and everything.json()["next_cursor"]


async def test_dependencies_must_exist_and_never_cycle(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    plan = await create_plan(platform, h)
    for _ in range(5):
        await add_task(platform, h, plan["id"])
    unknown = problem(await post_task(platform, h, plan["id"], dependencies=[1, 42]), 422)
    assert unknown["errors"] == [{"field": "dependencies.1", "message": "no task 42 in this plan"}]

    url = f"{API}/plans/{plan['id']}/tasks"
    assert (await platform.client.patch(f"{url}/5", json={"dependencies": [3]}, headers=h)).status_code == 200
    cycle = problem(await platform.client.patch(f"{url}/3", json={"dependencies": [5]}, headers=h), 422)
    assert cycle["errors"] == [{"field": "dependencies", "message": "would close the cycle 3 -> 5 -> 3"}]
    assert cycle["cycle"] == [3, 5, 3]
    itself = problem(await platform.client.patch(f"{url}/2", json={"dependencies": [2]}, headers=h), 422)
    assert itself["errors"][0]["message"] == "would close the cycle 2 -> 2"
    await platform.client.patch(f"{url}/4", json={"dependencies": [5]}, headers=h)
    three = problem(await platform.client.patch(f"{url}/3", json={"dependencies": [4]}, headers=h), 422)
    assert three["errors"][0]["message"] == "would close the cycle 3 -> 4 -> 5 -> 3"
    # Nothing refused was stored.
    stored = (await platform.client.get(f"{url}/3", headers=h)).json()
    assert stored["dependencies"] == []


def test_find_cycle_walks_deep_graphs_without_recursion() -> None:
    chain = {n: [n + 1] for n in range(1, 20_000)} | {20_000: []}
    assert find_cycle(chain) is None
    assert find_cycle({**chain, 20_000: [1]}) == [*range(1, 20_001), 1]


async def test_patch_validates_and_keeps_what_it_does_not_name(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    plan = await create_plan(platform, h)
    task = await add_task(platform, h, plan["id"], title="Keep", details="kept", complexity=3)
    url = f"{API}/plans/{plan['id']}/tasks/{task['id']}"
    for body, field in (
        ({"title": ""}, "title"),
        ({"priority": "urgent"}, "priority"),
        ({"complexity": 11}, "complexity"),
        ({"status": "done"}, "status"),  # statuses move through their own operation
        ({"acceptance_checks": [{"text": "x", "done": True}]}, "acceptance_checks.0.done"),
    ):
        refused = problem(await platform.client.patch(url, json=body, headers=h), 422)
        assert any(e["field"].endswith(field) for e in refused["errors"]), refused
    changed = await platform.client.patch(url, json={"priority": "high", "complexity": None}, headers=h)
    assert changed.status_code == 200, changed.text
    assert {k: changed.json()[k] for k in ("title", "details", "priority", "complexity")} == {
        "title": "Keep",
        "details": "kept",
        "priority": "high",
        "complexity": None,
    }


async def test_statuses_follow_the_transition_table(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    plan = await create_plan(platform, h)
    base = await add_task(platform, h, plan["id"])
    task = await add_task(platform, h, plan["id"], dependencies=[base["id"]])

    illegal = problem(await set_status(platform, h, plan["id"], task["id"], "review"), 409)
    assert (illegal["from"], illegal["to"]) == ("pending", "review")
    assert illegal["type"].endswith("/illegal-transition")
    blocked = problem(await set_status(platform, h, plan["id"], task["id"], "in-progress"), 409)
    assert blocked["blocking"] == [base["id"]]

    for status in ("in-progress", "review", "done"):
        response = await set_status(platform, h, plan["id"], base["id"], status)
        assert response.status_code == 200 and response.json()["status"] == status, response.text
    # Staying put is allowed and changes nothing.
    assert (await set_status(platform, h, plan["id"], base["id"], "done")).status_code == 200
    assert (await set_status(platform, h, plan["id"], task["id"], "in-progress")).status_code == 200
    back = problem(await set_status(platform, h, plan["id"], base["id"], "pending"), 409)
    assert (back["from"], back["to"]) == ("done", "pending")
    unknown = problem(await set_status(platform, h, plan["id"], task["id"], "finished"), 422)
    assert unknown["errors"][0]["field"] == "body.status"


async def test_next_task_follows_dependencies_then_priority_then_id(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    plan = await create_plan(platform, h)
    pid = plan["id"]
    assert await next_id(platform, h, pid) is None
    await add_task(platform, h, pid, priority="low")  # 1
    await add_task(platform, h, pid, priority="high", dependencies=[1])  # 2
    await add_task(platform, h, pid, priority="medium")  # 3
    await add_task(platform, h, pid, priority="medium")  # 4
    assert await next_id(platform, h, pid) == 3  # 2 is blocked; 3 and 4 tie, the lowest id wins

    for status in ("in-progress", "done"):
        await set_status(platform, h, pid, 1, status)
    assert await next_id(platform, h, pid) == 2
    await set_status(platform, h, pid, 2, "in-progress")
    assert await next_id(platform, h, pid) == 3
    # Subtasks of a task in progress come first, in their own priority order.
    await add_task(platform, h, pid, parent_id=2, priority="low")  # 5
    await add_task(platform, h, pid, parent_id=2, priority="high", dependencies=[5])  # 6
    await add_task(platform, h, pid, parent_id=4, priority="high")  # 7: its parent is not started
    assert await next_id(platform, h, pid) == 5
    for status in ("in-progress", "done"):
        await set_status(platform, h, pid, 5, status)
    assert await next_id(platform, h, pid) == 6
    await set_status(platform, h, pid, 6, "deferred")
    assert await next_id(platform, h, pid) == 3

    # Reopening a dependency blocks its dependents again; changing dependencies re-evaluates them.
    await platform.client.patch(f"{API}/plans/{pid}/tasks/3", json={"dependencies": [5]}, headers=h)
    await platform.client.patch(f"{API}/plans/{pid}/tasks/4", json={"dependencies": [1, 5]}, headers=h)
    assert await next_id(platform, h, pid) == 3
    await set_status(platform, h, pid, 5, "in-progress")
    assert await next_id(platform, h, pid) is None  # 3 and 4 wait for 5 again, 7's parent is not started
    await platform.client.patch(f"{API}/plans/{pid}/tasks/4", json={"dependencies": [1]}, headers=h)
    assert await next_id(platform, h, pid) == 4
    await set_status(platform, h, pid, 5, "done")
    assert await next_id(platform, h, pid) == 3
    await assert_blockers_match_dependencies(platform, pid)


async def assert_blockers_match_dependencies(p: Platform, plan_id: str) -> None:
    """The kept count of undone dependencies equals the count from the dependencies themselves."""
    async with p.runtime.sessions() as session:
        rows = (await session.execute(select(Task).where(Task.plan_id == plan_id))).scalars().all()
    status = {t.id: t.status for t in rows}
    assert {t.id: t.blockers for t in rows} == {
        t.id: sum(status[d] != "done" for d in t.dependencies) for t in rows
    }


async def test_deleting_keeps_the_graph_whole(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    plan = await create_plan(platform, h)
    pid = plan["id"]
    await add_task(platform, h, pid)  # 1
    await add_task(platform, h, pid, parent_id=1)  # 2
    await add_task(platform, h, pid, dependencies=[2])  # 3
    refused = problem(await platform.client.delete(f"{API}/plans/{pid}/tasks/1", headers=h), 409)
    assert refused["dependents"] == [3]
    assert await count_tasks(platform, pid) == 3

    await platform.client.patch(f"{API}/plans/{pid}/tasks/3", json={"dependencies": []}, headers=h)
    assert (await platform.client.delete(f"{API}/plans/{pid}/tasks/1", headers=h)).status_code == 204
    assert await count_tasks(platform, pid) == 1  # the subtask went with it
    # Ids are never reused.
    assert (await add_task(platform, h, pid))["id"] == 4

    assert (await platform.client.delete(f"{API}/plans/{pid}", headers=h)).status_code == 204
    assert await count_tasks(platform, pid) == 0
    assert (await platform.client.get(f"{API}/plans/{pid}", headers=h)).status_code == 404


async def test_permissions(platform: Platform, signer: TestSigner, org: str) -> None:
    plan = await create_plan(platform, signer.headers(org))
    viewer = signer.headers(org, perms=["planning:read"])
    assert (await platform.client.get(f"{API}/plans/{plan['id']}/next", headers=viewer)).status_code == 200
    assert (await post_task(platform, viewer, plan["id"])).status_code == 403
    writer = signer.headers(org, perms=["planning:read", "planning:write"])
    assert (await post_task(platform, writer, plan["id"])).status_code == 201
    expand = {"model": "m"}
    response = await platform.client.post(
        f"{API}/plans/{plan['id']}/tasks/1/expand", json=expand, headers=writer
    )
    assert response.status_code == 403


async def test_changes_go_out_as_events(platform: Platform, signer: TestSigner, org: str) -> None:
    received = await listen(platform, "planning.task.*")
    h = signer.headers(org, sub="user-events")
    plan = await create_plan(platform, h)
    pid = plan["id"]
    await add_task(platform, h, pid, title="One")
    await platform.client.patch(
        f"{API}/plans/{pid}/tasks/1", json={"title": "Uno", "details": "d"}, headers=h
    )
    await platform.client.patch(f"{API}/plans/{pid}/tasks/1", json={"title": "Uno"}, headers=h)  # no change
    await set_status(platform, h, pid, 1, "in-progress")
    await set_status(platform, h, pid, 1, "review")
    assert (await set_status(platform, h, pid, 1, "pending")).status_code == 409  # no event
    await platform.client.delete(f"{API}/plans/{pid}/tasks/1", headers=h)

    def mine() -> list[CloudEvent]:
        return [e for e in received if e.data.get("plan_id") == pid]

    await wait_until(lambda: len(mine()) >= 5, what="five task events")
    events = mine()
    assert [e.type for e in events] == [
        "planning.task.created",
        "planning.task.updated",
        "planning.task.status_changed",
        "planning.task.status_changed",
        "planning.task.deleted",
    ]
    assert all(e.orgid == org and e.data["actor"] == "user-events" for e in events)
    assert events[1].data["changed"] == ["title", "details"]
    assert (events[2].data["previous"], events[2].data["status"]) == ("pending", "in-progress")
    assert (events[3].data["previous"], events[3].data["status"]) == ("in-progress", "review")
    assert events[4].data["title"] == "Uno"
