"""How `coder-platform run` serves an app: uvicorn, answering in problem+json at the protocol level too,
with the process's `/metrics` on a listener of its own beside it.

A request uvicorn's HTTP parser (httptools) refuses never reaches the app, so no middleware can shape
the answer: a Content-Length beyond 64 bits, a malformed request line or header. uvicorn writes a
plain-text 400 for those from `send_400_response`; this protocol, a subclass of uvicorn's own (the
smallest change that reaches that answer), writes the platform's problem+json and common headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from coder.shared.errors import PROBLEM_BASE, PROBLEM_MEDIA_TYPE
from coder.shared.protocol import COMMON_HEADERS

_UNPARSABLE = json.dumps(
    {
        "type": PROBLEM_BASE + "bad-request",
        "title": "Bad request",
        "status": 400,
        "detail": "the request is not valid HTTP/1.1 (request line, headers or Content-Length)",
    }
).encode()


class ProblemHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        content = [STATUS_LINE[400]]
        for name, value in [*self.server_state.default_headers, *COMMON_HEADERS]:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: " + PROBLEM_MEDIA_TYPE.encode() + b"\r\n",
                b"content-length: " + str(len(_UNPARSABLE)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                _UNPARSABLE,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()


class _MetricsServer(uvicorn.Server):
    """The metrics listener: the process's own server owns the signals, and stops this one."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def serve(app: ASGIApp, metrics: ASGIApp, *, host: str, port: int, metrics_port: int, **options: Any) -> None:
    """`app` on `port`, `metrics` on `metrics_port`, in one event loop until a signal stops `app`'s."""
    main = uvicorn.Server(uvicorn.Config(app, host=host, port=port, http=ProblemHttpToolsProtocol, **options))
    side = _MetricsServer(
        uvicorn.Config(
            metrics,
            host=host,
            port=metrics_port,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
        )
    )

    async def both() -> None:
        listening = asyncio.create_task(side.serve())
        try:
            await main.serve()
        finally:
            side.should_exit = True
            await listening

    with asyncio.Runner(loop_factory=main.config.get_loop_factory()) as runner:
        runner.run(both())
