"""ai's resources for the cross-org suite (tests/e2e/test_cross_org.py)."""

from __future__ import annotations

import uuid
from typing import Any

from coder.tests.support.crossorg import CrossOrg, TargetClient


async def _created(client: TargetClient, path: str, body: dict[str, Any], headers: dict[str, str]) -> str:
    response = await client.request("POST", path, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def create(client: TargetClient, headers: dict[str, str]) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    provider = {"name": f"p-{suffix}", "kind": "openai_compatible", "base_url": "http://127.0.0.1:9/v1"}
    provider_id = await _created(client, "/v1/providers", provider, headers)
    deployment = {"name": f"d-{suffix}", "provider_id": provider_id, "model": "m"}
    deployment_id = await _created(client, "/v1/deployments", deployment, headers)
    group_id = await _created(
        client, "/v1/groups", {"alias": f"g-{suffix}", "deployments": [deployment_id]}, headers
    )
    return {"provider_id": provider_id, "deployment_id": deployment_id, "group_id": group_id}


registration = CrossOrg(
    create=create,
    bodies={
        ("PATCH", "/v1/providers/{provider_id}"): {"external": False},
        ("PATCH", "/v1/deployments/{deployment_id}"): {"input_price": 1},
        ("PATCH", "/v1/groups/{group_id}"): {"routing": "cheapest"},
    },
    unaddressed={
        ("POST", "/v1/providers"): "creates in the caller's org",
        ("POST", "/v1/deployments"): "creates in the caller's org; its provider_id must be the caller's",
        ("POST", "/v1/groups"): "creates in the caller's org; its deployments must be the caller's",
        ("POST", "/v1/chat/completions"): "routes to the caller's org's model groups",
        ("POST", "/v1/completions"): "routes to the caller's org's model groups",
        ("POST", "/v1/messages"): "routes to the caller's org's model groups",
        ("POST", "/v1/context"): "assembles the items in the request and the caller's sources",
    },
)
