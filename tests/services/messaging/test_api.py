"""messaging over HTTP through the gateway: channels and membership, threads, mentions and unread
counts, reactions, search, bots and incoming webhooks, and the events it emits."""

from __future__ import annotations

import uuid

from coder.tests.services.messaging.factories import API, add, channel, post, unread, user
from coder.tests.support.platform import Platform, listen, wait_until
from coder.tests.support.tokens import TestSigner


async def test_channel_visibility_and_membership(platform: Platform, signer: TestSigner, org: str) -> None:
    alice, ha = user(signer, org)
    bob, hb = user(signer, org)
    public = await channel(platform, ha, display_name="Town square")
    private = await channel(platform, ha, type="P")
    assert public["type"] == "O" and private["type"] == "P" and public["creator_id"] == alice

    # Bob sees the public channel, not the private one (404, as for no channel).
    listed = (await platform.client.get(f"{API}/channels", headers=hb)).json()["items"]
    ids = {c["id"] for c in listed}
    assert public["id"] in ids and private["id"] not in ids
    assert (await platform.client.get(f"{API}/channels/{private['id']}", headers=hb)).status_code == 404

    # Reading a public channel is open; posting needs joining, which Bob may do himself.
    refused = await platform.client.post(
        f"{API}/posts", json={"channel_id": public["id"], "message": "hi"}, headers=hb
    )
    assert refused.status_code == 403 and refused.json()["type"].endswith("not-a-member")
    joined = await platform.client.post(
        f"{API}/channels/{public['id']}/members", json={"user_id": bob}, headers=hb
    )
    assert joined.status_code == 201
    await post(platform, hb, public["id"], "hi")
    # Bob may not add himself to the private channel; Alice may add him.
    no = await platform.client.post(
        f"{API}/channels/{private['id']}/members", json={"user_id": bob}, headers=hb
    )
    assert no.status_code == 404
    await add(platform, ha, private["id"], bob)
    assert (await platform.client.get(f"{API}/channels/{private['id']}", headers=hb)).status_code == 200
    mine = (await platform.client.get(f"{API}/channels?member=true&type=P", headers=hb)).json()["items"]
    assert [c["id"] for c in mine] == [private["id"]]

    # Names are unique in the org; a bad name is a 422 naming the field.
    taken = await platform.client.post(f"{API}/channels", json={"name": public["name"]}, headers=ha)
    assert taken.status_code == 409
    bad = await platform.client.post(f"{API}/channels", json={"name": "Not A Handle"}, headers=ha)
    assert bad.status_code == 422 and "name" in bad.text


async def test_direct_channels_are_idempotent(platform: Platform, signer: TestSigner, org: str) -> None:
    alice, ha = user(signer, org)
    bob, hb = user(signer, org)
    first = await platform.client.post(f"{API}/channels/direct", json={"user_ids": [alice, bob]}, headers=ha)
    again = await platform.client.post(f"{API}/channels/direct", json={"user_ids": [bob, alice]}, headers=hb)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"] and first.json()["type"] == "D"
    dm = first.json()["id"]
    members = (await platform.client.get(f"{API}/channels/{dm}/members", headers=hb)).json()["items"]
    assert sorted(m["user_id"] for m in members) == sorted([alice, bob])
    carol, hc = user(signer, org)
    assert (await platform.client.get(f"{API}/channels/{dm}", headers=hc)).status_code == 404
    outsider = await platform.client.post(
        f"{API}/channels/direct", json={"user_ids": [alice, bob]}, headers=hc
    )
    assert outsider.status_code == 422 and "user_ids" in outsider.text
    fixed = await platform.client.post(f"{API}/channels/{dm}/members", json={"user_id": carol}, headers=ha)
    assert fixed.status_code == 409


async def test_threads_mentions_and_unreads(platform: Platform, signer: TestSigner, org: str) -> None:
    alice, ha = user(signer, org)
    bob, hb = user(signer, org)
    carol, hc = user(signer, org)
    room = await channel(platform, ha)
    for someone in (bob, carol):
        await add(platform, ha, room["id"], someone)
    username = f"bob{uuid.uuid4().hex[:6]}"
    named = await platform.client.put(f"{API}/users/me", json={"username": username}, headers=hb)
    assert named.status_code == 200 and named.json()["username"] == username
    taken = await platform.client.put(f"{API}/users/me", json={"username": username}, headers=hc)
    assert taken.status_code == 409

    created = await listen(platform, "messaging.post.created")
    root = await post(platform, ha, room["id"], f"standup notes, @{username} please check")
    reply = await post(platform, hc, room["id"], f"done @{alice}", root_id=root["id"])
    await post(platform, ha, room["id"], "@channel lunch?")

    # Bob: three unread, two mentions (by username and @channel); Alice: her own posts are read.
    assert await unread(platform, hb, room["id"]) == (3, 2)
    assert await unread(platform, ha, room["id"]) == (0, 0)  # her last post marked the channel read
    assert await unread(platform, hc, room["id"]) == (1, 1)
    viewed = await platform.client.post(f"{API}/channels/{room['id']}/view", headers=hb)
    assert viewed.status_code == 200
    assert await unread(platform, hb, room["id"]) == (0, 0)
    listed = (await platform.client.get(f"{API}/unreads", headers=hc)).json()["items"]
    assert [(u["channel_id"], u["msg_count"], u["mention_count"]) for u in listed] == [(room["id"], 1, 1)]

    thread = (await platform.client.get(f"{API}/posts/{reply['id']}/thread", headers=hb)).json()
    assert thread["order"] == [root["id"], reply["id"]]
    assert thread["posts"][0]["reply_count"] == 1
    nested = await platform.client.post(
        f"{API}/posts", json={"channel_id": room["id"], "message": "x", "root_id": reply["id"]}, headers=hb
    )
    assert nested.status_code == 422 and "root_id" in nested.text

    await wait_until(lambda: len([e for e in created if e.data["channel_id"] == room["id"]]) == 3)
    by_post = {e.data["post_id"]: e.data for e in created}
    assert by_post[root["id"]]["mentions"] == [bob]
    assert by_post[reply["id"]]["mentions"] == [alice] and by_post[reply["id"]]["root_id"] == root["id"]


async def test_edit_delete_and_reactions(platform: Platform, signer: TestSigner, org: str) -> None:
    alice, ha = user(signer, org)
    bob, hb = user(signer, org, perms=("messaging:read", "messaging:write"))
    room = await channel(platform, ha)
    await add(platform, ha, room["id"], bob)
    mine = await post(platform, ha, room["id"], "first draft")
    refused = await platform.client.patch(f"{API}/posts/{mine['id']}", json={"message": "mine"}, headers=hb)
    assert refused.status_code == 403
    edited = await platform.client.patch(f"{API}/posts/{mine['id']}", json={"message": "final"}, headers=ha)
    assert edited.status_code == 200 and edited.json()["message"] == "final" and edited.json()["edited_at"]

    url = f"{API}/posts/{mine['id']}/reactions"
    assert (await platform.client.post(url, json={"emoji_name": "+1"}, headers=hb)).status_code == 201
    assert (await platform.client.post(url, json={"emoji_name": "+1"}, headers=hb)).status_code == 200
    assert (await platform.client.post(url, json={"emoji_name": "tada"}, headers=ha)).status_code == 201
    reactions = (await platform.client.get(url, headers=ha)).json()
    assert [(r["user_id"], r["emoji_name"]) for r in reactions] == [(bob, "+1"), (alice, "tada")]
    assert (await platform.client.delete(f"{url}/+1", headers=hb)).status_code == 204
    assert (await platform.client.delete(f"{url}/+1", headers=hb)).status_code == 404
    bad = await platform.client.post(url, json={"emoji_name": "Not Emoji"}, headers=hb)
    assert bad.status_code == 422 and "emoji_name" in bad.text

    assert (await platform.client.delete(f"{API}/posts/{mine['id']}", headers=hb)).status_code == 403
    assert (await platform.client.delete(f"{API}/posts/{mine['id']}", headers=ha)).status_code == 204
    assert (await platform.client.get(f"{API}/posts/{mine['id']}", headers=ha)).status_code == 404
    posts = (await platform.client.get(f"{API}/channels/{room['id']}/posts", headers=ha)).json()["items"]
    assert posts == []


async def test_search_covers_only_readable_posts(platform: Platform, signer: TestSigner, org: str) -> None:
    _alice, ha = user(signer, org)
    _bob, hb = user(signer, org)
    word = f"zebra{uuid.uuid4().hex[:6]}"
    public = await channel(platform, ha)
    private = await channel(platform, ha, type="P")
    await post(platform, ha, public["id"], f"the {word} deploys are running")
    await post(platform, ha, public["id"], f"{word} deploy failed on staging")
    await post(platform, ha, private["id"], f"secret {word} plans")
    other_org = f"org-{uuid.uuid4().hex[:12]}"
    _, ho = user(signer, other_org)
    elsewhere = await channel(platform, ho)
    await post(platform, ho, elsewhere["id"], f"{word} in another org")

    async def found(headers: dict[str, str], terms: str) -> list[str]:
        response = await platform.client.post(f"{API}/posts/search", json={"terms": terms}, headers=headers)
        assert response.status_code == 200, response.text
        return sorted(p["message"] for p in response.json()["posts"])

    # Stemming: "deploy" finds "deploys"; Bob does not see the private channel, nobody sees another org.
    assert await found(hb, f"{word} deploy") == sorted(
        [f"the {word} deploys are running", f"{word} deploy failed on staging"]
    )
    assert len(await found(ha, word)) == 3
    assert await found(hb, f"{word} -staging") == [f"the {word} deploys are running"]
    one = await platform.client.post(
        f"{API}/posts/search", json={"terms": word, "channel_id": private["id"]}, headers=hb
    )
    assert one.status_code == 404
    empty = await platform.client.post(f"{API}/posts/search", json={"terms": ""}, headers=hb)
    assert empty.status_code == 422 and "terms" in empty.text


async def test_bots_post_with_their_own_token(platform: Platform, signer: TestSigner, org: str) -> None:
    alice, ha = user(signer, org)
    room = await channel(platform, ha)
    created = await platform.client.post(
        f"{API}/bots", json={"username": f"ci-{uuid.uuid4().hex[:6]}", "display_name": "CI"}, headers=ha
    )
    assert created.status_code == 201, created.text
    bot = created.json()
    assert bot["owner_id"] == alice and bot["token"].startswith("cdr_bot_")
    bot_headers = {"Authorization": f"Bearer {bot['token']}"}
    body = {"channel_id": room["id"], "message": f"build green, @{alice}"}

    # Not a member yet: 403; added by its owner, it posts as itself, marked as a bot.
    refused = await platform.client.post("/api/messaging/hooks/bot/posts", json=body, headers=bot_headers)
    assert refused.status_code == 403
    await add(platform, ha, room["id"], bot["user_id"])
    posted = await platform.client.post("/api/messaging/hooks/bot/posts", json=body, headers=bot_headers)
    assert posted.status_code == 201, posted.text
    assert posted.json()["user_id"] == bot["user_id"] and posted.json()["props"]["from_bot"] == "true"
    assert await unread(platform, ha, room["id"]) == (1, 1)

    # A user's token is not a bot's; a bot's token is not the gateway's.
    as_user = await platform.client.post("/api/messaging/hooks/bot/posts", json=body, headers=ha)
    assert as_user.status_code == 401
    assert (await platform.client.post(f"{API}/posts", json=body, headers=bot_headers)).status_code == 401
    rotated = await platform.client.post(f"{API}/bots/{bot['id']}/token", headers=ha)
    assert rotated.status_code == 200
    old = await platform.client.post("/api/messaging/hooks/bot/posts", json=body, headers=bot_headers)
    assert old.status_code == 401


async def test_incoming_webhook_posts_without_a_gateway_token(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    alice, ha = user(signer, org)
    bob, hb = user(signer, org)
    room = await channel(platform, ha)
    await add(platform, ha, room["id"], bob)
    created = await platform.client.post(
        f"{API}/hooks/incoming", json={"channel_id": room["id"], "display_name": "Alerts"}, headers=ha
    )
    assert created.status_code == 201, created.text
    url = created.json()["url"]
    assert url.startswith("/api/messaging/hooks/")
    listed = (await platform.client.get(f"{API}/hooks/incoming", headers=ha)).json()["items"]
    assert "url" not in listed[0]  # the secret is shown once

    sent = await platform.client.post(url, json={"text": f"disk full @{bob}", "username": "alertmanager"})
    assert sent.status_code == 200 and sent.text == "ok"
    posts = (await platform.client.get(f"{API}/channels/{room['id']}/posts", headers=hb)).json()["items"]
    assert [(p["message"], p["user_id"]) for p in posts] == [(f"disk full @{bob}", alice)]
    assert posts[0]["props"] == {"from_webhook": "true", "override_username": "alertmanager"}
    assert await unread(platform, hb, room["id"]) == (1, 1)

    bad = await platform.client.post(url, json={"username": "no text"})
    assert bad.status_code == 422 and "text" in bad.text
    unknown = await platform.client.post("/api/messaging/hooks/" + "x" * 43, json={"text": "hi"})
    assert unknown.status_code == 401
    assert (
        await platform.client.delete(f"{API}/hooks/incoming/{created.json()['id']}", headers=ha)
    ).status_code == 204
    assert (await platform.client.post(url, json={"text": "again"})).status_code == 401
    # Only `/hooks/` is left to messaging: the rest of its API still needs a gateway token.
    assert (await platform.client.get(f"{API}/channels")).status_code == 401
