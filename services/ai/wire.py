"""The bodies of the inference APIs (OpenAI chat and completions, Anthropic messages), as clients send
them. Only what the platform reads is declared; every other member passes through to the provider
(`extra="allow"`, still held to `Input`'s storable-text rules)."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from coder.services.ai.context import ContextItem
from coder.shared.schemas import Input

Message = dict[str, Any]


class StreamOptions(Input):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ContextRequest(Input):
    """Ask for context (as /v1/context) to be put in a system message first: the platform's extension.
    Private items and sources are left out when the group may route to an external provider."""

    query: str | None = Field(default=None, max_length=20_000, description="Default: the last user message")
    items: list[ContextItem] = Field(default_factory=list, max_length=200)
    sources: list[str] = Field(default_factory=list, max_length=20)
    max_tokens: int = Field(default=4000, ge=1, le=1_000_000)


class ChatRequest(Input):
    """OpenAI `POST /v1/chat/completions`."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=100, description="A model group alias")
    messages: list[Message] = Field(min_length=1, max_length=10_000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=512)
    user: str | None = Field(default=None, max_length=256)
    context: ContextRequest | None = Field(
        default=None,
        description="Platform extension: assemble context (as /v1/context) into the system prompt",
    )


class CompletionRequest(Input):
    """OpenAI `POST /v1/completions`: code completion, fill-in-the-middle with `suffix`."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=100, description="A model group alias")
    prompt: str = Field(max_length=1_000_000)
    suffix: str | None = Field(default=None, max_length=1_000_000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    user: str | None = Field(default=None, max_length=256)


class MessagesRequest(Input):
    """Anthropic `POST /v1/messages`."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=100, description="A model group alias")
    messages: list[Message] = Field(min_length=1, max_length=10_000)
    max_tokens: int = Field(ge=1, le=10_000_000)
    system: str | list[dict[str, Any]] | None = None
    stream: bool = False
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=512)
