"""The one event envelope: CloudEvents 1.0, JSON format, with the W3C traceparent extension."""

from __future__ import annotations

import builtins
import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar

from opentelemetry import propagate
from pydantic import BaseModel, ConfigDict, Field, ValidationError

M = TypeVar("M", bound=BaseModel)


def _now() -> datetime:
    return datetime.now(UTC)


class CloudEvent(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: str = "1.0"
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    source: str
    type: str  # `<target>.<noun>.<verb-past>`, also the routing key
    time: datetime = Field(default_factory=_now)
    datacontenttype: str = "application/json"
    subject: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    # Extensions (CloudEvents attribute names are lowercase alphanumerics).
    orgid: str | None = None
    traceparent: str | None = None

    def data_as(self, model: builtins.type[M]) -> M:
        """`data` read as `model`. Malformed data is a ValueError naming the event: a handler that lets
        it raise sends the event to the dead-letter queue."""
        try:
            return model.model_validate(self.data)
        except ValidationError as exc:
            raise ValueError(f"event {self.id} has malformed data: {exc}") from None

    @classmethod
    def new(
        cls, type: str, data: dict[str, Any], *, org_id: str | None = None, subject: str | None = None
    ) -> CloudEvent:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        target = type.split(".", 1)[0]
        return cls(
            source=f"/coder/{target}",
            type=type,
            data=data,
            orgid=org_id,
            subject=subject,
            traceparent=carrier.get("traceparent"),
        )

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()
