"""Small builders for workflow tests."""

from __future__ import annotations

from typing import Any

from coder.tests.support.platform import Platform, wait_until

API = "/api/workflow/v1"
USER_PERMS = ("workflow:*", "sideeffects:*", "execution:*", "ai:*")


def http(name: str, path: str, *needs: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "http",
        "target": "sideeffects",
        "path": path,
        "needs": list(needs),
        **fields,
    }


async def create_definition(
    p: Platform, h: dict[str, str], steps: list[dict[str, Any]], **spec: Any
) -> dict[str, Any]:
    body = {"name": spec.pop("name", "wf"), "steps": steps, **spec}
    response = await p.client.post(f"{API}/definitions", json=body, headers=h)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def start_run(p: Platform, h: dict[str, str], definition_id: str, **input: Any) -> dict[str, Any]:
    response = await p.client.post(
        f"{API}/definitions/{definition_id}/runs", json={"input": input}, headers=h
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def read_run(p: Platform, h: dict[str, str], run_id: str) -> dict[str, Any]:
    response = await p.client.get(f"{API}/runs/{run_id}", headers=h)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def wait_run(
    p: Platform, h: dict[str, str], run_id: str, *statuses: str, timeout: float = 20
) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        run = await read_run(p, h, run_id)
        return run if run["status"] in (statuses or ("completed", "failed", "cancelled")) else None

    result: dict[str, Any] = await wait_until(done, timeout=timeout, what=f"run {run_id} to end")
    return result


async def wait_step(p: Platform, h: dict[str, str], run_id: str, step: str, status: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        run = await read_run(p, h, run_id)
        found = next(s for s in run["steps"] if s["name"] == step)
        return run if found["status"] == status else None

    result: dict[str, Any] = await wait_until(reached, timeout=20, what=f"step {step} to be {status}")
    return result


async def history(p: Platform, h: dict[str, str], run_id: str) -> list[dict[str, Any]]:
    response = await p.client.get(f"{API}/runs/{run_id}/history", headers=h)
    assert response.status_code == 200, response.text
    attempts: list[dict[str, Any]] = response.json()["attempts"]
    return attempts


def steps_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in run["steps"]}
