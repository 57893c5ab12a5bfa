"""Events the AI gateway (target `ai`) publishes; usage consumes `ai.request.completed`."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import ClassVar

from pydantic import ConfigDict, Field

from coder.shared.contracts import Contract


class AiRequestCompleted(Contract):
    """One model request finished: who made it and what it cost."""

    event_type: ClassVar[str] = "ai.request.completed"
    # v2 added the optional fields below `reservation_id`; a v1 consumer reads v2 events unchanged.
    schema_version: ClassVar[int] = 2

    # Other fields (prompt ids, latency...) may ride along; usage stores the data whole.
    model_config = ConfigDict(extra="allow")

    user_id: str = Field(min_length=1, max_length=128)
    team_id: str | None = Field(default=None, max_length=128)
    api_key_id: str | None = Field(default=None, max_length=128)
    model: str | None = Field(default=None, max_length=200)
    feature: str | None = Field(default=None, max_length=128)
    prompt_tokens: int = Field(default=0, ge=0, le=10**12)
    completion_tokens: int = Field(default=0, ge=0, le=10**12)
    cost_usd: Decimal = Field(default=Decimal(0), ge=0, le=Decimal("1e9"))
    reservation_id: uuid.UUID | None = None
    # Since v2, all optional: what the call was.
    org_id: str | None = Field(default=None, max_length=64)
    deployment: str | None = Field(default=None, max_length=100, description="The deployment that answered")
    provider: str | None = Field(default=None, max_length=100)
    cached_tokens: int | None = Field(default=None, ge=0, le=10**12)
    latency_ms: float | None = Field(default=None, ge=0, le=10**9)
    ttft_ms: float | None = Field(default=None, ge=0, le=10**9, description="Time to the first token")
    stream: bool | None = None
    outcome: str | None = Field(
        default=None, max_length=32, description="completed, cut (the provider's stream broke), cancelled"
    )
