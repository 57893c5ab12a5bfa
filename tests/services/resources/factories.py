"""Small builders for resources tests: quotas, reservations, and a clock the routes read."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from coder.services.resources.reservations import clock
from coder.tests.support.platform import Platform
from coder.tests.support.workload import direct

API = "/api/resources/v1"


async def create_quota(p: Platform, h: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"scope": "org", "hard": {"cpu": "2"}, **fields}
    response = await p.client.post(f"{API}/quotas", json=body, headers=h)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def read_quota(p: Platform, h: dict[str, str], quota_id: str) -> dict[str, Any]:
    response = await p.client.get(f"{API}/quotas/{quota_id}", headers=h)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def reserve(p: Platform, w: dict[str, str], user_id: str = "u1", **fields: Any) -> httpx.Response:
    """Reserve with `w`, a workload token's headers (the `reserver` fixture)."""
    body = {"user_id": user_id, "resources": {"cpu": "500m"}, **fields}
    return await direct(p, "resources", "POST", "/v1/reservations", w, json=body)


async def release(p: Platform, w: dict[str, str], reservation_id: str) -> httpx.Response:
    return await direct(p, "resources", "DELETE", f"/v1/reservations/{reservation_id}", w)


@dataclass
class Clock:
    now: datetime

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@contextmanager
def frozen_clock(p: Platform) -> Iterator[Clock]:
    """The time every resources route reads, held still until the test moves it."""
    app = p.runtime.local_apps["resources"]
    assert isinstance(app, FastAPI)
    moment = Clock(datetime.now(UTC).replace(microsecond=0))
    app.dependency_overrides[clock] = lambda: moment.now
    try:
        yield moment
    finally:
        app.dependency_overrides.pop(clock, None)
