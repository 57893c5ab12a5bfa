"""Organizations, roles, teams, invitations and the audit log, with the tenancy and RBAC refusals."""

from __future__ import annotations

import re
import uuid
from typing import Any

from coder.tests.gateway.conftest import Gateway
from coder.tests.gateway.factories import PASSWORD, Session, bearer, invite, member, owner, signup
from coder.tests.gateway.test_identity import assert_problem, write_secret


async def refresh(gw: Gateway, who: Session, org_id: str | None = None) -> Session:
    body: dict[str, Any] = {"refresh_token": who.refresh_token}
    if org_id:
        body["org_id"] = org_id
    response = await gw.client.post("/auth/refresh", json=body)
    assert response.status_code == 200, response.text
    return who.update(response.json())


async def test_viewer_member_admin_and_owner(gw: Gateway) -> None:
    boss = await owner(gw.client)
    viewer = await member(gw.client, boss, "viewer")
    regular = await member(gw.client, boss, "member")
    admin = await member(gw.client, boss, "admin")
    assert (await write_secret(gw, boss.headers, "rbac/shared")).status_code == 200

    # A viewer reads, and is refused every admin or write action, at the gateway and at the target.
    assert (
        await gw.client.get("/api/secrets/v1/secrets/rbac/shared", headers=viewer.headers)
    ).status_code == 200
    assert (
        await gw.client.get(f"/api/orgs/{boss.org_id}/members", headers=viewer.headers)
    ).status_code == 200
    refused = [
        await gw.client.post(
            f"/api/orgs/{boss.org_id}/invitations", json={"email": "x@example.com"}, headers=viewer.headers
        ),
        await gw.client.patch(
            f"/api/orgs/{boss.org_id}/members/{regular.user_id}",
            json={"role": "viewer"},
            headers=viewer.headers,
        ),
        await gw.client.post("/api/teams", json={"name": "nope"}, headers=viewer.headers),
        await gw.client.get(f"/api/orgs/{boss.org_id}/audit", headers=viewer.headers),
        await write_secret(gw, viewer.headers, "rbac/viewer"),
        await gw.client.post("/api/secrets/v1/keys/rewrap", headers=viewer.headers),
    ]
    for response in refused:
        problem = assert_problem(response, 403)
        assert "required" in problem or problem["type"].endswith("/forbidden"), problem

    assert (await write_secret(gw, regular.headers, "rbac/member")).status_code == 200
    assert_problem(await gw.client.post("/api/secrets/v1/keys/rewrap", headers=regular.headers), 403)
    assert_problem(await gw.client.post("/api/teams", json={"name": "x"}, headers=regular.headers), 403)

    assert (
        await gw.client.post("/api/teams", json={"name": "platform"}, headers=admin.headers)
    ).status_code == 201
    assert (await gw.client.post("/api/secrets/v1/keys/rewrap", headers=admin.headers)).status_code == 200
    # Only owners hand out ownership.
    grant = await gw.client.patch(
        f"/api/orgs/{boss.org_id}/members/{regular.user_id}", json={"role": "owner"}, headers=admin.headers
    )
    assert assert_problem(grant, 403)["required"] == "gateway:owners.write"
    grant = await gw.client.patch(
        f"/api/orgs/{boss.org_id}/members/{regular.user_id}", json={"role": "owner"}, headers=boss.headers
    )
    assert grant.status_code == 200 and grant.json()["role"] == "owner"


async def test_another_org_is_not_found(gw: Gateway) -> None:
    a = await owner(gw.client)
    b = await owner(gw.client)
    team = (await gw.client.post("/api/teams", json={"name": "a-team"}, headers=a.headers)).json()
    await write_secret(gw, a.headers, "tenancy/a-only")
    reaching = [
        await gw.client.get(f"/api/orgs/{a.org_id}", headers=b.headers),
        await gw.client.get(f"/api/orgs/{a.org_id}/members", headers=b.headers),
        await gw.client.patch(f"/api/orgs/{a.org_id}", json={"name": "mine"}, headers=b.headers),
        await gw.client.delete(f"/api/orgs/{a.org_id}/members/{a.user_id}", headers=b.headers),
        await gw.client.get(f"/api/orgs/{a.org_id}/audit", headers=b.headers),
        await gw.client.get(f"/api/teams/{team['id']}", headers=b.headers),
        await gw.client.put(f"/api/teams/{team['id']}/members/{b.user_id}", headers=b.headers),
        await gw.client.get("/api/secrets/v1/secrets/tenancy/a-only", headers=b.headers),
    ]
    for response in reaching:
        assert_problem(response, 404)
    # Nor can a team of A take in someone from B.
    outsider = await gw.client.put(f"/api/teams/{team['id']}/members/{b.user_id}", headers=a.headers)
    assert_problem(outsider, 404)


async def test_custom_roles(gw: Gateway) -> None:
    boss = await owner(gw.client)
    roles_url = f"/api/orgs/{boss.org_id}/roles"
    bad = await gw.client.post(
        roles_url, json={"name": "reader", "permissions": ["secrets:read", "bogus"]}, headers=boss.headers
    )
    assert assert_problem(bad, 422)["errors"][0]["field"] == "permissions.1"
    # Only declared actions: a typo is refused, naming the entry, not stored as a grant of nothing.
    undeclared = await gw.client.post(
        roles_url,
        json={"name": "typo", "permissions": ["secrets:read", "secrets:reed"]},
        headers=boss.headers,
    )
    error = assert_problem(undeclared, 422)["errors"][0]
    assert error["field"] == "permissions.1" and "secrets:reed" in error["message"]
    scoped = await gw.client.post(
        "/auth/tokens",
        json={"name": "ci", "scopes": ["usage:reed"], "expires_in_days": 1},
        headers=boss.headers,
    )
    assert assert_problem(scoped, 422)["errors"][0]["field"] == "scopes.0"
    owning = await gw.client.post(
        roles_url, json={"name": "sneaky", "permissions": ["*"]}, headers=boss.headers
    )
    assert assert_problem(owning, 422)["errors"][0]["field"] == "permissions.0"
    builtin = await gw.client.post(
        roles_url, json={"name": "admin", "permissions": ["secrets:*"]}, headers=boss.headers
    )
    assert_problem(builtin, 409)
    created = await gw.client.post(
        roles_url,
        json={"name": "secrets-reader", "description": "CI", "permissions": ["secrets:read", "secrets:list"]},
        headers=boss.headers,
    )
    assert created.status_code == 201, created.text
    names = [r["name"] for r in (await gw.client.get(roles_url, headers=boss.headers)).json()]
    assert names == ["owner", "admin", "member", "viewer", "secrets-reader"]

    reader = await member(gw.client, boss, "secrets-reader")
    await write_secret(gw, boss.headers, "custom/x")
    assert (
        await gw.client.get("/api/secrets/v1/secrets/custom/x", headers=reader.headers)
    ).status_code == 200
    assert_problem(await write_secret(gw, reader.headers, "custom/y"), 403)
    # The gateway's coarse check: nothing granted on `usage`, so the request never leaves the gateway.
    assert_problem(
        await gw.client.get("/api/usage/v1/meters", headers=reader.headers), 403, "target-forbidden"
    )

    changed = await gw.client.patch(
        f"{roles_url}/secrets-reader", json={"permissions": ["secrets:*"]}, headers=boss.headers
    )
    assert changed.status_code == 200, changed.text
    assert_problem(await write_secret(gw, reader.headers, "custom/y"), 401, "token-outdated")
    await refresh(gw, reader)
    assert (await write_secret(gw, reader.headers, "custom/y")).status_code == 200
    assert_problem(
        await gw.client.delete(f"{roles_url}/secrets-reader", headers=boss.headers), 409, "role-in-use"
    )
    assert_problem(await gw.client.delete(f"{roles_url}/owner", headers=boss.headers), 403, "builtin-role")


async def test_role_change_and_removal_take_effect_at_once(gw: Gateway) -> None:
    boss = await owner(gw.client)
    regular = await member(gw.client, boss, "member")
    pat = (
        await gw.client.post(
            "/auth/tokens",
            json={"name": "ci", "scopes": ["secrets:read", "secrets:write"], "expires_in_days": 1},
            headers=regular.headers,
        )
    ).json()["token"]
    assert (await write_secret(gw, bearer(pat), "demote/a")).status_code == 200

    demoted = await gw.client.patch(
        f"/api/orgs/{boss.org_id}/members/{regular.user_id}", json={"role": "viewer"}, headers=boss.headers
    )
    assert demoted.status_code == 200
    assert_problem(await write_secret(gw, regular.headers, "demote/b"), 401, "token-outdated")
    await refresh(gw, regular)
    assert_problem(await write_secret(gw, regular.headers, "demote/b"), 403)
    # The personal token follows the role too: it is narrowed to what a viewer may do.
    assert_problem(await write_secret(gw, bearer(pat), "demote/c"), 403)
    assert (await gw.client.get("/api/secrets/v1/secrets/demote/a", headers=bearer(pat))).status_code == 200

    removed = await gw.client.delete(
        f"/api/orgs/{boss.org_id}/members/{regular.user_id}", headers=boss.headers
    )
    assert removed.status_code == 204
    assert_problem(await gw.client.get("/api/secrets/v1/secrets/demote/a", headers=regular.headers), 401)
    assert_problem(await gw.client.get("/api/secrets/v1/secrets/demote/a", headers=bearer(pat)), 401)
    gone = await gw.client.post("/auth/refresh", json={"refresh_token": regular.refresh_token})
    assert assert_problem(gone, 403)["errors"][0]["field"] == "org_id"


async def test_last_owner_stays(gw: Gateway) -> None:
    boss = await owner(gw.client)
    leave = await gw.client.delete(f"/api/orgs/{boss.org_id}/members/{boss.user_id}", headers=boss.headers)
    assert_problem(leave, 409, "last-owner")
    demote = await gw.client.patch(
        f"/api/orgs/{boss.org_id}/members/{boss.user_id}", json={"role": "admin"}, headers=boss.headers
    )
    assert_problem(demote, 409, "last-owner")
    unknown_role = await gw.client.patch(
        f"/api/orgs/{boss.org_id}/members/{boss.user_id}", json={"role": "wizard"}, headers=boss.headers
    )
    assert assert_problem(unknown_role, 422)["errors"][0]["field"] == "role"


async def test_invitations(gw: Gateway) -> None:
    boss = await owner(gw.client)
    email, token = await invite(gw.client, boss, "member")
    wrong, _ = await signup(gw.client)
    mismatch = await gw.client.post("/api/orgs/join", json={"invitation": token}, headers=wrong.headers)
    assert_problem(mismatch, 403, "invitation-mismatch")
    joined, _ = await signup(gw.client, email=email, invitation=token)
    assert joined.org_id == boss.org_id
    reused = await gw.client.post(
        "/auth/signup", json={"email": "z" + email, "password": PASSWORD, "name": "z", "invitation": token}
    )
    assert_problem(reused, 409, "invitation-used")

    # An existing user joins a second org, then switches the session to it.
    other = await owner(gw.client)
    email2, token2 = await invite(gw.client, other, "viewer", email=joined.email)
    assert email2 == joined.email
    assert (
        await gw.client.post("/api/orgs/join", json={"invitation": token2}, headers=joined.headers)
    ).status_code == 201
    mine = (await gw.client.get("/api/orgs", headers=joined.headers)).json()
    assert {m["org_id"]: m["role"] for m in mine} == {boss.org_id: "member", other.org_id: "viewer"}
    await refresh(gw, joined, other.org_id)
    me = (await gw.client.get("/api/users/me", headers=joined.headers)).json()
    assert me["org_id"] == other.org_id and "secrets:write" not in me["permissions"]
    stranger = await refresh_refused(gw, joined, str(uuid.uuid4()))
    assert stranger["errors"][0]["field"] == "org_id"

    _, token3 = await invite(gw.client, boss, "viewer")
    listed = (await gw.client.get(f"/api/orgs/{boss.org_id}/invitations", headers=boss.headers)).json()[
        "items"
    ]
    pending = next(i for i in listed if i["accepted_at"] is None)
    assert "token" not in pending
    assert (
        await gw.client.delete(f"/api/orgs/{boss.org_id}/invitations/{pending['id']}", headers=boss.headers)
    ).status_code == 204
    revoked = await gw.client.post(
        "/auth/signup",
        json={"email": pending["email"], "password": PASSWORD, "name": "n", "invitation": token3},
    )
    assert assert_problem(revoked, 404)["errors"][0]["field"] == "invitation"
    duplicate = await gw.client.post(
        f"/api/orgs/{boss.org_id}/invitations", json={"email": joined.email}, headers=boss.headers
    )
    assert_problem(duplicate, 409)


async def refresh_refused(gw: Gateway, who: Session, org_id: str) -> dict[str, Any]:
    response = await gw.client.post(
        "/auth/refresh", json={"refresh_token": who.refresh_token, "org_id": org_id}
    )
    return assert_problem(response, 403)


async def test_teams(gw: Gateway) -> None:
    boss = await owner(gw.client)
    regular = await member(gw.client, boss, "member")
    created = await gw.client.post(
        "/api/teams", json={"name": "backend", "description": "APIs"}, headers=boss.headers
    )
    assert created.status_code == 201
    team = created.json()
    assert_problem(await gw.client.post("/api/teams", json={"name": "backend"}, headers=boss.headers), 409)
    for name in ("frontend", "infra"):
        await gw.client.post("/api/teams", json={"name": name}, headers=boss.headers)
    first = (await gw.client.get("/api/teams", params={"limit": 2}, headers=regular.headers)).json()
    assert [t["name"] for t in first["items"]] == ["backend", "frontend"] and first["next_cursor"]
    rest = (
        await gw.client.get("/api/teams", params={"cursor": first["next_cursor"]}, headers=regular.headers)
    ).json()
    assert [t["name"] for t in rest["items"]] == ["infra"] and rest["next_cursor"] is None

    added = await gw.client.put(f"/api/teams/{team['id']}/members/{regular.user_id}", headers=boss.headers)
    assert added.status_code == 200 and added.json()["email"] == regular.email
    members = (await gw.client.get(f"/api/teams/{team['id']}/members", headers=regular.headers)).json()[
        "items"
    ]
    assert [m["user_id"] for m in members] == [regular.user_id]
    renamed = await gw.client.patch(
        f"/api/teams/{team['id']}", json={"name": "platform"}, headers=boss.headers
    )
    assert renamed.json()["name"] == "platform"
    assert (
        await gw.client.delete(f"/api/teams/{team['id']}/members/{regular.user_id}", headers=boss.headers)
    ).status_code == 204
    assert (await gw.client.delete(f"/api/teams/{team['id']}", headers=boss.headers)).status_code == 204
    assert_problem(await gw.client.get(f"/api/teams/{team['id']}", headers=boss.headers), 404)
    assert_problem(await gw.client.get("/api/teams/not-a-uuid", headers=boss.headers), 422)
    assert_problem(await gw.client.post("/api/teams", json={"name": ""}, headers=boss.headers), 422)


async def test_audit_log_records_and_filters_admin_actions(gw: Gateway) -> None:
    boss = await owner(gw.client)
    regular = await member(gw.client, boss, "member")
    await gw.client.patch(
        f"/api/orgs/{boss.org_id}/members/{regular.user_id}", json={"role": "viewer"}, headers=boss.headers
    )
    await gw.client.post("/api/teams", json={"name": "audited"}, headers=boss.headers)
    await gw.client.patch(f"/api/orgs/{boss.org_id}", json={"name": "Renamed"}, headers=boss.headers)
    audit = f"/api/orgs/{boss.org_id}/audit"
    everything = (await gw.client.get(audit, headers=boss.headers)).json()["items"]
    actions = [e["action"] for e in everything]
    assert actions[:3] == ["org.updated", "team.created", "member.role_changed"]
    assert {"org.created", "invitation.created", "invitation.accepted"} <= set(actions)
    changed = next(e for e in everything if e["action"] == "member.role_changed")
    assert changed["actor_id"] == boss.user_id and changed["resource_id"] == regular.user_id
    assert changed["details"] == {"role": "viewer", "previous": "member"} and re.fullmatch(
        r"[0-9a-f]{32}", changed["request_id"]
    )

    members_only = (await gw.client.get(audit, params={"action": "member."}, headers=boss.headers)).json()[
        "items"
    ]
    assert [e["action"] for e in members_only] == ["member.role_changed"]
    by_invitee = (
        await gw.client.get(audit, params={"actor_id": regular.user_id}, headers=boss.headers)
    ).json()
    assert [e["action"] for e in by_invitee["items"]] == ["invitation.accepted"]
    page = (await gw.client.get(audit, params={"limit": 1}, headers=boss.headers)).json()
    after = (
        await gw.client.get(audit, params={"limit": 1, "cursor": page["next_cursor"]}, headers=boss.headers)
    ).json()
    assert [e["action"] for e in page["items"] + after["items"]] == actions[:2]
    bad = await gw.client.get(audit, params={"since": "yesterday"}, headers=boss.headers)
    assert "query.since" in [e["field"] for e in assert_problem(bad, 422)["errors"]]


async def test_forwarded_for_is_believed_only_from_trusted_proxies(gw: Gateway) -> None:
    """Audit entries name the client: behind a configured proxy its forwarded address, otherwise the
    peer itself, whatever X-Forwarded-For it sends."""
    spoofed = {"X-Forwarded-For": "198.51.100.77"}
    seen = {}
    for peer in ("10.9.3.4", "203.0.113.50"):  # inside CODER_TRUSTED_PROXIES, then outside
        async with gw.client_from(peer) as client:
            body = {"email": f"fwd-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD, "name": "F"}
            created = await client.post("/auth/signup", json=body, headers=spoofed)
            assert created.status_code == 201, created.text
            pair = created.json()
        audit = await gw.client.get(f"/api/orgs/{pair['org_id']}/audit", headers=bearer(pair["access_token"]))
        assert audit.status_code == 200, audit.text
        seen[peer] = {entry["ip"] for entry in audit.json()["items"]}
    assert seen == {"10.9.3.4": {"198.51.100.77"}, "203.0.113.50": {"203.0.113.50"}}
