"""messaging's resources for the cross-org suite (tests/e2e/test_cross_org.py)."""

from __future__ import annotations

import uuid

from coder.tests.support.crossorg import CrossOrg, TargetClient


async def create(client: TargetClient, headers: dict[str, str]) -> dict[str, str]:
    channel = await client.request(
        "POST", "/v1/channels", json={"name": f"crossorg-{uuid.uuid4().hex[:8]}"}, headers=headers
    )
    assert channel.status_code == 201, channel.text
    channel_id: str = channel.json()["id"]
    member = f"member-{uuid.uuid4().hex[:10]}"
    added = await client.request(
        "POST", f"/v1/channels/{channel_id}/members", json={"user_id": member}, headers=headers
    )
    assert added.status_code == 201, added.text
    post = await client.request(
        "POST", "/v1/posts", json={"channel_id": channel_id, "message": "hello"}, headers=headers
    )
    assert post.status_code == 201, post.text
    post_id: str = post.json()["id"]
    emoji = f"emoji_{uuid.uuid4().hex[:8]}"
    reaction = await client.request(
        "POST", f"/v1/posts/{post_id}/reactions", json={"emoji_name": emoji}, headers=headers
    )
    assert reaction.status_code == 201, reaction.text
    bot = await client.request(
        "POST", "/v1/bots", json={"username": f"bot-{uuid.uuid4().hex[:8]}"}, headers=headers
    )
    assert bot.status_code == 201, bot.text
    hook = await client.request(
        "POST", "/v1/hooks/incoming", json={"channel_id": channel_id}, headers=headers
    )
    assert hook.status_code == 201, hook.text
    return {
        "channel_id": channel_id,
        "user_id": member,
        "post_id": post_id,
        "emoji_name": emoji,
        "bot_id": bot.json()["id"],
        "hook_id": hook.json()["id"],
    }


registration = CrossOrg(
    create=create,
    bodies={
        ("PATCH", "/v1/channels/{channel_id}"): {"display_name": "Taken over"},
        ("POST", "/v1/channels/{channel_id}/members"): {"user_id": "intruder"},
        ("PATCH", "/v1/posts/{post_id}"): {"message": "Taken over"},
        ("POST", "/v1/posts/{post_id}/reactions"): {"emoji_name": "smile"},
    },
    unaddressed={
        ("POST", "/v1/channels"): "creates in the caller's org",
        ("POST", "/v1/channels/direct"): "creates or finds a direct channel in the caller's org",
        ("POST", "/v1/posts"): "its channel_id is looked up in the caller's org",
        ("POST", "/v1/posts/search"): "searches the caller's org",
        ("PUT", "/v1/users/me"): "the caller's own profile",
        ("POST", "/v1/bots"): "creates in the caller's org",
        ("POST", "/v1/hooks/incoming"): "its channel_id is looked up in the caller's org",
    },
)
