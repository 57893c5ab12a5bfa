"""The runtime opens what its targets need and, when a step of start() fails, closes what it opened."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from coder.runner import registry
from coder.services.secrets.config import SecretsSettings
from coder.shared.devservers import RabbitServer, RedisServer
from coder.shared.runtime import REDIS_CONNECTIONS, Runtime
from coder.shared.target import Dependency
from coder.tests.support.platform import Platform, make_settings
from coder.tests.support.tokens import TestSigner


def _cannot_start(runtime: Runtime) -> None:
    raise RuntimeError("this worker cannot start")


async def test_a_start_that_fails_partway_leaves_nothing_running(
    database_url: str, redis_server: RedisServer, rabbit_server: RabbitServer, signer: TestSigner
) -> None:
    secrets = registry.wiring("secrets")
    # The last step of start() fails: after the engine, the cache, the broker connection and the
    # outbox relay were opened.
    broken = dataclasses.replace(
        secrets,
        descriptor=dataclasses.replace(
            secrets.descriptor, needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.RABBITMQ})
        ),
        background=[_cannot_start],  # type: ignore[list-item]
    )
    settings = make_settings(database_url, signer, redis_url=redis_server.url, amqp_url=rabbit_server.url)
    runtime = Runtime(settings, {"secrets": broken}, registry.descriptors(), [SecretsSettings()])
    before = asyncio.all_tasks()
    with pytest.raises(RuntimeError, match="cannot start"):
        await runtime.start()
    left = {task.get_name() for task in asyncio.all_tasks() - before if not task.done()}
    assert left == set()  # no relay polling PostgreSQL, no AMQP connection being kept up


async def test_a_burst_beyond_the_redis_pool_waits_for_connections(platform: Platform) -> None:
    """More concurrent cache calls than the pool holds (what 200 WebSocket handshakes at once do at the
    gateway) each get an answer: they wait for a connection rather than fail."""
    cache = platform.runtime.cache
    assert cache is not None
    await cache.set("burst", "ok")
    # BLPOP holds a connection for its timeout: REDIS_CONNECTIONS + 50 of them at once overflow the pool.
    answers = await asyncio.gather(
        *(cache.blpop([f"burst-{n}"], timeout=0.2) for n in range(REDIS_CONNECTIONS + 50))
    )
    assert answers == [None] * (REDIS_CONNECTIONS + 50)
    assert await cache.get("burst") == "ok"
