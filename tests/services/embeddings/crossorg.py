"""embeddings' resources for the cross-org suite (tests/e2e/test_cross_org.py)."""

from __future__ import annotations

import uuid

from coder.tests.support.crossorg import CrossOrg, TargetClient


async def create(client: TargetClient, headers: dict[str, str]) -> dict[str, str]:
    name = f"c-{uuid.uuid4().hex[:8]}"
    response = await client.request("POST", "/v1/collections", json={"name": name}, headers=headers)
    assert response.status_code == 201, response.text
    item = {"id": "item-1", "text": "a text only its own org may see", "metadata": {"kind": "doc"}}
    response = await client.request(
        "PUT", f"/v1/collections/{name}/items", json={"items": [item]}, headers=headers
    )
    assert response.status_code == 200, response.text
    return {"name": name, "item_id": "item-1"}


registration = CrossOrg(
    create=create,
    bodies={
        ("PUT", "/v1/collections/{name}/items"): {"items": [{"id": "item-1", "text": "taken over"}]},
        ("POST", "/v1/collections/{name}/items/delete"): {"ids": ["item-1"]},
        ("POST", "/v1/collections/{name}/search"): {"query": "a text", "k": 5},
    },
    unaddressed={
        ("POST", "/v1/collections"): "creates in the caller's org",
        (
            "POST",
            "/v1/embeddings",
        ): "embeds texts given in the request; the cache is keyed by the caller's org",
    },
)
