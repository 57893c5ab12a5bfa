"""The access metrics of WebSocket sessions: 101 once accepted, 403 when refused before (never the
500 a session used to be counted as, which read as an outage on every live tail)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from coder.shared.telemetry import REQUESTS, TelemetryMiddleware


async def session(accept: bool) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        if accept:
            await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000 if accept else 1008})

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        pass

    scope: dict[str, Any] = {"type": "websocket", "path": "/v1/tail", "headers": []}
    await TelemetryMiddleware(app, "metrics-test")(scope, receive, send)


@pytest.mark.parametrize(("accept", "status"), [(True, "101"), (False, "403")])
async def test_websocket_sessions_count_as_what_they_were(accept: bool, status: str) -> None:
    counter = REQUESTS.labels("metrics-test", "WS", "unmatched", status)
    before = counter._value.get()
    await session(accept)
    assert counter._value.get() == before + 1
    assert REQUESTS.labels("metrics-test", "WS", "unmatched", "500")._value.get() == 0
