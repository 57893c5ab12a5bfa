"""The HTTP rules every app answers by (shared/protocol.py), on the gateway and on each target: one
Authorization header, OPTIONS and unsupported methods with a complete Allow, the common headers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from starlette.routing import BaseRoute

from coder.runner import registry
from coder.shared import protocol
from coder.shared.protocol import route_patterns
from coder.tests.support.platform import Platform
from coder.tests.support.tokens import TestSigner

PROBLEM = "application/problem+json"
TARGETS = sorted(name for name in registry.PACKAGES if name != "gateway")


@pytest.fixture(params=TARGETS)
async def target(request: pytest.FixtureRequest, platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    """A client of one target's own app, as its process serves it (no gateway in front)."""
    app = platform.runtime.local_apps[request.param]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://target") as client:
        yield client


def assert_common_headers(response: httpx.Response, cache: str = "no-store") -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers.get_list("cache-control") == [cache]
    assert "server" not in response.headers


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, object] = response.json()
    assert str(body["type"]).endswith("/" + slug), body
    return body


async def test_common_headers_on_the_gateway(platform: Platform, signer: TestSigner) -> None:
    for path in ("/healthz", "/auth/providers", "/api/users/me", "/nowhere", "/api/secrets/healthz"):
        response = await platform.client.get(path)
        assert_common_headers(response)
    # A secret read through the gateway: one Cache-Control, no-store.
    read = await platform.client.get("/api/secrets/v1/secrets/a/b", headers=signer.headers("org-proto"))
    assert read.status_code == 404, read.text
    assert_common_headers(read)
    # A route that says how long its answer may be kept keeps saying it.
    jwks = await platform.client.get("/.well-known/jwks.json")
    assert_common_headers(jwks, cache="public, max-age=60")


async def test_common_headers_on_each_target(target: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/openapi.json", "/nowhere"):
        assert_common_headers(await target.get(path))


async def test_two_authorization_headers_are_refused(platform: Platform, signer: TestSigner) -> None:
    token = signer.headers("org-proto")["Authorization"]
    twice = [("authorization", token), ("authorization", "Bearer someone-elses")]
    for path in ("/api/users/me", "/api/secrets/v1/secrets/a/b", "/auth/tokens"):
        body = assert_problem(await platform.client.get(path, headers=twice), 400, "duplicate-authorization")
        assert body["errors"] == [{"field": "header.authorization", "message": "sent more than once"}]
    one = await platform.client.get("/api/secrets/v1/secrets/a/b", headers=[twice[0]])
    assert one.status_code == 404, one.text


async def test_two_authorization_headers_are_refused_by_each_target(
    target: httpx.AsyncClient, signer: TestSigner
) -> None:
    twice = [("authorization", signer.headers("org-proto")["Authorization"])] * 2
    response = await target.get("/openapi.json", headers=twice)
    assert_problem(response, 400, "duplicate-authorization")
    assert_common_headers(response)


async def test_options_and_unsupported_methods_on_the_gateway(platform: Platform, signer: TestSigner) -> None:
    options = await platform.client.options("/api/users/me")
    assert options.status_code == 204, options.text
    assert options.headers["allow"] == "GET, OPTIONS, PATCH"
    trace = await platform.client.request("TRACE", "/api/users/me")
    assert_problem(trace, 405, "method-not-allowed")
    assert trace.headers["allow"] == "GET, OPTIONS, PATCH"
    delete = await platform.client.delete("/api/users/me")
    assert_problem(delete, 405, "method-not-allowed")
    login = await platform.client.options("/auth/login")
    assert login.status_code == 204 and login.headers["allow"] == "OPTIONS, POST"
    # Proxied: the target answers for its own routes.
    secret = await platform.client.options("/api/secrets/v1/secrets/a/b")
    assert secret.status_code == 204, secret.text
    assert secret.headers["allow"] == "DELETE, GET, OPTIONS, PUT"
    trace = await platform.client.request(
        "TRACE", "/api/secrets/v1/secrets/a/b", headers=signer.headers("org-proto")
    )
    assert_problem(trace, 405, "method-not-allowed")
    assert trace.headers["allow"] == "DELETE, GET, OPTIONS, PUT"
    # A CORS preflight is still the CORS middleware's.
    preflight = await platform.client.options(
        "/api/users/me",
        headers={"Origin": "http://localhost:5173", "Access-Control-Request-Method": "PATCH"},
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:5173"


async def test_options_and_unsupported_methods_on_each_target(target: httpx.AsyncClient) -> None:
    options = await target.options("/healthz")
    assert options.status_code == 204 and options.headers["allow"] == "GET, OPTIONS"
    trace = await target.request("TRACE", "/healthz")
    assert_problem(trace, 405, "method-not-allowed")
    assert trace.headers["allow"] == "GET, OPTIONS"


async def test_a_probe_reads_only_the_apps_own_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    """FastAPI builds an included router's routes at their first request: a probe must not wait for
    every route of every target of the process (the readiness of `run --target all`)."""
    read: list[Sequence[BaseRoute]] = []

    def counted(routes: Sequence[BaseRoute]) -> list[protocol._Pattern]:
        read.append(routes)
        return route_patterns(routes)

    monkeypatch.setattr(protocol, "route_patterns", counted)
    router = APIRouter(prefix="/v1")

    @router.get("/items")
    async def items() -> list[str]:
        return []

    app = FastAPI()

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    app.include_router(router)
    app.add_middleware(protocol.ProtocolMiddleware)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        assert (await client.get("/readyz")).status_code == 200
        assert read == []
        trace = await client.request("TRACE", "/readyz")
        assert_problem(trace, 405, "method-not-allowed")
        assert trace.headers["allow"] == "GET, OPTIONS"
        assert (await client.get("/v1/items")).json() == []
        refused = await client.delete("/v1/items")
        assert_problem(refused, 405, "method-not-allowed")
        assert refused.headers["allow"] == "GET, OPTIONS"
    assert len(read) == 1
