"""HTTP routes of `quality` (SonarQube style). Paths are relative to `/api/quality` at the gateway."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, status
from sqlalchemy import false

from coder.services.quality import archives, engine, service
from coder.services.quality.models import Analysis, Branch, Issue, Project, PullRequest
from coder.services.quality.schemas import (
    MAX_ARCHIVE_BYTES,
    AnalysisCreate,
    AnalysisRead,
    AnalysisSummary,
    BranchCreate,
    BranchRead,
    BranchUpdate,
    CoverageRead,
    CoverageReport,
    GateRead,
    IssueRead,
    MeasuresRead,
    ProjectCreate,
    ProjectRead,
    ProjectUpdate,
    PullRequestCreate,
    PullRequestRead,
    Severity,
    TestReport,
)
from coder.shared.auth import Principal, require
from coder.shared.db import SessionDep
from coder.shared.errors import InvalidField, Problem, problem_responses
from coder.shared.pagination import Page, PageDep, PageParams, paginate
from coder.shared.repository import scoped

router = APIRouter(prefix="/v1", tags=["quality"])

Reader = Annotated[Principal, require("quality:read")]
Writer = Annotated[Principal, require("quality:write")]
Analyzer = Annotated[Principal, require("quality:analyze")]
KeyPath = Annotated[
    str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$", description="The project's key")
]
PullPath = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="The pull request's key")
]
BranchQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9_./@+-]+$",
        description="A branch (default: the project's main branch)",
    ),
]
PullQuery = Annotated[
    str | None,
    Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="A pull request's key"),
]


async def _check_cursor(
    session: SessionDep, principal: Principal, order_by: tuple[Any, ...], params: PageParams
) -> None:
    """A forged cursor is a 400 before anything addressed is looked up (a 404 would hide it)."""
    model = order_by[0].class_
    await paginate(session, scoped(model, principal.org_id).where(false()), order_by, params)


# --- projects ---


@router.post(
    "/projects",
    response_model=ProjectRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({409}),
)
async def create_project(body: ProjectCreate, session: SessionDep, principal: Writer) -> ProjectRead:
    """Create a project; without `conditions` its gate is SonarQube's "Sonar way" on new code."""
    return service.project_read(
        await service.create_project(session, principal.org_id, principal.subject, body)
    )


@router.get("/projects", response_model=Page[ProjectRead])
async def list_projects(session: SessionDep, principal: Reader, params: PageDep) -> Page[ProjectRead]:
    """The organization's projects by key."""
    rows = await paginate(session, scoped(Project, principal.org_id), (Project.key,), params)
    return rows.page(service.project_read)


@router.get("/projects/{project_key}", response_model=ProjectRead)
async def read_project(project_key: KeyPath, session: SessionDep, principal: Reader) -> ProjectRead:
    return service.project_read(await service.get_project(session, principal.org_id, project_key))


@router.patch("/projects/{project_key}", response_model=ProjectRead)
async def update_project(
    project_key: KeyPath, body: ProjectUpdate, session: SessionDep, principal: Writer
) -> ProjectRead:
    """Change the name, the main branch, the linked plan or the gate's conditions (every branch's and pull
    request's gate is evaluated again: a change of status is published)."""
    return service.project_read(await service.update_project(session, principal.org_id, project_key, body))


@router.delete("/projects/{project_key}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_project(project_key: KeyPath, session: SessionDep, principal: Writer) -> Response:
    """Delete the project with its branches, pull requests and analyses."""
    project = await service.get_project(session, principal.org_id, project_key, lock=True)
    await session.delete(project)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- branches and pull requests ---


def _branch_read(branch: Branch) -> BranchRead:
    return BranchRead.model_validate(branch, from_attributes=True)


def _pull_read(pull: PullRequest) -> PullRequestRead:
    return PullRequestRead.model_validate(pull, from_attributes=True)


@router.post(
    "/projects/{project_key}/branches",
    response_model=BranchRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({409}),
)
async def create_branch(
    project_key: KeyPath, body: BranchCreate, session: SessionDep, principal: Writer
) -> BranchRead:
    """Declare a branch (its first analysis does so too)."""
    project = await service.get_project(session, principal.org_id, project_key)
    branch = await service.create_branch(session, project, body)
    if body.baseline_analysis_id is not None:
        await service.check_baseline(session, branch, body.baseline_analysis_id, "baseline_analysis_id")
        branch.baseline_analysis_id = body.baseline_analysis_id
        await session.flush()
    return _branch_read(branch)


@router.get("/projects/{project_key}/branches", response_model=Page[BranchRead])
async def list_branches(
    project_key: KeyPath, session: SessionDep, principal: Reader, params: PageDep
) -> Page[BranchRead]:
    await _check_cursor(session, principal, (Branch.name,), params)
    project = await service.get_project(session, principal.org_id, project_key)
    query = scoped(Branch, principal.org_id).where(Branch.project_id == project.id)
    return (await paginate(session, query, (Branch.name,), params)).page(_branch_read)


@router.patch("/projects/{project_key}/branches/{branch_id}", response_model=BranchRead)
async def update_branch(
    project_key: KeyPath, branch_id: uuid.UUID, body: BranchUpdate, session: SessionDep, principal: Writer
) -> BranchRead:
    """Set (or, with null, clear) the analysis the branch's new code is measured against; it applies from
    the branch's next analysis on."""
    project = await service.get_project(session, principal.org_id, project_key)
    branch = await service.get_branch(session, project, branch_id)
    if body.baseline_analysis_id is not None:
        await service.check_baseline(session, branch, body.baseline_analysis_id, "baseline_analysis_id")
    branch.baseline_analysis_id = body.baseline_analysis_id
    await session.flush()
    return _branch_read(branch)


@router.post(
    "/projects/{project_key}/pull-requests",
    response_model=PullRequestRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({409}),
)
async def create_pull_request(
    project_key: KeyPath, body: PullRequestCreate, session: SessionDep, principal: Analyzer
) -> PullRequestRead:
    """Declare a pull request of `branch` into `base` before analysing it."""
    project = await service.get_project(session, principal.org_id, project_key)
    return _pull_read(await service.create_pull_request(session, project, body))


@router.get("/projects/{project_key}/pull-requests", response_model=Page[PullRequestRead])
async def list_pull_requests(
    project_key: KeyPath, session: SessionDep, principal: Reader, params: PageDep
) -> Page[PullRequestRead]:
    await _check_cursor(session, principal, (PullRequest.key,), params)
    project = await service.get_project(session, principal.org_id, project_key)
    query = scoped(PullRequest, principal.org_id).where(PullRequest.project_id == project.id)
    return (await paginate(session, query, (PullRequest.key,), params)).page(_pull_read)


@router.get("/projects/{project_key}/pull-requests/{pull_request_key}", response_model=PullRequestRead)
async def read_pull_request(
    project_key: KeyPath, pull_request_key: PullPath, session: SessionDep, principal: Reader
) -> PullRequestRead:
    project = await service.get_project(session, principal.org_id, project_key)
    return _pull_read(await service.get_pull_request(session, project, pull_request_key))


# --- analyses ---

ANALYZER_PROBLEMS = {503}


@router.post(
    "/projects/{project_key}/analyses",
    response_model=AnalysisRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(ANALYZER_PROBLEMS),
)
async def submit_analysis(
    project_key: KeyPath, body: AnalysisCreate, session: SessionDep, principal: Analyzer
) -> AnalysisRead:
    """Analyse a batch of files as `commit` of a branch or pull request: ruff's findings on Python files,
    radon's complexity, duplicated blocks; new code against the baseline; the gate settled."""
    sources = [engine.Source(f.path, f.content) for f in body.files]
    service.check_sources(sources, "files.{index}.path")
    project, analysis, ref = await service.submit(
        session,
        principal.org_id,
        project_key,
        principal.subject,
        body.commit,
        body.branch,
        body.pull_request,
        sources,
    )
    return service.analysis_read(project, ref, analysis)


ARCHIVE_TYPES = ("application/gzip", "application/x-tar", "application/zip", "application/octet-stream")


class TooLarge(Problem):
    status, slug, title = 413, "payload-too-large", "Payload too large"


@router.post(
    "/projects/{project_key}/analyses/archive",
    response_model=AnalysisRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({*ANALYZER_PROBLEMS, 400, 413}),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A tar (plain, gzip, bzip2 or xz) or zip archive of the sources",
            "content": {kind: {"schema": {"type": "string", "format": "binary"}} for kind in ARCHIVE_TYPES},
        }
    },
)
async def submit_archive(
    project_key: KeyPath,
    request: Request,
    session: SessionDep,
    principal: Analyzer,
    commit: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="Required")
    ] = None,
    branch: BranchQuery = None,
    pull_request: PullQuery = None,
) -> AnalysisRead:
    """Analyse the text files of an archive sent as the request body, as the batch route does. Binary
    files and links are skipped; at most 20 MB compressed (413 beyond), 2000 files, 1 MB a file, 20 MB
    in all; a member path outside the tree is a 422 naming `archive`."""
    await service.get_project(session, principal.org_id, project_key)
    if commit is None:  # checked here, after the project: another org's key is a 404 all the same
        raise InvalidField("query.commit", "the commit analysed is required")
    data = bytearray()
    async for chunk in request.stream():
        data.extend(chunk)
        if len(data) > MAX_ARCHIVE_BYTES:
            raise TooLarge(f"the archive is larger than {MAX_ARCHIVE_BYTES} bytes")
    sources, _skipped = archives.sources(bytes(data))
    service.check_sources(sources, "archive")
    project, analysis, ref = await service.submit(
        session, principal.org_id, project_key, principal.subject, commit, branch, pull_request, sources
    )
    return service.analysis_read(project, ref, analysis)


def _summary(analysis: Analysis) -> AnalysisSummary:
    return AnalysisSummary.model_validate(analysis, from_attributes=True)


@router.get("/projects/{project_key}/analyses", response_model=Page[AnalysisSummary])
async def list_analyses(
    project_key: KeyPath,
    session: SessionDep,
    principal: Reader,
    params: PageDep,
    branch: BranchQuery = None,
    pull_request: PullQuery = None,
) -> Page[AnalysisSummary]:
    """The analyses of a branch (default: the main branch) or pull request, newest first."""
    await _check_cursor(session, principal, (Analysis.created_at, Analysis.id), params)
    project = await service.get_project(session, principal.org_id, project_key)
    ref = await service.resolve_ref(session, project, branch, pull_request, create=False)
    query = scoped(Analysis, principal.org_id).where(service.ref_filter(ref))
    rows = await paginate(session, query, (Analysis.created_at, Analysis.id), params, descending=True)
    return rows.page(_summary)


@router.get("/projects/{project_key}/analyses/{analysis_id}", response_model=AnalysisRead)
async def read_analysis(
    project_key: KeyPath, analysis_id: uuid.UUID, session: SessionDep, principal: Reader
) -> AnalysisRead:
    project = await service.get_project(session, principal.org_id, project_key)
    analysis = await service.get_analysis(session, project, analysis_id)
    return service.analysis_read(project, await service.ref_of(session, analysis), analysis)


@router.put("/projects/{project_key}/analyses/{analysis_id}/tests", response_model=AnalysisRead)
async def report_tests(
    project_key: KeyPath, analysis_id: uuid.UUID, body: TestReport, session: SessionDep, principal: Analyzer
) -> AnalysisRead:
    """CI's test results (JUnit XML) for the analysis, replacing any earlier report: tests, failures,
    errors, skipped, time. Malformed XML is a 422 naming `junit`."""
    project = await service.get_project(session, principal.org_id, project_key, lock=True)
    analysis = await service.get_analysis(session, project, analysis_id, lock=True)
    ref = await service.report_tests(session, project, analysis, body.junit)
    return service.analysis_read(project, ref, analysis)


@router.put("/projects/{project_key}/analyses/{analysis_id}/coverage", response_model=CoverageRead)
async def report_coverage(
    project_key: KeyPath,
    analysis_id: uuid.UUID,
    body: CoverageReport,
    session: SessionDep,
    principal: Analyzer,
) -> CoverageRead:
    """CI's line coverage (Cobertura XML, as coverage.py's `coverage xml` writes) for the analysis,
    replacing any earlier report; reported files are matched to the analysis's paths (through the
    report's `<source>` roots). Malformed XML is a 422 naming `report`."""
    project = await service.get_project(session, principal.org_id, project_key, lock=True)
    analysis = await service.get_analysis(session, project, analysis_id, lock=True)
    return await service.report_coverage(session, project, analysis, body.format, body.report)


# --- measures, issues, gate ---


async def _latest(
    session: SessionDep, principal: Principal, project_key: str, branch: str | None, pull_request: str | None
) -> tuple[Project, service.Ref, Analysis]:
    project = await service.get_project(session, principal.org_id, project_key)
    ref = await service.resolve_ref(session, project, branch, pull_request, create=False)
    analysis = await service.latest_analysis(session, principal.org_id, ref)
    if analysis is None:
        raise service.NoAnalysis(
            f"no analysis of {ref.name if isinstance(ref, Branch) else 'pull request ' + ref.key} yet"
        )
    return project, ref, analysis


@router.get("/projects/{project_key}/measures", response_model=MeasuresRead)
async def read_measures(
    project_key: KeyPath,
    session: SessionDep,
    principal: Reader,
    branch: BranchQuery = None,
    pull_request: PullQuery = None,
) -> MeasuresRead:
    """The measures of the latest analysis of a branch (default: the main branch) or pull request; `new_*`
    are on new code. A measure CI has not reported is null."""
    project, ref, analysis = await _latest(session, principal, project_key, branch, pull_request)
    gate = service.gate_read(project, ref, analysis)
    return MeasuresRead(
        project_key=project.key,
        branch=gate.branch,
        pull_request=gate.pull_request,
        analysis_id=analysis.id,
        commit=analysis.commit,
        measures=analysis.measures,
    )


@router.get("/projects/{project_key}/issues", response_model=Page[IssueRead])
async def list_issues(
    project_key: KeyPath,
    session: SessionDep,
    principal: Reader,
    params: PageDep,
    branch: BranchQuery = None,
    pull_request: PullQuery = None,
    severity: Severity | None = None,
    rule: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    new_code: Annotated[
        bool | None, Query(description="Only issues on new code (true) or old (false)")
    ] = None,
) -> Page[IssueRead]:
    """The issues of the latest analysis of a branch (default: the main branch) or pull request, by file
    and line."""
    await _check_cursor(session, principal, (Issue.path, Issue.line, Issue.id), params)
    _, _, analysis = await _latest(session, principal, project_key, branch, pull_request)
    query = scoped(Issue, principal.org_id).where(Issue.analysis_id == analysis.id)
    if severity is not None:
        query = query.where(Issue.severity == severity.value)
    if rule is not None:
        query = query.where(Issue.rule == rule)
    if new_code is not None:
        query = query.where(Issue.new.is_(new_code))
    rows = await paginate(session, query, (Issue.path, Issue.line, Issue.id), params)
    return rows.page(lambda issue: IssueRead.model_validate(issue, from_attributes=True))


@router.get("/projects/{project_key}/gate", response_model=GateRead)
async def read_gate(
    project_key: KeyPath,
    session: SessionDep,
    principal: Reader,
    branch: BranchQuery = None,
    pull_request: PullQuery = None,
) -> GateRead:
    """The quality gate of a branch (default: the main branch) or pull request at its latest analysis:
    OK or ERROR, every condition with its measured value, and the failing ones. A condition whose measure
    has no value (no new lines to cover yet) passes. 404 `no-analysis` before the first analysis."""
    project, ref, analysis = await _latest(session, principal, project_key, branch, pull_request)
    return service.gate_read(project, ref, analysis)
