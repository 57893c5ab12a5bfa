"""secrets' resources for the cross-org suite (tests/e2e/test_cross_org.py)."""

from __future__ import annotations

import uuid

from coder.tests.support.crossorg import CrossOrg, TargetClient


async def create(client: TargetClient, headers: dict[str, str]) -> dict[str, str]:
    path = f"app-{uuid.uuid4().hex[:8]}/db/password"
    response = await client.request(
        "PUT", f"/v1/secrets/{path}", json={"data": {"password": "s3cret"}}, headers=headers
    )
    assert response.status_code in {200, 201}, response.text
    return {"path": path}


VERSIONS = {"versions": [1]}

registration = CrossOrg(
    create=create,
    bodies={
        ("PUT", "/v1/secrets/{path}"): {"data": {"password": "overwritten"}},
        ("POST", "/v1/delete/{path}"): VERSIONS,
        ("POST", "/v1/undelete/{path}"): VERSIONS,
        ("POST", "/v1/destroy/{path}"): VERSIONS,
        ("PATCH", "/v1/metadata/{path}"): {"max_versions": 1, "custom_metadata": {"owner": "intruder"}},
    },
    unaddressed={("POST", "/v1/keys/rewrap"): "rewraps the caller's org's data keys"},
    own_namespace={("PUT", "/v1/secrets/{path}"): "a path names a secret within the caller's org"},
)
