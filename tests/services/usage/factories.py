"""Small builders for usage tests: events, meters, budgets, reservations."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from coder.shared.events import CloudEvent
from coder.tests.support.platform import Platform
from coder.tests.support.workload import direct

API = "/api/usage/v1"


def event(
    type: str = "ai.request.completed",
    *,
    time: str | None = None,
    source: str = "/coder/ai",
    id: str | None = None,
    **data: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": id or str(uuid.uuid4()),
        "source": source,
        "type": type,
        "data": data,
    }
    if time is not None:
        body["time"] = time
    return body


def completed(org: str, **data: Any) -> CloudEvent:
    """An `ai.request.completed` event as the `ai` target publishes it."""
    payload = {
        "user_id": "u1",
        "model": "gpt-4o",
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": 0,
        **data,
    }
    return CloudEvent(source="/coder/ai", type="ai.request.completed", orgid=org, data=payload)


async def ingest(p: Platform, h: dict[str, str], events: list[dict[str, Any]]) -> dict[str, Any]:
    response = await p.client.post(f"{API}/events", json=events, headers=h)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def create_meter(p: Platform, h: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {
        "slug": f"m-{uuid.uuid4().hex[:8]}",
        "name": "Meter",
        "event_type": "ai.request.completed",
        "aggregation": "sum",
        "value_property": "cost_usd",
        "group_by": ["model", "user_id"],
        **fields,
    }
    response = await p.client.post(f"{API}/meters", json=body, headers=h)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def query(p: Platform, h: dict[str, str], slug: str, **params: Any) -> httpx.Response:
    return await p.client.get(f"{API}/meters/{slug}/query", params=params, headers=h)


async def create_budget(p: Platform, h: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"name": "Budget", "scope": "org", "metric": "cost_usd", "limit": 10, "period": "month", **fields}
    response = await p.client.post(f"{API}/budgets", json=body, headers=h)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def read_budget(p: Platform, h: dict[str, str], budget_id: str) -> dict[str, Any]:
    response = await p.client.get(f"{API}/budgets/{budget_id}", headers=h)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def reserve(p: Platform, w: dict[str, str], amount: float, **fields: Any) -> httpx.Response:
    """Reserve with `w`, a workload token's headers (the `spender` fixture)."""
    body = {"amount": amount, "user_id": "u1", **fields}
    return await direct(p, "usage", "POST", "/v1/reservations", w, json=body)


async def settle(p: Platform, w: dict[str, str], reservation_id: str, actual: float) -> httpx.Response:
    return await direct(
        p, "usage", "POST", f"/v1/reservations/{reservation_id}/settle", w, json={"actual": actual}
    )


async def read_reservation(p: Platform, w: dict[str, str], reservation_id: str) -> httpx.Response:
    return await direct(p, "usage", "GET", f"/v1/reservations/{reservation_id}", w)


async def release(p: Platform, w: dict[str, str], reservation_id: str) -> httpx.Response:
    return await direct(p, "usage", "DELETE", f"/v1/reservations/{reservation_id}", w)
