"""The proxy against real upstream servers on loopback: streaming both ways, WebSocket pass-through,
retries, circuit breaker, timeouts, size and rate limits, CORS, trace context and the overhead header.

Streaming is checked over real HTTP (the platform served by uvicorn on a free port), since an
in-process ASGI client collects a whole response before handing it over."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from coder.gateway import sessions as accounts
from coder.gateway.edge import Gateway as Gateway_
from coder.gateway.tokens import digest
from coder.shared.devservers import RedisServer, free_port
from coder.tests.gateway.conftest import Gateway, gateway_env, gateway_platform
from coder.tests.gateway.factories import bearer, owner
from coder.tests.gateway.test_identity import assert_problem
from coder.tests.gateway.upstream import FlakyServer
from coder.tests.support.oidc_provider import OidcProvider
from coder.tests.support.platform import Platform, sample


@contextlib.asynccontextmanager
async def served(platform: Platform) -> AsyncIterator[str]:
    """The running platform app behind a real uvicorn server in this event loop."""
    port = free_port()
    config = uvicorn.Config(
        platform.app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the gateway server did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="session")
async def gateway_url(gw: Gateway) -> AsyncIterator[str]:
    async with served(gw.platform) as address:
        yield address


async def test_coarse_checks_before_forwarding(gw: Gateway) -> None:
    assert_problem(await gw.client.get("/api/echo/echo"), 401)
    assert_problem(await gw.client.get("/api/echo/echo", headers=bearer("garbage")), 401)
    public = await gw.client.get("/api/echo/healthz")
    assert public.status_code == 200 and public.json() == {"status": "ok"}
    assert (await gw.client.get("/api/echo/openapi.json")).status_code == 200
    assert_problem(
        await gw.client.get("/api/gateway/anything", headers=gw.founder.headers), 404, "unknown-target"
    )


async def test_forwards_request_id_traceparent_and_the_verified_token(gw: Gateway) -> None:
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    response = await gw.client.post(
        "/api/echo/echo?x=1",
        content=b"hello",
        headers={
            **gw.founder.headers,
            "traceparent": incoming,
            "x-request-id": "req-123",
            "x-custom": "kept",
        },
    )
    assert response.status_code == 200, response.text
    seen = response.json()
    assert (
        seen["method"] == "POST"
        and seen["path"] == "/echo"
        and seen["query"] == "x=1"
        and seen["body"] == "hello"
    )
    assert seen["headers"]["x-request-id"] == "req-123" == response.headers["x-request-id"]
    trace = seen["headers"]["traceparent"].split("-")
    assert trace[1] == "0af7651916cd43dd8448eb211c80319c" and trace[2] != "b7ad6b7169203331"
    assert seen["headers"]["authorization"] == gw.founder.headers["Authorization"]
    assert seen["headers"]["x-custom"] == "kept" and seen["headers"]["x-forwarded-for"]
    assert response.headers["x-upstream"] == "echo"
    assert response.headers.get_list("x-request-id") == ["req-123"]
    timing = response.headers["server-timing"]
    assert re.fullmatch(r"gateway;dur=\d+\.\d{2}", timing), timing
    assert response.headers["ratelimit-limit"] and response.headers["ratelimit-remaining"]

    pat = (await _personal_token(gw, "cli"))["token"]
    through_pat = (await gw.client.get("/api/echo/echo", headers=bearer(pat))).json()
    forwarded = through_pat["headers"]["authorization"]
    assert forwarded.startswith("Bearer ey") and pat not in forwarded  # targets only ever see signed JWTs


async def _personal_token(gw: Gateway, name: str) -> dict[str, Any]:
    """A personal token of the founder's, with every scope, as `/auth/tokens` answers it."""
    answer = await gw.client.post(
        "/auth/tokens",
        json={"name": name, "scopes": ["*"], "expires_in_days": 1},
        headers=gw.founder.headers,
    )
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


async def test_a_known_personal_token_costs_one_redis_round_trip(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once exchanged, a personal token's revocation keys ride along the rate limits' script: one
    round trip to Redis per proxied request, and a revocation still refuses the very next one."""
    created = await _personal_token(gw, "loop")
    pat = created["token"]
    assert (await gw.client.get("/api/echo/echo", headers=bearer(pat))).status_code == 200  # exchanged
    cache = gw.platform.runtime.cache
    assert cache is not None
    commands: list[tuple[str, list[str]]] = []
    execute: Any = cache.execute_command  # untyped in redis-py

    async def counted(*args: object, **options: object) -> object:
        keys = [a.decode() if isinstance(a, bytes) else str(a) for a in args[1:]]
        if any(k.startswith("gateway:") for k in keys):  # the gateway's, not a background task's
            commands.append((str(args[0]).upper(), keys))
        return await execute(*args, **options)

    monkeypatch.setattr(cache, "execute_command", counted)
    assert (await gw.client.get("/api/echo/echo", headers=bearer(pat))).status_code == 200
    assert [name for name, _ in commands] == ["EVALSHA"], commands
    stale = f"gateway:stale:{gw.founder.org_id}:{gw.founder.user_id}"
    assert stale in commands[0][1] and f"gateway:revoked:pat:{created['id']}" in commands[0][1]

    # Revoked by another replica (this one's exchange stays cached): refused at once all the same.
    await cache.set(f"gateway:revoked:pat:{created['id']}", "1", ex=60)
    assert_problem(await gw.client.get("/api/echo/echo", headers=bearer(pat)), 401, "token-revoked")


async def test_a_burst_on_a_personal_token_exchanges_it_once(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests that find no exchange cached wait for the one under way; one forgotten meanwhile (the
    token revoked, its owner's role changed) is not kept."""
    exchanges: list[str] = []
    started, release = asyncio.Event(), asyncio.Event()
    release.set()
    use = accounts.use_personal_token

    async def counted(session: Any, token: str) -> Any:
        exchanges.append(token)
        started.set()
        await release.wait()
        return await use(session, token)

    monkeypatch.setattr(accounts, "use_personal_token", counted)
    pat = (await _personal_token(gw, "burst"))["token"]
    burst = await asyncio.gather(*(gw.client.get("/api/echo/echo", headers=bearer(pat)) for _ in range(8)))
    assert [r.status_code for r in burst] == [200] * 8 and exchanges == [pat]
    # A refusal too, each request its own problem.
    unknown = "cdr_pat_" + "x" * 40
    refused = await asyncio.gather(
        *(gw.client.get("/api/echo/echo", headers=bearer(unknown)) for _ in range(4))
    )
    assert {assert_problem(r, 401, "invalid-personal-token")["status"] for r in refused} == {401}
    assert exchanges.count(unknown) == 1

    gateway: Gateway_ = gw.platform.runtime.local_apps["gateway"].state.gateway  # type: ignore[attr-defined]
    gateway.forget_personal(digest(pat))
    started.clear()
    release.clear()
    first = asyncio.create_task(gw.client.get("/api/echo/echo", headers=bearer(pat)))
    await started.wait()
    gateway.forget_personal(digest(pat))  # while that exchange is under way
    release.set()
    assert (await first).status_code == 200
    assert (await gw.client.get("/api/echo/echo", headers=bearer(pat))).status_code == 200
    assert exchanges.count(pat) == 3  # the forgotten exchange served its request, and was not kept


async def test_server_sent_events_stream_unbuffered(gw: Gateway, gateway_url: str) -> None:
    gw.upstream.release.clear()
    async with (
        httpx.AsyncClient(base_url=f"http://{gateway_url}", timeout=10) as client,
        client.stream("GET", "/api/echo/sse", headers=gw.founder.headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        # The upstream holds its second event until released: the first must already be here.
        assert await asyncio.wait_for(anext(lines), timeout=5) == "data: first"
        gw.upstream.release.set()
        rest = [line async for line in lines if line]
        assert rest == ["data: second"]


async def test_chunked_upload_streams_to_the_target(gw: Gateway, gateway_url: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * 1000
            await asyncio.sleep(0.05)

    async with httpx.AsyncClient(base_url=f"http://{gateway_url}", timeout=10) as client:
        response = await client.post("/api/echo/upload", content=chunks(), headers=gw.founder.headers)
    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == 5000 and response.json()["chunks"] > 1


async def test_body_size_limit(gw: Gateway, gateway_url: str) -> None:
    big = b"x" * (256 * 1024 + 1)
    declared = await gw.client.post("/api/echo/echo", content=big, headers=gw.founder.headers)
    assert_problem(declared, 413, "payload-too-large")
    local = await gw.client.put("/api/secrets/v1/secrets/big", content=big, headers=gw.founder.headers)
    assert_problem(local, 413, "payload-too-large")

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"y" * 16384

    async with httpx.AsyncClient(base_url=f"http://{gateway_url}", timeout=10) as client:
        streamed = await client.post("/api/echo/upload", content=endless(), headers=gw.founder.headers)
    assert_problem(streamed, 413, "payload-too-large")


async def test_websocket_pass_through(gw: Gateway, gateway_url: str) -> None:
    url = f"ws://{gateway_url}/api/echo/ws"
    async with connect(
        url, additional_headers=gw.founder.headers, subprotocols=[Subprotocol("coder.v1")]
    ) as ws:
        assert ws.subprotocol == "coder.v1"
        hello = json.loads(await ws.recv())
        assert hello["authorization"] == gw.founder.headers["Authorization"] and hello["request_id"]
        await ws.send("ping")
        assert json.loads(await ws.recv()) == {"echo": "ping"}
        await ws.send(b"\x01\x02\x03")
        assert await ws.recv() == b"\x03\x02\x01"
        await ws.send("close-4001")
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url):
            pass
    assert refused.value.response.status_code == 403


async def with_target(gw: Gateway, name: str, url: str):
    gw.platform.runtime.service_urls[name] = url
    return name


async def test_idempotent_requests_are_retried_others_are_not(gw: Gateway) -> None:
    flaky = await FlakyServer(drop=2).start()
    try:
        await with_target(gw, "flaky-get", flaky.url)
        response = await gw.client.get("/api/flaky-get/thing", headers=gw.founder.headers)
        assert response.status_code == 200 and response.text == "ok"
        assert flaky.connections == 3 and flaky.requests == ["GET"]
    finally:
        await flaky.stop()
    flaky = await FlakyServer(drop=1).start()
    try:
        await with_target(gw, "flaky-post", flaky.url)
        response = await gw.client.post("/api/flaky-post/thing", content=b"once", headers=gw.founder.headers)
        assert_problem(response, 502, "bad-gateway")
        assert flaky.connections == 1 and flaky.requests == []
    finally:
        await flaky.stop()


async def test_circuit_breaker_opens_and_recovers(gw: Gateway) -> None:
    port = free_port()
    name = await with_target(gw, f"down-{port}", f"http://127.0.0.1:{port}")
    proxy = gw.platform.app.state.proxy
    now = [0.0]
    proxy.breaker(name).clock = lambda: now[0]  # time passes only when the test says so
    first = await gw.client.get(f"/api/{name}/x", headers=gw.founder.headers)
    assert_problem(first, 502, "bad-gateway")  # three refused attempts: the breaker opens
    fast = await gw.client.get(f"/api/{name}/x", headers=gw.founder.headers)
    assert_problem(fast, 503, "circuit-open")
    assert int(fast.headers["retry-after"]) >= 1
    assert await sample(gw.platform, "gateway_circuit_state", target=name) == 2  # open
    server = await FlakyServer(drop=0, port=port).start()
    try:
        now[0] += proxy.breaker(name).reset_seconds  # the reset period is over: one trial call may go
        assert proxy.breaker(name).state.value == "half-open"
        assert await sample(gw.platform, "gateway_circuit_state", target=name) == 1
        back = await gw.client.get(f"/api/{name}/x", headers=gw.founder.headers)
        assert back.status_code == 200
        assert proxy.breaker(name).state.value == "closed"
        assert await sample(gw.platform, "gateway_circuit_state", target=name) == 0
    finally:
        await server.stop()


async def test_per_target_timeouts(gw: Gateway) -> None:
    slow = await gw.client.get("/api/slowpoke/slow", params={"seconds": "2"}, headers=gw.founder.headers)
    assert_problem(slow, 504, "gateway-timeout")
    patient = await gw.client.get("/api/echo/slow", params={"seconds": "0.5"}, headers=gw.founder.headers)
    assert patient.status_code == 200


async def test_cors_for_the_ide(gw: Gateway) -> None:
    preflight = await gw.client.options(
        "/api/echo/echo",
        headers={
            "Origin": "http://localhost:5173",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "PUT" in preflight.headers["access-control-allow-methods"]
    simple = await gw.client.get(
        "/api/echo/echo", headers={**gw.founder.headers, "Origin": "vscode-webview://abc123"}
    )
    assert simple.headers["access-control-allow-origin"] == "vscode-webview://abc123"
    assert "server-timing" in simple.headers["access-control-expose-headers"]
    denied = await gw.client.get(
        "/api/echo/echo", headers={**gw.founder.headers, "Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in denied.headers


@pytest.mark.parametrize("backend", ["inprocess", "real"])
async def test_rate_limits_per_token_and_per_ip(
    request: pytest.FixtureRequest, database_url: str, oidc_provider: OidcProvider, upstream, backend: str
) -> None:
    env = gateway_env(oidc_provider, GATEWAY_RATE_LIMIT_PER_TOKEN="3", GATEWAY_RATE_LIMIT_PER_IP="6")
    redis = {"redis_url": request.getfixturevalue("redis_server").url} if backend == "real" else {}
    async with gateway_platform(database_url, env, backend, **redis) as platform:
        upstream.register(platform.runtime)
        transport = httpx.ASGITransport(app=platform.app, client=("192.0.2.10", 1000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            boss = await owner(client)
            refusals = {
                k: await sample(platform, "gateway_rate_limit_refusals_total", limit=k)
                for k in ("ip", "token")
            }
            statuses = [
                (await client.get("/api/echo/echo", headers=boss.headers)).status_code for _ in range(3)
            ]
            assert statuses == [200, 200, 200]
            limited = await client.get("/api/echo/echo", headers=boss.headers)
            problem = assert_problem(limited, 429, "rate-limited")
            assert int(limited.headers["retry-after"]) >= 1 and limited.headers["ratelimit-remaining"] == "0"
            assert problem["detail"]
            # A refused request costs nothing. Another token from the same address still has room,
            # until the address's own limit (6: sign-up, 3 calls, refresh, 1 call) runs out.
            refreshed = await client.post("/auth/refresh", json={"refresh_token": boss.refresh_token})
            assert refreshed.status_code == 200, refreshed.text
            fresh = bearer(refreshed.json()["access_token"])
            assert (await client.get("/api/echo/echo", headers=fresh)).status_code == 200
            assert_problem(await client.get("/api/echo/echo", headers=fresh), 429, "rate-limited")
            # Counted by the limit that said no: the first token's, then the address's.
            assert (
                await sample(platform, "gateway_rate_limit_refusals_total", limit="token")
                == refusals["token"] + 1
            )
            assert (
                await sample(platform, "gateway_rate_limit_refusals_total", limit="ip") == refusals["ip"] + 1
            )
        transport = httpx.ASGITransport(app=platform.app, client=("192.0.2.11", 1000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
            assert (await other.get("/api/echo/healthz")).status_code == 200
            assert (await platform.client.get("/healthz")).status_code == 200  # probes are never limited


@pytest.mark.parametrize(("fail_open", "expected"), [("true", 200), ("false", 503)])
async def test_redis_outage_fails_open_or_closed(
    database_url: str, oidc_provider: OidcProvider, upstream, fail_open: str, expected: int
) -> None:
    redis = RedisServer().start()
    try:
        env = gateway_env(oidc_provider, GATEWAY_FAIL_OPEN=fail_open)
        async with gateway_platform(database_url, env, redis_url=redis.url) as platform:
            upstream.register(platform.runtime)
            assert (await platform.client.get("/api/echo/healthz")).status_code == 200
            redis.stop()
            response = await platform.client.get("/api/echo/healthz")
            assert response.status_code == expected, response.text
            if expected == 503:
                assert_problem(response, 503, "rate-limiter-unavailable")
    finally:
        redis.stop()
