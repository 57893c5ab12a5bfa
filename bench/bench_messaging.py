"""messaging fan-out: posts delivered live to 200 WebSocket subscribers of one channel, messages per
second delivered, two ways in the same run:

- direct: each subscriber connected to the messaging process (`ws://.../v1/websocket`);
- gateway: each subscriber connected through the gateway process's WebSocket pass-through
  (`ws://.../api/messaging/v1/websocket`: token check at the edge, then a second hop).

Two processes (`run --target messaging`, `run --target gateway`) on one PostgreSQL and one Redis, as
in a cluster. The same posts are written the same way in both runs (straight to messaging, a few at
a time), so the difference is the delivery path. A delivery counts when a subscriber has received
the post's `posted` event; the clock stops when every subscriber has every post.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from coder.bench.support import process, ready, report, result, scratch_database
from coder.runner import registry
from coder.shared import db, migrations
from coder.shared.devservers import RedisServer, free_port
from coder.tests.support.tokens import TestSigner

SUBSCRIBERS = 200
POSTS = 60
POSTERS = 4  # posts in flight at once
# Handshakes in flight at once: 200 at the same instant would exhaust each process's Redis connection
# pool (every handshake reads the revocation list), which the gateway answers with refusals.
CONNECTING = 25
ORG = "bench-org"
POSTER = "bench-poster"


async def _seed(base: str, signer: TestSigner) -> str:
    headers = signer.headers(ORG, sub=POSTER)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        created = await client.post("/v1/channels", json={"name": "fan-out"})
        created.raise_for_status()
        channel_id: str = created.json()["id"]
        for n in range(SUBSCRIBERS):
            added = await client.post(f"/v1/channels/{channel_id}/members", json={"user_id": f"sub-{n:03}"})
            added.raise_for_status()
    return channel_id


async def _subscriber(
    url: str, token: str, connected: asyncio.Event, ready_count: list[int]
) -> ClientConnection:
    ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None)
    hello = json.loads(await ws.recv())
    assert hello["event"] == "hello", hello
    ready_count[0] += 1
    if ready_count[0] == SUBSCRIBERS:
        connected.set()
    return ws


async def _drain(ws: ClientConnection, expected: int) -> float:
    """Receive `expected` posted events; the moment the last arrived."""
    seen = 0
    while seen < expected:
        event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout=120))
        if event.get("event") == "posted":
            seen += 1
    return time.perf_counter()


async def _run(url: str, messaging: str, channel_id: str, signer: TestSigner) -> float:
    """Deliveries per second to SUBSCRIBERS connections at `url`."""
    connected, count = asyncio.Event(), [0]
    sockets = await asyncio.gather(
        *(
            _subscriber(url, signer.token(ORG, sub=f"sub-{n:03}", ttl=3600), connected, count)
            for n in range(SUBSCRIBERS)
        )
    )
    try:
        drains = [asyncio.create_task(_drain(ws, POSTS)) for ws in sockets]
        headers = signer.headers(ORG, sub=POSTER, ttl=3600)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(POSTS):
            queue.put_nowait(n)
        async with httpx.AsyncClient(base_url=messaging, headers=headers, timeout=60) as client:

            async def poster() -> None:
                while not queue.empty():
                    n = queue.get_nowait()
                    response = await client.post(
                        "/v1/posts", json={"channel_id": channel_id, "message": f"m{n}"}
                    )
                    response.raise_for_status()

            began = time.perf_counter()
            await asyncio.gather(*(poster() for _ in range(POSTERS)))
            finished = max(await asyncio.gather(*drains))
        return SUBSCRIBERS * POSTS / (finished - began)
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


async def _measure(work: Path, signer: TestSigner) -> list[tuple[str, float]]:
    messaging_port, gateway_port = free_port(), free_port()
    cli = str(Path(sys.executable).with_name("coder-platform"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "CODER_", "MESSAGING_"))}
    async with scratch_database() as database_url:
        engine = db.create_engine(database_url, pool_size=1)
        await migrations.upgrade(engine, list(registry.resolve("gateway,messaging").values()))
        await engine.dispose()
        with contextlib.ExitStack() as stack:
            redis = RedisServer().start()
            stack.callback(redis.stop)
            common = {
                **env,
                "DATABASE_URL": database_url,
                "REDIS_URL": redis.url,
                "CODER_JWKS": signer.jwks(),
                "CODER_LOG_LEVEL": "WARNING",
                "CODER_DATA_DIR": str(work / "data"),
            }
            messaging_argv = [
                cli,
                "run",
                "--target",
                "messaging",
                "--port",
                str(messaging_port),
                "--metrics-port",
                "0",
            ]
            service = stack.enter_context(process(messaging_argv, common, work / "messaging.log"))
            gateway_env = {
                **common,
                "CODER_SERVICE_URLS": json.dumps({"messaging": f"http://127.0.0.1:{messaging_port}"}),
                "GATEWAY_RATE_LIMIT_PER_TOKEN": str(10**7),
                "GATEWAY_RATE_LIMIT_PER_IP": str(10**7),
            }
            gateway_argv = [
                cli,
                "run",
                "--target",
                "gateway",
                "--port",
                str(gateway_port),
                "--metrics-port",
                "0",
            ]
            gateway = stack.enter_context(process(gateway_argv, gateway_env, work / "gateway.log"))
            direct_http = f"http://127.0.0.1:{messaging_port}"
            await ready(f"{direct_http}/readyz", service, work / "messaging.log")
            await ready(
                f"http://127.0.0.1:{gateway_port}/api/messaging/healthz", gateway, work / "gateway.log"
            )
            channel_id = await _seed(direct_http, signer)
            await _run(
                f"ws://127.0.0.1:{messaging_port}/v1/websocket", direct_http, channel_id, signer
            )  # warm-up
            rows = [
                (
                    "direct",
                    await _run(
                        f"ws://127.0.0.1:{messaging_port}/v1/websocket", direct_http, channel_id, signer
                    ),
                ),
                (
                    "gateway",
                    await _run(
                        f"ws://127.0.0.1:{gateway_port}/api/messaging/v1/websocket",
                        direct_http,
                        channel_id,
                        signer,
                    ),
                ),
            ]
    return rows


async def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="coder-bench-messaging-"))
    try:
        rows = await _measure(work, TestSigner())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"fan-out: {POSTS} posts ({POSTERS} in flight) to {SUBSCRIBERS} WebSocket subscribers of one channel"
    )
    report(
        "  messages delivered per second", [(name, rate, "msg/s") for name, rate in rows], baseline="direct"
    )
    rates = dict(rows)
    result("gateway_vs_direct", rates["gateway"] / rates["direct"])


if __name__ == "__main__":
    asyncio.run(main())
