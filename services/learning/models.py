import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coder.shared.db import TargetBase


class Base(TargetBase, DeclarativeBase, target="learning"):
    """The learning target's tables; `Base.events` is its outbox and inbox."""


class Course(Base):
    """A course: draft while its authors build it, published once learners may enroll."""

    __tablename__ = "learning_course"
    __table_args__ = (Index(None, "org_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="draft")
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Module(Base):
    """A section of a course's outline (Open edX's chapter, Moodle's topic)."""

    __tablename__ = "learning_module"
    __table_args__ = (Index(None, "course_id", "position"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    course_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("learning_course.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer)


class Lesson(Base):
    __tablename__ = "learning_lesson"
    __table_args__ = (Index(None, "course_id", "module_id", "position"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    course_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("learning_course.id", ondelete="CASCADE"))
    module_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("learning_module.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    content: Mapped[str] = mapped_column(Text, default="")
    position: Mapped[int] = mapped_column(Integer)
    # Whether the course's completion waits for it.
    required: Mapped[bool] = mapped_column(Boolean, default=True)


class Quiz(Base):
    """A quiz of choice questions. `questions` holds the answer key: it leaves the service only to
    the course's managers, or to a learner in the scoring of their own submitted attempt."""

    __tablename__ = "learning_quiz"
    __table_args__ = (Index(None, "course_id", "module_id", "position"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    course_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("learning_course.id", ondelete="CASCADE"))
    module_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("learning_module.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer)
    required: Mapped[bool] = mapped_column(Boolean, default=True)
    # The share of the points (0-100 %) an attempt needs to pass.
    pass_mark: Mapped[int] = mapped_column(Integer)
    # [{"text", "kind": "single"|"multiple", "options": [str], "correct": [int], "points": int}]
    questions: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)


class Enrollment(Base):
    __tablename__ = "learning_enrollment"
    __table_args__ = (
        UniqueConstraint("course_id", "user_id"),
        Index(None, "org_id", "user_id", "enrolled_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    course_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("learning_course.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(128))
    enrolled_at: Mapped[datetime] = mapped_column(server_default=func.now())
    completed_at: Mapped[datetime | None]


class LessonDone(Base):
    """A lesson a learner completed."""

    __tablename__ = "learning_lesson_done"

    lesson_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("learning_lesson.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    course_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("learning_course.id", ondelete="CASCADE"))
    completed_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Attempt(Base):
    """One submitted attempt at a quiz, scored by the service."""

    __tablename__ = "learning_attempt"
    __table_args__ = (Index(None, "quiz_id", "user_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    course_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("learning_course.id", ondelete="CASCADE"))
    quiz_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("learning_quiz.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(128))
    answers: Mapped[list[list[int]]] = mapped_column(JSONB)
    # Per question: {"points": float, "correct": bool}.
    marks: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    score: Mapped[float]
    max_score: Mapped[int] = mapped_column(Integer)
    passed: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Path(Base):
    """A learning path: courses to take in order."""

    __tablename__ = "learning_path"
    __table_args__ = (Index(None, "org_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    course_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(Uuid))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class PathDone(Base):
    """A path a learner completed (every course of it), kept so its event goes out once."""

    __tablename__ = "learning_path_done"

    path_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("learning_path.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    completed_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Statement(Base):
    """An xAPI statement as stored: its parts for querying, and the whole as sent (plus `stored`,
    `authority`) for answering and for comparing a statement sent again under the same id."""

    __tablename__ = "learning_statement"
    __table_args__ = (
        Index(None, "org_id", "stored", "id"),
        Index(None, "org_id", "actor_key", "stored"),
        Index(None, "org_id", "verb_id", "stored"),
        Index(None, "org_id", "activity_id", "stored"),
    )

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # The actor's inverse functional identifier, e.g. `mbox:mailto:a@b.c`, `account:<homePage>|<name>`.
    actor_key: Mapped[str] = mapped_column(String(1200))
    verb_id: Mapped[str] = mapped_column(String(1000))
    activity_id: Mapped[str] = mapped_column(String(1000))
    timestamp: Mapped[datetime]
    stored: Mapped[datetime] = mapped_column(server_default=func.now())
    # Who sent it (the user's id): the statement's authority.
    authority: Mapped[str] = mapped_column(String(128))
    body: Mapped[dict[str, Any]] = mapped_column(JSONB)
