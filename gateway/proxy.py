"""`/api/<target>/<path>` -> that target's `/<path>`: in-process when the target runs in this process,
over HTTP (or WebSocket) otherwise.

Before anything is forwarded the gateway checks the caller (a valid, unrevoked token that concerns the
target; each target's `/healthz`, `/readyz` and `/openapi.json` are public; its `/metrics` is for the
cluster only, on its metrics port, and never proxied) and then the
target checks again, resource by resource (defense in depth). Bodies stream both ways unbuffered.
Calls to a remote target get per-target timeouts, retries for idempotent requests that failed before
any byte of them was sent, and a circuit breaker. The request id and W3C traceparent go along.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from opentelemetry import propagate
from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from coder.gateway import roles
from coder.gateway.breaker import CircuitBreaker
from coder.gateway.edge import Caller, Gateway
from coder.gateway.middleware import (
    CALLER,
    CLUSTER_ONLY,
    PUBLIC_PATHS,
    BodyTooLarge,
    challenge,
    own_credentials,
    timing_of,
)
from coder.shared import context
from coder.shared.auth import bearer_token
from coder.shared.errors import Forbidden, NotFound, Problem, Unauthorized, problem_response
from coder.shared.runtime import Runtime
from coder.shared.telemetry import take_route

log = logging.getLogger(__name__)

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
    }
)
# Set by the gateway itself on the way in (and by the target's own telemetry on the way out).
_HOP_BY_HOP = frozenset(name.encode() for name in HOP_BY_HOP)
REPLACED = frozenset(
    {"authorization", "x-api-key", "x-request-id", "traceparent", "tracestate", "x-forwarded-for"}
)
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
BREAKER_STATUSES = frozenset({502, 503, 504})


class ClientGone(Exception):
    """The client disconnected while its body was being forwarded."""


def _bad_gateway(detail: str) -> Problem:
    return Problem(detail, status=502, slug="bad-gateway", title="Bad gateway")


def _body_failure(exc: BaseException) -> BaseException | None:
    """The client's side of a failed upload (too large, gone), which aiohttp wraps in its own error."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BodyTooLarge | ClientGone):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class TargetProxy:
    """ASGI app mounted at `/api`; the gateway's own `/api/...` routes are matched before it."""

    def __init__(self, runtime: Runtime, gateway: Gateway) -> None:
        self.runtime = runtime
        self.gateway = gateway
        s = gateway.settings
        self._limit = s.max_upstream_connections
        self._session: aiohttp.ClientSession | None = None
        self._breakers: dict[str, CircuitBreaker] = {}
        self._timeouts: dict[str, aiohttp.ClientTimeout] = {}

    @property
    def http(self) -> aiohttp.ClientSession:
        """Keep-alive connections to the remote targets (opened on first use, in the serving loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=30, use_dns_cache=True),
                auto_decompress=False,  # bodies pass through as the target encoded them
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            )
        return self._session

    def breaker(self, name: str) -> CircuitBreaker:
        if name not in self._breakers:
            s = self.gateway.settings
            self._breakers[name] = CircuitBreaker(s.breaker_failure_threshold, s.breaker_reset_seconds)
            self._breakers[name].export(name)
        return self._breakers[name]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return
        root = scope.get("root_path", "")
        rest = scope["path"][len(root) :] if root and scope["path"].startswith(root) else scope["path"]
        rest = rest.removeprefix("/api")
        name, _, tail = rest.lstrip("/").partition("/")
        path = "/" + tail
        local = self.runtime.local_apps.get(name)
        if name == "gateway" or (local is None and name not in self.runtime.service_urls):
            await self._problem(
                scope, receive, send, NotFound(f"unknown target {name!r}", slug="unknown-target")
            )
            return
        if path == CLUSTER_ONLY:
            await self._problem(
                scope, receive, send, NotFound(f"{name}'s metrics are served inside the cluster only")
            )
            return
        try:
            token = await self._admit(name, path, scope)
        except Problem as problem:
            await self._problem(scope, receive, send, challenge(problem, scope, name, self.gateway))
            return
        headers = self._headers(scope, token)
        if local is not None:
            await self._call_local(local, name, path, headers, scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(name, path, headers, scope, receive, send)
        else:
            await self._forward(name, path, headers, scope, receive, send)

    async def _admit(self, name: str, path: str, scope: Scope) -> str | None:
        """The coarse check: the token to forward, or None for a target's public paths (and OPTIONS,
        which only lists a route's methods)."""
        if (
            path in PUBLIC_PATHS
            or own_credentials(self.gateway, name, path)
            or scope.get("method") == "OPTIONS"
        ):
            return None
        caller = scope.get(CALLER)  # usually already checked at the edge
        if not isinstance(caller, Caller):
            token = bearer_token(HTTPConnection(scope))
            if not token:
                raise Unauthorized("a bearer token is required")
            caller = await self.gateway.authenticate(token)
        if not roles.reaches(caller.principal.permissions, name):
            raise Forbidden(f"this token grants nothing on {name}", slug="target-forbidden")
        return caller.token

    def _headers(self, scope: Scope, token: str | None) -> list[tuple[bytes, bytes]]:
        headers = [(k, v) for k, v in scope["headers"] if k.decode("latin-1") not in REPLACED]
        if token is None:
            # Public paths still carry the caller's own credentials, if any, untouched.
            headers += [(k, v) for k, v in scope["headers"] if k == b"authorization"]
        else:
            headers.append((b"authorization", f"Bearer {token}".encode("latin-1")))
        if rid := context.request_id.get():
            headers.append((b"x-request-id", rid.encode("latin-1")))
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in carrier.items()]
        client = scope.get("client")
        if client:
            headers.append((b"x-forwarded-for", client[0].encode("latin-1")))
        return headers

    async def _call_local(
        self,
        app: ASGIApp,
        name: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        child = dict(scope)
        child["root_path"] = scope.get("root_path", "") + f"/{name}"
        child["path"] = child["root_path"] + path
        child["raw_path"] = child["path"].encode()
        child["headers"] = headers
        # The target's app opens its own server span, a child of the gateway's (the traceparent in
        # `headers`), as it would in a process of its own.
        timing = timing_of(scope)
        began = time.perf_counter()
        started = False

        def tracking_send(message: Message) -> Awaitable[None]:
            nonlocal started
            if message["type"] in ("http.response.start", "websocket.accept") and not started:
                started = True
                timing.upstream += time.perf_counter() - began
                if message["type"] == "http.response.start":
                    # The gateway's own telemetry names the request id once.
                    message["headers"] = take_route(
                        scope, name, [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                    )
            return send(message)

        try:
            await app(child, receive, tracking_send)
        except BodyTooLarge:
            raise
        except Exception:
            # The target's own error handler already answered with a problem and logged the error;
            # Starlette re-raises it for the server's benefit, which here is us.
            if not started:
                await self._problem(
                    scope, receive, send, Problem(status=500, slug="internal", title="Internal server error")
                )

    async def _problem(self, scope: Scope, receive: Receive, send: Send, problem: Problem) -> None:
        if scope["type"] == "websocket":
            code = {401: 4401, 403: 4403, 404: 4404}.get(problem.status, 1011)
            await send(
                {"type": "websocket.close", "code": code, "reason": (problem.detail or problem.title)[:120]}
            )
            return
        await problem_response(problem, Request(scope, receive))(scope, receive, send)

    def _url(self, name: str, path: str, scope: Scope, websocket: bool = False) -> str:
        base = self.runtime.service_urls[name].rstrip("/")
        url = base + path
        if query := scope.get("query_string", b"").decode("latin-1"):
            url += "?" + query
        if websocket:
            parts = urlsplit(url)
            url = urlunsplit(parts._replace(scheme="wss" if parts.scheme == "https" else "ws"))
        return url

    def _refuse_open_breaker(self, name: str, breaker: CircuitBreaker) -> Problem:
        wait = max(1, round(breaker.retry_after()))
        return Problem(
            f"{name} is failing; calls are paused for {wait}s",
            status=503,
            slug="circuit-open",
            title="Service unavailable",
            headers={"Retry-After": str(wait)},
            target=name,
        )

    async def _forward(
        self,
        name: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        breaker = self.breaker(name)
        if not breaker.allow():
            await self._problem(scope, receive, send, self._refuse_open_breaker(name, breaker))
            return
        settings = self.gateway.settings
        method = scope["method"]
        timing = timing_of(scope)
        has_body = any(k in (b"content-length", b"transfer-encoding") for k, _ in scope["headers"])
        body_sent = False

        async def body() -> AsyncIterator[bytes]:
            nonlocal body_sent
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                if chunk:
                    body_sent = True
                    yield chunk
                if not message.get("more_body", False):
                    return

        if (timeout := self._timeouts.get(name)) is None:
            timeout = self._timeouts[name] = aiohttp.ClientTimeout(
                sock_connect=settings.connect_timeout_seconds,
                connect=settings.connect_timeout_seconds,
                sock_read=settings.timeout_for(name),
            )
        # ASGI header names are lower case.
        outgoing = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers if k not in _HOP_BY_HOP]
        attempts = 1 + (settings.retries if method in IDEMPOTENT else 0)
        content = body() if has_body else None
        upstream: aiohttp.ClientResponse | None = None
        problem: Problem | None = None
        for attempt in range(attempts):
            began = time.perf_counter()
            try:
                upstream = await self.http.request(
                    method,
                    self._url(name, path, scope),
                    headers=outgoing,
                    data=content,
                    timeout=timeout,
                    allow_redirects=False,
                    compress=False,
                )
                break
            except (BodyTooLarge, ClientGone):
                breaker.release()
                raise
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                breaker.failure()
                problem = Problem(
                    f"{name} did not answer in time ({type(exc).__name__})",
                    status=504,
                    slug="gateway-timeout",
                    title="Gateway timeout",
                )
                # Only a connection that never opened is safe to try again; a slow answer is not.
                retry = isinstance(exc, aiohttp.ConnectionTimeoutError)
            except aiohttp.ClientError as exc:
                if (cause := _body_failure(exc)) is not None:
                    breaker.release()
                    raise cause from None
                breaker.failure()
                problem = _bad_gateway(f"{name} is unreachable: {type(exc).__name__}")
                retry = True
            finally:
                timing.upstream += time.perf_counter() - began
            if not (retry and method in IDEMPOTENT and not body_sent and attempt + 1 < attempts):
                break
            if not breaker.allow():
                problem = self._refuse_open_breaker(name, breaker)
                break
            await asyncio.sleep(settings.retry_backoff_seconds * 2**attempt)
        if upstream is None:
            assert problem is not None
            await self._problem(scope, receive, send, problem)
            return
        if upstream.status in BREAKER_STATUSES:
            breaker.failure()
        else:
            breaker.success()
        await self._relay(name, upstream, scope, send)

    async def _relay(self, name: str, upstream: aiohttp.ClientResponse, scope: Scope, send: Send) -> None:
        """Send the target's answer on as it arrives, chunk by chunk."""
        headers = take_route(
            scope,
            name,
            [
                (k, v)
                for k, v in upstream.raw_headers
                if k.decode("latin-1").lower() not in HOP_BY_HOP and k.lower() != b"x-request-id"
            ],
        )
        try:
            await send({"type": "http.response.start", "status": upstream.status, "headers": headers})
            content = upstream.content
            more = scope["method"] != "HEAD"
            while more:
                chunk = await content.readany()
                # A small answer is usually whole by now: its one chunk ends the response too.
                more = not content.at_eof()
                if chunk or not more:
                    await send({"type": "http.response.body", "body": chunk, "more_body": more})
            if scope["method"] == "HEAD":
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Too late for a problem: end the response unfinished so the client sees it was cut.
            log.warning("target stream broke", extra={"target": name, "error": repr(exc)})
        finally:
            upstream.release()

    async def _websocket(
        self,
        name: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        breaker = self.breaker(name)
        if not breaker.allow():
            await self._problem(scope, receive, send, self._refuse_open_breaker(name, breaker))
            return
        connected = await receive()
        if connected["type"] != "websocket.connect":
            return
        forwarded = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in headers
            if not k.startswith(b"sec-websocket-") and k.decode("latin-1") not in HOP_BY_HOP
        ]
        settings = self.gateway.settings
        try:
            upstream = await connect(
                self._url(name, path, scope, websocket=True),
                additional_headers=forwarded,
                subprotocols=scope.get("subprotocols") or None,
                open_timeout=settings.connect_timeout_seconds,
                ping_interval=None,
                max_size=None,
                compression=None,
                proxy=None,
                user_agent_header=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status >= 500:
                breaker.failure()
            else:
                breaker.release()
            await send(
                {"type": "websocket.close", "code": {401: 4401, 403: 4403, 404: 4404}.get(status, 1011)}
            )
            return
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            breaker.failure()
            log.warning("websocket upstream unreachable", extra={"target": name, "error": repr(exc)})
            await send({"type": "websocket.close", "code": 1011})
            return
        breaker.success()
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
        await self._pump(upstream, receive, send)

    async def _pump(self, upstream: ClientConnection, receive: Receive, send: Send) -> None:
        async def client_to_target() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    await upstream.close(code=message.get("code", 1000))
                    return
                if message["type"] == "websocket.receive":
                    data = message.get("bytes")
                    await upstream.send(data if data is not None else message.get("text", ""))

        async def target_to_client() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for data in upstream:
                    if isinstance(data, bytes):
                        await send({"type": "websocket.send", "bytes": data})
                    else:
                        await send({"type": "websocket.send", "text": data})
            code = upstream.close_code or 1000
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": code, "reason": upstream.close_reason or ""})

        tasks = [asyncio.create_task(client_to_target()), asyncio.create_task(target_to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await upstream.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
