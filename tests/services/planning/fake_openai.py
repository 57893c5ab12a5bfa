"""A local OpenAI-compatible server for planning's tests: `POST /v1/chat/completions` on loopback,
answering with scripted replies in OpenAI's real wire format (a `chat.completion` object), so the
planning service's calls to `ai` can be exercised without a model.

Each test queues what the next call answers: `reply(content)` puts `content` (any text: valid JSON,
broken JSON...) in the assistant message, `fail(status, body)` answers an error as the ai service
would (problem+json). Every request received is kept in `requests`.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coder.tests.support.oidc_provider import ServerThread


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._script: deque[tuple[int, Any]] = deque()
        self._server = ServerThread(
            Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])
        )

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> FakeOpenAI:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def reply(self, content: str, *, refusal: str | None = None) -> None:
        self._script.append((200, {"content": content, "refusal": refusal}))

    def fail(self, status: int, body: dict[str, Any]) -> None:
        self._script.append((status, body))

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if not self._script:
            return JSONResponse(
                {"error": {"message": "nothing scripted", "type": "server_error"}}, status_code=500
            )
        status, answer = self._script.popleft()
        if status != 200:
            return JSONResponse(answer, status_code=status, media_type="application/problem+json")
        content = answer["content"] if answer["refusal"] is None else None
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": answer["refusal"]},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 50, "completion_tokens": 120, "total_tokens": 170},
            }
        )
