"""usage's resources for the cross-org suite (tests/e2e/test_cross_org.py)."""

from __future__ import annotations

import uuid

from coder.tests.support.crossorg import CrossOrg, TargetClient


async def _created(client: TargetClient, path: str, body: object, headers: dict[str, str]) -> dict[str, str]:
    response = await client.request("POST", path, json=body, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, str] = response.json()
    return created


async def create(client: TargetClient, headers: dict[str, str]) -> dict[str, str]:
    meter = {"slug": f"m-{uuid.uuid4().hex[:8]}", "name": "Meter", "event_type": "t", "aggregation": "count"}
    budget = {"name": "Budget", "scope": "org", "metric": "cost_usd", "limit": 10, "period": "month"}
    slug = (await _created(client, "/v1/meters", meter, headers))["slug"]
    budget_id = (await _created(client, "/v1/budgets", budget, headers))["id"]
    reservation = {"amount": 1, "user_id": "u1", "ttl_seconds": 3600}
    reservation_id = (await _created(client, "/v1/reservations", reservation, headers))["reservation_id"]
    return {"slug": slug, "budget_id": budget_id, "reservation_id": reservation_id}


registration = CrossOrg(
    create=create,
    bodies={
        ("PATCH", "/v1/budgets/{budget_id}"): {"name": "Taken over", "limit": 1000},
        ("POST", "/v1/reservations/{reservation_id}/settle"): {"actual": 1},
    },
    unaddressed={
        ("POST", "/v1/events"): "stores events in the caller's org",
        ("POST", "/v1/meters"): "creates in the caller's org",
        ("POST", "/v1/budgets"): "creates in the caller's org",
        ("POST", "/v1/reservations"): "holds against the caller's org's budgets",
    },
    volatile=frozenset({("GET", "/v1/meters/{slug}/query")}),  # `to` defaults to now
    service=dict.fromkeys(
        [
            ("POST", "/v1/reservations"),
            ("GET", "/v1/reservations/{reservation_id}"),
            ("POST", "/v1/reservations/{reservation_id}/settle"),
            ("DELETE", "/v1/reservations/{reservation_id}"),
        ],
        "usage:reserve",
    ),
)
