"""resources' resources for the cross-org suite (tests/e2e/test_cross_org.py)."""

from __future__ import annotations

from coder.tests.support.crossorg import CrossOrg, TargetClient

QUOTA = {"scope": "user", "scope_id": "u1", "hard": {"cpu": 4}}
RESERVATION = {"user_id": "u1", "resources": {"cpu": "500m"}, "ttl_seconds": 3600}


async def create(client: TargetClient, headers: dict[str, str]) -> dict[str, str]:
    ids = {}
    for name, path, body in (
        ("quota_id", "/v1/quotas", QUOTA),
        ("reservation_id", "/v1/reservations", RESERVATION),
    ):
        answer = await client.request("POST", path, json=body, headers=headers)
        assert answer.status_code == 201, answer.text
        ids[name] = str(answer.json()["id"])
    return ids


registration = CrossOrg(
    create=create,
    bodies={("PATCH", "/v1/quotas/{quota_id}"): {"name": "Taken over", "hard": {"cpu": 100}}},
    unaddressed={
        ("POST", "/v1/quotas"): "creates in the caller's org",
        ("POST", "/v1/reservations"): "holds against the caller's org's quotas",
    },
    # Both read the clock: `to` defaults to now, and what remains changes as reservations lapse.
    volatile=frozenset({("GET", "/v1/ledger"), ("GET", "/v1/me")}),
    service=dict.fromkeys(
        [("POST", "/v1/reservations"), ("DELETE", "/v1/reservations/{reservation_id}")], "resources:reserve"
    ),
)
