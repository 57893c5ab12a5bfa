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
    pipelines: list[int] = []
    pipeline = limiter._pipeline

    async def counted(batch: list[Any]) -> list[Any]:
        pipelines.append(len(batch))
        return await pipeline(batch)

    limiter._pipeline = counted  # type: ignore[method-assign]
    ip, token = f"10.0.0.{uuid.uuid4().int % 250}", uuid.uuid4().hex
    try:
        await limiter.check(ip, None)  # alone: a plain EVALSHA (which loads the script)
        verdicts = await asyncio.gather(*(limiter.check(ip, token) for _ in range(8)))
        assert pipelines == [8]  # one round trip for the eight
        allowed = [v for v, _ in verdicts if v is not None and v.allowed]
        assert len(allowed) == 5 and sorted(v.remaining for v in allowed) == [0, 1, 2, 3, 4]
        # One at a time after: the same count (the token's five are spent).
        alone, _ = await limiter.check(ip, token)
        assert alone is not None and not alone.allowed and alone.retry_after > 0

        # Redis forgot the script (restarted, or flushed): loaded again, no check lost.
        await cache.script_flush()
        other = uuid.uuid4().hex
        verdicts = await asyncio.gather(*(limiter.check(ip, other, [f"absent:{other}"]) for _ in range(3)))
        assert pipelines[-2:] == [3, 3]
        assert all(v is not None and v.allowed for v, _ in verdicts)
        assert [values for _, values in verdicts] == [[None]] * 3
        await cache.script_flush()
        alone, _ = await limiter.check(ip, other)
        assert alone is not None and alone.allowed and alone.remaining == 1
    finally:
        await cache.aclose()
