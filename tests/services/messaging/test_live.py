"""Live events over WebSocket through the gateway's pass-through (the platform served by uvicorn on a
loopback port: an in-process ASGI client speaks no WebSocket): two clients see each other live, a
reconnecting client gets exactly what it missed, typing is ephemeral, refusals close with a code."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from coder.shared.devservers import free_port
from coder.tests.services.messaging.factories import add, channel, post, user
from coder.tests.support.platform import Platform, make_settings, running, wait_until
from coder.tests.support.tokens import TestSigner


@pytest.fixture(scope="module")
async def address(platform: Platform) -> AsyncIterator[str]:
    config = uvicorn.Config(
        platform.app,
        host="127.0.0.1",
        port=free_port(),
        lifespan="off",
        log_level="warning",
        ws="websockets-sansio",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        await task


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
    return message


async def next_event(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next message of this kind (events of other kinds, e.g. typing, are skipped)."""
    while True:
        message = await receive(ws)
        if message.get("event") == kind:
            return message


def socket(address: str, headers: dict[str, str], since: int | None = None) -> Any:
    query = "" if since is None else f"?sequence_number={since}"
    return connect(f"ws://{address}/api/messaging/v1/websocket{query}", additional_headers=headers)


async def test_two_clients_see_each_other_live(
    platform: Platform, signer: TestSigner, org: str, address: str
) -> None:
    alice, ha = user(signer, org, "alice")
    bob, hb = user(signer, org, "bob")
    room = await channel(platform, ha, display_name="Two clients")
    await add(platform, ha, room["id"], bob)
    transcript: list[str] = []
    async with socket(address, ha) as wa, socket(address, hb) as wb:
        hello_a, hello_b = await receive(wa), await receive(wb)
        assert hello_a["event"] == hello_b["event"] == "hello"
        for author, headers, text in [(alice, ha, "hi bob"), (bob, hb, "hi alice"), (alice, ha, "lunch?")]:
            await post(platform, headers, room["id"], text)
            for name, ws in (("alice", wa), ("bob", wb)):
                event = await next_event(ws, "posted")
                assert event["data"]["post"]["message"] == text
                assert event["data"]["post"]["user_id"] == author
                assert event["broadcast"]["channel_id"] == room["id"]
                transcript.append(f"{name} <- seq {event['seq']}: {author}: {text}")
        # Each stream counts on from its own hello, one by one.
        assert [int(line.split()[3].rstrip(":")) for line in transcript[0::2]] == [
            hello_a["data"]["sequence_number"] + n for n in (1, 2, 3)
        ]
    print("\n".join(transcript))


async def test_a_reconnecting_client_misses_nothing(
    platform: Platform, signer: TestSigner, org: str, address: str
) -> None:
    _alice, ha = user(signer, org)
    bob, hb = user(signer, org)
    room = await channel(platform, ha)
    await add(platform, ha, room["id"], bob)
    async with socket(address, hb) as wb:
        await receive(wb)  # hello
        await post(platform, ha, room["id"], "before")
        last = (await next_event(wb, "posted"))["seq"]
    # Bob is gone: Alice writes N messages, edits one and reacts to another.
    missed = [await post(platform, ha, room["id"], f"missed {n}") for n in range(5)]
    await platform.client.patch(
        f"/api/messaging/v1/posts/{missed[0]['id']}", json={"message": "missed 0 (edited)"}, headers=ha
    )
    await platform.client.post(
        f"/api/messaging/v1/posts/{missed[1]['id']}/reactions", json={"emoji_name": "eyes"}, headers=ha
    )
    async with socket(address, hb, since=last) as wb:
        hello = await receive(wb)
        assert hello["event"] == "hello" and hello["data"]["sequence_number"] == last + 7
        caught = [await receive(wb) for _ in range(7)]
        assert [e["seq"] for e in caught] == list(range(last + 1, last + 8))
        assert [e["event"] for e in caught] == ["posted"] * 5 + ["post_edited", "reaction_added"]
        assert [e["data"]["post"]["message"] for e in caught[:5]] == [f"missed {n}" for n in range(5)]
        # Then live ones, numbered on: nothing in between was doubled or skipped.
        await post(platform, ha, room["id"], "live again")
        live = await receive(wb)
        assert (live["event"], live["seq"], live["data"]["post"]["message"]) == (
            "posted",
            last + 8,
            "live again",
        )


async def test_typing_is_ephemeral_and_reaches_the_others(
    platform: Platform, signer: TestSigner, org: str, address: str
) -> None:
    alice, ha = user(signer, org)
    bob, hb = user(signer, org)
    room = await channel(platform, ha)
    await add(platform, ha, room["id"], bob)
    async with socket(address, ha) as wa, socket(address, hb) as wb:
        await receive(wa), await receive(wb)
        await wa.send(json.dumps({"action": "user_typing", "seq": 7, "data": {"channel_id": room["id"]}}))
        assert await receive(wa) == {"status": "OK", "seq_reply": 7}
        typing = await next_event(wb, "typing")
        assert typing["seq"] is None and typing["data"]["user_id"] == alice
        await wa.send(json.dumps({"action": "dance", "seq": 8}))
        refused = await receive(wa)
        assert refused["status"] == "FAIL" and refused["seq_reply"] == 8
        # Typing is not stored: Bob's next stored event follows his last one directly.
        await post(platform, ha, room["id"], "typed")
        assert (await next_event(wb, "posted"))["data"]["post"]["message"] == "typed"


REFUSALS = [
    (("planning:read",), "", 4403),
    (("messaging:read",), "?sequence_number=-1", 4422),
]


@pytest.mark.parametrize(("perms", "query", "code"), REFUSALS)
async def test_refusals_close_with_a_code(
    signer: TestSigner, org: str, address: str, perms: tuple[str, ...], query: str, code: int
) -> None:
    _, headers = user(signer, org, perms=perms)
    url = f"ws://{address}/api/messaging/v1/websocket{query}"
    with pytest.raises((ConnectionClosed, InvalidStatus)) as closed:
        async with connect(url, additional_headers=headers) as ws:
            await asyncio.wait_for(ws.recv(), timeout=30)
    error = closed.value
    if isinstance(error, InvalidStatus):  # the gateway refuses a token granting nothing on messaging
        assert code == 4403 and error.response.status_code == 403
    else:
        assert isinstance(error, ConnectionClosed)
        assert error.rcvd is not None and error.rcvd.code == code


async def test_without_a_token_the_gateway_refuses(address: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://{address}/api/messaging/v1/websocket"):
            pass
    assert refused.value.response.status_code == 403


async def test_a_subscriber_on_another_replica_gets_every_post(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    platform: Platform,
    signer: TestSigner,
    org: str,
    database_url: str,
) -> None:
    """Two messaging processes on one PostgreSQL and one Redis: a post written through the first
    reaches a subscriber connected to the second (the fan-out goes through Redis, not memory)."""
    if platform.backend != "real":
        pytest.skip("replicas share a real Redis")
    overrides = {"redis_url": request.getfixturevalue("redis_server").url}
    # No periodic check from the database within the test: only the Redis note can bring the posts.
    monkeypatch.setenv("MESSAGING_CHECK_SECONDS", "300")
    async with running(make_settings(database_url, signer, **overrides), "real", "messaging") as replica:
        config = uvicorn.Config(
            replica.app, host="127.0.0.1", port=free_port(), lifespan="off", log_level="warning"
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        try:
            await wait_until(lambda: server.started, what="the replica to serve")
            _, ha = user(signer, org)
            bob, hb = user(signer, org)
            room = await channel(platform, ha)
            await add(platform, ha, room["id"], bob)
            url = f"ws://127.0.0.1:{config.port}/v1/websocket"
            async with connect(url, additional_headers=hb) as wb:
                assert (await receive(wb))["event"] == "hello"
                for n in range(3):
                    await post(platform, ha, room["id"], f"across {n}")
                got = [(await next_event(wb, "posted"))["data"]["post"]["message"] for _ in range(3)]
                assert got == [f"across {n}" for n in range(3)]
        finally:
            server.should_exit = True
            await task
