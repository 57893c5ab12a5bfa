"""collaboration: the update round trip between two Yjs clients, through the gateway vs direct.

Two pycrdt clients speak the y-websocket protocol to the same document; client A inserts a character
and the clock stops when client B has received and applied that update. Between the two the server
checked the update, stored it in PostgreSQL (committed) and broadcast it. Measured in the same run:

- direct: `ws://<collaboration>/v1/sync/{id}`, the collaboration process itself;
- gateway: `ws://<gateway>/api/collaboration/v1/sync/{id}`, a gateway process in front of it (token
  check at the edge, WebSocket pass-through both ways).

The opening of each pair of connections is printed as a transcript (who sent what, decoded).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from pycrdt import Doc, Text, YMessageType, YSyncMessageType, create_sync_message, create_update_message
from pycrdt import handle_sync_message as apply_sync
from websockets.asyncio.client import ClientConnection, connect

from coder.bench.support import Stopwatch, percentile, process, ready, report, result, scratch_database
from coder.runner import registry
from coder.shared import db, migrations
from coder.shared.devservers import RedisServer, free_port
from coder.tests.support.tokens import TestSigner

SAMPLES = 300
WARMUP = 30
ORG = "bench-org"
SYNC_KINDS = {0: "sync step 1", 1: "sync step 2", 2: "update"}


def describe(message: bytes) -> str:
    if message[0] == YMessageType.SYNC:
        return f"{SYNC_KINDS.get(message[1], '?')} ({len(message)} bytes)"
    if message[0] == YMessageType.AWARENESS:
        return f"awareness ({len(message)} bytes)"
    return f"type {message[0]} ({len(message)} bytes)"


class Peer:
    def __init__(self, name: str, ws: ClientConnection, transcript: list[str] | None) -> None:
        self.name, self.ws, self.transcript = name, ws, transcript
        self.doc: Doc[Any] = Doc()
        self.text = self.doc.get("content", type=Text)

    def note(self, arrow: str, message: bytes) -> None:
        if self.transcript is not None:
            self.transcript.append(f"  {self.name} {arrow} server: {describe(message)}")

    async def send(self, message: bytes) -> None:
        self.note("->", message)
        await self.ws.send(message)

    async def receive(self) -> bytes:
        message = await self.ws.recv()
        assert isinstance(message, bytes)
        self.note("<-", message)
        if message[0] == YMessageType.SYNC:
            reply = apply_sync(message[1:], self.doc)
            if reply is not None:
                await self.send(reply)
        return message

    async def sync(self) -> None:
        await self.send(create_sync_message(self.doc))
        while (await self.receive())[:2] != bytes([YMessageType.SYNC, YSyncMessageType.SYNC_STEP2]):
            pass


async def round_trips(url: str, headers: dict[str, str], transcript: list[str]) -> list[float]:
    async with (
        connect(url, additional_headers=headers, max_size=None, compression=None) as wa,
        connect(url, additional_headers=headers, max_size=None, compression=None) as wb,
    ):
        a, b = Peer("A", wa, transcript), Peer("B", wb, transcript)
        await a.sync()
        await b.sync()
        samples = []
        for n in range(WARMUP + SAMPLES):
            a.transcript = b.transcript = transcript if n == 0 else None
            length = len(b.text)
            clock = Stopwatch()
            before = a.doc.get_state()
            a.text.insert(len(a.text), "x")
            await a.send(create_update_message(a.doc.get_update(before)))
            while len(b.text) == length:
                await b.receive()
            if n >= WARMUP:
                samples.append(clock.seconds)
        assert str(a.text) == str(b.text)
    return samples


async def _document(base: str, headers: dict[str, str]) -> str:
    async with httpx.AsyncClient(timeout=30) as client:
        created = await client.post(f"http://{base}/v1/documents", json={"title": "bench"}, headers=headers)
        created.raise_for_status()
    document_id: str = created.json()["id"]
    return document_id


async def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="coder-bench-collaboration-"))
    signer = TestSigner()
    headers = signer.headers(ORG, sub="bench", perms=["collaboration:read", "collaboration:write"], ttl=3600)
    python = sys.executable
    cli = str(Path(python).with_name("coder-platform"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "CODER_", "COLLABORATION_"))}
    service_port, gateway_port = free_port(), free_port()
    async with scratch_database() as database_url:
        engine = db.create_engine(database_url, pool_size=1)
        await migrations.upgrade(engine, list(registry.resolve("gateway,collaboration").values()))
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
            service = stack.enter_context(
                process(
                    [
                        cli,
                        "run",
                        "--target",
                        "collaboration",
                        "--port",
                        str(service_port),
                        "--metrics-port",
                        "0",
                    ],
                    common,
                    work / "collaboration.log",
                )
            )
            gateway_env = {
                **common,
                "CODER_SERVICE_URLS": json.dumps({"collaboration": f"http://127.0.0.1:{service_port}"}),
                "GATEWAY_RATE_LIMIT_PER_TOKEN": str(10**7),
                "GATEWAY_RATE_LIMIT_PER_IP": str(10**7),
            }
            gateway = stack.enter_context(
                process(
                    [cli, "run", "--target", "gateway", "--port", str(gateway_port), "--metrics-port", "0"],
                    gateway_env,
                    work / "gateway.log",
                )
            )
            direct_base, gateway_base = f"127.0.0.1:{service_port}", f"127.0.0.1:{gateway_port}"
            await ready(f"http://{direct_base}/healthz", service, work / "collaboration.log")
            await ready(f"http://{gateway_base}/api/collaboration/healthz", gateway, work / "gateway.log")
            transcripts: dict[str, list[str]] = {"direct": [], "gateway": []}
            # One fresh document each, so both start from the same state.
            direct = await round_trips(
                f"ws://{direct_base}/v1/sync/{await _document(direct_base, headers)}",
                headers,
                transcripts["direct"],
            )
            through = await round_trips(
                f"ws://{gateway_base}/api/collaboration/v1/sync/{await _document(direct_base, headers)}",
                headers,
                transcripts["gateway"],
            )
    print("two-client transcript (through the gateway; the first timed edit at the end):")
    print("\n".join(transcripts["gateway"]))
    print(f"update round trip A -> server (stored, committed) -> B, {SAMPLES} edits one at a time")
    for label, p in (("p50", 50), ("p95", 95)):
        report(
            f"  {label}",
            [
                ("direct", percentile(direct, p) * 1000, "ms"),
                ("gateway", percentile(through, p) * 1000, "ms"),
            ],
            baseline="direct",
        )
    result("p50_gateway_vs_direct", percentile(through, 50) / percentile(direct, 50), higher_is_better=False)
