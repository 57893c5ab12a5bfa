"""learning as the platform sees it: data only (see coder.shared.target)."""

from coder.shared.target import Dependency, Descriptor, Tool, admin, read, write

EMITS = (
    "learning.course.published",
    "learning.enrollment.created",
    "learning.lesson.completed",
    "learning.quiz.attempted",
    "learning.course.completed",
    "learning.path.completed",
)

descriptor = Descriptor(
    name="learning",
    port=3015,
    title="Learning",
    package="coder.services.learning",
    # Redis: the gateway's revocation list, read on every call (coder.shared.auth.RevocationList).
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.RABBITMQ}),
    permissions={
        "read": read(
            "Read published courses, lessons, quizzes (without answers), paths, "
            "and one's own progress and statements"
        ),
        "learn": write("Enroll, complete lessons, attempt quizzes and send statements about oneself"),
        "manage": admin(
            "Author courses, modules, lessons, quizzes (with their answers) and paths; "
            "read every learner's statements"
        ),
    },
    emits=EMITS,
    tools=(
        Tool(
            name="learning_list_courses",
            operation="GET /v1/courses",
            description="The organization's published courses (drafts too for managers), newest first.",
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="learning_progress",
            operation="GET /v1/progress",
            description=(
                "The caller's progress in every course they are enrolled in: required lessons done, "
                "quizzes passed, percent, completed or not."
            ),
            read_only=True,
            idempotent=True,
        ),
    ),
)
