"""logging's resources for the cross-org suite (tests/e2e/test_cross_org.py): a stream's label."""

from __future__ import annotations

import uuid

from coder.tests.services.logging.factories import stream
from coder.tests.support.crossorg import CrossOrg, TargetClient


async def create(client: TargetClient, headers: dict[str, str]) -> dict[str, str]:
    name = f"crossorg_{uuid.uuid4().hex[:8]}"
    body = {"streams": [stream({name: f"value-{uuid.uuid4().hex[:8]}"}, "a line of the first org")]}
    response = await client.request("POST", "/v1/push", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return {"name": name}


registration = CrossOrg(
    create=create,
    unaddressed={
        ("POST", "/v1/push"): "lines go to the caller's org, whatever their labels",
        ("POST", "/v1/delete"): "deletes only the caller's org's lines",
        ("PUT", "/v1/retention"): "sets the caller's org's retention",
        ("DELETE", "/v1/retention"): "resets the caller's org's retention",
    },
)
