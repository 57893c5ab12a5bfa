"""Events the planning target publishes: one per change to a task of a plan."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field

from coder.shared.contracts import Contract


class TaskFields(BaseModel):
    """What every task event says: which task of which plan, and its state after the change (before
    it, for a deletion). `actor` is the user's id."""

    plan_id: str
    task_id: int = Field(ge=1)
    parent_id: int | None = Field(default=None, ge=1)
    title: str
    status: str
    priority: str
    dependencies: list[int]
    actor: str


class TaskCreated(TaskFields, Contract):
    event_type: ClassVar[str] = "planning.task.created"
    schema_version: ClassVar[int] = 1


class TaskUpdated(TaskFields, Contract):
    """A task's content changed (not its status): `changed` names the fields."""

    event_type: ClassVar[str] = "planning.task.updated"
    schema_version: ClassVar[int] = 1

    changed: list[str]


class TaskStatusChanged(TaskFields, Contract):
    """`status` moved from `previous` (only along the transition table)."""

    event_type: ClassVar[str] = "planning.task.status_changed"
    schema_version: ClassVar[int] = 1

    previous: str


class TaskDeleted(TaskFields, Contract):
    event_type: ClassVar[str] = "planning.task.deleted"
    schema_version: ClassVar[int] = 1
