from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, Field

from coder.shared.schemas import Input

Title = Annotated[str, Field(min_length=1, max_length=200)]
LongText = Annotated[str, Field(max_length=20_000)]
TaskId = Annotated[int, Field(ge=1, le=2**31 - 1, description="A task's id in its plan")]
TeamId = Annotated[str, Field(min_length=1, max_length=128)]
# A plan holds at most this many dependencies per task and this many acceptance checks.
MAX_DEPENDENCIES = 100
MAX_CHECKS = 50


class Status(StrEnum):
    """Task Master's statuses."""

    PENDING = "pending"
    IN_PROGRESS = "in-progress"
    REVIEW = "review"
    DONE = "done"
    DEFERRED = "deferred"
    CANCELLED = "cancelled"


class Priority(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Check(Input):
    """One acceptance check: what must hold for the task to count as done, and whether it does."""

    text: Annotated[str, Field(min_length=1, max_length=1000)]
    checked: bool = False


class CheckRead(BaseModel):
    text: str
    checked: bool


Dependencies = Annotated[
    list[TaskId],
    Field(max_length=MAX_DEPENDENCIES, description="Ids of tasks of this plan that must be done first"),
]
Checks = Annotated[list[Check], Field(max_length=MAX_CHECKS)]
Complexity = Annotated[int, Field(ge=1, le=10, description="1 (trivial) to 10 (very complex)")]


class TaskCreate(Input):
    title: Title
    description: LongText = ""
    details: LongText = Field(default="", description="How to implement it")
    test_strategy: LongText = Field(default="", description="How to verify it")
    priority: Priority = Priority.MEDIUM
    dependencies: Dependencies = []
    parent_id: TaskId | None = Field(default=None, description="Makes this a subtask of that task")
    acceptance_checks: Checks = []
    complexity: Complexity | None = None


class TaskUpdate(Input):
    """The fields to change; an absent field stays as it is. The status changes through its own
    operation (`POST .../status`), along the transition table."""

    title: Title | None = None
    description: LongText | None = None
    details: LongText | None = None
    test_strategy: LongText | None = None
    priority: Priority | None = None
    dependencies: Dependencies | None = None
    acceptance_checks: Checks | None = None
    complexity: Complexity | None = Field(default=None, description="null clears it")


class StatusChange(Input):
    status: Status


class TaskRead(BaseModel):
    id: int
    plan_id: uuid.UUID
    parent_id: int | None
    title: str
    description: str
    details: str
    test_strategy: str
    status: Status
    priority: Priority
    dependencies: list[int]
    acceptance_checks: list[CheckRead]
    complexity: int | None
    created_at: datetime
    updated_at: datetime


class NextTaskRead(BaseModel):
    task: TaskRead | None = Field(description="Null when no pending task has all its dependencies done")


class PlanCreate(Input):
    title: Title
    description: LongText = ""
    team_id: TeamId | None = None


class PlanUpdate(Input):
    title: Title | None = None
    description: LongText | None = None
    team_id: TeamId | None = Field(default=None, description="null makes it organization-wide")


class PlanRead(BaseModel):
    id: uuid.UUID
    title: str
    description: str
    team_id: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime


Prompt = Annotated[str, Field(min_length=1, max_length=20_000)]
Model = Annotated[str, Field(min_length=1, max_length=200, description="A model (or model group) of `ai`")]


class PlanGenerate(Input):
    prompt: Prompt = Field(description="What the plan is for: a requirements document, a goal...")
    model: Model
    title: Title | None = Field(default=None, description="Default: the title the model gives")
    team_id: TeamId | None = None
    max_tasks: int = Field(default=10, ge=1, le=50)


class TaskExpand(Input):
    model: Model
    count: int = Field(default=5, ge=1, le=20, description="How many subtasks to ask for")
    prompt: Annotated[str, Field(max_length=20_000)] = Field(default="", description="Extra guidance")


class GeneratedPlanRead(BaseModel):
    plan: PlanRead
    tasks: list[TaskRead]


class ExpandedRead(BaseModel):
    subtasks: list[TaskRead]
