"""Courses, their outline, quizzes and scoring, enrollments, progress and completion, learning paths.

Completion (Open edX / Moodle's "course completion"): every required lesson done and every required
quiz passed by at least one attempt. It is checked after each lesson completed and each quiz passed;
the first time it holds, the enrollment is stamped, `learning.course.completed` goes out and the
course's `completed` statement is written; then every path holding the course is checked the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.learning import xapi
from coder.services.learning.models import (
    Attempt,
    Base,
    Course,
    Enrollment,
    Lesson,
    LessonDone,
    Module,
    Path,
    PathDone,
    Quiz,
)
from coder.services.learning.schemas import (
    AttemptCreate,
    AttemptRead,
    CourseRead,
    CourseStatus,
    CourseUpdate,
    LessonCreate,
    LessonRead,
    LessonSummary,
    MarkRead,
    ModuleRead,
    OutlineRead,
    PathCourseProgress,
    PathCreate,
    PathProgressRead,
    ProgressRead,
    QuestionKeyRead,
    QuestionKind,
    QuestionRead,
    QuizCreate,
    QuizRead,
    QuizSummary,
)
from coder.shared.auth import Principal
from coder.shared.errors import Conflict, InvalidField, NotFound
from coder.shared.repository import OrgScoped, scoped

MANAGE = "learning:manage"


class EmptyCourse(Conflict):
    slug, title = "empty-course", "Nothing to complete"

    def __init__(self, course_id: uuid.UUID) -> None:
        super().__init__(f"course {course_id} has no required lesson or quiz: add one before publishing")


class NotEnrolled(Conflict):
    slug, title = "not-enrolled", "Not enrolled"

    def __init__(self, course_id: uuid.UUID) -> None:
        super().__init__(f"enroll in course {course_id} first (POST .../enrollments)")


def courses(session: AsyncSession, org_id: str) -> OrgScoped[Course]:
    return OrgScoped(Course, session, org_id, "course")


async def visible_course(
    session: AsyncSession, principal: Principal, course_id: uuid.UUID, *, lock: bool = False
) -> Course:
    """The course, if the caller may see it: a draft only to its managers (404 alike otherwise)."""
    course = await courses(session, principal.org_id).get(course_id, Course.id == course_id, lock=lock)
    if course.status != CourseStatus.PUBLISHED and not principal.can(MANAGE):
        raise NotFound(f"no course {course_id}")
    return course


def course_read(course: Course) -> CourseRead:
    return CourseRead.model_validate(course, from_attributes=True)


async def update_course(
    session: AsyncSession, org_id: str, actor: str, course_id: uuid.UUID, body: CourseUpdate
) -> Course:
    course = await courses(session, org_id).get(course_id, Course.id == course_id, lock=True)
    if body.title is not None:
        course.title = body.title
    if body.description is not None:
        course.description = body.description
    if body.status is not None and body.status != course.status:
        if body.status == CourseStatus.PUBLISHED:
            required = await _required(session, org_id, course.id)
            if not required[0] and not required[1]:
                raise EmptyCourse(course.id)
            await Base.events.publish(
                session,
                "learning.course.published",
                {"course_id": str(course.id), "title": course.title, "actor": actor},
                org_id=org_id,
                subject=str(course.id),
            )
        course.status = body.status.value
    await session.flush()
    await session.refresh(course)
    return course


async def _next_position(
    session: AsyncSession, model: type[Module] | type[Lesson] | type[Quiz], *where: Any
) -> int:
    value = await session.scalar(select(func.coalesce(func.max(model.position), 0)).where(*where))
    return int(value or 0) + 1


async def add_module(session: AsyncSession, org_id: str, course_id: uuid.UUID, title: str) -> Module:
    await courses(session, org_id).get(course_id, Course.id == course_id, lock=True)
    position = await _next_position(session, Module, Module.course_id == course_id)
    module = Module(org_id=org_id, course_id=course_id, title=title, position=position)
    session.add(module)
    await session.flush()
    return module


async def _module(session: AsyncSession, org_id: str, course_id: uuid.UUID, module_id: uuid.UUID) -> Module:
    await courses(session, org_id).get(course_id, Course.id == course_id, lock=True)
    return await OrgScoped(Module, session, org_id, "module").get(
        module_id, Module.id == module_id, Module.course_id == course_id
    )


async def add_lesson(
    session: AsyncSession, org_id: str, course_id: uuid.UUID, module_id: uuid.UUID, body: LessonCreate
) -> Lesson:
    await _module(session, org_id, course_id, module_id)
    position = await _next_position(session, Lesson, Lesson.module_id == module_id)
    lesson = Lesson(
        org_id=org_id,
        course_id=course_id,
        module_id=module_id,
        title=body.title,
        content=body.content,
        required=body.required,
        position=position,
    )
    session.add(lesson)
    await session.flush()
    return lesson


def lesson_read(lesson: Lesson) -> LessonRead:
    return LessonRead.model_validate(lesson, from_attributes=True)


async def add_quiz(
    session: AsyncSession, org_id: str, course_id: uuid.UUID, module_id: uuid.UUID, body: QuizCreate
) -> Quiz:
    for n, question in enumerate(body.questions):
        where = f"questions.{n}.correct"
        if len(set(question.correct)) != len(question.correct):
            raise InvalidField(where, "an option is named twice")
        if any(not 0 <= c < len(question.options) for c in question.correct):
            raise InvalidField(where, f"options are numbered 0 to {len(question.options) - 1}")
        if question.kind == QuestionKind.SINGLE and len(question.correct) != 1:
            raise InvalidField(where, "a single choice question has exactly one right option")
    await _module(session, org_id, course_id, module_id)
    position = await _next_position(session, Quiz, Quiz.module_id == module_id)
    quiz = Quiz(
        org_id=org_id,
        course_id=course_id,
        module_id=module_id,
        title=body.title,
        required=body.required,
        pass_mark=body.pass_mark,
        position=position,
        questions=[q.model_dump(mode="json") for q in body.questions],
    )
    session.add(quiz)
    await session.flush()
    return quiz


def quiz_read(quiz: Quiz, *, with_key: bool) -> QuizRead:
    questions: list[QuestionKeyRead] | list[QuestionRead]
    if with_key:
        questions = [QuestionKeyRead.model_validate(q) for q in quiz.questions]
    else:
        questions = [
            QuestionRead.model_validate({k: v for k, v in q.items() if k != "correct"})
            for q in quiz.questions
        ]
    return QuizRead(
        id=quiz.id,
        course_id=quiz.course_id,
        module_id=quiz.module_id,
        title=quiz.title,
        required=quiz.required,
        pass_mark=quiz.pass_mark,
        questions=questions,
    )


async def get_quiz(
    session: AsyncSession, principal: Principal, course_id: uuid.UUID, quiz_id: uuid.UUID
) -> Quiz:
    await visible_course(session, principal, course_id)
    return await OrgScoped(Quiz, session, principal.org_id, "quiz").get(
        quiz_id, Quiz.id == quiz_id, Quiz.course_id == course_id
    )


async def get_lesson(
    session: AsyncSession, principal: Principal, course_id: uuid.UUID, lesson_id: uuid.UUID
) -> Lesson:
    await visible_course(session, principal, course_id)
    return await OrgScoped(Lesson, session, principal.org_id, "lesson").get(
        lesson_id, Lesson.id == lesson_id, Lesson.course_id == course_id
    )


async def outline(session: AsyncSession, course: Course) -> OutlineRead:
    modules = (
        await session.scalars(
            scoped(Module, course.org_id).where(Module.course_id == course.id).order_by(Module.position)
        )
    ).all()
    lessons = (
        await session.scalars(
            scoped(Lesson, course.org_id).where(Lesson.course_id == course.id).order_by(Lesson.position)
        )
    ).all()
    quizzes = (
        await session.scalars(
            scoped(Quiz, course.org_id).where(Quiz.course_id == course.id).order_by(Quiz.position)
        )
    ).all()
    return OutlineRead(
        **course_read(course).model_dump(),
        modules=[
            ModuleRead(
                id=m.id,
                title=m.title,
                position=m.position,
                lessons=[
                    LessonSummary(id=x.id, title=x.title, required=x.required)
                    for x in lessons
                    if x.module_id == m.id
                ],
                quizzes=[
                    QuizSummary(id=q.id, title=q.title, required=q.required, pass_mark=q.pass_mark)
                    for q in quizzes
                    if q.module_id == m.id
                ],
            )
            for m in modules
        ],
    )


# --- scoring ---


def mark(question: dict[str, Any], chosen: Sequence[int]) -> float:
    """Points for one question. Single choice: all or nothing. Multiple choice (Moodle's partial
    credit): each right option chosen earns its share, each wrong one chosen takes a share off,
    never below zero."""
    points: int = question["points"]
    correct = set(question["correct"])
    picked = set(chosen)
    if question["kind"] == QuestionKind.SINGLE:
        return float(points) if picked == correct else 0.0
    share = (len(picked & correct) - len(picked - correct)) / len(correct)
    return round(max(0.0, share) * points, 4)


def score(quiz: Quiz, answers: list[list[int]]) -> tuple[list[dict[str, Any]], float, int, bool]:
    """(marks per question, score, max score, passed); InvalidField naming the answer that does not fit."""
    if len(answers) != len(quiz.questions):
        raise InvalidField(
            "answers", f"one answer per question: {len(quiz.questions)} expected, {len(answers)} given"
        )
    marks: list[dict[str, Any]] = []
    for n, (question, chosen) in enumerate(zip(quiz.questions, answers, strict=True)):
        options = len(question["options"])
        if len(set(chosen)) != len(chosen) or any(not 0 <= c < options for c in chosen):
            raise InvalidField(f"answers.{n}", f"distinct options from 0 to {options - 1}")
        if question["kind"] == QuestionKind.SINGLE and len(chosen) > 1:
            raise InvalidField(f"answers.{n}", "a single choice question takes one option")
        points = mark(question, chosen)
        marks.append({"points": points, "correct": points == question["points"]})
    total = sum(m["points"] for m in marks)
    maximum = sum(int(q["points"]) for q in quiz.questions)
    passed = total * 100 >= quiz.pass_mark * maximum
    return marks, round(total, 4), maximum, passed


def attempt_read(attempt: Attempt, quiz: Quiz) -> AttemptRead:
    return AttemptRead(
        id=attempt.id,
        quiz_id=attempt.quiz_id,
        course_id=attempt.course_id,
        user_id=attempt.user_id,
        answers=attempt.answers,
        marks=[
            MarkRead(points=m["points"], max_points=q["points"], correct=m["correct"], expected=q["correct"])
            for m, q in zip(attempt.marks, quiz.questions, strict=False)
        ],
        score=attempt.score,
        max_score=attempt.max_score,
        scaled=attempt.score / attempt.max_score if attempt.max_score else 0.0,
        passed=attempt.passed,
        created_at=attempt.created_at,
    )


# --- enrollments and progress ---


def enrollments(session: AsyncSession, org_id: str) -> OrgScoped[Enrollment]:
    return OrgScoped(Enrollment, session, org_id, "enrollment")


async def enroll(
    session: AsyncSession, principal: Principal, course_id: uuid.UUID
) -> tuple[Enrollment, bool]:
    """The caller's enrollment in a published course, and whether it is new."""
    course = await visible_course(session, principal, course_id, lock=True)
    if course.status != CourseStatus.PUBLISHED:
        raise Conflict(
            f"course {course_id} is a draft: publish it first", slug="draft-course", title="Draft course"
        )
    existing = await enrollments(session, principal.org_id).find(
        Enrollment.course_id == course_id, Enrollment.user_id == principal.subject
    )
    if existing is not None:
        return existing, False
    enrollment = Enrollment(org_id=principal.org_id, course_id=course_id, user_id=principal.subject)
    session.add(enrollment)
    await session.flush()
    await session.refresh(enrollment)
    data = {"course_id": str(course_id), "user_id": principal.subject, "enrollment_id": str(enrollment.id)}
    await Base.events.publish(session, "learning.enrollment.created", data, org_id=principal.org_id)
    await xapi.record(
        session,
        principal.org_id,
        principal.subject,
        "registered",
        xapi.activity_id("courses", course_id),
        course.title,
        registration=enrollment.id,
    )
    return enrollment, True


async def my_enrollment(
    session: AsyncSession, principal: Principal, course_id: uuid.UUID, *, lock: bool = False
) -> Enrollment:
    enrollment = await enrollments(session, principal.org_id).find(
        Enrollment.course_id == course_id, Enrollment.user_id == principal.subject, lock=lock
    )
    if enrollment is None:
        raise NotEnrolled(course_id)
    return enrollment


async def _required(
    session: AsyncSession, org_id: str, course_id: uuid.UUID
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    lessons = await session.scalars(
        scoped(Lesson, org_id)
        .with_only_columns(Lesson.id)
        .where(Lesson.course_id == course_id, Lesson.required)
    )
    quizzes = await session.scalars(
        scoped(Quiz, org_id).with_only_columns(Quiz.id).where(Quiz.course_id == course_id, Quiz.required)
    )
    return list(lessons), list(quizzes)


async def progress(session: AsyncSession, enrollment: Enrollment) -> ProgressRead:
    org_id, course_id, user_id = enrollment.org_id, enrollment.course_id, enrollment.user_id
    lessons, quizzes = await _required(session, org_id, course_id)
    done = list(
        await session.scalars(
            scoped(LessonDone, org_id)
            .with_only_columns(LessonDone.lesson_id)
            .where(LessonDone.course_id == course_id, LessonDone.user_id == user_id)
            .order_by(LessonDone.completed_at, LessonDone.lesson_id)
        )
    )
    passed = list(
        await session.scalars(
            scoped(Attempt, org_id)
            .with_only_columns(Attempt.quiz_id)
            .where(Attempt.course_id == course_id, Attempt.user_id == user_id, Attempt.passed)
            .group_by(Attempt.quiz_id)
            .order_by(func.min(Attempt.created_at), Attempt.quiz_id)
        )
    )
    lessons_done = len(set(lessons) & set(done))
    quizzes_passed = len(set(quizzes) & set(passed))
    total = len(lessons) + len(quizzes)
    return ProgressRead(
        course_id=course_id,
        user_id=user_id,
        enrolled_at=enrollment.enrolled_at,
        lessons_done=done,
        lessons_required=len(lessons),
        required_lessons_done=lessons_done,
        quizzes_passed=passed,
        quizzes_required=len(quizzes),
        required_quizzes_passed=quizzes_passed,
        percent=100 if total == 0 else (lessons_done + quizzes_passed) * 100 // total,
        completed=enrollment.completed_at is not None,
        completed_at=enrollment.completed_at,
    )


async def _check_completion(session: AsyncSession, enrollment: Enrollment, course: Course) -> ProgressRead:
    state = await progress(session, enrollment)
    complete = (
        state.required_lessons_done == state.lessons_required
        and state.required_quizzes_passed == state.quizzes_required
    )
    if enrollment.completed_at is not None or not complete:
        return state
    enrollment.completed_at = datetime.now(UTC)
    await session.flush()
    await Base.events.publish(
        session,
        "learning.course.completed",
        {"course_id": str(course.id), "user_id": enrollment.user_id, "title": course.title},
        org_id=enrollment.org_id,
        subject=str(course.id),
    )
    await xapi.record(
        session,
        enrollment.org_id,
        enrollment.user_id,
        "completed",
        xapi.activity_id("courses", course.id),
        course.title,
        result={"completion": True, "success": True},
        registration=enrollment.id,
    )
    await _check_paths(session, enrollment.org_id, enrollment.user_id, course.id)
    return state.model_copy(update={"completed": True, "completed_at": enrollment.completed_at})


async def complete_lesson(
    session: AsyncSession, principal: Principal, course_id: uuid.UUID, lesson_id: uuid.UUID
) -> ProgressRead:
    """Mark a lesson done for the caller (again: no change); completes the course when it was the last."""
    course = await visible_course(session, principal, course_id)
    lesson = await OrgScoped(Lesson, session, principal.org_id, "lesson").get(
        lesson_id, Lesson.id == lesson_id, Lesson.course_id == course_id
    )
    enrollment = await my_enrollment(session, principal, course_id, lock=True)
    seen = await OrgScoped(LessonDone, session, principal.org_id, "lesson").find(
        LessonDone.lesson_id == lesson_id, LessonDone.user_id == principal.subject
    )
    if seen is None:
        session.add(
            LessonDone(
                org_id=principal.org_id, lesson_id=lesson_id, user_id=principal.subject, course_id=course_id
            )
        )
        await session.flush()
        await Base.events.publish(
            session,
            "learning.lesson.completed",
            {"course_id": str(course_id), "lesson_id": str(lesson_id), "user_id": principal.subject},
            org_id=principal.org_id,
        )
        await xapi.record(
            session,
            principal.org_id,
            principal.subject,
            "completed",
            xapi.activity_id("courses", course_id, "lessons", lesson_id),
            lesson.title,
            result={"completion": True},
            parent=xapi.activity_id("courses", course_id),
            registration=enrollment.id,
        )
    return await _check_completion(session, enrollment, course)


async def attempt_quiz(
    session: AsyncSession, principal: Principal, course_id: uuid.UUID, quiz_id: uuid.UUID, body: AttemptCreate
) -> tuple[Attempt, Quiz]:
    """Score an attempt on the server, store it, write its statements; completes the course on a pass
    that was the last thing missing."""
    course = await visible_course(session, principal, course_id)
    quiz = await OrgScoped(Quiz, session, principal.org_id, "quiz").get(
        quiz_id, Quiz.id == quiz_id, Quiz.course_id == course_id
    )
    enrollment = await my_enrollment(session, principal, course_id, lock=True)
    marks, total, maximum, passed = score(quiz, body.answers)
    attempt = Attempt(
        org_id=principal.org_id,
        course_id=course_id,
        quiz_id=quiz_id,
        user_id=principal.subject,
        answers=body.answers,
        marks=marks,
        score=total,
        max_score=maximum,
        passed=passed,
    )
    session.add(attempt)
    await session.flush()
    await session.refresh(attempt)
    data = {
        "course_id": str(course_id),
        "quiz_id": str(quiz_id),
        "attempt_id": str(attempt.id),
        "user_id": principal.subject,
        "score": total,
        "max_score": maximum,
        "passed": passed,
    }
    await Base.events.publish(session, "learning.quiz.attempted", data, org_id=principal.org_id)
    activity = xapi.activity_id("courses", course_id, "quizzes", quiz_id)
    result = {
        "score": {"raw": total, "min": 0, "max": maximum, "scaled": round(total / maximum, 4)},
        "success": passed,
        "completion": True,
    }
    parent = xapi.activity_id("courses", course_id)
    for verb in ("attempted", "passed" if passed else "failed"):
        await xapi.record(
            session,
            principal.org_id,
            principal.subject,
            verb,
            activity,
            quiz.title,
            result=result,
            parent=parent,
            registration=enrollment.id,
        )
    if passed:
        await _check_completion(session, enrollment, course)
    return attempt, quiz


# --- paths ---


def paths(session: AsyncSession, org_id: str) -> OrgScoped[Path]:
    return OrgScoped(Path, session, org_id, "path")


async def create_path(session: AsyncSession, org_id: str, actor: str, body: PathCreate) -> Path:
    seen: set[uuid.UUID] = set()
    known = set(
        await session.scalars(
            scoped(Course, org_id).with_only_columns(Course.id).where(Course.id.in_(body.course_ids))
        )
    )
    for n, course_id in enumerate(body.course_ids):
        if course_id in seen:
            raise InvalidField(f"course_ids.{n}", f"course {course_id} is already in the path")
        if course_id not in known:
            raise InvalidField(f"course_ids.{n}", f"no course {course_id}")
        seen.add(course_id)
    path = Path(
        org_id=org_id,
        title=body.title,
        description=body.description,
        course_ids=body.course_ids,
        created_by=actor,
    )
    session.add(path)
    await session.flush()
    await session.refresh(path)
    return path


async def path_progress(session: AsyncSession, path: Path, user_id: str) -> PathProgressRead:
    rows = await session.execute(
        scoped(Enrollment, path.org_id)
        .with_only_columns(Enrollment.course_id, Enrollment.completed_at)
        .where(Enrollment.user_id == user_id, Enrollment.course_id.in_(path.course_ids))
    )
    state: dict[uuid.UUID, datetime | None] = {row[0]: row[1] for row in rows.all()}
    courses_ = [
        PathCourseProgress(course_id=c, enrolled=c in state, completed=state.get(c) is not None)
        for c in path.course_ids
    ]
    done = await OrgScoped(PathDone, session, path.org_id, "path").find(
        PathDone.path_id == path.id, PathDone.user_id == user_id
    )
    return PathProgressRead(
        path_id=path.id,
        user_id=user_id,
        courses=courses_,
        next_course_id=next((c.course_id for c in courses_ if not c.completed), None),
        completed=all(c.completed for c in courses_),
        completed_at=None if done is None else done.completed_at,
    )


async def _check_paths(session: AsyncSession, org_id: str, user_id: str, course_id: uuid.UUID) -> None:
    """Stamp every path of the course that the user has now completed, once."""
    holding = (await session.scalars(scoped(Path, org_id).where(Path.course_ids.contains([course_id])))).all()
    for path in holding:
        state = await path_progress(session, path, user_id)
        if not state.completed or state.completed_at is not None:
            continue
        session.add(PathDone(org_id=org_id, path_id=path.id, user_id=user_id))
        await session.flush()
        await Base.events.publish(
            session,
            "learning.path.completed",
            {"path_id": str(path.id), "user_id": user_id, "title": path.title},
            org_id=org_id,
            subject=str(path.id),
        )
        await xapi.record(
            session,
            org_id,
            user_id,
            "completed",
            xapi.activity_id("paths", path.id),
            path.title,
            result={"completion": True, "success": True},
        )
