"""Builders for observability tests: polls on demand, and a fake target whose /metrics we set."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coder.services.observability.config import ObservabilitySettings
from coder.services.observability.models import Scrape
from coder.services.observability.scrape import poll_once
from coder.tests.support.platform import Platform

API = "/api/observability/v1"


async def poll(p: Platform, *targets: str) -> list[Scrape]:
    """One round of the poller over `targets` now (waiting for the lock another replica may hold)."""
    rows = await poll_once(
        p.runtime.sessions,
        p.runtime.clients,
        p.runtime.metrics,
        targets,
        p.runtime.config(ObservabilitySettings),
        force=True,
    )
    assert rows is not None
    return rows


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


async def create_slo(p: Platform, h: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {
        "name": f"slo-{uuid.uuid4().hex[:6]}",
        "target": "calendar",
        "kind": "availability",
        "objective": 0.99,
    }
    return ok(await p.client.post(f"{API}/slos", json={**body, **fields}, headers=h), 201)


async def create_rule(p: Platform, h: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"name": f"rule-{uuid.uuid4().hex[:6]}", **fields}
    return ok(await p.client.post(f"{API}/alert-rules", json=body, headers=h), 201)


@dataclass
class FakeTarget:
    """A target of our own making: real Prometheus exposition of counters the test sets, and a
    readiness it switches. Known to the platform (its URL map and in-process apps) for one test."""

    name: str
    ready: bool = True
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """A new process: its counters start again from zero."""
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests",
            ["target", "method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds", "Latency", ["target", "method", "route"], registry=self.registry
        )

    def serve(self, status: int, count: int = 1, seconds: float = 0.01, route: str = "/v1/things") -> None:
        for _ in range(count):
            self.requests.labels(self.name, "GET", route, str(status)).inc()
            self.latency.labels(self.name, "GET", route).observe(seconds)

    def app(self) -> Starlette:
        async def readyz(_: Request) -> Response:
            return JSONResponse(
                {"status": "ready" if self.ready else "not ready"}, 200 if self.ready else 503
            )

        async def metrics(_: Request) -> Response:
            return Response(generate_latest(self.registry), media_type="text/plain; version=0.0.4")

        return Starlette(routes=[Route("/readyz", readyz), Route("/metrics", metrics)])


@pytest.fixture
def fake_target(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> FakeTarget:
    fake = FakeTarget(f"fake-{uuid.uuid4().hex[:8]}")
    monkeypatch.setitem(platform.runtime.service_urls, fake.name, f"http://{fake.name}.invalid")
    app = fake.app()
    monkeypatch.setitem(platform.runtime.local_apps, fake.name, app)
    monkeypatch.setitem(platform.runtime.metrics_apps, fake.name, app)
    return fake
