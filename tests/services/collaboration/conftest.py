"""The platform served on a loopback port (an in-process ASGI client speaks no WebSocket), and a way
to run more collaboration replicas on the same database, Redis and broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
import uvicorn
from fastapi import FastAPI

from coder.shared.devservers import free_port
from coder.tests.support.platform import Platform, running


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), lifespan="off", log_level="warning", ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="module")
async def address(platform: Platform) -> AsyncIterator[str]:
    """The whole platform (gateway included): WebSockets go through the gateway's pass-through."""
    async with serving(platform.app) as where:
        yield where


Replica = Callable[[], AbstractAsyncContextManager[str]]


@pytest.fixture
def replica(platform: Platform) -> Replica:
    """Starts a process-like collaboration replica (its own runtime: engine, cache, bus, rooms) on the
    platform's database, Redis and broker, served on its own port; stopped when the block ends."""

    @asynccontextmanager
    async def start() -> AsyncIterator[str]:
        settings = platform.runtime.settings
        async with (
            running(settings, platform.backend, targets="collaboration") as other,
            serving(other.app) as at,
        ):
            yield at

    return start
