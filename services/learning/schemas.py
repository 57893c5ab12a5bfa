from __future__ import annotations

import re
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from coder.shared.schemas import Input

Title = Annotated[str, Field(min_length=1, max_length=200)]
LongText = Annotated[str, Field(max_length=100_000)]
MAX_QUESTIONS = 100
MAX_OPTIONS = 20
MAX_PATH_COURSES = 50


class CourseStatus(StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"


class CourseCreate(Input):
    title: Title
    description: LongText = ""


class CourseUpdate(Input):
    """The fields to change; an absent field stays as it is. Publishing needs at least one required
    lesson or quiz (409 otherwise); a published course can go back to draft (learners then lose sight
    of it, their progress stays)."""

    title: Title | None = None
    description: LongText | None = None
    status: CourseStatus | None = None


class CourseRead(BaseModel):
    id: uuid.UUID
    title: str
    description: str
    status: CourseStatus
    created_by: str
    created_at: datetime
    updated_at: datetime


class ModuleCreate(Input):
    title: Title


class LessonCreate(Input):
    title: Title
    content: LongText = Field(default="", description="The lesson's text (Markdown)")
    required: bool = Field(default=True, description="Whether the course's completion waits for it")


class LessonSummary(BaseModel):
    id: uuid.UUID
    title: str
    required: bool


class LessonRead(LessonSummary):
    course_id: uuid.UUID
    module_id: uuid.UUID
    content: str


class QuestionKind(StrEnum):
    SINGLE = "single"
    MULTIPLE = "multiple"


class QuestionCreate(Input):
    text: Annotated[str, Field(min_length=1, max_length=5000)]
    kind: QuestionKind
    options: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=1000)]],
        Field(min_length=2, max_length=MAX_OPTIONS),
    ]
    correct: list[int] = Field(
        min_length=1, max_length=MAX_OPTIONS, description="Indexes into `options` of the right answers"
    )
    points: int = Field(default=1, ge=1, le=1000)


class QuizCreate(Input):
    title: Title
    pass_mark: int = Field(default=50, ge=0, le=100, description="The share of the points (%) that passes")
    required: bool = Field(default=True, description="Whether the course's completion waits for a pass")
    questions: list[QuestionCreate] = Field(min_length=1, max_length=MAX_QUESTIONS)


class QuestionRead(BaseModel):
    """A question as a learner sees it: no answer key."""

    text: str
    kind: QuestionKind
    options: list[str]
    points: int


class QuestionKeyRead(QuestionRead):
    correct: list[int]


class QuizSummary(BaseModel):
    id: uuid.UUID
    title: str
    required: bool
    pass_mark: int


class QuizRead(QuizSummary):
    """`questions[].correct` (the answer key) only for the course's managers."""

    course_id: uuid.UUID
    module_id: uuid.UUID
    questions: list[QuestionKeyRead] | list[QuestionRead]


class ModuleRead(BaseModel):
    id: uuid.UUID
    title: str
    position: int
    lessons: list[LessonSummary]
    quizzes: list[QuizSummary]


class OutlineRead(CourseRead):
    modules: list[ModuleRead]


class AttemptCreate(Input):
    answers: list[Annotated[list[int], Field(max_length=MAX_OPTIONS)]] = Field(
        max_length=MAX_QUESTIONS,
        description="One list per question, in order: the indexes of the options chosen",
    )


class MarkRead(BaseModel):
    points: float
    max_points: int
    correct: bool = Field(description="Full marks for the question")
    expected: list[int] = Field(description="The right options: shown once the attempt is submitted")


class AttemptRead(BaseModel):
    id: uuid.UUID
    quiz_id: uuid.UUID
    course_id: uuid.UUID
    user_id: str
    answers: list[list[int]]
    marks: list[MarkRead]
    score: float
    max_score: int
    scaled: float = Field(description="score / max_score, 0 to 1")
    passed: bool
    created_at: datetime


class EnrollmentRead(BaseModel):
    id: uuid.UUID
    course_id: uuid.UUID
    user_id: str
    enrolled_at: datetime
    completed_at: datetime | None


class ProgressRead(BaseModel):
    course_id: uuid.UUID
    user_id: str
    enrolled_at: datetime
    lessons_done: list[uuid.UUID]
    lessons_required: int
    required_lessons_done: int
    quizzes_passed: list[uuid.UUID]
    quizzes_required: int
    required_quizzes_passed: int
    percent: int = Field(description="Required items done, 0-100")
    completed: bool
    completed_at: datetime | None


class PathCreate(Input):
    title: Title
    description: LongText = ""
    course_ids: list[uuid.UUID] = Field(
        min_length=1, max_length=MAX_PATH_COURSES, description="The courses, in the order to take them"
    )


class PathRead(BaseModel):
    id: uuid.UUID
    title: str
    description: str
    course_ids: list[uuid.UUID]
    created_by: str
    created_at: datetime


class PathCourseProgress(BaseModel):
    course_id: uuid.UUID
    enrolled: bool
    completed: bool


class PathProgressRead(BaseModel):
    path_id: uuid.UUID
    user_id: str
    courses: list[PathCourseProgress]
    next_course_id: uuid.UUID | None = Field(description="The first course of the path not completed")
    completed: bool
    completed_at: datetime | None


# --- xAPI statements ---

DURATION = re.compile(
    r"^P(?!$)(\d+(\.\d+)?Y)?(\d+(\.\d+)?M)?(\d+(\.\d+)?W)?(\d+(\.\d+)?D)?"
    r"(T(?=\d)(\d+(\.\d+)?H)?(\d+(\.\d+)?M)?(\d+(\.\d+)?S)?)?$"
)


def _iri(value: str) -> str:
    parts = urlsplit(value)
    if not parts.scheme or any(c.isspace() for c in value):
        raise ValueError("not an absolute IRI")
    return value


def _duration(value: str) -> str:
    if not DURATION.match(value):
        raise ValueError("not an ISO 8601 duration (e.g. PT1M30S)")
    return value


Iri = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(_iri)]
LanguageMap = Annotated[
    dict[Annotated[str, Field(min_length=1, max_length=35)], Annotated[str, Field(max_length=2000)]],
    Field(max_length=50, description='Language tag -> text, e.g. {"en-US": "completed"}'),
]


class XModel(Input):
    """xAPI's members are camelCase: written and read by their xAPI names."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)


class Account(XModel):
    home_page: Iri = Field(alias="homePage")
    name: Annotated[str, Field(min_length=1, max_length=200)]


class Agent(XModel):
    """An xAPI Agent: exactly one inverse functional identifier (mbox, mbox_sha1sum, openid, account)."""

    object_type: Literal["Agent"] = Field(default="Agent", alias="objectType")
    name: Annotated[str, Field(max_length=200)] | None = None
    mbox: Annotated[str, Field(pattern=r"^mailto:[^@\s]+@[^@\s]+$", max_length=320)] | None = None
    mbox_sha1sum: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{40}$")] | None = None
    openid: Iri | None = None
    account: Account | None = None

    @model_validator(mode="after")
    def _one_identifier(self) -> Agent:
        given = [n for n in ("mbox", "mbox_sha1sum", "openid", "account") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one of mbox, mbox_sha1sum, openid, account (given: {len(given)})")
        return self

    def key(self) -> str:
        if self.mbox is not None:
            return f"mbox:{self.mbox.lower()}"
        if self.mbox_sha1sum is not None:
            return f"mbox_sha1sum:{self.mbox_sha1sum.lower()}"
        if self.openid is not None:
            return f"openid:{self.openid}"
        assert self.account is not None
        return f"account:{self.account.home_page}|{self.account.name}"


class Verb(XModel):
    id: Iri
    display: LanguageMap = {}


class ActivityDefinition(XModel):
    name: LanguageMap | None = None
    description: LanguageMap | None = None
    type: Iri | None = None


class Activity(XModel):
    object_type: Literal["Activity"] = Field(default="Activity", alias="objectType")
    id: Iri
    definition: ActivityDefinition | None = None


class Score(XModel):
    scaled: float | None = Field(default=None, ge=-1, le=1)
    raw: float | None = Field(default=None, ge=-1e12, le=1e12)
    min: float | None = Field(default=None, ge=-1e12, le=1e12)
    max: float | None = Field(default=None, ge=-1e12, le=1e12)

    @model_validator(mode="after")
    def _in_range(self) -> Score:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is above max")
        if self.raw is not None and (
            (self.min is not None and self.raw < self.min) or (self.max is not None and self.raw > self.max)
        ):
            raise ValueError("raw is outside min..max")
        return self


class Result(XModel):
    score: Score | None = None
    success: bool | None = None
    completion: bool | None = None
    response: Annotated[str, Field(max_length=10_000)] | None = None
    duration: Annotated[str, Field(max_length=100), AfterValidator(_duration)] | None = None


class ContextActivities(XModel):
    parent: list[Activity] | None = Field(default=None, max_length=20)
    grouping: list[Activity] | None = Field(default=None, max_length=20)
    category: list[Activity] | None = Field(default=None, max_length=20)
    other: list[Activity] | None = Field(default=None, max_length=20)


class Context(XModel):
    registration: uuid.UUID | None = None
    platform: Annotated[str, Field(max_length=200)] | None = None
    language: Annotated[str, Field(max_length=35)] | None = None
    context_activities: ContextActivities | None = Field(default=None, alias="contextActivities")
    extensions: dict[Iri, Any] | None = Field(default=None, max_length=50)


class StatementCreate(XModel):
    """An xAPI statement. `id` makes sending it again harmless: the same statement under the same id
    is accepted once, a different one under a stored id is a 409."""

    id: uuid.UUID | None = None
    actor: Agent
    verb: Verb
    object: Activity
    result: Result | None = None
    context: Context | None = None
    timestamp: datetime | None = Field(default=None, description="When it happened (default: when stored)")


class StatementResult(BaseModel):
    """xAPI's StatementResult: a page of statements, newest stored first, and `more`: the path of the
    next page relative to the target's root (under `/api/learning` at the gateway), empty on the last."""

    statements: list[dict[str, Any]]
    more: str
