"""The aggregate against a real slow target: `slowpoke` is a loopback HTTP server registered by its
service URL, whose `/v1/slow` answers only when the test lets it. Its panel times out on its own
timeout while the others answer; every query carries the caller's own token."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coder.tests.services.dashboard.factories import API, create, ok, panel
from coder.tests.support.oidc_provider import ServerThread
from coder.tests.support.platform import Platform, make_settings, running
from coder.tests.support.tokens import TestSigner


class SlowTarget:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.waiting = threading.Event()
        self._server = ServerThread(
            Starlette(routes=[Route("/v1/slow", self.slow), Route("/v1/fast", self.fast)])
        )

    @property
    def url(self) -> str:
        return self._server.url

    async def slow(self, request: Request) -> Response:
        self.waiting.set()
        await asyncio.to_thread(self.release.wait, 60)
        return JSONResponse({"late": True})

    async def fast(self, request: Request) -> Response:
        return JSONResponse(
            {"authorization": request.headers.get("authorization"), "query": request.url.query}
        )

    def start(self) -> SlowTarget:
        self._server.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.stop()


@pytest.fixture(scope="module")
def slow_target() -> Iterator[SlowTarget]:
    server = SlowTarget().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def slow_platform(
    database_url: str, signer: TestSigner, slow_target: SlowTarget
) -> AsyncIterator[Platform]:
    """The gateway, dashboard and learning, with `slowpoke` a target known by its URL alone."""
    settings = make_settings(database_url, signer, service_urls={"slowpoke": slow_target.url})
    async with running(settings, "inprocess", targets="gateway,dashboard,learning") as platform:
        yield platform


async def test_one_slow_target_does_not_stall_the_others(
    slow_platform: Platform, slow_target: SlowTarget, signer: TestSigner, org: str
) -> None:
    token = signer.token(org, ("dashboard:*", "learning:read"))
    h = {"Authorization": f"Bearer {token}"}
    board = await create(
        slow_platform,
        h,
        panel(1, "slowpoke", "/v1/slow", timeout_seconds=0.5),
        panel(2, "slowpoke", "/v1/fast", params={"limit": 3, "open": True}),
        panel(3, "learning", "/v1/courses"),
    )
    try:
        answer: dict[str, Any] = ok(
            await slow_platform.client.get(f"{API}/dashboards/{board['id']}/data", headers=h)
        )
    finally:
        slow_target.release.set()
    slots = {s["panel_id"]: s for s in answer["slots"]}
    assert slow_target.waiting.is_set()  # the slow query was sent and left waiting
    assert (slots[1]["status"], slots[1]["data"], slots[1]["detail"]) == (
        "timeout",
        None,
        "no answer within 0.5s",
    )
    assert slots[2]["status"] == "ok"
    assert slots[2]["data"]["authorization"] == f"Bearer {token}"
    assert sorted(slots[2]["data"]["query"].split("&")) == ["limit=3", "open=true"]
    assert (slots[3]["status"], slots[3]["data"]["items"]) == ("ok", [])
