"""Quotas through `/api/resources`: CRUD, Kubernetes quantities, the field named on bad input."""

from __future__ import annotations

import httpx

from coder.tests.services.resources.factories import API, create_quota, read_quota, reserve
from coder.tests.support.platform import Platform
from coder.tests.support.tokens import TestSigner


async def test_quota_crud_with_kubernetes_quantities(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org, perms=["resources:read", "resources:admin"])
    hard = {"sandboxes": 3, "cpu": "1500m", "memory": "2Gi", "storage": "10G", "ai_credits": "12.50"}
    whole = await create_quota(platform, h, name="Everyone", hard=hard)
    assert whole["scope"] == "org" and whole["scope_id"] == org and whole["name"] == "Everyone"
    assert whole["hard"] == {
        "sandboxes": 3,
        "cpu": 1500,
        "memory": 2 * 2**30,
        "storage": 10 * 10**9,
        "ai_credits": 12.5,
    }
    assert whole["used"] == {"sandboxes": 0, "cpu": 0, "memory": 0, "storage": 0, "ai_credits": 0}
    team = await create_quota(platform, h, scope="team", scope_id="t1", hard={"cpu": 2, "memory": 1024})
    assert (
        team["hard"]["cpu"] == 2000 and team["hard"]["memory"] == 1024 and team["hard"]["sandboxes"] is None
    )
    user = await create_quota(platform, h, scope="user", scope_id="u1", hard={"cpu": 0.25})
    assert user["hard"]["cpu"] == 250 and user["name"] == "user u1"

    first = (await platform.client.get(f"{API}/quotas", params={"limit": 2}, headers=h)).json()
    rest = (
        await platform.client.get(
            f"{API}/quotas", params={"limit": 2, "cursor": first["next_cursor"]}, headers=h
        )
    ).json()
    assert [q["id"] for q in first["items"] + rest["items"]] == [whole["id"], team["id"], user["id"]]
    teams = (await platform.client.get(f"{API}/quotas", params={"scope": "team"}, headers=h)).json()
    assert [q["id"] for q in teams["items"]] == [team["id"]]

    # PATCH merges: a resource given is set, null lifts its limit, one left out stays.
    changed = await platform.client.patch(
        f"{API}/quotas/{team['id']}", json={"name": "Team 1", "hard": {"cpu": "3", "memory": None}}, headers=h
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["name"] == "Team 1"
    assert changed.json()["hard"] == {
        "sandboxes": None,
        "cpu": 3000,
        "memory": None,
        "storage": None,
        "ai_credits": None,
    }
    emptied = await platform.client.patch(
        f"{API}/quotas/{team['id']}", json={"hard": {"cpu": None}}, headers=h
    )
    assert emptied.status_code == 422 and emptied.json()["errors"][0]["field"] == "hard"
    assert (await read_quota(platform, h, team["id"]))["hard"]["cpu"] == 3000  # refused: nothing changed

    twice = await platform.client.post(
        f"{API}/quotas", json={"scope": "team", "scope_id": "t1", "hard": {"cpu": 1}}, headers=h
    )
    assert twice.status_code == 409 and twice.headers["content-type"] == "application/problem+json"
    assert (await platform.client.delete(f"{API}/quotas/{team['id']}", headers=h)).status_code == 204
    assert (await platform.client.get(f"{API}/quotas/{team['id']}", headers=h)).status_code == 404
    again = await create_quota(platform, h, scope="team", scope_id="t1", hard={"cpu": 1})
    assert again["hard"]["cpu"] == 1000


BAD_QUANTITIES = [
    ({"cpu": "two"}, "body.hard.cpu"),
    ({"cpu": "-1"}, "body.hard.cpu"),
    ({"memory": "1.5"}, "body.hard.memory"),  # half a byte
    ({"memory": "2Gx"}, "body.hard.memory"),
    ({"storage": "1e400"}, "body.hard.storage"),
    ({"storage": "9Ei" * 30}, "body.hard.storage"),
    ({"sandboxes": 1.5}, "body.hard.sandboxes"),
    ({"sandboxes": True}, "body.hard.sandboxes"),
    ({"ai_credits": "0.0000001"}, "body.hard.ai_credits"),
    ({"ai_credits": -1}, "body.hard.ai_credits"),
    ({"ai_credits": "Infinity"}, "body.hard.ai_credits"),
    ({"gpus": 1}, "body.hard.gpus"),
    ({"memory": 2**64}, "body.hard.memory"),
]


async def test_bad_quantities_name_the_field(platform: Platform, signer: TestSigner, org: str) -> None:
    for hard, field in BAD_QUANTITIES:
        response = await platform.client.post(
            f"{API}/quotas", json={"scope": "org", "hard": hard}, headers=signer.headers(org)
        )
        assert response.status_code == 422, (hard, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert field in [e["field"] for e in response.json()["errors"]], (hard, response.text)


async def test_quota_rules_name_the_field(platform: Platform, signer: TestSigner, org: str) -> None:
    for body, field in [
        ({"scope": "org", "hard": {}}, "hard"),
        ({"scope": "team", "hard": {"cpu": 1}}, "scope_id"),
        ({"scope": "org", "scope_id": "another-org", "hard": {"cpu": 1}}, "scope_id"),
    ]:
        response = await platform.client.post(f"{API}/quotas", json=body, headers=signer.headers(org))
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == field


async def test_permissions(platform: Platform, signer: TestSigner, org: str) -> None:
    # A member's role holds READ and WRITE actions, not ADMIN nor the SERVICE action `reserve`.
    member = signer.headers(org, perms=["resources:read", "usage:read"])
    assert (
        await platform.client.post(f"{API}/quotas", json={"scope": "org", "hard": {"cpu": 1}}, headers=member)
    ).status_code == 403
    refused = await reserve(platform, member)
    assert refused.status_code == 403 and refused.json()["required"] == "resources:reserve"
    assert (await platform.client.get(f"{API}/quotas", headers=member)).status_code == 200
    # A workload token from a target granted nothing here (usage grants nothing) is refused too.
    # The gateway never takes a workload token: it is presented to resources directly.
    token = signer.token(org, perms=[], aud="resources", act={"sub": "usage"})
    transport = httpx.ASGITransport(app=platform.runtime.local_apps["resources"])
    async with httpx.AsyncClient(transport=transport, base_url="http://resources") as direct:
        workload = await direct.post(
            "/v1/reservations",
            json={"resources": {"cpu": 1}},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert workload.status_code == 403 and "usage is not granted resources:reserve" in workload.text


async def test_another_org_sees_nothing(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    quota = await create_quota(platform, h, hard={"cpu": 1})
    other = signer.headers(f"{org}-other")
    assert (await platform.client.get(f"{API}/quotas/{quota['id']}", headers=other)).status_code == 404
    assert (await platform.client.get(f"{API}/quotas", headers=other)).json()["items"] == []
