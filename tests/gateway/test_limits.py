"""The rate limiter against a real Redis: the checks of one event-loop turn share a round trip and still
count exactly, and a script Redis forgot is loaded again."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from redis.asyncio import Redis

from coder.gateway.limits import RateLimiter
from coder.shared.devservers import RedisServer


async def test_checks_of_one_turn_share_a_round_trip_and_count_exactly(redis_server: RedisServer) -> None:
    cache = Redis.from_url(redis_server.url)
    limiter = RateLimiter(cache, per_token=5, per_ip=1000, window_seconds=60, fail_open=False)
    runs: list[int] = []
    script = limiter._script

    async def counted(keys: list[str], args: list[int]) -> Any:
        runs.append(args[0])  # requests in this run of the script
        return await script(keys=keys, args=args)

    limiter._script = counted  # type: ignore[assignment]
    ip, token = f"10.0.0.{uuid.uuid4().int % 250}", uuid.uuid4().hex
    try:
        verdicts = await asyncio.gather(*(limiter.check(ip, token) for _ in range(8)))
        assert runs == [8]  # one round trip for the eight
        allowed = [v for v, _ in verdicts if v is not None and v.allowed]
        assert len(allowed) == 5 and sorted(v.remaining for v in allowed) == [0, 1, 2, 3, 4]
        # One at a time after: the same count (the token's five are spent).
        alone, _ = await limiter.check(ip, token)
        assert alone is not None and not alone.allowed and alone.retry_after > 0

        # Redis forgot the script (restarted, or flushed): loaded again, no check lost.
        await cache.script_flush()
        other = uuid.uuid4().hex
        verdicts = await asyncio.gather(*(limiter.check(ip, other, [f"absent:{other}"]) for _ in range(3)))
        assert runs[-1] == 3
        assert all(v is not None and v.allowed for v, _ in verdicts)
        assert [values for _, values in verdicts] == [[None]] * 3
        # Requests of different shapes in one run: each reads its own keys and counts its own limits.
        a, b, c = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
        await cache.set(f"read:{c}", "x", ex=60)
        mixed = await asyncio.gather(
            limiter.check(ip, a, [f"read:{a}"]),
            limiter.check(ip, None),
            limiter.check(ip, b, [f"read:{a}", f"read:{c}"]),
        )
        assert runs[-1] == 3 and [values for _, values in mixed] == [[None], None, [None, b"x"]]
        # (the address's limit refills a request every 60 ms: its remaining depends on time)
        assert [v.remaining if v.limit == 5 else v.allowed for v, _ in mixed if v is not None] == [4, True, 4]
        await cache.script_flush()
        alone, _ = await limiter.check(ip, other)
        assert alone is not None and alone.allowed and alone.remaining == 1
    finally:
        await cache.aclose()


async def test_a_turn_with_more_checks_than_a_batch_holds_is_split(
    redis_server: RedisServer, monkeypatch: Any
) -> None:
    """A script run is atomic in Redis: one turn's checks go in runs of at most `MAX_BATCH`, in order."""
    monkeypatch.setattr("coder.gateway.limits.MAX_BATCH", 4)
    cache = Redis.from_url(redis_server.url)
    limiter = RateLimiter(cache, per_token=6, per_ip=1000, window_seconds=60, fail_open=False)
    runs: list[int] = []
    script = limiter._script

    async def counted(keys: list[str], args: list[int]) -> Any:
        runs.append(args[0])
        return await script(keys=keys, args=args)

    limiter._script = counted  # type: ignore[assignment]
    token = uuid.uuid4().hex
    try:
        verdicts = await asyncio.gather(*(limiter.check("10.0.1.1", token) for _ in range(10)))
        assert runs == [4, 4, 2]
        # In order within a run; two runs in flight go on two connections, either may run first.
        assert sum(v is not None and v.allowed for v, _ in verdicts) == 6
    finally:
        await cache.aclose()
