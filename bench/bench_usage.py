"""Usage ingestion rate: batches of CloudEvents through `POST /api/usage/v1/events` (gateway dispatch,
token check, validation, one idempotent INSERT per batch), against the same rows written by a bare
asyncpg `executemany` into the same table, in the same run.

Both sides are warmed by one batch first (the first request builds routes, the first statement is
prepared), and neither times building what it sends: the bare side's rows and the platform's JSON
bodies are made beforehand. The platform's Redis (rate limits, revocations) is a real server, as
deployed: not fakeredis, whose in-process emulation of Lua scripts would be charged to the platform.
Next to the rates, the Python process's CPU time per event: the gateway and the service (in-process,
with the in-process client, httpx's ASGI transport) against asyncpg's own encoding; and Redis's."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from coder.bench.support import CpuClock, Stopwatch, report, result, scratch_database
from coder.runner import registry
from coder.runner.process import build_process_app
from coder.shared import db, migrations
from coder.shared.devservers import RedisServer
from coder.shared.settings import PlatformSettings
from coder.tests.support.tokens import TestSigner

BATCHES = 40
BATCH = 500
EVENTS = BATCHES * BATCH


def batch(seq: int) -> list[dict[str, Any]]:
    return [
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/bench",
            "type": "ai.request.completed",
            "time": datetime.now(UTC).isoformat(),
            "data": {
                "user_id": f"u{i % 50}",
                "model": "gpt-x",
                "prompt_tokens": 100,
                "completion_tokens": 20,
                "cost_usd": 0.0012,
            },
        }
        for i in range(seq * BATCH, (seq + 1) * BATCH)
    ]


class Meter:
    """Wall time from now on, and CPU time: of this process, and of the local servers it uses
    (`servers`: name -> pid, each counted with its child processes)."""

    def __init__(self, servers: dict[str, int]) -> None:
        self.servers = CpuClock(servers)  # reads /proc: before the clock starts
        self.clock, self.cpu = Stopwatch(), time.process_time()

    def rates(self) -> tuple[float, float, dict[str, float]]:
        """Events per second, and CPU microseconds per event: this process's, each server's."""
        rate, cpu = EVENTS / self.clock.seconds, (time.process_time() - self.cpu) / EVENTS * 1e6
        spent = self.servers.per(EVENTS)
        return rate, cpu, {name: spent[name] for name in self.servers.servers if name != "this process"}


def postgres_pid(backend: int) -> dict[str, int]:
    """{"postgres": the server's pid} (the parent of the backend `backend`), or {} when it is not a
    process of this machine (DATABASE_URL elsewhere): its CPU time is then not counted."""
    try:
        stat = Path(f"/proc/{backend}/stat").read_text()
    except OSError:
        return {}
    return {"postgres": int(stat.rsplit(")", 1)[1].split()[1])}


async def through_api(
    database_url: str, redis: RedisServer, servers: dict[str, int]
) -> tuple[float, float, dict[str, float]]:
    signer = TestSigner()
    settings = PlatformSettings.model_validate(
        {"database_url": database_url, "redis_url": redis.url, "jwks": signer.jwks(), "environment": "test"}
    )
    targets = registry.resolve("all")
    # The development keys, as in the tests: the bench measures, it keeps nothing.
    app = build_process_app(settings, targets, [t.settings() for t in targets.values() if t.settings])
    headers = signer.headers("bench-org", perms=["usage:ingest"]) | {"content-type": "application/json"}
    warmup, *bodies = [json.dumps(batch(n)).encode() for n in range(-1, BATCHES)]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

            async def post(body: bytes) -> None:
                response = await client.post("/api/usage/v1/events", content=body, headers=headers)
                assert response.status_code == 200 and response.json()["accepted"] == BATCH, response.text

            await post(warmup)
            assert redis.process is not None
            meter = Meter({**servers, "redis": redis.process.pid})
            for body in bodies:
                await post(body)
            return meter.rates()


async def bare_asyncpg(database_url: str) -> tuple[float, float, dict[str, float], dict[str, int]]:
    """Its rates (as `Meter.rates`), and the servers it measured."""
    url = make_url(database_url)
    connection = await asyncpg.connect(
        user=url.username,
        password=url.password or None,
        database=url.database,
        host=url.query.get("host") or url.host,
        port=url.port,
    )
    try:
        warmup, *rows = [
            [
                (
                    "bare-org",
                    e["source"],
                    e["id"],
                    e["type"],
                    datetime.now(UTC),
                    e["data"],
                    d["user_id"],
                    d["model"],
                )
                for e in batch(n)
                for d in [e["data"]]
            ]
            for n in range(-1, BATCHES)
        ]
        await connection.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
        statement = (
            "INSERT INTO usage_event (org_id, source, event_id, type, time, data, user_id, model) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING"
        )
        await connection.executemany(statement, warmup)
        servers = postgres_pid(await connection.fetchval("SELECT pg_backend_pid()"))
        meter = Meter(servers)
        for chunk in rows:
            await connection.executemany(statement, chunk)
        return *meter.rates(), servers
    finally:
        await connection.close()


async def main() -> None:
    async with scratch_database() as database_url:
        engine = db.create_engine(database_url, pool_size=1)
        await migrations.upgrade(engine, list(registry.resolve("all").values()))
        await engine.dispose()
        bare, bare_cpu, bare_servers, servers = await bare_asyncpg(database_url)
        redis = RedisServer().start()
        try:
            api, api_cpu, api_servers = await through_api(database_url, redis, servers)
        finally:
            redis.stop()
    title = f"usage ingestion, {BATCHES} batches of {BATCH} events"
    report(
        title,
        [("bare asyncpg executemany", bare, "events/s"), ("POST /api/usage/v1/events", api, "events/s")],
        baseline="bare asyncpg executemany",
    )
    report(
        f"{title}: CPU time of the Python process",
        [
            ("bare asyncpg executemany", bare_cpu, "us/event"),
            ("POST /api/usage/v1/events", api_cpu, "us/event"),
        ],
        baseline="bare asyncpg executemany",
    )
    # What the machine's load does not change: the CPU time of every process at work, the database's
    # (and the platform's Redis) included.
    report(
        f"{title}: CPU time of every process ({', '.join(['python', *api_servers])})",
        [
            ("bare asyncpg executemany", bare_cpu + sum(bare_servers.values()), "us/event"),
            ("POST /api/usage/v1/events", api_cpu + sum(api_servers.values()), "us/event"),
            *[(f"  of which {name}, bare", cpu, "us/event") for name, cpu in bare_servers.items()],
            *[(f"  of which {name}, platform", cpu, "us/event") for name, cpu in api_servers.items()],
        ],
        baseline="bare asyncpg executemany",
    )
    result("ratio_vs_asyncpg", api / bare, goal=0.7)
    result("cpu_us_per_event", api_cpu, unit="us/event", higher_is_better=False)
