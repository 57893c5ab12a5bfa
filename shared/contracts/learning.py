"""Events the learning target publishes: courses published, enrollments, lessons completed, quiz
attempts, courses and learning paths completed. `user_id` is the learner's, `actor` an author's."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from coder.shared.contracts import Contract


class CoursePublished(Contract):
    event_type: ClassVar[str] = "learning.course.published"
    schema_version: ClassVar[int] = 1

    course_id: str
    title: str
    actor: str


class EnrollmentCreated(Contract):
    event_type: ClassVar[str] = "learning.enrollment.created"
    schema_version: ClassVar[int] = 1

    course_id: str
    user_id: str
    enrollment_id: str


class LessonCompleted(Contract):
    event_type: ClassVar[str] = "learning.lesson.completed"
    schema_version: ClassVar[int] = 1

    course_id: str
    lesson_id: str
    user_id: str


class QuizAttempted(Contract):
    """An attempt scored by the service: `score` of `max_score` points, `passed` against the pass mark."""

    event_type: ClassVar[str] = "learning.quiz.attempted"
    schema_version: ClassVar[int] = 1

    course_id: str
    quiz_id: str
    attempt_id: str
    user_id: str
    score: float = Field(ge=0)
    max_score: int = Field(ge=1)
    passed: bool


class CourseCompleted(Contract):
    """Every required lesson done and every required quiz passed: sent once per learner and course."""

    event_type: ClassVar[str] = "learning.course.completed"
    schema_version: ClassVar[int] = 1

    course_id: str
    user_id: str
    title: str


class PathCompleted(Contract):
    """Every course of a learning path completed: sent once per learner and path."""

    event_type: ClassVar[str] = "learning.path.completed"
    schema_version: ClassVar[int] = 1

    path_id: str
    user_id: str
    title: str
