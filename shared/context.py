"""What the current request carries onwards: its id and the caller's token (trace context is OTel's)."""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
bearer_token: ContextVar[str | None] = ContextVar("bearer_token", default=None)
