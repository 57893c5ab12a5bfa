"""Events the AI gateway (target `ai`) publishes. Declared ahead of the producer: usage consumes
`ai.request.completed` today."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import ClassVar

from pydantic import ConfigDict, Field

from coder.shared.contracts import Contract


class AiRequestCompleted(Contract):
    """One model request finished: who made it and what it cost."""

    event_type: ClassVar[str] = "ai.request.completed"
    schema_version: ClassVar[int] = 1

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
