"""workflow as the platform sees it: data only (see coder.shared.target)."""

from coder.shared.target import Dependency, Descriptor, Tool, read, workload_secret, write

# Event types a definition may wait for or be triggered by: what the target's queue is bound to (each
# one with a contract in coder.shared.contracts; execution.job.finished and quality.gate.changed join
# when their contracts land).
CONSUMES = (
    "planning.task.created",
    "planning.task.updated",
    "planning.task.status_changed",
    "planning.task.deleted",
    "calendar.event.created",
    "calendar.event.updated",
    "calendar.event.deleted",
    "calendar.reminder.due",
    "workflow.run.started",
    "workflow.run.completed",
    "workflow.run.failed",
    "workflow.run.cancelled",
)

descriptor = Descriptor(
    name="workflow",
    port=3019,
    title="Workflow",
    package="coder.services.workflow",
    # Redis: the gateway's revocation list, read on every call (coder.shared.auth.RevocationList).
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.RABBITMQ}),
    permissions={
        "read": read("Read workflow definitions, their versions, runs and run history"),
        "write": write("Create and version workflow definitions"),
        "run": write("Start and cancel workflow runs (the steps act for the user who started them)"),
        "approve": write("Approve or reject the human-approval steps of workflow runs"),
    },
    emits=("workflow.run.started", "workflow.run.completed", "workflow.run.failed", "workflow.run.cancelled"),
    consumes=CONSUMES,
    # The secret workflow proves itself with to the gateway when it takes a delegation for a run and
    # trades it for the user's tokens while the run lives (gateway/routes/workload.py).
    generated_secrets={workload_secret("workflow"): "Proves workflow to the gateway (run delegations)"},
    tools=(
        Tool(
            name="workflow_start_run",
            operation="POST /v1/definitions/{definition_id}/runs",
            description=(
                "Start a run of a workflow definition (its latest version) with an input object; the "
                "steps act for you. Answers the run with its steps' states."
            ),
        ),
        Tool(
            name="workflow_get_run",
            operation="GET /v1/runs/{run_id}",
            description=(
                "A workflow run: its status, the version it runs, and each step's status, attempts, "
                "output and error."
            ),
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="workflow_approve",
            operation="POST /v1/runs/{run_id}/steps/{step}/approve",
            description="Approve a run's waiting human-approval step, so the run goes on.",
            idempotent=True,
        ),
    ),
)
