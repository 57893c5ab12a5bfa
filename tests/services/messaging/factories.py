"""Small builders for messaging tests."""

from __future__ import annotations

import uuid
from typing import Any

from coder.tests.support.platform import Platform
from coder.tests.support.tokens import TestSigner

API = "/api/messaging/v1"


def user(
    signer: TestSigner, org: str, name: str | None = None, perms: tuple[str, ...] = ("*",)
) -> tuple[str, dict[str, str]]:
    """A user id of `org` and headers of a token for them."""
    subject = name or f"user-{uuid.uuid4().hex[:8]}"
    return subject, signer.headers(org, perms=perms, sub=subject)


async def channel(p: Platform, h: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"name": f"ch-{uuid.uuid4().hex[:8]}", **fields}
    response = await p.client.post(f"{API}/channels", json=body, headers=h)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def add(p: Platform, h: dict[str, str], channel_id: str, user_id: str) -> None:
    response = await p.client.post(
        f"{API}/channels/{channel_id}/members", json={"user_id": user_id}, headers=h
    )
    assert response.status_code in (200, 201), response.text


async def post(
    p: Platform, h: dict[str, str], channel_id: str, message: str, **fields: Any
) -> dict[str, Any]:
    body = {"channel_id": channel_id, "message": message, **fields}
    response = await p.client.post(f"{API}/posts", json=body, headers=h)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def unread(p: Platform, h: dict[str, str], channel_id: str) -> tuple[int, int]:
    response = await p.client.get(f"{API}/channels/{channel_id}/unread", headers=h)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["msg_count"], body["mention_count"]
