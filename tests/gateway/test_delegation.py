"""Delegations: how a target acts for a user after the user's request has ended (workflow's runs).

With the user's token and its workload secret, the target takes a delegation (gateway-signed, bound to
that target, no credential anywhere); with its secret again it trades the delegation for short-lived
access tokens of the user: never more permissions than the user's, refused at the gateway itself, and
dead once the user logs out or their role changes."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import jwt
import pytest

from coder.shared.http import DELEGATED_TOKEN_PATH, DELEGATION_PATH
from coder.tests.gateway.conftest import Gateway
from coder.tests.gateway.factories import bearer, member, owner
from coder.tests.support.platform import wait_until

SECRET = "delegation-test-" + uuid.uuid4().hex


@pytest.fixture
def secret(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(gw.platform.runtime.settings.workload_secrets, "workflow", SECRET)
    return SECRET


async def _delegate(gw: Gateway, headers: dict[str, str], **fields: Any) -> httpx.Response:
    body = {"caller": "workflow", "secret": SECRET, "ttl_seconds": 3600, **fields}
    return await gw.client.post(DELEGATION_PATH, json=body, headers=headers)


async def _trade(gw: Gateway, delegation: str, **fields: Any) -> httpx.Response:
    body = {"caller": "workflow", "secret": SECRET, "delegation": delegation, **fields}
    return await gw.client.post(DELEGATED_TOKEN_PATH, json=body)


def _planning(gw: Gateway) -> httpx.AsyncClient:
    """planning called directly, as workflow's steps call a target."""
    transport = httpx.ASGITransport(app=gw.platform.runtime.local_apps["planning"])
    return httpx.AsyncClient(transport=transport, base_url="http://planning")


async def test_a_delegation_acts_for_the_user_with_no_more_than_their_permissions(
    gw: Gateway, secret: str
) -> None:
    boss = await owner(gw.client)
    viewer = await member(gw.client, boss, "viewer")
    taken = await _delegate(gw, viewer.headers)
    assert taken.status_code == 200, taken.text
    delegation = taken.json()["delegation"]
    claims = jwt.decode(delegation, options={"verify_signature": False})
    assert (claims["sub"], claims["org"], claims["act"]) == (
        viewer.user_id,
        viewer.org_id,
        {"sub": "workflow"},
    )
    assert claims["aud"] == "coder-delegation" and not any(p.startswith("gateway:") for p in claims["perms"])

    async with _planning(gw) as planning:
        # The delegation itself is no credential, at a target or at the gateway.
        assert (await planning.get("/v1/plans", headers=bearer(delegation))).status_code == 401
        assert (await gw.client.get("/api/users/me", headers=bearer(delegation))).status_code == 401

        traded = await _trade(gw, delegation)
        assert traded.status_code == 200, traded.text
        token = traded.json()["token"]
        assert 0 < traded.json()["expires_in"] <= 300
        # The viewer's reading passes; writing, which the viewer may not, does not.
        assert (await planning.get("/v1/plans", headers=bearer(token))).status_code == 200
        refused = await planning.post("/v1/plans", json={"title": "No"}, headers=bearer(token))
        assert refused.status_code == 403 and refused.json()["required"] == "planning:write"
    # Never at the gateway: not the user's account, not through the proxy.
    assert (await gw.client.get("/api/users/me", headers=bearer(token))).status_code == 401
    assert (await gw.client.get("/api/planning/v1/plans", headers=bearer(token))).status_code == 401


async def test_only_the_holder_with_its_secret_trades_it_and_a_logout_ends_it(
    gw: Gateway, secret: str
) -> None:
    user = await owner(gw.client)
    assert (await _delegate(gw, user.headers, secret="wrong")).status_code == 401
    assert (await _delegate(gw, {})).status_code == 401
    delegation = (await _delegate(gw, user.headers)).json()["delegation"]
    assert (await _trade(gw, delegation, secret="wrong")).status_code == 401
    forged = jwt.encode({"sub": user.user_id}, "not-the-gateway", algorithm="HS256", headers={"kid": "x"})
    assert (await _trade(gw, forged)).status_code == 401
    assert (await _trade(gw, delegation)).status_code == 200

    assert (await gw.client.post("/auth/logout", json={}, headers=user.headers)).status_code == 204
    ended = await _trade(gw, delegation)
    assert ended.status_code == 401, ended.text


async def test_a_role_change_ends_the_delegation_and_its_tokens(gw: Gateway, secret: str) -> None:
    boss = await owner(gw.client)
    worker = await member(gw.client, boss, "member")
    delegation = (await _delegate(gw, worker.headers)).json()["delegation"]
    token = (await _trade(gw, delegation)).json()["token"]
    async with _planning(gw) as planning:
        assert (await planning.get("/v1/plans", headers=bearer(token))).status_code == 200
        changed = await gw.client.patch(
            f"/api/orgs/{boss.org_id}/members/{worker.user_id}", json={"role": "viewer"}, headers=boss.headers
        )
        assert changed.status_code == 200, changed.text
        assert (await _trade(gw, delegation)).status_code == 401

        # Tokens already traded keep the delegation's issue time: the revocation list refuses them too.
        async def refused() -> bool:
            return (await planning.get("/v1/plans", headers=bearer(token))).status_code == 401

        await wait_until(refused, timeout=10, what="the traded token to be refused")
