"""Shipping a process's logs to `logging`: an outage never touches requests and loses no line that
was not acknowledged; the lines arrive once logging is back; a full buffer says what it dropped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator

import uvicorn

from coder.shared.devservers import free_port
from coder.shared.logship import LogShipper
from coder.shared.telemetry import json_formatter
from coder.tests.services.logging.factories import lines, query
from coder.tests.support.platform import Platform, make_settings, running, wait_until
from coder.tests.support.tokens import TestSigner


@contextlib.asynccontextmanager
async def serving(platform: Platform, port: int) -> AsyncIterator[None]:
    """The platform behind uvicorn on `port`: logging is up while this lasts."""
    server = uvicorn.Server(
        uvicorn.Config(platform.app, host="127.0.0.1", port=port, lifespan="off", log_config=None)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        await task


def shipper(port: int, signer: TestSigner, org: str, **options: int | float) -> LogShipper:
    token = signer.token(org, perms=["logging:push"], ttl=600)
    handler = LogShipper(
        f"http://127.0.0.1:{port}/api/logging/v1/push",
        token,
        {"service": "test-shipper"},
        flush_seconds=0.1,
        max_backoff_seconds=0.5,
        **options,  # type: ignore[arg-type]
    )
    handler.setFormatter(json_formatter())  # as a process ships: JSON lines
    return handler


async def test_an_outage_keeps_lines_until_logging_acknowledges_them(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    port = free_port()  # nothing listens there yet: logging is down
    handler = shipper(port, signer, org)
    root = logging.getLogger()
    root.addHandler(handler)  # as a process ships: every log line of every request
    log = logging.getLogger(f"test.logship.{uuid.uuid4().hex[:6]}")
    marker = uuid.uuid4().hex[:8]
    reader = signer.headers(org, perms=["logging:read"])
    try:
        # Requests go on as usual while every shipment fails; their lines wait in the buffer.
        for i in range(20):
            log.warning("line %s %d", marker, i)
            response = await platform.client.get("/api/usage/v1/meters", headers=signer.headers(org))
            assert response.status_code == 200
        assert handler.shipped == 0 and handler.pending() >= 40 and handler.dropped == 0

        async def arrived() -> list[str]:
            found = await lines(
                platform, reader, f'{{service="test-shipper"}} |= "{marker}"', direction="forward"
            )
            return found if len(found) == 20 else []

        async with serving(platform, port):
            stored = await wait_until(arrived, what="the buffered lines to arrive")
        assert [json.loads(line)["message"] for line in stored] == [f"line {marker} {i}" for i in range(20)]
        assert handler.shipped >= 40 and handler.dropped == 0
        # The requests' own lines came too, with the ids that link them to their request and trace.
        access = await query(platform, reader, '{service="test-shipper"} |= "/api/usage/v1/meters"', limit=1)
        assert access[0]["request_id"] and access[0]["trace_id"] and access[0]["level"] == "info"
    finally:
        root.removeHandler(handler)
        await asyncio.to_thread(handler.close)


async def test_a_full_buffer_drops_new_lines_and_says_how_many(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    port = free_port()
    handler = shipper(port, signer, org, capacity=5)
    log = logging.getLogger(f"test.logship.{uuid.uuid4().hex[:6]}")
    log.addHandler(handler)
    log.propagate = False
    try:
        for i in range(8):
            log.error("kept or dropped %d", i)
        assert handler.pending() == 5 and handler.dropped == 3
        async with serving(platform, port):
            await wait_until(lambda: handler.shipped == 5 and handler.dropped == 0, what="the shipment")
        stored = await lines(platform, signer.headers(org), '{service="test-shipper"}', direction="forward")
        assert [json.loads(line)["message"] for line in stored[:5]] == [
            f"kept or dropped {i}" for i in range(5)
        ]
        assert stored[5:] == ["log shipper dropped 3 lines: its buffer of 5 was full"]
    finally:
        log.removeHandler(handler)
        await asyncio.to_thread(handler.close)


async def test_a_process_ships_when_configured(database_url: str, signer: TestSigner) -> None:
    settings = make_settings(
        database_url, signer, log_ship_url="http://127.0.0.1:9/api/logging/v1/push", log_ship_token="t"
    )
    async with running(settings, "inprocess", targets="usage"):
        shippers = [h for h in logging.getLogger().handlers if isinstance(h, LogShipper)]
        assert len(shippers) == 1 and shippers[0].labels == {"service": "coder-usage"}
    assert not [h for h in logging.getLogger().handlers if isinstance(h, LogShipper)]
