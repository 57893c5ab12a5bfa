from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field

from coder.shared.schemas import Input

# Loki's timestamp: nanoseconds since the epoch, as a string of digits.
NanoTime = Annotated[str, Field(pattern=r"^[0-9]{1,19}$", description="Nanoseconds since the Unix epoch")]
Text = Annotated[str, Field(max_length=1024 * 1024)]
MetaValue = Annotated[str, Field(max_length=4096)]
Metadata = Annotated[dict[str, MetaValue], Field(max_length=64)]
MAX_LINES_PER_PUSH = 10_000


def _metadata_optional(value: Any) -> Any:
    # Loki's entry is [ts, line] or [ts, line, metadata]: one shape, so errors name `values.3.0`.
    if isinstance(value, list | tuple) and len(value) == 2:
        return [*value, {}]
    return value


Entry = Annotated[tuple[NanoTime, Text, Metadata], BeforeValidator(_metadata_optional)]


class Level(StrEnum):
    TRACE = "trace"
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"
    FATAL = "fatal"
    UNKNOWN = "unknown"


class Direction(StrEnum):
    FORWARD = "forward"  # oldest first
    BACKWARD = "backward"  # newest first (Loki's default)


class StreamPush(Input):
    stream: dict[str, Annotated[str, Field(max_length=4096)]] = Field(
        max_length=64, description="The stream's labels: few, low-cardinality (no ids in labels)"
    )
    values: list[Entry] = Field(
        min_length=1,
        max_length=MAX_LINES_PER_PUSH,
        description='[timestamp, line] or [timestamp, line, {structured metadata}]; "trace_id" and '
        '"request_id" in the metadata link the line to its trace and request',
    )


class PushRequest(Input):
    """Loki's push API, JSON form."""

    streams: list[StreamPush] = Field(min_length=1, max_length=1000)


class PushRead(BaseModel):
    accepted: int
    streams: int
    # Redactions by kind ("secret", "jwt", "email"...): counts only, never what was removed.
    redacted: dict[str, int]


class LineRead(BaseModel):
    ts: str = Field(description="Nanoseconds since the Unix epoch")
    labels: dict[str, str]
    line: str
    level: Level
    metadata: dict[str, str]
    trace_id: str | None
    request_id: str | None


class QueryPage(BaseModel):
    items: list[LineRead]
    next_cursor: str | None = None


class LabelsRead(BaseModel):
    data: list[str]


class DeleteRequest(Input):
    query: str = Field(min_length=2, max_length=4096, description='A stream selector, e.g. {app="api"}')
    start: NanoTime | None = Field(default=None, description="Inclusive; default: the beginning")
    end: NanoTime | None = Field(default=None, description="Exclusive; default: now")


class DeleteRead(BaseModel):
    deleted: int


class RetentionUpdate(Input):
    days: int = Field(ge=1, le=3650, description="Lines older than this many days are deleted")


class RetentionRead(BaseModel):
    days: int
    default: bool = Field(description="True when the org has set none and the platform default applies")
