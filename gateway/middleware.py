"""The gateway's outer ASGI layer, in front of its own routes and the proxy alike:

- rate limits per token and per client address (Redis, see `limits`), with `RateLimit-*` headers;
- the request size limit (a declared Content-Length is refused up front, a streamed body as soon as it
  passes the limit);
- `Server-Timing: gateway;dur=<ms>`: time spent in the gateway itself, i.e. everything but the wait
  for the target, so a client can tell the gateway's overhead from the target's latency.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coder.gateway.edge import Gateway
from coder.shared.errors import Problem, problem_response

# Probes, and the documents every verifier fetches (small, cached, and needed to check any token).
CALLER = "coder.gateway.caller"
# Served on a target's metrics port only (shared/metrics.py): the proxy answers 404, token or not.
CLUSTER_ONLY = "/metrics"
# Every target's own documents and probes: reachable without a token.
PUBLIC_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        CLUSTER_ONLY,
        "/openapi.json",
        # RFC 9728 protected-resource metadata (mcp serves it): read before the client has a token.
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    }
)
RESOURCE_METADATA = "/.well-known/oauth-protected-resource"
EXEMPT = frozenset({"/healthz", "/readyz", "/.well-known/jwks.json", "/.well-known/openid-configuration"})
TIMING = "coder.gateway.timing"


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


@dataclass
class Timing:
    """Filled by the proxy: how long this request waited on the target."""

    upstream: float = 0.0


API_KEY_HEADER = b"x-api-key"


def timing_of(scope: Scope) -> Timing:
    found = scope.get(TIMING)
    return found if isinstance(found, Timing) else Timing()


def bearer(scope: Scope) -> str | None:
    """The request's token: `Authorization: Bearer`, else `x-api-key` (what Anthropic's clients send)."""
    api_key = None
    for key, value in scope["headers"]:
        if key == b"authorization":
            text = value.decode("latin-1")
            return text[7:] if text[:7].lower() == "bearer " else None
        if key == API_KEY_HEADER:
            api_key = value.decode("latin-1").strip() or None
    return api_key


def content_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def challenge(problem: Problem, scope: Scope, target: str, gateway: Gateway) -> Problem:
    """A 401 for a target that publishes RFC 9728 metadata (its descriptor's `resource_metadata`)
    names that document, as the target itself would: how an MCP client finds who issues tokens."""
    descriptor = gateway.runtime.descriptors.get(target)
    if problem.status == 401 and descriptor is not None and descriptor.resource_metadata:
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        where = f"{scope.get('scheme', 'http')}://{host}/api/{target}{RESOURCE_METADATA}"
        problem.headers = {
            **(problem.headers or {}),
            "WWW-Authenticate": f'Bearer resource_metadata="{where}"',
        }
    return problem


def own_credentials(gateway: Gateway, target: str, path: str) -> bool:
    """Whether the target checks the credentials of `path` itself (its descriptor's `own_credentials`)."""
    descriptor = gateway.runtime.descriptors.get(target)
    return descriptor is not None and path.startswith(descriptor.own_credentials)


# `/api/<first segment>` the gateway answers itself; every other `/api/...` goes to a target.
OWN_API = frozenset({"users", "orgs", "teams"})


def split_target(path: str) -> tuple[str, str] | None:
    """`/api/<target>/<rest>` -> (target, `/<rest>`) for paths the proxy serves; None for the rest."""
    if not path.startswith("/api/"):
        return None
    name, _, rest = path[5:].partition("/")
    if not name or name in OWN_API:
        return None
    return name, "/" + rest


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, gateway: Gateway, proxy: ASGIApp) -> None:
        self.app = app
        self.gateway = gateway
        # Proxied requests go straight to the proxy: the router would only walk every gateway route
        # to reach the `/api` mount at the end (which stays, as the documented route).
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        arrived = time.perf_counter()
        timing = Timing()
        scope[TIMING] = timing
        limit = self.gateway.settings.max_body_bytes
        target = split_target(scope["path"])
        token = bearer(scope)
        try:
            client = scope.get("client")
            admission = await self.gateway.admit(
                client[0] if client else "unknown",
                token,
                # OPTIONS only lists a route's methods (the target answers it without a handler).
                authenticate=target is not None
                and target[1] not in PUBLIC_PATHS
                and not own_credentials(self.gateway, *target)
                and scope.get("method") != "OPTIONS",
            )
            verdict = admission.verdict
            if verdict is not None and not verdict.allowed:
                raise Problem(
                    "rate limit exceeded; slow down",
                    status=429,
                    slug="rate-limited",
                    title="Too many requests",
                    headers={k.decode(): v.decode() for k, v in verdict.headers()},
                )
            declared = content_length(scope)
            if declared is not None and declared > limit:
                raise Problem(
                    f"the request body is larger than {limit} bytes",
                    status=413,
                    slug="payload-too-large",
                    title="Payload too large",
                )
            if admission.refusal is not None:
                raise admission.refusal
        except Problem as problem:
            if target is not None:
                problem = challenge(problem, scope, target[0], self.gateway)
            await self._refuse(scope, receive, send, problem)
            return
        extra = verdict.headers() if verdict is not None else []
        started = False
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        def timed_send(message: Message) -> Awaitable[None]:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                overhead = (time.perf_counter() - arrived - timing.upstream) * 1000
                message["headers"] = [
                    *message.get("headers", []),
                    *extra,
                    (b"server-timing", f"gateway;dur={overhead:.2f}".encode()),
                ]
            return send(message)

        try:
            inbound = limited_receive if scope["type"] == "http" else receive
            if target is not None:
                mounted = {
                    **scope,
                    "root_path": scope.get("root_path", "") + "/api",
                    CALLER: admission.caller,
                }
                await self.proxy(mounted, inbound, timed_send)
            else:
                await self.app(scope, inbound, timed_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await self._refuse(
                scope,
                receive,
                send,
                Problem(exc.detail, status=413, slug="payload-too-large", title="Payload too large"),
            )

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, problem: Problem) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013 if problem.status == 429 else 1008})
            return
        await problem_response(problem, Request(scope, receive))(scope, receive, send)
