"""Small factories: people signed up through the real gateway flows, and their tokens."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

PASSWORD = "correct horse battery staple"


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


@dataclass
class Session:
    """A signed-in user as a client holds them: tokens, and who and where they are."""

    email: str
    password: str
    access_token: str
    refresh_token: str
    user_id: str
    org_id: str | None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    def update(self, pair: dict[str, Any]) -> Session:
        self.access_token = pair["access_token"]
        self.refresh_token = pair["refresh_token"]
        self.org_id = pair["org_id"]
        return self


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def session_of(email: str, password: str, pair: dict[str, Any]) -> Session:
    return Session(
        email=email,
        password=password,
        access_token=pair["access_token"],
        refresh_token=pair["refresh_token"],
        user_id=pair["user_id"],
        org_id=pair["org_id"],
    )


async def signup(
    client: httpx.AsyncClient,
    *,
    email: str | None = None,
    password: str = PASSWORD,
    organization: str | None = None,
    invitation: str | None = None,
) -> tuple[Session, dict[str, Any]]:
    email = email or unique_email()
    body: dict[str, Any] = {"email": email, "password": password, "name": email.split("@")[0]}
    if organization:
        body["organization"] = organization
    if invitation:
        body["invitation"] = invitation
    response = await client.post("/auth/signup", json=body)
    assert response.status_code == 201, response.text
    pair = response.json()
    return session_of(email, password, pair), pair


async def owner(client: httpx.AsyncClient) -> Session:
    """Someone who just founded an organization of their own (open sign-up)."""
    session, _ = await signup(client, organization=f"Org {uuid.uuid4().hex[:6]}")
    return session


async def invite(
    client: httpx.AsyncClient, by: Session, role: str, email: str | None = None
) -> tuple[str, str]:
    email = email or unique_email(role)
    response = await client.post(
        f"/api/orgs/{by.org_id}/invitations", json={"email": email, "role": role}, headers=by.headers
    )
    assert response.status_code == 201, response.text
    return email, response.json()["token"]


async def member(client: httpx.AsyncClient, of: Session, role: str) -> Session:
    """A new user who joined `of`'s organization with `role` through an invitation."""
    email, token = await invite(client, of, role)
    session, _ = await signup(client, email=email, invitation=token)
    assert session.org_id == of.org_id
    return session
