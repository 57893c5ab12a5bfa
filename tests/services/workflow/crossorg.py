"""workflow's resources for the cross-org suite (tests/e2e/test_cross_org.py)."""

from __future__ import annotations

from coder.tests.support.crossorg import CrossOrg, TargetClient

# The suite writes every addressed value back as its name in the answers it compares: the version
# named is one whose number no other text of an answer holds ("1" is in "/v1").
DISTINCT_VERSION = 23
# Waits for a decision until it is given: the run stays running, its step waiting, while the suite tries it.
GATE = {"name": "gate", "type": "approval", "timeout_seconds": 3600}


async def create(client: TargetClient, headers: dict[str, str]) -> dict[str, str]:
    definition = await client.request(
        "POST", "/v1/definitions", json={"name": "Cross", "steps": [GATE]}, headers=headers
    )
    assert definition.status_code == 201, definition.text
    definition_id: str = definition.json()["id"]
    version = 1
    while version < DISTINCT_VERSION:
        added = await client.request(
            "POST", f"/v1/definitions/{definition_id}/versions", json={"steps": [GATE]}, headers=headers
        )
        assert added.status_code == 201, added.text
        version = added.json()["version"]
    run = await client.request("POST", f"/v1/definitions/{definition_id}/runs", json={}, headers=headers)
    assert run.status_code == 201, run.text
    return {
        "definition_id": definition_id,
        "version": str(version),
        "run_id": run.json()["id"],
        "step": "gate",
    }


registration = CrossOrg(
    create=create,
    bodies={
        ("POST", "/v1/definitions/{definition_id}/versions"): {"steps": [GATE]},
        ("POST", "/v1/definitions/{definition_id}/runs"): {},
        ("POST", "/v1/runs/{run_id}/steps/{step}/approve"): {},
        ("POST", "/v1/runs/{run_id}/steps/{step}/reject"): {},
    },
    unaddressed={("POST", "/v1/definitions"): "creates in the caller's org"},
    # A run's steps change under the engine (ready -> waiting) while the suite compares answers.
    volatile=frozenset(
        {("GET", "/v1/runs/{run_id}"), ("GET", "/v1/runs/{run_id}/history"), ("GET", "/v1/runs")}
    ),
)
