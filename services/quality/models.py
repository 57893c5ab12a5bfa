import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coder.shared.db import TargetBase


class Base(TargetBase, DeclarativeBase, target="quality"):
    """The quality target's tables; `Base.events` is its outbox and inbox."""


class Project(Base):
    """A project (SonarQube's): its key is unique in the organization and addresses it."""

    __tablename__ = "quality_project"
    __table_args__ = (
        UniqueConstraint("org_id", "key"),
        Index(None, "org_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    main_branch: Mapped[str] = mapped_column(String(255), default="main")
    # The planning plan a failing gate opens fix tasks in (carried by quality.gate.changed).
    plan_id: Mapped[uuid.UUID | None]
    # The quality gate: [{"metric": ..., "op": "lt"|"gt", "threshold": float}, ...]
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Branch(Base):
    """A branch of a project; created by its first analysis or by hand."""

    __tablename__ = "quality_branch"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("quality_project.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    # New code is measured against this analysis when set, else against the branch's previous one.
    baseline_analysis_id: Mapped[uuid.UUID | None]
    gate_status: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class PullRequest(Base):
    """A pull request: its source branch merges into `base`, whose latest analysis is its baseline."""

    __tablename__ = "quality_pull_request"
    __table_args__ = (
        UniqueConstraint("project_id", "key"),
        Index(None, "project_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("quality_project.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(300), default="")
    branch: Mapped[str] = mapped_column(String(255))
    base: Mapped[str] = mapped_column(String(255))
    gate_status: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Analysis(Base):
    """One analysis of a commit on a branch or a pull request, with its measures (recomputed when CI
    reports tests or coverage for it)."""

    __tablename__ = "quality_analysis"
    __table_args__ = (
        Index(None, "project_id", "branch_id", "created_at", "id"),
        Index(None, "project_id", "pull_request_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("quality_project.id", ondelete="CASCADE"))
    branch_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("quality_branch.id", ondelete="CASCADE"))
    pull_request_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("quality_pull_request.id", ondelete="CASCADE")
    )
    commit: Mapped[str] = mapped_column(String(64))
    # The analysis new code was measured against (None: no baseline; see service.new_lines).
    baseline_id: Mapped[uuid.UUID | None]
    measures: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    # The JUnit summary CI reported: counts, and the first failing test cases.
    tests: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    coverage_format: Mapped[str | None] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(128))
    # clock_timestamp, not now(): two analyses of one transaction still come in order.
    created_at: Mapped[datetime] = mapped_column(server_default=func.clock_timestamp())


class File(Base):
    """One source file of an analysis, with the per-line data measures are computed from."""

    __tablename__ = "quality_file"

    analysis_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("quality_analysis.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(String(500), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    lines: Mapped[int] = mapped_column(Integer)
    ncloc: Mapped[int] = mapped_column(Integer)
    functions: Mapped[int] = mapped_column(Integer, default=0)
    complexity: Mapped[int] = mapped_column(Integer, default=0)
    # A short hash of each line (trailing blanks ignored): the next analysis diffs against them.
    line_hashes: Mapped[list[str]] = mapped_column(ARRAY(String(16)), default=list)
    new_lines: Mapped[list[int]] = mapped_column(ARRAY(Integer), default=list)
    duplicated_lines: Mapped[list[int]] = mapped_column(ARRAY(Integer), default=list)
    duplicated_blocks: Mapped[int] = mapped_column(Integer, default=0)
    # Set by a coverage report: the lines it names as executed (covered) or not.
    covered_lines: Mapped[list[int] | None] = mapped_column(ARRAY(Integer))
    uncovered_lines: Mapped[list[int] | None] = mapped_column(ARRAY(Integer))


class Issue(Base):
    """One finding of an analysis: a rule broken at a file's line."""

    __tablename__ = "quality_issue"
    __table_args__ = (Index(None, "analysis_id", "path", "line", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    analysis_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("quality_analysis.id", ondelete="CASCADE"))
    org_id: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str] = mapped_column(String(100))
    severity: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(500))
    line: Mapped[int] = mapped_column(Integer)
    column: Mapped[int] = mapped_column(Integer, default=1)
    message: Mapped[str] = mapped_column(Text)
    # On a line that is new code (see service.new_lines).
    new: Mapped[bool] = mapped_column(default=False)
