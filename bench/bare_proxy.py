"""bench_ai's second baseline: the least a Python proxy on the platform's stack (uvicorn, Starlette,
aiohttp) does to pass a chat stream on: one route that sends the body to the provider with its key and
streams the answer back. No authentication, routing, budget or record: what is left between it and the
platform is the platform's own work.

A module of its own, importing nothing of the platform's (`python -P -m uvicorn
coder.bench.bare_proxy:app`, with BARE_PROXY_UPSTREAM and BARE_PROXY_KEY set).
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

UPSTREAM = os.environ["BARE_PROXY_UPSTREAM"]  # the provider's chat completions URL
HEADERS = {"authorization": f"Bearer {os.environ['BARE_PROXY_KEY']}", "content-type": "application/json"}


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        app.state.session = session
        yield


async def chat(request: Request) -> Response:
    session: aiohttp.ClientSession = request.app.state.session
    upstream = await session.post(UPSTREAM, data=await request.body(), headers=HEADERS)

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.content.iter_any():
                yield chunk
        finally:
            upstream.release()

    media_type = upstream.headers.get("content-type", "text/event-stream")
    return StreamingResponse(relay(), status_code=upstream.status, media_type=media_type)


app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])], lifespan=lifespan)
