"""planning as the platform sees it: data only (see coder.shared.target)."""

from coder.shared.target import Dependency, Descriptor, Tool, read, write

descriptor = Descriptor(
    name="planning",
    port=3007,
    title="Planning",
    package="coder.services.planning",
    # Redis: the gateway's revocation list, read on every call (coder.shared.auth.RevocationList).
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.RABBITMQ}),
    permissions={
        "read": read("Read plans and their tasks, and ask for the next task"),
        "write": write("Create, change and delete plans and tasks, and move tasks through their statuses"),
        "generate": write("Generate plans and expand tasks into subtasks with a model (through ai)"),
    },
    emits=(
        "planning.task.created",
        "planning.task.updated",
        "planning.task.status_changed",
        "planning.task.deleted",
    ),
    # A failing quality gate of a project linked to a plan opens fix tasks in it (quality_gate.py).
    consumes=("quality.gate.changed",),
    tools=(
        Tool(
            name="planning_next_task",
            operation="GET /v1/plans/{plan_id}/next",
            description=(
                "The task to work on next in a plan: the highest-priority pending task whose "
                "dependencies are all done (subtasks of in-progress tasks first; ties go to the lowest id)."
            ),
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="planning_set_status",
            operation="POST /v1/plans/{plan_id}/tasks/{task_id}/status",
            description=(
                "Move a task to another status (pending, in-progress, review, done, deferred, cancelled); "
                "a move the transition table does not allow is refused with both statuses named."
            ),
            idempotent=True,
        ),
        Tool(
            name="planning_add_task",
            operation="POST /v1/plans/{plan_id}/tasks",
            description=(
                "Add a task (or, with parent_id, a subtask) to a plan: title, details, priority, "
                "dependencies on other task ids of the plan, acceptance checks."
            ),
        ),
    ),
)
