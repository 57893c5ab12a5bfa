"""Plans and subtasks written by a model through `ai`: here `ai` is a local OpenAI-compatible server
answering scripted completions (tests/services/planning/fake_openai.py), reached the way planning
reaches the real one, by its service URL. A model's unusable answer is refused and nothing is stored."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from coder.services.planning.models import Plan, Task
from coder.shared.devservers import free_port
from coder.tests.services.planning.factories import API, add_task, create_plan
from coder.tests.services.planning.fake_openai import FakeOpenAI
from coder.tests.support.platform import Platform, make_settings, running
from coder.tests.support.tokens import TestSigner


@pytest.fixture(scope="module")
def fake_ai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def ai_platform(database_url: str, signer: TestSigner, fake_ai: FakeOpenAI) -> AsyncIterator[Platform]:
    """The gateway and planning, without `ai`: its name points at the fake (served in this process,
    `ai` would be called in-process instead)."""
    settings = make_settings(database_url, signer, service_urls={"ai": fake_ai.url})
    async with running(settings, "inprocess", targets="gateway,planning") as platform:
        yield platform


def task(n: int, *deps: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": n,
        "title": f"Step {n}",
        "description": f"What step {n} is",
        "details": "How",
        "test_strategy": "pytest",
        "priority": "medium",
        "dependencies": list(deps),
        "acceptance_checks": [f"step {n} works"],
        "complexity": 3,
        **fields,
    }


async def counts(p: Platform, org: str) -> tuple[int, int]:
    async with p.runtime.sessions() as session:
        plans = await session.scalar(select(func.count()).select_from(Plan).where(Plan.created_by == org))
        tasks = await session.scalar(select(func.count()).select_from(Task).where(Task.created_by == org))
    return int(plans or 0), int(tasks or 0)


async def test_a_plan_is_generated_from_a_prompt(
    ai_platform: Platform, fake_ai: FakeOpenAI, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org, sub=org)
    answer = {"title": "Login page", "tasks": [task(1), task(2, 1, priority="high"), task(3, 1, 2)]}
    fake_ai.reply(json.dumps(answer))
    body = {"prompt": "Build a login page", "model": "planner", "team_id": "web"}
    response = await ai_platform.client.post(f"{API}/plans/generate", json=body, headers=h)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["plan"]["title"] == "Login page" and created["plan"]["team_id"] == "web"
    assert [(t["id"], t["dependencies"], t["priority"]) for t in created["tasks"]] == [
        (1, [], "medium"),
        (2, [1], "high"),
        (3, [1, 2], "medium"),
    ]
    assert created["tasks"][0]["acceptance_checks"] == [{"text": "step 1 works", "checked": False}]

    # What went to ai: OpenAI's structured output, strict, with the user's own token.
    sent = fake_ai.requests[-1]
    assert sent["model"] == "planner"
    assert sent["messages"][-1] == {"role": "user", "content": "Build a login page"}
    schema = sent["response_format"]["json_schema"]
    assert sent["response_format"]["type"] == "json_schema" and schema["strict"] is True
    assert schema["schema"]["additionalProperties"] is False
    assert fake_ai.headers[-1]["authorization"] == h["Authorization"]


async def test_a_task_expands_into_subtasks(
    ai_platform: Platform, fake_ai: FakeOpenAI, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org, sub=org)
    plan = await create_plan(ai_platform, h)
    await add_task(ai_platform, h, plan["id"], title="Other")
    parent = await add_task(ai_platform, h, plan["id"], title="Auth", details="OIDC with PKCE")
    fake_ai.reply(json.dumps({"subtasks": [task(1), task(2, 1)]}))
    url = f"{API}/plans/{plan['id']}/tasks/{parent['id']}/expand"
    response = await ai_platform.client.post(url, json={"model": "planner", "count": 2}, headers=h)
    assert response.status_code == 201, response.text
    # The model's 1 and 2 become the plan's next ids, its dependencies with them.
    assert [(t["id"], t["parent_id"], t["dependencies"]) for t in response.json()["subtasks"]] == [
        (3, 2, []),
        (4, 2, [3]),
    ]
    assert "OIDC with PKCE" in fake_ai.requests[-1]["messages"][-1]["content"]

    # A subtask does not expand (one level).
    sub = await ai_platform.client.post(
        f"{API}/plans/{plan['id']}/tasks/3/expand", json={"model": "planner"}, headers=h
    )
    assert sub.status_code == 422 and sub.json()["errors"][0]["field"] == "path.task_id"


UNUSABLE = {
    "not JSON": ("{'title': 'x', tasks: [", "not JSON"),
    "wrong schema": (
        json.dumps({"title": "x", "tasks": [{"id": 1, "name": "no title"}]}),
        "breaks the schema",
    ),
    "cycle": (json.dumps({"title": "x", "tasks": [task(1, 2), task(2, 1)]}), "cycle 1 -> 2 -> 1"),
    "unknown dependency": (json.dumps({"title": "x", "tasks": [task(1), task(2, 7)]}), "task 7"),
    "repeated id": (json.dumps({"title": "x", "tasks": [task(1), task(1)]}), "id 1 twice"),
    "too many": (json.dumps({"title": "x", "tasks": [task(n) for n in range(1, 5)]}), "at most 3"),
}


@pytest.mark.parametrize("case", UNUSABLE, ids=list(UNUSABLE))
async def test_an_unusable_answer_stores_nothing(
    ai_platform: Platform, fake_ai: FakeOpenAI, signer: TestSigner, org: str, case: str
) -> None:
    h = signer.headers(org, sub=org)
    content, why = UNUSABLE[case]
    fake_ai.reply(content)
    body = {"prompt": "p", "model": "planner", "max_tasks": 3}
    response = await ai_platform.client.post(f"{API}/plans/generate", json=body, headers=h)
    assert response.status_code == 502, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"].endswith("/bad-model-answer") and why in problem["detail"], problem
    assert await counts(ai_platform, org) == (0, 0)


async def test_an_unusable_expansion_stores_nothing(
    ai_platform: Platform, fake_ai: FakeOpenAI, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org, sub=org)
    plan = await create_plan(ai_platform, h)
    await add_task(ai_platform, h, plan["id"])
    url = f"{API}/plans/{plan['id']}/tasks/1/expand"
    for content in (
        json.dumps({"subtasks": [task(1, 2), task(2, 3), task(3, 1)]}),
        json.dumps({"subtasks": [task(1, 1)]}),
        json.dumps({"subtasks": [task(1, complexity=99)]}),
    ):
        fake_ai.reply(content)
        response = await ai_platform.client.post(url, json={"model": "planner"}, headers=h)
        assert response.status_code == 502, response.text
    fake_ai.reply("", refusal="I can't help with that.")
    refused = await ai_platform.client.post(url, json={"model": "planner"}, headers=h)
    assert refused.status_code == 502 and "refused" in refused.json()["detail"]
    assert await counts(ai_platform, org) == (1, 1)


async def test_ai_failures_are_problems(
    ai_platform: Platform, fake_ai: FakeOpenAI, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org, sub=org)
    body = {"prompt": "p", "model": "planner"}
    budget = {"type": "https://coderide.io/problems/budget-exceeded", "status": 429, "detail": "budget B"}
    cases: list[tuple[int, dict[str, Any], int]] = [
        (429, budget, 429),
        (402, {"error": {"message": "budget B spent", "type": "budget_exceeded"}}, 429),
        (403, {"type": "https://coderide.io/problems/forbidden", "status": 403, "detail": "ai:chat"}, 403),
        (404, {"error": {"message": "model planner not found", "type": "invalid_request_error"}}, 422),
        (500, {"error": {"message": "boom", "type": "server_error"}}, 502),
    ]
    for upstream, answer, expected in cases:
        fake_ai.fail(upstream, answer)
        response = await ai_platform.client.post(f"{API}/plans/generate", json=body, headers=h)
        assert response.status_code == expected, response.text
        problem = response.json()
        assert problem["upstream_status"] == upstream and f"ai answered {upstream}" in problem["detail"]
    assert problem["type"].endswith("/ai-failed")
    assert await counts(ai_platform, org) == (0, 0)


async def test_ai_unreachable_is_503(database_url: str, signer: TestSigner, org: str) -> None:
    settings = make_settings(database_url, signer, service_urls={"ai": f"http://127.0.0.1:{free_port()}"})
    async with running(settings, "inprocess", targets="gateway,planning") as platform:
        h = signer.headers(org, sub=org)
        body = {"prompt": "p", "model": "planner"}
        response = await platform.client.post(f"{API}/plans/generate", json=body, headers=h)
        assert response.status_code == 503, response.text
        assert "unreachable" in response.json()["detail"]
        assert await counts(platform, org) == (0, 0)
