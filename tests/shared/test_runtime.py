"""The runtime opens what its targets need and, when a step of start() fails, closes what it opened."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import pytest

from coder.runner import registry
from coder.services.secrets.config import SecretsSettings
from coder.shared import runtime as runtime_module
from coder.shared.devservers import RabbitServer, RedisServer
from coder.shared.runtime import REDIS_CONNECTIONS, Runtime
from coder.shared.target import Dependency
from coder.tests.support.platform import Platform, make_settings, wait_until
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

    async def attempt() -> set[str]:
        """Start on a loop of its own, so the session's other platforms' tasks are not counted."""
        with pytest.raises(RuntimeError, match="cannot start"):
            await runtime.start()

        def left() -> set[str]:
            mine = asyncio.current_task()
            return {repr(task.get_coro()) for task in asyncio.all_tasks() if task is not mine}

        with contextlib.suppress(AssertionError):
            await wait_until(lambda: not left(), timeout=10, what="nothing left running")
        return left()

    # No relay polling PostgreSQL, no AMQP connection being kept up, no Redis health check.
    assert await asyncio.to_thread(asyncio.run, attempt()) == set()


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


async def _stubborn(runtime: Runtime) -> None:
    """A background task that swallows its cancellation (a bug the stop must survive), and ends on
    its own a second later (so the test leaves nothing running)."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        await asyncio.sleep(1)


async def test_a_stop_never_hangs_on_a_close_or_a_task_that_does_not_end(
    database_url: str, signer: TestSigner, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A close that never returns and a task that ignores its cancellation are named in the log, and
    the rest of the process is closed after them."""
    monkeypatch.setattr(runtime_module, "STOP_SECONDS", 0.2)
    secrets = dataclasses.replace(registry.wiring("secrets"), background=[_stubborn])
    runtime = Runtime(
        make_settings(database_url, signer), {"secrets": secrets}, registry.descriptors(), [SecretsSettings()]
    )
    before = asyncio.all_tasks()
    await runtime.start()
    never = asyncio.Event()
    runtime.on_stop.append(never.wait)  # type: ignore[arg-type]
    await asyncio.wait_for(runtime.stop(), timeout=30)
    messages = [(r.getMessage(), getattr(r, "close", None), getattr(r, "task", None)) for r in caplog.records]
    assert ("a close did not finish in time", "Event.wait", None) in messages
    assert any(
        m == "a background task ignored its cancellation" and "_stubborn" in str(t) for m, _, t in messages
    )
    # What was opened after them was closed too: the outbox relay is not polling any more.
    assert not [t for t in asyncio.all_tasks() - before if t.get_name() == "outbox-relay" and not t.done()]
