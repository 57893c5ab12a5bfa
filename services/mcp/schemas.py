from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class AuditEntryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: Any
    actor: str
    tool: str
    target: str
    operation: str
    status: int | None
    outcome: str
    details: dict[str, Any]
    request_id: str | None
    at: datetime
