"""logging, side by side in one run:

- ingest: Loki-shaped pushes through `POST /api/logging/v1/push` (gateway dispatch, token check,
  validation, limits, redaction, stream upsert, COPY) against a bare asyncpg COPY of the same rows
  into the same table;
- query: a label-plus-text query (`{app="app3"} |= "timeout"`, newest 100) over 1,000,000 lines
  through `GET /api/logging/v1/query`, against the plain indexed SQL query of the same rows.
The million rows are made in the database (generate_series), so the run stays short.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from coder.bench.support import Stopwatch, report, result, scratch_database
from coder.runner import registry
from coder.runner.process import build_process_app
from coder.shared import db, migrations
from coder.shared.settings import PlatformSettings
from coder.tests.support.tokens import TestSigner

PUSHES, LINES_PER_PUSH, STREAMS = 20, 2000, 10
QUERY_ROWS, QUERY_STREAMS, QUERY_RUNS = 1_000_000, 20, 20


def push_body(seq: int, base: int) -> dict[str, object]:
    per_stream = LINES_PER_PUSH // STREAMS
    return {
        "streams": [
            {
                "stream": {"app": f"app{s}", "env": "prod"},
                "values": [
                    [
                        str(base + (seq * LINES_PER_PUSH + s * per_stream + i) * 1000),
                        f"GET /api/items/{i} status=200 took={i % 97}ms user=u{i % 50}",
                        {"request_id": uuid.uuid4().hex},
                    ]
                    for i in range(per_stream)
                ],
            }
            for s in range(STREAMS)
        ]
    }


async def connect(database_url: str) -> asyncpg.Connection:
    url = make_url(database_url)
    connection: asyncpg.Connection = await asyncpg.connect(
        user=url.username,
        password=url.password or None,
        database=url.database,
        host=url.query.get("host") or url.host,
        port=url.port,
    )
    return connection


def app_and_signer(database_url: str) -> tuple[object, TestSigner]:
    signer = TestSigner()
    settings = PlatformSettings.model_validate(
        {"database_url": database_url, "jwks": signer.jwks(), "environment": "test"}
    )
    targets = registry.resolve("all")
    app = build_process_app(settings, targets, [t.settings() for t in targets.values() if t.settings])
    return app, signer


async def bare_copy(database_url: str, bodies: list[dict[str, Any]]) -> float:
    connection = await connect(database_url)
    try:
        await connection.execute(
            "INSERT INTO logging_stream (org_id, digest, labels, first_ts, last_ts) "
            "SELECT 'bare-org', decode(md5(s::text), 'hex'), jsonb_build_object('app', 'app' || s), 0, 0 "
            "FROM generate_series(0, $1 - 1) s",
            STREAMS,
        )
        ids = [r["id"] for r in await connection.fetch("SELECT id FROM logging_stream ORDER BY id")]
        rows = [
            [
                (
                    "bare-org",
                    ids[s],
                    int(v[0]),
                    "info",
                    v[1],
                    f'{{"request_id": "{v[2]["request_id"]}"}}',
                    None,
                    None,
                )
                for s, stream in enumerate(body["streams"])
                for v in stream["values"]
            ]
            for body in bodies
        ]
        columns = ["org_id", "stream_id", "ts", "level", "line", "metadata", "trace_id", "request_id"]
        clock = Stopwatch()
        for chunk in rows:
            await connection.copy_records_to_table("logging_line", records=chunk, columns=columns)
        return PUSHES * LINES_PER_PUSH / clock.seconds
    finally:
        await connection.close()


async def through_api(database_url: str, bodies: list[dict[str, Any]]) -> float:
    app, signer = app_and_signer(database_url)
    headers = signer.headers("bench-org", perms=["logging:push"])
    async with app.router.lifespan_context(app):  # type: ignore[attr-defined]
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            clock = Stopwatch()
            for body in bodies:
                response = await client.post("/api/logging/v1/push", json=body, headers=headers)
                assert response.status_code == 200, response.text
                assert response.json()["accepted"] == LINES_PER_PUSH, response.text
            return PUSHES * LINES_PER_PUSH / clock.seconds


async def make_million(database_url: str, now: int) -> None:
    """1,000,000 lines of 20 streams over the last hour; one line in 211 says "timeout"."""
    connection = await connect(database_url)
    try:
        await connection.execute(
            "INSERT INTO logging_stream (org_id, digest, labels, first_ts, last_ts) "
            "SELECT 'query-org', decode(md5('q' || s), 'hex'), "
            "jsonb_build_object('app', 'app' || s, 'env', 'prod'), $2 - 3600000000000, $2 "
            "FROM generate_series(0, $1 - 1) s",
            QUERY_STREAMS,
            now,
        )
        # The trigram index is built once after the bulk insert rather than kept up row by row.
        await connection.execute("DROP INDEX logging_ix_logging_line_line_trgm")
        await connection.execute(
            "INSERT INTO logging_line (org_id, stream_id, ts, level, line, metadata) "
            "SELECT 'query-org', "
            "(SELECT min(id) FROM logging_stream WHERE org_id = 'query-org') + i % $2, "
            "$3 - i::bigint * 3600000, CASE WHEN i % 211 = 0 THEN 'error' ELSE 'info' END, "
            "CASE WHEN i % 211 = 0 THEN 'upstream timeout after 30s on /api/items/' || i "
            "ELSE 'GET /api/items/' || i || ' status=200 took=' || (i % 97) || 'ms user=u' || (i % 50) END, "
            "'{}'::jsonb FROM generate_series(0, $1 - 1) i",
            QUERY_ROWS,
            QUERY_STREAMS,
            now,
        )
        await connection.execute("SET maintenance_work_mem = '256MB'")
        await connection.execute(
            "CREATE INDEX logging_ix_logging_line_line_trgm ON logging_line USING gin (line gin_trgm_ops)"
        )
        await connection.execute("ANALYZE logging_line")
        await connection.execute("ANALYZE logging_stream")
    finally:
        await connection.close()


async def bare_query(database_url: str, now: int) -> float:
    connection = await connect(database_url)
    try:
        stream = await connection.fetchval(
            "SELECT id FROM logging_stream WHERE org_id = 'query-org' AND labels->>'app' = 'app3'"
        )
        samples = []
        for _ in range(QUERY_RUNS):
            clock = Stopwatch()
            rows = await connection.fetch(
                "SELECT id, ts, line, metadata FROM logging_line "
                "WHERE org_id = 'query-org' AND stream_id = $1 AND ts >= $2 AND ts < $3 "
                "AND line LIKE '%timeout%' ORDER BY ts DESC, id DESC LIMIT 100",
                stream,
                now - 3600 * 1_000_000_000,
                now + 1,
            )
            samples.append(clock.seconds * 1000)
            assert len(rows) == 100, len(rows)
        return statistics.median(samples)
    finally:
        await connection.close()


async def api_query(database_url: str, now: int) -> float:
    app, signer = app_and_signer(database_url)
    headers = signer.headers("query-org", perms=["logging:read"])
    params = {
        "query": '{app="app3"} |= "timeout"',
        "limit": "100",
        "start": str(now - 3600 * 10**9),
        "end": str(now + 1),
    }
    async with app.router.lifespan_context(app):  # type: ignore[attr-defined]
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            samples = []
            for _ in range(QUERY_RUNS):
                clock = Stopwatch()
                response = await client.get("/api/logging/v1/query", params=params, headers=headers)
                samples.append(clock.seconds * 1000)
                assert response.status_code == 200 and len(response.json()["items"]) == 100, response.text
            return statistics.median(samples)


async def main() -> None:
    async with scratch_database() as database_url:
        engine = db.create_engine(database_url, pool_size=1)
        await migrations.upgrade(engine, list(registry.resolve("all").values()))
        await engine.dispose()
        base = time.time_ns() - 600 * 10**9
        bodies = [push_body(n, base) for n in range(PUSHES)]
        bare = await bare_copy(database_url, bodies)
        api = await through_api(database_url, bodies)
        now = time.time_ns()
        clock = Stopwatch()
        await make_million(database_url, now)
        built = clock.seconds
        bare_ms = await bare_query(database_url, now)
        api_ms = await api_query(database_url, now)
    report(
        f"logging ingest, {PUSHES} pushes of {LINES_PER_PUSH} lines in {STREAMS} streams",
        [("bare asyncpg COPY", bare, "lines/s"), ("POST /api/logging/v1/push", api, "lines/s")],
        baseline="bare asyncpg COPY",
    )
    report(
        f'label+text query (newest 100 of {{app="app3"}} |= "timeout") over {QUERY_ROWS:,} lines '
        f"(built in {built:.1f}s), median of {QUERY_RUNS}",
        [("plain indexed SQL query", bare_ms, "ms"), ("GET /api/logging/v1/query", api_ms, "ms")],
        baseline="plain indexed SQL query",
    )
    result("ingest_vs_copy", api / bare)
    result("query_vs_sql", api_ms / bare_ms, higher_is_better=False)
