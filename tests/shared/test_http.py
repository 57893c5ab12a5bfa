"""Service-to-service clients: a target served in this process is called through its whole app, with the
same request as over the network (the caller's or workload token, request id, body), on a path that
skips httpx's per-request layers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from coder.shared import context
from coder.shared.errors import InvalidField, install_problem_handlers
from coder.shared.http import ServiceClients
from coder.tests.support.providers import serve, stop


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.api_route("/v1/echo", methods=["GET", "POST", "DELETE"])
    async def echo(request: Request) -> dict[str, Any]:
        return {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": dict(request.headers),
            "body": (await request.body()).decode(),
        }

    @app.post("/v1/refused")
    async def refused() -> None:
        raise InvalidField("amount", "must be positive")

    @app.get("/v1/stream")
    async def stream() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for n in range(3):
                yield f"part {n}\n".encode()

        return StreamingResponse(parts(), media_type="text/plain")

    @app.post("/v1/cookie")
    async def cookie() -> Response:
        answer = Response(status_code=204)
        answer.set_cookie("session", "of-the-first-user")
        return answer

    @app.get("/v1/broken")
    async def broken() -> None:
        raise RuntimeError("the app failed")

    return app


async def _workload_token(caller: str, audience: str) -> str:
    return f"workload:{caller}:{audience}:{context.bearer_token.get()}"


@pytest.fixture
def clients() -> ServiceClients:
    clients = ServiceClients({"usage": "http://usage.invalid"}, {"usage": _app()})
    clients.workload_token = _workload_token  # type: ignore[method-assign]
    return clients


async def test_an_in_process_call_carries_what_a_network_call_does(clients: ServiceClients) -> None:
    token = context.bearer_token.set("user-token")
    rid = context.request_id.set("req-1")
    try:
        plain = await clients.client("usage").post("/v1/echo", json={"amount": 1.5}, headers={"x-a": "b"})
        signed = await clients.client("usage", caller="ai").delete("/v1/echo")
    finally:
        context.bearer_token.reset(token)
        context.request_id.reset(rid)
    assert plain.status_code == 200
    seen = plain.json()
    assert seen["method"] == "POST"
    assert seen["path"] == "/v1/echo"
    assert seen["body"] == '{"amount":1.5}'
    headers = seen["headers"]
    assert headers["authorization"] == "Bearer user-token"
    assert headers["x-request-id"] == "req-1"
    assert headers["x-a"] == "b"
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(seen["body"]))
    assert headers["host"] == "usage.in-process"
    assert plain.request.url == "http://usage.in-process/v1/echo"
    plain.raise_for_status()  # the answer knows its request
    # The workload token replaces the user's, as over the network.
    assert signed.json()["method"] == "DELETE"
    assert signed.json()["headers"]["authorization"] == "Bearer workload:ai:usage:user-token"


async def test_an_in_process_call_skips_httpx_layers(
    clients: ServiceClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def not_here(*args: Any, **kwargs: Any) -> httpx.Response:
        raise AssertionError("httpx's send path was taken")

    monkeypatch.setattr(httpx.AsyncClient, "send", not_here)
    token = context.bearer_token.set("user-token")
    try:
        answer = await clients.client("usage", caller="ai").post("/v1/echo", json={})
        assert answer.json()["headers"]["authorization"] == "Bearer workload:ai:usage:user-token"
        with pytest.raises(AssertionError, match="httpx's send path"):
            await clients.client("usage").get("/v1/echo", params={"a": "1"})
    finally:
        context.bearer_token.reset(token)


async def test_what_the_fast_path_leaves_to_httpx_still_works(clients: ServiceClients) -> None:
    client = clients.client("usage")
    query = await client.get("/v1/echo", params={"a": "1 2"})
    assert query.json()["query"] == "a=1+2"
    assert (await client.get("/v1/echo?b=2")).json()["query"] == "b=2"
    async with client.stream("GET", "/v1/stream") as streamed:
        assert [line async for line in streamed.aiter_lines()] == ["part 0", "part 1", "part 2"]


async def test_an_in_process_answer_is_whole(clients: ServiceClients) -> None:
    client = clients.client("usage")
    streamed = await client.get("/v1/stream")  # the app waits for a disconnect until it has answered
    assert streamed.text == "part 0\npart 1\npart 2\n"
    refused = await client.post("/v1/refused")
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["errors"][0]["field"] == "amount"
    with pytest.raises(httpx.HTTPStatusError):
        refused.raise_for_status()
    with pytest.raises(RuntimeError, match="the app failed"):
        await client.get("/v1/broken")


async def test_a_cookie_a_target_sets_goes_with_no_later_request(clients: ServiceClients) -> None:
    """One client serves every user's calls: a cookie set in answer to one must not go with the next."""
    server, task, port = await serve(_app())
    try:
        network = ServiceClients({"usage": f"http://127.0.0.1:{port}"}, {})
        for client in (clients.client("usage"), network.client("usage")):
            assert (await client.post("/v1/cookie")).status_code == 204
            for sent in (await client.get("/v1/echo"), await client.get("/v1/echo", params={"q": "1"})):
                assert "cookie" not in sent.json()["headers"]
        await network.close()
    finally:
        await stop(server, task)
