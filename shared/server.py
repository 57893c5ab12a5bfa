"""How `coder-platform run` serves an app: uvicorn, answering in problem+json at the protocol level too,
with the process's `/metrics` on a listener of its own beside it.

A request uvicorn's HTTP parser (httptools) refuses never reaches the app, so no middleware can shape
the answer: a Content-Length beyond 64 bits, a malformed request line or header. uvicorn writes a
plain-text 400 for those from `send_400_response`; this protocol, a subclass of uvicorn's own (the
smallest change that reaches that answer), writes the platform's problem+json and common headers.

With several workers each accepts on a listening socket of its own, bound to the same port with
SO_REUSEPORT, and the kernel spreads new connections evenly across them. (uvicorn's own way, one
socket shared by all, lets whichever worker wakes first accept a whole burst: of 32 keep-alive
connections opened at once, 28 went to one of two workers, and a second worker added nothing.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Iterator
from typing import Any, cast

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

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


class _CorkedTransport:
    """A connection's writes within one turn of the event loop, sent as one (a response's head and
    its body were two system calls, each as costly as a small request's whole parse): the buffer
    goes out at the end of the turn, or at once on close or past `LIMIT` bytes (where the transport's
    own flow control takes over). Everything else is the transport's own."""

    LIMIT = 65536
    __slots__ = ("_buffered", "_loop", "_size", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._buffered: list[bytes] = []
        self._size = 0
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not self._buffered:
            self._loop.call_soon(self.flush)
        self._buffered.append(data)
        self._size += len(data)
        if self._size > self.LIMIT:
            self.flush()

    def flush(self) -> None:
        if self._buffered:
            data = b"".join(self._buffered)
            self._buffered.clear()
            self._size = 0
            if not self.transport.is_closing():
                self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class ProblemHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._corked = _CorkedTransport(transport)
        self.transport = cast(asyncio.Transport, self._corked)

    def handle_websocket_upgrade(self) -> None:
        # The WebSocket protocol takes the connection over with the transport itself.
        self._corked.flush()
        self.transport = self._corked.transport
        super().handle_websocket_upgrade()

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


class _SharedPort(socket.socket):
    """A port several worker processes listen on, each with a socket of its own (SO_REUSEPORT).

    Bound in the supervisor first (a port in use stops `run` at once; unlistened, it takes no
    connections). Handed to a worker (uvicorn pickles its sockets into each process it spawns), it
    is bound again there: one socket, one accept queue per worker."""

    @classmethod
    def open(cls, family: int, address: Any) -> socket.socket:
        sock = cls(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        return sock

    def __reduce__(self) -> tuple[Any, ...]:
        return _SharedPort.open, (self.family, self.getsockname())


def serve_workers(app: str, workers: int, *, host: str, port: int, **options: Any) -> None:
    """`workers` processes, each building `app` (a factory's import string) and serving it on `port`,
    under uvicorn's supervisor (health checks, restarts, signals)."""
    config = uvicorn.Config(
        app, factory=True, workers=workers, http=ProblemHttpToolsProtocol, host=host, port=port, **options
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    Multiprocess(config, sockets=[_SharedPort.open(family, (host, port))]).run()
