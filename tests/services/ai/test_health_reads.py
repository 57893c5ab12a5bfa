"""The routing version and deployments' health read by calls: those asked in one turn of the event loop
share a round trip to Redis, and each still sees what was written before it asked."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from coder.services.ai import health
from coder.services.ai.calls import ROUTING_VERSION_KEY
from coder.services.ai.schemas import HealthState


async def test_reads_of_one_loop_turn_share_a_round_trip(
    redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = Redis.from_url(redis_server.url, decode_responses=True)
    sent: list[list[uuid.UUID]] = []
    read = health.states_and

    async def counted(
        cache: Redis, ids: Sequence[uuid.UUID], key: str | None
    ) -> tuple[str | None, list[health.Health]]:
        sent.append(list(ids))
        return await read(cache, ids, key)

    monkeypatch.setattr(health, "states_and", counted)
    try:
        resting, fine = uuid.uuid4(), uuid.uuid4()
        await cache.set(ROUTING_VERSION_KEY, "7")
        await health.cool_down(cache, resting, 30, "answered 429")
        await health.mark(cache, fine, HealthState.HEALTHY, None, ttl=60)
        reads = health.SharedReads(cache, ROUTING_VERSION_KEY)

        answers = await asyncio.gather(
            reads.states_and([resting]), reads.states_and([fine, resting]), reads.states_and([])
        )
        assert sent == [[resting, fine]]  # one pipeline, each deployment read once
        assert [(v, [s.state for s in states]) for v, states in answers] == [
            ("7", [HealthState.COOLDOWN]),
            ("7", [HealthState.HEALTHY, HealthState.COOLDOWN]),
            ("7", []),
        ]

        # A read asked after a write is sent after it.
        await cache.incr(ROUTING_VERSION_KEY)
        await health.mark(cache, fine, HealthState.UNHEALTHY, "answered 500", ttl=60)
        version, (state,) = await reads.states_and([fine])
        assert (version, state.state, state.detail) == ("8", HealthState.UNHEALTHY, "answered 500")
        assert len(sent) == 2

        # Redis failing fails every call of the turn, and the next turn reads again.
        async def down(cache: Redis, ids: Sequence[uuid.UUID], key: str | None) -> Any:
            raise ConnectionError("redis is down")

        monkeypatch.setattr(health, "states_and", down)
        failed = await asyncio.gather(
            reads.states_and([fine]), reads.states_and([resting]), return_exceptions=True
        )
        assert [type(f) for f in failed] == [ConnectionError, ConnectionError]
        monkeypatch.setattr(health, "states_and", counted)
        assert (await reads.states_and([fine]))[0] == "8"
    finally:
        await cache.delete(ROUTING_VERSION_KEY)
        await cache.aclose()
