"""HTTP routes of `learning`. Paths are relative to `/api/learning` at the gateway."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import Field, ValidationError

from coder.services.learning import service, xapi
from coder.services.learning.models import Attempt, Course, Enrollment, Path, Statement
from coder.services.learning.schemas import (
    Agent,
    AttemptCreate,
    AttemptRead,
    CourseCreate,
    CourseRead,
    CourseStatus,
    CourseUpdate,
    EnrollmentRead,
    LessonCreate,
    LessonRead,
    ModuleCreate,
    ModuleRead,
    OutlineRead,
    PathCreate,
    PathProgressRead,
    PathRead,
    ProgressRead,
    QuizCreate,
    QuizRead,
    StatementCreate,
    StatementResult,
)
from coder.shared.auth import Principal, require
from coder.shared.db import SessionDep
from coder.shared.errors import Forbidden, InvalidField, NotFound, problem_responses
from coder.shared.pagination import Page, PageDep, paginate
from coder.shared.repository import OrgScoped, scoped

router = APIRouter(prefix="/v1", tags=["learning"])

Reader = Annotated[Principal, require("learning:read")]
Learner = Annotated[Principal, require("learning:learn")]
Manager = Annotated[Principal, require("learning:manage")]


# --- courses ---


@router.post("/courses", response_model=CourseRead, status_code=status.HTTP_201_CREATED)
async def create_course(body: CourseCreate, session: SessionDep, principal: Manager) -> CourseRead:
    """Create a course, as a draft: only its managers see it until it is published."""
    course = Course(
        org_id=principal.org_id, title=body.title, description=body.description, created_by=principal.subject
    )
    session.add(course)
    await session.flush()
    await session.refresh(course)
    return service.course_read(course)


@router.get("/courses", response_model=Page[CourseRead])
async def list_courses(
    session: SessionDep,
    principal: Reader,
    params: PageDep,
    status_: Annotated[
        CourseStatus | None, Query(alias="status", description="Drafts are listed to managers only")
    ] = None,
) -> Page[CourseRead]:
    """The organization's courses, newest first: the published ones (and, to managers, the drafts)."""
    query = scoped(Course, principal.org_id)
    if not principal.can(service.MANAGE):
        query = query.where(Course.status == CourseStatus.PUBLISHED.value)
    if status_ is not None:
        query = query.where(Course.status == status_.value)
    rows = await paginate(session, query, (Course.created_at, Course.id), params, descending=True)
    return rows.page(service.course_read)


@router.get("/courses/{course_id}", response_model=OutlineRead)
async def read_course(course_id: uuid.UUID, session: SessionDep, principal: Reader) -> OutlineRead:
    """The course with its outline: modules in order, each with its lessons and quizzes."""
    return await service.outline(session, await service.visible_course(session, principal, course_id))


@router.patch("/courses/{course_id}", response_model=CourseRead, responses=problem_responses({409}))
async def update_course(
    course_id: uuid.UUID, body: CourseUpdate, session: SessionDep, principal: Manager
) -> CourseRead:
    """Change the title or description, or publish (409 `empty-course` with nothing required in it)."""
    course = await service.update_course(session, principal.org_id, principal.subject, course_id, body)
    return service.course_read(course)


@router.delete("/courses/{course_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_course(course_id: uuid.UUID, session: SessionDep, principal: Manager) -> Response:
    """Delete the course with its outline, enrollments, progress and attempts (its statements stay)."""
    await service.courses(session, principal.org_id).delete(course_id, Course.id == course_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/courses/{course_id}/modules", response_model=ModuleRead, status_code=status.HTTP_201_CREATED)
async def add_module(
    course_id: uuid.UUID, body: ModuleCreate, session: SessionDep, principal: Manager
) -> ModuleRead:
    """Add a module at the end of the course's outline."""
    module = await service.add_module(session, principal.org_id, course_id, body.title)
    return ModuleRead(id=module.id, title=module.title, position=module.position, lessons=[], quizzes=[])


@router.post(
    "/courses/{course_id}/modules/{module_id}/lessons",
    response_model=LessonRead,
    status_code=status.HTTP_201_CREATED,
)
async def add_lesson(
    course_id: uuid.UUID, module_id: uuid.UUID, body: LessonCreate, session: SessionDep, principal: Manager
) -> LessonRead:
    """Add a lesson at the end of a module."""
    return service.lesson_read(
        await service.add_lesson(session, principal.org_id, course_id, module_id, body)
    )


@router.post(
    "/courses/{course_id}/modules/{module_id}/quizzes",
    response_model=QuizRead,
    status_code=status.HTTP_201_CREATED,
)
async def add_quiz(
    course_id: uuid.UUID, module_id: uuid.UUID, body: QuizCreate, session: SessionDep, principal: Manager
) -> QuizRead:
    """Add a quiz at the end of a module: single choice questions have one right option, multiple
    choice ones any number (422 naming `questions.<n>.correct` otherwise)."""
    quiz = await service.add_quiz(session, principal.org_id, course_id, module_id, body)
    return service.quiz_read(quiz, with_key=True)


@router.get("/courses/{course_id}/lessons/{lesson_id}", response_model=LessonRead)
async def read_lesson(
    course_id: uuid.UUID, lesson_id: uuid.UUID, session: SessionDep, principal: Reader
) -> LessonRead:
    return service.lesson_read(await service.get_lesson(session, principal, course_id, lesson_id))


@router.get("/courses/{course_id}/quizzes/{quiz_id}", response_model=QuizRead)
async def read_quiz(
    course_id: uuid.UUID, quiz_id: uuid.UUID, session: SessionDep, principal: Reader
) -> QuizRead:
    """The quiz's questions; the answer key (`correct`) only to the course's managers."""
    quiz = await service.get_quiz(session, principal, course_id, quiz_id)
    return service.quiz_read(quiz, with_key=principal.can(service.MANAGE))


# --- learners ---


def _enrollment_read(enrollment: Enrollment) -> EnrollmentRead:
    return EnrollmentRead.model_validate(enrollment, from_attributes=True)


@router.post(
    "/courses/{course_id}/enrollments",
    response_model=EnrollmentRead,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "Already enrolled", "model": EnrollmentRead}, **problem_responses({409})},
)
async def enroll(
    course_id: uuid.UUID, session: SessionDep, principal: Learner, response: Response
) -> EnrollmentRead:
    """Enroll the caller in a published course (201; 200 with the same enrollment when already in it;
    409 `draft-course` for a draft)."""
    enrollment, new = await service.enroll(session, principal, course_id)
    if not new:
        response.status_code = status.HTTP_200_OK
    return _enrollment_read(enrollment)


@router.get("/courses/{course_id}/enrollments", response_model=Page[EnrollmentRead])
async def list_enrollments(
    course_id: uuid.UUID, session: SessionDep, principal: Manager, params: PageDep
) -> Page[EnrollmentRead]:
    """The course's learners, by enrollment time."""
    query = scoped(Enrollment, principal.org_id).where(Enrollment.course_id == course_id)
    rows = await paginate(session, query, (Enrollment.enrolled_at, Enrollment.id), params)
    if not rows.items:  # an empty page of a course, or no course (checked after the cursor: 400 first)
        await service.courses(session, principal.org_id).get(course_id, Course.id == course_id)
    return rows.page(_enrollment_read)


@router.post(
    "/courses/{course_id}/lessons/{lesson_id}/complete",
    response_model=ProgressRead,
    responses=problem_responses({409}),
)
async def complete_lesson(
    course_id: uuid.UUID, lesson_id: uuid.UUID, session: SessionDep, principal: Learner
) -> ProgressRead:
    """Mark a lesson done for the caller (409 `not-enrolled` before enrolling); the answer is the
    caller's progress in the course, completed when nothing required is left."""
    return await service.complete_lesson(session, principal, course_id, lesson_id)


@router.post(
    "/courses/{course_id}/quizzes/{quiz_id}/attempts",
    response_model=AttemptRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({409}),
)
async def attempt_quiz(
    course_id: uuid.UUID, quiz_id: uuid.UUID, body: AttemptCreate, session: SessionDep, principal: Learner
) -> AttemptRead:
    """Submit answers (one list of option indexes per question): scored here, with the right options
    shown once submitted. A pass that was the last thing required completes the course."""
    attempt, quiz = await service.attempt_quiz(session, principal, course_id, quiz_id, body)
    return service.attempt_read(attempt, quiz)


@router.get("/courses/{course_id}/quizzes/{quiz_id}/attempts", response_model=Page[AttemptRead])
async def list_attempts(
    course_id: uuid.UUID, quiz_id: uuid.UUID, session: SessionDep, principal: Learner, params: PageDep
) -> Page[AttemptRead]:
    """The caller's own attempts at the quiz, oldest first."""
    query = scoped(Attempt, principal.org_id).where(
        Attempt.quiz_id == quiz_id, Attempt.user_id == principal.subject
    )
    rows = await paginate(session, query, (Attempt.created_at, Attempt.id), params)
    quiz = await service.get_quiz(session, principal, course_id, quiz_id)  # after the cursor: 400 first
    return rows.page(lambda a: service.attempt_read(a, quiz))


@router.get("/courses/{course_id}/progress", response_model=ProgressRead)
async def course_progress(course_id: uuid.UUID, session: SessionDep, principal: Reader) -> ProgressRead:
    """The caller's progress in a course they are enrolled in (404 otherwise)."""
    enrollment = await service.enrollments(session, principal.org_id).get(
        course_id, Enrollment.course_id == course_id, Enrollment.user_id == principal.subject
    )
    return await service.progress(session, enrollment)


@router.get("/progress", response_model=Page[ProgressRead])
async def my_progress(session: SessionDep, principal: Reader, params: PageDep) -> Page[ProgressRead]:
    """The caller's progress in every course they are enrolled in, latest enrollment first."""
    query = scoped(Enrollment, principal.org_id).where(Enrollment.user_id == principal.subject)
    rows = await paginate(session, query, (Enrollment.enrolled_at, Enrollment.id), params, descending=True)
    items = [await service.progress(session, e) for e in rows.items]
    return Page[ProgressRead](items=items, next_cursor=rows.next_cursor)


# --- learning paths ---


def _path_read(path: Path) -> PathRead:
    return PathRead.model_validate(path, from_attributes=True)


@router.post("/paths", response_model=PathRead, status_code=status.HTTP_201_CREATED)
async def create_path(body: PathCreate, session: SessionDep, principal: Manager) -> PathRead:
    """A learning path: courses of the organization in the order to take them (422 naming
    `course_ids.<n>` for an unknown or repeated one)."""
    return _path_read(await service.create_path(session, principal.org_id, principal.subject, body))


@router.get("/paths", response_model=Page[PathRead])
async def list_paths(session: SessionDep, principal: Reader, params: PageDep) -> Page[PathRead]:
    rows = await paginate(
        session, scoped(Path, principal.org_id), (Path.created_at, Path.id), params, descending=True
    )
    return rows.page(_path_read)


@router.get("/paths/{path_id}", response_model=PathRead)
async def read_path(path_id: uuid.UUID, session: SessionDep, principal: Reader) -> PathRead:
    return _path_read(await service.paths(session, principal.org_id).get(path_id, Path.id == path_id))


@router.delete("/paths/{path_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_path(path_id: uuid.UUID, session: SessionDep, principal: Manager) -> Response:
    await service.paths(session, principal.org_id).delete(path_id, Path.id == path_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/paths/{path_id}/progress", response_model=PathProgressRead)
async def path_progress(path_id: uuid.UUID, session: SessionDep, principal: Reader) -> PathProgressRead:
    """The caller's progress along the path: each course enrolled and completed, the next to take."""
    path = await service.paths(session, principal.org_id).get(path_id, Path.id == path_id)
    return await service.path_progress(session, path, principal.subject)


# --- xAPI statements ---


def _own_key(principal: Principal) -> str:
    return xapi.user_agent(principal.subject).key()


Statements = Annotated[list[StatementCreate], Field(min_length=1, max_length=100)]


async def _store(
    session: SessionDep, principal: Principal, statements: list[StatementCreate], at: str
) -> list[uuid.UUID]:
    ids: list[uuid.UUID] = []
    for n, statement in enumerate(statements):
        if not principal.can(service.MANAGE) and statement.actor.key() != _own_key(principal):
            where = at.format(n=n)
            raise Forbidden(f"{where}: only learning:manage may send statements about someone else")
        ids.append(await xapi.store(session, principal.org_id, principal.subject, statement))
    return ids


@router.post("/xapi/statements", response_model=list[uuid.UUID], responses=problem_responses({403, 409}))
async def store_statements(body: Statements, session: SessionDep, principal: Learner) -> list[uuid.UUID]:
    """Store a list of statements, all or none; their ids, in order. A statement under a stored id is
    accepted when it is the same (xAPI's comparison), else 409 `statement-conflict`. Only managers
    may state what others did: a learner's statements have their own account as actor
    (`{"account": {"homePage": "https://coderide.io", "name": <user id>}}`)."""
    return await _store(session, principal, body, "{n}.actor")


@router.put(
    "/xapi/statements",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses({403, 409}),
)
async def put_statement(
    statement_id: Annotated[uuid.UUID, Query(alias="statementId", description="The statement's id")],
    body: StatementCreate,
    session: SessionDep,
    principal: Learner,
) -> Response:
    """Store one statement under the id given (xAPI's PUT): again with the same content is accepted,
    with different content a 409."""
    if body.id is not None and body.id != statement_id:
        raise InvalidField("id", f"differs from statementId {statement_id}")
    await _store(session, principal, [body.model_copy(update={"id": statement_id})], "actor")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _agent(raw: str) -> Agent:
    try:
        return Agent.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as error:
        message = str(error).splitlines()[-1] if isinstance(error, ValidationError) else "not JSON"
        raise InvalidField("query.agent", f"not an xAPI agent ({message.strip()})") from None


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@router.get("/xapi/statements", response_model=StatementResult)
async def query_statements(
    request: Request,
    session: SessionDep,
    principal: Reader,
    params: PageDep,
    agent: Annotated[
        str | None,
        Query(max_length=2000, description='An xAPI agent as JSON, e.g. {"mbox": "mailto:ada@example.com"}'),
    ] = None,
    verb: Annotated[str | None, Query(max_length=1000, description="A verb id (IRI)")] = None,
    activity: Annotated[str | None, Query(max_length=1000, description="An activity id (IRI)")] = None,
    since: Annotated[datetime | None, Query(description="Stored after this moment")] = None,
    until: Annotated[datetime | None, Query(description="Stored at or before this moment")] = None,
    ascending: Annotated[bool, Query(description="Oldest first")] = False,
) -> StatementResult:
    """Statements as xAPI's statements resource finds them: by actor, verb, object activity and stored
    time, newest first, `limit` a page with `more` the path of the next. A learner finds their own
    statements only; managers the organization's."""
    query = scoped(Statement, principal.org_id)
    if agent is not None:
        query = query.where(Statement.actor_key == _agent(agent).key())
    if not principal.can(service.MANAGE):
        query = query.where(Statement.actor_key == _own_key(principal))
    if verb is not None:
        query = query.where(Statement.verb_id == verb)
    if activity is not None:
        query = query.where(Statement.activity_id == activity)
    if since is not None:
        query = query.where(Statement.stored > _utc(since))
    if until is not None:
        query = query.where(Statement.stored <= _utc(until))
    rows = await paginate(session, query, (Statement.stored, Statement.id), params, descending=not ascending)
    more = ""
    if rows.next_cursor is not None:
        kept = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
        # Relative to the target's root (the gateway mounts it at `/api/learning`), as it is served.
        path = request.url.path.removeprefix(request.scope.get("root_path", ""))
        more = path + "?" + urlencode([*kept, ("cursor", rows.next_cursor)])
    return StatementResult(statements=[s.body for s in rows.items], more=more)


@router.get("/xapi/statements/{statement_id}", response_model=dict[str, Any])
async def read_statement(statement_id: uuid.UUID, session: SessionDep, principal: Reader) -> dict[str, Any]:
    """One statement by its id (a learner: one of their own)."""
    statement = await OrgScoped(Statement, session, principal.org_id, "statement").get(
        statement_id, Statement.id == statement_id
    )
    if not principal.can(service.MANAGE) and statement.actor_key != _own_key(principal):
        raise NotFound(f"no statement {statement_id}")
    return statement.body
