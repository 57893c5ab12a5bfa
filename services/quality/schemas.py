from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, Field

from coder.shared.schemas import Input

ProjectKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="The project's key: letters, digits, '_', '.', ':' and '-' (SonarQube's rule)",
    ),
]
BranchName = Annotated[
    str,
    Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_./@+-]+$", description="A git branch name"),
]
PullRequestKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="The pull request's id, e.g. 42",
    ),
]
Commit = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="A commit id")
]

# Limits of one analysis (files in a batch or an archive).
MAX_FILES = 2000
MAX_FILE_CHARS = 1_000_000
MAX_TOTAL_BYTES = 20_000_000
MAX_ARCHIVE_BYTES = 20_000_000
MAX_REPORT_CHARS = 10_000_000
MAX_CONDITIONS = 20


class Severity(StrEnum):
    BLOCKER = "blocker"
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    INFO = "info"


class Op(StrEnum):
    """An ERROR when the measure is less than (`lt`) or greater than (`gt`) the threshold."""

    LT = "lt"
    GT = "gt"


class Condition(Input):
    metric: Annotated[str, Field(min_length=1, max_length=64, description="A measure, e.g. new_coverage")]
    op: Op
    threshold: Annotated[float, Field(ge=-1e12, le=1e12)]


class ConditionRead(BaseModel):
    metric: str
    op: Op
    threshold: float


Conditions = Annotated[list[Condition], Field(max_length=MAX_CONDITIONS)]


class ProjectCreate(Input):
    key: ProjectKey
    name: Annotated[str, Field(min_length=1, max_length=200)]
    main_branch: BranchName = "main"
    plan_id: uuid.UUID | None = Field(
        default=None, description="A planning plan: a failing gate opens fix tasks there"
    )
    conditions: Conditions | None = Field(
        default=None,
        description="The quality gate; default: new_coverage < 80, new_violations > 0, "
        "new_duplicated_lines_density > 3",
    )


class ProjectUpdate(Input):
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    main_branch: BranchName | None = None
    plan_id: uuid.UUID | None = None
    conditions: Conditions | None = None


class ProjectRead(BaseModel):
    id: uuid.UUID
    key: str
    name: str
    main_branch: str
    plan_id: uuid.UUID | None
    conditions: list[ConditionRead]
    created_at: datetime


class BranchCreate(Input):
    name: BranchName
    baseline_analysis_id: uuid.UUID | None = None


class BranchUpdate(Input):
    baseline_analysis_id: uuid.UUID | None = Field(
        description="New code is measured against this analysis of the branch; null: against the previous one"
    )


class BranchRead(BaseModel):
    id: uuid.UUID
    name: str
    baseline_analysis_id: uuid.UUID | None
    gate_status: str | None
    created_at: datetime


class PullRequestCreate(Input):
    key: PullRequestKey
    branch: BranchName
    base: BranchName = Field(description="The branch it merges into: its latest analysis is the baseline")
    title: Annotated[str, Field(max_length=300)] = ""


class PullRequestRead(BaseModel):
    id: uuid.UUID
    key: str
    title: str
    branch: str
    base: str
    gate_status: str | None
    created_at: datetime


class SourceFile(Input):
    path: Annotated[str, Field(min_length=1, max_length=500, description="Relative, with forward slashes")]
    content: Annotated[str, Field(max_length=MAX_FILE_CHARS)]


class AnalysisCreate(Input):
    """Exactly one of `branch` and `pull_request` (neither: the project's main branch)."""

    commit: Commit
    branch: BranchName | None = None
    pull_request: PullRequestKey | None = None
    files: Annotated[list[SourceFile], Field(min_length=1, max_length=MAX_FILES)]


class TestReport(Input):
    junit: Annotated[str, Field(min_length=1, max_length=MAX_REPORT_CHARS, description="A JUnit XML report")]


class CoverageFormat(StrEnum):
    COBERTURA = "cobertura"
    COVERAGE_PY = "coverage.py"


class CoverageReport(Input):
    format: CoverageFormat = CoverageFormat.COBERTURA
    report: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_REPORT_CHARS,
            description="Cobertura XML (coverage.py's `coverage xml`)",
        ),
    ]


class ConditionResult(BaseModel):
    metric: str
    op: Op
    threshold: float
    actual: float | None = Field(
        description="The measured value; null when there is none (the condition passes)"
    )
    status: str = Field(description="OK, ERROR, or NONE when the measure has no value")


class GateRead(BaseModel):
    status: str = Field(description="OK or ERROR")
    conditions: list[ConditionResult]
    failing: list[ConditionResult]
    project_key: str
    branch: str | None
    pull_request: str | None
    analysis_id: uuid.UUID
    commit: str


class AnalysisRead(BaseModel):
    id: uuid.UUID
    project_key: str
    branch: str | None
    pull_request: str | None
    commit: str
    baseline_id: uuid.UUID | None
    measures: dict[str, Any]
    tests: dict[str, Any] | None
    coverage_format: str | None
    gate: GateRead
    created_at: datetime


class AnalysisSummary(BaseModel):
    id: uuid.UUID
    commit: str
    baseline_id: uuid.UUID | None
    measures: dict[str, Any]
    created_at: datetime


class CoverageRead(BaseModel):
    analysis: AnalysisRead
    matched_files: int
    unmatched: list[str] = Field(description="Reported files that are not in the analysis (at most 50)")


class MeasuresRead(BaseModel):
    project_key: str
    branch: str | None
    pull_request: str | None
    analysis_id: uuid.UUID
    commit: str
    measures: dict[str, Any]


class IssueRead(BaseModel):
    id: int
    rule: str
    severity: Severity
    path: str
    line: int
    column: int
    message: str
    new: bool
