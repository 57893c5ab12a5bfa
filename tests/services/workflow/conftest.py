"""The gateway and workflow in one process, on both backends, with the targets the steps call on
loopback: `sideeffects` and `execution` answered by a Recorder (servers.py), `ai` by a stand-in that
takes the run's token as ai would and asks the FakeProvider (OpenAI's wire protocol) with its key."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coder.tests.services.workflow.servers import Recorder
from coder.tests.support.databases import create_database, drop_database
from coder.tests.support.platform import Platform, make_settings, own_vhost, running, wait_until
from coder.tests.support.providers import FakeProvider, serve, stop
from coder.tests.support.tokens import TestSigner

ENGINE_ENV = {"WORKFLOW_POLL_SECONDS": "0.1"}


@dataclass
class AiStandIn:
    provider: FakeProvider
    url: str = ""
    tokens: list[str] | None = None

    def app(self) -> Starlette:
        async def chat(request: Request) -> Response:
            assert self.tokens is not None
            self.tokens.append(request.headers.get("authorization", ""))
            async with httpx.AsyncClient(base_url=self.provider.base_url) as client:
                answer = await client.post(
                    "/v1/chat/completions",
                    content=await request.body(),
                    headers={
                        "authorization": f"Bearer {self.provider.openai_key}",
                        "content-type": "application/json",
                    },
                )
            return Response(answer.content, answer.status_code, media_type="application/json")

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture(scope="session")
def recorder() -> Iterator[Recorder]:
    server = Recorder().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def ai_standin() -> AsyncIterator[AiStandIn]:
    provider = await FakeProvider().start()
    standin = AiStandIn(provider, tokens=[])
    server, task, port = await serve(standin.app())
    standin.url = f"http://127.0.0.1:{port}"
    yield standin
    await stop(server, task)
    await provider.stop()


@pytest.fixture(scope="session", params=["inprocess", "real"])
async def wf(
    request: pytest.FixtureRequest,
    database_url: str,
    signer: TestSigner,
    recorder: Recorder,
    ai_standin: AiStandIn,
) -> AsyncIterator[Platform]:
    overrides: dict[str, object] = {
        "service_urls": {"sideeffects": recorder.url, "execution": recorder.url, "ai": ai_standin.url}
    }
    if request.param == "real":
        overrides["redis_url"] = request.getfixturevalue("redis_server").url
        # Its own virtual host: the session's `platform` consumes workflow's queues too.
        overrides["amqp_url"] = own_vhost(request.getfixturevalue("rabbit_server"), "wf")
    saved = {k: os.environ.get(k) for k in ENGINE_ENV}
    os.environ.update(ENGINE_ENV)
    # A database of its own: the session's `platform` runs workflow's workers too, and they would
    # claim these runs' steps on a platform that has no `sideeffects` target.
    own_database = await create_database(database_url, "wf")
    try:
        settings = make_settings(own_database, signer, **overrides)
        async with running(settings, request.param, targets="gateway,workflow") as platform:
            if platform.runtime.bus is not None:
                await wait_until(platform.runtime.bus.is_ready, what="the event bus to connect")
            yield platform
    finally:
        await drop_database(own_database)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
