"""resources' resources for the cross-org suite (tests/e2e/test_cross_org.py)."""

from __future__ import annotations

from coder.tests.support.crossorg import CrossOrg, TargetClient


async def _created(client: TargetClient, path: str, body: object, headers: dict[str, str]) -> dict[str, str]:
    response = await client.request("POST", path, json=body, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, str] = response.json()
    return created


async def create(client: TargetClient, headers: dict[str, str]) -> dict[str, str]:
    quota = await _created(
        client, "/v1/quotas", {"scope": "user", "scope_id": "u1", "hard": {"cpu": 4}}, headers
    )
    reservation = {"user_id": "u1", "resources": {"cpu": "500m"}, "ttl_seconds": 3600}
    reservation_id = (await _created(client, "/v1/reservations", reservation, headers))["id"]
    return {"quota_id": quota["id"], "reservation_id": reservation_id}


registration = CrossOrg(
    create=create,
    bodies={("PATCH", "/v1/quotas/{quota_id}"): {"name": "Taken over", "hard": {"cpu": 100}}},
    unaddressed={
        ("POST", "/v1/quotas"): "creates in the caller's org",
        ("POST", "/v1/reservations"): "holds against the caller's org's quotas",
    },
    # Both read the clock: `to` defaults to now, and what remains changes as reservations lapse.
    volatile=frozenset({("GET", "/v1/ledger"), ("GET", "/v1/me")}),
)
