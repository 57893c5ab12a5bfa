"""knowledge's resources for the cross-org suite (tests/e2e/test_cross_org.py)."""

from __future__ import annotations

import uuid

from coder.tests.support.crossorg import CrossOrg, TargetClient

# The suite writes every addressed value back as its name in the answers it compares: the revision
# named is one no other text of an answer holds (not in "/v1", "404"...).
DISTINCT_REVISION = 23


async def create(client: TargetClient, headers: dict[str, str]) -> dict[str, str]:
    name = f"c-{uuid.uuid4().hex[:8]}"
    response = await client.request("POST", "/v1/collections", json={"name": name}, headers=headers)
    assert response.status_code == 201, response.text
    collection_id = response.json()["id"]
    body = {"title": "Runbook", "content": "# Deploy\nonly its own org may read this"}
    response = await client.request(
        "POST", f"/v1/collections/{collection_id}/documents", json=body, headers=headers
    )
    assert response.status_code == 201, response.text
    document_id = response.json()["id"]
    for revision in range(2, DISTINCT_REVISION + 1):
        edit = {"content": f"# Deploy\nrevision {revision}"}
        response = await client.request("PATCH", f"/v1/documents/{document_id}", json=edit, headers=headers)
        assert response.status_code == 200, response.text
    response = await client.request(
        "POST", f"/v1/collections/{collection_id}/sources", json={"name": "repo"}, headers=headers
    )
    assert response.status_code == 201, response.text
    source_id = response.json()["id"]
    push = {"files": [{"path": "app.py", "content": "def main():\n    return 1\n"}]}
    response = await client.request("PUT", f"/v1/sources/{source_id}/files", json=push, headers=headers)
    assert response.status_code == 200, response.text
    return {
        "collection_id": collection_id,
        "document_id": document_id,
        "source_id": source_id,
        "revision": str(DISTINCT_REVISION),
    }


registration = CrossOrg(
    create=create,
    bodies={
        ("PATCH", "/v1/collections/{collection_id}"): {"description": "taken over"},
        ("POST", "/v1/collections/{collection_id}/documents"): {"title": "x", "content": "taken over"},
        ("POST", "/v1/collections/{collection_id}/sources"): {"name": "other"},
        ("PATCH", "/v1/documents/{document_id}"): {"content": "taken over"},
        # The archive's bytes are read only once the source is found: any body shows the 404.
        ("PUT", "/v1/sources/{source_id}/archive"): {"archive": "unread"},
        ("PUT", "/v1/sources/{source_id}/files"): {"files": [{"path": "app.py", "content": "taken over"}]},
    },
    # Indexing runs from events, so a document's index status moves on its own.
    volatile=frozenset(
        {("GET", "/v1/collections/{collection_id}/documents"), ("GET", "/v1/documents/{document_id}")}
    ),
    unaddressed={
        ("POST", "/v1/collections"): "creates in the caller's org",
        ("POST", "/v1/search"): "searches the caller's org's collections only",
    },
)
