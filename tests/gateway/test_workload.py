"""Service-to-service workload identity: a target calling another for a user carries a token the gateway
signed naming both (`act`), good only at the callee and only for what the caller's descriptor grants.

`probe` is a target defined here, granted `usage:reserve`: it reserves budget in usage for the member
calling it, the way ai will."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from fastapi import APIRouter, Request, Response

from coder.gateway.edge import Gateway as GatewayApp
from coder.shared import context
from coder.shared.http import WORKLOAD_RENEW_SECONDS, WORKLOAD_TOKEN_PATH
from coder.shared.target import Descriptor, Target, workload_secret
from coder.tests.gateway.conftest import gateway_env, gateway_platform
from coder.tests.gateway.factories import Session, bearer, member, owner
from coder.tests.services.usage.factories import create_budget, read_budget
from coder.tests.support.oidc_provider import OidcProvider
from coder.tests.support.platform import Platform
from coder.tests.support.tokens import TestSigner

SECRET = "probe-workload-secret-" + uuid.uuid4().hex

probe_router = APIRouter()


@probe_router.post("/v1/reserve")
async def _reserve_for_caller(request: Request) -> Response:
    """Reserve in usage for whoever calls, with probe's workload identity."""
    usage = request.app.state.runtime.clients.client("usage", caller="probe")
    answer = await usage.post("/v1/reservations", json=await request.json())
    return Response(answer.content, answer.status_code, media_type=answer.headers.get("content-type"))


PROBE = Target(
    descriptor=Descriptor(
        name="probe",
        port=3999,
        title="Workload identity probe",
        package="coder.tests.gateway.probe",
        needs=frozenset(),
        grants=("usage:reserve",),
        generated_secrets={workload_secret("probe"): "Proves probe to the gateway"},
    ),
    router=probe_router,
)


@dataclass
class World:
    platform: Platform
    owner: Session
    member: Session

    @property
    def client(self) -> httpx.AsyncClient:
        return self.platform.client

    @property
    def gateway(self) -> GatewayApp:
        gateway: GatewayApp = self.platform.app.state.gateway
        return gateway

    def direct(self, target: str) -> httpx.AsyncClient:
        """`target` called directly, not through the gateway's proxy (as from inside the cluster; the
        member's role reaches nothing on probe, a target the registry does not know)."""
        transport = httpx.ASGITransport(app=self.platform.runtime.local_apps[target])
        return httpx.AsyncClient(transport=transport, base_url=f"http://{target}")


@pytest.fixture(scope="module", params=["inprocess", "real"])
async def world(
    request: pytest.FixtureRequest,
    fresh_database: Callable[[], Awaitable[str]],
    oidc_provider: OidcProvider,
) -> AsyncIterator[World]:
    overrides: dict[str, Any] = {}
    if request.param == "real":
        overrides["redis_url"] = request.getfixturevalue("redis_server").url
        overrides["amqp_url"] = request.getfixturevalue("rabbit_server").url
    env = gateway_env(oidc_provider, PROBE_WORKLOAD_SECRET=SECRET)
    url = await fresh_database()
    async with gateway_platform(url, env, request.param, {"probe": PROBE}, **overrides) as platform:
        boss = await owner(platform.client)
        yield World(platform, boss, await member(platform.client, boss, "member"))


def _reservation(amount: float = 2) -> dict[str, Any]:
    return {"amount": amount, "user_id": "u1"}


async def _workload_token(world: World, **fields: str) -> httpx.Response:
    body = {"caller": "probe", "secret": SECRET, "audience": "usage", **fields}
    return await world.client.post(WORKLOAD_TOKEN_PATH, json=body, headers=world.member.headers)


async def _signed(world: World, **claims: Any) -> str:
    """A token signed with the gateway's own key: the shape of a workload token, with `claims` changed."""
    now = int(time.time())
    base = {
        "iss": "coder-platform",
        "aud": "usage",
        "sub": world.member.user_id,
        "org": world.member.org_id,
        "act": {"sub": "probe"},
        "iat": now,
        "exp": now + 60,
    }
    return await world.gateway.keys.sign({**base, **claims})


async def test_a_member_reserves_through_a_granted_target_in_their_own_org(world: World) -> None:
    budget = await create_budget(world.platform, world.owner.headers, limit=10)
    async with world.direct("probe") as probe:
        response = await probe.post("/v1/reserve", json=_reservation(), headers=world.member.headers)
        assert response.status_code == 201, response.text
        assert response.json()["budget_ids"] == [budget["id"]]  # held against the member's org's budget
        assert (await read_budget(world.platform, world.owner.headers, budget["id"]))["reserved"] == 2.0
        # Again: the cached workload token serves the second call as well.
        again = await probe.post("/v1/reserve", json=_reservation(), headers=world.member.headers)
        assert again.status_code == 201, again.text


async def test_the_same_member_calling_reserve_directly_is_refused(world: World) -> None:
    response = await world.client.post(
        "/api/usage/v1/reservations", json=_reservation(), headers=world.member.headers
    )
    assert response.status_code == 403, response.text
    assert response.json()["required"] == "usage:reserve"
    async with world.direct("usage") as usage:
        direct = await usage.post("/v1/reservations", json=_reservation(), headers=world.member.headers)
        assert direct.status_code == 403, direct.text
        # Nor the owner, whose `*` names every permission: a SERVICE action is a target's to call.
        for client, path in ((world.client, "/api/usage/v1/reservations"), (usage, "/v1/reservations")):
            theirs = await client.post(path, json=_reservation(), headers=world.owner.headers)
            assert theirs.status_code == 403, theirs.text
            assert theirs.json()["required"] == "usage:reserve"


async def test_a_workload_token_names_the_caller_and_the_user_and_admits_what_is_granted(
    world: World,
) -> None:
    answer = await _workload_token(world)
    assert answer.status_code == 200, answer.text
    token = answer.json()["token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == "usage"
    assert claims["act"] == {"sub": "probe"}
    assert (claims["sub"], claims["org"]) == (world.member.user_id, world.member.org_id)
    assert "perms" not in claims
    assert 0 < answer.json()["expires_in"] <= 300
    async with world.direct("usage") as usage:
        assert (
            await usage.post("/v1/reservations", json=_reservation(), headers=bearer(token))
        ).status_code == 201
        # Only what probe is granted: reading usage is not.
        refused = await usage.get("/v1/budgets", headers=bearer(token))
        assert refused.status_code == 403, refused.text
        assert refused.json()["required"] == "usage:read"
    # Never a credential at the gateway itself, nor through its proxy.
    assert (await world.client.get("/api/users/me", headers=bearer(token))).status_code == 401
    proxied = await world.client.post(
        "/api/usage/v1/reservations", json=_reservation(), headers=bearer(token)
    )
    assert proxied.status_code == 401


async def test_forged_expired_and_wrong_audience_workload_tokens_are_refused(world: World) -> None:
    kid = jwt.get_unverified_header(await _signed(world))["kid"]
    now = int(time.time())
    forged = TestSigner(kid=kid).token(
        world.member.org_id or "", perms=(), sub=world.member.user_id, aud="usage", act={"sub": "probe"}
    )
    tokens = {
        "forged": forged,
        "expired": await _signed(world, iat=now - 600, exp=now - 300),
        "wrong audience": await _signed(world, aud="secrets"),
        "unknown audience": await _signed(world, aud="nowhere"),
        "no actor": await _signed(world, act=None),
    }
    async with world.direct("usage") as usage:
        for what, token in tokens.items():
            response = await usage.post("/v1/reservations", json=_reservation(), headers=bearer(token))
            assert response.status_code == 401, (what, response.text)
            assert response.headers["content-type"] == "application/problem+json"
        # A caller no descriptor grants the action to: signed by the gateway, still refused.
        stranger = await _signed(world, act={"sub": "secrets"})
        response = await usage.post("/v1/reservations", json=_reservation(), headers=bearer(stranger))
        assert response.status_code == 403, response.text


async def test_the_exchange_authenticates_the_target_and_the_user(world: World) -> None:
    for fields in ({"secret": SECRET + "x"}, {"caller": "usage"}, {"caller": "nobody"}):
        response = await _workload_token(world, **fields)
        assert response.status_code == 401, (fields, response.text)
    # Granted nothing at secrets: no token for it.
    assert (await _workload_token(world, audience="secrets")).status_code == 403
    unknown = await _workload_token(world, audience="nowhere")
    assert unknown.status_code == 422
    # Named as the schema names its own refusals of the same field.
    assert unknown.json()["errors"][0]["field"] == "body.audience"
    empty = await _workload_token(world, audience="")
    assert (empty.status_code, empty.json()["errors"][0]["field"]) == (422, "body.audience")
    no_user = await world.client.post(
        WORKLOAD_TOKEN_PATH, json={"caller": "probe", "secret": SECRET, "audience": "usage"}
    )
    assert no_user.status_code == 401
    assert WORKLOAD_TOKEN_PATH not in (await world.client.get("/openapi.json")).json()["paths"]


async def test_the_calling_side_keeps_its_workload_token_until_shortly_before_expiry(world: World) -> None:
    clients = world.platform.runtime.clients
    reset = context.bearer_token.set(world.member.access_token)
    try:
        first = await clients.workload_token("probe", "usage")
        assert await clients.workload_token("probe", "usage") == first  # each exchange mints a new jti
        claims = jwt.decode(first, options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] > WORKLOAD_RENEW_SECONDS
    finally:
        context.bearer_token.reset(reset)
    other = await owner(world.client)
    reset = context.bearer_token.set(other.access_token)
    try:  # another user: another token, acting for them
        theirs = jwt.decode(
            await clients.workload_token("probe", "usage"), options={"verify_signature": False}
        )
        assert theirs["sub"] == other.user_id
    finally:
        context.bearer_token.reset(reset)
