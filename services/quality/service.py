"""Projects, their branches and pull requests, analyses and their measures, and the quality gate.

New code is what differs from the baseline: for a pull request, the latest analysis of its base branch
(every line is new when that branch has none); for a branch, the analysis set as its baseline, else its
previous analysis (its first analysis has no new code, as in SonarQube). A line is new when a line diff
of the file against the baseline's (by line hashes) inserts or replaces it; a file the baseline lacks
is new throughout."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.quality import engine, reports
from coder.services.quality.models import Analysis, Base, Branch, File, Issue, Project, PullRequest
from coder.services.quality.schemas import (
    MAX_TOTAL_BYTES,
    AnalysisRead,
    BranchCreate,
    Condition,
    ConditionResult,
    CoverageFormat,
    CoverageRead,
    GateRead,
    Op,
    ProjectCreate,
    ProjectRead,
    ProjectUpdate,
    PullRequestCreate,
)
from coder.shared.contracts.quality import FailingCondition, GateChanged
from coder.shared.errors import Conflict, InvalidField, NotFound, Problem
from coder.shared.repository import OrgScoped, scoped

# SonarQube's "Sonar way" gate, on new code.
DEFAULT_CONDITIONS: list[dict[str, Any]] = [
    {"metric": "new_coverage", "op": "lt", "threshold": 80.0},
    {"metric": "new_violations", "op": "gt", "threshold": 0.0},
    {"metric": "new_duplicated_lines_density", "op": "gt", "threshold": 3.0},
]
SEVERITY_METRICS = {s: f"{s}_violations" for s in engine.SEVERITIES}
# Every measure a gate condition may name.
METRICS = frozenset(
    {
        "files",
        "lines",
        "ncloc",
        "functions",
        "complexity",
        "duplicated_lines",
        "duplicated_blocks",
        "duplicated_lines_density",
        "violations",
        *SEVERITY_METRICS.values(),
        "new_lines",
        "new_duplicated_lines",
        "new_duplicated_lines_density",
        "new_violations",
        *(f"new_{m}" for m in SEVERITY_METRICS.values()),
        "lines_to_cover",
        "uncovered_lines",
        "coverage",
        "new_lines_to_cover",
        "new_uncovered_lines",
        "new_coverage",
        "tests",
        "test_failures",
        "test_errors",
        "skipped_tests",
        "test_execution_time",
        "test_success_density",
    }
)
# The measures of CI's reports, before they come.
NOT_REPORTED: dict[str, Any] = dict.fromkeys(
    (
        "lines_to_cover",
        "uncovered_lines",
        "coverage",
        "new_lines_to_cover",
        "new_uncovered_lines",
        "new_coverage",
        "tests",
        "test_failures",
        "test_errors",
        "skipped_tests",
        "test_execution_time",
        "test_success_density",
    )
)
# At most this many issues of one analysis are stored (the counts cover them all).
MAX_ISSUES_STORED = 20_000


class AnalyzerFailed(Problem):
    status, slug, title = 503, "analyzer-failed", "The analyzer failed"


class NoAnalysis(NotFound):
    slug, title = "no-analysis", "No analysis yet"


def projects(session: AsyncSession, org_id: str) -> OrgScoped[Project]:
    return OrgScoped(Project, session, org_id, "project")


async def get_project(session: AsyncSession, org_id: str, key: str, *, lock: bool = False) -> Project:
    return await projects(session, org_id).get(key, Project.key == key, lock=lock)


def project_read(project: Project) -> ProjectRead:
    return ProjectRead.model_validate(project, from_attributes=True)


def check_conditions(conditions: Sequence[Condition]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for index, condition in enumerate(conditions):
        if condition.metric not in METRICS:
            raise InvalidField(
                f"conditions.{index}.metric",
                f"unknown metric {condition.metric!r}; known: {', '.join(sorted(METRICS))}",
            )
        if any(c["metric"] == condition.metric for c in out):
            raise InvalidField(f"conditions.{index}.metric", f"{condition.metric} has a condition already")
        out.append(condition.model_dump(mode="json"))
    return out


# --- projects ---


async def create_project(session: AsyncSession, org_id: str, actor: str, body: ProjectCreate) -> Project:
    if await projects(session, org_id).find(Project.key == body.key) is not None:
        raise Conflict(f"a project with key {body.key!r} exists", slug="project-exists")
    conditions = DEFAULT_CONDITIONS if body.conditions is None else check_conditions(body.conditions)
    project = Project(
        org_id=org_id,
        key=body.key,
        name=body.name,
        main_branch=body.main_branch,
        plan_id=body.plan_id,
        conditions=[dict(c) for c in conditions],
        created_by=actor,
    )
    session.add(project)
    await session.flush()
    await session.refresh(project)
    return project


async def update_project(session: AsyncSession, org_id: str, key: str, body: ProjectUpdate) -> Project:
    project = await get_project(session, org_id, key, lock=True)
    fields = body.model_fields_set
    if "name" in fields and body.name is not None:
        project.name = body.name
    if "main_branch" in fields and body.main_branch is not None:
        project.main_branch = body.main_branch
    if "plan_id" in fields:
        project.plan_id = body.plan_id
    if "conditions" in fields:
        project.conditions = [] if body.conditions is None else check_conditions(body.conditions)
    await session.flush()
    if "conditions" in fields or "plan_id" in fields:
        await settle_all(session, project)
    await session.refresh(project)
    return project


# --- branches and pull requests ---


async def find_branch(session: AsyncSession, project: Project, name: str) -> Branch | None:
    return await OrgScoped(Branch, session, project.org_id, "branch").find(
        Branch.project_id == project.id, Branch.name == name
    )


async def branch_of(session: AsyncSession, project: Project, name: str) -> Branch:
    """The project's branch `name`, created if it is not there yet."""
    branch = await find_branch(session, project, name)
    if branch is None:
        branch = Branch(org_id=project.org_id, project_id=project.id, name=name)
        session.add(branch)
        await session.flush()
        await session.refresh(branch)
    return branch


async def get_branch(session: AsyncSession, project: Project, branch_id: uuid.UUID) -> Branch:
    return await OrgScoped(Branch, session, project.org_id, "branch").get(
        branch_id, Branch.project_id == project.id, Branch.id == branch_id
    )


async def check_baseline(session: AsyncSession, branch: Branch, analysis_id: uuid.UUID, field: str) -> None:
    found = await OrgScoped(Analysis, session, branch.org_id, "analysis").find(
        Analysis.id == analysis_id, Analysis.branch_id == branch.id
    )
    if found is None:
        raise InvalidField(field, f"no analysis {analysis_id} of branch {branch.name}")


async def create_branch(session: AsyncSession, project: Project, body: BranchCreate) -> Branch:
    if await find_branch(session, project, body.name) is not None:
        raise Conflict(f"branch {body.name!r} exists", slug="branch-exists")
    return await branch_of(session, project, body.name)


async def find_pull_request(session: AsyncSession, project: Project, key: str) -> PullRequest | None:
    return await OrgScoped(PullRequest, session, project.org_id, "pull request").find(
        PullRequest.project_id == project.id, PullRequest.key == key
    )


async def get_pull_request(session: AsyncSession, project: Project, key: str) -> PullRequest:
    found = await find_pull_request(session, project, key)
    if found is None:
        raise NotFound(f"no pull request {key}")
    return found


async def create_pull_request(
    session: AsyncSession, project: Project, body: PullRequestCreate
) -> PullRequest:
    if await find_pull_request(session, project, body.key) is not None:
        raise Conflict(f"pull request {body.key!r} exists", slug="pull-request-exists")
    if body.base == body.branch:
        raise InvalidField("base", "a pull request merges into another branch than its own")
    pull = PullRequest(
        org_id=project.org_id,
        project_id=project.id,
        key=body.key,
        title=body.title,
        branch=body.branch,
        base=body.base,
    )
    session.add(pull)
    await session.flush()
    await session.refresh(pull)
    return pull


Ref = Branch | PullRequest


async def check_ref(
    session: AsyncSession, project: Project, branch: str | None, pull_request: str | None
) -> None:
    """What resolve_ref refuses, checked before the analyzers run."""
    if pull_request is not None:
        await resolve_ref(session, project, branch, pull_request, create=False)


async def resolve_ref(
    session: AsyncSession, project: Project, branch: str | None, pull_request: str | None, *, create: bool
) -> Ref:
    """The branch (default: the project's main branch) or pull request named: a branch is created by
    its first analysis (`create`), a pull request must be declared first."""
    if branch is not None and pull_request is not None:
        raise InvalidField("pull_request", "name a branch or a pull request, not both")
    if pull_request is not None:
        pull = await find_pull_request(session, project, pull_request)
        if pull is None:
            raise InvalidField("pull_request", f"no pull request {pull_request} in project {project.key}")
        return pull
    name = branch or project.main_branch
    if create:
        return await branch_of(session, project, name)
    found = await find_branch(session, project, name)
    if found is None:
        raise NoAnalysis(f"no analysis of branch {name} of project {project.key}")
    return found


def ref_filter(ref: Ref) -> Any:
    return Analysis.branch_id == ref.id if isinstance(ref, Branch) else Analysis.pull_request_id == ref.id


async def latest_analysis(session: AsyncSession, org_id: str, ref: Ref) -> Analysis | None:
    query = (
        scoped(Analysis, org_id)
        .where(ref_filter(ref))
        .order_by(Analysis.created_at.desc(), Analysis.id.desc())
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def _baseline(session: AsyncSession, project: Project, ref: Ref) -> tuple[Analysis | None, bool]:
    """(the analysis new code is measured against, whether a missing one makes everything new)."""
    org_id = project.org_id
    if isinstance(ref, PullRequest):
        base = await find_branch(session, project, ref.base)
        return (None if base is None else await latest_analysis(session, org_id, base)), True
    if ref.baseline_analysis_id is not None:
        chosen = await OrgScoped(Analysis, session, org_id, "analysis").find(
            Analysis.id == ref.baseline_analysis_id
        )
        if chosen is not None:
            return chosen, False
    return await latest_analysis(session, org_id, ref), False


# --- measures ---


def _density(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(100.0 * part / whole, 1)


def code_measures(files: Sequence[engine.FileResult], new: Mapping[str, list[int]]) -> dict[str, Any]:
    lines = sum(f.lines for f in files)
    duplicated = sum(len(f.duplicated_lines) for f in files)
    new_total = sum(len(new.get(f.path, ())) for f in files)
    new_duplicated = sum(len(set(new.get(f.path, ())) & set(f.duplicated_lines)) for f in files)
    return {
        "files": len(files),
        "lines": lines,
        "ncloc": sum(f.ncloc for f in files),
        "functions": sum(f.functions for f in files),
        "complexity": sum(f.complexity for f in files),
        "duplicated_lines": duplicated,
        "duplicated_blocks": sum(f.duplicated_blocks for f in files),
        "duplicated_lines_density": _density(duplicated, lines) or 0.0,
        "new_lines": new_total,
        "new_duplicated_lines": new_duplicated,
        "new_duplicated_lines_density": _density(new_duplicated, new_total),
    }


def issue_measures(findings: Sequence[tuple[engine.Finding, bool]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "violations": len(findings),
        "new_violations": sum(1 for _, new in findings if new),
    }
    for severity, metric in SEVERITY_METRICS.items():
        out[metric] = sum(1 for f, _ in findings if f.severity == severity)
        out[f"new_{metric}"] = sum(1 for f, new in findings if new and f.severity == severity)
    return out


def coverage_measures(files: Sequence[File]) -> dict[str, Any]:
    covered = uncovered = new_covered = new_uncovered = 0
    for f in files:
        if f.covered_lines is None or f.uncovered_lines is None:
            continue
        new = set(f.new_lines)
        covered += len(f.covered_lines)
        uncovered += len(f.uncovered_lines)
        new_covered += len(new.intersection(f.covered_lines))
        new_uncovered += len(new.intersection(f.uncovered_lines))
    return {
        "lines_to_cover": covered + uncovered,
        "uncovered_lines": uncovered,
        "coverage": _density(covered, covered + uncovered),
        "new_lines_to_cover": new_covered + new_uncovered,
        "new_uncovered_lines": new_uncovered,
        "new_coverage": _density(new_covered, new_covered + new_uncovered),
    }


def test_measures(summary: Mapping[str, Any]) -> dict[str, Any]:
    tests, failures, errors = summary["tests"], summary["failures"], summary["errors"]
    executed = tests - summary["skipped"]
    return {
        "tests": tests,
        "test_failures": failures,
        "test_errors": errors,
        "skipped_tests": summary["skipped"],
        "test_execution_time": summary["time_ms"],
        "test_success_density": _density(executed - failures - errors, executed),
    }


# --- the gate ---


def evaluate(conditions: Sequence[Mapping[str, Any]], measures: Mapping[str, Any]) -> list[ConditionResult]:
    results = []
    for condition in conditions:
        actual = measures.get(condition["metric"])
        threshold = float(condition["threshold"])
        if actual is None:
            status = "NONE"
        elif (condition["op"] == Op.LT and actual < threshold) or (
            condition["op"] == Op.GT and actual > threshold
        ):
            status = "ERROR"
        else:
            status = "OK"
        results.append(
            ConditionResult(
                metric=condition["metric"],
                op=Op(condition["op"]),
                threshold=threshold,
                actual=None if actual is None else float(actual),
                status=status,
            )
        )
    return results


def gate_read(project: Project, ref: Ref, analysis: Analysis) -> GateRead:
    results = evaluate(project.conditions, analysis.measures)
    failing = [r for r in results if r.status == "ERROR"]
    return GateRead(
        status="ERROR" if failing else "OK",
        conditions=results,
        failing=failing,
        project_key=project.key,
        branch=ref.name if isinstance(ref, Branch) else None,
        pull_request=ref.key if isinstance(ref, PullRequest) else None,
        analysis_id=analysis.id,
        commit=analysis.commit,
    )


async def settle(session: AsyncSession, project: Project, ref: Ref) -> None:
    """Bring the ref's recorded gate status up to its latest analysis; a change is published as
    `quality.gate.changed` in this transaction."""
    analysis = await latest_analysis(session, project.org_id, ref)
    if analysis is None:
        return
    gate = gate_read(project, ref, analysis)
    if gate.status == ref.gate_status:
        return
    previous, ref.gate_status = ref.gate_status, gate.status
    await session.flush()
    data = GateChanged(
        project_key=project.key,
        branch=gate.branch,
        pull_request=gate.pull_request,
        status=gate.status,
        previous_status=previous,
        failing=[
            FailingCondition(metric=r.metric, op=r.op.value, threshold=r.threshold, actual=r.actual or 0.0)
            for r in gate.failing
        ],
        analysis_id=str(analysis.id),
        commit=analysis.commit,
        plan_id=None if project.plan_id is None else str(project.plan_id),
    )
    await Base.events.publish(
        session,
        "quality.gate.changed",
        data.model_dump(mode="json"),
        org_id=project.org_id,
        subject=project.key,
    )


async def settle_all(session: AsyncSession, project: Project) -> None:
    """After the gate's conditions changed: every branch's and pull request's status again."""
    branches = (
        await session.execute(scoped(Branch, project.org_id).where(Branch.project_id == project.id))
    ).scalars()
    pulls = (
        await session.execute(scoped(PullRequest, project.org_id).where(PullRequest.project_id == project.id))
    ).scalars()
    for ref in [*branches, *pulls]:
        await settle(session, project, ref)


# --- analyses ---


def check_sources(sources: Sequence[engine.Source], field: str) -> None:
    """Paths relative and unique, no path a directory of another, sizes within the limits."""
    seen: set[str] = set()
    total = 0
    for index, source in enumerate(sources):
        at = field.format(index=index)
        why = engine.check_path(source.path)
        if why is not None:
            raise InvalidField(at, f"{source.path[:200]!r} {why}")
        if source.path in seen:
            raise InvalidField(at, f"{source.path!r} is given twice")
        seen.add(source.path)
        total += len(source.text.encode("utf-8", errors="surrogatepass"))
    directories = {"/".join(p.split("/")[:i]) for p in seen for i in range(1, p.count("/") + 1)}
    for index, source in enumerate(sources):
        if source.path in directories:
            raise InvalidField(
                field.format(index=index), f"{source.path!r} is also a directory of another file"
            )
    if total > MAX_TOTAL_BYTES:
        raise InvalidField(field.split(".")[0], f"the files hold more than {MAX_TOTAL_BYTES} bytes")


async def submit(
    session: AsyncSession,
    org_id: str,
    project_key: str,
    actor: str,
    commit: str,
    branch: str | None,
    pull_request: str | None,
    sources: Sequence[engine.Source],
) -> tuple[Project, Analysis, Ref]:
    """Analyse `sources` as `commit` of the ref; store the analysis, its files and issues; settle the
    gate. The analyzers run before the project is locked (its analyses, one after the other, after)."""
    project = await get_project(session, org_id, project_key)
    await check_ref(session, project, branch, pull_request)
    try:
        result = await engine.analyze(sources)
    except engine.AnalysisFailed as exc:
        raise AnalyzerFailed(str(exc)) from None
    project = await get_project(session, org_id, project_key, lock=True)
    ref = await resolve_ref(session, project, branch, pull_request, create=True)
    baseline, all_new = await _baseline(session, project, ref)
    new: dict[str, list[int]] = {}
    if baseline is not None:
        query = scoped(File, project.org_id).with_only_columns(File.path, File.line_hashes)
        rows = (await session.execute(query.where(File.analysis_id == baseline.id))).all()
        before: dict[str, list[str]] = {row.path: row.line_hashes for row in rows}
        new = {f.path: engine.new_lines(f.line_hashes, before.get(f.path)) for f in result.files}
    elif all_new:
        new = {f.path: engine.new_lines(f.line_hashes, None) for f in result.files}
    new_sets = {path: set(lines) for path, lines in new.items()}
    findings = [(f, f.line in new_sets.get(f.path, ())) for f in result.findings]
    analysis = Analysis(
        org_id=project.org_id,
        project_id=project.id,
        branch_id=ref.id if isinstance(ref, Branch) else None,
        pull_request_id=ref.id if isinstance(ref, PullRequest) else None,
        commit=commit,
        baseline_id=None if baseline is None else baseline.id,
        measures={**code_measures(result.files, new), **issue_measures(findings), **NOT_REPORTED},
        created_by=actor,
    )
    session.add(analysis)
    await session.flush()
    await session.execute(
        insert(File),
        [
            {
                "analysis_id": analysis.id,
                "path": f.path,
                "org_id": project.org_id,
                "lines": f.lines,
                "ncloc": f.ncloc,
                "functions": f.functions,
                "complexity": f.complexity,
                "line_hashes": f.line_hashes,
                "new_lines": new.get(f.path, []),
                "duplicated_lines": f.duplicated_lines,
                "duplicated_blocks": f.duplicated_blocks,
            }
            for f in result.files
        ],
    )
    if findings:
        await session.execute(
            insert(Issue),
            [
                {
                    "analysis_id": analysis.id,
                    "org_id": project.org_id,
                    "rule": f.rule,
                    "severity": f.severity,
                    "path": f.path,
                    "line": f.line,
                    "column": f.column,
                    "message": f.message,
                    "new": new_flag,
                }
                for f, new_flag in findings[:MAX_ISSUES_STORED]
            ],
        )
    await settle(session, project, ref)
    return project, analysis, ref


async def get_analysis(
    session: AsyncSession, project: Project, analysis_id: uuid.UUID, *, lock: bool = False
) -> Analysis:
    return await OrgScoped(Analysis, session, project.org_id, "analysis").get(
        analysis_id, Analysis.id == analysis_id, Analysis.project_id == project.id, lock=lock
    )


async def ref_of(session: AsyncSession, analysis: Analysis) -> Ref:
    if analysis.branch_id is not None:
        return await OrgScoped(Branch, session, analysis.org_id, "branch").get(
            analysis.branch_id, Branch.id == analysis.branch_id
        )
    return await OrgScoped(PullRequest, session, analysis.org_id, "pull request").get(
        analysis.pull_request_id, PullRequest.id == analysis.pull_request_id
    )


def analysis_read(project: Project, ref: Ref, analysis: Analysis) -> AnalysisRead:
    gate = gate_read(project, ref, analysis)
    return AnalysisRead(
        id=analysis.id,
        project_key=project.key,
        branch=gate.branch,
        pull_request=gate.pull_request,
        commit=analysis.commit,
        baseline_id=analysis.baseline_id,
        measures=analysis.measures,
        tests=analysis.tests,
        coverage_format=analysis.coverage_format,
        gate=gate,
        created_at=analysis.created_at,
    )


async def report_tests(session: AsyncSession, project: Project, analysis: Analysis, junit: str) -> Ref:
    summary = reports.junit(junit, "junit")
    analysis.tests = summary
    analysis.measures = {**analysis.measures, **test_measures(summary)}
    await session.flush()
    ref = await ref_of(session, analysis)
    await settle(session, project, ref)
    return ref


async def report_coverage(
    session: AsyncSession, project: Project, analysis: Analysis, fmt: CoverageFormat, report: str
) -> CoverageRead:
    """Replace the analysis's coverage with the report's: its files matched to the analysis's paths."""
    coverage = reports.cobertura(report, "report")
    files = list(
        (await session.execute(scoped(File, project.org_id).where(File.analysis_id == analysis.id))).scalars()
    )
    by_path = {f.path: f for f in files}
    matched = reports.match_paths(sorted(coverage.files()), coverage.sources, set(by_path))
    per_path: dict[str, tuple[set[int], set[int]]] = {}
    for name, path in matched.items():
        covered, uncovered = per_path.setdefault(path, (set(), set()))
        covered |= coverage.covered.get(name, set())
        uncovered |= coverage.uncovered.get(name, set())
    for f in files:
        if f.path in per_path:
            covered, uncovered = per_path[f.path]
            f.covered_lines, f.uncovered_lines = sorted(covered), sorted(uncovered - covered)
        else:
            f.covered_lines = f.uncovered_lines = None
    analysis.coverage_format = fmt.value
    analysis.measures = {**analysis.measures, **coverage_measures(files)}
    await session.flush()
    ref = await ref_of(session, analysis)
    await settle(session, project, ref)
    unmatched = sorted(coverage.files() - set(matched))
    return CoverageRead(
        analysis=analysis_read(project, ref, analysis), matched_files=len(per_path), unmatched=unmatched[:50]
    )
