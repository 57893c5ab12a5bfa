import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coder.shared.db import TargetBase


class Base(TargetBase, DeclarativeBase, target="planning"):
    """The planning target's tables; `Base.events` is its outbox and inbox."""


class Plan(Base):
    """A plan of tasks, of an organization and optionally one of its teams."""

    __tablename__ = "planning_plan"
    __table_args__ = (Index(None, "org_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(128))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # The id the next task gets: ids are never reused, so a deleted task's id keeps meaning nothing.
    # Taking ids locks this row, which also serializes every change to the plan's dependency graph.
    next_task_id: Mapped[int] = mapped_column(default=1)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Task(Base):
    """One task of a plan (Task Master's shape); a subtask is a task with a `parent_id`."""

    __tablename__ = "planning_task"
    __table_args__ = (
        ForeignKeyConstraint(
            ["plan_id", "parent_id"], ["planning_task.plan_id", "planning_task.id"], ondelete="CASCADE"
        ),
        # "Next task": the plan's pending tasks nothing blocks, by priority then id.
        Index(None, "plan_id", "status", "blockers", "priority", "id"),
        Index(None, "plan_id", "parent_id"),
    )

    plan_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("planning_plan.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    org_id: Mapped[str] = mapped_column(String(64))
    parent_id: Mapped[int | None]
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[str] = mapped_column(Text, default="")
    test_strategy: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # 1 high, 2 medium, 3 low: ascending order is the order of importance, as the index is kept.
    priority: Mapped[int] = mapped_column(SmallInteger, default=2)
    # Ids of tasks of the same plan that must be done first; never a cycle (checked on every write).
    dependencies: Mapped[list[int]] = mapped_column(ARRAY(Integer), default=list)
    # How many of `dependencies` are not done: kept by every write (under the plan's lock) so that the
    # next task is read from an index instead of checking every pending task's dependencies.
    blockers: Mapped[int] = mapped_column(default=0)
    # [{"text": ..., "checked": bool}, ...]
    acceptance_checks: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    complexity: Mapped[int | None] = mapped_column(SmallInteger)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
