"""Request bodies (derived from `Input`) and answers of workflow."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from coder.shared.schemas import Input

StepName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$", description="Unique in the definition")]
EventType = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$", max_length=200)]
Scalar = str | int | float | bool | None
Match = Annotated[
    dict[Annotated[str, Field(min_length=1, max_length=200)], Scalar],
    Field(
        max_length=20, description="Fields of the event's data (dotted paths) and the values they must equal"
    ),
]


class Retry(Input):
    """Retries of a failed attempt: after `backoff_seconds`, doubling each time up to
    `max_backoff_seconds`. A non-retryable error (a 4xx answer, a refused input) fails at once."""

    max_attempts: int = Field(default=3, ge=1, le=20)
    backoff_seconds: float = Field(default=1.0, ge=0, le=3600)
    max_backoff_seconds: float = Field(default=300.0, ge=0, le=86400)


class StepBase(Input):
    name: StepName
    needs: list[StepName] = Field(
        default_factory=list, max_length=50, description="Steps that must complete first"
    )
    retry: Retry = Field(default_factory=Retry)
    timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        le=7 * 86400,
        description="An attempt's limit; for event and approval steps, the wait's",
    )


class HttpStep(StepBase):
    """A call to a target of the platform, as the run's user, at the target's own path (`/v1/...`).
    Strings of the body equal to `${input.<path>}` or `${steps.<name>.output.<path>}` are replaced by
    that value of the run's input or of a completed step's output."""

    type: Literal["http"]
    target: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: str = Field(pattern=r"^/[^\s]*$", max_length=2000)
    body: Any = None


class ExecutionStep(StepBase):
    """A job on `execution` (its POST /v1/jobs), followed until it finishes; a non-zero exit fails it."""

    type: Literal["execution"]
    command: list[Annotated[str, Field(max_length=10_000)]] = Field(min_length=1, max_length=200)
    limits: dict[str, Any] | None = None
    files: dict[str, str] | None = None
    poll_seconds: float = Field(default=1.0, gt=0, le=60)


class AiStep(StepBase):
    """A prompt through `ai` (its OpenAI-compatible chat completions); the output is the answer's text."""

    type: Literal["ai"]
    model: str = Field(min_length=1, max_length=200)
    prompt: str = Field(min_length=1, max_length=100_000)
    system: str | None = Field(default=None, max_length=100_000)


class EventStep(StepBase):
    """Waits for a bus event of `event_type` in the run's org whose data matches `match`; its data is
    the output. Without one before `timeout_seconds` (default an hour) the step fails."""

    type: Literal["event"]
    event_type: EventType
    match: Match = Field(default_factory=dict)


class ApprovalStep(StepBase):
    """Waits for a person holding `workflow:approve` to approve (the run goes on) or reject (it fails)."""

    type: Literal["approval"]
    message: str = Field(default="", max_length=2000)


StepSpec = Annotated[
    HttpStep | ExecutionStep | AiStep | EventStep | ApprovalStep, Field(discriminator="type")
]


class Trigger(Input):
    """Start a run (as the definition's owner) for each bus event of `event_type` matching `match`;
    the event's data is the run's input."""

    event_type: EventType
    match: Match = Field(default_factory=dict)


class DefinitionSpec(Input):
    steps: list[StepSpec] = Field(min_length=1, max_length=100)
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=30 * 86400, description="The whole run's limit"
    )
    schedule: str | None = Field(
        default=None, max_length=100, description="A cron expression (5 fields, UTC): runs as the owner"
    )
    trigger: Trigger | None = None


class DefinitionCreate(DefinitionSpec):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")


class VersionCreate(DefinitionSpec):
    """A new version: the definition's new runs take it; running runs keep theirs."""


class RunCreate(Input):
    input: dict[str, Any] = Field(default_factory=dict)


class Decision(Input):
    comment: str = Field(default="", max_length=2000)


class DefinitionRead(BaseModel):
    id: uuid.UUID
    name: str
    owner: str
    latest_version: int
    schedule: str | None
    next_fire_at: datetime | None
    trigger_event: str | None
    created_at: datetime
    updated_at: datetime


class VersionRead(BaseModel):
    definition_id: uuid.UUID
    version: int
    spec: dict[str, Any]
    created_by: str
    created_at: datetime


class AttemptRead(BaseModel):
    number: int
    status: str
    worker: str
    input: Any
    output: Any
    error: str | None
    started_at: datetime
    finished_at: datetime | None


class StepRead(BaseModel):
    name: str
    kind: str
    needs: list[str]
    status: str
    attempts: int
    output: Any
    error: str | None
    decided_by: str | None
    started_at: datetime | None
    finished_at: datetime | None


class RunRead(BaseModel):
    id: uuid.UUID
    definition_id: uuid.UUID
    version: int
    status: str
    trigger: str
    actor: str
    input: dict[str, Any]
    error: str | None
    deadline: datetime | None
    created_at: datetime
    finished_at: datetime | None
    steps: list[StepRead]


class RunSummary(BaseModel):
    id: uuid.UUID
    definition_id: uuid.UUID
    version: int
    status: str
    trigger: str
    actor: str
    created_at: datetime
    finished_at: datetime | None


class HistoryRead(BaseModel):
    """Every attempt of every step, in the order they started."""

    run_id: uuid.UUID
    attempts: list[dict[str, Any]]
