"""notes' resources for the cross-org suite: in a real target, tests/services/notes/crossorg.py."""

from __future__ import annotations

from coder.tests.support.crossorg import CrossOrg, TargetClient


async def create(client: TargetClient, headers: dict[str, str]) -> dict[str, str]:
    response = await client.request("POST", "/v1/notes", json={"title": "mine"}, headers=headers)
    assert response.status_code == 201, response.text
    return {"note_id": response.json()["id"]}


registration = CrossOrg(
    create=create,
    bodies={("PATCH", "/v1/notes/{note_id}"): {"title": "overwritten"}},
    unaddressed={("POST", "/v1/notes"): "creates in the caller's org"},
)
