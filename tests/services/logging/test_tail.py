"""Live tail over WebSocket, through the gateway's pass-through (the platform served by uvicorn on a
loopback port: an in-process ASGI client speaks no WebSocket)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from coder.shared.devservers import free_port
from coder.tests.services.logging.factories import push, stream
from coder.tests.support.platform import Platform
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


async def received(ws: ClientConnection) -> list[dict[str, Any]]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
    items: list[dict[str, Any]] = message["lines"]
    return items


async def test_tail_sends_new_matching_lines(
    platform: Platform, signer: TestSigner, org: str, address: str
) -> None:
    h = signer.headers(org)
    app = f"app-{uuid.uuid4().hex[:8]}"
    await push(platform, h, stream({"app": app}, "before 1", "before 2 error"))
    query = f'{{app="{app}"}} |= "error"'
    url = f"ws://{address}/api/logging/v1/tail?{urlencode({'query': query, 'limit': 10})}"
    async with connect(url, additional_headers=h) as ws:
        assert [item["line"] for item in await received(ws)] == ["before 2 error"]  # the backlog
        await push(
            platform,
            h,
            stream({"app": app}, "after ok", "after error 1"),
            stream({"app": "elsewhere"}, "error elsewhere"),
        )
        # Another org's matching line is never sent.
        await push(
            platform, signer.headers(f"org-{uuid.uuid4().hex[:12]}"), stream({"app": app}, "their error")
        )
        await push(platform, h, stream({"app": app}, "after error 2"))
        seen: list[str] = []
        while len(seen) < 2:
            seen += [item["line"] for item in await received(ws)]
        assert seen == ["after error 1", "after error 2"]


REFUSALS = [
    (["logging:push"], "{}", 4403),
    (["logging:read"], "app", 4422),
    (["logging:read"], '{} |~ "("', 4422),
]


@pytest.mark.parametrize(("perms", "query", "code"), REFUSALS)
async def test_tail_refusals_close_with_a_code(
    signer: TestSigner, org: str, address: str, perms: list[str], query: str, code: int
) -> None:
    url = f"ws://{address}/api/logging/v1/tail?{urlencode({'query': query})}"
    with pytest.raises(ConnectionClosed) as closed:
        async with connect(url, additional_headers=signer.headers(org, perms=perms)) as ws:
            await asyncio.wait_for(ws.recv(), timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code


async def test_tail_without_a_token_is_refused_at_the_gateway(address: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://{address}/api/logging/v1/tail"):
            pass
    assert refused.value.response.status_code == 403
