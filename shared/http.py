"""Service-to-service HTTP: one client per target, in-process in `all` mode, over the network otherwise.

Each outgoing request carries the caller's bearer token (so the callee checks the caller's own
permissions), the W3C traceparent of the current span and the request id. A client opened with
`caller=` carries a workload token instead: the user's token and the calling target's workload secret
traded at the gateway for a short-lived token naming both (docs/architecture.md, "Service-to-service
identity"), kept until shortly before it expires.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Mapping

import httpx
from opentelemetry import propagate
from starlette.types import ASGIApp

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

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self._clients.workload_token(self._caller, self._audience)
        request.headers["authorization"] = f"Bearer {token}"
        yield request


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
            if target in self._local:
                transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app=self._local[target])
                base_url = f"http://{target}.in-process"
            else:
                transport = httpx.AsyncHTTPTransport(retries=0)
                base_url = self._urls[target]
            self._clients[key] = httpx.AsyncClient(
                transport=transport,
                base_url=base_url,
                timeout=self._timeout,
                auth=_WorkloadAuth(self, caller, target) if caller is not None else None,
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
