"""`/api/<target>/<path>` -> that target's `/<path>`: in-process when the target runs in this process,
over HTTP otherwise. Bodies stream both ways; nothing is buffered."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coder.shared.errors import NotFound, Problem, problem_response
from coder.shared.runtime import Runtime

# Hop-by-hop headers (RFC 9110 7.6.1) are the connection's, not the message's: never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


class TargetProxy:
    """ASGI app mounted at `/api`; the gateway's own `/api/...` routes are matched before it."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0), follow_redirects=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return
        # Mounted at /api: root_path is ".../api" and path still carries it (ASGI's convention).
        mount = scope.get("root_path", "")
        name, _, path = scope["path"].removeprefix(mount).lstrip("/").partition("/")
        path = "/" + path
        local = self.runtime.local_apps.get(name)
        if local is not None and name != "gateway":
            child = dict(scope)
            child["root_path"] = f"{mount}/{name}"
            child["path"] = child["root_path"] + path
            child["raw_path"] = child["path"].encode()
            await self._call_local(local, child, receive, send)
            return
        if name not in self.runtime.service_urls or name == "gateway":
            await self._problem(
                scope, receive, send, NotFound(f"unknown target {name!r}", slug="unknown-target")
            )
            return
        if scope["type"] == "websocket":
            await self._problem(
                scope,
                receive,
                send,
                Problem("WebSocket pass-through to a remote target is not available yet", status=501),
            )
            return
        await self._forward(name, path, scope, receive, send)

    async def _call_local(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] in ("http.response.start", "websocket.accept")
            await send(message)

        try:
            await app(scope, receive, tracking_send)
        except Exception:
            # The target's own error handler already answered with a problem and logged the error;
            # Starlette re-raises it for the server's benefit, which here is us.
            if not started:
                await self._problem(
                    scope, receive, send, Problem(status=500, slug="internal", title="Internal server error")
                )

    async def _problem(self, scope: Scope, receive: Receive, send: Send, problem: Problem) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4404 if problem.status == 404 else 1011})
            return
        await problem_response(problem, Request(scope, receive))(scope, receive, send)

    async def _forward(self, name: str, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        url = self.runtime.service_urls[name].rstrip("/") + path
        if query := scope.get("query_string", b"").decode("latin-1"):
            url += "?" + query
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        forwarded_for = request.client.host if request.client else ""
        headers.append(("x-forwarded-for", forwarded_for))
        headers.append(("x-forwarded-prefix", f"/api/{name}"))

        async def body() -> AsyncIterator[bytes]:
            async for chunk in request.stream():
                yield chunk

        upstream_request = self._http.build_request(
            request.method,
            url,
            headers=headers,
            content=body() if request.method not in ("GET", "HEAD") else None,
        )
        try:
            upstream = await self._http.send(upstream_request, stream=True)
        except httpx.TimeoutException:
            await self._problem(
                scope,
                receive,
                send,
                Problem(
                    f"{name} did not answer in time",
                    status=504,
                    slug="gateway-timeout",
                    title="Gateway timeout",
                ),
            )
            return
        except httpx.TransportError as exc:
            await self._problem(
                scope,
                receive,
                send,
                Problem(
                    f"{name} is unreachable: {type(exc).__name__}",
                    status=502,
                    slug="bad-gateway",
                    title="Bad gateway",
                ),
            )
            return
        response = StreamingResponse(
            upstream.aiter_raw(),
            status_code=upstream.status_code,
            headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP},
            background=BackgroundTask(upstream.aclose),
        )
        await response(scope, receive, send)

    async def close(self) -> None:
        await self._http.aclose()
