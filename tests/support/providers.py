"""A local model provider speaking OpenAI's and Anthropic's real wire protocols, on loopback.

One server answers both APIs, so a test points an `openai`, an `anthropic` and an `openai_compatible`
provider at it:
- OpenAI: `POST /v1/chat/completions` (JSON, or SSE `data:` chunks ending `data: [DONE]`, with a last
  usage chunk whose `choices` is empty when `stream_options.include_usage`), `POST /v1/completions`
  (`prompt` + `suffix` for fill-in-the-middle), `GET /v1/models`, `POST /v1/embeddings`;
- Anthropic: `POST /v1/messages` (JSON, or SSE `event:`/`data:` pairs message_start,
  content_block_start, ping, content_block_delta..., content_block_stop, message_delta (stop_reason,
  usage.output_tokens), message_stop).

Scriptable per test: `script(Step(...), ...)` makes the next requests fail (a status and Retry-After),
cut their stream after some chunks, or send tokens slowly; anything unscripted answers normally.
Every request is recorded, and streams the client abandoned are counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

DEFAULT_REPLY = "Hello from the fake provider, one token at a time."


@dataclass(frozen=True)
class Step:
    """How the provider answers one request."""

    status: int = 200
    retry_after: float | None = None  # sent as Retry-After (seconds) with an error status
    cut_after: int | None = None  # stream: drop the connection after this many content chunks
    token_delay: float = 0.0  # stream: seconds between content chunks
    text: str | None = None  # the reply; default DEFAULT_REPLY
    usage: bool = True  # whether the provider reports usage at all


@dataclass
class Seen:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class FakeProvider:
    """The server's state: its keys, its script, and what it saw."""

    openai_key: str = field(default_factory=lambda: f"sk-fake-{uuid.uuid4().hex}")
    anthropic_key: str = field(default_factory=lambda: f"sk-ant-fake-{uuid.uuid4().hex}")
    models: tuple[str, ...] = ("gpt-fake", "gpt-fake-mini", "claude-fake", "codestral-fake")
    requests: list[Seen] = field(default_factory=list)
    record: bool = True  # keep every request (a benchmark's provider does not)
    abandoned: int = 0  # streams whose client went away before the end
    down: bool = False  # every request answers 503 (a health check sees an outage)
    default: Step = field(default_factory=Step)  # the answer when nothing is scripted
    _script: deque[Step] = field(default_factory=deque)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *steps: Step) -> None:
        self._script.extend(steps)

    def reset(self) -> None:
        self._script.clear()
        self.requests.clear()
        self.abandoned = 0
        self.down = False

    def seen(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]

    # --- lifecycle ---

    async def start(self) -> FakeProvider:
        self._server, self._task, self.port = await serve(self.app())
        return self

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            await stop(self._server, self._task)

    # --- the app ---

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/completions", self._completions, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/messages", self._messages, methods=["POST"]),
            ]
        )

    async def _begin(self, request: Request, anthropic: bool) -> tuple[dict[str, Any], Step] | Response:
        body: dict[str, Any] = await request.json() if request.method == "POST" else {}
        if self.record:
            self.requests.append(Seen(request.url.path, body, dict(request.headers)))
        if self.down:
            return _openai_error(503, "server_error", "the provider is down")
        if anthropic:
            # Anthropic takes its key as `x-api-key`; its newer SDKs send `Authorization: Bearer`.
            bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
            if self.anthropic_key not in (request.headers.get("x-api-key"), bearer):
                return _anthropic_error(401, "authentication_error", "invalid x-api-key")
            if not request.headers.get("anthropic-version"):
                return _anthropic_error(400, "invalid_request_error", "anthropic-version header is required")
        elif request.headers.get("authorization") != f"Bearer {self.openai_key}":
            return _openai_error(401, "invalid_api_key", "Incorrect API key provided")
        step = self._script.popleft() if self._script else self.default
        if step.status != 200:
            headers = {"retry-after": f"{step.retry_after:g}"} if step.retry_after is not None else {}
            if anthropic:
                kind = "rate_limit_error" if step.status == 429 else "overloaded_error"
                return _anthropic_error(step.status, kind, "scripted failure", headers)
            code = "rate_limit_exceeded" if step.status == 429 else "server_error"
            return _openai_error(step.status, code, "scripted failure", headers)
        model = body.get("model")
        if request.method == "POST" and model not in self.models:
            if anthropic:
                return _anthropic_error(404, "not_found_error", f"model: {model}")
            return _openai_error(404, "model_not_found", f"The model `{model}` does not exist")
        return body, step

    async def _models(self, request: Request) -> Response:
        began = await self._begin(request, anthropic="anthropic-version" in request.headers)
        if isinstance(began, Response):
            return began
        now = int(time.time())
        data = [{"id": m, "object": "model", "created": now, "owned_by": "fake"} for m in self.models]
        return JSONResponse({"object": "list", "data": data})

    async def _embeddings(self, request: Request) -> Response:
        began = await self._begin(request, anthropic=False)
        if isinstance(began, Response):
            return began
        body, _ = began
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(str(text))), 0.5, -0.5]}
            for i, text in enumerate(inputs)
        ]
        tokens = sum(_count(str(text)) for text in inputs)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _chat(self, request: Request) -> Response:
        began = await self._begin(request, anthropic=False)
        if isinstance(began, Response):
            return began
        body, step = began
        prompt_tokens = sum(_count(_text(m.get("content"))) for m in body.get("messages", []))
        return self._openai_answer(body, step, prompt_tokens, chat=True)

    async def _completions(self, request: Request) -> Response:
        began = await self._begin(request, anthropic=False)
        if isinstance(began, Response):
            return began
        body, step = began
        prompt_tokens = _count(str(body.get("prompt", ""))) + _count(str(body.get("suffix") or ""))
        if step.text is None and body.get("suffix"):
            # A fill-in-the-middle answer that shows it saw both sides.
            step = Step(**{**step.__dict__, "text": f"<fim {len(body['prompt'])}|{len(body['suffix'])}>"})
        return self._openai_answer(body, step, prompt_tokens, chat=False)

    def _openai_answer(self, body: dict[str, Any], step: Step, prompt_tokens: int, *, chat: bool) -> Response:
        pieces = _tokens(step.text or DEFAULT_REPLY)
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        finish = "stop"
        if isinstance(limit, int) and limit < len(pieces):
            pieces, finish = pieces[:limit], "length"
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        model = body["model"]
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        }
        tool_calls = None
        if chat and body.get("tools") and body.get("tool_choice") != "none":
            tool = body["tools"][0]["function"]["name"]
            tool_calls = [
                {
                    "id": "call_" + uuid.uuid4().hex[:12],
                    "type": "function",
                    "function": {"name": tool, "arguments": json.dumps({"q": "fake"})},
                }
            ]
            finish = "tool_calls"
        if not body.get("stream"):
            if chat:
                message: dict[str, Any] = {
                    "role": "assistant",
                    "content": None if tool_calls else "".join(pieces),
                }
                if tool_calls:
                    message["tool_calls"] = tool_calls
                choice: dict[str, Any] = {
                    "index": 0,
                    "message": message,
                    "finish_reason": finish,
                    "logprobs": None,
                }
            else:
                choice = {"index": 0, "text": "".join(pieces), "finish_reason": finish, "logprobs": None}
            answer = {
                "id": ident,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": model,
                "choices": [choice],
                "system_fingerprint": "fp_fake",
            }
            if step.usage:
                answer["usage"] = usage
            return JSONResponse(answer)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage")) and step.usage

        def chunk(choices: list[dict[str, Any]], with_usage: dict[str, Any] | None = None) -> bytes:
            data: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": choices,
            }
            if include_usage:
                data["usage"] = with_usage
            return f"data: {json.dumps(data)}\n\n".encode()

        async def stream() -> AsyncIterator[bytes]:
            try:
                if chat:
                    yield chunk(
                        [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
                    )
                for n, piece in enumerate(pieces):
                    if step.cut_after is not None and n >= step.cut_after:
                        raise _Cut
                    if step.token_delay:
                        await asyncio.sleep(step.token_delay)
                    if chat:
                        yield chunk([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
                    else:
                        yield chunk([{"index": 0, "text": piece, "finish_reason": None, "logprobs": None}])
                if chat and tool_calls:
                    calls = [{"index": 0, **tool_calls[0]}]
                    yield chunk([{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": None}])
                end = {"index": 0, "finish_reason": finish}
                yield chunk([{**end, "delta": {}} if chat else {**end, "text": "", "logprobs": None}])
                if include_usage:
                    yield chunk([], usage)
                yield b"data: [DONE]\n\n"
            except (asyncio.CancelledError, GeneratorExit):
                self.abandoned += 1
                raise

        return _Streaming(stream(), media_type="text/event-stream")

    async def _messages(self, request: Request) -> Response:
        began = await self._begin(request, anthropic=True)
        if isinstance(began, Response):
            return began
        body, step = began
        prompt = _count(_text(body.get("system"))) + sum(
            _count(_text(m.get("content"))) for m in body.get("messages", [])
        )
        pieces = _tokens(step.text or DEFAULT_REPLY)
        stop_reason = "end_turn"
        if body["max_tokens"] < len(pieces):
            pieces, stop_reason = pieces[: body["max_tokens"]], "max_tokens"
        ident = "msg_" + uuid.uuid4().hex[:24]
        model = body["model"]
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": ident,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": "".join(pieces)}],
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": {"input_tokens": prompt, "output_tokens": len(pieces)},
                }
            )

        def event(kind: str, data: dict[str, Any]) -> bytes:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

        async def stream() -> AsyncIterator[bytes]:
            try:
                start = {
                    "id": ident,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": prompt, "output_tokens": 1},
                }
                yield event("message_start", {"message": start})
                yield event(
                    "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
                )
                yield event("ping", {})
                for n, piece in enumerate(pieces):
                    if step.cut_after is not None and n >= step.cut_after:
                        raise _Cut
                    if step.token_delay:
                        await asyncio.sleep(step.token_delay)
                    yield event(
                        "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}}
                    )
                yield event("content_block_stop", {"index": 0})
                yield event(
                    "message_delta",
                    {
                        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                        "usage": {"output_tokens": len(pieces)},
                    },
                )
                yield event("message_stop", {})
            except (asyncio.CancelledError, GeneratorExit):
                self.abandoned += 1
                raise

        return _Streaming(stream(), media_type="text/event-stream")


class _Cut(Exception):
    """Raised inside a stream to drop the connection midway."""


class _Streaming(StreamingResponse):
    """A stream whose generator may raise `_Cut`: the connection then closes without the end."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except _Cut:
            # Ending the ASGI call without `more_body=False` makes uvicorn drop the connection: the
            # client sees an incomplete chunked body, as when a provider's connection breaks.
            return
        except BaseExceptionGroup as group:
            if not group.subgroup(_Cut):
                raise


def _openai_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    kind = (
        "rate_limit_error" if status == 429 else "invalid_request_error" if status < 500 else "server_error"
    )
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _anthropic_error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def _text(content: Any) -> str:
    """The text of a message's content: a string, or a list of parts (OpenAI and Anthropic shapes)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


def _count(text: str) -> int:
    return len(text.split())


def _tokens(text: str) -> list[str]:
    """The reply split into 'tokens': words, each but the first with its leading space."""
    words = text.split(" ")
    return [words[0], *(" " + w for w in words[1:])]


def from_environment() -> Starlette:
    """The provider as its own process (`uvicorn --factory`, the benchmark): its OpenAI key from
    FAKE_OPENAI_KEY, each reply FAKE_REPLY_TOKENS tokens FAKE_TOKEN_DELAY seconds apart."""
    tokens = int(os.environ.get("FAKE_REPLY_TOKENS", "32"))
    fake = FakeProvider(
        openai_key=os.environ["FAKE_OPENAI_KEY"],
        default=Step(
            token_delay=float(os.environ.get("FAKE_TOKEN_DELAY", "0")), text=" ".join(["tok"] * tokens)
        ),
    )
    fake.record = False
    return fake.app()


async def serve(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    """`app` served by uvicorn on a free loopback port, in the running event loop (its lifespan is
    the caller's business): the server, its task and the port. `stop` ends it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, task, port


async def stop(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    await task
