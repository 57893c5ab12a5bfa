"""The gateway's org resources for the cross-org suite (tests/e2e/test_cross_org.py): the organization
itself, a member, an invitation, a custom role, a team (with that member) and a personal token."""

from __future__ import annotations

import uuid

import jwt

from coder.tests.gateway.factories import signup, unique_email
from coder.tests.support.crossorg import CrossOrg, TargetClient


async def _created(
    client: TargetClient, method: str, path: str, body: object, headers: dict[str, str]
) -> dict:
    response = await client.request(method, path, json=body, headers=headers)
    assert response.status_code in (200, 201), response.text
    created: dict = response.json()
    return created


async def create(client: TargetClient, headers: dict[str, str]) -> dict[str, str]:
    """As the owner of an organization (`headers`, a session of the gateway's own)."""
    org_id = jwt.decode(headers["Authorization"].split()[1], options={"verify_signature": False})["org"]
    orgs = f"/api/orgs/{org_id}"
    joining = unique_email("member")
    invited = await _created(
        client, "POST", f"{orgs}/invitations", {"email": joining, "role": "member"}, headers
    )
    member, _ = await signup(client.client, email=joining, invitation=invited["token"])
    pending = await _created(client, "POST", f"{orgs}/invitations", {"email": unique_email()}, headers)
    role = {"name": f"role-{uuid.uuid4().hex[:6]}", "permissions": ["secrets:read"]}
    name = (await _created(client, "POST", f"{orgs}/roles", role, headers))["name"]
    team_id = (
        await _created(client, "POST", "/api/teams", {"name": f"Team {uuid.uuid4().hex[:6]}"}, headers)
    )["id"]
    await _created(client, "PUT", f"/api/teams/{team_id}/members/{member.user_id}", None, headers)
    token = {"name": "ci", "scopes": ["secrets:read"], "expires_in_days": 30}
    token_id = (await _created(client, "POST", "/auth/tokens", token, headers))["id"]
    return {
        "org_id": org_id,
        "user_id": member.user_id,
        "invitation_id": pending["id"],
        "name": name,
        "team_id": team_id,
        "token_id": token_id,
    }


registration = CrossOrg(
    create=create,
    bodies={
        ("PATCH", "/api/orgs/{org_id}"): {"name": "Taken over"},
        ("PATCH", "/api/orgs/{org_id}/members/{user_id}"): {"role": "admin"},
        ("POST", "/api/orgs/{org_id}/invitations"): {"email": "intruder@example.com", "role": "owner"},
        ("POST", "/api/orgs/{org_id}/roles"): {"name": "intruders", "permissions": ["*"]},
        ("PATCH", "/api/orgs/{org_id}/roles/{name}"): {"permissions": ["*"]},
        ("PATCH", "/api/teams/{team_id}"): {"name": "Taken over"},
    },
    unaddressed={
        ("POST", "/auth/signup"): "creates an account (and its own organization)",
        ("POST", "/auth/login"): "signs in to the caller's own account",
        ("POST", "/auth/refresh"): "rotates the caller's own refresh token",
        ("POST", "/auth/exchange"): "trades the caller's own one-time code",
        ("POST", "/auth/logout"): "ends the caller's own sessions",
        ("POST", "/auth/revoke"): "revokes a token the caller presents (possession is the proof)",
        ("GET", "/auth/oidc/login"): "a redirect to the identity provider",
        ("GET", "/auth/oidc/callback"): "needs the state of a sign-in the caller started",
        ("POST", "/auth/tokens"): "creates a personal token of the caller's own",
        ("PATCH", "/api/users/me"): "the caller's own account",
        ("PUT", "/api/users/me/password"): "the caller's own account",
        ("POST", "/api/orgs"): "creates a new organization",
        ("POST", "/api/orgs/join"): "joins by an invitation addressed to the caller",
        ("POST", "/api/teams"): "creates in the caller's org",
    },
    # A's reads: the members' last sign-in moves only with A's own people; nothing here is clocked.
)
