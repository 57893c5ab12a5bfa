"""Small builders for dashboard tests."""

from __future__ import annotations

from typing import Any

import httpx

from coder.tests.support.platform import Platform

API = "/api/dashboard/v1"


def panel(n: int, target: str | None = None, path: str = "/v1/courses", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": n,
        "title": f"Panel {n}",
        "type": "table",
        "gridPos": {"x": (n % 2) * 12, "y": n * 8, "w": 12, "h": 8},
        **fields,
    }
    if target is not None:
        body["query"] = {"target": target, "path": path, "params": body.pop("params", {})}
    return body


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def create(p: Platform, h: dict[str, str], *panels: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = {"title": "Home", "panels": list(panels), **fields}
    result: dict[str, Any] = ok(await p.client.post(f"{API}/dashboards", json=body, headers=h), 201)
    return result


async def save(p: Platform, h: dict[str, str], read: dict[str, Any], **changes: Any) -> httpx.Response:
    body = {"version": read["version"], "title": read["title"], "panels": read["panels"], **changes}
    return await p.client.put(f"{API}/dashboards/{read['id']}", json=body, headers=h)
