"""Reservations per second with 64 concurrent callers, and the over-commits (must be 0), side by side:

- `POST /api/resources/v1/reservations` (gateway dispatch, token check, validation, the quota rows
  locked, use summed, the reservation inserted; a refusal also stages its event);
- the bare primitive it rests on: the same transaction written by hand with asyncpg (lock the covering
  quotas in id order, sum the active reservations, insert), on a pool of the same size.

Every caller reserves 100m of CPU for one of 64 users in one of 8 teams; the org's quota has room for
three quarters of the requests, so both paths grant and refuse. An over-commit is a reservation granted
beyond that room; the count is checked against the rows as well.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy.engine import make_url

from coder.bench.support import Stopwatch, report, result, scratch_database
from coder.runner import registry
from coder.shared import db, migrations
from coder.tests.support.platform import make_settings, running
from coder.tests.support.tokens import TestSigner

CALLERS = 64
PER_CALLER = 10
REQUESTS = CALLERS * PER_CALLER
CAPACITY = REQUESTS * 3 // 4  # reservations of 100m the org's quota has room for
POOL = 20  # the platform engine's pool (10) plus its overflow (10)


async def connect(database_url: str) -> asyncpg.Pool:
    url = make_url(database_url)
    pool = await asyncpg.create_pool(
        user=url.username,
        password=url.password or None,
        database=url.database,
        host=url.query.get("host") or url.host,
        port=url.port,
        min_size=POOL,
        max_size=POOL,
    )
    assert pool is not None
    return pool


async def seed(pool: asyncpg.Pool, org: str, *, shared: bool = True) -> None:
    """The org's quota (the tight one, which every caller locks), a roomy quota per team and per user."""
    now = datetime.now(UTC)
    rows = [(uuid.uuid4(), org, "org", org, CAPACITY * 100)] if shared else []
    rows += [(uuid.uuid4(), org, "team", f"t{i}", 10**9) for i in range(8)]
    rows += [(uuid.uuid4(), org, "user", f"u{i}", 10**9) for i in range(CALLERS)]
    await pool.executemany(
        "INSERT INTO resources_quota (id, org_id, name, scope, scope_id, cpu, created_at, updated_at) "
        "VALUES ($1, $2, 'bench', $3, $4, $5, $6, $6)",
        [(*row[:4], row[4], now) for row in rows],
    )


async def over_commits(pool: asyncpg.Pool, org: str, granted: int, capacity: int = CAPACITY) -> int:
    used = await pool.fetchval(
        "SELECT coalesce(sum(cpu), 0) FROM resources_reservation WHERE org_id = $1 AND status = 'active'", org
    )
    assert used == granted * 100, (used, granted)
    return max(0, granted - capacity)


async def through_api(database_url: str, pool: asyncpg.Pool, *, shared: bool = True) -> tuple[float, int]:
    org = f"bench-api-{shared}"
    await seed(pool, org, shared=shared)
    signer = TestSigner()
    headers = signer.headers(org, perms=["resources:reserve"])
    # The platform as the tests run it (tests/support/platform.py), every target in this process.
    async with running(make_settings(database_url, signer), "bench") as platform:

        async def caller(n: int) -> int:
            granted = 0
            for i in range(PER_CALLER):
                body = {
                    "user_id": f"u{n}",
                    "team_id": f"t{(n + i) % 8}",
                    "resources": {"cpu": "100m"},
                    "ttl_seconds": 3600,
                }
                response = await platform.client.post(
                    "/api/resources/v1/reservations", json=body, headers=headers
                )
                assert response.status_code in (201, 409), response.text
                granted += response.status_code == 201
            return granted

        clock = Stopwatch()
        granted = sum(await asyncio.gather(*(caller(n) for n in range(CALLERS))))
        seconds = clock.seconds
    return REQUESTS / seconds, await over_commits(pool, org, granted, CAPACITY if shared else REQUESTS)


async def bare_sql(pool: asyncpg.Pool) -> tuple[float, int]:
    org = "bench-bare"
    await seed(pool, org)

    async def reserve(user: str, team: str) -> bool:
        now = datetime.now(UTC)
        async with pool.acquire() as connection, connection.transaction():
            quotas = await connection.fetch(
                "SELECT id, scope, cpu FROM resources_quota WHERE org_id = $1 AND ((scope = 'org') "
                "OR (scope = 'team' AND scope_id = $2) OR (scope = 'user' AND scope_id = $3)) "
                "ORDER BY id FOR UPDATE",
                org,
                team,
                user,
            )
            used = await connection.fetchrow(
                "SELECT coalesce(sum(cpu), 0) AS org, "
                "coalesce(sum(cpu) FILTER (WHERE team_id = $2), 0) AS team, "
                "coalesce(sum(cpu) FILTER (WHERE user_id = $3), 0) AS user FROM resources_reservation "
                "WHERE org_id = $1 AND status = 'active' AND expires_at > $4",
                org,
                team,
                user,
                now,
            )
            if any(used[q["scope"]] + 100 > q["cpu"] for q in quotas):
                return False
            await connection.execute(
                "INSERT INTO resources_reservation (id, org_id, user_id, team_id, sandboxes, cpu, memory, "
                "storage, ai_credits, status, created_at, expires_at) "
                "VALUES ($1, $2, $3, $4, 0, 100, 0, 0, 0, 'active', $5, $6)",
                uuid.uuid4(),
                org,
                user,
                team,
                now,
                now + timedelta(hours=1),
            )
            return True

    async def caller(n: int) -> int:
        return sum([await reserve(f"u{n}", f"t{(n + i) % 8}") for i in range(PER_CALLER)])

    clock = Stopwatch()
    granted = sum(await asyncio.gather(*(caller(n) for n in range(CALLERS))))
    seconds = clock.seconds
    return REQUESTS / seconds, await over_commits(pool, org, granted)


async def main() -> None:
    async with scratch_database() as database_url:
        engine = db.create_engine(database_url, pool_size=1)
        await migrations.upgrade(engine, list(registry.resolve("all").values()))
        await engine.dispose()
        pool = await connect(database_url)
        try:
            bare, bare_over = await bare_sql(pool)
            api, api_over = await through_api(database_url, pool)
            # The same requests with no quota shared by all callers: what the request path costs alone.
            alone, alone_over = await through_api(database_url, pool, shared=False)
        finally:
            await pool.close()
    report(
        f"resources reservations, {CALLERS} concurrent callers x {PER_CALLER}, room for {CAPACITY}",
        [
            ("bare SQL (row locks, asyncpg)", bare, "reserv./s"),
            ("POST /api/resources/v1/reservations", api, "reserv./s"),
            ("the same, no quota shared by callers", alone, "reserv./s"),
        ],
        baseline="bare SQL (row locks, asyncpg)",
    )
    print(f"  API with the shared quota / without: {api / alone:.3f} (what taking turns on its lock costs)")
    print(f"  over-commits: bare SQL {bare_over}, API {api_over}, API unshared {alone_over} (must be 0)")
    if bare_over or api_over or alone_over:
        raise SystemExit("over-commits: a quota was exceeded")
    result("api_vs_bare_sql", api / bare)
