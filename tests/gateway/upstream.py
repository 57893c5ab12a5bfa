"""Real upstream servers on loopback for the proxy tests: an HTTP/WebSocket app served by uvicorn in a
thread, and a raw TCP server that drops connections on purpose."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from coder.shared.devservers import free_port
from coder.shared.runtime import Runtime
from coder.tests.support.oidc_provider import ServerThread

# Names the upstream is reachable under through the gateway (`/api/<name>/...`).
NAMES = ("echo", "slowpoke")


class Upstream:
    def __init__(self) -> None:
        # The SSE stream waits on this between its first and its second event.
        self.release = threading.Event()
        self.seen: list[dict[str, Any]] = []
        self._server = ServerThread(
            Starlette(
                routes=[
                    Route("/echo", self.echo, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
                    Route("/upload", self.upload, methods=["POST"]),
                    Route("/sse", self.sse),
                    Route("/slow", self.slow),
                    Route("/status/{code:int}", self.status),
                    Route("/healthz", self.healthz),
                    Route("/openapi.json", self.openapi),
                    WebSocketRoute("/ws", self.websocket),
                ]
            )
        )

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> Upstream:
        self._server.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.stop()

    def register(self, runtime: Runtime) -> None:
        for name in NAMES:
            runtime.service_urls[name] = self.url

    async def echo(self, request: Request) -> Response:
        body = await request.body()
        seen = {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": dict(request.headers),
            "body": body.decode(errors="replace"),
        }
        self.seen.append(seen)
        return JSONResponse(seen, headers={"x-upstream": "echo"})

    async def upload(self, request: Request) -> Response:
        chunks = total = 0
        async for chunk in request.stream():
            if chunk:
                chunks += 1
                total += len(chunk)
        return JSONResponse({"chunks": chunks, "bytes": total})

    async def sse(self, request: Request) -> Response:
        async def events() -> Any:
            yield b"data: first\n\n"
            await asyncio.to_thread(self.release.wait, 10)
            yield b"data: second\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def slow(self, request: Request) -> Response:
        await asyncio.sleep(float(request.query_params.get("seconds", "1")))
        return JSONResponse({"slow": True})

    async def status(self, request: Request) -> Response:
        return JSONResponse({"status": request.path_params["code"]}, status_code=request.path_params["code"])

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(
            {
                "openapi": "3.1.0",
                "info": {"title": "Echo", "version": "1"},
                "paths": {
                    "/echo": {"get": {"operationId": "echo", "responses": {"200": {"description": "ok"}}}}
                },
                "components": {"schemas": {"Echo": {"type": "object"}}},
            }
        )

    async def websocket(self, websocket: WebSocket) -> None:
        wanted = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol=wanted[0] if wanted else None)
        await websocket.send_json(
            {
                "authorization": websocket.headers.get("authorization"),
                "request_id": websocket.headers.get("x-request-id"),
            }
        )
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") == "close-4001":
                    await websocket.close(code=4001, reason="asked to")
                    return
                if message.get("bytes") is not None:
                    await websocket.send_bytes(message["bytes"][::-1])
                else:
                    await websocket.send_text(json.dumps({"echo": message.get("text")}))
        except WebSocketDisconnect:
            return


class FlakyServer:
    """Answers HTTP with 200 `ok`, but drops the first `drop` connections without a word."""

    def __init__(self, drop: int, port: int | None = None) -> None:
        self.drop = drop
        self.port = port or free_port()
        self.connections = 0
        self.requests: list[str] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FlakyServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.connections <= self.drop:
                return
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head.split(b" ", 1)[0].decode())
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    await reader.readexactly(int(line.split(b":")[1]))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            await writer.drain()
        finally:
            writer.close()
