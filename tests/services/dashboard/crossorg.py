"""dashboard's resources for the cross-org suite (tests/e2e/test_cross_org.py)."""

from __future__ import annotations

from coder.tests.support.crossorg import CrossOrg, TargetClient

# The suite writes every addressed value back as its name in the answers it compares, so the version
# addressed is one whose number no other text of an answer holds.
DISTINCT_VERSION = 23
PANEL = {"id": 1, "type": "text", "gridPos": {"x": 0, "y": 0, "w": 6, "h": 4}}


async def create(client: TargetClient, headers: dict[str, str]) -> dict[str, str]:
    created = await client.request(
        "POST", "/v1/dashboards", json={"title": "Board", "panels": [PANEL]}, headers=headers
    )
    assert created.status_code == 201, created.text
    dashboard = created.json()
    while dashboard["version"] < DISTINCT_VERSION:
        body = {"version": dashboard["version"], "title": "Board", "panels": [PANEL]}
        saved = await client.request("PUT", f"/v1/dashboards/{dashboard['id']}", json=body, headers=headers)
        assert saved.status_code == 200, saved.text
        dashboard = saved.json()
    return {"dashboard_id": dashboard["id"], "version": str(DISTINCT_VERSION)}


registration = CrossOrg(
    create=create,
    bodies={
        ("PUT", "/v1/dashboards/{dashboard_id}"): {
            "version": DISTINCT_VERSION,
            "title": "Taken",
            "panels": [],
        },
        ("POST", "/v1/dashboards/{dashboard_id}/versions/{version}/restore"): {},
    },
    unaddressed={("POST", "/v1/dashboards"): "creates in the caller's org"},
)
