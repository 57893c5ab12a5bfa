"""Speaking to providers: which wire protocol a deployment takes, the translation between OpenAI's
and Anthropic's shapes (requests, answers and SSE streams), and the usage and cost of a call.

The client's API (OpenAI chat or completions, Anthropic messages) and the provider's protocol meet
here: the same protocol passes through (SSE events forwarded as they arrive, only the usage chunk
read and given its cost), different ones are translated event by event, never buffered."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from coder.services.ai.catalog import Route
from coder.services.ai.schemas import Capability, ProviderKind

ANTHROPIC_VERSION = "2023-06-01"
MICRO = Decimal("0.000001")
MILLION = Decimal(1_000_000)


class Api(StrEnum):
    """What the client speaks."""

    CHAT = "chat"  # OpenAI /v1/chat/completions
    COMPLETIONS = "completions"  # OpenAI /v1/completions
    MESSAGES = "messages"  # Anthropic /v1/messages


class Protocol(StrEnum):
    """What the provider is spoken to in."""

    CHAT = "chat"
    COMPLETIONS = "completions"
    MESSAGES = "messages"


def protocol(api: Api, kind: ProviderKind) -> Protocol | None:
    """The provider protocol a client API maps to; None when this provider cannot serve it."""
    if kind is ProviderKind.ANTHROPIC:
        return None if api is Api.COMPLETIONS else Protocol.MESSAGES
    return {Api.CHAT: Protocol.CHAT, Api.COMPLETIONS: Protocol.COMPLETIONS, Api.MESSAGES: Protocol.CHAT}[api]


def needed(api: Api, body: dict[str, Any]) -> set[Capability]:
    """The capabilities a deployment needs for this request."""
    if api is Api.COMPLETIONS:
        # A plain completion runs on any OpenAI-style deployment; with a suffix it is fill-in-the-middle.
        return {Capability.FIM} if body.get("suffix") is not None else set()
    wanted = {Capability.CHAT}
    if body.get("tools"):
        wanted.add(Capability.TOOLS)
    for message in body.get("messages", []):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") in ("image_url", "image") for p in content
        ):
            wanted.add(Capability.VISION)
    return wanted


# --- usage and cost ---


@dataclass
class Usage:
    prompt_tokens: int = 0  # cached ones included
    completion_tokens: int = 0
    cached_tokens: int = 0
    reported: bool = False  # from the provider; otherwise estimated from what streamed

    def cost(self, route: Route) -> Decimal:
        d = route.deployment
        fresh = max(self.prompt_tokens - self.cached_tokens, 0)
        total = (
            fresh * d.input_price
            + self.cached_tokens * d.cached_price
            + self.completion_tokens * d.output_price
        ) / MILLION
        return total.quantize(MICRO)


def estimate_tokens(value: Any) -> int:
    """A rough count (4 characters a token) for holding budget before the provider says."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return max(1, len(text) // 4)


def output_limit(api: Api, body: dict[str, Any], route: Route) -> int:
    asked = body.get("max_tokens") or body.get("max_completion_tokens")
    return int(asked) if isinstance(asked, int) else route.deployment.max_output_tokens


def prompt_estimate(api: Api, body: dict[str, Any]) -> int:
    """The prompt's tokens as estimated before the provider counts them."""
    if api is Api.COMPLETIONS:
        return estimate_tokens(str(body.get("prompt", "")) + str(body.get("suffix") or ""))
    return estimate_tokens([body.get("system"), body.get("messages")])


def estimate_cost(api: Api, body: dict[str, Any], route: Route) -> Decimal:
    """The most this request can cost on this route: its prompt and its whole output allowance."""
    return Usage(prompt_estimate(api, body), output_limit(api, body, route)).cost(route)


# --- requests ---


@dataclass(frozen=True)
class Outgoing:
    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    protocol: Protocol


def outgoing(api: Api, body: dict[str, Any], route: Route, key: str | None) -> Outgoing:
    """The provider request for a client's body on this route: the deployment's model and defaults,
    translated when protocols differ; streams always ask the provider for usage."""
    proto = protocol(api, route.kind)
    assert proto is not None, "routes that cannot serve the API are filtered out"
    base = route.provider.base_url
    defaults = dict(route.deployment.params)
    if proto is Protocol.MESSAGES:
        payload = body if api is Api.MESSAGES else chat_to_messages(body, output_limit(api, body, route))
        payload = {**defaults, **payload, "model": route.deployment.model}
        headers = {"anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}
        if key:
            headers["x-api-key"] = key
        return Outgoing(base + "/v1/messages", headers, payload, proto)
    payload = messages_to_chat(body) if api is Api.MESSAGES else dict(body)
    payload = {**defaults, **payload, "model": route.deployment.model}
    if payload.get("stream"):
        payload["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    path = "/completions" if proto is Protocol.COMPLETIONS else "/chat/completions"
    return Outgoing(base + path, headers, payload, proto)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p)
    return ""


def chat_to_messages(body: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    """An OpenAI chat request as an Anthropic messages request."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for message in body["messages"]:
        role, content = message.get("role"), message.get("content")
        if role in ("system", "developer"):
            system.append(_text_of(content))
        elif role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id"),
                "content": _text_of(content),
            }
            messages.append({"role": "user", "content": [block]})
        elif role == "assistant" and message.get("tool_calls"):
            blocks: list[dict[str, Any]] = [{"type": "text", "text": _text_of(content)}] if content else []
            for call in message["tool_calls"]:
                function = call.get("function", {})
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id"),
                        "name": function.get("name"),
                        "input": json.loads(function.get("arguments") or "{}"),
                    }
                )
            messages.append({"role": "assistant", "content": blocks})
        else:
            messages.append(
                {"role": "assistant" if role == "assistant" else "user", "content": _anthropic_parts(content)}
            )
    out: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens}
    if system:
        out["system"] = "\n\n".join(system)
    for name in ("temperature", "top_p", "stream", "metadata"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop") is not None:
        out["stop_sequences"] = body["stop"] if isinstance(body["stop"], list) else [body["stop"]]
    if body.get("tools"):
        out["tools"] = [
            {
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters") or {"type": "object", "properties": {}},
            }
            for t in body["tools"]
            if t.get("type") == "function"
        ]
    return out


def _anthropic_parts(content: Any) -> Any:
    if not isinstance(content, list):
        return content if content is not None else ""
    parts = []
    for part in content:
        if part.get("type") == "image_url":
            url = (
                part["image_url"]["url"] if isinstance(part.get("image_url"), dict) else part.get("image_url")
            )
            parts.append({"type": "image", "source": {"type": "url", "url": url}})
        elif part.get("type") == "text":
            parts.append({"type": "text", "text": part.get("text", "")})
    return parts


def messages_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic messages request as an OpenAI chat request."""
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": _text_of(body["system"])})
    for message in body["messages"]:
        content = message.get("content")
        if not isinstance(content, list):
            messages.append({"role": message.get("role"), "content": content})
            continue
        calls = [b for b in content if b.get("type") == "tool_use"]
        results = [b for b in content if b.get("type") == "tool_result"]
        for result in results:
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": result.get("tool_use_id"),
                    "content": _text_of(result.get("content")),
                }
            )
        parts: list[dict[str, Any]] = []
        for block in content:
            if block.get("type") == "text":
                parts.append({"type": "text", "text": block.get("text", "")})
            elif block.get("type") == "image":
                source = block.get("source", {})
                url = source.get("url") or f"data:{source.get('media_type')};base64,{source.get('data')}"
                parts.append({"type": "image_url", "image_url": {"url": url}})
        if calls:
            messages.append(
                {
                    "role": "assistant",
                    "content": _text_of(parts) or None,
                    "tool_calls": [
                        {
                            "id": c.get("id"),
                            "type": "function",
                            "function": {"name": c.get("name"), "arguments": json.dumps(c.get("input", {}))},
                        }
                        for c in calls
                    ],
                }
            )
        elif parts:
            messages.append({"role": message.get("role"), "content": parts})
    out: dict[str, Any] = {"messages": messages, "max_tokens": body["max_tokens"]}
    for name in ("temperature", "top_p", "stream"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    if body.get("tools"):
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t["name"],
                    "description": t.get("description", ""),
                    "parameters": t.get("input_schema", {}),
                },
            }
            for t in body["tools"]
        ]
    return out


# --- answers (not streamed) ---

FINISH = {
    "end_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "refusal": "content_filter",
}
STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def usage_of(proto: Protocol, answer: dict[str, Any]) -> Usage:
    raw = answer.get("usage") or {}
    if not raw:
        return Usage()
    if proto is Protocol.MESSAGES:
        cached = int(raw.get("cache_read_input_tokens") or 0)
        return Usage(
            int(raw.get("input_tokens") or 0) + cached, int(raw.get("output_tokens") or 0), cached, True
        )
    details = raw.get("prompt_tokens_details") or {}
    return Usage(
        int(raw.get("prompt_tokens") or 0),
        int(raw.get("completion_tokens") or 0),
        int(details.get("cached_tokens") or 0),
        True,
    )


def answer_for(
    api: Api, proto: Protocol, answer: dict[str, Any], usage: Usage, cost: Decimal, alias: str
) -> dict[str, Any]:
    """The provider's answer in the client's API, `model` the alias called, cost in `usage.cost`."""
    if api is Api.MESSAGES and proto is Protocol.CHAT:
        answer = chat_answer_to_message(answer, usage)
    elif api is Api.CHAT and proto is Protocol.MESSAGES:
        answer = message_to_chat_answer(answer, usage)
    answer = {**answer, "model": alias}
    answer["usage"] = {**(answer.get("usage") or {}), "cost": float(cost)}
    return answer


def message_to_chat_answer(answer: dict[str, Any], usage: Usage) -> dict[str, Any]:
    text = "".join(b.get("text", "") for b in answer.get("content", []) if b.get("type") == "text")
    calls = [
        {
            "id": b.get("id"),
            "type": "function",
            "function": {"name": b.get("name"), "arguments": json.dumps(b.get("input", {}))},
        }
        for b in answer.get("content", [])
        if b.get("type") == "tool_use"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": "chatcmpl-" + str(answer.get("id", uuid.uuid4().hex)),
        "object": "chat.completion",
        "created": int(time.time()),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": FINISH.get(answer.get("stop_reason") or "", "stop"),
                "logprobs": None,
            }
        ],
        "usage": _openai_usage(usage),
    }


def chat_answer_to_message(answer: dict[str, Any], usage: Usage) -> dict[str, Any]:
    choice = (answer.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function", {})
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": json.loads(function.get("arguments") or "{}"),
            }
        )
    return {
        "id": "msg_" + str(answer.get("id", uuid.uuid4().hex)),
        "type": "message",
        "role": "assistant",
        "content": content,
        "stop_reason": STOP.get(choice.get("finish_reason") or "", "end_turn"),
        "stop_sequence": None,
        "usage": _anthropic_usage(usage),
    }


def _openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def _anthropic_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }


# --- streams ---


def sse(data: str, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


@dataclass
class Stream:
    """Turns a provider's SSE events into the client's, event by event, counting usage on the way.

    `feed` returns the bytes to send now; `complete` tells whether the provider ended the stream
    properly (else it was cut). With no usage from the provider, each content event counts as one
    token, the provider's own granularity."""

    api: Api
    proto: Protocol
    alias: str
    cost: Callable[[Usage], Decimal]
    include_usage: bool  # the client asked for the usage chunk (OpenAI); Anthropic always has it
    # Output tokens the budget hold covers (None: no limit): the stream stops there, as at max_tokens.
    allowance: int | None = None
    usage: Usage = field(default_factory=Usage)
    complete: bool = False
    over_budget: bool = False
    first_token_at: float | None = None
    _pieces: int = 0
    _id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    _created: int = field(default_factory=lambda: int(time.time()))
    _started: bool = False
    _block_open: bool = False
    _finish: str | None = None
    _tool_index: dict[int, int] = field(default_factory=dict)

    def _token(self) -> None:
        if self.allowance is not None and self._pieces >= self.allowance:
            self.over_budget = True
            return
        self._pieces += 1
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        if not self.usage.reported:
            self.usage.completion_tokens = self._pieces

    def feed(self, event: str, data: str) -> list[bytes]:
        out = (
            self._from_anthropic(event, data) if self.proto is Protocol.MESSAGES else self._from_openai(data)
        )
        return [] if self.over_budget else out

    @property
    def passes_through(self) -> bool:
        """OpenAI's protocol on both sides: events go on as the provider wrote them (`feed_data`)."""
        return self.api is not Api.MESSAGES and self.proto is not Protocol.MESSAGES

    def feed_data(self, data: bytes) -> list[bytes]:
        """A `data:` event of a stream that passes through, its bytes sent on as they came: only the
        end, the usage chunk, errors and empty chunks are parsed (`feed`); the rest are looked at for
        content, which counts one token per event."""
        if _found(_READ, data):
            return self.feed("", data.decode(errors="replace"))
        if _found(_CONTENT, data):
            self._token()
            if self.over_budget:
                return []
        return [b"data: " + data + b"\n\n"]

    def budget_end(self) -> list[bytes]:
        """The end of a stream stopped at the budget hold: as if the model had reached max_tokens."""
        self.usage.completion_tokens = self._pieces
        cost = float(self.cost(self.usage))
        if self.api is Api.MESSAGES:
            out = [_event("content_block_stop", {"index": 0})] if self._block_open else []
            usage = {**_anthropic_usage(self.usage), "cost": cost}
            delta = {"stop_reason": "max_tokens", "stop_sequence": None}
            return [
                *out,
                _event("message_delta", {"delta": delta, "usage": usage}),
                _event("message_stop", {}),
            ]
        if self.api is Api.COMPLETIONS:
            end: dict[str, Any] = {"index": 0, "text": "", "finish_reason": "length", "logprobs": None}
        else:
            end = {"index": 0, "delta": {}, "finish_reason": "length"}
        out = [self._chunk([end])]
        if self.include_usage:
            out.append(self._chunk([], {**_openai_usage(self.usage), "cost": cost}))
        return [*out, sse("[DONE]")]

    # OpenAI-shaped provider
    def _from_openai(self, data: str) -> list[bytes]:
        if data.strip() == "[DONE]":
            self.complete = True
            if self.api is Api.MESSAGES:
                return self._anthropic_end()
            return [sse("[DONE]")]
        chunk = json.loads(data)
        if chunk.get("error"):
            return (
                [sse(data)]
                if self.api is not Api.MESSAGES
                else [sse(json.dumps({"type": "error", "error": chunk["error"]}), "error")]
            )
        if chunk.get("usage"):
            self.usage = usage_of(Protocol.CHAT, chunk)
        choices = chunk.get("choices") or []
        for choice in choices:
            delta = choice.get("delta") or {}
            if delta.get("content") or delta.get("tool_calls") or choice.get("text"):
                self._token()
        if self.api is Api.MESSAGES:
            return self._openai_to_anthropic(chunk)
        if not choices:
            if not self.include_usage or not chunk.get("usage"):
                return []
            chunk["usage"] = {**chunk["usage"], "cost": float(self.cost(self.usage))}
            return [sse(json.dumps(chunk))]
        # Passed through as the provider wrote it (its `model` is the deployment's): no re-encoding.
        return [sse(data)]

    def _openai_to_anthropic(self, chunk: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        if not self._started:
            self._started = True
            start: dict[str, Any] = {
                "id": "msg_" + self._id,
                "type": "message",
                "role": "assistant",
                "model": self.alias,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
            out.append(_event("message_start", {"message": start}))
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if text:
                if not self._block_open:
                    self._block_open = True
                    out.append(
                        _event(
                            "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
                        )
                    )
                out.append(
                    _event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}})
                )
            if choice.get("finish_reason"):
                self._finish = STOP.get(choice["finish_reason"], "end_turn")
        return out

    def _anthropic_end(self) -> list[bytes]:
        out: list[bytes] = []
        if not self._started:
            out += self._openai_to_anthropic({})
        if self._block_open:
            out.append(_event("content_block_stop", {"index": 0}))
        usage = {**_anthropic_usage(self.usage), "cost": float(self.cost(self.usage))}
        out.append(
            _event(
                "message_delta",
                {"delta": {"stop_reason": self._finish or "end_turn", "stop_sequence": None}, "usage": usage},
            )
        )
        out.append(_event("message_stop", {}))
        return out

    # Anthropic-shaped provider
    def _from_anthropic(self, event: str, data: str) -> list[bytes]:
        message = json.loads(data)
        kind = message.get("type", event)
        if kind == "message_start":
            raw = (message.get("message") or {}).get("usage") or {}
            cached = int(raw.get("cache_read_input_tokens") or 0)
            self.usage.prompt_tokens = int(raw.get("input_tokens") or 0) + cached
            self.usage.cached_tokens = cached
        elif kind == "content_block_start":
            self._block_open = True
        elif kind == "content_block_stop":
            self._block_open = False
        elif kind == "content_block_delta":
            self._token()
        elif kind == "message_delta":
            raw = message.get("usage") or {}
            if "output_tokens" in raw:
                self.usage.completion_tokens = int(raw["output_tokens"])
                self.usage.reported = True
            self._finish = (message.get("delta") or {}).get("stop_reason")
            if self.api is Api.MESSAGES:
                message["usage"] = {**raw, "cost": float(self.cost(self.usage))}
                return [sse(json.dumps(message), kind)]
        elif kind == "message_stop":
            self.complete = True
        if self.api is Api.MESSAGES:
            if kind == "message_start":
                message["message"]["model"] = self.alias
                return [sse(json.dumps(message), kind)]
            return [sse(data, kind)]
        return self._anthropic_to_openai(kind, message)

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": "chatcmpl-" + self._id,
            "object": "text_completion" if self.api is Api.COMPLETIONS else "chat.completion.chunk",
            "created": self._created,
            "model": self.alias,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = usage
        return sse(json.dumps(chunk))

    def _anthropic_to_openai(self, kind: str, message: dict[str, Any]) -> list[bytes]:
        if kind == "message_start":
            return [
                self._chunk(
                    [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
                )
            ]
        if kind == "content_block_start":
            block = message.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tool_index.setdefault(int(message.get("index", 0)), len(self._tool_index))
                call = {
                    "index": index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return [self._chunk([{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}])]
            return []
        if kind == "content_block_delta":
            delta = message.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [
                    self._chunk(
                        [{"index": 0, "delta": {"content": delta.get("text", "")}, "finish_reason": None}]
                    )
                ]
            if delta.get("type") == "input_json_delta":
                index = self._tool_index.get(int(message.get("index", 0)), 0)
                call = {"index": index, "function": {"arguments": delta.get("partial_json", "")}}
                return [self._chunk([{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}])]
            return []
        if kind == "message_delta":
            finish = FINISH.get(self._finish or "", "stop")
            return [self._chunk([{"index": 0, "delta": {}, "finish_reason": finish}])]
        if kind == "message_stop":
            out = []
            if self.include_usage:
                out.append(
                    self._chunk([], {**_openai_usage(self.usage), "cost": float(self.cost(self.usage))})
                )
            return [*out, sse("[DONE]")]
        if kind == "error":
            return [sse(json.dumps({"error": message.get("error")}))]
        return []  # ping, content_block_stop

    def cut(self) -> list[bytes]:
        """What the client gets when the provider's stream broke off: an error event, no end."""
        error = {
            "message": "the provider's stream ended early",
            "type": "upstream_error",
            "code": "stream_cut",
        }
        if self.api is Api.MESSAGES:
            return [
                sse(
                    json.dumps(
                        {"type": "error", "error": {"type": "api_error", "message": error["message"]}}
                    ),
                    "error",
                )
            ]
        return [sse(json.dumps({"error": error}))]


# What `feed_data` hands to `feed`: `[DONE]`, a usage object, an error, a chunk without choices.
# Patterns apart, each starting with its own key: the engine skips to a pattern's literal start, where
# one alternation of them all would be tried at every byte (4x the time, on every token).
_READ = (
    re.compile(rb"^\s*\[DONE\]"),
    re.compile(rb'"usage"\s*:\s*\{'),
    re.compile(rb'"error"\s*:'),
    re.compile(rb'"choices"\s*:\s*\[\s*\]'),
)
# Content: a non-empty `content` or `text` string, or tool calls (JSON escapes a quote in a string:
# these never match inside one).
_CONTENT = (
    re.compile(rb'"content"\s*:\s*"(?!")'),
    re.compile(rb'"text"\s*:\s*"(?!")'),
    re.compile(rb'"tool_calls"\s*:\s*\[\s*\{'),
)


def _found(patterns: tuple[re.Pattern[bytes], ...], data: bytes) -> bool:
    return any(p.search(data) for p in patterns)


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return sse(json.dumps({"type": kind, **data}), kind)
