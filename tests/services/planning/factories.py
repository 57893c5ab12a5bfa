"""Small builders for planning tests."""

from __future__ import annotations

from typing import Any

import httpx

from coder.tests.support.platform import Platform

API = "/api/planning/v1"


async def create_plan(p: Platform, h: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = await p.client.post(f"{API}/plans", json={"title": "Plan", **fields}, headers=h)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def add_task(p: Platform, h: dict[str, str], plan_id: str, **fields: Any) -> dict[str, Any]:
    response = await post_task(p, h, plan_id, **fields)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def post_task(p: Platform, h: dict[str, str], plan_id: str, **fields: Any) -> httpx.Response:
    body = {"title": "Task", **fields}
    return await p.client.post(f"{API}/plans/{plan_id}/tasks", json=body, headers=h)


async def set_status(
    p: Platform, h: dict[str, str], plan_id: str, task_id: int, status: str
) -> httpx.Response:
    return await p.client.post(
        f"{API}/plans/{plan_id}/tasks/{task_id}/status", json={"status": status}, headers=h
    )


async def next_id(p: Platform, h: dict[str, str], plan_id: str) -> int | None:
    response = await p.client.get(f"{API}/plans/{plan_id}/next", headers=h)
    assert response.status_code == 200, response.text
    task = response.json()["task"]
    return None if task is None else int(task["id"])
