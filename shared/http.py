"""Service-to-service HTTP: one client per target, in-process in `all` mode, over the network otherwise.

Each outgoing request carries the caller's bearer token (so the callee checks the caller's own
permissions), the W3C traceparent of the current span and the request id. A client opened with
`caller=` carries a workload token instead: the user's token and the calling target's workload secret
traded at the gateway for a short-lived token naming both (docs/architecture.md, "Service-to-service
identity"), kept until shortly before it expires.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Mapping
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx
from httpx._client import USE_CLIENT_DEFAULT, UseClientDefault
from httpx._types import HeaderTypes, QueryParamTypes, RequestContent, RequestExtensions, TimeoutTypes
from opentelemetry import propagate
from starlette.types import ASGIApp, Message

from coder.shared import context
from coder.shared.errors import Problem, Unauthorized

# The gateway's endpoint trading a user's token for a workload token (gateway/routes/workload.py).
WORKLOAD_TOKEN_PATH = "/internal/workload-token"  # noqa: S105 - a path
# A target that acts for a user after the user's request ended (workflow's runs) takes a delegation
# at the first with the user's token, and trades it at the second for the user's access tokens.
DELEGATION_PATH = "/internal/delegations"
DELEGATED_TOKEN_PATH = "/internal/delegated-token"  # noqa: S105 - a path
# The same for work with no user (an event handler): the caller's secret and an organization.
WORKLOAD_ORG_TOKEN_PATH = "/internal/workload-token/org"  # noqa: S105 - a path
# A cached workload token is traded again this long before it expires, so none expires in flight.
WORKLOAD_RENEW_SECONDS = 30.0
WORKLOAD_CACHE_SIZE = 10_000


async def _forward_context(request: httpx.Request) -> None:
    token = context.bearer_token.get()
    if token and "authorization" not in request.headers:
        request.headers["authorization"] = f"Bearer {token}"
    rid = context.request_id.get()
    if rid:
        request.headers.setdefault("x-request-id", rid)
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    for key, value in carrier.items():
        request.headers[key] = value


class _WorkloadAuth(httpx.Auth):
    """Sends a request to `audience` with a workload token of `caller` acting for the current user."""

    def __init__(self, clients: ServiceClients, caller: str, audience: str) -> None:
        self._clients = clients
        self._caller = caller
        self._audience = audience

    async def sign(self, request: httpx.Request) -> None:
        token = await self._clients.workload_token(self._caller, self._audience)
        request.headers["authorization"] = f"Bearer {token}"

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await self.sign(request)
        yield request


class _InProcessTransport(httpx.AsyncBaseTransport):
    """Calls an ASGI app in this process with the request's scope and body, and answers with what it
    sent, read to its end (as httpx's ASGITransport, without its per-request event and async byte
    streams: a target's answer is read whole, so a streamed one arrives once the app has finished)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?", 1)[0],
            "query_string": url.query,
            "server": (url.host, url.port),
            "client": ("127.0.0.1", 123),
            "root_path": "",
        }
        body = request.content if isinstance(request.stream, httpx.ByteStream) else await request.aread()
        status = 500
        headers: list[tuple[bytes, bytes]] = []
        parts: list[bytes] = []
        received = False
        done: asyncio.Future[None] | None = None  # made only if the app waits for the disconnect

        async def receive() -> Message:
            nonlocal received, done
            if not received:
                received = True
                return {"type": "http.request", "body": body, "more_body": False}
            if done is None:
                done = asyncio.get_running_loop().create_future()
            await done
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status, headers = message["status"], message.get("headers", [])
            elif message["type"] == "http.response.body":
                if request.method != "HEAD" and (chunk := message.get("body", b"")):
                    parts.append(chunk)
                if not message.get("more_body", False) and done is not None and not done.done():
                    done.set_result(None)

        try:
            await self.app(scope, receive, send)
        finally:
            if done is not None and not done.done():
                done.set_result(None)
        return httpx.Response(status, headers=headers, content=b"".join(parts), request=request)


class _InProcessClient(httpx.AsyncClient):
    """A client for a target served in this process. Its requests reach the target's whole app as over
    the network (its middleware, the caller's or workload token checked, problem+json answers), but
    `request` (behind get, post, ...) builds and sends a plain one without httpx's per-request layers
    (URL merging and parsing, cookies, the auth flow and redirect loop, logging): they cost more CPU
    than usage's own work on a reservation. Anything else (a form, query parameters, another auth,
    redirects followed) takes httpx's path, over the same transport."""

    def __init__(self, transport: _InProcessTransport, auth: _WorkloadAuth | None, **kwargs: Any) -> None:
        super().__init__(transport=transport, auth=auth, **kwargs)
        self._app = transport
        self._signer = auth
        self._urls: dict[str, httpx.URL] = {}  # path -> the target's URL for it

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            if len(self._urls) >= 1024:
                self._urls.clear()  # paths with ids in them: kept few
            url = self._urls[path] = self._merge_url(path)
        return url

    async def request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        content: RequestContent | None = None,
        data: Any | None = None,
        files: Any | None = None,
        json: Any | None = None,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: Any | None = None,
        auth: Any = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,  # noqa: ASYNC109 - httpx's signature
        extensions: RequestExtensions | None = None,
    ) -> httpx.Response:
        plain = (
            data is None
            and files is None
            and cookies is None
            and params is None
            and auth is USE_CLIENT_DEFAULT
            and follow_redirects is not True
            and not extensions
            and isinstance(url, str)
            and url.startswith("/")
            and "?" not in url
            and "#" not in url
        )
        if not plain:
            return await super().request(
                method,
                url,
                content=content,
                data=data,
                files=files,
                json=json,
                params=params,
                headers=headers,
                cookies=cookies,
                auth=auth,
                follow_redirects=follow_redirects,
                timeout=timeout,
                extensions=extensions,
            )
        assert isinstance(url, str)
        merged = self.headers
        if headers:
            merged = httpx.Headers(merged)
            merged.update(headers)
        request = httpx.Request(method, self._url(url), content=content, json=json, headers=merged)
        if self._signer is not None:  # first, as httpx's auth flow runs before the request hooks
            await self._signer.sign(request)
        for hook in self._event_hooks["request"]:
            await hook(request)
        # No timeout, as over httpx's ASGITransport: the app runs in this task to its end.
        response = await self._app.handle_async_request(request)
        for hook in self._event_hooks["response"]:
            await hook(response)
        return response


def _no_cookies() -> CookieJar:
    """A jar that keeps nothing: one client serves every user's requests, so a cookie a target set
    for one would go with the next user's."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


class ServiceClients:
    def __init__(
        self,
        urls: Mapping[str, str],
        local_apps: Mapping[str, ASGIApp],
        timeout: float = 30.0,
        workload_secrets: Mapping[str, str] | None = None,
    ) -> None:
        self._urls = dict(urls)
        self._local = local_apps
        self._timeout = timeout
        self._clients: dict[tuple[str, str | None], httpx.AsyncClient] = {}
        self._secrets = dict(workload_secrets or {})
        # (caller, audience, user's token) -> (workload token, monotonic time to trade it again).
        self._workload: dict[tuple[str, str, str], tuple[str, float]] = {}

    def url(self, target: str) -> str:
        return self._urls[target]

    def source(self, target: str) -> object:
        """What answers for `target`: its in-process app, or its URL (targets may share one)."""
        return self._local.get(target) or self._urls[target]

    def client(self, target: str, *, caller: str | None = None) -> httpx.AsyncClient:
        """The client for `target`; paths are the target's own (`/v1/...`), not the gateway's.

        With `caller` (the calling target's name), requests carry `caller`'s workload token for the
        current user rather than the user's own token: for the actions `caller`'s descriptor grants."""
        key = (target, caller)
        if key not in self._clients:
            auth = _WorkloadAuth(self, caller, target) if caller is not None else None
            if target in self._local:
                self._clients[key] = _InProcessClient(
                    _InProcessTransport(self._local[target]),
                    auth,
                    base_url=f"http://{target}.in-process",
                    timeout=self._timeout,
                    cookies=_no_cookies(),
                    event_hooks={"request": [_forward_context]},
                )
            else:
                self._clients[key] = httpx.AsyncClient(
                    transport=httpx.AsyncHTTPTransport(retries=0),
                    base_url=self._urls[target],
                    timeout=self._timeout,
                    auth=auth,
                    cookies=_no_cookies(),
                    event_hooks={"request": [_forward_context]},
                )
        return self._clients[key]

    async def workload_token(self, caller: str, audience: str) -> str:
        """`caller`'s workload token for `audience`, acting for the user of the current request (or,
        with no request, for the organization in `context.acting_org`)."""
        user_token = context.bearer_token.get()
        org = context.acting_org.get()
        if not user_token and not org:
            raise Unauthorized("a bearer token is required")
        key = (caller, audience, user_token or f"org:{org}")
        now = time.monotonic()
        cached = self._workload.get(key)
        if cached is not None and now < cached[1]:
            return cached[0]
        secret = self._secrets.get(caller)
        if secret is None:
            raise RuntimeError(f"{caller} has no workload secret in this process's settings")
        body = {"caller": caller, "secret": secret, "audience": audience}
        if user_token:
            # The gateway client forwards the user's token: the gateway checks it as on any request.
            response = await self.client("gateway").post(WORKLOAD_TOKEN_PATH, json=body)
        else:
            response = await self.client("gateway").post(WORKLOAD_ORG_TOKEN_PATH, json={**body, "org": org})
        if response.status_code in (401, 403):
            # The user's token was refused (expired, revoked...): the request fails as the user's would.
            problem = response.json()
            slug = str(problem.get("type", "")).rsplit("/", 1)[-1] or None
            raise Problem(
                problem.get("detail"), status=response.status_code, slug=slug, title=problem.get("title")
            )
        response.raise_for_status()
        answer = response.json()
        token: str = answer["token"]
        if len(self._workload) >= WORKLOAD_CACHE_SIZE:
            self._workload = {k: v for k, v in self._workload.items() if now < v[1]}
        self._workload[key] = (token, now + float(answer["expires_in"]) - WORKLOAD_RENEW_SECONDS)
        return token

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
