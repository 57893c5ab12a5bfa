"""The platform app as tests run it: settings, the app with its lifespan entered, polling helpers."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI

from coder.runner import registry
from coder.runner.process import build_process_app
from coder.shared.devservers import RabbitServer
from coder.shared.events import CloudEvent
from coder.shared.runtime import Runtime
from coder.shared.settings import PlatformSettings, TargetSettings
from coder.shared.target import Target, generated_workload_secrets
from coder.tests.support.tokens import TestSigner


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
    settings = PlatformSettings.model_validate(values)
    # Targets calling others (ai, execution, knowledge) or acting for users later (workflow) prove
    # themselves with workload secrets, generated as `coder-platform run` generates them.
    settings.workload_secrets.update(
        generated_workload_secrets(registry.descriptors(), settings.workload_secrets)
    )
    return settings


@asynccontextmanager
async def running(settings: PlatformSettings, backend: str, targets: str = "all") -> AsyncIterator[Platform]:
    """The platform app with its lifespan entered, and a client speaking to it in-process."""
    app = build_process_app(settings, registry.resolve(targets), target_settings(registry.resolve(targets)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Platform(app=app, client=client, backend=backend, runtime=app.state.runtime)


async def sample(p: Platform, name: str, **labels: str) -> float:
    """One sample of the process's /metrics as its metrics port serves it (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    answer = await p.runtime.metrics.client(next(iter(p.runtime.targets))).get("/metrics")
    assert answer.status_code == 200, answer.text
    for family in text_string_to_metric_families(answer.text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return found.value
    return 0.0


def target_settings(targets: Mapping[str, Target]) -> list[TargetSettings]:
    """The targets' settings from the environment as it is, development defaults allowed (tests run
    with CODER_ENVIRONMENT=test and the development keys)."""
    return [t.settings() for t in targets.values() if t.settings is not None]


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


async def listen(p: Platform, *types: str) -> list[CloudEvent]:
    """Collect the bus events of these types from now on (a queue of its own on either bus)."""
    received: list[CloudEvent] = []

    async def deliver(event: CloudEvent) -> None:
        received.append(event)

    assert p.runtime.bus is not None
    await p.runtime.bus.consume(f"test-{uuid.uuid4().hex[:8]}", list(types), deliver)
    return received


def own_vhost(rabbit_server: RabbitServer, prefix: str) -> str:
    """The AMQP URL of a new virtual host on the session's RabbitMQ: a platform there shares no queue
    with the session's other platforms (whose consumers of the same target would take its events)."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ctl = [str(Path(rabbit_server.binary).with_name("rabbitmqctl")), "-n", rabbit_server.node]
    for command in (["add_vhost", vhost], ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]):
        subprocess.run([*ctl, *command], env=rabbit_server.environment(), check=True, capture_output=True)
    return rabbit_server.url + vhost
