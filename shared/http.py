"""Service-to-service HTTP: one client per target, in-process in `all` mode, over the network otherwise.

Each outgoing request carries the caller's bearer token (so the callee checks the caller's own
permissions), the W3C traceparent of the current span and the request id.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from opentelemetry import propagate
from starlette.types import ASGIApp

from coder.shared import context


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


class ServiceClients:
    def __init__(
        self, urls: Mapping[str, str], local_apps: Mapping[str, ASGIApp], timeout: float = 30.0
    ) -> None:
        self._urls = dict(urls)
        self._local = local_apps
        self._timeout = timeout
        self._clients: dict[str, httpx.AsyncClient] = {}

    def url(self, target: str) -> str:
        return self._urls[target]

    def client(self, target: str) -> httpx.AsyncClient:
        """The client for `target`; paths are the target's own (`/v1/...`), not the gateway's."""
        if target not in self._clients:
            if target in self._local:
                transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app=self._local[target])
                base_url = f"http://{target}.in-process"
            else:
                transport = httpx.AsyncHTTPTransport(retries=0)
                base_url = self._urls[target]
            self._clients[target] = httpx.AsyncClient(
                transport=transport,
                base_url=base_url,
                timeout=self._timeout,
                event_hooks={"request": [_forward_context]},
            )
        return self._clients[target]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
