"""workflow's tables: definitions and their immutable versions, runs, steps and every attempt."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, ForeignKeyConstraint, Index, String, Text, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coder.shared.db import TargetBase


class Base(TargetBase, DeclarativeBase, target="workflow"):
    """The workflow target's tables; `Base.events` is its outbox and inbox."""


class Definition(Base):
    """A named workflow of an org; its steps live in versions, the newest of which new runs take."""

    __tablename__ = "workflow_definition"
    __table_args__ = (
        Index(None, "org_id", "name", unique=True),
        Index(None, "org_id", "created_at", "id"),
        # The scheduler's scan: definitions whose next cron time has come.
        Index(None, "next_fire_at", postgresql_where="next_fire_at IS NOT NULL"),
        Index(None, "trigger_event", postgresql_where="trigger_event IS NOT NULL"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    owner: Mapped[str] = mapped_column(String(128))
    latest_version: Mapped[int] = mapped_column(default=1)
    # The latest version's schedule and trigger, copied here for the scheduler's and consumer's scans.
    schedule: Mapped[str | None] = mapped_column(String(100))
    next_fire_at: Mapped[datetime | None]
    trigger_event: Mapped[str | None] = mapped_column(String(200))
    # The owner's delegation (gateway-signed), which scheduled and event-triggered runs act with.
    delegation: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Version(Base):
    """One immutable version of a definition: its validated spec (steps, timeouts, schedule, trigger)."""

    __tablename__ = "workflow_version"

    definition_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workflow_definition.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Run(Base):
    """One run of one version of a definition."""

    __tablename__ = "workflow_run"
    __table_args__ = (
        ForeignKeyConstraint(
            ["definition_id", "version"],
            ["workflow_version.definition_id", "workflow_version.version"],
            ondelete="CASCADE",
        ),
        Index(None, "org_id", "created_at", "id"),
        Index(None, "definition_id", "created_at"),
        # The sweeper's scan: running runs past their deadline.
        Index(None, "deadline", postgresql_where="status = 'running'"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    definition_id: Mapped[uuid.UUID]
    version: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default="running")
    trigger: Mapped[str] = mapped_column(String(16), default="api")
    input: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    # Who the steps act for, and the gateway's delegation they act with.
    actor: Mapped[str] = mapped_column(String(128))
    delegation: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    deadline: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]


class Step(Base):
    """A step of a run: its state, its lease while a worker runs it, and its result."""

    __tablename__ = "workflow_step"
    __table_args__ = (
        # The workers' scan: ready steps whose time has come (and running ones whose lease expired).
        Index(None, "status", "due_at"),
        # The consumer's scan: steps waiting for an event of a type.
        Index(None, "wait_event", postgresql_where="status = 'waiting'"),
    )

    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workflow_run.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    position: Mapped[int]
    needs: Mapped[list[str]] = mapped_column(ARRAY(String(64)), default=list)
    # pending (dependencies not done), ready, running, waiting (event, approval), completed, failed,
    # cancelled, skipped (a dependency failed or the run ended first).
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # When a ready step may start (a retry's backoff), or when a running step's lease ends.
    due_at: Mapped[datetime | None]
    # Bumped at each claim: only the worker holding the current value may record the step's result.
    fence: Mapped[int] = mapped_column(BigInteger, default=0)
    worker: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(default=0)
    # What a step keeps across attempts (the execution job it submitted, so a resumed attempt polls
    # the same job instead of starting another).
    state: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    wait_event: Mapped[str | None] = mapped_column(String(200))
    wait_until: Mapped[datetime | None]
    output: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    decided_by: Mapped[str | None] = mapped_column(String(128))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Attempt(Base):
    """One attempt at a step: what it was given, what came of it, and when."""

    __tablename__ = "workflow_attempt"
    __table_args__ = (
        ForeignKeyConstraint(
            ["run_id", "step"], ["workflow_step.run_id", "workflow_step.name"], ondelete="CASCADE"
        ),
        Index(None, "run_id", "step", "number", unique=True),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID]
    step: Mapped[str] = mapped_column(String(64))
    number: Mapped[int]
    org_id: Mapped[str] = mapped_column(String(64))
    worker: Mapped[str] = mapped_column(String(64))
    # running, completed, failed, abandoned (its worker's lease expired: the process died or hung).
    status: Mapped[str] = mapped_column(String(16), default="running")
    input: Mapped[Any | None] = mapped_column(JSONB)
    output: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]
