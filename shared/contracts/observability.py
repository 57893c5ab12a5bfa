"""Events the observability target publishes: an alert rule started or stopped firing."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, Field

from coder.shared.contracts import Contract


class _AlertChange(BaseModel):
    rule_id: uuid.UUID
    name: str = Field(min_length=1, max_length=200)
    kind: str = Field(description="burn_rate or threshold")
    previous_state: str = Field(description="inactive, pending or firing")
    state: str = Field(description="inactive, pending or firing")
    value: float | None = Field(default=None, description="The value the rule's condition compared")
    target: str | None = Field(default=None, max_length=63)
    slo_id: uuid.UUID | None = None
    at: datetime


class AlertFiring(_AlertChange, Contract):
    """A rule's condition held for its `for` duration: the alert fires."""

    event_type: ClassVar[str] = "observability.alert.firing"
    schema_version: ClassVar[int] = 1


class AlertResolved(_AlertChange, Contract):
    """A firing rule's condition no longer holds."""

    event_type: ClassVar[str] = "observability.alert.resolved"
    schema_version: ClassVar[int] = 1
