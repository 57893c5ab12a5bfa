"""Planning's "next task" on a 10,000-task plan, p95 latency, three ways in the same run:

- `GET /api/planning/v1/plans/{id}/next` through the platform app (gateway dispatch, token check, the plan's
  lookup, the service's index-walking query, the JSON answer);
- the service's query alone (`service.next_task` in a session, no HTTP): an index range, as every
  write keeps each task's count of undone dependencies;
- the baseline: Task Master's way, every task of the plan read (one bare asyncpg SELECT) and the
  answer found by a loop in Python.

The plan is built to make the query work: half the tasks are done, the other half pending, and every
pending task but the first depends on the one before it, so each high- and medium-priority pending
task is blocked and only the lowest-priority first pending one is ready.
"""

from __future__ import annotations

import uuid

import asyncpg
import httpx
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker

from coder.bench.support import Stopwatch, percentile, report, result, scratch_database
from coder.runner import registry
from coder.runner.process import build_process_app
from coder.services.planning import service
from coder.shared import db, migrations
from coder.shared.settings import PlatformSettings
from coder.tests.support.tokens import TestSigner

TASKS = 10_000
DONE = TASKS // 2
SAMPLES = 200
WARMUP = 20
ORG = "bench-org"
# The ready task: the first pending one, low priority (3); every other pending task is blocked.
EXPECTED = DONE + 1


async def _connect(database_url: str) -> asyncpg.Connection:
    url = make_url(database_url)
    return await asyncpg.connect(
        user=url.username,
        password=url.password or None,
        database=url.database,
        host=url.query.get("host") or url.host,
        port=url.port,
    )


async def seed(connection: asyncpg.Connection) -> uuid.UUID:
    plan_id = uuid.uuid4()
    await connection.execute(
        "INSERT INTO planning_plan (id, org_id, title, description, next_task_id, created_by) "
        "VALUES ($1, $2, 'bench', '', $3, 'bench')",
        plan_id,
        ORG,
        TASKS + 1,
    )
    await connection.execute(
        """
        INSERT INTO planning_task (plan_id, id, org_id, title, description, details, test_strategy,
                                   status, priority, dependencies, blockers, acceptance_checks, created_by)
        SELECT $1, n, $2, 'task ' || n, '', '', '',
               CASE WHEN n <= $3 THEN 'done' ELSE 'pending' END,
               CASE WHEN n = $3 + 1 THEN 3 ELSE 1 + n % 3 END,
               CASE WHEN n = 1 THEN '{}'::int[]
                    ELSE ARRAY(SELECT DISTINCT unnest(ARRAY[n - 1, 1 + (n * 7919) % (n - 1)])) END,
               0, '[]'::jsonb, 'bench'
        FROM generate_series(1, $4) AS n
        """,
        plan_id,
        ORG,
        DONE,
        TASKS,
    )
    # The count the service keeps on every write, computed once for the whole plan.
    await connection.execute(
        "UPDATE planning_task t SET blockers = (SELECT count(*) FROM planning_task d "
        "WHERE d.plan_id = t.plan_id AND d.id = ANY(t.dependencies) AND d.status <> 'done') "
        "WHERE t.plan_id = $1",
        plan_id,
    )
    await connection.execute("VACUUM ANALYZE planning_task")
    return plan_id


def loop_next(rows: list[asyncpg.Record]) -> int | None:
    """The next task computed in Python from every task, as Task Master does over tasks.json."""
    status = {row["id"]: row["status"] for row in rows}
    best: tuple[int, int] | None = None
    for row in rows:
        if row["status"] != "pending" or row["parent_id"] is not None:
            continue
        if all(status.get(dep) == "done" for dep in row["dependencies"]):
            key = (row["priority"], row["id"])
            if best is None or key < best:
                best = key
    return None if best is None else best[1]


async def baseline(connection: asyncpg.Connection, plan_id: uuid.UUID) -> list[float]:
    samples = []
    for n in range(WARMUP + SAMPLES):
        clock = Stopwatch()
        rows = await connection.fetch(
            "SELECT id, parent_id, status, priority, dependencies FROM planning_task "
            "WHERE org_id = $1 AND plan_id = $2",
            ORG,
            plan_id,
        )
        found = loop_next(rows)
        if n >= WARMUP:
            samples.append(clock.seconds)
        assert found == EXPECTED, found
    return samples


async def query_only(database_url: str, plan_id: uuid.UUID) -> list[float]:
    engine = db.create_engine(database_url, pool_size=1)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    samples = []
    try:
        for n in range(WARMUP + SAMPLES):
            async with sessions() as session:
                clock = Stopwatch()
                task = await service.next_task(session, ORG, plan_id)
                if n >= WARMUP:
                    samples.append(clock.seconds)
            assert task is not None and task.id == EXPECTED, task
    finally:
        await engine.dispose()
    return samples


async def through_api(database_url: str, plan_id: uuid.UUID) -> list[float]:
    signer = TestSigner()
    settings = PlatformSettings.model_validate(
        {"database_url": database_url, "jwks": signer.jwks(), "environment": "test"}
    )
    targets = registry.resolve("gateway,planning")
    app = build_process_app(settings, targets, [t.settings() for t in targets.values() if t.settings])
    headers = signer.headers(ORG, perms=["planning:read"])
    samples = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for n in range(WARMUP + SAMPLES):
                clock = Stopwatch()
                response = await client.get(f"/api/planning/v1/plans/{plan_id}/next", headers=headers)
                if n >= WARMUP:
                    samples.append(clock.seconds)
                assert response.status_code == 200 and response.json()["task"]["id"] == EXPECTED, (
                    response.text
                )
    return samples


async def main() -> None:
    async with scratch_database() as database_url:
        engine = db.create_engine(database_url, pool_size=1)
        await migrations.upgrade(engine, list(registry.resolve("planning").values()))
        await engine.dispose()
        connection = await _connect(database_url)
        try:
            plan_id = await seed(connection)
            loop = await baseline(connection, plan_id)
        finally:
            await connection.close()
        query = await query_only(database_url, plan_id)
        api = await through_api(database_url, plan_id)
    report(
        f"planning next task on a {TASKS:,}-task plan, p95 of {SAMPLES} (lower is better)",
        [
            ("read all tasks + Python loop (baseline)", percentile(loop, 95) * 1000, "ms"),
            ("service.next_task query", percentile(query, 95) * 1000, "ms"),
            ("GET /api/planning/v1/plans/{id}/next", percentile(api, 95) * 1000, "ms"),
        ],
        baseline="read all tasks + Python loop (baseline)",
    )
    result("api_p95_vs_loop", percentile(api, 95) / percentile(loop, 95), higher_is_better=False)
