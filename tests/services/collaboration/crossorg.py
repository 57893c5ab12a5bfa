"""collaboration's resources for the cross-org suite (tests/e2e/test_cross_org.py): a document with a
snapshot and a comment."""

from __future__ import annotations

from coder.tests.support.crossorg import CrossOrg, TargetClient


async def create(client: TargetClient, headers: dict[str, str]) -> dict[str, str]:
    body = {"title": "Cross-org notes", "text": "the first org's text"}
    document = await client.request("POST", "/v1/documents", json=body, headers=headers)
    assert document.status_code == 201, document.text
    document_id: str = document.json()["id"]
    snapshot = await client.request("POST", f"/v1/documents/{document_id}/snapshots", headers=headers)
    assert snapshot.status_code == 201, snapshot.text
    comment = await client.request(
        "POST",
        f"/v1/documents/{document_id}/comments",
        json={"body": "mine", "start": 4, "end": 9},
        headers=headers,
    )
    assert comment.status_code == 201, comment.text
    return {
        "document_id": document_id,
        "snapshot_id": str(snapshot.json()["id"]),
        "comment_id": comment.json()["id"],
    }


registration = CrossOrg(
    create=create,
    bodies={
        ("PATCH", "/v1/documents/{document_id}"): {"title": "Taken over"},
        ("POST", "/v1/documents/{document_id}/comments"): {"body": "planted", "start": 0, "end": 3},
        ("POST", "/v1/documents/{document_id}/comments/{comment_id}/resolve"): {"resolved": True},
    },
    unaddressed={("POST", "/v1/documents"): "creates in the caller's org"},
    volatile=frozenset({("GET", "/v1/documents/{document_id}/presence")}),
)
