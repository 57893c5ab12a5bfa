"""OpenID Connect sign-in against a local provider served over real HTTP: PKCE, state, nonce, and the
ID-token checks (signature, issuer, audience, expiry, nonce)."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from coder.tests.gateway.conftest import Gateway
from coder.tests.gateway.factories import bearer, invite, owner, unique_email
from coder.tests.gateway.test_identity import assert_problem, write_secret


async def start(gw: Gateway, email: str, **params: str) -> tuple[httpx.Response, dict[str, list[str]]]:
    """Begin sign-in at the gateway, let the provider sign `email` in; returns the callback's answer."""
    begin = await gw.client.get("/auth/oidc/login", params={"login_hint": email, **params})
    assert begin.status_code == 302, begin.text
    location = begin.headers["location"]
    query = parse_qs(urlsplit(location).query)
    assert location.startswith(gw.oidc.issuer + "/authorize?")
    async with httpx.AsyncClient() as browser:  # the provider, over real HTTP
        at_provider = await browser.get(location)
    assert at_provider.status_code == 302, at_provider.text
    back = urlsplit(at_provider.headers["location"])
    assert back.path == "/auth/oidc/callback"
    callback = await gw.client.get(f"{back.path}?{back.query}")
    return callback, query


async def test_sign_in_with_pkce_state_and_nonce(gw: Gateway) -> None:
    email = unique_email("oidc")
    callback, query = await start(gw, email)
    assert callback.status_code == 200, callback.text
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["state"][0] and query["nonce"][0] and query["scope"] == ["openid email profile"]
    exchange = gw.oidc.token_requests[-1]
    assert len(exchange["code_verifier"]) >= 43 and exchange["client_secret"] == gw.oidc.client_secret

    pair = callback.json()
    me = (await gw.client.get("/api/users/me", headers=bearer(pair["access_token"]))).json()
    assert me["email"] == email and me["email_verified"] is True
    assert me["memberships"][0]["role"] == "owner"  # open sign-up: an organization of their own
    assert (await write_secret(gw, bearer(pair["access_token"]), "oidc/works")).status_code == 200

    again, _ = await start(gw, email)
    assert again.json()["user_id"] == pair["user_id"]  # the same identity, the same account


async def test_invited_address_joins_the_inviting_org(gw: Gateway) -> None:
    boss = await owner(gw.client)
    email, _ = await invite(gw.client, boss, "viewer")
    callback, _ = await start(gw, email)
    assert callback.status_code == 200, callback.text
    pair = callback.json()
    assert pair["org_id"] == boss.org_id
    me = (await gw.client.get("/api/users/me", headers=bearer(pair["access_token"]))).json()
    assert [m["role"] for m in me["memberships"]] == ["viewer"]


async def test_return_to_gets_a_one_time_code(gw: Gateway) -> None:
    callback, _ = await start(gw, unique_email("ide"), return_to="http://127.0.0.1:53682/callback")
    assert callback.status_code == 302, callback.text
    target = urlsplit(callback.headers["location"])
    assert (target.hostname, target.port, target.path) == ("127.0.0.1", 53682, "/callback")
    code = parse_qs(target.query)["code"][0]
    pair = await gw.client.post("/auth/exchange", json={"code": code})
    assert pair.status_code == 200, pair.text
    assert (
        await gw.client.get("/api/users/me", headers=bearer(pair.json()["access_token"]))
    ).status_code == 200
    assert_problem(await gw.client.post("/auth/exchange", json={"code": code}), 400)


async def test_return_to_must_be_loopback_or_allowed(gw: Gateway) -> None:
    response = await gw.client.get("/auth/oidc/login", params={"return_to": "https://evil.example/steal"})
    assert assert_problem(response, 422)["errors"][0]["field"] == "query.return_to"


@pytest.mark.parametrize(
    ("tamper", "foreign", "reason"),
    [
        ({"aud": "another-client"}, False, "another client"),
        ({"nonce": "replayed-nonce"}, False, "nonce"),
        ({"iat": int(time.time()) - 3600, "exp": int(time.time()) - 1800}, False, "expired"),
        ({"iss": "https://evil.example"}, False, "another issuer"),
        ({}, True, "signature"),
    ],
)
async def test_bad_id_tokens_are_refused(gw: Gateway, tamper: dict, foreign: bool, reason: str) -> None:
    gw.oidc.tamper, gw.oidc.foreign_key = tamper, foreign
    try:
        callback, _ = await start(gw, unique_email("bad"))
    finally:
        gw.oidc.tamper, gw.oidc.foreign_key = {}, False
    problem = assert_problem(callback, 401, "oidc-invalid-id-token")
    assert reason in problem["detail"], problem


async def test_state_must_match_and_is_single_use(gw: Gateway) -> None:
    unknown = await gw.client.get("/auth/oidc/callback", params={"state": "forged", "code": "x"})
    assert assert_problem(unknown, 400)["errors"][0]["field"] == "query.state"
    missing = await gw.client.get("/auth/oidc/callback", params={"code": "x"})
    assert assert_problem(missing, 422)["errors"][0]["field"] == "query.state"

    begin = await gw.client.get("/auth/oidc/login", params={"login_hint": unique_email()})
    async with httpx.AsyncClient() as browser:
        back = urlsplit((await browser.get(begin.headers["location"])).headers["location"])
    # Another browser (no state cookie) cannot finish this sign-in.
    async with gw.client_from("198.51.100.9") as other_browser:
        stolen = await other_browser.get(f"{back.path}?{back.query}")
    assert assert_problem(stolen, 400)["errors"][0]["field"] == "query.state"
    # ...and the state is spent: not even the right browser can use it now.
    assert_problem(await gw.client.get(f"{back.path}?{back.query}"), 400)


async def test_unverified_address_and_provider_errors(gw: Gateway) -> None:
    email = unique_email("unverified")
    gw.oidc.people[email] = {"email_verified": False}
    callback, _ = await start(gw, email)
    assert_problem(callback, 403, "oidc-email-unverified")
    refused = await gw.client.get("/auth/oidc/callback", params={"error": "access_denied", "state": "s"})
    assert_problem(refused, 401, "oidc-refused")
