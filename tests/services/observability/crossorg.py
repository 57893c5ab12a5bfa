"""observability's resources for the cross-org suite (tests/e2e/test_cross_org.py)."""

from __future__ import annotations

from coder.tests.support.crossorg import CrossOrg, TargetClient


async def create(client: TargetClient, headers: dict[str, str]) -> dict[str, str]:
    slo = {"name": "Calendar availability", "target": "calendar", "kind": "availability", "objective": 0.99}
    answer = await client.request("POST", "/v1/slos", json=slo, headers=headers)
    assert answer.status_code == 201, answer.text
    slo_id = answer.json()["id"]
    rule = {"name": "Fast burn", "kind": "burn_rate", "slo_id": slo_id, "factor": 14.4}
    answer = await client.request("POST", "/v1/alert-rules", json=rule, headers=headers)
    assert answer.status_code == 201, answer.text
    return {"slo_id": slo_id, "rule_id": answer.json()["id"]}


registration = CrossOrg(
    create=create,
    unaddressed={
        ("POST", "/v1/slos"): "creates in the caller's org",
        ("POST", "/v1/alert-rules"): "creates in the caller's org, on one of its own SLOs",
        ("POST", "/v1/traces"): "stores spans as the caller's org's",
    },
    # Read the clock: an SLO's status is over a window ending now; rules change as the poller evaluates.
    volatile=frozenset(
        {
            ("GET", "/v1/slos/{slo_id}"),
            ("GET", "/v1/alert-rules/{rule_id}"),
            ("GET", "/v1/alert-rules/{rule_id}/history"),
        }
    ),
)
