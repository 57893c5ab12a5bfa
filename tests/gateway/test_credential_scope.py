"""No credential broader than its holder: a personal access token manages nothing its scopes do not
name, and mints only tokens no broader than itself.

The walk discovers the gateway's own routes from the running app, so a new route under /auth,
/api/users, /api/orgs or /api/teams is covered without an edit here: a narrow token must be refused
there (403 naming the permission it lacks) unless the route is listed below with the reason."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from coder.gateway import roles
from coder.tests.gateway.conftest import Gateway
from coder.tests.gateway.factories import (
    PASSWORD,
    Session,
    bearer,
    invite,
    member,
    owner,
    unique_email,
)
from coder.tests.gateway.test_identity import assert_problem, write_secret

PREFIXES = ("/auth", "/api/users", "/api/orgs", "/api/teams")
SELF_SERVICE = sorted(roles.SELF_SERVICE)

# What a token scoped to `secrets:read` may call, what it gets, and why that widens nothing.
ALLOWED: dict[tuple[str, str], tuple[int, str]] = {
    ("GET", "/api/users/me"): (200, "who you are: the holder's own identity and the token's permissions"),
    ("GET", "/api/orgs"): (200, "the holder's memberships, as /api/users/me shows them"),
    ("GET", "/api/orgs/{org_id}"): (200, "the token's own organization's name, as /api/users/me shows it"),
    ("GET", "/auth/providers"): (200, "public: the ways to sign in"),
    ("GET", "/auth/oidc/login"): (302, "public: starts a sign-in at the identity provider"),
    ("POST", "/auth/revoke"): (200, "RFC 7009: revokes only the token in the body (here an unknown one)"),
    # Public routes ignore the bearer; each is probed with the token where their own credential goes.
    ("POST", "/auth/signup"): (409, "a new account: the holder's address is taken"),
    ("POST", "/auth/login"): (401, "a token is no password"),
    ("POST", "/auth/refresh"): (401, "a personal access token is no refresh token"),
    ("POST", "/auth/exchange"): (400, "a personal access token is no one-time sign-in code"),
    ("GET", "/auth/oidc/callback"): (400, "a personal access token is no sign-in state"),
}


@dataclass
class World:
    """An owner with a narrow personal token, and one of everything its routes can name."""

    holder: Session
    co_owner: Session
    pat: str
    values: dict[str, list[str]]  # path parameter -> the values to try
    bodies: dict[tuple[str, str], dict[str, Any]]


async def _pat(gw: Gateway, by: Session, *scopes: str) -> dict[str, Any]:
    created = await gw.client.post(
        "/auth/tokens",
        json={"name": "narrow", "scopes": list(scopes), "expires_in_days": 1},
        headers=by.headers,
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


async def _world(gw: Gateway) -> World:
    holder = await owner(gw.client)
    # A second owner, so leaving is not refused as "last owner" whatever the credential.
    co_owner = await member(gw.client, holder, "owner")
    pat = (await _pat(gw, holder, "secrets:read"))["token"]
    other_pat = await _pat(gw, holder, "secrets:list")
    h = holder.headers
    team = (await gw.client.post("/api/teams", json={"name": "core"}, headers=h)).json()
    added = await gw.client.put(f"/api/teams/{team['id']}/members/{co_owner.user_id}", headers=h)
    assert added.status_code == 200, added.text
    role = await gw.client.post(
        f"/api/orgs/{holder.org_id}/roles",
        json={"name": "ci-reader", "permissions": ["secrets:read"]},
        headers=h,
    )
    assert role.status_code == 201, role.text
    pending = await gw.client.post(
        f"/api/orgs/{holder.org_id}/invitations", json={"email": unique_email(), "role": "member"}, headers=h
    )
    assert pending.status_code == 201, pending.text
    # Another organization invites the holder: joining it is an account change too.
    _, elsewhere = await invite(gw.client, await owner(gw.client), "admin", holder.email)
    values = {
        "org_id": [str(holder.org_id)],
        "user_id": [co_owner.user_id, holder.user_id],
        "team_id": [team["id"]],
        "token_id": [other_pat["id"]],
        "invitation_id": [pending.json()["id"]],
        "name": ["ci-reader"],
    }
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("POST", "/auth/signup"): {"email": holder.email, "password": pat, "name": "taken"},
        ("POST", "/auth/login"): {"email": holder.email, "password": pat},
        ("POST", "/auth/refresh"): {"refresh_token": pat},
        ("POST", "/auth/exchange"): {"code": pat},
        ("POST", "/auth/revoke"): {"token": "cdr_pat_unknown"},
        ("POST", "/auth/logout"): {"everywhere": True},
        ("POST", "/auth/tokens"): {"name": "sub", "scopes": ["secrets:read"], "expires_in_days": 1},
        ("PATCH", "/api/users/me"): {"name": "Renamed"},
        ("PUT", "/api/users/me/password"): {
            "current_password": PASSWORD,
            "new_password": "a whole new phrase",
        },
        ("POST", "/api/orgs"): {"name": "Minted"},
        ("POST", "/api/orgs/join"): {"invitation": elsewhere},
        ("PATCH", "/api/orgs/{org_id}"): {"name": "Renamed"},
        ("PATCH", "/api/orgs/{org_id}/members/{user_id}"): {"role": "viewer"},
        ("POST", "/api/orgs/{org_id}/invitations"): {"email": unique_email(), "role": "owner"},
        ("POST", "/api/orgs/{org_id}/roles"): {"name": "minted", "permissions": ["secrets:*"]},
        ("PATCH", "/api/orgs/{org_id}/roles/{name}"): {"permissions": ["secrets:*"]},
        ("POST", "/api/teams"): {"name": "minted"},
        ("PATCH", "/api/teams/{team_id}"): {"name": "renamed"},
    }
    return World(holder, co_owner, pat, values, bodies)


def _routes(gw: Gateway) -> list[tuple[str, str, bool]]:
    """(method, path, takes a body) of the gateway's own routes, from the app's OpenAPI document
    (the way tests/e2e walks every target), so a new route joins the walk by itself."""
    paths: dict[str, dict[str, Any]] = gw.platform.app.openapi()["paths"]
    found = [
        (method.upper(), path, "requestBody" in operation)
        for path, operations in paths.items()
        if path.startswith(PREFIXES)
        for method, operation in operations.items()
    ]
    assert len(found) > 30, "the gateway's own routes were not found"
    return found


def _urls(path: str, values: dict[str, list[str]]) -> list[str]:
    urls = [path]
    for name in re.findall(r"{(\w+)}", path):
        assert name in values, f"give the walk a value for path parameter {name!r}"
        urls = [url.replace(f"{{{name}}}", value) for url in urls for value in values[name]]
    return urls


async def _snapshot(gw: Gateway, world: World) -> dict[str, Any]:
    """Everything the walk could have changed, as the holder's session sees it."""
    h, org = world.holder.headers, f"/api/orgs/{world.holder.org_id}"
    team = world.values["team_id"][0]
    seen: dict[str, Any] = {}
    for url in (
        "/api/users/me",
        org,
        f"{org}/members",
        f"{org}/invitations",
        f"{org}/roles",
        f"{org}/audit",
        "/api/teams",
        f"/api/teams/{team}/members",
        "/auth/tokens",
    ):
        response = await gw.client.get(url, headers=h)
        assert response.status_code == 200, (url, response.text)
        seen[url] = response.json()
    for token in seen["/auth/tokens"]["items"]:
        token.pop("last_used_at")  # using a token is not changing it
    seen["co-owner"] = (await gw.client.get("/api/users/me", headers=world.co_owner.headers)).status_code
    return seen


async def test_a_narrow_personal_token_changes_nothing_it_is_not_scoped_for(gw: Gateway) -> None:
    world = await _world(gw)
    before = await _snapshot(gw, world)
    checked: list[str] = []
    routes = _routes(gw)
    known = {(method, path) for method, path, _ in routes}
    assert set(ALLOWED) <= known and set(world.bodies) <= known, "a listed route no longer exists"
    for method, path, takes_body in routes:
        key = (method, path)
        if takes_body:
            assert key in world.bodies, f"give the walk a valid body for {method} {path}"
        body = world.bodies.get(key)
        params = {"state": world.pat, "code": world.pat} if path == "/auth/oidc/callback" else None
        for url in _urls(path, world.values):
            response = await gw.client.request(
                method, url, json=body, params=params, headers=bearer(world.pat), follow_redirects=False
            )
            where = f"{method} {url}: {response.text}"
            if key in ALLOWED:
                assert response.status_code == ALLOWED[key][0], where
            else:
                problem = assert_problem(response, 403)
                assert problem.get("required", "").startswith("gateway:"), where
            checked.append(f"{method} {url}")
    assert "POST /auth/tokens" in checked and "POST /api/orgs/join" in checked
    assert await _snapshot(gw, world) == before
    # The narrow token still does what it is for.
    assert (await gw.client.get("/api/users/me", headers=bearer(world.pat))).json()["permissions"] == [
        "secrets:read"
    ]


async def test_a_personal_token_mints_only_a_subset_of_its_own_scopes(gw: Gateway) -> None:
    holder = await owner(gw.client)
    assert (await write_secret(gw, holder.headers, "mint/a")).status_code == 200
    minter = bearer((await _pat(gw, holder, "secrets:read", roles.TOKENS_WRITE))["token"])

    async def mint(*scopes: str) -> Any:
        return await gw.client.post(
            "/auth/tokens", json={"name": "sub", "scopes": list(scopes), "expires_in_days": 1}, headers=minter
        )

    for broader in ("*", "secrets:write", "secrets:*", "gateway:*", roles.ACCOUNT_WRITE):
        problem = assert_problem(await mint(broader), 403, "scope-not-held")
        assert problem["errors"] == [{"field": "scopes.0", "message": f"{broader} is not held"}]
    mixed = assert_problem(await mint("secrets:read", "secrets:write"), 403, "scope-not-held")
    assert [e["field"] for e in mixed["errors"]] == ["scopes.1"] and "secrets:write" in mixed["detail"]

    narrower = await mint("secrets:read")
    assert narrower.status_code == 201, narrower.text
    child = bearer(narrower.json()["token"])
    me = (await gw.client.get("/api/users/me", headers=child)).json()
    assert me["permissions"] == ["secrets:read"]
    assert (await gw.client.get("/api/secrets/v1/secrets/mint/a", headers=child)).status_code == 200
    assert_problem(await write_secret(gw, child, "mint/b"), 403)
    # The child holds no token management, so it mints nothing at all.
    refused = await gw.client.post(
        "/auth/tokens", json={"name": "x", "scopes": ["secrets:read"], "expires_in_days": 1}, headers=child
    )
    assert assert_problem(refused, 403)["required"] == roles.TOKENS_WRITE


async def test_session_tokens_keep_their_powers_within_their_role(gw: Gateway) -> None:
    boss = await owner(gw.client)
    admin = await member(gw.client, boss, "admin")
    regular = await member(gw.client, boss, "member")
    for session in (admin, regular):
        perms = (await gw.client.get("/api/users/me", headers=session.headers)).json()["permissions"]
        assert set(SELF_SERVICE) <= set(perms) and "*" not in perms
    # An owner's session mints anything; others only what their role holds.
    assert (await _pat(gw, boss, "*"))["scopes"] == ["*"]
    assert_problem(
        await gw.client.post(
            "/auth/tokens", json={"name": "x", "scopes": ["*"], "expires_in_days": 1}, headers=admin.headers
        ),
        403,
        "scope-not-held",
    )
    assert (await _pat(gw, admin, "secrets:*", "gateway:members.read"))["scopes"]
    assert_problem(
        await gw.client.post(
            "/auth/tokens",
            json={"name": "x", "scopes": ["secrets:*"], "expires_in_days": 1},
            headers=regular.headers,
        ),
        403,
        "scope-not-held",
    )
    assert (await _pat(gw, regular, "secrets:read", "secrets:write"))["scopes"]
    # Self-service works for every role, including leaving and founding an org without any.
    renamed = await gw.client.patch("/api/users/me", json={"name": "Reg"}, headers=regular.headers)
    assert renamed.status_code == 200, renamed.text
    left = await gw.client.delete(
        f"/api/orgs/{boss.org_id}/members/{regular.user_id}", headers=regular.headers
    )
    assert left.status_code == 204, left.text
    login = await gw.client.post("/auth/login", json={"email": regular.email, "password": PASSWORD})
    alone = bearer(login.json()["access_token"])
    assert login.json()["org_id"] is None
    assert (await gw.client.post("/api/orgs", json={"name": "Fresh start"}, headers=alone)).status_code == 201


async def test_scoped_self_service_and_what_a_personal_token_gets_at_logout(gw: Gateway) -> None:
    holder = await owner(gw.client)
    tokens = bearer((await _pat(gw, holder, roles.TOKENS_READ, roles.ACCOUNT_WRITE))["token"])
    assert (await gw.client.get("/auth/tokens", headers=tokens)).status_code == 200
    assert (await gw.client.patch("/api/users/me", json={"name": "N"}, headers=tokens)).status_code == 200
    assert assert_problem(
        await gw.client.post("/auth/logout", json={"everywhere": True}, headers=tokens), 403
    )["required"] == (roles.SESSIONS_WRITE)

    narrow = (await _pat(gw, holder, "secrets:read"))["token"]
    # A personal token has no session: alone, logout ends nothing and says so.
    nothing = assert_problem(await gw.client.post("/auth/logout", json={}, headers=bearer(narrow)), 422)
    assert nothing["errors"][0]["field"] == "refresh_token"
    assert (await gw.client.get("/api/users/me", headers=holder.headers)).status_code == 200
    # It cannot be traded for a session either.
    assert_problem(await gw.client.post("/auth/refresh", json={"refresh_token": narrow}), 401)
    assert_problem(await gw.client.post("/auth/exchange", json={"code": narrow}), 400)
    # A session's refresh token is proof of the session: with it, logout everywhere works.
    everywhere = await gw.client.post(
        "/auth/logout",
        json={"everywhere": True, "refresh_token": holder.refresh_token},
        headers=bearer(narrow),
    )
    assert everywhere.status_code == 204, everywhere.text
    assert_problem(await gw.client.get("/api/users/me", headers=holder.headers), 401, "token-revoked")
    # Possession is proof enough to revoke the token itself (RFC 7009).
    assert (await gw.client.post("/auth/revoke", json={"token": narrow})).status_code == 200
    assert_problem(await gw.client.get("/api/users/me", headers=bearer(narrow)), 401)
