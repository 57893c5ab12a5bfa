"""Small builders for usage tests: events, meters, budgets, reservations, and a bus listener."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from coder.shared.events import CloudEvent
from coder.shared.target import Descriptor
from coder.tests.support.platform import Platform

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


# A target usage's tests call reservations as, the way ai does: granted usage:reserve, a SERVICE action
# only a workload token admits (see the `spender` fixture).
SPENDER = Descriptor(
    name="spender",
    port=3998,
    title="Spends budget for a user (usage's tests)",
    package="coder.tests.services.usage.spender",
    needs=frozenset(),
    grants=("usage:reserve",),
)


async def direct(p: Platform, method: str, path: str, w: dict[str, str], **kwargs: Any) -> httpx.Response:
    """usage called directly, as a calling target does: the gateway takes no workload token."""
    transport = httpx.ASGITransport(app=p.runtime.local_apps["usage"])
    async with httpx.AsyncClient(transport=transport, base_url="http://usage") as client:
        return await client.request(method, f"/v1{path}", headers=w, **kwargs)


async def reserve(p: Platform, w: dict[str, str], amount: float, **fields: Any) -> httpx.Response:
    """Reserve with `w`, a workload token's headers (the `spender` fixture)."""
    body = {"amount": amount, "user_id": "u1", **fields}
    return await direct(p, "POST", "/reservations", w, json=body)


async def settle(p: Platform, w: dict[str, str], reservation_id: str, actual: float) -> httpx.Response:
    return await direct(p, "POST", f"/reservations/{reservation_id}/settle", w, json={"actual": actual})


async def read_reservation(p: Platform, w: dict[str, str], reservation_id: str) -> httpx.Response:
    return await direct(p, "GET", f"/reservations/{reservation_id}", w)


async def release(p: Platform, w: dict[str, str], reservation_id: str) -> httpx.Response:
    return await direct(p, "DELETE", f"/reservations/{reservation_id}", w)


async def listen(p: Platform, *types: str) -> list[CloudEvent]:
    """Collect the bus events of these types from now on (a queue of its own on either bus)."""
    received: list[CloudEvent] = []

    async def deliver(event: CloudEvent) -> None:
        received.append(event)

    assert p.runtime.bus is not None
    await p.runtime.bus.consume(f"test-{uuid.uuid4().hex[:8]}", list(types), deliver)
    return received
