"""HTTP rules every app of the platform answers by, in one ASGI middleware (the gateway's and every
target's, see `app.create_target_app`):

- One `Authorization` header. With two, a limiter could count one and a route authenticate the other.
- `OPTIONS` on a route answers 204 with the complete `Allow` (CORS preflights go on to the CORS
  middleware); a method the route does not serve answers 405 problem+json with the complete `Allow`,
  before a catch-all mount (the gateway's `/api` proxy) could claim the path.
- Common response headers: `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, and
  `Cache-Control: no-store` unless the route set its own: answers are per caller (tokens, secret
  values) and no cache may keep them. Set only when absent, so nested apps add them once.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from fastapi.routing import iter_route_contexts
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coder.shared.errors import Problem, problem_response

COMMON_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)


def _route_path(scope: Scope) -> str:
    """The path as the app's routes see it (without the prefix of a mount the app sits under)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


@dataclass(frozen=True)
class _Pattern:
    prefix: str  # the literal part before the first parameter: most routes are ruled out by it alone
    regex: re.Pattern[str]
    methods: frozenset[str]


def route_patterns(routes: Sequence[BaseRoute]) -> list[_Pattern]:
    """The app's method-bound routes, included routers flattened (mounts answer for themselves)."""
    found = []
    for route in iter_route_contexts(routes):
        if route.methods and route.path:
            found.append(_Pattern(route.path.split("{", 1)[0], route.path_regex, frozenset(route.methods)))
    return found


def direct_patterns(routes: Sequence[BaseRoute]) -> list[_Pattern]:
    """The method-bound routes the app holds itself (its probes), read without building the routes of
    the routers it includes: FastAPI builds those at their first request."""
    return [
        _Pattern(route.path.split("{", 1)[0], route.path_regex, frozenset(route.methods))
        for route in routes
        if isinstance(route, Route) and route.methods
    ]


def allowed_methods(patterns: list[_Pattern], path: str) -> set[str]:
    return {m for p in patterns if path.startswith(p.prefix) and p.regex.match(path) for m in p.methods}


def _is_preflight(scope: Scope) -> bool:
    names = {name for name, _ in scope["headers"]}
    return b"origin" in names and b"access-control-request-method" in names


def _duplicate_authorization(scope: Scope) -> bool:
    return sum(1 for name, _ in scope["headers"] if name == b"authorization") > 1


class ProtocolMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # The routes of the app this middleware wraps, read at its first request (routes are all
        # added by then: the app is built before it serves). A request its own routes serve (a probe)
        # needs no more; any other reads them all, which builds the included routers' routes.
        self._direct: list[_Pattern] | None = None
        self._patterns: list[_Pattern] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and _duplicate_authorization(scope):
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        # A plain function handing on `send`'s awaitable (as every send wrapper of the platform): no
        # coroutine of its own for each chunk of a streamed answer.
        def send_with_headers(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                message["headers"] = _with_common(list(message.get("headers", [])))
            return send(message)

        answer = _answer_here(scope, self._allowed)
        if answer is not None:
            await answer(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _allowed(self, scope: Scope, path: str) -> set[str]:
        """The methods `path` is served with (only its own routes' when one of them serves the request's)."""
        routes = scope["app"].router.routes
        if self._direct is None:
            self._direct = direct_patterns(routes)
        methods = allowed_methods(self._direct, path)
        if scope["method"] in methods:
            return methods
        if self._patterns is None:
            self._patterns = route_patterns(routes)
        return allowed_methods(self._patterns, path)


def _answer_here(scope: Scope, allowed: Callable[[Scope, str], set[str]]) -> Response | None:
    """The answer to a request the app must not see: two Authorization headers, OPTIONS, a method the
    path is not served with. None for the rest."""
    if _duplicate_authorization(scope):
        problem = Problem(
            "send one Authorization header",
            slug="duplicate-authorization",
            errors=[{"field": "header.authorization", "message": "sent more than once"}],
        )
        return problem_response(problem, Request(scope))
    method = scope["method"]
    if method == "OPTIONS" and _is_preflight(scope):
        return None
    methods = allowed(scope, _route_path(scope))
    if not methods or method in methods:
        return None
    allow = ", ".join(sorted(methods | {"OPTIONS"}))
    if method == "OPTIONS":
        return Response(status_code=204, headers={"Allow": allow})
    problem = Problem(
        f"{method} is not served here; use one of {allow}",
        status=405,
        slug="method-not-allowed",
        title="Method not allowed",
        headers={"Allow": allow},
    )
    return problem_response(problem, Request(scope))


def _with_common(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    present = {name.lower() for name, _ in headers}
    return headers + [(name, value) for name, value in COMMON_HEADERS if name not in present]
